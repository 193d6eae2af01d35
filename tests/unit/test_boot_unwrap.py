"""The boot-time unwrap against a fake Vault on loopback (TLS): what is waited out, what is refused at once.

Callers: citadel_runtime.transit directly, citadel_runtime.unseal.run (a model sealed here,
decrypted into a plain directory: the tmpfs mount is stubbed, so no root is needed) and
citadel_runtime.store_unlock.unwrap_key. The clock and the sleeps are fakes; a sleep may
change the world (start Vault, let the agent write its token), as a boot does.
"""

from __future__ import annotations

import base64
import functools
import getpass
import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric import ec

from citadel_runtime import sealed, store_unlock, transit, unseal, waits
from citadel_runtime.sealed_sign import LocalSigner
from deploy.vault.tls import write_tls

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
KEY = bytes(range(32))
GOOD, OTHER = "s.good-host-token", "s.gateway-token"
NO_POLICY = "1 error occurred:\n\t* permission denied\n\n"  # what OpenBao says to a valid token outside its policy


class FakeVault:
    """Transit decrypt and token lookup-self, over TLS on 127.0.0.1.

    `script` holds statuses answered first, in order (503: sealed); then a token in `valid`
    and `allowed` gets the key, a token only in `valid` gets 403 with OpenBao's policy
    message, any other token 403 "permission denied" (and so does its lookup-self).
    """

    def __init__(self, tls, port: int = 0):
        self.script: list[int] = []
        self.valid, self.allowed = {GOOD, OTHER}, {GOOD}
        self.seen: list[tuple[str, str]] = []
        vault = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):  # noqa: N802 - http.server's naming
                token = self.headers.get("X-Vault-Token", "")
                vault.seen.append((self.path, token))
                if self.path == "/v1/auth/token/lookup-self" and token in vault.valid:
                    return self.answer(200, {"data": {"policies": ["citadel-gpu", "default"]}})
                self.answer(403, {"errors": ["permission denied"]})

            def do_POST(self):  # noqa: N802
                token = self.headers.get("X-Vault-Token", "")
                self.rfile.read(int(self.headers.get("Content-Length", 0)))
                vault.seen.append((self.path, token))
                if vault.script:
                    status = vault.script.pop(0)
                    return self.answer(status, {"errors": ["Vault is sealed" if status == 503 else "no"]})
                if token not in vault.valid:
                    return self.answer(403, {"errors": ["permission denied"]})
                if token not in vault.allowed or not self.path.startswith("/v1/citadel-transit/decrypt/"):
                    return self.answer(403, {"errors": [NO_POLICY]})
                self.answer(200, {"data": {"plaintext": base64.b64encode(KEY).decode()}})

            def answer(self, status: int, payload: dict) -> None:
                body = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(tls.cert_file, tls.key_file)
        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.socket = context.wrap_socket(self.server.socket, server_side=True)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Boot:
    """The fake clock and sleeps; `on_sleep` are changes that happen during the next pauses, in order."""

    def __init__(self):
        self.now, self.pauses, self.on_sleep = 0.0, [], []

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.pauses.append(seconds)
        self.now += seconds
        if self.on_sleep:
            self.on_sleep.pop(0)()


@pytest.fixture(scope="module")
def tls(tmp_path_factory):
    return write_tls(tmp_path_factory.mktemp("tls"))


@pytest.fixture
def vault(tls):
    server = FakeVault(tls)
    yield server
    server.stop()


@pytest.fixture
def boot(monkeypatch):
    state = Boot()
    monkeypatch.setattr(transit, "wait_for", functools.partial(waits.wait_for, sleep=state.sleep, clock=state.clock))
    return state


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def settings(tmp_path, tls, port: int, token: str | None = GOOD) -> dict:
    token_file = tmp_path / "token"
    if token is not None:
        token_file.write_text(token + "\n")
    return {"vault_address": f"https://127.0.0.1:{port}", "vault_ca": str(tls.ca_file), "token_file": str(token_file),
            "transit_mount": "citadel-transit"}


def unwrap(config: dict, lines: list[str]) -> bytes:
    return transit.unwrap(config, "vault:v1:abc", "model-data", log=lines.append)


# -- waited out ----------------------------------------------------------------------------

