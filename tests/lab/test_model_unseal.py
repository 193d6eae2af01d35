"""Sealed models on real lab hosts: seal here, push, unseal into RAM, audit, and refusals.

A real OpenBao server (listening on the lab's Vault address), real nspawn hosts over SSH,
the real vault-agent (its token unwraps the data key) and the real unseal unit. The model
is a generated directory of the shape of a small Hugging Face model.
"""

from __future__ import annotations

import hashlib
import io
import logging
import secrets
import shlex
from pathlib import Path

import pytest

from deploy.models.keys import Keys
from deploy.models.seal import seal_model
from deploy.runner import configure_logging, run_deploy
from deploy.secrets.store import Store
from deploy.vault.client import Access, resolve
from deploy.vault.server import stop
from hardening.controls import model_store as model_controls
from hardening.engine import run_audit
from tests.lab.sshutil import ssh
from tests.lab.vaultutil import all_cmdlines, run_citadel, start_for_lab

pytestmark = pytest.mark.lab
ROLES = ["base", "vault-agent", "model-store"]
MODEL, REVISION = "tiny-clinical", "r1"
MOUNT = f"/run/citadel/models/{MODEL}"
# The model-store role's controls (area store_volume's models-store-volume-encrypted is the
# store-volume role's: tests/vm/test_vm_hardening.py).
CONTROLS = [c for c in model_controls.CONTROLS if c.remediation == "model-store"]
UNIT = f"citadel-unseal@{MODEL}"


def make_model(directory: Path) -> dict[str, bytes]:
    files = {
        "config.json": b'{"architectures": ["LlamaForCausalLM"], "hidden_size": 64}\n',
        "model.safetensors": secrets.token_bytes(9 << 20),  # three 4 MiB chunks, the last one short
        "tokenizer/tokenizer.json": b'{"version": "1.0"}\n',
        "empty.txt": b"",
    }
    for name, data in files.items():
        (directory / name).parent.mkdir(parents=True, exist_ok=True)
        (directory / name).write_bytes(data)
    return files


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory, monkeypatch_module):
    base = tmp_path_factory.mktemp("model-unseal")

    def assign(data):
        data["models"] = {MODEL: {"revision": REVISION}}
        data["hosts"][lab.hosts[0].name]["models"] = [MODEL]

    server = start_for_lab(lab, base, assign)
    site, token, root = server["site"], server["token"], server["root"]
    inventory = server["inventory"]
    store = Store(root, site.vault.kv_mount)
    keys = Keys(store, site.vault.transit_mount)
    source = base / "source"
    files = make_model(source)
    sealed_root = base / "store"
    seal_model(keys, sealed_root, source, MODEL, REVISION)
    monkeypatch_module.setenv("CITADEL_MODEL_STORE", str(sealed_root))
    log = io.StringIO()
    configure_logging(2, logging.StreamHandler(log))
    access = Access(lambda: resolve(site.vault, env={"BAO_TOKEN": token}))
    deploys = [run_deploy(site, ROLES, vault=access, verbosity=2) for _ in range(2)]
    (base / "deploy.log").write_text(log.getvalue())
    host = lab.hosts[0]
    try:
        yield {"lab": lab, "host": host, "site": site, "keys": keys, "files": files, "store": sealed_root,
               "deploys": deploys, "access": access, "log": log, "token": token, "inventory": inventory}
    finally:
        for h in lab.hosts:
            ssh(lab, h, f"sudo systemctl disable --now {UNIT} citadel-agent@gpu citadel-agent@gateway", check=False)
        stop(base / "vault")


@pytest.fixture(scope="module")
def monkeypatch_module():
    with pytest.MonkeyPatch.context() as patch:
        yield patch


def deploy(env):
    return run_deploy(env["site"], ROLES, vault=env["access"], limit=[env["host"].name])


def on_host(env, command: str, check: bool = True):
    return ssh(env["lab"], env["host"], command, check=check)


def audit(env) -> dict:
    """{control id: Result} of the model checks on the host that serves the model."""
    return {r.control: r for r in run_audit(env["site"], CONTROLS, limit=[env["host"].name])}


def test_seal_push_unseal_round_trip_is_byte_identical_and_a_second_deploy_changes_nothing(env):
    first, second = env["deploys"]
    assert first.ok, ({h: o.errors for h, o in first.hosts.items()}, env["log"].getvalue()[-3000:])
    assert second.ok and all(o.changed == 0 for o in second.hosts.values()), second.as_dict()
    sums = on_host(env, f"sudo sh -c 'cd {MOUNT} && find . -type f | sort | xargs sha256sum'").stdout
    served = {line.split()[1][2:]: line.split()[0] for line in sums.splitlines()}
    assert served == {name: hashlib.sha256(data).hexdigest() for name, data in env["files"].items()}
    mount = on_host(env, f"findmnt -n -o FSTYPE,OPTIONS --mountpoint {MOUNT}").stdout.split()
    assert mount[0] == "tmpfs" and {"nosuid", "nodev", "noexec"} <= set(mount[1].split(","))
    assert on_host(env, f"sudo stat -c '%a %U' {MOUNT} {MOUNT}/config.json").stdout.split("\n")[:2] == [
        "700 citadel-vllm", "400 citadel-vllm"]
    # On disk, only ciphertext: no file of the model appears there in the clear.
    listing = on_host(env, "sudo find /var/lib/citadel/models -type f").stdout.split()
    assert listing and all(p.endswith((".seal", "manifest.json", "manifest.sig", "model.sig")) for p in listing)
    # `citadel model push` after the deploy: everything is there, nothing is sent again.
    code, out, err, _ = run_citadel("model", "push", "-i", str(env["inventory"]), token=None,
                                    extra_env={"CITADEL_MODEL_STORE": str(env["store"])})
    assert code == 0 and f"{env['host'].name}: {MODEL}/{REVISION}: 0 file(s) sent" in out, (out, err)
    other = env["lab"].hosts[1]  # serves no model: nothing pushed, nothing mounted
    assert ssh(env["lab"], other, "sudo ls /var/lib/citadel/models").stdout.strip() == ""


