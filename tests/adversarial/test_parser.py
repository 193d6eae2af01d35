"""The request parser against h11, on a few thousand generated heads (differential test).

Each head is built from seeded random parts: valid requests and every kind of near-miss
(duplicate or listed Content-Length, Content-Length with Transfer-Encoding, TE variants,
obs-fold, bare LF and CR, NUL and other control bytes, obs-text, overlong lines and
methods and targets, many headers, missing or repeated Host, absolute-form and asterisk
targets, spaces and tabs in the request line, lower-case methods, HTTP/1.0, 1.1 and others).
Each is fed to ``http1.read_head`` through an asyncio StreamReader and to h11 (the
library behind Debian's python3-h11), and they must agree: both refuse, or both accept
with the same method, target, body framing and connection persistence.

Citadel may only be stricter than h11, and only where `STRICTER` says so (a rule per
deliberate difference, each with why); it may never accept what h11 refuses.

Example::

    .venv/bin/python -m pytest -q tests/adversarial/test_parser.py
"""

from __future__ import annotations

import asyncio
import importlib.util
import random
import re
import sys
from dataclasses import dataclass, field
from typing import NamedTuple

import h11
import pytest
from h11._connection import _keep_alive  # how h11 decides persistence (no public name for it)

from tests.gateway_harness import runtime_root