def test_a_sealed_vault_is_waited_out_with_one_line_per_wait(tmp_path, tls, vault, boot):
    vault.script = [503, 503]
    lines: list[str] = []
    assert unwrap(settings(tmp_path, tls, vault.port), lines) == KEY
    assert boot.pauses == [2, 4]
    assert lines == [
        f"waiting for Vault at https://127.0.0.1:{vault.port} (transit decrypt): HTTP 503: Vault is sealed; "
        "0 s so far, next try in 2 s",
        f"waiting for Vault at https://127.0.0.1:{vault.port} (transit decrypt): HTTP 503: Vault is sealed; "
        "2 s so far, next try in 4 s",
    ]


def test_tries_are_at_most_15_s_apart_so_a_host_serves_soon_after_vault_returns(tmp_path, tls, vault, boot):
    vault.script = [503] * 6
    assert unwrap(settings(tmp_path, tls, vault.port), []) == KEY
    assert boot.pauses == [2, 4, 8, transit.RETRY_CAP, transit.RETRY_CAP, transit.RETRY_CAP] and transit.RETRY_CAP == 15


def test_vault_down_at_boot_then_up(tmp_path, tls, boot):
    port = free_port()
    started: list[FakeVault] = []
    boot.on_sleep = [lambda: None, lambda: started.append(FakeVault(tls, port))]  # back during the second pause
    lines: list[str] = []
    try:
        assert unwrap(settings(tmp_path, tls, port), lines) == KEY
    finally:
        for server in started:
            server.stop()
    assert boot.pauses == [2, 4] and len(lines) == 2
    assert lines[1] == (f"waiting for Vault at https://127.0.0.1:{port} (transit decrypt): connection refused; "
                        "2 s so far, next try in 4 s")


def test_the_agents_token_is_awaited_then_read_afresh(tmp_path, tls, vault, boot):
    config = settings(tmp_path, tls, vault.port, token=None)
    token_file = Path(config["token_file"])
    boot.on_sleep = [lambda: token_file.write_text(""), lambda: token_file.write_text(GOOD + "\n")]
    lines: list[str] = []
    assert unwrap(config, lines) == KEY
    assert lines == [
        f"waiting for the Vault agent's token in {token_file}: no file yet (the agent has not logged in since it started); "
        "0 s so far, next try in 2 s",
        f"waiting for the Vault agent's token in {token_file}: the file is empty (the agent has not logged in yet); "
        "2 s so far, next try in 4 s",
    ]
    assert vault.seen == [("/v1/citadel-transit/decrypt/model-data", GOOD)]


def test_a_stale_token_is_read_again_after_the_agent_logs_in_again(tmp_path, tls, vault, boot):
    vault.valid = {GOOD}  # "s.expired" expired while the agent was cut off from Vault
    config = settings(tmp_path, tls, vault.port, token="s.expired")
    boot.on_sleep = [lambda: Path(config["token_file"]).write_text(GOOD)]
    lines: list[str] = []
    assert unwrap(config, lines) == KEY
    assert lines == [f"waiting for the Vault agent to log in again: Vault no longer accepts the token in "
                     f"{config['token_file']} (expired or revoked); 0 s so far, next try in 2 s"]
    assert [path for path, _ in vault.seen] == ["/v1/citadel-transit/decrypt/model-data", "/v1/auth/token/lookup-self",
                                                "/v1/citadel-transit/decrypt/model-data"]
    assert all("s.expired" not in line and GOOD not in line for line in lines)


def test_the_agents_unit_is_named_when_the_token_is_in_its_sink():
    assert transit.agent_unit("/run/citadel-agent/gpu/token") == "citadel-agent@gpu"
    assert transit.agent_unit("/tmp/token") == "the Vault agent"


# -- refused at once -----------------------------------------------------------------------

@pytest.mark.parametrize("token, transit_mount, expected", [
    (OTHER, "citadel-transit", "Vault refused to unwrap the data key (HTTP 403: 1 error occurred: * permission denied)"),
    (GOOD, "elsewhere", "Vault refused to unwrap the data key (HTTP 403: 1 error occurred: * permission denied)"),
])
def test_a_403_with_a_token_vault_still_accepts_is_refused_at_once(tmp_path, tls, vault, boot, token, transit_mount,
                                                                  expected):
    config = {**settings(tmp_path, tls, vault.port, token=token), "transit_mount": transit_mount}
    lines: list[str] = []
    with pytest.raises(transit.TransitError) as refused:
        unwrap(config, lines)
    assert str(refused.value) == expected and token not in str(refused.value)
    assert boot.pauses == [] and lines == []


