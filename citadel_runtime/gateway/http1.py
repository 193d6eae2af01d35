"""Just enough HTTP/1.1 on asyncio streams: requests in, responses and chunked bodies out.

Strict on purpose: a request the gateway cannot read unambiguously (a chunked body, two
Content-Lengths, an over-long header section, a bare LF request smuggled in a header) is
refused, never guessed at. Bodies are read only after the caller has decided the request
may have one, so an unauthenticated client cannot make the gateway read megabytes.

Example::

    >>> head = parse_head(b"POST /v1/models HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\n\\r\\n")
    >>> head.method, head.target, head.content_length
    ('POST', '/v1/models', 2)
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

MAX_HEAD = 16 * 1024
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    429: "Too Many Requests", 431: "Request Header Fields Too Large", 500: "Internal Server Error",
    502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}


class HttpError(Exception):
    """A request that cannot be read: answered with `status`, then the connection closes."""

    def __init__(self, status: int, reason: str):
        super().__init__(reason)
        self.status = status
        self.reason = reason


@dataclass
class Head:
    method: str
    target: str
    version: str
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names

    @property
    def content_length(self) -> int:
        return int(self.headers.get("content-length", "0"))

    @property
    def keep_alive(self) -> bool:
        connection = self.headers.get("connection", "").lower()
        return "close" not in connection if self.version == "HTTP/1.1" else "keep-alive" in connection


async def within(awaitable, seconds: float):
    """`await awaitable`, or TimeoutError after `seconds` (without the task wait_for makes each time)."""
    async with asyncio.timeout(seconds):
        return await awaitable


def parse_head(data: bytes) -> Head:
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError:
        raise HttpError(400, "non-ASCII bytes in the request head") from None
    lines = text.split("\r\n")
    parts = lines[0].split(" ")
    if len(parts) != 3 or not parts[0].isalpha() or not parts[1]:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, f"unsupported version {version[:16]!r}")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        if not line:
            continue
        name, sep, value = line.partition(":")
        if not sep or not name or name != name.strip() or "\n" in line or "\r" in line:
            raise HttpError(400, "malformed header line")
        key = name.lower()
        if key in headers and key in ("content-length", "transfer-encoding", "authorization", "host"):
            raise HttpError(400, f"duplicate {key} header")
        headers[key] = value.strip()
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked request bodies are not accepted: send Content-Length")
    length = headers.get("content-length", "0")
    if not length.isdigit() or len(length) > 12:
        raise HttpError(400, "invalid Content-Length")
    return Head(method, target, version, headers)


async def read_head(reader: asyncio.StreamReader, timeout: float) -> Head | None:
    """The next request's head, or None when the client closed between requests."""
    try:
        data = await within(reader.readuntil(b"\r\n\r\n"), timeout)
    except asyncio.IncompleteReadError as exc:
        if not exc.partial.strip():
            return None
        raise HttpError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    except TimeoutError:
        return None  # an idle keep-alive connection: close it quietly
    if len(data) > MAX_HEAD:
        raise HttpError(431, "request head too large")
    return parse_head(data[:-4])


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
