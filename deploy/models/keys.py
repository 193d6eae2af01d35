"""Transit for sealed models: data keys, signatures, public keys, and the KV copy of a wrapped key.

- ``model-data`` (aes256-gcm96) wraps each sealing's random 256-bit data key; the
  plaintext key lives only in this process's memory and is registered for redaction
  (base64 and hex) the moment it arrives, so it cannot appear in any output.
- ``model-signing`` (ecdsa-p256) signs manifests and bundles through ``sign_data``
  (sha2-256, asn1 = DER, what ECDSA verifiers expect); its private key never leaves Vault.
- KV ``gpu/models/<name>`` keeps a copy of the wrapped key of the model's most recently
  sealed revision (``revision`` says which), where GPU hosts' policy reads it and where
  ``citadel secrets rotate transit-key model-data`` rewraps it. The manifest's copy is
  the authority for unsealing; ``citadel model rekey`` rewraps it and rewrites KV to match.

Example::

    >>> keys = Keys(store, "citadel-transit")                     # doctest: +SKIP
    >>> data_key, wrapped = keys.new_data_key()                   # doctest: +SKIP
    >>> keys.signer().sign(b"message")[:1]                        # doctest: +SKIP
    b'0'
"""

from __future__ import annotations

import base64
from contextlib import contextmanager

from deploy.redaction import register
from deploy.vault import VaultError

DATA_KEY = "model-data"
SIGNING_KEY = "model-signing"
KV_PREFIX = "gpu/models"  # shared with deploy.secrets.transit, which rewraps these on rotation


@contextmanager
def vault_step(what: str):
    """Turn an hvac or connection failure into a VaultError naming the step, never a value."""
    import hvac  # heavy: imported late, so `citadel --help` stays fast
    import requests

    try:
        yield
    except VaultError:
        raise
    except requests.RequestException as exc:
        raise VaultError(f"{what}: cannot reach Vault ({type(exc).__name__})") from None
    except hvac.exceptions.Forbidden:
        raise VaultError(f"{what}: permission denied: use an operator's token allowed to use the transit keys") from None
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"{what}: Vault refused ({exc})") from None


def _secret_bytes(b64: str) -> bytes:
    """Decode a plaintext key from Vault, masking it in all output first (both spellings)."""
    register(b64)
    raw = base64.b64decode(b64)
    register(raw.hex())
    return raw


class TransitSigner:
    """A :class:`citadel_runtime.sealed_sign.Signer` backed by transit ``sign_data`` (pinned version)."""

    def __init__(self, keys: Keys, version: int, public_key_pem: bytes):
        self._keys, self.version, self.public_key_pem = keys, version, public_key_pem

    def sign(self, message: bytes) -> bytes:
        with vault_step(f"signing with transit key {SIGNING_KEY}"):
            response = self._keys.transit.sign_data(
                SIGNING_KEY, base64.b64encode(message).decode(), key_version=self.version,
                hash_algorithm="sha2-256", marshaling_algorithm="asn1", mount_point=self._keys.mount,
            )
        signature = response["data"]["signature"]  # vault:vN:<base64 DER>
        return base64.b64decode(signature.split(":", 2)[2])


class Keys:
    """The transit and KV operations sealing needs, on one site's mounts."""

    def __init__(self, store, transit_mount: str):
        self.store, self.mount = store, transit_mount
        self.transit = store.client.secrets.transit

    def new_data_key(self) -> tuple[bytes, str]:
        """(plaintext data key, its wrapped form ``vault:vN:...``) from one ``datakey`` call.

        The ``plaintext`` flavour returns both at once; the ``wrapped`` one would need a
        second (decrypt) call to get the same plaintext over the same TLS connection.
        """
        with vault_step(f"new data key from transit key {DATA_KEY}"):
            data = self.transit.generate_data_key(DATA_KEY, "plaintext", mount_point=self.mount)["data"]
        return _secret_bytes(data["plaintext"]), data["ciphertext"]

    def unwrap(self, wrapped: str) -> bytes:
        with vault_step(f"unwrapping a data key with transit key {DATA_KEY}"):
            data = self.transit.decrypt_data(DATA_KEY, wrapped, mount_point=self.mount)["data"]
        return _secret_bytes(data["plaintext"])

    def rewrap(self, wrapped: str) -> str:
        """`wrapped` re-encrypted under the latest version of ``model-data`` (the key itself unchanged)."""
        with vault_step(f"rewrapping a data key with transit key {DATA_KEY}"):
            return self.transit.rewrap_data(DATA_KEY, wrapped, mount_point=self.mount)["data"]["ciphertext"]

    def latest_version(self, name: str = DATA_KEY) -> int:
        with vault_step(f"reading transit key {name}"):
            return int(self.transit.read_key(name, mount_point=self.mount)["data"]["latest_version"])

    def public_keys(self) -> dict[int, bytes]:
        """PEM public key of every version of ``model-signing`` still kept by transit."""
        with vault_step(f"reading transit key {SIGNING_KEY}"):
            data = self.transit.read_key(SIGNING_KEY, mount_point=self.mount)["data"]
        return {int(v): info["public_key"].encode() for v, info in data["keys"].items() if info.get("public_key")}

    def public_key_pem(self, all_versions: bool = False) -> bytes:
        """The latest version's PEM, or every version's (newest first) for checking older signatures."""
        keys = self.public_keys()
        if not keys:
            raise VaultError(f"transit key {SIGNING_KEY}: no public key (is it an ecdsa-p256 key?)")
        chosen = sorted(keys, reverse=True) if all_versions else [max(keys)]
        return b"".join(keys[v] if keys[v].endswith(b"\n") else keys[v] + b"\n" for v in chosen)

    def signer(self) -> TransitSigner:
        keys = self.public_keys()
        latest = max(keys)
        return TransitSigner(self, latest, keys[latest])

    def record_wrapped(self, model: str, revision: str, wrapped: str, only_if_revision: bool = False) -> bool:
        """Keep KV's copy in step; with `only_if_revision`, only if KV tracks this revision. True if written."""
        path = f"{KV_PREFIX}/{model}"
        with vault_step(f"KV {path}"):
            doc, version = self.store.read(path)
            if only_if_revision and (not doc or doc.get("revision") != revision):
                return False
            self.store.write(path, {**(doc or {}), "wrapped_key": wrapped, "transit_key": DATA_KEY,
                                    "revision": revision}, version)
        return True