@pytest.mark.parametrize("status", [400, 404])
def test_other_client_errors_are_refused_at_once(tmp_path, tls, vault, boot, status):
    vault.script = [status]
    with pytest.raises(transit.TransitError, match=rf"Vault refused to unwrap the data key \(HTTP {status}: no\)"):
        unwrap(settings(tmp_path, tls, vault.port), [])
    assert boot.pauses == []


def test_a_vault_certificate_from_another_ca_is_refused_at_once(tmp_path, tmp_path_factory, vault, boot):
    other = write_tls(tmp_path_factory.mktemp("other-ca"))
    with pytest.raises(transit.TransitError, match="does not verify with the CA in"):
        unwrap(settings(tmp_path, other, vault.port), [])
    assert boot.pauses == []


def test_a_missing_ca_file_or_an_unreadable_token_file_is_refused_at_once(tmp_path, tls, vault, boot):
    config = {**settings(tmp_path, tls, vault.port), "vault_ca": str(tmp_path / "none.pem")}
    with pytest.raises(transit.TransitError, match=r"cannot read Vault's CA certificate .*none.pem"):
        unwrap(config, [])
    config = {**settings(tmp_path, tls, vault.port), "token_file": str(tmp_path)}  # a directory
    with pytest.raises(transit.TransitError, match="cannot read the Vault token in"):
        unwrap(config, [])
    assert boot.pauses == []


def test_wait_seconds_bounds_the_wait(tmp_path, tls, boot):
    config = {**settings(tmp_path, tls, free_port()), "wait_seconds": 10}
    lines: list[str] = []
    with pytest.raises(transit.TransitError, match=r"gave up waiting for Vault at .* after 10 s: connection refused"):
        unwrap(config, lines)
    assert boot.pauses == [2, 4, 4] and len(lines) == 3
    with pytest.raises(transit.TransitError, match="after 0 s"):  # the argument wins over the settings
        transit.unwrap(config, "vault:v1:abc", "model-data", wait_seconds=0, log=lines.append)
    with pytest.raises(transit.TransitError, match="wait_seconds is 'soon'"):
        unwrap({**config, "wait_seconds": "soon"}, lines)


# -- the callers ---------------------------------------------------------------------------

@pytest.fixture
def model(tmp_path, tls, vault, monkeypatch):
    """A model sealed with KEY, its unseal settings, and the tmpfs steps stubbed (recorded in `mounts`)."""
    signer = LocalSigner(ec.generate_private_key(ec.SECP256R1()))
    source = tmp_path / "source"
    source.mkdir()
    (source / "config.json").write_text('{"hidden_size": 64}')
    (source / "weights.bin").write_bytes(os.urandom(5000))
    sealed.seal(source, tmp_path / "sealed", model="m", revision="r1", data_key=KEY, wrapped_key="vault:v1:abc",
                signer=signer, chunk_size=4096, workers=1)
    (tmp_path / "keys.pem").write_bytes(signer.public_key_pem)
    config = {**settings(tmp_path, tls, vault.port), "model": "m", "revision": "r1", "sealed_dir": str(tmp_path / "sealed"),
              "mount": str(tmp_path / "mnt"), "user": getpass.getuser(), "public_keys": str(tmp_path / "keys.pem")}
    (tmp_path / "config").mkdir()
    (tmp_path / "config" / "m.json").write_text(json.dumps(config))
    mounts: list[str] = []
    monkeypatch.setattr(unseal, "mount_tmpfs", lambda mount, *_: (mounts.append("mount"), Path(mount).mkdir()))
    monkeypatch.setattr(unseal, "unmount", lambda mount: mounts.append("unmount"))
    monkeypatch.setattr(unseal, "hand_over", lambda *_: None)
    return {"dir": tmp_path / "config", "mount": tmp_path / "mnt", "mounts": mounts, "vault": vault}


