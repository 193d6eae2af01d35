"""Day two on the vllm tier's host: a reboot and a Vault outage, with no operator action.

While the host serves the tiny model through the gateway (tests/vllm/conftest.py):

- the host reboots for real (`citadel lab reboot`: its systemd stops every unit and boots
  again); the boot chain (agents, unseal, vLLM, keyguard, gateway) brings it back by itself.
  Measured: the time from the reboot request to the first 200 through the gateway. The
  audit afterwards finds every control that passed before passing still;
- Vault stops for `CITADEL_VAULT_OUTAGE_SECONDS` (600, the issue's ten minutes) while a
  chat goes through the gateway every 2 s: none fails;
- Vault stops again, the host reboots during the outage (its unseal waits, saying so in the
  journal), Vault comes back: the host serves within two minutes, untouched;
- afterwards no operator or root token, and no credential but the designed ones, is on the
  host's disk, in its journal or in any process's arguments or environment.
"""

from __future__ import annotations

import os
import threading
import time

from deploy.vault.server import serve, stop
from hardening.catalog import load_catalog
from hardening.engine import run_audit
from tests.lab.credential_scan import assert_no_stray_credentials
from tests.vllm.conftest import MODEL, on_host
from tests.vllm.gateway_client import request

OUTAGE = float(os.environ.get("CITADEL_VAULT_OUTAGE_SECONDS", 600))
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}
# What may hold a credential on a host, and why (the scan fails on anything else).
DESIGNED = {
    "/etc/ssh/ssh_host_*_key": "the host's SSH keys",
    "/run/citadel-agent/*/token": "each agent's token sink (root, 0600)",
    "/var/lib/citadel-agent/*/identity.pem*": "the host's identity, the credential its agents log in with",
    "/etc/citadel/secrets/*/tls.pem": "each service's TLS key, rendered by its agent",
    "/usr/local/lib/citadel/bao": "the OpenBao binary (too large to scan: carries no credential)",
    "/var/lib/citadel/models/*": "sealed model files (ciphertext)",
    # Installed software, root's and read-only to the services: library code that names key
    # formats (cryptography's ssh.py), token-like strings in bundled JavaScript, large binaries.
    "/usr/lib/python3/dist-packages/*": "Debian's Python packages",
    "/opt/citadel/vllm/*": "vLLM's installed wheels",
    "/dev/shm/psm_*": "vLLM's shared tensors (too large to scan)",
}


def chat(gw) -> int:
    try:
        return request(gw["address"], gw["ca"], "POST", "/v1/chat/completions", gw["keys"]["ward"], CHAT)[0]
    except OSError:
        return 0


class ChatLoop:
    """A chat through the gateway every `every` seconds, in a thread, until stopped."""

    def __init__(self, gw, every: float = 2.0):
        self.gw, self.every, self.statuses = gw, every, []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self.run, daemon=True)

    def run(self) -> None:
        while not self.done.is_set():
            self.statuses.append(chat(self.gw))
            self.done.wait(self.every)

    def __enter__(self) -> ChatLoop:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.done.set()
        self.thread.join(60)


def first_200(gw, timeout: float) -> float:
    """Seconds until a chat through the gateway answers 200."""
    started = time.monotonic()
    while chat(gw) != 200:
        assert time.monotonic() - started < timeout, f"no 200 within {timeout:.0f} s"
        time.sleep(1)
    return time.monotonic() - started


def diagnosis(env) -> str:
    """What the boot chain's units say, for a failure's message (no secret is in these)."""
    units = "-u 'citadel-agent@*' -u 'citadel-unseal@*' -u 'citadel-store-unlock' -u 'citadel-vllm@*' " \
            "-u citadel-keyguard -u citadel-gateway"
    state = on_host(env, "systemctl list-units --all --no-pager 'citadel*'; systemctl --failed --no-pager",
                    check=False).stdout
    journal = on_host(env, f"sudo journalctl -b --no-pager -o short-monotonic {units} | tail -n 80", check=False).stdout
    return f"{state}\n{journal}"


def serving_within(env, gw, timeout: float) -> float:
    try:
        return first_200(gw, timeout)
    except AssertionError as exc:
        raise AssertionError(f"{exc}\n{diagnosis(env)}") from None


def audit(env) -> dict[str, object]:
    return {r.control: r for r in run_audit(env["site"], list(load_catalog()))}


def test_a_reboot_serves_again_with_no_operator_and_the_audit_still_passes(env, gw):
    import deploy.lab

    assert chat(gw) == 200
    before = {c for c, r in audit(env).items() if r.status == "pass"}
    requested = time.monotonic()
    ssh_seconds = deploy.lab.reboot(env["host"].name, name=env["lab"].name)
    serving_within(env, gw, 300)
    total = time.monotonic() - requested
    print(f"reboot: ssh after {ssh_seconds:.1f} s, first 200 through the gateway {total:.1f} s after the request")
    after = audit(env)
    lost = {c: after[c].evidence for c in before if after[c].status != "pass"}
    assert not lost, f"failing after the reboot: {lost}\n{on_host(env, 'findmnt /tmp; findmnt /dev/shm', check=False).stdout}"


def test_vault_stopped_under_a_chat_loop_fails_no_chat(env, gw):
    with ChatLoop(gw) as loop:
        time.sleep(10)
        stop(env["vault_dir"])
        try:
            time.sleep(OUTAGE)
        finally:
            serve(env["vault_dir"], env["vault_port"], (env["lab"].vault_address,))
        time.sleep(30)  # and the agents' return to Vault disturbs nothing either
    failed = [s for s in loop.statuses if s != 200]
    print(f"Vault down {OUTAGE:.0f} s: {len(loop.statuses)} chats, {len(failed)} failed")
    assert len(loop.statuses) > OUTAGE / 3 and not failed, failed[:10]


def test_a_host_rebooted_during_an_outage_serves_by_itself_when_vault_returns(env, gw):
    import deploy.lab

    stop(env["vault_dir"])
    try:
        deploy.lab.reboot(env["host"].name, name=env["lab"].name)
        time.sleep(45)  # the boot chain waits for Vault, and says so
        waits = on_host(env, f"sudo journalctl -b -u citadel-unseal@{MODEL} --no-pager -o cat").stdout
        assert "waiting for" in waits, waits[-2000:]
        assert chat(gw) != 200
    finally:
        serve(env["vault_dir"], env["vault_port"], (env["lab"].vault_address,))
    back = serving_within(env, gw, 300)
    print(f"rebooted during the outage: serving {back:.1f} s after Vault's return")
    assert back < 120


def test_no_stray_credentials_on_the_host(env, gw):
    secrets = {"root token": env["token"], **{f"client key {n}": k for n, k in gw["keys"].items()}}
    assert_no_stray_credentials(env["lab"], secrets=secrets, allowed=DESIGNED)
