"""Certificates and revocation lists as Citadel's Vault PKI issues them, made here for loopback tests.

A CA (EC P-256) whose key stays in memory; leaf certificates with a CN and an OU (the PKI
role's ``ou``: ``gpu`` for a GPU host, ``gateway`` for a gateway host), server and client
use both, as the roles set ``server_flag`` and ``client_flag``; and CRLs signed by the CA,
listing given serials. Each leaf is written as the agent renders ``tls.pem`` (private key,
certificate, CA) and as the harnesses' ``TLSPaths`` (key, certificate + CA, CA), so a
keyguard or a gateway of tests/keyguard_harness.py and tests/gateway_harness.py serves it
once its ``tls`` is set to ``leaf.paths``. Files are replaced whole (a rename), as the
agent replaces them.

Example::

    pki = TestPKI(tmp_path / "pki")
    gpu = pki.leaf("gpu-01", unit="gpu", addresses=("127.0.0.1",))
    gateway = pki.leaf("gateway-01", unit="gateway")
    crl = pki.write_crl(tmp_path / "crl.pem")                    # nobody revoked yet
    pki.write_crl(crl, revoked=[gateway.serial])                 # the gateway revoked
    context = client_context(pki.ca_file, gateway.pem)           # TLS as that gateway
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from deploy.vault.tls import TLSPaths

PEM = serialization.Encoding.PEM
LIFETIME = dt.timedelta(hours=1)


@dataclass(frozen=True)
class Leaf:
    """One issued certificate: `pem` is key + certificate + CA (the agent's tls.pem)."""

    common_name: str
    unit: str
    serial: int
    pem: Path
    paths: TLSPaths  # key, certificate + CA, CA: what the harnesses write into their tls.pem


def _replace(path: Path, data: bytes) -> Path:
    """Write `data` through a new file and a rename (a new inode, as the agent's renders)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(f".{path.name}.partial")
    partial.write_bytes(data)
    os.replace(partial, path)
    return path


class TestPKI:
    """A CA in `directory` (``ca.pem``) that issues leaves and signs CRLs."""

    __test__ = False  # not a test class, whatever pytest makes of its name

    def __init__(self, directory: Path, name: str = "Citadel test CA"):
        self.directory = directory
        self.now = dt.datetime.now(dt.UTC)
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        usage = x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                              data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                              encipher_only=False, decipher_only=False)
        self.certificate = (
            self._builder(self.name, self.key.public_key(), dt.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(usage, critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        self.ca_file = _replace(directory / "ca.pem", self.certificate.public_bytes(PEM))

    def _builder(self, subject: x509.Name, public_key, lifetime: dt.timedelta) -> x509.CertificateBuilder:
        return (x509.CertificateBuilder().subject_name(subject).issuer_name(self.name).public_key(public_key)
                .serial_number(x509.random_serial_number())
                .not_valid_before(self.now - dt.timedelta(minutes=5)).not_valid_after(self.now + lifetime))

    def leaf(self, common_name: str, unit: str, addresses: Iterable[str] = ("127.0.0.1",)) -> Leaf:
        """A certificate for `common_name` in organisational unit `unit`, valid for `addresses` and localhost."""
        key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, unit),
                             x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
        names = [x509.IPAddress(ipaddress.ip_address(a)) for a in addresses] + [x509.DNSName("localhost")]
        certificate = (
            self._builder(subject, key.public_key(), LIFETIME)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                           critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self.key.public_key()), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        key_pem = key.private_bytes(PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        chain = certificate.public_bytes(PEM) + self.certificate.public_bytes(PEM)
        base = self.directory / common_name
        paths = TLSPaths(self.ca_file, _replace(base / "cert.pem", chain), _replace(base / "key.pem", key_pem))
        return Leaf(common_name, unit, certificate.serial_number, _replace(base / "tls.pem", key_pem + chain), paths)

    def write_crl(self, path: Path, revoked: Iterable[int] = (),
                  next_update: dt.timedelta = dt.timedelta(hours=1)) -> Path:
        """A CRL listing the serials `revoked`, valid until `next_update` from now (negative: expired)."""
        now = dt.datetime.now(dt.UTC)
        builder = (x509.CertificateRevocationListBuilder().issuer_name(self.name)
                   .last_update(min(now, now + next_update) - dt.timedelta(minutes=1))
                   .next_update(now + next_update))
        for serial in revoked:
            builder = builder.add_revoked_certificate(
                x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(now).build())
        return _replace(path, builder.sign(self.key, hashes.SHA256()).public_bytes(PEM))


def client_context(ca_file: Path, pem: Path | None = None) -> ssl.SSLContext:
    """A client's TLS context trusting `ca_file`, presenting the key and certificate in `pem` if given."""
    context = ssl.create_default_context(cafile=str(ca_file))
    if pem is not None:
        context.load_cert_chain(str(pem))
    return context