def test_unseal_waits_for_a_sealed_vault_then_unseals(model, boot, capsys):
    model["vault"].script = [503]
    assert unseal.run("m", model["dir"]).startswith("unsealed m/r1 (2 files")
    assert (model["mount"] / "config.json").read_text() == '{"hidden_size": 64}'
    assert model["mounts"] == ["mount"] and boot.pauses == [2]
    journal = capsys.readouterr().err.splitlines()
    assert journal == [f"model m: waiting for Vault at https://127.0.0.1:{model['vault'].port} (transit decrypt): "
                       "HTTP 503: Vault is sealed; 0 s so far, next try in 2 s"]


def test_unseal_refused_by_policy_stops_before_mounting(model, boot):
    model["vault"].allowed = set()
    with pytest.raises(unseal.UnsealError, match=r"Vault refused to unwrap the data key \(HTTP 403"):
        unseal.run("m", model["dir"])
    assert model["mounts"] == [] and boot.pauses == []


@pytest.fixture
def sigterm_raises():
    previous = signal.getsignal(signal.SIGTERM)
    waits.raise_on_sigterm()
    yield
    signal.signal(signal.SIGTERM, previous)


def test_sigterm_while_waiting_mounts_nothing(model, boot, sigterm_raises):
    model["vault"].script = [503]
    boot.on_sleep = [lambda: os.kill(os.getpid(), signal.SIGTERM)]
    with pytest.raises(waits.Terminated):
        unseal.run("m", model["dir"])
    assert model["mounts"] == []


def test_sigterm_while_decrypting_unmounts(model, boot, sigterm_raises, monkeypatch):
    def interrupted(source, dest, key, keys):
        (Path(dest) / "partial").write_bytes(b"plaintext")
        os.kill(os.getpid(), signal.SIGTERM)

    monkeypatch.setattr(sealed, "unseal", interrupted)
    with pytest.raises(waits.Terminated):
        unseal.run("m", model["dir"])
    assert model["mounts"] == ["mount", "unmount"]


def test_unseal_main_reports_a_stop_in_one_line(monkeypatch, capsys, sigterm_raises):
    def stopped(name, wait_seconds=None):
        raise waits.Terminated("stopped by SIGTERM")

    monkeypatch.setattr(unseal, "run", stopped)
    assert unseal.main(["m"]) == 143
    assert capsys.readouterr().err == ("model m: stopped by SIGTERM before the model was served; "
                                       "no plaintext was left behind\n")
    assert unseal.main(["--wait-seconds", "x", "m"]) == 2 and unseal.main(["--stop", "--check", "m"]) == 2


def test_store_unlock_waits_then_gets_the_passphrase(tmp_path, tls, vault, boot, capsys):
    vault.script = [503]
    (tmp_path / "wrapped").write_text("vault:v1:abc\n")
    config = {**settings(tmp_path, tls, vault.port), "wrapped_file": str(tmp_path / "wrapped"),
              "transit_key": "store-volume"}
    assert store_unlock.unwrap_key(config) == KEY.hex().encode()
    assert capsys.readouterr().err.startswith("store volume: waiting for Vault at https://127.0.0.1:")
    vault.allowed = set()
    with pytest.raises(store_unlock.StoreError, match=r"Vault refused to unwrap the volume key \(HTTP 403"):
        store_unlock.unwrap_key(config)
    with pytest.raises(store_unlock.StoreError, match="gave up waiting for .* after 0 s: HTTP 503"):
        vault.script = [503]
        store_unlock.unwrap_key(config, wait_seconds=0)


def test_a_real_sigterm_during_a_wait_ends_the_process_with_one_line(tmp_path, tls):
    """The module as the unit runs it: Vault unreachable, SIGTERM after the first wait line."""
    config = settings(tmp_path, tls, free_port())
    script = ("import sys; from citadel_runtime import transit, waits\n"
              "waits.raise_on_sigterm()\n"
              f"try: transit.unwrap({config!r}, 'vault:v1:abc', 'model-data')\n"
              "except waits.Terminated as exc: print(f'model m: {exc}', file=sys.stderr); sys.exit(143)\n")
    process = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, stderr=subprocess.PIPE, text=True)
    first = process.stderr.readline()
    process.send_signal(signal.SIGTERM)
    rest = process.stderr.read()
    assert process.wait(timeout=10) == 143
    assert first.startswith("waiting for Vault at https://127.0.0.1:") and "connection refused; 0 s so far" in first
    assert rest == "model m: stopped by SIGTERM\n"
