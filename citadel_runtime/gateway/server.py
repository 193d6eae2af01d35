"""The gateway service: ``python3 -m citadel_runtime.gateway.server --config /etc/citadel/gateway/gateway.json``.

One asyncio event loop serves HTTPS on ``listen`` and Prometheus metrics on ``admin_listen``
(loopback only); worker processes take the CPU-heavy part of large bodies (``offload``).

Connections are counted at accept, before TLS: over ``max_connections`` in total or
``max_connections_per_source`` from one address, they are closed at once. Every step has a
total deadline (``connections.Deadlines``): the handshake, the request head (408 once it
has started), the body, the drain of a refused body; none is per read.

For each request, in this order: the route allowlist (403/404/405), the client's key
(401), the client's policy (403), the audit log's health (503), the announced body size
(413), rate and concurrency (429); only then is the body read (408 past its deadline).
Then, on the loop for a small body and in a worker for a large one (``screen``): JSON
within a depth bound and the fields' types (400), the model (403), the output caps (400,
or clamped), the PHI guard (422 in block mode). ``GET /v1/models`` is answered here, from
the client's policy. Everything else goes to the model server, whose answer is streamed
back; a client that leaves midway has its model server connection closed at once, so the
generation stops and its concurrency slot is free.

A model may be served by several GPU hosts (``replicas``): each request goes to the healthy
one with the fewest requests outstanding, and is taken to another only when it provably
reached no model server (no connection, a failed TLS handshake, the keyguard's 503 for a
model not served there now). The record names the replica that answered (``replica``) and
the attempts taken elsewhere (``retries``: replica and reason). Replicas are health-checked
every ``health_seconds`` (``GET /v1/models`` on the keyguard, within ``health_timeout``),
when a model has more than one.

The record: exactly one ``request`` record per request whose head was read, whatever
happens (refused, malformed, timed out, failed inside the gateway (500), client gone
(499), model server gone), and a record of a head that never parsed (400/408/431) too.
No byte of an answer leaves before its record is durable (``auditlog.Writer.commit``):
refusals and whole answers are committed before they are written; a stream's request
record (status 200, ``"stream": "started"``) before its first byte, and its end, when it
comes, as a second line of type ``stream_end`` linked by ``request_id`` (``outcome``:
``completed``, ``cut by client`` or ``cut by upstream``, with bytes and timing). If the
commit fails, the client gets 503 and nothing of the answer (unless ``audit_fail_open``).
Refusals of requests without a valid key are recorded within a per-source budget
(``budget``); those over it are counted in a ``suppressed`` record every
``audit_summary_seconds``.

SIGHUP (``systemctl reload citadel-gateway``, which the Vault agent runs after rendering)
reloads the TLS certificate, the client keys and the model server key; the key files are
also watched, so a revoked client is refused within a second. A reload that fails keeps
what was in force and says why in the journal.

The configuration (JSON, written by role ``gateway``; paths and policy, never secrets;
the limits shown are the defaults)::

    {"listen": "0.0.0.0:443", "admin_listen": "127.0.0.1:9464",
     "tls": "/etc/citadel/secrets/gateway/tls.pem",
     "client_keys": "/etc/citadel/secrets/gateway/client-keys.json",
     "audit_key": "/etc/citadel/secrets/gateway/audit-hmac.json",
     "audit_log": "/var/log/citadel-gateway/audit.jsonl", "audit_fail_open": false,
     "upstreams": {"tiny": "https://10.80.0.2:8443",
                   "big": [{"name": "gpu-01", "url": "https://10.80.0.2:8443"},
                           {"name": "gpu-02", "url": "https://10.80.0.3:8443"}]},
     "health_seconds": 5, "health_timeout": 2, "upstream_ca": "/etc/citadel/pki-ca.pem",
     "upstream_key": {"kind": "keydoc", "path": "/etc/citadel/secrets/gateway/internal-api-key.json"},
     "request_timeout": 120,
     "max_connections": 1024, "max_connections_per_source": 64, "listen_backlog": 1024,
     "handshake_seconds": 10, "head_seconds": 10, "idle_seconds": 30, "body_seconds": 30, "drain_seconds": 5,
     "audit_refusals_per_second": 10, "audit_refusals_burst": 100, "audit_summary_seconds": 60,
     "workers": null, "worker_queue": 16, "inline_body_bytes": 16384,
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
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass

from citadel_runtime import sdnotify
from citadel_runtime.gateway import content
from citadel_runtime.gateway.auditlog import AuditWriteError, Writer
from citadel_runtime.gateway.budget import SourceBudget, source_key, summary_record
from citadel_runtime.gateway.clients import KeyTable, Limits, Policy
from citadel_runtime.gateway.connections import ConnectionLimits, Deadlines
from citadel_runtime.gateway.errors import where
from citadel_runtime.gateway.http1 import (
    LAST_CHUNK,
    MAX_HEAD,
    Head,
    HttpError,
    chunk,
    discard,
    read_body,
    read_head,
    response_head,
)
from citadel_runtime.gateway.metrics import Metrics
from citadel_runtime.gateway.offload import Offload
from citadel_runtime.gateway.replicas import (
    HEALTH_SECONDS,
    HEALTH_TIMEOUT,
    Replica,
    Replicas,
    ejects,
    parse_upstreams,
    probe,
    retryable,
)
from citadel_runtime.gateway.routes import classify
from citadel_runtime.gateway.screen import Screened, screen
from citadel_runtime.gateway.upstream import Pool, Response, UpstreamError
from citadel_runtime.layout import GATEWAY_ADMIN_PORT, GATEWAY_PORT
from citadel_runtime.uds import read_env_file

CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20"
BUFFER_LIMIT = 1 << 20  # answers with a Content-Length up to this are read whole first
DRAIN_LIMIT = 16 << 20  # a refused body up to this size is read and dropped before closing
SCREEN_SECONDS = 30  # the most a body may wait for, and spend in, a worker
UNRECORDED = "audit log unavailable: refusing to answer unrecorded"
GONE = "the client closed the connection before the answer"
# The refusals' reasons as metric labels: a fixed set, whatever the message's details.
REFUSAL_CODES = (
    ("path trick", "path_trick"), ("route not allowed", "route_not_allowed"), ("method not implemented", "method_not_implemented"),
    ("method ", "method_not_allowed"),
    ("a valid client", "unauthenticated"), ("this client must present", "client_certificate"), ("no policy", "no_policy"),
    ("audit log", "audit_log_unavailable"), ("body larger", "body_too_large"), ("request body not", "body_timeout"),
    ("request head not", "head_timeout"), ("rate limit", "rate_limit"), ("concurrency limit", "concurrency_limit"),
    ("model not allowed", "model_not_allowed"), ("wrong type", "wrong_type"), ("wrong value", "wrong_value"),
    ("the body", "bad_body"), ("output cap", "output_cap"), ("protected health", "phi_blocked"),
    ("model not served", "model_not_served"), ("no model server", "no_upstream"), ("model server", "upstream_error"),
    ("the gateway is busy", "busy"), ("the client closed", "client_gone"), ("internal error", "internal_error"),
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


def upstream_tls(config: dict) -> ssl.SSLContext | None:
    """The context for connections to the GPU hosts' keyguards: their certificates checked against
    Citadel's CA and, when rendered, its revocation list (a host cut off by ``citadel secrets
    revoke-host`` is refused from the next connection); the gateway's own certificate presented,
    so the keyguards can refuse a revoked gateway in turn."""
    ca = config.get("upstream_ca")
    if not ca:
        return None
    context = ssl.create_default_context(cafile=ca)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    crl = config.get("upstream_crl")
    if crl:
        context.load_verify_locations(crl)
        context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
    if config.get("upstream_client_certificate"):
        context.load_cert_chain(config["tls"])  # key and certificate rendered together
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


def now_iso() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="milliseconds")


@dataclass
class Exchange:
    """One request on its way through the gateway: its record and how far its answer got."""

    rec: dict
    started: float
    capture: dict | None = None  # request and response bodies, for a client whose content is recorded
    recorded: bool = False  # its request record was committed (or given to the budget): never twice

    @classmethod
    def begin(cls, source: str, head: Head | None, started: float) -> Exchange:
        return cls({"type": "request", "time": now_iso(), "request_id": pysecrets.token_hex(8), "source": source,
                    "method": head.method if head else None, "route": None, "client": None, "key_version": None,
                    "model": None, "status": None, "refusal": None, "stream": False, "prompt_tokens": None,
                    "completion_tokens": None, "request_sha256": None, "response_sha256": None, "phi": {}},
                   started)


class ClientProtocol(asyncio.StreamReaderProtocol):
    """A client connection's protocol: counted against the connection limits the moment it is
    accepted (over them: closed there and then, before any task or TLS), and able to tell a
    watcher (`on_lost`) the moment the connection is lost."""

    on_lost = None  # set by a ClientWatch while one is active

    def __init__(self, gateway: Gateway):
        super().__init__(asyncio.StreamReader(MAX_HEAD), gateway.accept)
        self.gateway = gateway

    def connection_made(self, transport) -> None:
        if self.gateway.admit_connection(transport):
            super().connection_made(transport)
        else:
            transport.abort()

    def connection_lost(self, exc) -> None:
        super().connection_lost(exc)
        if self.on_lost is not None:
            self.on_lost()


class ClientWatch:
    """Within ``async with``: when the client's connection closes, the block is cancelled and
    `gone` is set (the block's exception swallowed); awaits on the model server inside it end
    at once, and the model server's connection with them (upstream.py closes it)."""

    def __init__(self, writer: asyncio.StreamWriter):
        self.transport = writer.transport
        self.protocol = self.transport.get_protocol()
        self.gone = False

    async def __aenter__(self) -> ClientWatch:
        self.task = asyncio.current_task()
        if self.transport.is_closing():
            self._lost()
        else:
            self.protocol.on_lost = self._lost
        return self

    def _lost(self) -> None:
        if not self.gone:
            self.gone = True
            self.task.cancel()

    async def __aexit__(self, kind, exc, tb) -> bool:
        self.protocol.on_lost = None
        if self.gone and kind is asyncio.CancelledError:
            self.task.uncancel()
            return True
        return False


class Gateway:
    def __init__(self, config: dict):
        self.config = config
        self.timeout = float(config.get("request_timeout", 120))
        self.policies = {name: Policy.from_dict(p) for name, p in (config.get("clients") or {}).items()}
        self.metrics = Metrics()
        self.limits = Limits()
        self.deadlines = Deadlines.from_config(config)
        self.connections = ConnectionLimits(int(config.get("max_connections", 1024)),
                                            int(config.get("max_connections_per_source", 64)))
        self.budget = SourceBudget(float(config.get("audit_refusals_per_second", 10)),
                                   int(config.get("audit_refusals_burst", 100)),
                                   int(config.get("audit_budget_sources", 10_000)))
        self.summary_seconds = float(config.get("audit_summary_seconds", 60))
        self.offload = Offload(config.get("workers"), int(config.get("worker_queue", 16)),
                               int(config.get("inline_body_bytes", 16 * 1024)))
        self.journal = bool(config.get("journal", True))
        self.audit = Writer(config["audit_log"], read_audit_key(config["audit_key"]), bool(config.get("audit_fail_open")))
        client_tls = upstream_tls(config)
        self.replicas = parse_upstreams(config, client_tls)
        self.health_seconds = float(config.get("health_seconds", HEALTH_SECONDS))
        self.health_timeout = float(config.get("health_timeout", HEALTH_TIMEOUT))
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
        watched = [self.config["tls"], self.config["client_keys"], self.config["upstream_key"]["path"]]
        for path in watched + ([self.config["upstream_crl"]] if self.config.get("upstream_crl") else []):
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
            client_tls = upstream_tls(self.config)
        except (OSError, ValueError, KeyError, ssl.SSLError) as exc:
            log(f"reload ({why}) failed, keeping what is in force: {type(exc).__name__}: {exc}")
            return
        self.tls, self.keys, self.upstream = tls, keys, upstream
        for group in self.replicas.values():
            for replica in group.replicas:
                replica.pool.tls = client_tls
                replica.pool.close()  # idle connections were checked against the old CA, CRL and certificate
        log(f"reloaded ({why}): certificate, {len(keys.doc.get('clients') or {})} client(s), model server key, "
            "revocation list")

    async def watch(self) -> None:
        while True:
            await asyncio.sleep(1)
            stamps = self._stamps()
            if stamps != self.stamps:
                self.stamps = stamps
                self.reload("a key file changed")

    async def check_replicas(self) -> None:
        """Every health_seconds, each replica of each model served by several: in rotation or out."""
        checked = [(group, replica) for group in self.replicas.values() if len(group.replicas) > 1
                   for replica in group.replicas]
        while checked and self.health_seconds > 0:
            await asyncio.gather(*(self.check_replica(group, replica) for group, replica in checked))
            await asyncio.sleep(self.health_seconds)

    async def check_replica(self, group: Replicas, replica: Replica) -> None:
        try:
            problem = await probe(replica, group.model, self.upstream, self.health_timeout)
        except Exception as exc:  # noqa: BLE001 - a check that fails oddly says the replica is not well
            problem = f"health check failed: {where(exc)}"
        if problem is not None:
            self.eject(group, replica, problem)
        elif group.admit(replica):
            log(f"model {group.model} on {replica.name}: back in rotation (its health check passed)")

    def sni(self, ssl_object, server_name, context) -> None:
        ssl_object.context = self.tls  # each handshake uses the certificate in force now

    def server_context(self) -> ssl.SSLContext:
        context = tls_context(self.config["tls"], self.config.get("client_ca"))
        context.sni_callback = self.sni
        return context

    # -- the record --------------------------------------------------------------

    async def commit(self, ex: Exchange) -> bool:
        """Make the request's record durable: whether its answer may be written.

        Called once per request. A refusal of a request without a valid key that is over
        its source's budget is not written on its own (the summary counts it) but may be
        answered all the same: it carries nothing but the refusal.
        """
        rec = ex.rec
        ex.recorded = True
        if ex.capture is not None and self.content_key is not None:
            rec["content"] = content.seal(self.content_key, rec["request_id"], ex.capture["request"],
                                          ex.capture["response"])
        elapsed = time.perf_counter() - ex.started
        rec["latency_ms"] = round(elapsed * 1000, 3)
        self.metrics.request(rec.get("client"), rec.get("route"), rec["status"], elapsed)
        if rec["client"] is None and not self.budget.allow(source_key(rec["source"])):
            self.metrics.audit_suppressed += 1
            return True
        return await self.write_record(rec)

    async def write_record(self, rec: dict) -> bool:
        try:
            line = await self.audit.commit(rec)
        except AuditWriteError as exc:
            log(f"audit log write failed ({exc}): " + ("serving unrecorded (audit_fail_open)" if self.audit.fail_open
                                                      else "answers are refused until a record can be written"))
            return self.audit.fail_open
        if self.journal:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()
        return True

    async def summarise(self) -> None:
        """Every audit_summary_seconds, one record per source for its refusals over the budget."""
        while True:
            await asyncio.sleep(self.summary_seconds)
            await self.write_summaries()

    async def write_summaries(self) -> None:
        for source, count in self.budget.take_suppressed().items():
            await self.write_record({"type": "suppressed", "time": now_iso(), **summary_record(source, count)})

    # -- connections ---------------------------------------------------------------

    def admit_connection(self, transport) -> bool:
        """Count a new TCP connection against the limits (ClientProtocol); False: close it now."""
        over = self.connections.open(source_key(peer_address(transport)))
        if over is not None:
            self.metrics.connections_refused[over] += 1
            return False
        return True

    async def accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """A new TCP connection, admitted by ClientProtocol: TLS, then its requests."""
        source = peer_address(writer.transport)
        counted_as = source_key(source)
        try:
            await writer.start_tls(self.server_tls, ssl_handshake_timeout=self.deadlines.handshake)
            await self.connection(reader, writer, source)
        except (ConnectionError, OSError, ssl.SSLError, TimeoutError):
            pass
        finally:
            self.connections.close(counted_as)
            writer.close()

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, source: str) -> None:
        first = True
        while True:
            started = time.perf_counter()
            try:
                head = await read_head(reader, self.deadlines.head if first else self.deadlines.idle,
                                       self.deadlines.head)
            except HttpError as exc:
                await self.refuse(writer, Exchange.begin(source, None, started), exc.status, exc.reason, close=True)
                return
            if head is None:
                return
            first = False
            ex = Exchange.begin(source, head, started)
            try:
                keep = await self.exchange(head, reader, writer, ex)
            except (ConnectionError, OSError, ssl.SSLError):
                if not ex.recorded:  # the client went away while we answered
                    await self.settle(ex, 499, GONE)
                return
            except Exception as exc:  # noqa: BLE001 - the last resort: a 500 with a record, never a silent close
                await self.internal_error(writer, ex, exc)
                return
            if not keep or head.close:
                return

    async def settle(self, ex: Exchange, status: int, reason: str) -> None:
        """Record a request that ends without an answer (its client is gone)."""
        ex.rec["status"], ex.rec["refusal"] = status, reason
        self.metrics.refusals[refusal_code(reason)] += 1
        await self.commit(ex)

    async def internal_error(self, writer, ex: Exchange, exc: Exception) -> None:
        log(f"request {ex.rec['request_id']}: internal error: {where(exc)}")  # never its message: it may hold PHI
        if ex.recorded:  # answered or being answered: nothing more can be said on this connection
            return
        try:
            await self.refuse(writer, ex, 500, "internal error in the gateway", close=True)
        except (ConnectionError, OSError, ssl.SSLError):
            pass

    # -- answers -------------------------------------------------------------------

    async def refuse(self, writer, ex: Exchange, status: int, reason: str, *, close: bool = False,
                     extra: list | None = None, reader=None, unread: int = 0) -> bool:
        """Record, then answer, a refusal; whether the connection may carry another request."""
        rec = ex.rec
        rec["status"], rec["refusal"] = status, reason
        self.metrics.refusals[refusal_code(reason)] += 1
        body = error_body(status, reason, rec["request_id"])
        rec["response_sha256"] = hashlib.sha256(body).hexdigest()
        if ex.capture is not None:
            ex.capture["response"] = body
        if not await self.commit(ex):
            return await self.unrecorded(writer, ex)
        await send(writer, status, rec["request_id"], "application/json", body, extra, close)
        if close and reader is not None and unread:
            # Read (and drop) what the client is still sending, within a total deadline:
            # closing with unread data resets the connection, and the client may lose our answer.
            await discard(reader, unread, DRAIN_LIMIT, self.deadlines.drain)
        return not close

    async def unrecorded(self, writer, ex: Exchange) -> bool:
        """The record could not be made durable: 503, nothing of the answer, and close (fail closed)."""
        self.metrics.refusals["audit_log_unavailable"] += 1
        request_id = ex.rec["request_id"]
        await send(writer, 503, request_id, "application/json", error_body(503, UNRECORDED, request_id), close=True)
        return False

    async def answer(self, writer, ex: Exchange, status: int, kind: str, data: bytes) -> bool:
        """Record, then write, a whole answer."""
        rec = ex.rec
        rec["status"] = status
        rec["response_sha256"] = hashlib.sha256(data).hexdigest()
        if ex.capture is not None:
            ex.capture["response"] = data
        usage(rec, data)
        if not await self.commit(ex):
            return await self.unrecorded(writer, ex)
        await send(writer, status, rec["request_id"], kind, data)
        return True

    # -- one request ---------------------------------------------------------------------

    async def exchange(self, head: Head, reader, writer, ex: Exchange) -> bool:
        """Answer one request; whether the connection may carry another."""
        rec = ex.rec
        decision = classify(head.method, head.target)
        rec["route"] = decision.route
        unread = head.content_length

        async def refuse(status: int, reason: str, **kwargs) -> bool:  # the body is unread: drain it, close
            return await self.refuse(writer, ex, status, reason, close=unread > 0, reader=reader, unread=unread,
                                     **kwargs)

        if decision.status != 200:
            return await refuse(decision.status, decision.reason)
        auth = head.headers.get("authorization", "")
        identity = self.keys.identify(auth[7:].strip()) if auth[:7].lower() == "bearer " else None
        if identity is None:
            return await refuse(401, "a valid client API key is required", extra=[("WWW-Authenticate", "Bearer")])
        client = identity[0]
        rec["client"], rec["key_version"] = identity
        policy = self.policies.get(client)
        if policy is None:
            return await refuse(403, "no policy for this client in the inventory")
        if policy.client_certificate:
            rec["client_cert"] = peer_common_name(writer)
            if rec["client_cert"] != policy.client_certificate:
                return await refuse(403, "this client must present its certificate (mutual TLS)")
        if policy.record_content:
            ex.capture = {"request": b"", "response": b""}
        if not self.audit.may_serve():
            # This refusal's own record, once it can be written, puts the gateway back in service.
            return await refuse(503, "audit log unavailable: refusing to serve unrecorded", extra=[("Retry-After", "1")])
        if unread > policy.max_body_bytes:
            return await refuse(413, f"body larger than {policy.max_body_bytes} bytes")
        refused = self.limits.admit(client, policy)
        if refused is not None:  # before the body is read: a client at its limit costs no more than a head
            reason, retry = refused
            return await refuse(429, reason, extra=[("Retry-After", str(int(retry)))])
        try:
            return await self.admitted(head, reader, writer, ex, policy)
        finally:
            self.limits.release(client)

    async def admitted(self, head: Head, reader, writer, ex: Exchange, policy: Policy) -> bool:
        rec = ex.rec
        try:
            raw = await read_body(reader, head.content_length, self.deadlines.body) if head.content_length else b""
        except HttpError as exc:
            return await self.refuse(writer, ex, exc.status, exc.reason, close=True)
        if ex.capture is not None:
            ex.capture["request"] = raw  # as the client sent it, before any redaction
        if rec["route"] == "/v1/models":
            return await self.models(writer, ex, policy)
        try:
            async with asyncio.timeout(SCREEN_SECONDS):
                screened = await self.offload.run(len(raw), screen, rec["route"], raw, policy)
        except (TimeoutError, BrokenProcessPool):
            return await self.refuse(writer, ex, 503, "the gateway is busy: try again", extra=[("Retry-After", "1")])
        self.note_screening(rec, screened, policy)
        if screened.status != 200:
            return await self.refuse(writer, ex, screened.status, screened.reason)
        group = self.replicas.get(screened.model)
        if group is None:
            return await self.refuse(writer, ex, 404, "model not served here")
        return await self.forward(head, screened.body or raw, group, writer, ex)

    def note_screening(self, rec: dict, screened: Screened, policy: Policy) -> None:
        rec["request_sha256"] = screened.sha256
        rec["model"] = screened.model
        rec["phi"] = screened.phi
        for kind, n in screened.phi.items():
            self.metrics.phi[(kind, policy.phi)] += n
        if screened.output_tokens is not None:
            rec["output_tokens_cap"] = screened.output_tokens
        if screened.clamped:
            rec["clamped"] = screened.clamped  # the output fields lowered to the client's caps
        if screened.body_sha256 is not None:
            rec["forwarded_sha256"] = screened.body_sha256  # the body as changed (redacted, capped) and forwarded

    async def models(self, writer, ex: Exchange, policy: Policy) -> bool:
        """``GET /v1/models``: the models this client may use and this gateway serves."""
        listed = [{"id": model, "object": "model", "owned_by": "citadel"} for model in policy.models
                  if model in self.replicas]
        return await self.answer(writer, ex, 200, "application/json",
                                 json.dumps({"object": "list", "data": listed}).encode())

    # -- the model server ------------------------------------------------------------------

    async def forward(self, head: Head, raw: bytes, group: Replicas, writer, ex: Exchange) -> bool:
        """Send the request to one of the model's replicas and relay its answer."""
        rec = ex.rec
        headers = [("Content-Type", "application/json"), ("Accept", head.headers.get("accept", "*/*")[:200]),
                   ("X-Request-Id", rec["request_id"])]
        replica = response = data = None
        try:
            async with ClientWatch(writer) as watch:
                replica, response, data = await self.reach(group, head.method, headers, raw, rec)
        except UpstreamError as exc:
            self.metrics.upstream_errors[exc.kind] += 1
            # 503: the request reached no model server (try again); once it may have, 502 (or 504).
            status = 503 if exc.unsent else {"timeout": 504}.get(exc.kind, 502)
            return await self.refuse(writer, ex, status, f"model server: {exc}")
        try:
            return await self.relay(writer, ex, response, data, watch.gone)
        finally:
            if replica is not None:
                replica.outstanding -= 1

    async def reach(self, group: Replicas, method: str, headers: list, raw: bytes,
                    rec: dict) -> tuple[Replica, Response, bytes | None]:
        """The first answer a replica gives, trying the next only while the request provably reached
        no model server (``replicas.retryable``). The replica returned counts this request among
        its outstanding ones until the caller is done with the answer."""
        tried: set[Replica] = set()
        while True:
            replica = group.choose(tried)
            tried.add(replica)
            rec["replica"] = replica.name
            self.metrics.replica_requests[(group.model, replica.name)] += 1
            replica.outstanding += 1
            error = response = data = None
            try:
                response, data = await self.ask(replica.pool, method, rec["route"], headers, raw)
            except UpstreamError as exc:
                error = exc
            except BaseException:
                replica.outstanding -= 1  # the client went away (cancelled), or worse
                raise
            status = None if response is None else response.status
            if ejects(error, status):
                self.eject(group, replica, error.reason if error else f"answered {status}")
            elif error is None and group.admit(replica):  # tried while out (every replica was): it answers
                log(f"model {group.model} on {replica.name}: back in rotation (it answered)")
            why = retryable(error, status, data)
            if why is None or len(tried) == len(group.replicas):
                if error is not None:
                    replica.outstanding -= 1
                    raise error
                return replica, response, data
            replica.outstanding -= 1
            rec.setdefault("retries", []).append({"replica": replica.name, "reason": why})
            self.metrics.failovers[(group.model, replica.name, why)] += 1

    def eject(self, group: Replicas, replica: Replica, reason: str) -> None:
        if group.eject(replica, reason):
            self.metrics.ejections[(group.model, replica.name)] += 1
            log(f"model {group.model} on {replica.name}: out of rotation ({reason})")

    async def relay(self, writer, ex: Exchange, response: Response, data: bytes | None, gone: bool) -> bool:
        """The model server's answer to the client (whole, or as a stream), with its record."""
        rec = ex.rec
        if gone:
            if response is not None:
                response.close()
            await self.settle(ex, 499, GONE)
            return False
        if response.status >= 500 and response.status not in (502, 503, 504):
            # The model server's own failure (vLLM answers 500 while it shuts down): the
            # client gets a clean 502, and none of the server's internals.
            response.close()
            rec["upstream_status"] = response.status
            self.metrics.upstream_errors["status"] += 1
            return await self.refuse(writer, ex, 502, f"model server: failed ({response.status})")
        if data is not None:
            return await self.answer(writer, ex, response.status,
                                     response.headers.get("content-type", "application/json"), data)
        return await self.stream(writer, ex, response)

    async def ask(self, pool: Pool, method: str, route: str, headers: list, raw: bytes) -> tuple[Response, bytes | None]:
        """The model server's response, with its body when it is bounded (read whole, so that if
        the model server breaks off the client still gets a clean 502 instead of half a body)."""
        keys = self.upstream or [""]
        for index, key in enumerate(keys):
            response = await pool.request(method, route, headers + [("Authorization", f"Bearer {key}")], raw,
                                          self.timeout)
            if response.status == 401 and index + 1 < len(keys):
                await response.read_all(BUFFER_LIMIT, self.timeout)  # a host not yet on the new key
                continue
            break
        if response.status >= 500 and response.status not in (502, 503, 504):
            return response, None  # the model server's own failure: forward() answers 502 without its body
        # Read whole: a bounded body, and any answer that is not a success, whatever its framing
        # (an error is small, and relayed as a stream it would be recorded as one); only a
        # success of unknown length (a stream) is relayed as it comes.
        if response.status != 200 or (response.length is not None and response.length <= BUFFER_LIMIT):
            return response, await response.read_all(BUFFER_LIMIT, self.timeout)
        return response, None

    async def stream(self, writer, ex: Exchange, response: Response) -> bool:
        """Relay a streamed answer: its request record first, then the bytes, then its end record."""
        rec = ex.rec
        rec["status"], rec["stream"] = response.status, "started"
        if not await self.commit(ex):
            response.close()
            return await self.unrecorded(writer, ex)
        started = time.perf_counter()
        digest, tail, size = hashlib.sha256(), b"", 0
        outcome, detail = "completed", None
        headers = [("Content-Type", response.headers.get("content-type", "application/json")),
                   ("Cache-Control", "no-store"), ("X-Request-Id", rec["request_id"]), ("Transfer-Encoding", "chunked")]
        try:
            async with ClientWatch(writer) as watch:
                writer.write(response_head(response.status, headers))
                async for piece in response.chunks(self.timeout):
                    digest.update(piece)
                    size += len(piece)
                    tail = (tail + piece)[-4096:]
                    if ex.capture is not None and len(ex.capture["response"]) <= content.LIMIT:
                        ex.capture["response"] += piece
                    writer.write(chunk(piece))
                    await writer.drain()
                writer.write(LAST_CHUNK)
                await writer.drain()
        except UpstreamError as exc:
            self.metrics.upstream_errors[exc.kind] += 1
            outcome, detail = "cut by upstream", str(exc)  # the client sees the body end without its last chunk
        except (ConnectionError, OSError, ssl.SSLError) as exc:
            outcome, detail = "cut by client", type(exc).__name__
        if watch.gone:
            outcome = "cut by client"
        if outcome != "completed":
            response.close()
        self.metrics.streams[outcome] += 1
        end = {"type": "stream_end", "time": now_iso(), "request_id": rec["request_id"], "client": rec["client"],
               "source": rec["source"], "model": rec["model"], "replica": rec.get("replica"), "outcome": outcome, "detail": detail, "bytes": size,
               "first_byte_ms": rec["latency_ms"], "duration_ms": round((time.perf_counter() - started) * 1000, 3),
               "response_sha256": digest.hexdigest(), "prompt_tokens": None, "completion_tokens": None}
        usage(end, tail)
        if ex.capture is not None and self.content_key is not None:  # the request went into the first record
            end["content"] = content.seal(self.content_key, rec["request_id"], b"", ex.capture["response"])
        await self.write_record(end)
        return outcome == "completed"

    # -- the admin listener ----------------------------------------------------------

    async def admin(self, reader, writer) -> None:
        try:
            head = await read_head(reader, 10)
            if head is None:
                return
            if head.method == "GET" and head.target == "/metrics":
                body = self.metrics.render(audit_healthy=self.audit.healthy, audit_written=self.audit.written,
                                           audit_failures=self.audit.failures,
                                           connections_open=self.connections.count,
                                           offloaded=self.offload.offloaded,
                                           replicas=tuple((group.model, r.name, r.healthy, r.outstanding)
                                                          for group in self.replicas.values()
                                                          for r in group.replicas)).encode()
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


