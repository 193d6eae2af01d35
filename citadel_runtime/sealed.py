"""Sealed models: every file encrypted in authenticated chunks, a signed manifest, offline checks.

Runs on GPU hosts too: Python's stdlib plus ``cryptography`` (AESGCM, available in
Debian's python3-cryptography 38). The format is specified in docs/sealed-model-format.md;
in short, a sealed model is a directory::

    manifest.json      what was sealed (files, sizes, sha256, wrapped data key, chunk size)
    manifest.sig       DSSE envelope: ECDSA P-256 signature over manifest.json's exact bytes
    model.sig          OpenSSF model-signing bundle over the plaintext files' sha256
    files/000000.seal  one sealed file per model file: [nonce | AES-256-GCM ciphertext | tag]...

Each chunk's associated data binds the sealing (``seal_id``), the file (``id``), the chunk
index and a last-chunk flag, so reordering, truncating, or moving chunks or whole files
between files fails its tag. :func:`unseal` checks signatures first, then every tag,
every size and every file's plaintext sha256, and leaves nothing behind on any failure.

Work is spread over processes, one file at a time per process: ``cryptography`` >= 42
holds the GIL during AESGCM (measured: a 256 MiB decrypt stalled another thread 176 ms),
so threads would serialise decryption. Each process holds about two chunks in memory.

Example::

    >>> keys = public_keys(signer.public_key_pem)                               # doctest: +SKIP
    >>> seal(src, sealed, model="m", revision="1", data_key=k, wrapped_key=w,
    ...      signer=signer)                                                     # doctest: +SKIP
    >>> unseal(sealed, dest, k, signer.public_key_pem)                          # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import multiprocessing
import os
import re
import secrets
import shutil
import stat
import struct
from concurrent.futures import FIRST_EXCEPTION, ProcessPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from citadel_runtime.sealed_sign import (
    IGNORED_PATHS,
    MANIFEST_TYPE,
    SealError,
    Signer,
    bundle,
    envelope,
    public_keys,
    statement,
    verify_bundle,
    verify_envelope,
)

__all__ = ["SealError", "Signer", "Manifest", "seal", "unseal", "verify_sealed", "resign", "read_manifest"]

FORMAT = "citadel-sealed-model"
VERSION = 1
CIPHER = "AES-256-GCM"
DEFAULT_CHUNK_SIZE = 4 << 20
MIN_CHUNK_SIZE, MAX_CHUNK_SIZE = 4 << 10, 64 << 20  # a host refuses to allocate more per chunk
NONCE_SIZE, TAG_SIZE = 12, 16
OVERHEAD = NONCE_SIZE + TAG_SIZE
MANIFEST, MANIFEST_SIG, BUNDLE, FILES_DIR = "manifest.json", "manifest.sig", "model.sig", "files"
AAD_LABEL = b"citadel-sealed-v1\0"

_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_SEALED_NAME = re.compile(r"^[0-9]{6}\.seal$")
_HEX32, _HEX64 = re.compile(r"^[0-9a-f]{32}$"), re.compile(r"^[0-9a-f]{64}$")
_WRAPPED = re.compile(r"^vault:v([1-9][0-9]*):[A-Za-z0-9+/]+=*$")


# -- the manifest ------------------------------------------------------------------------


def check_path(path: str) -> str:
    """`path` if it is a safe relative POSIX path inside the model; else SealError naming it."""
    shown = repr(path)
    if not isinstance(path, str) or not path:
        raise SealError(f"file {shown}: empty path")
    if "\\" in path or "\0" in path:
        raise SealError(f"file {shown}: backslash or NUL in the path")
    if path.startswith("/"):
        raise SealError(f"file {shown}: absolute path; paths must stay inside the model directory")
    parts = path.split("/")
    if any(p == ".." for p in parts):
        raise SealError(f"file {shown}: '..' in the path would escape the model directory")
    if any(p in ("", ".") for p in parts):
        raise SealError(f"file {shown}: empty or '.' path component")
    try:
        path.encode("utf-8")
    except UnicodeEncodeError:
        raise SealError(f"file {shown}: not valid UTF-8") from None
    return path


@dataclass(frozen=True)
class FileEntry:
    path: str  # relative POSIX path of the plaintext file
    size: int  # plaintext bytes
    sha256: str  # hex digest of the plaintext
    sealed: str  # name of the sealed file under files/
    id: str  # 128-bit random hex, bound into every chunk's associated data


@dataclass(frozen=True)
class Manifest:
    model: str
    revision: str
    created: str
    seal_id: str
    chunk_size: int
    wrapped_key: str
    transit_key: str
    key_version: int
    signing_key: str
    statement_sha256: str
    files: tuple[FileEntry, ...]

    def chunks(self, entry: FileEntry) -> int:
        """How many chunks `entry` has: at least one, so an empty file still carries a tag."""
        return max(1, -(-entry.size // self.chunk_size))

    def sealed_size(self, entry: FileEntry) -> int:
        return entry.size + self.chunks(entry) * OVERHEAD

    def to_json(self) -> bytes:
        document = {
            "format": FORMAT, "version": VERSION, "model": self.model, "revision": self.revision,
            "created": self.created, "seal_id": self.seal_id, "cipher": CIPHER, "chunk_size": self.chunk_size,
            "data_key": {"wrapped": self.wrapped_key, "transit_key": self.transit_key, "key_version": self.key_version},
            "signing": {"transit_key": self.signing_key, "bundle": BUNDLE, "statement_sha256": self.statement_sha256},
            "files": [{"path": f.path, "size": f.size, "sha256": f.sha256, "sealed": f.sealed, "id": f.id}
                      for f in self.files],
        }
        return (json.dumps(document, indent=2) + "\n").encode()

    @classmethod
    def from_json(cls, raw: bytes, what: str = MANIFEST) -> Manifest:
        """Parse and check every field; any problem is a SealError naming the field."""
        try:
            doc = json.loads(raw)
        except ValueError:
            raise SealError(f"{what}: not valid JSON") from None

        def need(mapping, key, kind, where):
            value = mapping.get(key) if isinstance(mapping, dict) else None
            if not isinstance(value, kind) or isinstance(value, bool) and kind is not bool:
                raise SealError(f"{what}: field {where}{key} is missing or not a {kind.__name__}")
            return value

        def exact(mapping, keys, where):
            if set(mapping) != set(keys):
                extra = sorted(set(mapping) ^ set(keys))
                raise SealError(f"{what}: {where or 'top level'} has unexpected or missing fields {extra}")

        if not isinstance(doc, dict):
            raise SealError(f"{what}: not a JSON object")
        if doc.get("format") != FORMAT or doc.get("version") != VERSION:
            raise SealError(f"{what}: not a {FORMAT} manifest of version {VERSION}")
        exact(doc, ("format", "version", "model", "revision", "created", "seal_id", "cipher", "chunk_size",
                    "data_key", "signing", "files"), "")
        if doc["cipher"] != CIPHER:
            raise SealError(f"{what}: cipher {doc['cipher']!r} is not {CIPHER}")
        model, revision = need(doc, "model", str, ""), need(doc, "revision", str, "")
        for label, value in (("model", model), ("revision", revision)):
            if not _NAME.match(value):
                raise SealError(f"{what}: {label} {value!r} is not a plain name (letters, digits, '.', '_', '-')")
        seal_id = need(doc, "seal_id", str, "")
        if not _HEX32.match(seal_id):
            raise SealError(f"{what}: seal_id is not 32 hex digits")
        chunk = need(doc, "chunk_size", int, "")
        if not MIN_CHUNK_SIZE <= chunk <= MAX_CHUNK_SIZE:
            raise SealError(f"{what}: chunk_size {chunk} outside {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
        key = need(doc, "data_key", dict, "")
        exact(key, ("wrapped", "transit_key", "key_version"), "data_key")
        wrapped = need(key, "wrapped", str, "data_key.")
        found = _WRAPPED.match(wrapped)
        if not found or int(found.group(1)) != need(key, "key_version", int, "data_key."):
            raise SealError(f"{what}: data_key.wrapped is not a transit ciphertext of version data_key.key_version")
        signing = need(doc, "signing", dict, "")
        exact(signing, ("transit_key", "bundle", "statement_sha256"), "signing")
        if signing.get("bundle") != BUNDLE or not _HEX64.match(need(signing, "statement_sha256", str, "signing.")):
            raise SealError(f"{what}: signing.bundle must be {BUNDLE} and statement_sha256 64 hex digits")
        entries, paths, sealed_names, ids = [], set(), set(), set()
        for index, item in enumerate(need(doc, "files", list, "")):
            where = f"files[{index}]."
            if not isinstance(item, dict):
                raise SealError(f"{what}: {where[:-1]} is not an object")
            exact(item, ("path", "size", "sha256", "sealed", "id"), where[:-1])
            entry = FileEntry(check_path(need(item, "path", str, where)), need(item, "size", int, where),
                              need(item, "sha256", str, where), need(item, "sealed", str, where), need(item, "id", str, where))
            if entry.size < 0 or not _HEX64.match(entry.sha256) or not _HEX32.match(entry.id):
                raise SealError(f"{what}: file {entry.path}: bad size, sha256 or id")
            if not _SEALED_NAME.match(entry.sealed):
                raise SealError(f"{what}: file {entry.path}: sealed name {entry.sealed!r} is not NNNNNN.seal")
            if entry.path in paths or entry.sealed in sealed_names or entry.id in ids:
                raise SealError(f"{what}: file {entry.path}: path, sealed name or id listed twice")
            paths.add(entry.path), sealed_names.add(entry.sealed), ids.add(entry.id)
            entries.append(entry)
        for path in paths:  # "a" and "a/b" cannot both be files
            parts = path.split("/")
            for depth in range(1, len(parts)):
                if "/".join(parts[:depth]) in paths:
                    raise SealError(f"{what}: file {path}: a parent directory is also listed as a file")
        return cls(model, revision, need(doc, "created", str, ""), seal_id, chunk, wrapped,
                   need(key, "transit_key", str, "data_key."), key["key_version"],
                   need(signing, "transit_key", str, "signing."), signing["statement_sha256"], tuple(entries))


def aad(seal_id: bytes, file_id: bytes, index: int, last: bool) -> bytes:
    """Associated data of one chunk: which sealing, which file, which chunk, whether it is the last."""
    return AAD_LABEL + seal_id + file_id + struct.pack(">QB", index, 1 if last else 0)


# -- workers (one file each; forked, so the data key is inherited in memory, never sent) --

_worker: dict = {}


def _init_worker(data_key: bytes, abort) -> None:
    _worker["aes"] = AESGCM(data_key)  # sealing
    _worker["key"] = data_key  # unsealing (_decrypt_into)
    _worker["abort"] = abort


def _aborted() -> bool:
    abort = _worker.get("abort")
    return abort is not None and abort.is_set()


def _read_full(fd: int, size: int) -> bytes:
    parts, wanted = [], size
    while wanted:
        block = os.read(fd, wanted)
        if not block:
            break
        parts.append(block)
        wanted -= len(block)
    return b"".join(parts) if len(parts) != 1 else parts[0]


def _seal_file(source: str, target: str, path: str, seal_id: bytes, file_id: bytes, chunk_size: int) -> tuple[int, str]:
    """Encrypt `source` into `target`; (plaintext size, sha256 hex) of what was read."""
    aes, digest, size, index = _worker["aes"], hashlib.sha256(), 0, 0
    try:
        src = os.open(source, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SealError(f"file {path}: cannot open ({exc.strerror})") from None
    try:
        if not stat.S_ISREG(os.fstat(src).st_mode):
            raise SealError(f"file {path}: not a regular file")
        out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        try:
            current = _read_full(src, chunk_size)
            while True:
                if _aborted():
                    raise SealError("stopped: another file failed")
                # Read ahead one chunk: a chunk is the last only when nothing follows it.
                following = _read_full(src, chunk_size) if len(current) == chunk_size else b""
                last = not following
                digest.update(current)
                size += len(current)
                nonce = os.urandom(NONCE_SIZE)
                os.write(out, nonce + aes.encrypt(nonce, current, aad(seal_id, file_id, index, last)))
                if last:
                    break
                current, index = following, index + 1
        finally:
            os.close(out)
    finally:
        os.close(src)
    return size, digest.hexdigest()


def _open_file(sealed: str, entry: FileEntry, expected: int) -> int:
    try:
        fd = os.open(sealed, os.O_RDONLY | os.O_NOFOLLOW)
    except OSError as exc:
        raise SealError(f"file {entry.path}: sealed file {FILES_DIR}/{entry.sealed} cannot be opened ({exc.strerror})") from None
    info = os.fstat(fd)
    if not stat.S_ISREG(info.st_mode) or info.st_size != expected:
        os.close(fd)
        raise SealError(
            f"file {entry.path}: sealed file {FILES_DIR}/{entry.sealed} is {info.st_size} bytes, the manifest "
            f"implies {expected} (truncated, extended, or replaced)"
        )
    return fd


def _read_into(fd: int, view: memoryview) -> int:
    """Fill `view` from `fd`; how many bytes were read (fewer only at the end of the file).

    Through the page cache: O_DIRECT with a reader thread one record ahead was measured
    and lost (bench/unseal_bench.py, 2 GiB: 0.46x warm, 0.98x cold).
    """
    done = 0
    while done < len(view):
        got = os.readv(fd, [view[done:]])
        if not got:
            break
        done += got
    return done


def _decrypt_into(key: bytes, record: memoryview, out: bytearray, associated: bytes) -> int:
    """Decrypt one chunk record ``nonce | ciphertext | tag`` into `out`; the plaintext's length.

    Raises InvalidTag. `out` holds at least ``len(record)`` bytes and is reused for every
    chunk: ``AESGCM.decrypt`` allocates and copies each chunk several times (measured with
    Debian's python3-cryptography 38 on a GPU host's interpreter: 0.73 GB/s, against
    4.1 GB/s for the same OpenSSL call through ``update_into``). The caller uses the
    plaintext only after ``finalize`` has checked the tag.
    """
    decryptor = Cipher(algorithms.AES(key), modes.GCM(bytes(record[:NONCE_SIZE]), bytes(record[-TAG_SIZE:]))).decryptor()
    decryptor.authenticate_additional_data(associated)
    length = decryptor.update_into(record[NONCE_SIZE:-TAG_SIZE], out)
    decryptor.finalize()
    return length


def _unseal_file(sealed: str, target: str | None, entry: FileEntry, chunk_size: int, chunks: int,
                 expected: int, seal_id: bytes) -> None:
    """Decrypt and check one file; write it to `target` (mode 0400) unless None (verify only)."""
    key, digest = _worker["key"], hashlib.sha256()
    fd = _open_file(sealed, entry, expected)
    # Two buffers for the whole file: a record read in, its plaintext decrypted out.
    record, plain = bytearray(chunk_size + OVERHEAD), bytearray(chunk_size + OVERHEAD)
    record_view, plain_view = memoryview(record), memoryview(plain)
    out = None
    try:
        if target is not None:
            # Created read-only at once: the creating descriptor may still write, and the
            # plaintext is never readable by anyone else, even for a moment.
            out = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o400)
        file_id = bytes.fromhex(entry.id)
        for index in range(chunks):
            if _aborted():
                raise SealError("stopped: another file failed")
            wanted = min(chunk_size, entry.size - index * chunk_size) + OVERHEAD
            got = _read_into(fd, record_view[:wanted])
            last = index == chunks - 1
            try:
                if got != wanted:
                    raise InvalidTag  # the size was checked on open: the file changed while read
                length = _decrypt_into(key, record_view[:wanted], plain, aad(seal_id, file_id, index, last))
            except InvalidTag:
                raise SealError(
                    f"file {entry.path}: chunk {index} of {chunks} in {FILES_DIR}/{entry.sealed} failed authentication "
                    "(tampered, reordered, truncated, moved from another file, or a wrong data key)"
                ) from None
            view = plain_view[:length]
            digest.update(view)
            if out is not None:
                while view:
                    view = view[os.write(out, view):]
        if digest.hexdigest() != entry.sha256:
            raise SealError(f"file {entry.path}: plaintext sha256 {digest.hexdigest()} differs from the signed manifest's {entry.sha256}")
    finally:
        os.close(fd)
        if out is not None:
            os.close(out)


def _run(tasks: list[tuple], function, data_key: bytes, workers: int | None) -> list:
    """Run `function(*task)` for every task on up to `workers` processes; the first error wins."""
    workers = max(1, min(workers or os.cpu_count() or 1, len(tasks) or 1))
    if workers == 1:
        _init_worker(data_key, None)
        try:
            return [function(*task) for task in tasks]
        finally:
            _worker.clear()
    context = multiprocessing.get_context("fork")
    abort = context.Event()
    with ProcessPoolExecutor(workers, mp_context=context, initializer=_init_worker, initargs=(data_key, abort)) as pool:
        futures = [pool.submit(function, *task) for task in tasks]
        done, _ = wait(futures, return_when=FIRST_EXCEPTION)
        failed = [f for f in futures if f.done() and not f.cancelled() and f.exception() is not None]
        if failed:
            abort.set()  # running workers stop at their next chunk
            for future in futures:
                future.cancel()
            wait(futures)
            error = failed[0].exception()
            if isinstance(error, SealError):
                raise error
            raise SealError(f"worker failed: {type(error).__name__}: {error}")
        return [f.result() for f in futures]


# -- sealing -----------------------------------------------------------------------------


def scan_source(source: Path) -> list[str]:
    """Relative paths of the regular files under `source`; refuses links and special files."""
    if not source.is_dir() or source.is_symlink():
        raise SealError(f"source {source}: not a directory")
    found = []
    for root, dirs, files in os.walk(source, followlinks=False):
        relative_root = Path(root).relative_to(source)
        for name in sorted(dirs + files):
            relative = (relative_root / name).as_posix()
            if relative_root == Path(".") and name in IGNORED_PATHS:
                if name in dirs:
                    dirs.remove(name)
                continue
            mode = os.lstat(os.path.join(root, name)).st_mode
            if stat.S_ISLNK(mode):
                raise SealError(f"file {relative}: a symbolic link; sealing takes regular files only (copy the target in)")
            if stat.S_ISDIR(mode):
                continue
            if not stat.S_ISREG(mode):
                raise SealError(f"file {relative}: not a regular file (device, socket or pipe)")
            found.append(check_path(relative))
    return sorted(found)


def _write_new(path: Path, data: bytes) -> None:
    """Write `data` to `path` through a temporary file and a rename, so readers never see half."""
    temporary = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    with open(temporary, "xb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)


def _sign(sealed: Path, manifest: Manifest, payload: bytes, signer: Signer) -> None:
    raw = manifest.to_json()
    _write_new(sealed / BUNDLE, (json.dumps(bundle(payload, signer), indent=2) + "\n").encode())
    _write_new(sealed / MANIFEST_SIG, (json.dumps(envelope(MANIFEST_TYPE, raw, signer), indent=2) + "\n").encode())
    _write_new(sealed / MANIFEST, raw)


def seal(source, sealed_dir, *, model: str, revision: str, data_key: bytes, wrapped_key: str, signer: Signer,
         transit_key: str = "model-data", signing_key: str = "model-signing",
         chunk_size: int = DEFAULT_CHUNK_SIZE, workers: int | None = None) -> Manifest:
    """Seal every regular file of `source` into the new directory `sealed_dir`.

    `data_key` (32 bytes) encrypts; `wrapped_key` (its transit ciphertext) is recorded for
    hosts; `signer` signs the bundle and manifest. On failure `sealed_dir` is removed.
    """
    source, sealed = Path(source), Path(sealed_dir)
    if len(data_key) != 32:
        raise SealError("data key: must be 32 bytes (AES-256)")
    found = _WRAPPED.match(wrapped_key or "")
    if not found:
        raise SealError("wrapped key: not a transit ciphertext (vault:vN:...)")
    for label, value in (("model", model), ("revision", revision)):
        if not _NAME.match(value or ""):
            raise SealError(f"{label} {value!r}: use letters, digits, '.', '_', '-' (at most 128, not starting with a symbol)")
    if not MIN_CHUNK_SIZE <= chunk_size <= MAX_CHUNK_SIZE:
        raise SealError(f"chunk size {chunk_size}: must be within {MIN_CHUNK_SIZE}..{MAX_CHUNK_SIZE}")
    paths = scan_source(source)
    if not paths:
        raise SealError(f"source {source}: no files to seal")
    sealed.mkdir(mode=0o700, parents=False)  # refuses an existing directory: never mix two sealings
    try:
        (sealed / FILES_DIR).mkdir(mode=0o700)
        seal_id = secrets.token_bytes(16)
        names = {path: (f"{index:06d}.seal", secrets.token_hex(16)) for index, path in enumerate(paths)}
        tasks = [(str(source / path), str(sealed / FILES_DIR / names[path][0]), path, seal_id,
                  bytes.fromhex(names[path][1]), chunk_size) for path in paths]
        tasks.sort(key=lambda t: -os.lstat(t[0]).st_size)  # biggest first: better balance
        results = dict(zip((t[2] for t in tasks), _run(tasks, _seal_file, data_key, workers), strict=True))
        entries = tuple(FileEntry(path, results[path][0], results[path][1], *names[path]) for path in paths)
        payload = statement(model, [(e.path, e.sha256) for e in entries])
        manifest = Manifest(
            model, revision, dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
            seal_id.hex(), chunk_size, wrapped_key, transit_key, int(found.group(1)), signing_key,
            hashlib.sha256(payload).hexdigest(), entries,
        )
        _sign(sealed, manifest, payload, signer)
        return manifest
    except BaseException:
        shutil.rmtree(sealed, ignore_errors=True)
        raise


# -- checking and unsealing --------------------------------------------------------------


def _load_json(path: Path, what: str):
    try:
        with open(path, "rb") as handle:
            return json.loads(handle.read(16 << 20))  # signed documents are small
    except FileNotFoundError:
        raise SealError(f"{what}: missing") from None
    except (OSError, ValueError) as exc:
        raise SealError(f"{what}: unreadable or not JSON ({type(exc).__name__})") from None


def read_manifest(sealed_dir, public_key_pem: bytes, require_copy: bool = True) -> Manifest:
    """The manifest once its signature, the bundle's, and their agreement all check.

    ``manifest.json`` must be byte-identical to the signed payload (`require_copy`; only
    :func:`resign` repairing an interrupted rewrite turns that off).
    """
    sealed = Path(sealed_dir)
    keys = public_keys(public_key_pem)
    raw = verify_envelope(_load_json(sealed / MANIFEST_SIG, MANIFEST_SIG), MANIFEST_TYPE, keys, MANIFEST_SIG)
    if require_copy:
        try:
            copy = (sealed / MANIFEST).read_bytes()
        except OSError:
            raise SealError(f"{MANIFEST}: missing or unreadable") from None
        if copy != raw:
            raise SealError(f"{MANIFEST}: differs from the signed copy in {MANIFEST_SIG} (tampered)")
    manifest = Manifest.from_json(raw)
    payload, files = verify_bundle(_load_json(sealed / BUNDLE, BUNDLE), keys)
    if hashlib.sha256(payload).hexdigest() != manifest.statement_sha256:
        raise SealError(f"{BUNDLE}: its statement is not the one the manifest names (statement_sha256)")
    listed = {e.path: e.sha256 for e in manifest.files}
    if files != listed:
        differing = sorted(set(files.items()) ^ set(listed.items()))
        raise SealError(f"{BUNDLE}: files or digests differ from the manifest's, first at {differing[0][0]}")
    return manifest


def _check_tasks(sealed: Path, manifest: Manifest, dest: Path | None) -> list[tuple]:
    seal_id = bytes.fromhex(manifest.seal_id)
    tasks = []
    for e in manifest.files:
        target = None if dest is None else str(dest / e.path)
        tasks.append((str(sealed / FILES_DIR / e.sealed), target, e, manifest.chunk_size, manifest.chunks(e),
                      manifest.sealed_size(e), seal_id))
    return sorted(tasks, key=lambda t: -t[2].size)


def verify_sealed(sealed_dir, public_key_pem: bytes, data_key: bytes | None = None, workers: int | None = None) -> Manifest:
    """Check signatures, manifest and sealed sizes; with `data_key`, every chunk's tag and sha256 too.

    Writes no plaintext anywhere. Returns the verified manifest; raises SealError.
    """
    sealed = Path(sealed_dir)
    manifest = read_manifest(sealed, public_key_pem)
    for entry in manifest.files:
        os.close(_open_file(str(sealed / FILES_DIR / entry.sealed), entry, manifest.sealed_size(entry)))
    if data_key is not None:
        _run(_check_tasks(sealed, manifest, None), _unseal_file, _key(data_key), workers)
    return manifest


def _key(data_key: bytes) -> bytes:
    if not isinstance(data_key, (bytes, bytearray)) or len(data_key) != 32:
        raise SealError("data key: must be 32 bytes (AES-256)")
    return bytes(data_key)


def unseal(sealed_dir, dest_dir, data_key: bytes, public_key_pem: bytes, workers: int | None = None) -> Manifest:
    """Verify, then decrypt every file of `sealed_dir` into `dest_dir` (absent or empty).

    Files are created mode 0400 and directories 0700 (the caller chowns). On any failure
    everything created under `dest_dir` is removed and SealError says which file, which
    chunk, which check. The data key is only held in memory.
    """
    sealed, dest = Path(sealed_dir), Path(dest_dir)
    data_key = _key(data_key)
    manifest = verify_sealed(sealed, public_key_pem)  # signatures first, before any decryption
    created_dest = not dest.exists()
    if created_dest:
        dest.mkdir(mode=0o700)
    elif dest.is_symlink() or not dest.is_dir() or any(dest.iterdir()):
        raise SealError(f"destination {dest}: must be absent or an empty directory")
    try:
        os.chmod(dest, 0o700)
        directories = sorted({str(Path(e.path).parent) for e in manifest.files} - {"."}, key=len)
        for directory in directories:
            for depth in range(1, len(Path(directory).parts) + 1):
                (dest / Path(*Path(directory).parts[:depth])).mkdir(mode=0o700, exist_ok=True)
        _run(_check_tasks(sealed, manifest, dest), _unseal_file, data_key, workers)
        return manifest
    except BaseException:
        # No partial plaintext: everything under dest_dir is ours (it was absent or empty).
        if created_dest:
            shutil.rmtree(dest, ignore_errors=True)
        else:
            for child in dest.iterdir():
                if child.is_dir() and not child.is_symlink():
                    shutil.rmtree(child, ignore_errors=True)
                else:
                    child.unlink(missing_ok=True)
        raise


def resign(sealed_dir, public_key_pem: bytes, signer: Signer, wrapped_key: str) -> Manifest:
    """Record a rewrapped data key in the manifest and sign manifest and bundle again.

    The sealed files are untouched (the data key itself is unchanged). Checks the current
    signatures with `public_key_pem` first. Re-runnable after an interruption.
    """
    sealed = Path(sealed_dir)
    old = read_manifest(sealed, public_key_pem, require_copy=False)
    found = _WRAPPED.match(wrapped_key or "")
    if not found:
        raise SealError("wrapped key: not a transit ciphertext (vault:vN:...)")
    payload, _ = verify_bundle(_load_json(sealed / BUNDLE, BUNDLE), public_keys(public_key_pem))
    new = Manifest(**{**old.__dict__, "wrapped_key": wrapped_key, "key_version": int(found.group(1))})
    _sign(sealed, new, payload, signer)
    return new
