"""The model server, as the gateway reaches it: keep-alive HTTP/1.1 over TLS, TCP or a Unix socket.

Addresses: ``https://HOST:8443`` (a GPU host's keyguard, verified against Citadel's PKI CA),
``http://127.0.0.1:PORT`` or ``unix:/run/citadel-vllm/MODEL/vllm.sock`` (vLLM on this host).
Idle connections are pooled. A pooled connection the server closed while it sat idle is
found so before it is used (a peek at its socket) and dropped; one that breaks off after the
request was written, before any byte of the answer, is retried once on a fresh one. An error
says whether the request provably never left (``unsent``: no connection could be made, or
its TLS handshake failed, before anything was written), which is when the gateway may try
another replica (``replicas``). A request
or an answer abandoned midway (its task cancelled: the client went away) closes its
connection, which is how the model server learns to stop generating.

Example::

    >>> Address.parse("https://10.0.0.5:8443").port
    8443
"""

from __future__ import annotations

import asyncio
import os
import socket
import ssl
from dataclasses import dataclass

from citadel_runtime.gateway.http1 import within

MAX_HEAD = 64 * 1024


class UpstreamError(Exception):
    """The model server could not be reached (`connect`) or broke off (`protocol`, `timeout`).

    `unsent`: nothing of the request was written to any connection (a refused or reset
    connect, a failed TLS handshake, a connect that timed out), so no model server saw it.
    `reason`: a short, fixed description, for records and metric labels.
    """

    def __init__(self, kind: str, detail: str, unsent: bool = False, reason: str | None = None):
        super().__init__(f"{kind}: {detail}")
        self.kind = kind
        self.unsent = unsent
        self.reason = reason or kind


def connect_failure(exc: BaseException) -> str:
    """A short, fixed description of why a connection could not be made (for records and metrics)."""
    if isinstance(exc, TimeoutError):
        return "connect timed out"
    if isinstance(exc, ssl.SSLError):
        return "TLS handshake failed"
    if isinstance(exc, ConnectionRefusedError):
        return "connect refused"
    if isinstance(exc, ConnectionResetError):
        return "connect reset"
    return f"cannot connect ({type(exc).__name__})"


def closed_while_idle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
    """Whether the peer closed (or reset) a pooled connection while it sat idle: the event loop
    may not have seen it yet, so the socket itself is asked, without taking any byte from it."""
    if writer.is_closing() or reader.at_eof() or reader.exception() is not None:
        return True
    raw = writer.get_extra_info("socket")
    if raw is None:
        return False
    try:
        with socket.socket(fileno=os.dup(raw.fileno())) as peek:
            return peek.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b""
    except BlockingIOError:
        return False  # nothing to read: open, as an idle connection should be
    except OSError:
        return True  # reset


@dataclass(frozen=True)
class Address:
    scheme: str
    host: str = ""
    port: int = 0
    path: str = ""

    @classmethod
    def parse(cls, text: str) -> Address:
        if text.startswith("unix:"):
            return cls("unix", path=text[len("unix:"):])
        scheme, sep, rest = text.partition("://")
        host, _, port = rest.rstrip("/").rpartition(":")
        if not sep or scheme not in ("http", "https") or not host or not port.isdigit():
            raise ValueError(f"upstream {text!r}: expected https://HOST:PORT, http://HOST:PORT or unix:PATH")
        return cls(scheme, host.strip("[]"), int(port))

    @property
    def host_header(self) -> str:
        return "localhost" if self.scheme == "unix" else f"{self.host}:{self.port}"


class Response:
    def __init__(self, pool: Pool, reader, writer, status: int, headers: dict[str, str]):
        self.pool, self.reader, self.writer = pool, reader, writer
        self.status, self.headers = status, headers
        self.chunked = "chunked" in headers.get("transfer-encoding", "").lower()
        self.length = int(headers["content-length"]) if "content-length" in headers and not self.chunked else None
        self.done = False

    async def chunks(self, timeout: float):
        """The body's pieces as they arrive (chunked encoding undone)."""
        try:
            if self.chunked:
                while True:
                    size_line = await within(self.reader.readuntil(b"\r\n"), timeout)
                    size = int(size_line.split(b";")[0].strip(), 16)
                    if size == 0:
                        while (await within(self.reader.readuntil(b"\r\n"), timeout)) != b"\r\n":
                            pass
                        break
                    data = await within(self.reader.readexactly(size + 2), timeout)
                    yield data[:-2]
            elif self.length is not None:
                left = self.length
                while left:
                    data = await within(self.reader.read(min(left, 65536)), timeout)
                    if not data:
                        raise asyncio.IncompleteReadError(b"", left)
                    left -= len(data)
                    yield data
            else:
                while data := await within(self.reader.read(65536), timeout):
                    yield data
        except TimeoutError:
            self.close()
            raise UpstreamError("timeout", "the model server stopped sending") from None
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError, OSError) as exc:
            self.close()
            raise UpstreamError("protocol", f"the model server broke off its answer ({type(exc).__name__})") from None
        except asyncio.CancelledError:
            self.close()  # the client went away mid-answer: closing the connection stops the generation
            raise
        self.done = True
        keep = self.length is not None or self.chunked
        if keep and "close" not in self.headers.get("connection", "").lower():
            self.pool.put(self.reader, self.writer)
        else:
            self.close()

    async def read_all(self, limit: int, timeout: float) -> bytes:
        parts, size = [], 0
        async for piece in self.chunks(timeout):
            size += len(piece)
            if size > limit:
                self.close()
                raise UpstreamError("protocol", "the model server's answer is too large")
            parts.append(piece)
        return b"".join(parts)

    def close(self) -> None:
        if not self.writer.is_closing():
            self.writer.close()


