"""The sealed-model format without Vault: a local P-256 signer and a random data key.

Every attack is refused with a message naming the file and the check, and leaves nothing
in the destination directory.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from citadel_runtime import sealed
from citadel_runtime.sealed import SealError
from citadel_runtime.sealed_sign import LocalSigner

pytestmark = pytest.mark.unit
CHUNK = 4096
WRAPPED = "vault:v1:" + base64.b64encode(b"w" * 60).decode()
WEIGHTS = "weights/model.bin"


@pytest.fixture(scope="module")
def signer():
    return LocalSigner(ec.generate_private_key(ec.SECP256R1()))


@pytest.fixture(scope="module")
def key():
    return os.urandom(32)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    root = tmp_path_factory.mktemp("model")
    (root / "weights" / "deep").mkdir(parents=True)
    (root / "config.json").write_text('{"hidden_size": 64}')
    (root / WEIGHTS).write_bytes(os.urandom(3 * CHUNK + 100))  # 4 chunks, the last short
    (root / "weights" / "deep" / "exact.bin").write_bytes(os.urandom(2 * CHUNK))  # 2 full chunks
    (root / "empty").write_bytes(b"")
    (root / ".gitattributes").write_text("*.bin filter=lfs\n")  # skipped, as model_signing does
    return root


@pytest.fixture(scope="module")
def original(tmp_path_factory, source, signer, key):
    target = tmp_path_factory.mktemp("sealed") / "m"
    sealed.seal(source, target, model="m", revision="r1", data_key=key, wrapped_key=WRAPPED, signer=signer,
                chunk_size=CHUNK, workers=2)
    return target


@pytest.fixture
def copy(original, tmp_path):
    target = tmp_path / "sealed"
    shutil.copytree(original, target)
    return target


def entry(directory: Path, path: str) -> sealed.FileEntry:
    manifest = sealed.Manifest.from_json((directory / "manifest.json").read_bytes())
    return next(e for e in manifest.files if e.path == path)


def sealed_file(directory: Path, path: str) -> Path:
    return directory / "files" / entry(directory, path).sealed


def flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x01
    path.write_bytes(bytes(data))


def refused(directory: Path, dest: Path, key: bytes, pem: bytes, *messages: str) -> str:
    """Unseal must fail with every one of `messages` in its text and leave `dest` empty/absent."""
    with pytest.raises(SealError) as caught:
        sealed.unseal(directory, dest, key, pem, workers=2)
    text = str(caught.value)
    for message in messages:
        assert message in text, text
    assert not dest.exists() or not any(dest.iterdir()), list(dest.rglob("*"))
    return text


def test_round_trip(original, source, signer, key, tmp_path):
    manifest = sealed.unseal(original, tmp_path / "out", key, signer.public_key_pem, workers=2)
    paths = sorted(e.path for e in manifest.files)
    assert paths == ["config.json", "empty", "weights/deep/exact.bin", WEIGHTS]
    for path in paths:
        out = tmp_path / "out" / path
        assert out.read_bytes() == (source / path).read_bytes()
        assert out.stat().st_mode & 0o777 == 0o400
    assert (tmp_path / "out" / "weights").stat().st_mode & 0o777 == 0o700
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o700
    assert manifest.chunk_size == CHUNK and manifest.key_version == 1 and manifest.wrapped_key == WRAPPED
    # One worker (no processes) gives the same result; verify_sealed checks every tag, writes nothing.
    sealed.unseal(original, tmp_path / "one", key, signer.public_key_pem, workers=1)
    assert sealed.verify_sealed(original, signer.public_key_pem, data_key=key).files == manifest.files
    # The sealed file's layout: per chunk nonce(12) + ciphertext + tag(16).
    weights = entry(original, WEIGHTS)
    assert sealed_file(original, WEIGHTS).stat().st_size == weights.size + 4 * 28
    assert sealed_file(original, "empty").stat().st_size == 28  # an empty file still has a tagged chunk
    assert key.hex() not in "".join(p.read_text() for p in original.iterdir() if p.is_file())


@pytest.mark.parametrize("part,offset", [("nonce", 5), ("ciphertext", 12 + 100), ("tag", 12 + CHUNK + 3),
                                         ("last chunk's tag", -1)])
def test_one_flipped_byte_in_a_sealed_file(copy, signer, key, tmp_path, part, offset):
    target = sealed_file(copy, WEIGHTS)
    flip(target, offset if offset >= 0 else target.stat().st_size + offset)
    chunk = "chunk 3 of 4" if offset < 0 else "chunk 0 of 4"
    refused(copy, tmp_path / "out", key, signer.public_key_pem, WEIGHTS, chunk, "failed authentication")
    with pytest.raises(SealError, match="failed authentication"):
        sealed.verify_sealed(copy, signer.public_key_pem, data_key=key)


def test_truncated_file_and_dropped_last_chunk(copy, signer, key, tmp_path):
    target = sealed_file(copy, WEIGHTS)
    data = target.read_bytes()
    target.write_bytes(data[:-10])
    refused(copy, tmp_path / "a", key, signer.public_key_pem, WEIGHTS, "truncated")
    target.write_bytes(data[: 3 * (CHUNK + 28)])  # the final chunk dropped whole
    refused(copy, tmp_path / "b", key, signer.public_key_pem, WEIGHTS, "truncated")
    # The same after a (signed) lie about the size would still fail: the new last chunk is not flagged last.
    exact = sealed_file(copy, "weights/deep/exact.bin")
    exact.write_bytes(exact.read_bytes()[: CHUNK + 28])
    refused(copy, tmp_path / "c", key, signer.public_key_pem, "weights/deep/exact.bin")


def test_dropping_the_last_chunk_fails_its_tag_even_with_a_matching_size(original, signer, key, tmp_path):
    """Bypass the size check (as a forged manifest would): the last-chunk flag still catches it."""
    manifest = sealed.Manifest.from_json((original / "manifest.json").read_bytes())
    exact = next(e for e in manifest.files if e.path == "weights/deep/exact.bin")
    sealed._init_worker(key, None)
    try:
        path = tmp_path / "short.seal"
        path.write_bytes((original / "files" / exact.sealed).read_bytes()[: CHUNK + 28])
        short = sealed.FileEntry(exact.path, CHUNK, exact.sha256, exact.sealed, exact.id)
        with pytest.raises(SealError, match="chunk 0 of 1 .* failed authentication"):
            sealed._unseal_file(str(path), None, short, CHUNK, 1, CHUNK + 28, bytes.fromhex(manifest.seal_id))
    finally:
        sealed._worker.clear()


def test_swapped_chunks(copy, signer, key, tmp_path):
    target = sealed_file(copy, WEIGHTS)
    data = target.read_bytes()
    record = CHUNK + 28
    target.write_bytes(data[record: 2 * record] + data[:record] + data[2 * record:])
    refused(copy, tmp_path / "out", key, signer.public_key_pem, WEIGHTS, "chunk 0 of 4", "failed authentication")


def test_chunk_spliced_from_another_file(copy, signer, key, tmp_path):
    # Same position, same size: only the file binding in the associated data can tell.
    a, b = sealed_file(copy, "weights/deep/exact.bin"), sealed_file(copy, WEIGHTS)
    record = CHUNK + 28
    b.write_bytes(a.read_bytes()[:record] + b.read_bytes()[record:])
    refused(copy, tmp_path / "out", key, signer.public_key_pem, WEIGHTS, "chunk 0 of 4", "failed authentication")


def test_swapped_whole_files_of_equal_size(tmp_path, signer, key):
    source = tmp_path / "src"
    source.mkdir()
    (source / "a.bin").write_bytes(os.urandom(CHUNK + 5))
    (source / "b.bin").write_bytes(os.urandom(CHUNK + 5))
    directory = tmp_path / "sealed"
    sealed.seal(source, directory, model="m", revision="r", data_key=key, wrapped_key=WRAPPED, signer=signer,
                chunk_size=CHUNK, workers=1)
    a, b = sealed_file(directory, "a.bin"), sealed_file(directory, "b.bin")
    data_a, data_b = a.read_bytes(), b.read_bytes()
    a.write_bytes(data_b)
    b.write_bytes(data_a)
    refused(directory, tmp_path / "out", key, signer.public_key_pem, "failed authentication", "chunk 0 of 2")


def _rewrite_manifest(directory: Path, signer, change) -> None:
    """Change the manifest and sign it properly (as an attacker holding the signing key could)."""
    doc = json.loads((directory / "manifest.json").read_text())
    change(doc)
    raw = (json.dumps(doc, indent=2) + "\n").encode()
    (directory / "manifest.json").write_bytes(raw)
    envelope = sealed.envelope(sealed.MANIFEST_TYPE, raw, signer)
    (directory / "manifest.sig").write_text(json.dumps(envelope))


def test_flipped_byte_in_manifest_and_in_each_signature(copy, signer, key, tmp_path):
    raw = (copy / "manifest.json").read_bytes()
    spot = raw.index(b'"chunk_size": ') + len(b'"chunk_size": ')
    flip(copy / "manifest.json", spot)  # 4096 -> 5096
    refused(copy, tmp_path / "a", key, signer.public_key_pem, "manifest.json", "differs from the signed copy")
    (copy / "manifest.json").write_bytes(raw)

    for name in ("manifest.sig", "model.sig"):
        original = (copy / name).read_text()
        doc = json.loads(original)
        env = doc if name == "manifest.sig" else doc["dsseEnvelope"]
        sig = bytearray(base64.b64decode(env["signatures"][0]["sig"]))
        sig[-3] ^= 1
        env["signatures"][0]["sig"] = base64.b64encode(bytes(sig)).decode()
        (copy / name).write_text(json.dumps(doc))
        refused(copy, tmp_path / f"sig-{name}", key, signer.public_key_pem, name, "does not verify")
        # ...and in the signed payload itself: a byte of the statement or manifest changed.
        doc = json.loads(original)
        env = doc if name == "manifest.sig" else doc["dsseEnvelope"]
        payload = bytearray(base64.b64decode(env["payload"]))
        payload[payload.index(b"sha256") + 20] ^= 1
        env["payload"] = base64.b64encode(bytes(payload)).decode()
        (copy / name).write_text(json.dumps(doc))
        refused(copy, tmp_path / f"payload-{name}", key, signer.public_key_pem, name)
        (copy / name).write_text(original)
    sealed.verify_sealed(copy, signer.public_key_pem, data_key=key)  # restored: fine again


def test_signed_by_another_key(copy, key, tmp_path, signer):
    other = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    _rewrite_manifest(copy, other, lambda doc: None)
    refused(copy, tmp_path / "a", key, signer.public_key_pem, "manifest.sig", "does not verify")
    # The genuine files checked with another (unrelated) public key are refused too.
    refused(Path(str(copy)), tmp_path / "b", key, other.public_key_pem, "model.sig", "not among the given public keys")


def test_bundle_and_manifest_must_agree(copy, signer, key, tmp_path):
    def change_digest(doc):
        doc["files"][0]["sha256"] = "0" * 64
    _rewrite_manifest(copy, signer, change_digest)  # validly signed, but the bundle disagrees
    refused(copy, tmp_path / "a", key, signer.public_key_pem, "model.sig", "differ from the manifest's", "config.json")


@pytest.mark.parametrize("bad,message", [("../x", "'..'"), ("/etc/passwd", "absolute path"), ("a//b", "empty"),
                                         ("a\\b", "backslash"), ("a/./b", "'.'")])
def test_manifest_with_escaping_paths_is_refused(copy, signer, key, tmp_path, bad, message):
    def change_path(doc):
        doc["files"][0]["path"] = bad
    _rewrite_manifest(copy, signer, change_path)
    refused(copy, tmp_path / "out", key, signer.public_key_pem, repr(bad), message)
    assert not (tmp_path / "x").exists()


def test_unknown_manifest_field_and_huge_chunk_size_refused(copy, signer, key, tmp_path):
    _rewrite_manifest(copy, signer, lambda doc: doc.update(extra=1))
    refused(copy, tmp_path / "a", key, signer.public_key_pem, "unexpected or missing fields")
    _rewrite_manifest(copy, signer, lambda doc: (doc.pop("extra"), doc.update(chunk_size=1 << 30)))
    refused(copy, tmp_path / "b", key, signer.public_key_pem, "chunk_size")


def test_wrong_data_key_leaves_nothing(original, signer, tmp_path):
    dest = tmp_path / "existing"
    dest.mkdir()
    refused(original, dest, os.urandom(32), signer.public_key_pem, "failed authentication")
    assert dest.is_dir()  # an existing (empty) destination is kept, emptied


def test_later_file_failing_removes_earlier_plaintext(copy, signer, key, tmp_path):
    flip(sealed_file(copy, "config.json"), 20)  # the smallest file: processed last
    refused(copy, tmp_path / "out", key, signer.public_key_pem, "config.json", "chunk 0 of 1")
    sealed_file(copy, "empty").unlink()
    refused(copy, tmp_path / "out2", key, signer.public_key_pem, "empty", "cannot be opened")


def test_destination_must_be_empty(original, signer, key, tmp_path):
    dest = tmp_path / "busy"
    dest.mkdir()
    (dest / "mine").write_text("keep")
    with pytest.raises(SealError, match="absent or an empty directory"):
        sealed.unseal(original, dest, key, signer.public_key_pem)
    assert (dest / "mine").read_text() == "keep"


def test_sealing_refuses_symlinks_and_special_files(tmp_path, signer, key):
    source = tmp_path / "src"
    (source / "sub").mkdir(parents=True)
    (source / "ok.bin").write_bytes(b"x")
    (source / "sub" / "link").symlink_to("/etc/passwd")
    with pytest.raises(SealError, match="sub/link: a symbolic link"):
        sealed.seal(source, tmp_path / "out", model="m", revision="r", data_key=key, wrapped_key=WRAPPED, signer=signer)
    assert not (tmp_path / "out").exists()
    (source / "sub" / "link").unlink()
    (source / "dirlink").symlink_to(source / "sub")
    with pytest.raises(SealError, match="dirlink: a symbolic link"):
        sealed.seal(source, tmp_path / "out", model="m", revision="r", data_key=key, wrapped_key=WRAPPED, signer=signer)
    (source / "dirlink").unlink()
    os.mkfifo(source / "pipe")
    with pytest.raises(SealError, match="pipe: not a regular file"):
        sealed.seal(source, tmp_path / "out", model="m", revision="r", data_key=key, wrapped_key=WRAPPED, signer=signer)
    assert not (tmp_path / "out").exists()


def test_the_bundle_is_the_openssf_format(original, source, signer, key, tmp_path):
    bundle = json.loads((original / "model.sig").read_text())
    assert bundle["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    statement = json.loads(base64.b64decode(bundle["dsseEnvelope"]["payload"]))
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert ".gitattributes" not in [r["name"] for r in statement["predicate"]["resources"]]
    try:
        from model_signing import verifying  # noqa: F401
    except ImportError:
        pytest.skip("model-signing not installed")
    out = tmp_path / "out"
    sealed.unseal(original, out, key, signer.public_key_pem)
    (tmp_path / "pub.pem").write_bytes(signer.public_key_pem)
    tool = Path(sys.executable).with_name("model_signing")
    run = subprocess.run([str(tool), "verify", "key", str(out), "--signature", str(original / "model.sig"),
                          "--public_key", str(tmp_path / "pub.pem")], capture_output=True, text=True)
    assert run.returncode == 0, run.stdout + run.stderr


def test_resign_keeps_files_and_changes_the_wrapped_key(copy, signer, key, tmp_path):
    before = {p.name: p.read_bytes() for p in (copy / "files").iterdir()}
    new_signer = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    both = signer.public_key_pem + new_signer.public_key_pem
    wrapped = "vault:v2:" + base64.b64encode(b"z" * 60).decode()
    manifest = sealed.resign(copy, both, new_signer, wrapped)
    assert (manifest.key_version, manifest.wrapped_key) == (2, wrapped)
    assert {p.name: p.read_bytes() for p in (copy / "files").iterdir()} == before
    sealed.unseal(copy, tmp_path / "out", key, new_signer.public_key_pem)  # only the new key is needed now
    with pytest.raises(SealError, match="does not verify"):
        sealed.verify_sealed(copy, signer.public_key_pem)


BIG_SCRIPT = textwrap.dedent("""
    import os, sys, resource, time
    sys.path.insert(0, sys.argv[4])
    from cryptography.hazmat.primitives.asymmetric import ec
    from citadel_runtime import sealed
    from citadel_runtime.sealed_sign import LocalSigner
    src, out, size = sys.argv[1], sys.argv[2], int(sys.argv[3])
    os.makedirs(src)
    with open(os.path.join(src, "big.bin"), "wb") as f:
        f.truncate(size)  # sparse zeros: cheap to make, real bytes to encrypt
    signer, key = LocalSigner(ec.generate_private_key(ec.SECP256R1())), os.urandom(32)
    sealed.seal(src, out + ".sealed", model="big", revision="1", data_key=key, wrapped_key="vault:v1:AAAA",
                signer=signer, workers=2)
    os.unlink(os.path.join(src, "big.bin"))
    start = time.perf_counter()
    sealed.unseal(out + ".sealed", out, key, signer.public_key_pem, workers=2)
    took = time.perf_counter() - start
    assert os.path.getsize(os.path.join(out, "big.bin")) == size
    peak = max(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss)
    print(peak // 1024, round(size / took / 2**20))
""")


def test_unsealing_3_gib_stays_in_bounded_memory(tmp_path):
    """Seal then unseal 3 GiB (about 25 s on two cores): peak RSS of any process stays small."""
    size = 3 << 30
    run = subprocess.run([sys.executable, "-c", BIG_SCRIPT, str(tmp_path / "src"), str(tmp_path / "out"), str(size),
                          str(Path(__file__).resolve().parents[2])], capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr
    peak_mib, speed = map(int, run.stdout.split())
    print(f"unseal of 3 GiB: peak RSS {peak_mib} MiB (largest process), {speed} MiB/s")
    assert peak_mib < 300
