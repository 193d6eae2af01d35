"""Signatures of sealed models: DSSE envelopes, the OpenSSF model-signing bundle, offline checks.

Runs on GPU hosts too: Python's stdlib plus ``cryptography`` (only APIs present in
Debian's python3-cryptography 38: ``ec``, ``hashes``, ``serialization``).

Two signed documents travel with a sealed model (docs/sealed-model-format.md):

- ``model.sig``: a Sigstore bundle v0.3 in the OpenSSF model-signing format (a DSSE
  envelope over an in-toto statement listing every plaintext file and its sha256), so
  that ``model_signing verify key DIR --signature model.sig --public_key pub.pem`` accepts
  the unsealed directory with a public, maintained tool;
- ``manifest.sig``: a DSSE envelope whose payload is the exact bytes of ``manifest.json``
  (wrapped data key, chunk size, names, sizes, digests, the statement's digest).

Both are ECDSA P-256 / SHA-256 signatures in DER made by one key (in production, Vault
transit key ``model-signing``; the private key never leaves Vault). A signature names its
key by ``keyid`` (and the bundle by ``publicKey.hint``): the hex SHA-256 of the key's PEM
SubjectPublicKeyInfo, so a host given several public keys (versions of the transit key)
picks the right one.

Example::

    >>> from cryptography.hazmat.primitives.asymmetric import ec
    >>> signer = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    >>> env = envelope(MANIFEST_TYPE, b'{"a": 1}', signer)
    >>> verify_envelope(env, MANIFEST_TYPE, public_keys(signer.public_key_pem), "manifest.sig")
    b'{"a": 1}'
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from typing import Protocol

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

IN_TOTO_TYPE = "application/vnd.in-toto+json"
MANIFEST_TYPE = "application/vnd.citadel.sealed-manifest.v1+json"
BUNDLE_MEDIA_TYPE = "application/vnd.dev.sigstore.bundle.v0.3+json"
STATEMENT_TYPE = "https://in-toto.io/Statement/v1"
PREDICATE_TYPE = "https://model_signing/signature/v1.0"
# What model_signing leaves out of a directory by default; sealing skips the same paths
# so that its verifier, hashing the unsealed directory, sees exactly the signed files.
IGNORED_PATHS = (".git", ".gitattributes", ".github", ".gitignore")
_PEM_BLOCK = re.compile(rb"-----BEGIN PUBLIC KEY-----.+?-----END PUBLIC KEY-----", re.S)
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class SealError(Exception):
    """A sealed model (or its source) is wrong; the message names the file and the check.

    Never carries key material: only names, sizes, indexes and public digests.
    """


class Signer(Protocol):
    """Makes ECDSA P-256 signatures (DER) over SHA-256 of a message; Vault transit in production."""

    public_key_pem: bytes

    def sign(self, message: bytes) -> bytes: ...


class LocalSigner:
    """A signer holding a local P-256 private key: for tests, and for sites without Vault signing."""

    def __init__(self, private_key: ec.EllipticCurvePrivateKey):
        self._key = private_key
        self.public_key_pem = private_key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what is actually signed."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def key_hint(public_key_pem: bytes) -> str:
    """Hex SHA-256 of the key's PEM SubjectPublicKeyInfo (model_signing's ``publicKey.hint``)."""
    key = serialization.load_pem_public_key(public_key_pem)
    canonical = key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    return hashlib.sha256(canonical).hexdigest()


def public_keys(pem: bytes) -> dict[str, ec.EllipticCurvePublicKey]:
    """The P-256 public keys in `pem` (one or more PEM blocks), by hint."""
    found = {}
    for block in _PEM_BLOCK.findall(pem or b""):
        try:
            key = serialization.load_pem_public_key(block)
        except ValueError:
            raise SealError("public key: a PEM block is not a valid public key") from None
        if not isinstance(key, ec.EllipticCurvePublicKey) or key.curve.name != "secp256r1":
            raise SealError("public key: only ECDSA P-256 keys sign sealed models")
        found[key_hint(block)] = key
    if not found:
        raise SealError("public key: no PEM public key given (export it with `citadel model public-key`)")
    return found


def _b64(text, what: str) -> bytes:
    if not isinstance(text, str):
        raise SealError(f"{what}: not a base64 string")
    try:
        return base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        raise SealError(f"{what}: not valid base64") from None


def envelope(payload_type: str, payload: bytes, signer: Signer) -> dict:
    """A DSSE envelope over `payload`, signed by `signer`."""
    signature = signer.sign(pae(payload_type, payload))
    return {
        "payload": base64.b64encode(payload).decode(),
        "payloadType": payload_type,
        "signatures": [{"keyid": key_hint(signer.public_key_pem), "sig": base64.b64encode(signature).decode()}],
    }


def verify_envelope(env, payload_type: str, keys: dict, what: str) -> bytes:
    """The payload of DSSE envelope `env` once a signature by one of `keys` checks; else SealError."""
    if not isinstance(env, dict) or env.get("payloadType") != payload_type:
        raise SealError(f"{what}: not a DSSE envelope of type {payload_type}")
    payload = _b64(env.get("payload"), f"{what}: payload")
    signatures = env.get("signatures")
    if not isinstance(signatures, list) or not signatures:
        raise SealError(f"{what}: no signature")
    message = pae(payload_type, payload)
    for entry in signatures:
        if not isinstance(entry, dict):
            continue
        sig = _b64(entry.get("sig"), f"{what}: signature")
        # A keyid names the key; an envelope without one (another signer) is tried with each.
        candidates = [keys[entry["keyid"]]] if entry.get("keyid") in keys else ([] if entry.get("keyid") else keys.values())
        for key in candidates:
            try:
                key.verify(sig, message, ec.ECDSA(hashes.SHA256()))
                return payload
            except InvalidSignature:
                continue
    raise SealError(f"{what}: signature does not verify with the given public key(s) (tampered, or signed by another key)")


def statement(model: str, files: list[tuple[str, str]]) -> bytes:
    """The in-toto statement model_signing signs, for `files` ((path, sha256 hex) pairs)."""
    resources = [{"name": path, "algorithm": "sha256", "digest": digest} for path, digest in sorted(files)]
    root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest()
    document = {
        "_type": STATEMENT_TYPE,
        "subject": [{"name": model, "digest": {"sha256": root}}],
        "predicateType": PREDICATE_TYPE,
        "predicate": {
            "serialization": {"method": "files", "hash_type": "sha256", "allow_symlinks": False,
                              "ignore_paths": list(IGNORED_PATHS)},
            "resources": resources,
        },
    }
    return json.dumps(document, indent=2).encode()


def bundle(payload: bytes, signer: Signer) -> dict:
    """A Sigstore bundle v0.3 with a DSSE envelope over statement `payload` (no transparency log)."""
    return {
        "mediaType": BUNDLE_MEDIA_TYPE,
        "verificationMaterial": {"publicKey": {"hint": key_hint(signer.public_key_pem)}, "tlogEntries": []},
        "dsseEnvelope": envelope(IN_TOTO_TYPE, payload, signer),
    }


def verify_bundle(document, keys: dict, what: str = "model.sig") -> tuple[bytes, dict[str, str]]:
    """(statement bytes, {path: sha256}) of a model_signing bundle signed by one of `keys`."""
    if not isinstance(document, dict) or document.get("mediaType") != BUNDLE_MEDIA_TYPE:
        raise SealError(f"{what}: not a Sigstore bundle v0.3")
    hint = ((document.get("verificationMaterial") or {}).get("publicKey") or {}).get("hint")
    if hint not in keys:
        raise SealError(f"{what}: signed by a key that is not among the given public keys")
    payload = verify_envelope(document.get("dsseEnvelope"), IN_TOTO_TYPE, {hint: keys[hint]}, what)
    try:
        parsed = json.loads(payload)
        subject = parsed["subject"]
        resources = parsed["predicate"]["resources"]
        ok = parsed["_type"] == STATEMENT_TYPE and parsed["predicateType"] == PREDICATE_TYPE and len(subject) == 1
        files = {}
        for r in resources:
            if r["algorithm"] != "sha256" or not _HEX64.match(r["digest"]) or r["name"] in files:
                ok = False
                break
            files[r["name"]] = r["digest"]
        root = hashlib.sha256(b"".join(bytes.fromhex(r["digest"]) for r in resources)).hexdigest() if ok else None
        ok = ok and subject[0]["digest"]["sha256"] == root
    except (ValueError, KeyError, TypeError, AttributeError):
        ok = False
    if not ok:
        raise SealError(f"{what}: the signed statement is not a model_signing v1.0 file list with consistent digests")
    return payload, files
