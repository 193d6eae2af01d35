"""The real keyguard on this machine's loopback, in front of recording stand-in vLLMs on Unix sockets.

The keyguard runs as on a GPU host (``python3 -m citadel_runtime.keyguard --listen ...
--upstream unix:.../{model}/vllm.sock``) with a certificate made here, an internal key
document (``ik_1`` current, ``ik_0`` previous) and vLLM's key file (``vk_x``). Each model
is the stand-in of tests/gateway_harness.py on that model's socket; it records what reaches
it. The client side (requests, raw TLS from any loopback source, descriptors and memory in
/proc) is the gateway harness's, which applies as is. ``CITADEL_RUNTIME_ROOT`` runs another
checkout's keyguard, as there.

Example::

    with Keyguard(tmp_path, models=("tiny",)) as keyguard:
        status, body, _ = keyguard.request("POST", "/v1/completions", key="ik_1", body={"model": "tiny"})
        assert keyguard.models["tiny"].requests[-1].headers["authorization"] == "Bearer vk_x"
"""

from __future__ import annotations

import datetime as dt
import json
import os
import resource
import shutil
import socketserver
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

from citadel_runtime.keydoc import digest
from tests.gateway_harness import Behaviour, Gateway, RecordingUpstream, StandInHandler, runtime_root

INTERNAL_KEY, PREVIOUS_KEY, VLLM_KEY = "ik_1", "ik_0", "vk_x"


class _UnixHandler(StandInHandler):
    disable_nagle_algorithm = False  # TCP_NODELAY does not apply to a Unix socket


class _UnixServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True

    def __init__(self, path: str):
        super().__init__(path, _UnixHandler)
        self.seen = []
        self.lock = threading.Lock()
        self.behaviour = Behaviour()


class UnixRecordingUpstream(RecordingUpstream):
    """The recording stand-in model server, on a Unix socket as vLLM is on a GPU host."""

    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.server = _UnixServer(str(path))
        self.port = None
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)


def key_document(current: str = INTERNAL_KEY, version: int = 1) -> dict:
    expires = (dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)).isoformat()
    return {"current": {"version": version, "sha256": digest(current)},
            "previous": {"version": version - 1, "sha256": digest(PREVIOUS_KEY)}, "previous_expires": expires}


@dataclass
class Keyguard(Gateway):
    """The real keyguard process serving `models`, each a recording stand-in on its own socket.

    `descriptors`: the keyguard's descriptor limit (soft and hard), as a host could set it.
    `arguments`: more of its command line (``("--client-ca", CA, "--crl", CRL)``, say).
    """

    models: tuple[str, ...] = ("tiny",)
    descriptors: int | None = None
    arguments: tuple[str, ...] = ()
    served: dict[str, UnixRecordingUpstream] = field(default_factory=dict)

    def __post_init__(self):
        super().__post_init__()
        # Socket paths are short (108 bytes at most): not under pytest's deep tmp_path.
        self.run_dir = Path(tempfile.mkdtemp(prefix="kg", dir="/tmp"))

    @property
    def template(self) -> str:
        return f"{self.run_dir}/{{model}}/vllm.sock"

    def _write_files(self) -> None:
        w = self.workdir
        (w / "tls.pem").write_bytes(self.tls.key_file.read_bytes() + self.tls.cert_file.read_bytes())
        (w / "keys.json").write_text(json.dumps(key_document()))
        (w / "vllm.env").write_text(f"VLLM_API_KEY={VLLM_KEY}\n")

    def start(self) -> Keyguard:
        self._write_files()
        for model in self.models:
            self.served[model] = UnixRecordingUpstream(Path(self.template.format(model=model))).__enter__()
        return self._launch()

    def kill(self) -> None:
        """SIGKILL the keyguard process only (its stand-in model servers stay): a host lost at once."""
        self.process.kill()
        self.process.wait(timeout=10)

    def revive(self) -> Keyguard:
        """Start the keyguard process again, on the same port, after `kill` (or `terminate`)."""
        return self._launch()

    def terminate(self) -> None:
        """SIGTERM, as systemd stops or restarts it: it drains, then exits (`process.wait()` to see when)."""
        self.process.terminate()

    @property
    def state_dir(self) -> Path:
        """Its --state-dir: models' drain markers (draining/MODEL) and the in-flight report."""
        return self.workdir / "state"

    def drain_model(self, model: str, deadline: float = 10) -> subprocess.Popen:
        """Run the drain helper as vLLM's ExecStop= does (``python3 -m citadel_runtime.drain wait``); not waited for."""
        root = runtime_root()
        return subprocess.Popen([sys.executable, "-m", "citadel_runtime.drain", "wait", model, "--deadline",
                                 str(deadline), "--state-dir", str(self.state_dir)], cwd=root,
                                env={**os.environ, "PYTHONPATH": str(root)}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)

    def release_model(self, model: str) -> None:
        """Remove the model's drain marker, as vLLM's ExecStartPre= does."""
        (self.state_dir / "draining" / model).unlink(missing_ok=True)

    def _launch(self) -> Keyguard:
        started = self.log().count("listening on")
        root = runtime_root()
        limit = self.descriptors

        def limit_descriptors():
            if limit:
                resource.setrlimit(resource.RLIMIT_NOFILE, (limit, limit))

        w = self.workdir
        with open(w / "keyguard.log", "a") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "citadel_runtime.keyguard", "--listen", f"127.0.0.1:{self.port}",
                 "--tls", str(w / "tls.pem"), "--keys", str(w / "keys.json"), "--upstream", f"unix:{self.template}",
                 "--upstream-key", str(w / "vllm.env"), "--state-dir", str(self.state_dir), *self.arguments],
                cwd=root, env={**os.environ, "PYTHONPATH": str(root)}, stderr=log, preexec_fn=limit_descriptors)
        deadline = time.monotonic() + 30
        while self.log().count("listening on") == started:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the keyguard did not start: {self.log()}")
            time.sleep(0.05)
        return self

    def stop(self) -> None:
        super().stop()
        for server in self.served.values():
            server.__exit__()
        shutil.rmtree(self.run_dir, ignore_errors=True)

    def log(self) -> str:
        """What the keyguard wrote to stderr (its journal, on a host)."""
        path = self.workdir / "keyguard.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def reload(self, keys: dict | None = None) -> None:
        """A new key document (if given), then SIGHUP, as the Vault agent does; returns once reloaded."""
        if keys is not None:
            (self.workdir / "keys.json").write_text(json.dumps(keys))
        before = self.log().count("reloaded")
        self.process.send_signal(1)
        deadline = time.monotonic() + 10
        while self.log().count("reloaded") == before and time.monotonic() < deadline:
            time.sleep(0.05)

    def exchange(self, data: bytes, source: str | None = None, timeout: float = 10) -> bytes:
        """Send `data` on a new TLS connection (from loopback address `source`), read until it closes."""
        with self.tls_socket(timeout, source) as sock:
            sock.sendall(data)
            return read_until_closed(sock)


def read_until_closed(sock) -> bytes:
    chunks = []
    while True:
        try:
            piece = sock.recv(65536)
        except (TimeoutError, OSError):
            break
        if not piece:
            break
        chunks.append(piece)
    return b"".join(chunks)