def load_parser():
    """citadel_runtime/gateway/http1.py of the checkout under test (CITADEL_RUNTIME_ROOT, as the harness)."""
    spec = importlib.util.spec_from_file_location("http1_under_test", runtime_root() / "citadel_runtime/gateway/http1.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


http1 = load_parser()

SEED, CASES = 15, 4000

METHODS = ["get", "PoSt", "DELETE", "M-SEARCH", "X" * 16, "X" * 17, "A" * 300, "G(T", "GÉT", "G\x00T", "",
           "P,ST", "~!#$%&'*+.^_`|"]
TARGETS = ["*", "http://x/v1/models", "https://gw:443/v1/completions?x=1", "/a%20b", "/a b", "/a\tb", "/a\x00",
           "/a\x7f", "/é", "/a\x1b", "/" + "a" * 2047, "/" + "a" * 2048, "/v1/models\n", "", "//", "/%0A", "/a?b c"]
VERSIONS = ["HTTP/2.0", "HTTP/0.9", "http/1.1", "HTTP/1", "HTTP/1.1 ", "HTTP/11", "HTTP/1.2", "HTTP/1.1\x00"]
VALUES = ["", "a b", "a\tb", " padded ", "\tpadded\t", "a\x00b", "a\x01b", "a\x1fb", "a\x7fb", "caf\xe9", "a\x0bb",
          "a\x0cb", "a\rb", "v" * 9000, "text/event-stream, */*;q=0.5", '"quoted, comma"']
LENGTHS = ["007", "-1", "+1", " 5", "5 ", "5, 5", "5,6", "0x10", "1e3", "1" * 12, "1" * 13, "1" * 21, "", "٣",
           "5\x00", "5\t"]
ENCODINGS = ["chunked", "Chunked", "chunked, gzip", "gzip, chunked", "gzip", " chunked", "chunked\x0b", "identity"]
NAMES = ["X(y", "X y", "", "X\x00", "Ké", "X_under", "Expect", "x-ÿ", "Con tent-Length"]
CONNECTIONS = ["close", "keep-alive", "Close", "Keep-Alive", "upgrade, close", "close, keep-alive", "te", ""]


@dataclass
class Draft:
    """A request head under construction: valid until a mutation makes it otherwise."""

    method: str = "GET"
    target: str = "/v1/models"
    version: str = "HTTP/1.1"
    separator: str = " "
    headers: list[list[str]] = field(default_factory=list)  # [name, separator, value]
    before: str = ""  # anything before the request line
    ending: str = "\r\n"
    endings_changed: int = 0  # how many CRLFs become `ending` (from the start)

    def render(self) -> bytes:
        lines = [self.separator.join((self.method, self.target, self.version))]
        lines += ["".join(header) for header in self.headers]
        text = self.before + "\r\n".join(lines) + "\r\n\r\n"
        if self.endings_changed:
            text = text.replace("\r\n", self.ending, self.endings_changed)
        return text.encode("latin-1", errors="replace")


def valid(rng: random.Random) -> Draft:
    draft = Draft(method=rng.choice(["GET", "POST"]), version=rng.choice(["HTTP/1.1", "HTTP/1.1", "HTTP/1.0"]),
                  target=rng.choice(["/", "/v1/models", "/v1/chat/completions", "/v1/chat/completions?a=b"]))
    if draft.version == "HTTP/1.1" or rng.random() < 0.5:
        draft.headers.append(["Host", ": ", rng.choice(["gw", "gw:443", "10.0.0.1", "", "[::1]:443"])])
    if rng.random() < 0.5:
        draft.headers.append([rng.choice(["Content-Length", "content-length"]), ": ", str(rng.choice([0, 5, 1024]))])
    if rng.random() < 0.3:
        draft.headers.append(["Connection", ": ", rng.choice(CONNECTIONS)])
    for _ in range(rng.choice([0, 1, 2, 3])):
        draft.headers.append([rng.choice(["Accept", "User-Agent", "X-Request-Id"]), rng.choice([": ", ":", ":\t"]),
                              rng.choice(["x", "*/*", "a b", "v1.0 (x)"])])
    rng.shuffle(draft.headers)
    return draft


def insert(rng: random.Random, draft: Draft, name: str, value: str, separator: str = ": ") -> None:
    draft.headers.insert(rng.randrange(len(draft.headers) + 1), [name, separator, value])


def drop_host(rng, d):
    d.headers = [h for h in d.headers if h[0].lower() != "host"]


def set_length(rng, d):
    d.headers = [h for h in d.headers if h[0].lower() != "content-length"]
    insert(rng, d, "Content-Length", rng.choice(LENGTHS))


def set_ending(rng, d):
    d.ending, d.endings_changed = rng.choice(["\n", "\r", "\r\r\n", "\n\r"]), rng.choice([1, 2, 99])


# Each mutation turns a valid head into a near-miss (or, sometimes, into another valid one).
MUTATIONS = [
    lambda rng, d: setattr(d, "method", rng.choice(METHODS)),
    lambda rng, d: setattr(d, "target", rng.choice(TARGETS)),
    lambda rng, d: setattr(d, "version", rng.choice(VERSIONS)),
    lambda rng, d: setattr(d, "separator", rng.choice(["  ", "\t", " \t"])),
    drop_host,
    lambda rng, d: insert(rng, d, "Host", "other"),
    set_length,
    lambda rng, d: insert(rng, d, "Content-Length", rng.choice(["0", "5", "007"])),
    lambda rng, d: insert(rng, d, rng.choice(["Transfer-Encoding", "transfer-encoding"]), rng.choice(ENCODINGS)),
    lambda rng, d: insert(rng, d, rng.choice(NAMES), "v"),
    lambda rng, d: insert(rng, d, "X-Custom", rng.choice(VALUES)),
    lambda rng, d: insert(rng, d, "X-Custom", "v", rng.choice([" : ", " :", "\t:", "", "::"])),
    lambda rng, d: insert(rng, d, rng.choice([" folded", "\tfolded", "  X: y"]), "", ""),  # obs-fold
    set_ending,
    lambda rng, d: setattr(d, "before", rng.choice(["\r\n", "\n", " "])),
    lambda rng, d: d.headers.extend([["X-Many", ": ", "v"]] * rng.choice([60, 70])),
    lambda rng, d: insert(rng, d, "X-Long", "v" * rng.choice([8000, 8200])),
    lambda rng, d: d.headers.extend([["Authorization", ": ", "Bearer a"], ["Authorization", ": ", "Bearer b"]]),
    lambda rng, d: insert(rng, d, "Connection", rng.choice(CONNECTIONS)),
]


def generate(rng: random.Random) -> bytes:
    """One request head: a valid one, then none to three mutations."""
    draft = valid(rng)
    for _ in range(rng.choice([0, 1, 1, 1, 2, 3])):
        rng.choice(MUTATIONS)(rng, draft)
    return draft.render()


# -- the two parsers ---------------------------------------------------------------------


def citadel(data: bytes) -> tuple | int:
    """("ok", method, target, framing, close) or the refusal's status."""

    async def parse():
        reader = asyncio.StreamReader(limit=http1.MAX_HEAD)
        reader.feed_data(data)
        reader.feed_eof()
        return await http1.read_head(reader, 5)

    try:
        head = asyncio.run(parse())
    except http1.HttpError as exc:
        return exc.status
    if head is None:
        return 400  # nothing read: the connection ends without a request
    return "ok", head.method, head.target, ("length", head.content_length), not head.keep_alive


def reference(data: bytes) -> tuple | None:
    """The same from h11, or None when it refuses (or finds no complete head)."""
    connection = h11.Connection(h11.SERVER)
    connection.receive_data(data)
    connection.receive_data(b"")
    try:
        event = connection.next_event()
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.Request):
        return None
    headers = dict(event.headers)  # names lower-case, Content-Length already collapsed by h11
    framing = ("chunked",) if b"transfer-encoding" in headers else ("length", int(headers.get(b"content-length", 0)))
    return "ok", event.method.decode(), event.target.decode(), framing, not _keep_alive(event)


