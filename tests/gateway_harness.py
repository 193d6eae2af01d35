"""The real gateway on this machine's loopback, with a recording stand-in model server.

Shared by the gateway's service tests (tests/unit) and the adversarial tier
(tests/adversarial). The gateway runs as on a host (``python3 -m
citadel_runtime.gateway.server --config FILE``) with a certificate made here; the stand-in
model server is the one stand-in the tests use, and only as the gateway's counterpart: it
records every request that reaches it, so a test can prove what the gateway let through.

``CITADEL_RUNTIME_ROOT=/path/to/another/checkout`` starts that checkout's gateway instead
(how the adversarial tests are shown to fail on an older version).

Example::

    with RecordingUpstream() as upstream, Gateway(tmp_path, upstream=upstream) as gateway:
        status, body, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
        assert status == 200 and upstream.requests[-1].path == "/v1/chat/completions"
        assert gateway.records()[-1]["status"] == 200
"""

from __future__ import annotations

import http.client
import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from citadel_runtime.gateway.auditlog import verify_file
from citadel_runtime.keydoc import digest
from deploy.vault.tls import write_tls

REPO = Path(__file__).resolve().parents[1]
AUDIT_KEY = "a" * 64
CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def runtime_root() -> Path:
    """Whose citadel_runtime runs: this checkout's, or the one CITADEL_RUNTIME_ROOT names."""
    return Path(os.environ.get("CITADEL_RUNTIME_ROOT") or REPO)


# -- the stand-in model server ------------------------------------------------------------


