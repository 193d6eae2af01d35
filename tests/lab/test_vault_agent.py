"""Vault agents on real lab hosts, and rotations while a gateway's requests keep coming.

A real OpenBao server (listening where the lab hosts' only route leads), bootstrapped;
the vault-agent and keyguard roles deployed over SSH. Then, with a loop of authenticated
requests running on a host as the gateway makes them (tests/lab/gateway_loop.py):
rotate the internal API key and the GPU hosts' TLS certificates through the CLI, finish,
and count failed requests (must be zero), then present the old key (must be refused).
The Vault server is also stopped in the middle of a certificate rotation.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.oid import NameOID

from deploy.runner import configure_logging, run_deploy
from deploy.secrets import internal_key
from deploy.secrets.store import Store
from deploy.vault.client import Access, resolve
from deploy.vault.server import serve, stop
from hardening.controls import vault_agent as agent_controls
from hardening.engine import run_audit
from roles.vault_agent.templates import SPECS
from tests.lab.sshutil import ssh, ssh_argv
from tests.lab.vaultutil import all_cmdlines, run_citadel, start_for_lab

ROLES = ["base", "vault-agent", "keyguard"]  # base writes host.json, which the checks read
LOOP = Path(__file__).with_name("gateway_loop.py")


@pytest.fixture(scope="module")
def env(lab, tmp_path_factory):
    base = tmp_path_factory.mktemp("vault-agent")
    server = start_for_lab(lab, base)
    site, token, root, port, inventory = (server[k] for k in ("site", "token", "root", "port", "inventory"))
    vars_ = {"BAO_TOKEN": token}
    log = io.StringIO()
    configure_logging(2, logging.StreamHandler(log))
    deploys = [run_deploy(site, ROLES, vault=Access(lambda: resolve(site.vault, env=vars_)), verbosity=2)
               for _ in range(2)]
    leaks = [("root token", token)]
    try:
        yield {"lab": lab, "site": site, "dir": base / "vault", "port": port, "token": token, "root": root,
               "store": Store(root, "citadel"), "inventory": inventory, "deploys": deploys, "log": log, "leaks": leaks}
    finally:
        for h in lab.hosts:  # leave the shared lab without agents pointing at a stopped server
            ssh(lab, h, "sudo systemctl disable --now citadel-agent@gpu citadel-agent@gateway citadel-keyguard",
                check=False)
        stop(base / "vault")


def cli(env, *args, **kwargs):
    return run_citadel(*args, "-i", str(env["inventory"]), token=env["token"], **kwargs)


def host_file(env, host, path: str) -> str:
    return ssh(env["lab"], host, f"sudo cat {path}").stdout


def stat(env, host, path: str) -> str:
    return ssh(env["lab"], host, f"sudo stat -c '%U:%G %a' {path}").stdout.strip()


def wait_for(what: str, predicate, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(2)


def key_versions(env, host) -> tuple[int, int]:
    """(GPU side, gateway side) current internal key versions as rendered on `host`."""
    gpu = json.loads(host_file(env, host, "/etc/citadel/secrets/keyguard/internal-api-key.json"))
    gateway = json.loads(host_file(env, host, "/etc/citadel/secrets/gateway/internal-api-key.json"))
    return gpu["current"]["version"], gateway["current"]["version"]


def test_deploy_runs_the_agents_and_a_second_deploy_changes_nothing(env):
    first, second = env["deploys"]
    assert first.ok, {h: o.errors for h, o in first.hosts.items()}
    assert second.ok and all(o.changed == 0 for o in second.hosts.values()), second.as_dict()
    for h in env["lab"].hosts:
        active = ssh(env["lab"], h, "systemctl is-active citadel-agent@gpu citadel-agent@gateway citadel-keyguard")
        assert active.stdout.split() == ["active"] * 3


def test_rendered_files_have_their_service_owner_and_mode_and_hold_what_vault_holds(env):
    store, lab = env["store"], env["lab"]
    vault_doc = internal_key.read_pair(store)
    for h in lab.hosts:
        for service, files in (("keyguard", ("tls.pem", "crl.pem", "internal-api-key.json")),
                               ("gateway", ("tls.pem", "crl.pem", "internal-api-key.json", "client-keys.json",
                                            "audit-hmac.json", "content-key.json"))):
            for name in files:
                assert stat(env, h, f"/etc/citadel/secrets/{service}/{name}") == f"citadel-{service}:citadel-{service} 400"
            assert stat(env, h, f"/etc/citadel/secrets/{service}") == f"root:citadel-{service} 750"
        for group in ("gpu", "gateway"):
            assert stat(env, h, f"/run/citadel-agent/{group}/token") == "root:root 600"  # the sink
            # The host's identity: root only, this host's name, the group's identity OU.
            identity = f"/var/lib/citadel-agent/{group}/identity.pem"
            assert stat(env, h, identity) == "root:root 600"
            subject = x509.load_pem_x509_certificate(host_file(env, h, identity).encode()).subject
            assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == h.name
            assert subject.get_attributes_for_oid(NameOID.ORGANIZATIONAL_UNIT_NAME)[0].value == f"agent-{group}"
        gateway = json.loads(host_file(env, h, "/etc/citadel/secrets/gateway/internal-api-key.json"))
        assert gateway == vault_doc
        gpu = json.loads(host_file(env, h, "/etc/citadel/secrets/keyguard/internal-api-key.json"))
        assert "value" not in json.dumps(gpu)  # the GPU side holds hashes only
        assert gpu["current"]["sha256"] == hashlib.sha256(vault_doc["current"]["value"].encode()).hexdigest()
        clients = json.loads(host_file(env, h, "/etc/citadel/secrets/gateway/client-keys.json"))
        assert clients == store.read("gateway/client-keys")[0]
        pem = host_file(env, h, "/etc/citadel/secrets/keyguard/tls.pem").encode()
        cert = x509.load_pem_x509_certificate(pem)
        key = serialization.load_pem_private_key(pem, None)
        assert cert.public_key().public_numbers() == key.public_key().public_numbers()
        assert cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == h.name
        serial = format(cert.serial_number, "x")
        listed = {s.replace(":", "").lstrip("0") for s in env["root"].list("citadel-pki/certs")["data"]["keys"]}
        assert serial.lstrip("0") in listed  # issued by Vault's PKI to this host


@pytest.mark.parametrize("control", agent_controls.CONTROLS, ids=lambda c: c.id)
def test_agent_checks_pass_then_fail_when_broken_and_a_redeploy_fixes_them(env, control):
    lab, site = env["lab"], env["site"]
    host = lab.hosts[1]

    def verdicts():
        return {r.control: (r.status, r.evidence) for r in run_audit(site, agent_controls.CONTROLS, limit=[host.name])}

    before = verdicts()
    assert all(status == "pass" for status, _ in before.values()), "\n".join(f"{k}: {v}" for k, v in before.items())
    ssh(lab, host, f"sudo sh -c {shlex.quote(control.break_with)}")
    broken = verdicts()
    assert broken[control.id][0] == "fail", broken
    assert all(status == "pass" for cid, (status, _) in broken.items() if cid != control.id), broken
    vars_ = {"BAO_TOKEN": env["token"]}
    fixed = run_deploy(site, ROLES, limit=[host.name], vault=Access(lambda: resolve(site.vault, env=vars_)))
    assert fixed.ok, fixed.hosts[host.name].errors
    assert all(status == "pass" for status, _ in verdicts().values()), verdicts()


def test_a_deploy_without_a_vault_token_names_the_role_and_changes_nothing(env):
    lab, site = env["lab"], env["site"]
    host = lab.hosts[0]
    before = ssh(lab, host, "sudo stat -c %Y /etc/citadel/agent/gpu/agent.hcl").stdout
    report = run_deploy(site, ["vault-agent"], limit=[host.name], vault=Access(lambda: resolve(site.vault, env={})))
    errors = " ".join(report.hosts[host.name].errors)
    assert not report.ok and "role vault-agent" in errors and "no Vault token" in errors, errors
    assert ssh(lab, host, "sudo stat -c %Y /etc/citadel/agent/gpu/agent.hcl").stdout == before


def start_loop(env, host):
    lab = env["lab"]
    ssh(lab, host, "cat > /tmp/gateway_loop.py && rm -f /tmp/stop-loop", stdin=LOOP.read_text())
    return subprocess.Popen(ssh_argv(lab, host, f"sudo python3 /tmp/gateway_loop.py loop {host.address} /tmp/stop-loop"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def stop_loop(env, host, process) -> dict:
    ssh(env["lab"], host, "touch /tmp/stop-loop")
    out, err = process.communicate(timeout=60)
    assert process.returncode == 0, err
    return json.loads(out)


def test_rotating_the_internal_key_and_certificates_fails_no_request(env):
    lab, store = env["lab"], env["store"]
    host = lab.hosts[0]
    old_key = internal_key.read_pair(store)["current"]["value"]
    old_version = internal_key.read_pair(store)["current"]["version"]
    loop = start_loop(env, host)
    outputs = []
    try:
        time.sleep(3)
        code, out, err, seen = cli(env, "secrets", "rotate", "internal-api-key", watch_argv=[old_key])
        outputs.append(out + err)
        assert code == 0, err
        new_version = old_version + 1
        wait_for("the new key on both sides", lambda: key_versions(env, host) == (new_version, new_version))
        code, out, err, _ = cli(env, "secrets", "rotate", "tls-cert", "gpu", "--wait", "150")
        outputs.append(out + err)
        assert code == 0, err
        code, out, err, _ = cli(env, "secrets", "rotate", "internal-api-key", "--finish")
        outputs.append(out + err)
        assert code == 0, err
        code, out, err, _ = cli(env, "secrets", "rotate", "tls-cert", "gpu", "--finish")  # revokes the old ones
        assert code == 0 and "revoked the previous certificate of lab-01" in err, err
        wait_for("the old key retired on both sides", lambda: all(
            json.loads(host_file(env, host, f"/etc/citadel/secrets/{s}/internal-api-key.json"))["previous"] is None
            for s in ("keyguard", "gateway")))
        time.sleep(3)
    finally:
        stats = stop_loop(env, host, loop)
    assert stats["failed"] == 0, stats["errors"][:5]
    assert stats["ok"] > 50
    assert stats["versions"][0] == old_version and stats["versions"][-1] == new_version
    assert len(stats["serials"]) >= 2  # served by the old certificate, then by the new one
    refused = ssh(lab, host, f"sudo python3 /tmp/gateway_loop.py once {host.address}", stdin=old_key + "\n")
    assert refused.stdout.strip() == "401"  # the old key is rejected after --finish
    new_key = internal_key.read_pair(store)["current"]["value"]
    accepted = ssh(lab, host, f"sudo python3 /tmp/gateway_loop.py once {host.address}", stdin=new_key + "\n")
    assert accepted.stdout.strip() == "200"
    env["leaks"] += [("old internal key", old_key), ("new internal key", new_key)]
    for text in outputs:
        assert old_key not in text and new_key not in text
    assert not seen


def test_vault_stopped_midway_through_a_certificate_rotation(env):
    lab = env["lab"]
    host = lab.hosts[0]
    before = ssh(lab, host, "sudo openssl x509 -noout -serial -in /etc/citadel/secrets/keyguard/tls.pem").stdout
    generation = env["store"].read("gpu/tls-rotation")[0]["generation"]
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "secrets", "rotate", "tls-cert", "gpu", "--wait", "60",
         "-i", str(env["inventory"])],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**environment, "BAO_TOKEN": env["token"]},
        cwd=Path(__file__).resolve().parents[2],
    )
    # Stop the server as soon as the counter is raised: midway, with the agents' work to come.
    def started() -> bool:
        assert process.poll() is None, process.communicate()
        return env["store"].read("gpu/tls-rotation")[0]["generation"] > generation

    wait_for("the rotation to start", started, timeout=60)
    stop(env["dir"])
    out, err = process.communicate(timeout=120)
    assert process.returncode == 1, err
    assert "re-run `citadel secrets rotate tls-cert gpu`" in err and "Traceback" not in err
    # The keyguard still serves with the old certificate while Vault is away.
    loop = start_loop(env, host)
    time.sleep(5)
    stats = stop_loop(env, host, loop)
    assert stats["failed"] == 0 and stats["ok"] > 10
    serve(env["dir"], env["port"], (lab.vault_address,))
    code, out, err, _ = cli(env, "secrets", "rotate", "tls-cert", "gpu", "--wait", "150", "--json")
    assert code == 0, err
    assert json.loads(out)["phase"] == "overlap"
    wait_for("the new certificate on the host", lambda: ssh(
        lab, host, "sudo openssl x509 -noout -serial -in /etc/citadel/secrets/keyguard/tls.pem").stdout != before)
    code, out, err, _ = cli(env, "secrets", "rotate", "tls-cert", "gpu", "--finish")
    assert code == 0, err
    code, out, err, _ = cli(env, "secrets", "status", "--json")
    rows = {(r["kind"], r["name"]): r for r in json.loads(out)["secrets"]}
    gpu = rows[("tls-cert", "gpu")]
    assert gpu["phase"] == "current" and gpu["expires"] and gpu["last_rotation"]["action"] == "finish", gpu
    assert rows[("tls-cert", "gateway")]["version"] == 1 and rows[("tls-cert", "gateway")]["expires"]


def sink_mtime(env, host, group: str = "gpu") -> int:
    """When the agent's sink was last written; 0 while there is none (a restarted agent's run
    directory is new, and the sink appears with its first login)."""
    return int(ssh(env["lab"], host, f"sudo stat -c %Y {SPECS[group].sink} 2>/dev/null || echo 0").stdout)


def identity_serial(env, host, group: str = "gpu") -> str:
    return ssh(env["lab"], host, f"sudo openssl x509 -noout -serial -in {SPECS[group].identity_file}").stdout.strip()


def whoami(env, host, target, certificate: str = "") -> subprocess.CompletedProcess:
    """One request from `host` (as a gateway, with its certificate or `certificate`) to `target`'s keyguard."""
    key = internal_key.read_pair(env["store"])["current"]["value"]
    ssh(env["lab"], host, "cat > /tmp/gateway_loop.py", stdin=LOOP.read_text())
    return ssh(env["lab"], host, f"sudo python3 /tmp/gateway_loop.py once {target.address} {certificate}",
               stdin=key + "\n", check=False)


