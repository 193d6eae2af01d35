"""`citadel model` against a real OpenBao server: seal, verify, list, public key, rekey, no leaks.

Transit keys are the bootstrap's (model-data aes256-gcm96, model-signing ecdsa-p256).
The public key exported by the CLI verifies the unsealed plaintext with the standard
`model_signing verify key` tool where model-signing is installed (the `test` extra).
"""

from __future__ import annotations

import base64
import filecmp
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from citadel_runtime import sealed
from deploy.secrets.store import Store
from deploy.vault.server import stop
from tests.lab.vaultutil import run_citadel, start_bootstrapped

TRANSIT = "citadel-transit"
MODEL = "tiny-med"


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    base = tmp_path_factory.mktemp("model-store")
    server = start_bootstrapped(base)
    try:
        server["store"] = Store(server["root"], "citadel")
        server["models"] = base / "models"
        server["source"] = make_model(base / "src")
        server["outputs"] = []  # (args, stdout, stderr) of every CLI run, scanned for data keys at the end
        yield server
    finally:
        stop(server["dir"])


def make_model(root: Path) -> Path:
    """A small model directory: config, tokenizer, weights over several chunks, a nested dir, an empty file."""
    (root / "shards" / "deep").mkdir(parents=True)
    (root / "config.json").write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}))
    (root / "tokenizer.json").write_bytes(os.urandom(3000))
    (root / "shards" / "model-00001.safetensors").write_bytes(os.urandom(9 << 20))  # 3 chunks of 4 MiB
    (root / "shards" / "deep" / "extra.bin").write_bytes(os.urandom(4 << 20))  # exactly one chunk
    (root / "empty.txt").write_bytes(b"")
    return root


def cli(s, *args, inventory=True):
    extra = ["-i", str(s["inventory"])] if inventory else []
    code, out, err, _ = run_citadel(*args, *extra, "--store", str(s["models"]), token=s["token"], timeout=300)
    s["outputs"].append((args, out, err))
    return code, out, err


def wrapped_of(s, revision: str) -> str:
    return json.loads((s["models"] / MODEL / revision / "manifest.json").read_text())["data_key"]["wrapped"]


def data_key(s, wrapped: str) -> bytes:
    plain = s["root"].secrets.transit.decrypt_data("model-data", wrapped, mount_point=TRANSIT)["data"]["plaintext"]
    return base64.b64decode(plain)


def public_key(s, tmp_path: Path) -> Path:
    code, out, err, _ = run_citadel("model", "public-key", "-i", str(s["inventory"]), token=s["token"])
    assert code == 0, err
    s["outputs"].append((("model", "public-key"), out, err))
    path = tmp_path / "model-signing.pem"
    path.write_text(out)
    return path


