"""Just enough HTTP/1.1 on asyncio streams: requests in, responses and chunked bodies out.

The one request parser of the gateway and the keyguard. Strict on purpose: a request that
cannot be read unambiguously is refused, never guessed at. Refused: a chunked body, two
Content-Lengths, a Content-Length that is not plain digits, a bare CR or LF, a control
character or non-ASCII byte anywhere in the head, obs-fold, a header name that is not a
token, HTTP/1.1 without exactly one Host (RFC 9112 3.2); and, bounded, the head
(`MAX_HEAD`), each header line, the number of headers, the method (a short token) and the
request target. `read_head` gives the head a total deadline from its first byte, however
slowly it trickles in; ``Head.close`` says whether the connection ends after the answer
(``Connection: close``, or HTTP/1.0). Bodies are read only after the caller has decided the
request may have one (`read_body`, within a deadline), so an unauthenticated client cannot
make the server read megabytes; a refused body is dropped within a bound and a deadline
(`discard`), or the connection is closed.

Example::

    >>> head = parse_head(b"POST /v1/models HTTP/1.1\\r\\nHost: x\\r\\nContent-Length: 2\\r\\n\\r\\n")
    >>> head.method, head.target, head.content_length, head.close
    ('POST', '/v1/models', 2, False)
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field

MAX_HEAD = 16 * 1024  # the whole head, request line and header lines
MAX_HEADER_LINE = 8 * 1024
MAX_HEADERS = 64
MAX_METHOD = 16  # longer than any method anyone implements: 501, and never copied into a record
MAX_TARGET = 2048  # the allowed routes are a few dozen bytes; a longer target is 414
MAX_LENGTH_DIGITS = 12  # Content-Length below 1 TB: the callers' own limits are far lower
REASONS = {
    200: "OK", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found",
    405: "Method Not Allowed", 408: "Request Timeout", 411: "Length Required", 413: "Content Too Large",
    414: "URI Too Long", 421: "Misdirected Request", 429: "Too Many Requests", 431: "Request Header Fields Too Large",
    500: "Internal Server Error", 501: "Not Implemented", 502: "Bad Gateway", 503: "Service Unavailable",
    504: "Gateway Timeout", 505: "HTTP Version Not Supported",
}
TOKEN = re.compile(r"[-!#$%&'*+.^_`|~0-9A-Za-z]+")  # RFC 9110 5.6.2
TOKEN_BYTES = b"-!#$%&'*+.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
TEXT_BYTES = bytes(range(0x20, 0x7F)) + b"\t"  # what a head's lines may hold: visible ASCII, SP, HTAB
# The first byte of a head that is none of those and no CRLF: named in the refusal.
FORBIDDEN = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\xff]|\r(?!\n)|(?<!\r)\n")
# Headers that must not be given twice (combining them would change the request's meaning).
SINGLE = frozenset(("content-length", "transfer-encoding", "authorization", "host"))


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
    headers: dict[str, str] = field(default_factory=dict)  # lower-case names; repeats joined by ", "

    @property
    def content_length(self) -> int:
        return int(self.headers.get("content-length", "0"))

    @property
    def keep_alive(self) -> bool:
        """HTTP/1.1 without ``Connection: close``. HTTP/1.0's keep-alive extension is not offered (as in h11)."""
        if self.version != "HTTP/1.1":
            return False
        return "close" not in {token.strip().lower() for token in self.headers.get("connection", "").split(",")}

    @property
    def close(self) -> bool:
        """The connection closes after this answer: the client said ``Connection: close``, or spoke HTTP/1.0."""
        return not self.keep_alive


async def within(awaitable, seconds: float):
    """`await awaitable`, or TimeoutError after `seconds` (without the task wait_for makes each time)."""
    async with asyncio.timeout(seconds):
        return await awaitable


def _forbidden(text: str) -> HttpError:
    """The refusal for the first byte FORBIDDEN finds in `text`."""
    found = FORBIDDEN.search(text)
    if found.group() in ("\r", "\n"):
        return HttpError(400, "bare CR or LF in the request head")
    if found.group() > "\x7f":
        return HttpError(400, "non-ASCII byte in the request head")
    return HttpError(400, "control character in the request head")


def parse_request_line(line: str) -> tuple[str, str, str]:
    parts = line.split(" ")
    if len(parts) != 3:
        raise HttpError(400, "malformed request line")
    method, target, version = parts
    if method not in ("GET", "POST") and not TOKEN.fullmatch(method):
        raise HttpError(400, "malformed request line: the method is not a token")
    if len(method) > MAX_METHOD:
        raise HttpError(501, "method not implemented")
    if len(target) > MAX_TARGET:
        raise HttpError(414, f"request target longer than {MAX_TARGET} bytes")
    if not target or "\t" in target:  # the rest of it is visible ASCII (parse_head saw to that)
        raise HttpError(400, "malformed request line: the target is empty or not visible ASCII")
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505, "unsupported HTTP version")
    return method, target, version