# -- where Citadel is stricter, on purpose ---------------------------------------------------

# Citadel's documented bounds (http1.MAX_*), written out: the contract, not a copy of the code.
METHOD_LIMIT, TARGET_LIMIT, HEADERS_LIMIT, LINE_LIMIT, HEAD_LIMIT, DIGITS_LIMIT = 16, 2048, 64, 8192, 16384, 12
HEADER_FIELD = re.compile(rb"^([^:\r\n]*):[ \t]*(.*?)[ \t]*$")


class Parts(NamedTuple):
    """A raw head split as h11 splits it (CR optional at line ends)."""

    data: bytes
    line: bytes  # the request line
    raw: list[bytes]  # the header lines
    fields: list[tuple[bytes, bytes]]  # (lower-case name, value)

    @classmethod
    def of(cls, data: bytes) -> Parts:
        lines = [line.rstrip(b"\r") for line in data.split(b"\n")]
        while lines and not lines[-1]:
            lines.pop()
        found = [HEADER_FIELD.match(line) for line in lines[1:]]
        fields = [(m.group(1).lower(), m.group(2)) for m in found if m]
        return cls(data, lines[0] if lines else b"", lines[1:], fields)

    def values(self, name: bytes) -> list[bytes]:
        return [value for key, value in self.fields if key == name]

    def part(self, index: int) -> bytes:
        words = self.line.split(b" ")
        return words[index] if len(words) == 3 else b""


