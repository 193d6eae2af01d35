"""The keyguard: the model server's only door on a GPU host.

It terminates TLS with the host's certificate and accepts a request only with the
gateway's internal API key (``Authorization: Bearer ...``), checked against the key
document the Vault agent renders (hashes only: the host never holds the key itself).
Accepted requests go to the model server: vLLM's Unix socket for the model the request's
body names (``/run/citadel-vllm/MODEL/vllm.sock``), with vLLM's own API key, read from the
agent's ``vllm.env``, in place of the gateway's. Only the gateway's routes pass
(``gateway.routes``). ``GET /v1/models`` is answered here, from the models this host
serves (the sockets present), never forwarded to one of them; ``GET /citadel/whoami`` is
answered here too (which key version matched), for checks and tests.

It is an asyncio server on the gateway's own HTTP/1.1 code (``gateway.http1``: one parser
to review) with the gateway's bounds: connections are capped in total and per source
(counted from accept, before the TLS handshake); the handshake and then each request's
head must arrive within a total deadline; a body is read only once its key is checked,
whole within a deadline and at most `MAX_BODY`; a refused request's body is drained
within a bound and a deadline and the connection closed, so its bytes are never read as
a request. Answers pass as they come (Content-Length passed through, streams re-chunked);
a client that goes away mid-answer closes the model server's connection with it.

On SIGHUP (the agent's template command, ``systemctl reload citadel-keyguard``) it reloads
the certificate and the key document. A reload that fails keeps the previous ones and
says why in the journal, so a half-written file never takes the door down. With
``--client-ca`` (mutual TLS: only a gateway host's certificate, OU ``gateway``) and ``--crl``,
the reload also takes the agent's new revocation list: a revoked gateway's next connection
fails its handshake, and a connection opened before the reload answers at most the request
under way; one that arrives after gets a 421, and the gateway asks again on a new connection.

Draining (``citadel_runtime.drain``). On SIGTERM (systemd stopping or restarting it) it tells
systemd STOPPING=1, closes its listener (new connections go to another replica), answers any
new request on an open connection with a 503 saying "draining" and ``Connection: close`` (the
gateway asks another replica), lets the requests under way finish for at most
``--drain-seconds`` (under the unit's TimeoutStopSec=), then exits. A model whose server is
about to stop has a marker in ``--state-dir``'s ``draining/``: that model's new requests get
the same 503, it is left out of ``GET /v1/models``, and the requests in flight for it are
reported in ``inflight.json`` until none is left.

Threats: inference attacks and privacy breaches through direct access to the model server
(only the gateway holds the key); insecure deployment (no plaintext on the wire); denial
of service by connections or bodies held open.

Example (as its systemd unit runs it; paths, never secrets, on the command line)::

    python3 -m citadel_runtime.keyguard --listen 0.0.0.0:8443 \\
        --tls /etc/citadel/secrets/keyguard/tls.pem \\
        --keys /etc/citadel/secrets/keyguard/internal-api-key.json \\
        --upstream 'unix:/run/citadel-vllm/{model}/vllm.sock' \\
        --upstream-key /etc/citadel/secrets/keyguard/vllm.env \\
        --client-ca /etc/citadel/pki-ca.pem --crl /etc/citadel/secrets/keyguard/crl.pem \\
        --drain-seconds 60 --state-dir /run/citadel-keyguard
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import glob
import json
import os
import resource
import signal
import ssl
import sys
import time
from collections import Counter

from citadel_runtime import drain, sdnotify
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
    within,
)
from citadel_runtime.gateway.routes import classify
from citadel_runtime.gateway.upstream import Address, Pool, UpstreamError
from citadel_runtime.keydoc import match
from citadel_runtime.layout import KEYGUARD_PORT
from citadel_runtime.uds import MODEL_NAME, read_env_file
from citadel_runtime.upstream_key import UpstreamKeys

DEADLINES = Deadlines()  # the gateway's: handshake, head, idle, body and drain, each a total
WRITE_SECONDS = 60  # a client that stops reading an answer is cut off after this
UPSTREAM_SECONDS = 600  # the model server's first byte, then each next one (long prompts, slow streams)
MAX_BODY = 64 << 20  # inventory.schema's largest max_body_bytes: the gateway has applied the client's own
LARGE_BODY = 1 << 20  # a body from this size on is parsed in a thread, off the event loop
DRAIN_LIMIT = 64 << 10  # a refused body up to this is read and dropped (within DEADLINES.drain) before closing
MAX_CONNECTIONS = 1024
MAX_PER_SOURCE = 256  # the gateway's pooled and in-flight connections fit well within this
RESERVED_DESCRIPTORS = 64  # listeners, files, the journal and a margin
# Not passed on in either direction: this connection's own (and the keys, framing and Expect, set here).
HOP_BY_HOP = {"connection", "keep-alive", "proxy-authenticate", "proxy-authorization", "te", "trailers",
              "transfer-encoding", "upgrade", "authorization", "host", "content-length", "expect"}
WHOAMI = "/citadel/whoami"


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


class Secrets:
    """The TLS context and key document in force; swapped whole on reload."""

    def __init__(self, tls_file: str, keys_file: str, upstream_key_file: str | None = None,
                 client_ca: str | None = None, crl: str | None = None):
        self.tls_file = tls_file
        self.keys_file = keys_file
        self.upstream_key_file = upstream_key_file
        self.client_ca, self.crl = client_ca, crl
        self.generation = 0  # raised at each reload: connections opened before it close after their request
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
        if self.client_ca:
            # Mutual TLS: only a gateway host's certificate from Citadel's CA, not revoked (the CRL
            # the agent renders), gets as far as the internal key check.
            context.verify_mode = ssl.CERT_REQUIRED
            context.load_verify_locations(self.client_ca)
            if self.crl:
                context.load_verify_locations(self.crl)
                context.verify_flags |= ssl.VERIFY_CRL_CHECK_LEAF
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
        self.context, self.keys, self.upstream_key = context, keys, self._upstream_key()
        self.generation += 1
        versions = [s.get("version") for s in (keys.get("current"), keys.get("previous")) if s]
        log(f"reloaded the certificate and keys (key versions {versions})")

    def key_slot(self, head: Head) -> dict | None:
        """The key document's slot the request's bearer key matches, or None."""
        header = head.headers.get("authorization", "")
        if header[:7].lower() != "bearer ":
            return None
        return match(self.keys, header[7:].strip(), dt.datetime.now(dt.UTC))


def connection_limits(total: int = MAX_CONNECTIONS, per_source: int = MAX_PER_SOURCE) -> ConnectionLimits:
    """The caps, within what the descriptor limit allows (raised to its hard limit first): each
    forwarded connection holds two descriptors, and no one source may take all of them."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft != hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    if soft != resource.RLIM_INFINITY:
        total = max(2, min(total, (soft - RESERVED_DESCRIPTORS) // 2))
    return ConnectionLimits(total, max(1, min(per_source, total // 2)))


class Upstream:
    """The model server: one vLLM per model behind `unix:...{model}...`, or one HOST:PORT on loopback."""

    def __init__(self, spec: str):
        self.template = spec[len("unix:"):] if spec.startswith("unix:") else None
        self.address = None if self.template else Address.parse(f"http://{spec}")
        self.pools: dict[str, Pool] = {}

    def served(self) -> list[str]:
        """The models whose sockets are present (vLLM creates its socket once it serves)."""
        if self.template is None:
            return []
        prefix, _, suffix = self.template.partition("{model}")
        names = (path[len(prefix):len(path) - len(suffix)] for path in glob.glob(self.template.format(model="*")))
        return sorted(name for name in names if MODEL_NAME.fullmatch(name))

    def pool(self, model: str) -> Pool | None:
        """The connections to `model`'s server, or None when this host does not serve it."""
        if self.template is None:
            address = self.address
        else:
            path = self.template.format(model=model)
            if not os.path.exists(path):
                return None
            address = Address("unix", path=path)
        key = address.path or f"{address.host}:{address.port}"
        if key not in self.pools:
            self.pools[key] = Pool(address)
        return self.pools[key]


def requested_model(body: bytes | None) -> str | None:
    """The "model" of a JSON request body, when it is a plausible model name."""
    if not body or len(body) > MAX_BODY:
        return None
    try:
        model = json.loads(body).get("model")
    except (ValueError, AttributeError, RecursionError):
        return None
    return model if isinstance(model, str) and MODEL_NAME.fullmatch(model) else None


def models_list(models: list[str]) -> dict:
    """GET /v1/models as OpenAI's API answers it, for the models this host serves."""
    return {"object": "list", "data": [{"id": m, "object": "model", "owned_by": "citadel"} for m in models]}


GATEWAY_UNIT = "gateway"  # the OU of gateway hosts' certificates (the PKI role `gateway`)


def peer_unit(writer) -> str | None:
    """The organisational unit of the client's verified certificate, if it presented one."""
    for rdn in (writer.get_extra_info("peercert") or {}).get("subject", ()):
        for name, value in rdn:
            if name == "organizationalUnitName":
                return value
    return None


DRAINING = "draining"  # in every drain refusal: the gateway's sign that no model server was asked (replicas.UNSERVED)


class Keyguard:
    def __init__(self, secrets: Secrets, upstream: Upstream, limits: ConnectionLimits, state_dir: str | None = None):
        self.secrets, self.upstream, self.limits = secrets, upstream, limits
        self.refused: dict[str, int] = {}  # connections over a cap, by which, since the journal was last told
        self.refusals_logged = 0.0
        self.state_dir = state_dir  # where models' drain markers appear and the in-flight report goes
        self.stopping = False  # SIGTERM: every new request is refused, those under way finish
        self.active = 0  # requests read and not yet answered in full
        self.inflight: Counter = Counter()  # model: requests forwarded to its server, answer not yet complete
        self.draining: dict[str, str] = {}  # model: its marker's nonce
        self.reported: dict | None = None
        self.upstream_keys = UpstreamKeys()  # vLLM's key in force and, during a rotation, the one before

    async def connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        peer = writer.get_extra_info("peername")
        source = peer[0] if peer else "-"
        over = self.limits.open(source)
        if over is not None:
            writer.transport.abort()  # over a cap: its descriptor is freed at once
            self.note_refusal(over)
            return
        try:
            # Taken with the context, before the handshake: a reload while it runs (a new CRL) is
            # one this connection's client certificate was not checked against.
            generation = self.secrets.generation
            try:
                # TLS after accept, so the caps above count handshakes too; the context in force now.
                await writer.start_tls(self.secrets.context, ssl_handshake_timeout=DEADLINES.handshake)
            except (OSError, ssl.SSLError, TimeoutError) as exc:
                log(f"{source}: TLS handshake failed: {type(exc).__name__}: {exc}"[:300])
                return
            if self.secrets.client_ca and peer_unit(writer) != GATEWAY_UNIT:
                log(f"{source}: refused: its certificate is not a gateway host's (OU {peer_unit(writer)!r})")
                return
            idle = DEADLINES.head  # the first request comes at once, as the handshake did
            # After a reload (a new CRL, say) an open connection ends after its request: the
            # client's next one is checked against what is in force now.
            while await self.request(reader, writer, source, idle, generation) and generation == self.secrets.generation:
                idle = DEADLINES.idle
        except (OSError, ssl.SSLError, TimeoutError):
            pass  # the client went away or stopped reading
        finally:
            self.limits.close(source)
            writer.close()

    def note_refusal(self, over: str) -> None:
        self.refused[over] = self.refused.get(over, 0) + 1
        now = time.monotonic()
        if now - self.refusals_logged >= 10:  # a flood of refused connections: one journal line per 10 s
            log(f"refused connections over the caps of {self.limits.total} in total and {self.limits.per_source} "
                f"per source: {self.refused}")
            self.refused, self.refusals_logged = {}, now

    async def request(self, reader, writer, source: str, idle: float, generation: int) -> bool:
        """Read and answer one request; whether the connection may carry another.

        `generation`: the reload the connection's client certificate was checked under. A request
        that arrives after a later reload (on a kept-alive connection, idle meanwhile, or on a
        new one whose handshake the reload overtook) is refused with a 421: its client, the
        gateway, asks again on a new connection, checked against the CRL in force, so a
        revoked gateway gets no further answer.
        """
        try:
            head = await read_head(reader, idle, DEADLINES.head)
        except HttpError as exc:
            await self.reply(writer, exc.status, exc.reason, close=True)
            log(f"{source} - - {exc.status} ({exc.reason})")
            return False
        if head is None:
            return False
        self.active += 1
        try:
            return await self.answer(head, reader, writer, source, generation)
        finally:
            self.active -= 1

    async def answer(self, head: Head, reader, writer, source: str, generation: int) -> bool:
        if self.stopping:
            await discard(reader, head.content_length, DRAIN_LIMIT, DEADLINES.drain)  # read, so the answer is not reset away
            await self.reply(writer, 503, f"the keyguard is {DRAINING} before it stops; ask another replica",
                             close=True, extra=[("Retry-After", "5")])
            log(f"{source} {head.method} {head.target.partition('?')[0][:200]} 503 ({DRAINING}: stopping)")
            return False
        if self.secrets.client_ca and generation != self.secrets.generation:
            # 421: "the client MAY retry the request over a different connection" (RFC 9110
            # 15.5.20), which the gateway does, once. Never a silent close: a fresh connection
            # whose handshake a reload overtook would otherwise fail its request for nothing.
            await discard(reader, head.content_length, DRAIN_LIMIT, DEADLINES.drain)  # read, so the answer is not reset away
            await self.reply(writer, 421, "the keyguard reloaded its certificates and revocation list after this "
                             "connection was opened; ask again on a new connection", close=True)
            log(f"{source} {head.method} {head.target.partition('?')[0][:200]} 421 (opened before the last reload; "
                "its client asks again on a new connection, checked against the revocation list in force)")
            return False
        slot = self.secrets.key_slot(head)
        try:
            status = await self.exchange(head, slot, reader, writer)
        except (OSError, TimeoutError):
            status = -499  # the client went away, or stopped reading, before its answer was complete
        except Exception as exc:  # noqa: BLE001 - the last resort: a 500 and a journal line, never a silent close
            log(f"internal error: {where(exc)}")  # never its message: it may hold a request's values
            status = await self.reply(writer, 500, "internal error", close=True)
        path = head.target.partition("?")[0][:200]
        log(f"{source} {head.method} {path} {abs(status)} key_version={slot.get('version') if slot else None}")
        return status > 0 and not head.close

    async def exchange(self, head: Head, slot: dict | None, reader, writer) -> int:
        """The answer's status; negative when the connection must close after it."""
        if slot is None:
            await self.reply(writer, 401, "a valid internal API key is required", close=True,
                             extra=[("WWW-Authenticate", "Bearer")])
            await discard(reader, head.content_length, DRAIN_LIMIT, DEADLINES.drain)  # never read as a request
            return -401
        if head.content_length > MAX_BODY:
            await self.reply(writer, 413, f"body larger than {MAX_BODY} bytes", close=True)
            return -413
        try:
            body = await read_body(reader, head.content_length, DEADLINES.body)
        except HttpError as exc:
            await self.reply(writer, exc.status, exc.reason, close=True)
            return -exc.status
        close = head.close
        if head.target == WHOAMI and head.method == "GET":
            return await self.reply(writer, 200, {"key_version": slot.get("version")}, close=close)
        decision = classify(head.method, head.target)
        if decision.status != 200:
            return await self.reply(writer, decision.status, decision.reason, close=close)
        if decision.route == "/v1/models":  # a draining model is not offered: health checks take it out of rotation
            served = [m for m in self.upstream.served() if m not in self.draining]
            return await self.reply(writer, 200, models_list(served), close=close)
        # A large body is parsed off the event loop, so the other connections are not held up.
        model = requested_model(body) if len(body) < LARGE_BODY else await asyncio.to_thread(requested_model, body)
        if model is None:
            return await self.reply(writer, 400, "the body must be a JSON object naming a model", close=close)
        if model in self.draining:
            return await self.reply(writer, 503, f"model {model} is {DRAINING} on this host (its server is about to "
                                    "restart); ask another replica", close=close, extra=[("Retry-After", "5")])
        pool = self.upstream.pool(model)
        if pool is None:
            # Its socket is absent: vLLM is stopped or (re)starting. Temporary, as the gateway and its
            # clients should read it (the baseline's 503), not a 404 that says the model does not exist.
            return await self.reply(writer, 503, f"model {model} is not being served on this host now", close=close,
                                    extra=[("Retry-After", "5")])
        # Counted from here, with no await since the marker check: once the drain helper sees its
        # marker acknowledged, every request for the model not refused is in this count.
        self.inflight[model] += 1
        try:
            return await self.forward(head, body, pool, writer)
        finally:
            self.inflight[model] -= 1
            if not self.inflight[model]:
                del self.inflight[model]

    async def forward(self, head: Head, body: bytes, pool: Pool, writer) -> int:
        headers = [(name, value) for name, value in head.headers.items() if name not in HOP_BY_HOP]
        try:
            # The key vLLM accepts: during a rotation of vllm-api-key, the old one until its server restarted.
            response = await self.upstream_keys.request(pool, self.secrets.upstream_key, head.method, head.target,
                                                        headers, body, UPSTREAM_SECONDS)
        except UpstreamError as exc:
            status = {"connect": 503, "timeout": 504}.get(exc.kind, 502)
            return await self.reply(writer, status, f"the model server is not answering ({exc.kind})", close=True)
        out = [(name, value) for name, value in response.headers.items() if name not in HOP_BY_HOP]
        out.append(("Content-Length", str(response.length)) if response.length is not None
                   else ("Transfer-Encoding", "chunked"))  # streams (server-sent events) pass as they come
        if head.close:
            out.append(("Connection", "close"))
        writer.write(response_head(response.status, out))
        try:
            async for piece in response.chunks(UPSTREAM_SECONDS):
                writer.write(piece if response.length is not None else chunk(piece))
                await within(writer.drain(), WRITE_SECONDS)
            if response.length is None:
                writer.write(LAST_CHUNK)
                await within(writer.drain(), WRITE_SECONDS)
        except UpstreamError as exc:
            log(f"the model server broke off its answer: {exc}")
            return -response.status  # the client sees the answer end short, then the connection close
        finally:
            if not response.done:
                response.close()  # the client went away: vLLM sees its connection close and stops generating
        return response.status

    def watch_markers(self) -> None:
        """Take the models' drain markers as they are now, and report what is in flight for them."""
        self.draining = drain.markers(self.state_dir)
        report = {"pid": os.getpid(), "draining": self.draining,
                  "inflight": {model: self.inflight.get(model, 0) for model in self.draining}}
        if report != self.reported:
            for model in self.draining.keys() - (self.reported or {}).get("draining", {}).keys():
                log(f"model {model}: {DRAINING} (its server is about to stop); its new requests get 503")
            drain.write_report(self.state_dir, report)
            self.reported = report

    async def watch(self) -> None:
        while True:
            try:
                self.watch_markers()
            except OSError as exc:  # a full or read-only runtime directory: say so, keep serving
                log(f"drain markers: {type(exc).__name__}: {exc}"[:300])
            await asyncio.sleep(drain.POLL_SECONDS)

    async def stop_gracefully(self, server: asyncio.AbstractServer, seconds: float) -> None:
        """Stop taking requests and let those under way finish, for at most `seconds`."""
        sdnotify.stopping()
        server.close()  # new connections are refused now: the gateway takes them elsewhere
        self.stopping = True
        log(f"{DRAINING}: no new connection or request; {self.active} under way, waiting at most {seconds:g} s")
        end = time.monotonic() + seconds
        while self.active and time.monotonic() < end:
            await asyncio.sleep(0.05)
        if self.active:
            log(f"{DRAINING}: stopping with {self.active} requests still under way after {seconds:g} s")
        else:
            log(f"{DRAINING}: done, every request under way was answered")

    async def reply(self, writer, status: int, payload: str | dict, *, close: bool, extra=()) -> int:
        """Answer with JSON (a string is an error message); the status, negative when closing."""
        data = json.dumps({"error": payload} if isinstance(payload, str) else payload).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(data))), *extra]
        if close:
            headers.append(("Connection", "close"))
        writer.write(response_head(status, headers) + data)
        await within(writer.drain(), WRITE_SECONDS)
        return -status if close else status


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="citadel-keyguard", description=__doc__.split("\n\n")[0])
    parser.add_argument("--listen", default=f"0.0.0.0:{KEYGUARD_PORT}", help="address:port to serve TLS on")
    parser.add_argument("--tls", required=True, help="PEM file with the private key and certificate chain")
    parser.add_argument("--keys", required=True, help="the internal API key document (hashes)")
    parser.add_argument("--upstream", default="unix:/run/citadel-vllm/{model}/vllm.sock",
                        help="the model server: unix:PATH ({model}: the request's model) or HOST:PORT on loopback")
    parser.add_argument("--upstream-key", help="environment file with VLLM_API_KEY, the model server's key")
    parser.add_argument("--client-ca", help="require a gateway host's certificate from this CA (mutual TLS)")
    parser.add_argument("--crl", help="with --client-ca: the CA's revocation list (revoked gateways are refused)")
    parser.add_argument("--drain-seconds", type=float, default=drain.KEYGUARD_DRAIN_SECONDS,
                        help="on SIGTERM, let requests under way finish for at most this long, refusing new ones "
                             f"(default {drain.KEYGUARD_DRAIN_SECONDS}; keep it under the unit's TimeoutStopSec=)")
    parser.add_argument("--state-dir", help="runtime directory for models' drain markers (draining/MODEL) and the "
                                            "in-flight report (citadel_runtime.drain); none: no model drains")
    return parser.parse_args(argv)


async def serve(args: argparse.Namespace, secrets: Secrets) -> None:
    host, _, port = args.listen.rpartition(":")
    keyguard = Keyguard(secrets, Upstream(args.upstream), connection_limits(), args.state_dir)
    server = await asyncio.start_server(keyguard.connection, host.strip("[]"), int(port), limit=MAX_HEAD,
                                        backlog=1024)
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGHUP, secrets.reload)
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    watching = None
    if args.state_dir:
        drain.prepare(args.state_dir)
        keyguard.watch_markers()  # a model already marked is refused from the first request
        watching = asyncio.create_task(keyguard.watch())
    sdnotify.ready()  # only now may systemd send a reload (SIGHUP): its handler is set
    log(f"listening on {host}:{port}, forwarding to {args.upstream} (at most {keyguard.limits.total} connections, "
        f"{keyguard.limits.per_source} per source)")
    await stop.wait()
    try:
        await keyguard.stop_gracefully(server, args.drain_seconds)
    finally:
        if watching:
            watching.cancel()
            drain.remove_report(args.state_dir)  # no keyguard, nothing in flight: drain helpers need not wait


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        secrets = Secrets(args.tls, args.keys, args.upstream_key, args.client_ca, args.crl)
        asyncio.run(serve(args, secrets))
    except (OSError, ValueError, ssl.SSLError) as exc:
        log(f"cannot start: {type(exc).__name__}: {exc}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
