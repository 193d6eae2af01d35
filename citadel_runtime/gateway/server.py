"""The gateway service: ``python3 -m citadel_runtime.gateway.server --config /etc/citadel/gateway/gateway.json``.

One asyncio event loop serves HTTPS on ``listen`` and Prometheus metrics on ``admin_listen``
(loopback only). For each request, in this order: the route allowlist (403/404/405), the
client's key (401), the client's policy (403), the audit log's health (503), body size
(413), rate and concurrency (429), JSON and model (400/403), token limit (400), the PHI
guard (422 in block mode); then the model server, whose answer is streamed back. Every
request, refused or not, is one chained line in the audit log.

SIGHUP (``systemctl reload citadel-gateway``, which the Vault agent runs after rendering)
reloads the TLS certificate, the client keys and the model server key; the key files are
also watched, so a revoked client is refused within a second. A reload that fails keeps
what was in force and says why in the journal.

The configuration (JSON, written by role ``gateway``; paths and policy, never secrets)::

    {"listen": "0.0.0.0:443", "admin_listen": "127.0.0.1:9464",
     "tls": "/etc/citadel/secrets/gateway/tls.pem",
     "client_keys": "/etc/citadel/secrets/gateway/client-keys.json",
     "audit_key": "/etc/citadel/secrets/gateway/audit-hmac.json",
     "audit_log": "/var/log/citadel-gateway/audit.jsonl", "audit_fail_open": false,
     "upstreams": {"tiny": "https://10.80.0.2:8443"}, "upstream_ca": "/etc/citadel/pki-ca.pem",
     "upstream_key": {"kind": "keydoc", "path": "/etc/citadel/secrets/gateway/internal-api-key.json"},
     "request_timeout": 120,
     "clients": {"radiology": {"models": ["tiny"], "requests_per_minute": 600, ...}}}
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import hashlib
import json
import os
import re
import secrets as pysecrets
import signal
import ssl
import sys
import time

from citadel_runtime.gateway import content, phi
from citadel_runtime.gateway.auditlog import Writer
from citadel_runtime.gateway.clients import KeyTable, Limits, Policy, requested_tokens
from citadel_runtime.gateway.http1 import LAST_CHUNK, MAX_HEAD, Head, HttpError, chunk, read_head, response_head, within
from citadel_runtime.gateway.metrics import Metrics
from citadel_runtime.gateway.routes import classify
from citadel_runtime.gateway.upstream import Address, Pool, UpstreamError
from citadel_runtime.layout import GATEWAY_ADMIN_PORT, GATEWAY_PORT
from citadel_runtime.uds import read_env_file

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
IDLE_SECONDS = 30  # a keep-alive connection with no new request is closed after this
BODY_SECONDS = 30  # the most a client may take to send its body
BUFFER_LIMIT = 1 << 20  # answers with a Content-Length up to this are read whole first
DRAIN_LIMIT = 16 << 20  # a refused body up to this size is read and dropped before closing
# The refusals' reasons as metric labels: a fixed set, whatever the message's details.
REFUSAL_CODES = (
    ("path trick", "path_trick"), ("route not allowed", "route_not_allowed"), ("method ", "method_not_allowed"),
    ("a valid client", "unauthenticated"), ("this client must present", "client_certificate"), ("no policy", "no_policy"), ("audit log", "audit_log_unavailable"),
    ("body larger", "body_too_large"), ("request body not", "body_timeout"), ("rate limit", "rate_limit"),
    ("concurrency limit", "concurrency_limit"), ("model not allowed", "model_not_allowed"),
    ("max_tokens", "max_tokens"), ("protected health", "phi_blocked"), ("model not served", "model_not_served"),
    ("no model server", "no_upstream"), ("model server", "upstream_error"),
)
USAGE = re.compile(rb'"prompt_tokens":\s*(\d+).{0,200}?"completion_tokens":\s*(\d+)', re.S)


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def tls_context(path: str, client_ca: str | None = None) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.set_ciphers(CIPHERS)  # TLS 1.2: forward secrecy and AEAD only; TLS 1.3's are all fine
    context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE | ssl.OP_NO_RENEGOTIATION
    context.set_alpn_protocols(["http/1.1"])
    context.load_cert_chain(path)
    if client_ca:
        # Asked for, checked against the CA when given, required per client (Gateway.exchange).
        context.load_verify_locations(client_ca)
        context.verify_mode = ssl.CERT_OPTIONAL
    return context


def peer_common_name(writer) -> str | None:
    """The subject CN of the client's verified certificate, if it presented one."""
    cert = writer.get_extra_info("peercert") or {}
    for rdn in cert.get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return value
    return None