def digests(root: Path) -> dict[str, str]:
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_seal_verify_list_through_the_cli(s, tmp_path):
    code, out, err = cli(s, "model", "seal", str(s["source"]), "--name", MODEL, "--revision", "r1", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert (result["name"], result["revision"], result["files"], result["key_version"]) == (MODEL, "r1", 5, 1)
    sealed_dir = s["models"] / MODEL / "r1"
    assert sorted(p.name for p in sealed_dir.iterdir()) == ["files", "manifest.json", "manifest.sig", "model.sig"]
    assert not list((s["models"] / MODEL).glob(".sealing-*"))  # the work directory was renamed, not left
    # The store holds no plaintext: no sealed file contains a slice of the source's random bytes.
    weights = (s["source"] / "tokenizer.json").read_bytes()[:64]
    assert not any(weights in p.read_bytes() for p in (sealed_dir / "files").iterdir())
    kv = s["store"].read(f"gpu/models/{MODEL}")[0]
    assert kv == {"wrapped_key": wrapped_of(s, "r1"), "transit_key": "model-data", "revision": "r1"}

    code, out, err = cli(s, "model", "verify", f"{MODEL}/r1", "--json")
    assert code == 0, err
    assert json.loads(out)["failed"] == 0 and json.loads(out)["models"][0]["ok"]

    code, out, err = cli(s, "model", "list", "--json", inventory=False)
    assert code == 0, err
    rows = json.loads(out)["models"]
    assert [(r["name"], r["revision"], r["files"], r["key_version"]) for r in rows] == [(MODEL, "r1", 5, 1)]

    code, out, err = cli(s, "model", "seal", str(s["source"]), "--name", MODEL, "--revision", "r1")
    assert code == 2 and "already sealed" in err  # never overwritten

    # A tampered chunk is caught by `verify` with the file and the chunk named.
    copy = s["models"] / "tampered" / "r1"
    shutil.copytree(sealed_dir, copy)
    entry = next(e for e in sealed.Manifest.from_json((copy / "manifest.json").read_bytes()).files
                 if e.path == "shards/model-00001.safetensors")
    target = copy / "files" / entry.sealed
    data = bytearray(target.read_bytes())
    data[(4 << 20) + 28 + 100] ^= 1  # inside chunk 1's ciphertext
    target.write_bytes(bytes(data))
    code, out, err = cli(s, "model", "verify", "tampered/r1")
    assert code == 1 and "shards/model-00001.safetensors: chunk 1 of 3" in out, out
    shutil.rmtree(copy.parent)

    # Hosts' side: unseal offline with the exported public key, then the standard tool agrees.
    pem = public_key(s, tmp_path)
    dest = tmp_path / "unsealed"
    sealed.unseal(sealed_dir, dest, data_key(s, wrapped_of(s, "r1")), pem.read_bytes())
    assert digests(dest) == digests(s["source"])
    try:
        import model_signing  # noqa: F401
    except ImportError:
        pytest.skip("model-signing is not installed (pip install -e .[test])")
    tool = Path(sys.executable).with_name("model_signing")
    run = subprocess.run([str(tool), "verify", "key", str(dest), "--signature", str(sealed_dir / "model.sig"),
                          "--public_key", str(pem)], capture_output=True, text=True)
    assert run.returncode == 0 and "Verification succeeded" in run.stdout, run.stdout + run.stderr
    os.chmod(dest / "config.json", 0o600)
    (dest / "config.json").write_text('{"poisoned": true}')
    run = subprocess.run([str(tool), "verify", "key", str(dest), "--signature", str(sealed_dir / "model.sig"),
                          "--public_key", str(pem)], capture_output=True, text=True)
    assert run.returncode != 0 and "config.json" in run.stdout + run.stderr


def test_rekey_after_rotation_rewraps_without_reencrypting(s, tmp_path):
    sealed_dir = s["models"] / MODEL / "r1"
    before_files = {p.name: p.read_bytes() for p in (sealed_dir / "files").iterdir()}
    old_wrapped = wrapped_of(s, "r1")
    key = data_key(s, old_wrapped)

    code, out, err, _ = run_citadel("secrets", "rotate", "transit-key", "model-data", "-i", str(s["inventory"]),
                                    token=s["token"])
    s["outputs"].append((("secrets", "rotate"), out, err))
    assert code == 0, err
    assert s["store"].read(f"gpu/models/{MODEL}")[0]["wrapped_key"].startswith("vault:v2:")  # rotation's KV rewrap

    code, out, err = cli(s, "model", "rekey", MODEL, "--json")
    assert code == 0, err
    assert json.loads(out)["models"] == [{"name": MODEL, "revision": "r1", "from": 1, "key_version": 2,
                                          "changed": True, "kv_updated": True}]
    new_wrapped = wrapped_of(s, "r1")
    assert new_wrapped.startswith("vault:v2:") and new_wrapped != old_wrapped
    assert s["store"].read(f"gpu/models/{MODEL}")[0]["wrapped_key"] == new_wrapped
    assert data_key(s, new_wrapped) == key  # the same key: weights are not re-encrypted
    assert {p.name: p.read_bytes() for p in (sealed_dir / "files").iterdir()} == before_files

    code, out, err = cli(s, "model", "rekey", MODEL, "--json")  # a re-run changes nothing
    assert code == 0 and not json.loads(out)["models"][0]["changed"], err
    code, out, err = cli(s, "model", "verify", MODEL)
    assert code == 0 and "every chunk verified" in out, err

    dest = tmp_path / "after-rekey"
    sealed.unseal(sealed_dir, dest, data_key(s, new_wrapped), public_key(s, tmp_path).read_bytes())
    assert filecmp.dircmp(dest, s["source"]).diff_files == [] and digests(dest) == digests(s["source"])
    code, out, err = cli(s, "model", "list", inventory=False)
    assert code == 0 and "v2" in out


def test_no_data_key_in_any_output(s):
    code, out, err = cli(s, "model", "verify", "no-such-model")
    assert code == 2 and "not in the store" in err
    code, out, err, _ = run_citadel("model", "list", token=None, extra_env={"CITADEL_MODEL_STORE": ""})
    assert code == 2 and "--store" in err
    keys = set()
    for revision in ("r1",):
        key = data_key(s, wrapped_of(s, revision))
        keys |= {key.hex(), base64.b64encode(key).decode(), key.hex().upper()}
    assert s["outputs"]
    for args, out, err in s["outputs"]:
        for value in keys:
            assert value not in out + err, f"a data key appeared in the output of {args}"
        assert s["token"] not in out + err