def test_an_agent_logs_in_again_by_itself_after_a_restart_and_a_reboot(env):
    import deploy.lab

    lab = env["lab"]
    host = lab.hosts[1]
    before = identity_serial(env, host)
    started = int(ssh(lab, host, "date +%s").stdout)
    ssh(lab, host, "sudo systemctl restart citadel-agent@gpu citadel-agent@gateway")
    # No deploy: the agents log in with the identities on disk, and renew them.
    wait_for("the agents' new logins", lambda: min(sink_mtime(env, host, g) for g in ("gpu", "gateway")) >= started)
    wait_for("a renewed identity", lambda: identity_serial(env, host) != before)

    seconds = deploy.lab.reboot(host.name, name=lab.name)
    rebooted = time.monotonic()
    wait_for("the keyguard after the reboot", lambda: whoami(env, host, host).stdout.strip() == "200", timeout=180)
    print(f"reboot of {host.name}: ssh after {seconds:.1f} s, first 200 from its keyguard "
          f"{seconds + time.monotonic() - rebooted:.1f} s after the reboot request")
    for group in ("gpu", "gateway"):
        assert ssh(lab, host, f"systemctl is-active citadel-agent@{group}").stdout.strip() == "active"
    again = run_deploy(env["site"], ROLES, limit=[host.name],
                       vault=Access(lambda: resolve(env["site"].vault, env={"BAO_TOKEN": env["token"]})))
    assert again.ok and again.hosts[host.name].changed == 0, again.as_dict()  # nothing for a deploy to mend