def upstream_keys(spec: dict) -> list[str]:
    """The keys to present to the model server, newest first."""
    if spec.get("kind") == "env":
        value = read_env_file(spec["path"]).get("VLLM_API_KEY")
        return [value] if value else []
    with open(spec["path"], encoding="utf-8") as handle:
        doc = json.load(handle)
    return [slot["value"] for slot in (doc.get("current"), doc.get("previous")) if slot and slot.get("value")]


def read_audit_key(path: str) -> bytes:
    with open(path, encoding="utf-8") as handle:
        value = json.load(handle).get("value") or ""
    if len(value) < 32:
        raise ValueError(f"{path}: no audit HMAC key (or one too short)")
    return value.encode()


class Gateway:
    def __init__(self, config: dict):
        self.config = config
        self.timeout = float(config.get("request_timeout", 120))
        self.policies = {name: Policy.from_dict(p) for name, p in (config.get("clients") or {}).items()}
        self.metrics = Metrics()
        self.limits = Limits()
        self.journal = bool(config.get("journal", True))
        self.audit = Writer(config["audit_log"], read_audit_key(config["audit_key"]), bool(config.get("audit_fail_open")))
        ca = config.get("upstream_ca")
        client_tls = ssl.create_default_context(cafile=ca) if ca else None
        if client_tls:
            client_tls.minimum_version = ssl.TLSVersion.TLSv1_2
        self.pools = {model: Pool(Address.parse(a), client_tls) for model, a in (config.get("upstreams") or {}).items()}
        self.tls = tls_context(config["tls"], config.get("client_ca"))
        recorders = sorted(name for name, policy in self.policies.items() if policy.record_content)
        # Content is recorded only sealed: a client that asks for it without a key stops the start.
        self.content_key = content.read_key(config["content_key"]) if recorders else None
        self.keys = KeyTable.load(config["client_keys"])
        self.upstream = upstream_keys(config["upstream_key"])
        self.stamps = self._stamps()

    # -- reloads -----------------------------------------------------------------

    def _stamps(self) -> tuple:
        out = []
        for path in (self.config["tls"], self.config["client_keys"], self.config["upstream_key"]["path"]):
            try:
                stat = os.stat(path)
                out.append((stat.st_mtime_ns, stat.st_ino, stat.st_size))
            except OSError:
                out.append(None)
        return tuple(out)

    def reload(self, why: str) -> None:
        try:
            tls = tls_context(self.config["tls"], self.config.get("client_ca"))
            keys = KeyTable.load(self.config["client_keys"])
            upstream = upstream_keys(self.config["upstream_key"])
        except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
            log(f"reload ({why}) failed, keeping what is in force: {type(exc).__name__}: {exc}")
            return
        self.tls, self.keys, self.upstream = tls, keys, upstream
        log(f"reloaded ({why}): certificate, {len(keys.doc.get('clients') or {})} client(s), model server key")

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(1)
            stamps = self._stamps()
            if stamps != self.stamps:
                self.stamps = stamps
                self.reload("a key file changed")

    def sni(self, ssl_object, server_name, context) -> None:
        ssl_object.context = self.tls  # each handshake uses the certificate in force now

    def server_context(self) -> ssl.SSLContext:
        context = tls_context(self.config["tls"], self.config.get("client_ca"))
        context.sni_callback = self.sni
        return context

    # -- the record --------------------------------------------------------------

    def record(self, rec: dict, started: float) -> None:
        capture = rec.pop("_capture", None)
        if capture is not None and self.content_key is not None:
            rec["content"] = content.seal(self.content_key, rec["request_id"], capture["request"], capture["response"])
        rec["latency_ms"] = round((time.perf_counter() - started) * 1000, 3)
        self.metrics.request(rec.get("client"), rec.get("route"), rec["status"], time.perf_counter() - started)
        line = self.audit.write(rec)
        if line is None:
            log("audit log write failed: new requests are refused until a record can be written"
                if not self.audit.fail_open else "audit log write failed (fail_open: serving unrecorded)")
        elif self.journal:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    # -- connections ---------------------------------------------------------------

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "-"
        try:
            while True:
                started = time.perf_counter()
                try:
                    head = await read_head(reader, IDLE_SECONDS)
                except HttpError as exc:
                    rec = self.new_record(source, None)
                    await self.refuse(writer, rec, started, exc.status, exc.reason, close=True)
                    return
                if head is None:
                    return
                if not await self.exchange(head, reader, writer, source, started):
                    return
        except (ConnectionError, ssl.SSLError, OSError):
            pass
        finally:
            writer.close()

    def new_record(self, source: str, head: Head | None) -> dict:
        now = dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")
        return {"time": now, "request_id": pysecrets.token_hex(8), "source": source,
                "method": head.method if head else None, "route": None, "client": None, "key_version": None,
                "model": None, "status": None, "refusal": None, "stream": False, "prompt_tokens": None,
                "completion_tokens": None, "request_sha256": None, "response_sha256": None, "phi": {}}

    async def refuse(self, writer, rec: dict, started: float, status: int, reason: str, *,
                     close: bool = False, extra: list | None = None, reader=None, unread: int = 0) -> bool:
        rec["status"], rec["refusal"] = status, reason
        self.metrics.refusals[refusal_code(reason)] += 1
        body = json.dumps({"error": {"message": reason, "code": status, "request_id": rec["request_id"]}}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body))),
                   ("Cache-Control", "no-store"), ("X-Request-Id", rec["request_id"]), *(extra or [])]
        if close:
            headers.append(("Connection", "close"))
        rec["response_sha256"] = hashlib.sha256(body).hexdigest()
        if "_capture" in rec:
            rec["_capture"]["response"] = body
        self.record(rec, started)
        writer.write(response_head(status, headers) + body)
        await writer.drain()
        if close and reader is not None and 0 < unread <= DRAIN_LIMIT:
            # Read (and drop) the body the client is still sending before closing: closing
            # with unread data resets the connection, and the client may lose our answer.
            try:
                while unread > 0:
                    data = await within(reader.read(min(unread, 65536)), 5)
                    if not data:
                        break
                    unread -= len(data)
            except (TimeoutError, OSError):
                pass
        return not close

    async def exchange(self, head: Head, reader, writer, source: str, started: float) -> bool:
        """Answer one request; whether the connection may carry another."""
        rec = self.new_record(source, head)
        decision = classify(head.method, head.target)
        rec["route"] = decision.route
        unread = head.content_length > 0
        if decision.status != 200:
            return await self.refuse(writer, rec, started, decision.status, decision.reason, close=unread,
                                     reader=reader, unread=head.content_length)
        auth = head.headers.get("authorization", "")
        identity = self.keys.identify(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        if identity is None:
            return await self.refuse(writer, rec, started, 401, "a valid client API key is required",
                                     close=unread, extra=[("WWW-Authenticate", "Bearer")], reader=reader,
                                     unread=head.content_length)
        rec["client"], rec["key_version"] = identity
        policy = self.policies.get(identity[0])
        if policy is None:
            return await self.refuse(writer, rec, started, 403, "no policy for this client in the inventory",
                                     close=unread, reader=reader, unread=head.content_length)
        if policy.client_certificate:
            rec["client_cert"] = peer_common_name(writer)
            if rec["client_cert"] != policy.client_certificate:
                return await self.refuse(writer, rec, started, 403, "this client must present its certificate "
                                         "(mutual TLS)", close=unread, reader=reader, unread=head.content_length)
        if policy.record_content:
            rec["_capture"] = {"request": b"", "response": b""}
        if not self.audit.may_serve():
            return await self.refuse(writer, rec, started, 503, "audit log unavailable: refusing to serve unrecorded",
                                     close=unread, reader=reader, unread=head.content_length)
        if head.content_length > policy.max_body_bytes:
            return await self.refuse(writer, rec, started, 413, f"body larger than {policy.max_body_bytes} bytes",
                                     close=True, reader=reader, unread=head.content_length)
        try:
            raw = await within(reader.readexactly(head.content_length), BODY_SECONDS) if unread else b""
        except TimeoutError:
            return await self.refuse(writer, rec, started, 408, "request body not received in time", close=True)
        rec["request_sha256"] = hashlib.sha256(raw).hexdigest()
        if "_capture" in rec:
            rec["_capture"]["request"] = raw  # as the client sent it, before any redaction
        refused = self.limits.admit(identity[0], policy)
        if refused is not None:
            reason, retry = refused
            return await self.refuse(writer, rec, started, 429, reason, extra=[("Retry-After", str(int(retry)))])
        try:
            return await self.checked(head, raw, writer, rec, started, policy)
        finally:
            self.limits.release(identity[0])

    async def checked(self, head: Head, raw: bytes, writer, rec: dict, started: float, policy: Policy) -> bool:
        model = None
        if head.method == "POST":
            try:
                body = json.loads(raw)
            except ValueError:
                body = None
            if not isinstance(body, dict):
                return await self.refuse(writer, rec, started, 400, "the body must be a JSON object")
            model = body.get("model")
            if not isinstance(model, str):
                return await self.refuse(writer, rec, started, 400, "the body names no model")
            rec["model"] = model[:64]
            if model not in policy.models:
                return await self.refuse(writer, rec, started, 403, "model not allowed for this client")
            tokens = requested_tokens(body)
            changed = False
            if tokens is None and generates_tokens(rec["route"]):
                body["max_tokens"] = policy.max_tokens  # vLLM's default would be the whole context
                changed = True
            elif tokens is not None and tokens > policy.max_tokens:
                return await self.refuse(writer, rec, started, 400, f"max_tokens above this client's limit of {policy.max_tokens}")
            counts, redacted = phi.guard(body, policy.phi)
            rec["phi"] = counts
            for kind, n in counts.items():
                self.metrics.phi[(kind, policy.phi)] += n
            if counts and policy.phi == "block":
                return await self.refuse(writer, rec, started, 422, "protected health information in the prompt: "
                                         + ", ".join(sorted(counts)))
            rec["stream"] = body.get("stream") is True
            if changed or redacted:
                raw = json.dumps(body).encode()
        if model is not None and model not in self.pools:
            return await self.refuse(writer, rec, started, 404, "model not served here")
        pool = self.pools[model] if model is not None else next(iter(self.pools.values()), None)
        if pool is None:
            return await self.refuse(writer, rec, started, 503, "no model server configured")
        return await self.forward(head, raw, pool, writer, rec, started)

    async def forward(self, head: Head, raw: bytes, pool: Pool, writer, rec: dict, started: float) -> bool:
        headers = [("Content-Type", "application/json"), ("Accept", head.headers.get("accept", "*/*")[:200]),
                   ("X-Request-Id", rec["request_id"])]
        keys = self.upstream or [""]
        response = None
        try:
            for index, key in enumerate(keys):
                response = await pool.request(head.method, rec["route"], headers + [("Authorization", f"Bearer {key}")],
                                              raw, self.timeout)
                if response.status == 401 and index + 1 < len(keys):
                    await response.read_all(BUFFER_LIMIT, self.timeout)  # a host not yet on the new key
                    continue
                break
            if response.status >= 500 and response.status not in (502, 503, 504):
                # The model server's own failure (vLLM answers 500 while it shuts down): the
                # client gets a clean 502, and none of the server's internals.
                response.close()
                rec["upstream_status"] = response.status
                self.metrics.upstream_errors["status"] += 1
                return await self.refuse(writer, rec, started, 502, f"model server: failed ({response.status})")
            if response.length is not None and response.length <= BUFFER_LIMIT:
                # A bounded answer is read whole first: if the model server breaks off, the
                # client still gets a clean 502 instead of half a body.
                data = await response.read_all(BUFFER_LIMIT, self.timeout)
                return await self.answer(writer, rec, started, response.status, response.headers, data)
        except UpstreamError as exc:
            self.metrics.upstream_errors[exc.kind] += 1
            status = {"connect": 503, "timeout": 504}.get(exc.kind, 502)
            return await self.refuse(writer, rec, started, status, f"model server: {exc}")
        return await self.stream(writer, rec, started, response)

    def out_headers(self, rec: dict, upstream_headers: dict) -> list[tuple[str, str]]:
        return [("Content-Type", upstream_headers.get("content-type", "application/json")),
                ("Cache-Control", "no-store"), ("X-Request-Id", rec["request_id"])]

    async def answer(self, writer, rec, started, status, upstream_headers, data: bytes) -> bool:
        rec["status"] = status
        rec["response_sha256"] = hashlib.sha256(data).hexdigest()
        if "_capture" in rec:
            rec["_capture"]["response"] = data
        self.usage(rec, data)
        self.record(rec, started)
        headers = self.out_headers(rec, upstream_headers) + [("Content-Length", str(len(data)))]
        writer.write(response_head(status, headers) + data)
        await writer.drain()
        return True

    async def stream(self, writer, rec, started, response) -> bool:
        rec["status"] = response.status
        digest = hashlib.sha256()
        tail = b""
        captured = rec.get("_capture")
        writer.write(response_head(response.status, self.out_headers(rec, response.headers)
                                   + [("Transfer-Encoding", "chunked")]))
        try:
            async for piece in response.chunks(self.timeout):
                digest.update(piece)
                tail = (tail + piece)[-4096:]
                if captured is not None and len(captured["response"]) <= content.LIMIT:
                    captured["response"] += piece
                writer.write(chunk(piece))
                await writer.drain()
            writer.write(LAST_CHUNK)
            await writer.drain()
            return True
        except UpstreamError as exc:
            self.metrics.upstream_errors[exc.kind] += 1
            rec["refusal"] = f"model server broke off mid-stream: {exc}"
            self.metrics.refusals["upstream_broke_off"] += 1
            return False  # the client sees the chunked body end without its last chunk
        finally:
            rec["response_sha256"] = digest.hexdigest()
            self.usage(rec, tail)
            self.record(rec, started)

    @staticmethod
    def usage(rec: dict, data: bytes) -> None:
        found = USAGE.findall(data[-8192:])
        if found:
            rec["prompt_tokens"], rec["completion_tokens"] = int(found[-1][0]), int(found[-1][1])

    # -- the admin listener ----------------------------------------------------------

    async def admin(self, reader, writer) -> None:
        try:
            head = await read_head(reader, 10)
            if head is None:
                return
            if head.method == "GET" and head.target == "/metrics":
                body = self.metrics.render(audit_healthy=self.audit.healthy, audit_written=self.audit.written,
                                           audit_failures=self.audit.failures).encode()
                kind, status = "text/plain; version=0.0.4", 200
            elif head.method == "GET" and head.target == "/health":
                body, kind = json.dumps({"audit_log_healthy": self.audit.healthy}).encode(), "application/json"
                status = 200 if self.audit.may_serve() else 503
            else:
                body, kind, status = b'{"error": "not found"}', "application/json", 404
            writer.write(response_head(status, [("Content-Type", kind), ("Content-Length", str(len(body))),
                                                ("Connection", "close")]) + body)
            await writer.drain()
        except (HttpError, ConnectionError, OSError):
            pass
        finally:
            writer.close()


def refusal_code(reason: str) -> str:
    return next((code for prefix, code in REFUSAL_CODES if reason.startswith(prefix)), "bad_request")


def generates_tokens(route: str | None) -> bool:
    return route in ("/v1/chat/completions", "/v1/completions")


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def serve(config: dict) -> None:
    gateway = Gateway(config)
    host, port = split_address(config.get("listen", f"0.0.0.0:{GATEWAY_PORT}"))
    admin_host, admin_port = split_address(config.get("admin_listen", f"127.0.0.1:{GATEWAY_ADMIN_PORT}"))
    if admin_host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"admin_listen {admin_host}: the admin listener is bound to loopback only")
    server = await asyncio.start_server(gateway.connection, host, port, ssl=gateway.server_context(),
                                        limit=MAX_HEAD, backlog=1024, ssl_handshake_timeout=15)
    admin = await asyncio.start_server(gateway.admin, admin_host, admin_port, limit=MAX_HEAD)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, gateway.reload, "SIGHUP")
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    watcher = asyncio.create_task(gateway.watch())
    log(f"listening on {host}:{port} (TLS), metrics on {admin_host}:{admin_port}; "
        f"{len(gateway.policies)} client policy(ies), models {sorted(gateway.pools)}")
    await stop.wait()
    watcher.cancel()
    server.close()
    admin.close()
    gateway.audit.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citadel-gateway", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True, help="the gateway's JSON configuration (paths and policy)")
    args = parser.parse_args(sys.argv[1:] if argv is None else argv)
    try:
        with open(args.config, encoding="utf-8") as handle:
            config = json.load(handle)
        asyncio.run(serve(config))
    except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
        log(f"cannot start: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
