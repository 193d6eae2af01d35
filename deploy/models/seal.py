"""``citadel model seal``: encrypt and sign a model directory into ``STORE/NAME/REVISION/``.

Steps: a fresh data key from transit (plaintext in memory only); every file sealed into a
hidden work directory beside the target; the statement and manifest signed by transit
``model-signing``; the result checked with the exported public key; then one rename makes
it appear, and KV ``gpu/models/NAME`` gets a copy of the wrapped key. A failure leaves
neither a half-sealed directory nor a KV change.

`progress`, when given, is called with the bytes just written (a few times a second);
the calls add up to :func:`seal_total` of the source once sealing succeeds.

Example::

    >>> total = seal_total(Path("/data/llama-3-8b"))                  # doctest: +SKIP
    >>> seal_model(keys, Path("/srv/models"), Path("/data/llama-3-8b"), "llama-3-8b", "r1",
    ...            progress=bar.advance)                              # doctest: +SKIP
    Sealed(name='llama-3-8b', revision='r1', ...)
"""

from __future__ import annotations

import os
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from citadel_runtime import sealed
from deploy.models import ModelError
from deploy.models.keys import DATA_KEY, SIGNING_KEY, Keys
from deploy.models.location import check_name
from deploy.models.meter import ByteCallback, Meter, written_bytes


@dataclass
class Sealed:
    name: str
    revision: str
    directory: str
    files: int
    bytes: int
    key_version: int
    kv_updated: bool

    def as_dict(self) -> dict:
        return dict(self.__dict__)


def seal_total(source: Path, chunk_size: int = sealed.DEFAULT_CHUNK_SIZE) -> int:
    """The bytes sealing `source` writes: each file's size plus every chunk's nonce and tag.

    Refuses (ModelError) a source that is not a directory, and (SealError) links and special files.
    """
    if not source.is_dir():
        raise ModelError(f"source {source}: not a directory")
    total = 0
    for path in sealed.scan_source(source):
        size = (source / path).stat().st_size
        total += size + max(1, -(-size // chunk_size)) * sealed.OVERHEAD
    return total


def seal_model(keys: Keys, root: Path, source: Path, name: str, revision: str,
               chunk_size: int = sealed.DEFAULT_CHUNK_SIZE, workers: int | None = None,
               progress: ByteCallback | None = None) -> Sealed:
    check_name("model", name)
    check_name("revision", revision)
    total = seal_total(source, chunk_size)  # refuses links and special files before asking Vault for anything
    target = root / name / revision
    if target.exists():
        raise ModelError(f"model {name}/{revision}: already sealed at {target}; choose another --revision")
    (root / name).mkdir(mode=0o755, parents=True, exist_ok=True)
    work = root / name / f".sealing-{revision}-{secrets.token_hex(4)}"
    data_key, wrapped = keys.new_data_key()
    try:
        with Meter(lambda: written_bytes(work / sealed.FILES_DIR), total, progress):
            manifest = sealed.seal(source, work, model=name, revision=revision, data_key=data_key,
                                   wrapped_key=wrapped, signer=keys.signer(), transit_key=DATA_KEY,
                                   signing_key=SIGNING_KEY, chunk_size=chunk_size, workers=workers)
        sealed.read_manifest(work, keys.public_key_pem())  # what hosts will check, checked now
        os.rename(work, target)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    finally:
        del data_key
    kv = keys.record_wrapped(name, revision, wrapped)
    return Sealed(name, revision, str(target), len(manifest.files), sum(f.size for f in manifest.files),
                  manifest.key_version, kv)