def peer_address(transport) -> str:
    peer = transport.get_extra_info("peername")
    return peer[0] if peer else "-"


async def send(writer, status: int, request_id: str, kind: str, body: bytes, extra: list | None = None,
               close: bool = False) -> None:
    """Write a whole answer (head and body, in one write)."""
    headers = [("Content-Type", kind), ("Content-Length", str(len(body))), ("Cache-Control", "no-store"),
               ("X-Request-Id", request_id), *(extra or []), *((("Connection", "close"),) if close else ())]
    writer.write(response_head(status, headers) + body)
    await writer.drain()


def error_body(status: int, reason: str, request_id: str) -> bytes:
    return json.dumps({"error": {"message": reason, "code": status, "request_id": request_id}}).encode()


def usage(rec: dict, data: bytes) -> None:
    """The token counts the model server reported at the end of its answer, into the record."""
    found = USAGE.findall(data[-8192:])
    if found:
        rec["prompt_tokens"], rec["completion_tokens"] = int(found[-1][0]), int(found[-1][1])


def refusal_code(reason: str) -> str:
    return next((code for prefix, code in REFUSAL_CODES if reason.startswith(prefix)), "bad_request")


def split_address(text: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":")
    return host.strip("[]"), int(port)


async def serve(config: dict) -> None:
    gateway = Gateway(config)
    host, port = split_address(config.get("listen", f"0.0.0.0:{GATEWAY_PORT}"))
    admin_host, admin_port = split_address(config.get("admin_listen", f"127.0.0.1:{GATEWAY_ADMIN_PORT}"))
    if admin_host not in ("127.0.0.1", "::1", "localhost"):
        raise ValueError(f"admin_listen {admin_host}: the admin listener is bound to loopback only")
    await gateway.offload.start()
    gateway.server_tls = gateway.server_context()
    # Plain TCP first: each connection is counted before its TLS handshake (Gateway.accept).
    loop = asyncio.get_running_loop()
    # The backlog is also how many connections asyncio accepts at once (each closed at once if
    # over a limit): max_connections + listen_backlog must stay well under the unit's LimitNOFILE.
    server = await loop.create_server(lambda: ClientProtocol(gateway), host, port,
                                      backlog=int(config.get("listen_backlog", 1024)))
    admin = await asyncio.start_server(gateway.admin, admin_host, admin_port, limit=MAX_HEAD)
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, gateway.reload, "SIGHUP")
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    sdnotify.ready()  # only now may systemd send a reload (SIGHUP): its handler is set
    tasks = [asyncio.create_task(gateway.watch()), asyncio.create_task(gateway.summarise()),
             asyncio.create_task(gateway.check_replicas())]
    log(f"listening on {host}:{port} (TLS), metrics on {admin_host}:{admin_port}; "
        f"{len(gateway.policies)} client policy(ies), models {sorted(gateway.replicas)}; "
        f"{gateway.offload.workers} worker process(es) for bodies from {gateway.offload.inline_below} bytes")
    await stop.wait()
    for task in tasks:
        task.cancel()
    server.close()
    admin.close()
    await gateway.write_summaries()  # what the budget counted since the last summary
    await gateway.audit.aclose()
    gateway.offload.close()


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