@dataclass
class Seen:
    """One request as it reached the model server."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    received: float
    cut_at: float | None = None  # when a stream's reader went away (the gateway closed it)

    @property
    def json(self) -> dict:
        return json.loads(self.body or b"{}")

    @property
    def request_id(self) -> str | None:
        return self.headers.get("x-request-id")


@dataclass
class Behaviour:
    """What the stand-in does: streams of `chunks` pieces `chunk_delay` seconds apart."""

    chunks: int = 3
    chunk_delay: float = 0.0
    answer_delay: float = 0.0
    status: int = 200
    chunked_errors: bool = False  # a status other than 200 answered with a chunked body (as some servers do)


class StandInHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # a head and a body in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, *args) -> None:  # quiet: tests read `requests`, not stderr
        pass

    def _record(self) -> Seen:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        seen = Seen(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, time.monotonic())
        with self.server.lock:
            self.server.seen.append(seen)
        return seen

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        self._record()
        self._json(200, {"object": "list", "data": [{"id": "tiny", "object": "model"}]})

    def do_POST(self) -> None:  # noqa: N802
        seen = self._record()
        behaviour = self.server.behaviour
        time.sleep(behaviour.answer_delay)
        try:
            request = seen.json
        except ValueError:
            request = {}
        if behaviour.status != 200 and behaviour.chunked_errors:
            self.send_response(behaviour.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()
            self._chunk(b'{"error": {"message": "stand-in failure, chunked"}}')
            self.wfile.write(b"0\r\n\r\n")
            return self.wfile.flush()
        if behaviour.status != 200:
            return self._json(behaviour.status, {"error": {"message": "stand-in failure"}})
        if isinstance(request, dict) and request.get("stream") is True:
            return self._stream(seen, behaviour)
        self._json(200, {"id": "cmpl-1", "object": "chat.completion", "model": "tiny",
                         "choices": [{"index": 0, "message": {"role": "assistant", "content": "ok"},
                                      "finish_reason": "stop"}],
                         "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}})

    def _json(self, status: int, payload: dict) -> None:
        data = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def _stream(self, seen: Seen, behaviour: Behaviour) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        try:
            for n in range(behaviour.chunks):
                event = json.dumps({"choices": [{"index": 0, "delta": {"content": f"t{n}"}}]})
                self._chunk(f"data: {event}\n\n".encode())
                time.sleep(behaviour.chunk_delay)
            self._chunk(b"data: [DONE]\n\n")
            self.wfile.write(b"0\r\n\r\n")
            self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            seen.cut_at = time.monotonic()
            self.close_connection = True

    def _chunk(self, data: bytes) -> None:
        self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
        self.wfile.flush()


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 512  # the gateway's pool opens many connections at once under load

    def __init__(self, address):
        super().__init__(address, StandInHandler)
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self.behaviour = Behaviour()


class RecordingUpstream:
    """A plain-HTTP stand-in for vLLM on loopback that records what reaches it."""

    def __init__(self):
        self.server = _Server(("127.0.0.1", 0))
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def address(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def behaviour(self) -> Behaviour:
        return self.server.behaviour

    @property
    def requests(self) -> list[Seen]:
        with self.server.lock:
            return list(self.server.seen)

    def __enter__(self) -> RecordingUpstream:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()


_CHILD = ("import sys; from tests.gateway_harness import RecordingUpstream\n"
          "with RecordingUpstream() as upstream:\n    print(upstream.port, flush=True)\n    sys.stdin.read()\n")


class UpstreamProcess:
    """The stand-in in a process of its own, for load (benchmarks, an attacker's bulk traffic):
    its work then shares no interpreter lock with the test's own clients. What it receives
    stays in that process; only its address is needed."""

    def __init__(self):
        self.process = subprocess.Popen([sys.executable, "-c", _CHILD], cwd=REPO, stdin=subprocess.PIPE,
                                        stdout=subprocess.PIPE, text=True)
        self.port = int(self.process.stdout.readline())
        self.address = f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> UpstreamProcess:
        return self

    def __exit__(self, *exc) -> None:
        self.process.stdin.close()  # its signal to stop
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()


# -- the gateway ----------------------------------------------------------------------------


@dataclass
class Gateway:
    """The real gateway process with clients `keys` ({name: key}) and `policies` ({name: policy})."""

    workdir: Path
    keys: dict[str, str] = field(default_factory=lambda: {"ward": "ck_w"})
    policies: dict = field(default_factory=lambda: {"ward": {"models": ["tiny"], "max_tokens": 8}})
    upstream: RecordingUpstream | UpstreamProcess | None = None
    config: dict = field(default_factory=dict)
    process: subprocess.Popen | None = None
    descriptor_limit: int | None = None  # RLIMIT_NOFILE for the gateway process (None: this process's)

    def __post_init__(self):
        self.port, self.admin_port = free_port(), free_port()
        self.tls = write_tls(self.workdir / "tls")
        self.audit_log = Path(self.config.get("audit_log") or self.workdir / "audit.jsonl")

    def write_config(self) -> Path:
        """The gateway's files and configuration in `workdir`; the path of its configuration."""
        w = self.workdir
        (w / "tls.pem").write_bytes(self.tls.key_file.read_bytes() + self.tls.cert_file.read_bytes())
        (w / "clients.json").write_text(json.dumps({"clients": {
            name: {"current": {"version": 1, "sha256": digest(key)}} for name, key in self.keys.items()}}))
        (w / "audit.json").write_text(json.dumps({"value": AUDIT_KEY}))
        (w / "keys.json").write_text(json.dumps({"current": {"version": 1, "value": "ik_x"}}))
        upstream = self.upstream.address if self.upstream else f"https://127.0.0.1:{free_port()}"  # nobody there
        config = {"listen": f"127.0.0.1:{self.port}", "admin_listen": f"127.0.0.1:{self.admin_port}",
                  "tls": str(w / "tls.pem"), "client_keys": str(w / "clients.json"),
                  "audit_key": str(w / "audit.json"), "audit_log": str(self.audit_log), "journal": False,
                  "upstreams": {"tiny": upstream},
                  "upstream_key": {"kind": "keydoc", "path": str(w / "keys.json")}, "clients": self.policies,
                  **self.config}
        (w / "gateway.json").write_text(json.dumps(config))
        return w / "gateway.json"

    def start(self) -> Gateway:
        config = self.write_config()
        root = runtime_root()
        env = {**os.environ, "PYTHONPATH": str(root)}
        # Its log goes to a file: a pipe nobody reads would stall the gateway once full.
        with open(self.workdir / "gateway.log", "a") as log:
            self.process = subprocess.Popen([sys.executable, "-m", "citadel_runtime.gateway.server", "--config",
                                             str(config)], cwd=root, env=env, stderr=log,
                                            preexec_fn=self._limit_descriptors if self.descriptor_limit else None)
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.admin_port), timeout=1).close()
                return self
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"the gateway did not start: {self.log()}") from None
                time.sleep(0.1)

    def _limit_descriptors(self) -> None:
        resource.setrlimit(resource.RLIMIT_NOFILE, (self.descriptor_limit, self.descriptor_limit))

    def log(self) -> str:
        """What the gateway wrote to stderr (its journal, on a host)."""
        path = self.workdir / "gateway.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)

    def __enter__(self) -> Gateway:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- clients --------------------------------------------------------------------------

    def context(self) -> ssl.SSLContext:
        return ssl.create_default_context(cafile=str(self.tls.ca_file))

    def connection(self, timeout: float = 10) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection("127.0.0.1", self.port, context=self.context(), timeout=timeout)

    def request(self, method: str, path: str, *, key: str | None = None, body=None, raw: bytes | None = None,
                headers: dict | None = None, timeout: float = 10) -> tuple[int, dict, dict]:
        """One request on a new connection: (status, JSON body or {}, headers)."""
        connection = self.connection(timeout)
        try:
            sent = {**({"Authorization": f"Bearer {key}"} if key else {}), **(headers or {})}
            payload = raw if raw is not None else (json.dumps(body).encode() if body is not None else None)
            connection.request(method, path, body=payload, headers=sent)
            response = connection.getresponse()
            data = response.read()
            try:
                parsed = json.loads(data or b"{}")
            except ValueError:
                parsed = {"_raw": data.decode(errors="replace")}
            return response.status, parsed, {k.lower(): v for k, v in response.getheaders()}
        finally:
            connection.close()

    def tls_socket(self, timeout: float = 10, source: str | None = None) -> ssl.SSLSocket:
        """A raw TLS connection, for bytes no HTTP client library would send.

        `source`: the local address to connect from (any of 127.0.0.0/8 reaches the gateway
        on loopback), so that one test can be two sources: an attacker and a real client.
        """
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=timeout,
                                        source_address=(source, 0) if source else None)
        try:
            return self.context().wrap_socket(sock, server_hostname="localhost")
        except BaseException:
            sock.close()
            raise

    def send_raw(self, data: bytes, timeout: float = 10) -> bytes:
        """Send bytes on a new TLS connection, half-close, and read everything until it closes."""
        with self.tls_socket(timeout) as sock:
            sock.sendall(data)
            chunks = []
            while True:
                try:
                    piece = sock.recv(65536)
                except (TimeoutError, ConnectionError, ssl.SSLError):
                    break
                if not piece:
                    break
                chunks.append(piece)
            return b"".join(chunks)

    def admin(self, path: str) -> tuple[int, str]:
        connection = http.client.HTTPConnection("127.0.0.1", self.admin_port, timeout=10)
        try:
            connection.request("GET", path)
            response = connection.getresponse()
            return response.status, response.read().decode()
        finally:
            connection.close()

    # -- what it recorded -------------------------------------------------------------------

    def records(self) -> list[dict]:
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def chain_ok(self) -> bool:
        return verify_file(str(self.audit_log), AUDIT_KEY.encode()).ok

    def wait_for_records(self, count: int, seconds: float = 10) -> list[dict]:
        deadline = time.monotonic() + seconds
        while True:
            records = self.records()
            if len(records) >= count or time.monotonic() > deadline:
                return records
            time.sleep(0.05)

    def limit_file_size(self, size: int | None) -> None:
        """Let the gateway write files up to `size` bytes (None: no limit): a disk that fills, then frees.

        A write past the limit fails with EFBIG, as on a full disk with ENOSPC (Python ignores
        the SIGXFSZ that comes with it). Only the gateway's own process is limited.
        """
        limit = resource.RLIM_INFINITY if size is None else size
        resource.prlimit(self.process.pid, resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))

    def metric(self, line_start: str) -> float:
        """The value of the first metric line that starts with `line_start` (0 when there is none)."""
        for line in self.admin("/metrics")[1].splitlines():
            if line.startswith(line_start):
                return float(line.rsplit(" ", 1)[1])
        return 0.0

    def open_descriptors(self) -> int:
        return len(os.listdir(f"/proc/{self.process.pid}/fd"))

    def resident_kib(self) -> int:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0