def test_revoke_host_cuts_one_host_off_while_the_other_keeps_serving(env):
    """Lab hosts reach only this machine, not each other: the cut host's certificates are
    carried to the kept host, which presents them to its own keyguard (as the cut gateway
    would over the network) and checks them against its gateway's CRL."""
    import deploy.lab

    lab = env["lab"]
    kept, cut = lab.hosts[0], lab.hosts[1]
    for service in ("gateway", "keyguard"):
        pem = ssh(lab, cut, f"sudo cat /etc/citadel/secrets/{service}/tls.pem").stdout
        ssh(lab, kept, f"sudo sh -c 'umask 077; cat > /root/cut-{service}.pem'", stdin=pem)
    verify = ("sudo openssl verify -crl_check -CAfile /etc/citadel/pki-ca.pem "
              "-CRLfile /etc/citadel/secrets/gateway/crl.pem /root/cut-keyguard.pem")
    assert whoami(env, kept, kept, "/root/cut-gateway.pem").stdout.strip() == "200"
    assert ssh(lab, kept, verify, check=False).returncode == 0
    code, out, err, _ = cli(env, "secrets", "revoke-host", cut.name, "--json")
    assert code == 0, err
    result = json.loads(out)
    assert sorted(result["roles_deleted"]) == [f"gateway-{cut.name}", f"gpu-{cut.name}"] and result["tokens_revoked"] >= 2
    revoked = time.monotonic()
    # Its peers stop trusting it within one render interval (30 s): the kept host's keyguard
    # refuses the cut gateway's certificate, and its gateway's CRL lists the cut keyguard's.
    wait_for("the revoked gateway to be refused",
             lambda: whoami(env, kept, kept, "/root/cut-gateway.pem").returncode != 0, timeout=90)
    refused_after = time.monotonic() - revoked
    refusal = whoami(env, kept, kept, "/root/cut-gateway.pem")
    # TLS 1.3: the server checks the client certificate after the client sees its handshake done.
    assert any(w in refusal.stderr for w in ("SSL", "reset", "RemoteDisconnected")), refusal.stderr[-500:]
    wait_for("the revoked keyguard to be refused", lambda: ssh(lab, kept, verify, check=False).returncode != 0,
             timeout=90)
    print(f"revoke-host {cut.name}: its gateway certificate refused by its peer's keyguard {refused_after:.1f} s later")
    assert whoami(env, kept, kept).stdout.strip() == "200"  # the other host keeps serving
    # Its agent's next login fails, after a reboot too.
    deploy.lab.reboot(cut.name, name=lab.name)
    time.sleep(20)
    journal = ssh(lab, cut, "sudo journalctl -b -u citadel-agent@gpu --no-pager -o cat").stdout
    assert "authentication successful" not in journal and "error authenticating" in journal, journal[-2000:]
    assert whoami(env, kept, kept).stdout.strip() == "200"
    # A deploy refuses it by name; readmitted and deployed, it serves again.
    vault = Access(lambda: resolve(env["site"].vault, env={"BAO_TOKEN": env["token"]}))
    refused = run_deploy(env["site"], ["vault-agent"], limit=[cut.name], vault=vault)
    assert not refused.ok and "was revoked" in " ".join(refused.hosts[cut.name].errors)
    code, out, err, _ = cli(env, "secrets", "readmit-host", cut.name)
    assert code == 0, err
    back = run_deploy(env["site"], ROLES, limit=[cut.name], vault=vault)
    assert back.ok, back.hosts[cut.name].errors
    wait_for("the readmitted host serving again", lambda: whoami(env, cut, cut).stdout.strip() == "200", timeout=90)
    ssh(lab, kept, "sudo rm -f /root/cut-gateway.pem /root/cut-keyguard.pem")


def test_no_secret_value_in_deploy_logs_journals_or_process_arguments(env):
    values = [v for _, v in env["leaks"]]  # the module's token, and the keys of the tests before that passed
    assert values
    log = env["log"].getvalue()
    assert "citadel-agent@gpu" in log  # the deploy's -vv log was captured
    for value in values:
        assert value not in log
    for h in env["lab"].hosts:
        journal = ssh(env["lab"], h, "sudo journalctl --no-pager -u 'citadel-*' -o cat").stdout
        processes = ssh(env["lab"], h, "sudo cat /proc/[0-9]*/cmdline 2>/dev/null | tr '\\0' ' '", check=False).stdout
        for value in values:
            assert value not in journal and value not in processes
    for line in all_cmdlines():
        assert not any(v.encode() in line for v in values)
