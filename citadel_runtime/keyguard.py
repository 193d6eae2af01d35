"""The keyguard: the model server's only door on a GPU host.

It terminates TLS with the host's certificate and accepts a request only with the
gateway's internal API key (``Authorization: Bearer ...``), checked against the key
document the Vault agent renders (hashes only: the host never holds the key itself).
Accepted requests go to the model server: vLLM's Unix socket for the model the request
names (``/run/citadel-vllm/MODEL/vllm.sock``; requests that name none, such as ``GET
/v1/models``, go to the first model served), with vLLM's own API key, read from the
agent's ``vllm.env``, in place of the gateway's. ``GET /citadel/whoami`` is answered here
(which key version matched), for checks and tests.

On SIGHUP (the agent's template command, ``systemctl reload citadel-keyguard``) it reloads
the certificate and the key document. A reload that fails keeps the previous ones and
says why in the journal, so a half-written file never takes the door down; connections
already open finish with the context they started with.

Threats: inference attacks and privacy breaches through direct access to the model server
(only the gateway holds the key); insecure deployment (no plaintext on the wire).

Example (as its systemd unit runs it; paths, never secrets, on the command line)::

    python3 -m citadel_runtime.keyguard --listen 0.0.0.0:8443 \\
        --tls /etc/citadel/secrets/keyguard/tls.pem \\
        --keys /etc/citadel/secrets/keyguard/internal-api-key.json \\
        --upstream 'unix:/run/citadel-vllm/{model}/vllm.sock' \\
        --upstream-key /etc/citadel/secrets/keyguard/vllm.env
"""

from __future__ import annotations

import argparse
import datetime as dt
import glob
import http.client
import http.server
import json
import signal
import socketserver
import ssl
import sys
import threading

from citadel_runtime.keydoc import match
from citadel_runtime.layout import KEYGUARD_PORT
from citadel_runtime.uds import MODEL_NAME, UnixHTTPConnection, read_env_file

HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "authorization", "host"}


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Secrets:
    """The TLS context and key document in force; swapped whole on reload."""

    def __init__(self, tls_file: str, keys_file: str, upstream_key_file: str | None = None):
        self.tls_file = tls_file
        self.keys_file = keys_file
        self.upstream_key_file = upstream_key_file
        self.lock = threading.Lock()
        self.context, self.keys = self._load()
        self.upstream_key = self._upstream_key()

    def _upstream_key(self) -> str | None:
        """vLLM's key, or None (requests then reach vLLM without one and get its 401)."""
        if not self.upstream_key_file:
            return None
        try:
            return read_env_file(self.upstream_key_file).get("VLLM_API_KEY") or None
        except OSError as exc:
            log(f"no model server key ({type(exc).__name__}: {exc}); vLLM will refuse requests")
            return None

    def _load(self) -> tuple[ssl.SSLContext, dict]:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.tls_file)  # key and certificate rendered together
        with open(self.keys_file, encoding="utf-8") as handle:
            keys = json.load(handle)
        if not (keys.get("current") or {}).get("sha256"):
            raise ValueError(f"{self.keys_file}: no current key hash")
        return context, keys

    def reload(self) -> None:
        try:
            context, keys = self._load()
        except (OSError, ValueError, ssl.SSLError) as exc:
            log(f"reload failed, keeping the previous certificate and keys: {type(exc).__name__}: {exc}")
            return
        upstream_key = self._upstream_key()
        with self.lock:
            self.context, self.keys, self.upstream_key = context, keys, upstream_key
        versions = [s.get("version") for s in (keys.get("current"), keys.get("previous")) if s]
        log(f"reloaded the certificate and keys (key versions {versions})")


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, address, secrets: Secrets, upstream: str):
        self.secrets = secrets
        self.upstream = upstream
        super().__init__(address, Handler)

    def finish_request(self, request, client_address):
        # The handshake runs in the connection's own thread, with the context in force now.
        request.settimeout(30)
        try:
            tls = self.secrets.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            log(f"{client_address[0]}: TLS handshake failed: {exc}")
            return
        self.RequestHandlerClass(tls, client_address, self)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "citadel-keyguard"
    sys_version = ""

    def log_message(self, format, *args):  # noqa: A002 - the base class's name
        pass  # one line per request is written by _done, without the headers

    def _done(self, status: int, slot: dict | None) -> None:
        version = slot.get("version") if slot else None
        log(f"{self.client_address[0]} {self.command} {self.path.split('?')[0]} {status} key_version={version}")

    def _reply(self, status: int, body: dict, extra: dict | None = None) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (extra or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def _authorised(self) -> dict | None:
        header = self.headers.get("Authorization", "")
        if not header.startswith("Bearer "):
            return None
        with self.server.secrets.lock:
            keys = self.server.secrets.keys
        return match(keys, header[len("Bearer "):].strip(), dt.datetime.now(dt.UTC))

    def _handle(self) -> None:
        slot = self._authorised()
        if slot is None:
            length = int(self.headers.get("Content-Length") or 0)
            self.rfile.read(min(length, 1 << 20))
            self._reply(401, {"error": "a valid internal API key is required"}, {"WWW-Authenticate": "Bearer"})
            return self._done(401, None)
        if self.path == "/citadel/whoami":
            self._reply(200, {"key_version": slot.get("version")})
            return self._done(200, slot)
        status = self._forward()
        self._done(status, slot)

    def _forward(self) -> int:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        with self.server.secrets.lock:
            key = self.server.secrets.upstream_key
        if key:
            headers["Authorization"] = f"Bearer {key}"
        upstream = connect_upstream(self.server.upstream, body)
        if upstream is None:
            self._reply(503, {"error": "no model is being served on this host"})
            return 503
        try:
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
        except OSError:
            self._reply(502, {"error": "the model server is not answering"})
            return 502
        try:
            self.send_response(response.status)
            for name, value in response.getheaders():
                if name.lower() not in HOP_BY_HOP:
                    self.send_header(name, value)
            length = response.getheader("Content-Length")
            if length is None:
                self.send_header("Transfer-Encoding", "chunked")  # streams (server-sent events) pass as they come
            self.end_headers()
            while chunk := response.read1(65536):
                self.wfile.write(chunk if length is not None else b"%x\r\n%s\r\n" % (len(chunk), chunk))
                self.wfile.flush()
            if length is None:
                self.wfile.write(b"0\r\n\r\n")
        finally:
            upstream.close()
        return response.status

    do_GET = do_POST = do_PUT = do_DELETE = _handle  # noqa: N815 - http.server's names


def requested_model(body: bytes | None) -> str | None:
    """The "model" of a JSON request body, when it is a plausible model name."""
    if not body or len(body) > 8 << 20:
        return None
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError):
        return None
    return model if isinstance(model, str) and MODEL_NAME.fullmatch(model) else None


def connect_upstream(upstream: str, body: bytes | None, timeout: float = 600) -> http.client.HTTPConnection | None:
    """A connection to the model server: `upstream` is HOST:PORT or unix:PATH with {model} in it."""
    if not upstream.startswith("unix:"):
        host, _, port = upstream.rpartition(":")
        return http.client.HTTPConnection(host, int(port), timeout=timeout)
    template = upstream[len("unix:"):]
    model = requested_model(body)
    if model is not None:
        return UnixHTTPConnection(template.format(model=model), timeout=timeout)
    served = sorted(glob.glob(template.format(model="*")))
    return UnixHTTPConnection(served[0], timeout=timeout) if served else None


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="citadel-keyguard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default=f"0.0.0.0:{KEYGUARD_PORT}", help="address:port to serve TLS on")
    parser.add_argument("--tls", required=True, help="PEM file with the private key and certificate chain")
    parser.add_argument("--keys", required=True, help="the internal API key document (hashes)")
    parser.add_argument("--upstream", default="unix:/run/citadel-vllm/{model}/vllm.sock",
                        help="the model server: unix:PATH ({model}: the request's model) or HOST:PORT on loopback")
    parser.add_argument("--upstream-key", help="environment file with VLLM_API_KEY, the model server's key")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    host, _, port = args.listen.rpartition(":")
    try:
        secrets = Secrets(args.tls, args.keys, args.upstream_key)
    except (OSError, ValueError, ssl.SSLError) as exc:
        log(f"cannot start: {type(exc).__name__}: {exc}")
        return 1
    server = Server((host, int(port)), secrets, args.upstream)
    signal.signal(signal.SIGHUP, lambda *_: threading.Thread(target=secrets.reload, daemon=True).start())
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown, daemon=True).start())
    log(f"listening on {host}:{port}, forwarding to {args.upstream}")
    server.serve_forever()
    return 0


if __name__ == "__main__":
    sys.exit(main())