def parse_headers(lines: list[str]) -> dict[str, str]:
    if len(lines) > MAX_HEADERS:
        raise HttpError(431, f"more than {MAX_HEADERS} header lines")
    headers: dict[str, str] = {}
    names = []
    for line in lines:
        if len(line) > MAX_HEADER_LINE:
            raise HttpError(431, f"a header line longer than {MAX_HEADER_LINE} bytes")
        name, sep, value = line.partition(":")
        if not sep or not name:
            raise HttpError(400, "malformed header line")
        names.append(name)
        key = name.lower()
        value = value.strip(" \t")
        if key in headers:
            if key in SINGLE:
                raise HttpError(400, f"duplicate {key} header")
            value = f"{headers[key]}, {value}"  # a list header given twice means the same as once, joined
        headers[key] = value
    # Every name a token (also no obs-fold, no whitespace before a colon): checked at once, which is faster.
    if "".join(names).encode("latin-1").translate(None, TOKEN_BYTES):
        raise HttpError(400, "malformed header line")
    return headers


def parse_head(data: bytes) -> Head:
    """The head `data` (without its final blank line), or HttpError."""
    if data.replace(b"\r\n", b"").translate(None, TEXT_BYTES):  # a control or non-ASCII byte, or a bare CR or LF
        raise _forbidden(data.decode("latin-1"))
    lines = data.decode("ascii").split("\r\n")
    while len(lines) > 1 and not lines[-1]:
        lines.pop()  # the blank line that ends a head, when the caller left it on
    method, target, version = parse_request_line(lines[0])
    headers = parse_headers(lines[1:])
    if "transfer-encoding" in headers:
        raise HttpError(411, "chunked request bodies are not accepted: send Content-Length")
    length = headers.get("content-length", "0")
    if not length.isdigit() or len(length) > MAX_LENGTH_DIGITS:
        raise HttpError(400, "invalid Content-Length")
    if version == "HTTP/1.1" and "host" not in headers:
        raise HttpError(400, "HTTP/1.1 request without Host")
    return Head(method, target, version, headers)


async def read_head(reader: asyncio.StreamReader, timeout: float, head_timeout: float | None = None) -> Head | None:
    """The next request's head, or None when the client closed, or sent nothing for `timeout`
    seconds (an idle keep-alive connection: close it quietly).

    Once its first byte has come, the whole head must come within `head_timeout` seconds
    (default: `timeout`; give or take a second), however slowly it trickles in, else HttpError 408. The reader's
    limit (``start_server(limit=MAX_HEAD)``) bounds what is buffered while looking for its end.
    """
    first = b""
    try:
        async with asyncio.timeout(timeout) as deadline:  # one timer for both steps: it is rescheduled
            first = await reader.read(1)
            if not first:
                return None
            head_deadline = asyncio.get_running_loop().time() + (timeout if head_timeout is None else head_timeout)
            if abs(deadline.when() - head_deadline) > 1:  # moving a timer costs: not for less than a second
                deadline.reschedule(head_deadline)
            rest = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError:
        raise HttpError(400, "incomplete request head") from None
    except asyncio.LimitOverrunError:
        raise HttpError(431, "request head too large") from None
    except TimeoutError:
        if not first:
            return None
        raise HttpError(408, "request head not received in time") from None
    if len(rest) >= MAX_HEAD:
        raise HttpError(431, "request head too large")
    return parse_head(first + rest[:-4])


async def read_body(reader: asyncio.StreamReader, length: int, seconds: float) -> bytes:
    """A body of `length` bytes (the caller has bounded it), all of it within `seconds`, else HttpError."""
    try:
        return await within(reader.readexactly(length), seconds)
    except TimeoutError:
        raise HttpError(408, "request body not received in time") from None
    except asyncio.IncompleteReadError:
        raise HttpError(400, "the client closed before sending its whole body") from None


async def discard(reader: asyncio.StreamReader, length: int, limit: int, seconds: float) -> bool:
    """Read and drop a refused request's `length`-byte body, so the client gets the answer rather than
    a reset: True when all of it came within `seconds` in total. A body over `limit` is not read at all.

    Even then the caller closes the connection after a refusal: the next bytes are never taken
    for a new request unless the body was read exactly.
    """
    if length > limit:
        return False
    try:
        async with asyncio.timeout(seconds):
            while length > 0:
                data = await reader.read(min(length, 65536))
                if not data:
                    return False
                length -= len(data)
    except TimeoutError:
        return False
    return True


def response_head(status: int, headers: list[tuple[str, str]]) -> bytes:
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, 'Status')}"]
    lines += [f"{name}: {value}" for name, value in headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


LAST_CHUNK = b"0\r\n\r\n"