class Pool:
    """Keep-alive connections to one upstream address."""

    def __init__(self, address: Address, tls: ssl.SSLContext | None = None, size: int = 64):
        self.address = address
        self.tls = tls
        self.size = size
        self.idle: list[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = []

    async def _open(self, timeout: float, unsent: bool = True):
        """A new connection; `unsent`: no earlier attempt wrote this request (see UpstreamError)."""
        a = self.address
        try:
            if a.scheme == "unix":
                return await within(asyncio.open_unix_connection(a.path, limit=MAX_HEAD), timeout)
            tls = self.tls if a.scheme == "https" else None
            return await within(
                asyncio.open_connection(a.host, a.port, ssl=tls, server_hostname=a.host if tls else None, limit=MAX_HEAD),
                timeout)
        except TimeoutError as exc:
            raise UpstreamError("connect", "timed out connecting to the model server", unsent,
                                connect_failure(exc)) from None
        except (OSError, ssl.SSLError) as exc:
            raise UpstreamError("connect", f"cannot connect to the model server ({type(exc).__name__})",
                                unsent, connect_failure(exc)) from None

    def put(self, reader, writer) -> None:
        # A connection made under a context since replaced (a new CRL, CA or certificate) is not
        # reused: the next request to that host is checked against what is in force now.
        stale = self.tls is not None and writer.get_extra_info("sslcontext") not in (None, self.tls)
        if len(self.idle) < self.size and not writer.is_closing() and not stale:
            self.idle.append((reader, writer))
        else:
            writer.close()

    async def request(self, method: str, path: str, headers: list[tuple[str, str]], body: bytes,
                      timeout: float) -> Response:
        head = [f"{method} {path} HTTP/1.1", f"Host: {self.address.host_header}", *(f"{k}: {v}" for k, v in headers)]
        if body or method == "POST":
            head.append(f"Content-Length: {len(body)}")
        data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + body
        written = False  # some attempt wrote the request: from then on, no error is `unsent`
        for attempt in (0, 1):
            idle = self._idle_connection() if attempt == 0 else None
            reader, writer = idle or await self._open(timeout, unsent=not written)
            try:
                writer.write(data)
                written = True
                await writer.drain()
                raw = await within(reader.readuntil(b"\r\n\r\n"), timeout)
            except TimeoutError:
                writer.close()
                raise UpstreamError("timeout", "the model server did not answer in time") from None
            except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError) as exc:
                writer.close()
                if idle and isinstance(exc, asyncio.IncompleteReadError | OSError) and not getattr(exc, "partial", b""):
                    continue  # the server closed this idle connection as we wrote: once more, fresh
                raise UpstreamError("protocol", f"the model server closed the connection ({type(exc).__name__})") from None
            except asyncio.CancelledError:
                writer.close()  # the client went away: the model server must stop working for it
                raise
            lines = raw.decode("latin-1").split("\r\n")
            try:
                status = int(lines[0].split(" ")[1])
            except (IndexError, ValueError):
                writer.close()
                raise UpstreamError("protocol", "the model server's answer is not HTTP") from None
            if status == 421 and attempt == 0:
                # The keyguard reloaded its certificates and CRL after this connection was
                # opened and did not take the request: once more on a new connection.
                writer.close()
                continue
            response_headers = {}
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name:
                    response_headers[name.strip().lower()] = value.strip()
            return Response(self, reader, writer, status, response_headers)
        raise UpstreamError("protocol", "the model server closed the connection")

    def _idle_connection(self):
        """The most recently pooled connection still open (those the server closed meanwhile dropped)."""
        while self.idle:
            reader, writer = self.idle.pop()
            if not closed_while_idle(reader, writer):
                return reader, writer
            writer.close()
        return None

    def close(self) -> None:
        for _, writer in self.idle:
            writer.close()
        self.idle.clear()
