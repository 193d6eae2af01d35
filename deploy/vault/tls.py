"""TLS material for the embedded lab server: a private CA and a 127.0.0.1 server cert.

The CA's private key is used once, to sign the server certificate, and never written to
disk: nobody can later mint another certificate this lab's clients would trust. When the
server certificate nears its expiry both are simply made again (clients re-read ca.pem).

Example::

    >>> from pathlib import Path
    >>> paths = write_tls(Path("/tmp/citadel-vault-demo"))    # doctest: +SKIP
    >>> paths.ca_file.name
    'ca.pem'
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 365
SERVER_DAYS = 90
# Renew well before expiry so a lab left alone for a while still starts.
RENEW_WITHIN = datetime.timedelta(days=14)


@dataclass(frozen=True)
class TLSPaths:
    ca_file: Path
    cert_file: Path
    key_file: Path


def tls_paths(directory: Path) -> TLSPaths:
    return TLSPaths(directory / "ca.pem", directory / "tls" / "server.pem", directory / "tls" / "server-key.pem")


def needs_new_certificate(
    paths: TLSPaths, now: datetime.datetime | None = None, addresses: tuple[str, ...] = ()
) -> bool:
    """True when any file is missing, the server certificate expires soon or lacks one of `addresses`."""
    if not (paths.ca_file.exists() and paths.cert_file.exists() and paths.key_file.exists()):
        return True
    now = now or datetime.datetime.now(datetime.UTC)
    cert = x509.load_pem_x509_certificate(paths.cert_file.read_bytes())
    names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    have = {str(ip) for ip in names.get_values_for_type(x509.IPAddress)}
    return cert.not_valid_after_utc - now < RENEW_WITHIN or not set(addresses) <= have


def write_private(path: Path, data: bytes) -> None:
    """Write `data` to a file created 0600 from the start (never chmod after writing).

    An existing file is replaced through a fresh file and a rename, so there is no moment
    where the new content sits in a file with a looser mode.
    """
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    if tmp.exists():
        tmp.unlink()
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def write_tls(directory: Path, host: str = "127.0.0.1", also: tuple[str, ...] = ()) -> TLSPaths:
    """Make a fresh CA and a server certificate for `host` (and the addresses `also`)."""
    paths = tls_paths(directory)
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Citadel lab Vault CA (not for production)")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name)
        .issuer_name(ca_name)
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    server_key = ec.generate_private_key(ec.SECP256R1())
    server_cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, host)]))
        .issuer_name(ca_name)
        .public_key(server_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=SERVER_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.IPAddress(ipaddress.ip_address(a)) for a in (host, *also)] + [x509.DNSName("localhost")]
            ),
            critical=False,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    pem = serialization.Encoding.PEM
    write_private(
        paths.key_file,
        server_key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()),
    )
    write_private(paths.cert_file, server_cert.public_bytes(pem))
    # The CA certificate is public: clients everywhere read it, so it is 0644.
    paths.ca_file.write_bytes(ca_cert.public_bytes(pem))
    os.chmod(paths.ca_file, 0o644)
    return paths
