"""``citadel model verify``: signatures, manifest, and every chunk's tag and file digest.

The data key is unwrapped through Vault with the operator's token (held in memory only);
nothing is decrypted to disk. Every public key version of ``model-signing`` is accepted,
so models signed before a rotation of the signing key still verify.

`progress`, when given, is called with the sealed bytes just read (a few times a
second); once every revision checks, the calls add up to :func:`verify_total`.

Example::

    >>> [r["ok"] for r in verify_models(keys, Path("/srv/models"), "llama-3-8b")]   # doctest: +SKIP
    [True]
"""

from __future__ import annotations

from pathlib import Path

from citadel_runtime import sealed
from deploy.models.keys import Keys
from deploy.models.location import revisions
from deploy.models.meter import ByteCallback, BytesRead, Meter, written_bytes


def verify_total(root: Path, name: str, revision: str | None = None) -> int:
    """The bytes verifying reads: the sealed files of every revision selected (as they are on disk)."""
    return sum(written_bytes(directory / sealed.FILES_DIR) for _, _, directory in revisions(root, name, revision))


def verify_one(keys: Keys, directory: Path, public_keys: bytes, workers: int | None = None,
               progress: ByteCallback | None = None) -> dict:
    """A result row for one sealed revision: ok, or the first failed check."""
    try:
        manifest = sealed.read_manifest(directory, public_keys)
        data_key = keys.unwrap(manifest.wrapped_key)
        with Meter(BytesRead(), sum(manifest.sealed_size(f) for f in manifest.files), progress):
            sealed.verify_sealed(directory, public_keys, data_key=data_key, workers=workers)
        del data_key
    except sealed.SealError as exc:
        return {"ok": False, "error": str(exc)}
    return {"ok": True, "files": len(manifest.files), "bytes": sum(f.size for f in manifest.files),
            "key_version": manifest.key_version, "error": None}


def verify_models(keys: Keys, root: Path, name: str, revision: str | None = None, workers: int | None = None,
                  progress: ByteCallback | None = None) -> list[dict]:
    public_keys = keys.public_key_pem(all_versions=True)
    return [{"name": model, "revision": rev, **verify_one(keys, directory, public_keys, workers, progress)}
            for model, rev, directory in revisions(root, name, revision)]
