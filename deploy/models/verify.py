"""``citadel model verify``: signatures, manifest, and every chunk's tag and file digest.

The data key is unwrapped through Vault with the operator's token (held in memory only);
nothing is decrypted to disk. Every public key version of ``model-signing`` is accepted,
so models signed before a rotation of the signing key still verify.

Example::

    >>> [r["ok"] for r in verify_models(keys, Path("/srv/models"), "llama-3-8b")]   # doctest: +SKIP
    [True]
"""

from __future__ import annotations

from pathlib import Path

from citadel_runtime import sealed
from deploy.models.keys import Keys
from deploy.models.location import revisions


def verify_one(keys: Keys, directory: Path, public_keys: bytes, workers: int | None = None) -> dict:
    """A result row for one sealed revision: ok, or the first failed check."""
    try:
        manifest = sealed.read_manifest(directory, public_keys)
        data_key = keys.unwrap(manifest.wrapped_key)
        sealed.verify_sealed(directory, public_keys, data_key=data_key, workers=workers)
        del data_key
    except sealed.SealError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "files": len(manifest.files), "bytes": sum(f.size for f in manifest.files),
            "key_version": manifest.key_version, "error": None}


def verify_models(keys: Keys, root: Path, name: str, revision: str | None = None, workers: int | None = None) -> list[dict]:
    public_keys = keys.public_key_pem(all_versions=True)
    return [{"name": model, "revision": rev, **verify_one(keys, directory, public_keys, workers)}
            for model, rev, directory in revisions(root, name, revision)]