def test_model_checks_pass_then_each_fails_when_broken(env):
    results = audit(env)
    assert all(r.status == "pass" for r in results.values()), {k: r.evidence for k, r in results.items()}
    fixes = {
        "models-no-plaintext-on-disk": "rm -rf /var/lib/citadel/models/leak",
        "models-unseal-mount": f"mount -o remount,noexec {MOUNT}",
        "models-served-signed": f"systemctl restart {UNIT}",
    }
    for control in CONTROLS:
        on_host(env, f"sudo sh -c {shlex.quote(control.break_with)}")
        try:
            result = audit(env)[control.id]
            assert result.status == "fail", (control.id, result.evidence)
        finally:
            on_host(env, f"sudo sh -c {shlex.quote(fixes[control.id])}")
        assert audit(env)[control.id].status == "pass", control.id


def test_a_tampered_sealed_file_stops_the_start_leaves_nothing_and_the_audit_says_why(env):
    sealed = f"/var/lib/citadel/models/{MODEL}/{REVISION}/files"
    target = on_host(env, f"sudo sh -c 'ls -S {sealed} | head -1'").stdout.strip()
    flip = (f"sudo python3 -c \"import sys; p=sys.argv[1]; f=open(p,'r+b'); f.seek(5000); b=f.read(1); f.seek(5000); "
            f"f.write(bytes([b[0]^1])); f.close()\" {sealed}/{target}")
    on_host(env, flip)
    started = on_host(env, f"sudo systemctl restart {UNIT}", check=False)
    assert started.returncode != 0
    journal = on_host(env, f"sudo journalctl -u {UNIT} -n 20 --no-pager -o cat").stdout
    assert "refused" in journal and "chunk" in journal and "nothing was left" in journal, journal
    assert on_host(env, f"findmnt --mountpoint {MOUNT}", check=False).returncode != 0  # unmounted: no plaintext
    result = audit(env)["models-served-signed"]
    assert result.status == "fail" and "not unsealed" in result.evidence, result.evidence
    # A deploy puts the sealed copy back (rsync sees the changed file) and unseals again.
    again = deploy(env)
    assert again.ok, {h: o.errors for h, o in again.hosts.items()}
    assert audit(env)["models-served-signed"].status == "pass"


def test_a_manifest_signed_by_another_key_is_refused_before_any_unwrap(env):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    other = ec.generate_private_key(ec.SECP256R1()).public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    keys_file = "/etc/citadel/models/signing-keys.pem"
    saved = on_host(env, f"sudo cat {keys_file}").stdout
    ssh(env["lab"], env["host"], f"sudo tee {keys_file} >/dev/null", stdin=other.decode())
    try:
        started = on_host(env, f"sudo systemctl restart {UNIT}", check=False)
        assert started.returncode != 0
        journal = on_host(env, f"sudo journalctl -u {UNIT} -n 5 --no-pager -o cat").stdout
        assert "refused" in journal and "signature" in journal.lower(), journal
        assert on_host(env, f"findmnt --mountpoint {MOUNT}", check=False).returncode != 0
    finally:
        ssh(env["lab"], env["host"], f"sudo tee {keys_file} >/dev/null", stdin=saved)
    assert deploy(env).ok


def test_a_refused_unwrap_stops_the_start_with_vaults_reason_and_mounts_nothing(env):
    settings = f"/etc/citadel/models/{MODEL}.json"
    # The host's policy allows decrypt on its own transit mount only: point the unseal elsewhere.
    on_host(env, f"sudo sed -i 's/\"transit_mount\": \"[^\"]*\"/\"transit_mount\": \"elsewhere\"/' {settings}")
    started = on_host(env, f"sudo systemctl restart {UNIT}", check=False)
    assert started.returncode != 0
    journal = on_host(env, f"sudo journalctl -u {UNIT} -n 5 --no-pager -o cat").stdout
    assert "Vault refused to unwrap the data key (HTTP 403" in journal, journal
    assert on_host(env, f"findmnt --mountpoint {MOUNT}", check=False).returncode != 0
    assert deploy(env).ok  # puts the settings back and unseals again
    assert audit(env)["models-served-signed"].status == "pass"


def test_the_data_key_never_appears_in_logs_journals_or_process_arguments(env):
    wrapped = on_host(env, f"sudo cat /var/lib/citadel/models/{MODEL}/{REVISION}/manifest.json").stdout
    import json

    key = env["keys"].unwrap(json.loads(wrapped)["data_key"]["wrapped"])
    values = [key.hex(), __import__("base64").b64encode(key).decode(), env["token"]]
    log = env["log"].getvalue()
    journal = on_host(env, "sudo journalctl --no-pager -u 'citadel-*' -o cat").stdout
    processes = on_host(env, "sudo cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", check=False).stdout
    assert "citadel-unseal" in log or UNIT in journal
    for value in values:
        assert value not in log and value not in journal and value not in processes
    for line in all_cmdlines():
        assert not any(v.encode() in line for v in values)
