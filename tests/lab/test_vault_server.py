"""The embedded OpenBao server: TLS only, initialised and unsealed, secrets 0600, audited,
idempotent, stopped without leftovers and restarted from its stored key. A real `bao server`."""

from __future__ import annotations

import stat
import subprocess
import sys
import time
from pathlib import Path

import hvac
import pytest
import requests

from deploy.vault.server import Layout, serve, stop
from tests.lab.vaultutil import bao_processes, free_port_pair, require_bao

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def vault(tmp_path_factory):
    require_bao()
    directory = tmp_path_factory.mktemp("vault-server") / "vault"
    port = free_port_pair()
    started = time.monotonic()
    try:
        embedded = serve(directory, port)
        embedded_seconds = time.monotonic() - started
        yield {"vault": embedded, "dir": directory, "port": port, "serve_seconds": embedded_seconds}
    finally:
        stop(directory)
        assert bao_processes(Layout(directory).config) == []


def client(v) -> hvac.Client:
    vault = v["vault"]
    return hvac.Client(url=vault.address, token=vault.token_file.read_text().strip(), verify=str(vault.ca_file))


def test_first_serve_initialises_and_unseals(vault):
    actions = vault["vault"].actions
    assert any(a.startswith("started") for a in actions) and "initialised (1 key share)" in actions and "unsealed" in actions
    health = requests.get(f"{vault['vault'].address}/v1/sys/health", verify=str(vault["vault"].ca_file), timeout=5).json()
    assert health["initialized"] is True and health["sealed"] is False
    print(f"first serve (start, init, unseal) took {vault['serve_seconds']:.1f} s")


def test_answers_over_tls_only(vault):
    port = vault["port"]
    # Plain HTTP to the TLS port gets no API answer (Go answers 400 "HTTP request to an HTTPS server").
    try:
        response = requests.get(f"http://127.0.0.1:{port}/v1/sys/health", timeout=5)
        assert response.status_code == 400 and "initialized" not in response.text
    except requests.ConnectionError:
        pass
    # TLS without the lab's CA is refused by the client: the certificate is not publicly trusted.
    with pytest.raises(requests.exceptions.SSLError):
        requests.get(f"https://127.0.0.1:{port}/v1/sys/health", verify=True, timeout=5)
    ok = requests.get(f"https://127.0.0.1:{port}/v1/sys/health", verify=str(vault["vault"].ca_file), timeout=5)
    assert ok.status_code == 200


def test_listens_on_loopback_only(vault):
    config = (vault["dir"] / "server.hcl").read_text()
    assert f'address         = "127.0.0.1:{vault["port"]}"' in config
    assert "0.0.0.0" not in config


def test_secret_files_are_private(vault):
    layout = Layout(vault["dir"])
    for path in (layout.unseal_key, layout.root_token, vault["dir"] / "tls" / "server-key.pem"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(vault["dir"].stat().st_mode) == 0o700
    assert stat.S_IMODE(vault["vault"].ca_file.stat().st_mode) == 0o644  # public by design


def test_audit_device_records_requests(vault):
    bao = client(vault)
    devices = bao.sys.list_enabled_audit_devices()["data"]
    assert devices["file/"]["type"] == "file"
    log = vault["vault"].audit_log
    before = log.read_text().count("\n") if log.exists() else 0
    bao.sys.read_health_status(method="GET")
    bao.auth.token.lookup_self()
    time.sleep(0.2)
    text = log.read_text()
    assert text.count("\n") > before
    assert stat.S_IMODE(log.stat().st_mode) == 0o600
    # Tokens are HMAC'd in the audit log, never written as they are.
    assert vault["vault"].token_file.read_text().strip() not in text


def test_second_serve_is_a_no_op(vault):
    again = serve(vault["dir"], vault["port"])
    assert again.actions == [] and again.pid == vault["vault"].pid


def test_serve_on_another_port_is_refused(vault):
    from deploy.vault import VaultError

    with pytest.raises(VaultError) as caught:
        serve(vault["dir"], vault["port"] + 10)
    assert caught.value.exit_code == 2


def test_stop_leaves_no_process_and_serve_restarts_and_unseals(vault):
    layout = Layout(vault["dir"])
    assert stop(vault["dir"]) is True
    assert bao_processes(layout.config) == []
    assert not layout.pidfile.exists()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{vault['vault'].address}/v1/sys/health", verify=str(vault["vault"].ca_file), timeout=5)
    assert stop(vault["dir"]) is False  # stopping a stopped server is fine

    started = time.monotonic()
    again = serve(vault["dir"], vault["port"])
    print(f"restart and unseal took {time.monotonic() - started:.1f} s")
    assert "unsealed" in again.actions and "initialised (1 key share)" not in again.actions
    assert client(vault).auth.token.lookup_self()["data"]["policies"] == ["root"]  # same server, same token
    vault["vault"] = again


def test_cli_stop_and_serve(vault):
    """The CLI restarts the server in a process of its own; the fixture's stop still finds it."""
    layout = Layout(vault["dir"])

    def citadel(*args):
        return subprocess.run(
            [sys.executable, "-m", "deploy.cli", "vault", *args, "--dir", str(vault["dir"])],
            capture_output=True, text=True, cwd=REPO, timeout=120,
        )

    served = citadel("serve", "--port", str(vault["port"]))
    assert served.returncode == 0, served.stderr
    assert "not for production" in served.stderr and "nothing to do" in served.stderr
    stopped = citadel("stop")
    assert stopped.returncode == 0 and bao_processes(layout.config) == []
    restarted = citadel("serve", "--port", str(vault["port"]))
    assert restarted.returncode == 0, restarted.stderr
    assert "unsealed" in restarted.stderr
    assert len(bao_processes(layout.config)) == 1
    token = vault["vault"].token_file.read_text().strip()
    for output in (served, stopped, restarted):
        assert token not in output.stdout + output.stderr
        assert Layout(vault["dir"]).unseal_key.read_text().strip() not in output.stdout + output.stderr
    bad = citadel("serve", "--port", "80")
    assert bad.returncode == 2
