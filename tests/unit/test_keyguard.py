"""The keyguard's certificate and key reload (pure file handling; the lab runs it for real)."""

from __future__ import annotations

import datetime as dt
import json
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from citadel_runtime.keydoc import digest
from citadel_runtime.keyguard import Secrets


def write_bundle(path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-01")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.write_bytes(pem + cert.public_bytes(serialization.Encoding.PEM))


def keys(version: int) -> str:
    return json.dumps({"current": {"version": version, "sha256": digest(f"k{version}")}, "previous": None,
                       "previous_expires": None})


def test_a_reload_takes_new_keys_and_a_broken_file_keeps_the_previous_ones(tmp_path, capsys):
    bundle, key_file = tmp_path / "tls.pem", tmp_path / "keys.json"
    write_bundle(bundle)
    key_file.write_text(keys(1))
    secrets = Secrets(str(bundle), str(key_file))
    key_file.write_text(keys(2))
    secrets.reload()
    assert secrets.keys["current"]["version"] == 2
    context = secrets.context
    key_file.write_text("{half written")
    secrets.reload()
    assert secrets.keys["current"]["version"] == 2 and secrets.context is context
    key_file.write_text(json.dumps({"current": None}))  # no current key: refused, not taken
    bundle.write_text("not a certificate")
    secrets.reload()
    assert secrets.keys["current"]["version"] == 2 and secrets.context is context
    assert capsys.readouterr().err.count("reload failed, keeping the previous certificate and keys") == 2


def test_it_does_not_start_without_a_usable_certificate(tmp_path):
    (tmp_path / "keys.json").write_text(keys(1))
    (tmp_path / "tls.pem").write_text("nothing")
    with pytest.raises(ssl.SSLError):
        Secrets(str(tmp_path / "tls.pem"), str(tmp_path / "keys.json"))