# (why, when it applies to a head, the status Citadel answers): each a deliberate refusal of
# something h11 accepts.
STRICTER = [
    # The gateway and the keyguard take no chunked request bodies: one framing, no TE/CL games.
    ("transfer-encoding", lambda p: bool(p.values(b"transfer-encoding")), 411),
    # Two Content-Lengths, even equal ones, or a list ("5, 5"), which h11 collapses.
    ("content-length list", lambda p: len(p.values(b"content-length")) > 1
     or any(b"," in v for v in p.values(b"content-length")), 400),
    # Above 12 digits is far above any body limit (h11 allows 20).
    ("content-length digits", lambda p: any(len(v) > DIGITS_LIMIT for v in p.values(b"content-length")), 400),
    # Lines end with CRLF only: a bare LF (which h11 takes as a line end) is refused.
    ("bare LF", lambda p: re.search(rb"(?<!\r)\n", p.data) is not None, 400),
    # obs-fold (RFC 9112 5.2 lets a server refuse it with 400), which h11 unfolds.
    ("obs-fold", lambda p: any(r[:1] in (b" ", b"\t") for r in p.raw), 400),
    # Control bytes (h11 passes \x01-\x08, \x0e-\x1f and \x7f in values) and obs-text: never forwarded.
    ("control or non-ASCII byte", lambda p: re.search(rb"[\x01-\x08\x0e-\x1f\x7f-\xff]", p.data) is not None, 400),
    # Only HTTP/1.0 and HTTP/1.1 (h11 takes any digit.digit).
    ("version", lambda p: p.part(2) not in (b"HTTP/1.1", b"HTTP/1.0"), 505),
    # A method is a short token: a long one is never copied into a record.
    ("method length", lambda p: len(p.part(0)) > METHOD_LIMIT, 501),
    ("target length", lambda p: len(p.part(1)) > TARGET_LIMIT, 414),
    ("header count", lambda p: len(p.raw) > HEADERS_LIMIT, 431),
    ("header line length", lambda p: any(len(r) > LINE_LIMIT for r in p.raw), 431),
    ("head size", lambda p: len(p.data) > HEAD_LIMIT, 431),
    # Two credentials in one request: which one counts would be a guess.
    ("duplicate authorization", lambda p: len(p.values(b"authorization")) > 1, 400),
]


def allowed_refusals(data: bytes) -> dict[str, int]:
    parts = Parts.of(data)
    return {why: status for why, applies, status in STRICTER if applies(parts)}


def test_the_parser_agrees_with_h11_and_is_stricter_only_where_it_says_so():
    rng = random.Random(SEED)
    outcomes: dict[str, list] = {"both accept": [], "both refuse": [], "stricter": [], "LOOSER": [],
                                 "READ DIFFERENTLY": [], "STRICTER WITHOUT A RULE": []}
    for _ in range(CASES):
        data = generate(rng)
        ours, theirs = citadel(data), reference(data)
        if isinstance(ours, tuple):
            kind = "LOOSER" if theirs is None else "both accept" if ours == theirs else "READ DIFFERENTLY"
        elif theirs is None:
            kind = "both refuse"
        else:
            kind = "stricter" if ours in allowed_refusals(data).values() else "STRICTER WITHOUT A RULE"
        outcomes[kind].append((data[:300], ours, theirs))
    wrong = {kind: cases[:3] for kind, cases in outcomes.items() if kind.isupper() and cases}
    counts = {kind: len(cases) for kind, cases in outcomes.items()}
    assert not wrong, f"{counts}: {wrong}"
    # The generator reaches every branch: enough of each outcome that the test means something.
    assert min(counts["both accept"], counts["both refuse"], counts["stricter"]) > CASES // 20, counts


def test_the_limits_here_are_the_parsers():
    assert (http1.MAX_METHOD, http1.MAX_TARGET, http1.MAX_HEADERS, http1.MAX_HEADER_LINE, http1.MAX_HEAD,
            http1.MAX_LENGTH_DIGITS) == (METHOD_LIMIT, TARGET_LIMIT, HEADERS_LIMIT, LINE_LIMIT, HEAD_LIMIT, DIGITS_LIMIT)


NEAR_MISSES = {
    "HTTP/1.1 without Host (RFC 9112 3.2)": (b"GET / HTTP/1.1\r\n\r\n", 400),
    "a newline in the target": (b"GET /v1/models\n HTTP/1.1\r\nHost: x\r\n\r\n", 400),
    "a control byte h11 lets through": (b"GET / HTTP/1.1\r\nHost: x\r\nX: a\x01b\r\n\r\n", 400),
    "a 16 KB method, never copied into a record": (b"X" * 16000 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "a head over MAX_HEAD": (b"X" * 16384 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", 431),
    "a 17-byte method": (b"X" * 17 + b" / HTTP/1.1\r\nHost: x\r\n\r\n", 501),
    "Content-Length -1": (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: -1\r\n\r\n", 400),
}


@pytest.mark.parametrize("name", list(NEAR_MISSES))
def test_named_near_misses(name):
    data, status = NEAR_MISSES[name]
    assert citadel(data) == status
