"""The request parser (citadel_runtime/gateway/http1.py), shared by the gateway and the keyguard.

tests/adversarial/test_parser.py compares it with h11 on generated heads; these are the
named cases, and the stream helpers' deadlines.
"""

from __future__ import annotations

import asyncio

import pytest

from citadel_runtime.gateway.http1 import MAX_HEAD, HttpError, discard, parse_head, read_body, read_head
from citadel_runtime.gateway.routes import classify


def test_request_heads_are_read_strictly():
    head = parse_head(b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nAuthorization: Bearer k")
    assert (head.content_length, head.headers["authorization"], head.keep_alive) == (12, "Bearer k", True)
    for bad, status in ((b"POST /x HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked", 411),
                        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2", 400),
                        (b"POST /x HTTP/1.1\r\nHost: x\r\nContent-Length: -1", 400),
                        (b"POST /x HTTP/2.0", 505), (b"GARBAGE", 400),
                        (b"POST /x HTTP/1.1\r\nHost: x\r\nBad header", 400), ("POST /é HTTP/1.1".encode(), 400)):
        with pytest.raises(HttpError) as caught:
            parse_head(bad)
        assert caught.value.status == status, bad


@pytest.mark.parametrize("head,reason", [
    (b"GET / HTTP/1.1", "without Host"),  # RFC 9112 3.2
    (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b", "duplicate host"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x00b", "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x1bb", "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x7fb", "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\x0bb", "control character"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: caf\xe9", "non-ASCII"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\rb", "bare CR or LF"),
    (b"GET /v1/models\n HTTP/1.1\r\nHost: x", "bare CR or LF"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nX-A: a\r\n folded", "malformed header line"),  # obs-fold
    (b"GET / HTTP/1.1\r\nHost: x\r\nX(A): a", "malformed header line"),  # a name that is not a token
    (b"GET / HTTP/1.1\r\nHost : x", "malformed header line"),
    (b"G(T / HTTP/1.1\r\nHost: x", "not a token"),
    (b"GET /a\tb HTTP/1.1\r\nHost: x", "visible ASCII"),
    (b"GET / HTTP/1.1\r\nHost: x\r\nAuthorization: a\r\nAuthorization: b", "duplicate authorization"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5, 5", "invalid Content-Length"),
    (b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000000000", "invalid Content-Length"),
])
def test_near_misses_are_refused_with_a_reason(head, reason):
    with pytest.raises(HttpError) as caught:
        parse_head(head)
    assert caught.value.status == 400 and reason in caught.value.reason, caught.value.reason


def test_methods_targets_and_headers_are_bounded_and_the_reason_never_repeats_them():
    for head, status in ((b"X" * 16000 + b" / HTTP/1.1\r\nHost: x", 501), (b"X" * 17 + b" / HTTP/1.1\r\nHost: x", 501),
                         (b"GET /" + b"a" * 2048 + b" HTTP/1.1\r\nHost: x", 414),
                         (b"GET / HTTP/1.1\r\nHost: x" + b"\r\nX: v" * 64, 431),
                         (b"GET / HTTP/1.1\r\nHost: x\r\nX: " + b"v" * 8200, 431)):
        with pytest.raises(HttpError) as caught:
            parse_head(head)
        assert caught.value.status == status and len(caught.value.reason) < 80
    assert parse_head(b"X" * 16 + b" / HTTP/1.1\r\nHost: x").method == "X" * 16


def test_connection_close_and_http_1_0_close_after_the_answer():
    def head(text: bytes):
        return parse_head(b"GET / " + text)

    assert head(b"HTTP/1.1\r\nHost: x").close is False
    assert head(b"HTTP/1.1\r\nHost: x\r\nConnection: close").close is True
    assert head(b"HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, Close").close is True
    assert head(b"HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close").close is True  # joined
    assert head(b"HTTP/1.0").close is True  # no Host needed in 1.0; no keep-alive extension either
    assert head(b"HTTP/1.0\r\nConnection: keep-alive").close is True


def test_the_route_patterns_match_whole_targets_only():
    assert classify("GET", "/v1/models\n").status == 403  # `$` matched before a trailing newline
    assert classify("POST", "/v1/chat/completions?a=b\n").status == 403
    assert classify("GET", "/v1/models?a=b").status == 200


def run(make):
    """Run the coroutine `make()` returns, made inside the loop (as the streams it reads must be)."""

    async def main():
        return await make()

    return asyncio.run(main())


def stream(data: bytes = b"", eof: bool = False) -> asyncio.StreamReader:
    reader = asyncio.StreamReader(limit=MAX_HEAD)
    reader.feed_data(data)
    if eof:
        reader.feed_eof()
    return reader


def test_an_idle_connection_ends_quietly_and_a_half_sent_head_is_a_408():
    assert run(lambda: read_head(stream(), 0.05)) is None
    with pytest.raises(HttpError) as caught:
        run(lambda: read_head(stream(b"GET / HTTP/1.1\r\nHo"), 5, head_timeout=0.05))
    assert caught.value.status == 408
    assert run(lambda: read_head(stream(b"", eof=True), 1)) is None
    with pytest.raises(HttpError) as caught:
        run(lambda: read_head(stream(b"GET / HT", eof=True), 1))
    assert caught.value.status == 400
    with pytest.raises(HttpError) as caught:
        run(lambda: read_head(stream(b"GET /" + b"a" * MAX_HEAD + b" HTTP/1.1\r\n\r\n"), 1))
    assert caught.value.status == 431


def test_heads_and_bodies_are_read_whole_and_pipelined_requests_stay_apart():
    async def two():
        reader = stream(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabcGET / HTTP/1.1\r\nHost: x\r\n\r\n")
        first = await read_head(reader, 1)
        body = await read_body(reader, first.content_length, 1)
        second = await read_head(reader, 1)
        return first.method, body, second.method

    assert run(two) == ("POST", b"abc", "GET")
    with pytest.raises(HttpError) as caught:
        run(lambda: read_body(stream(b"ab"), 3, 0.05))
    assert caught.value.status == 408
    with pytest.raises(HttpError):
        run(lambda: read_body(stream(b"ab", eof=True), 3, 1))


def test_a_refused_body_is_dropped_within_its_bound_and_deadline():
    assert run(lambda: discard(stream(b"abc" + b"GET"), 3, 10, 1)) is True
    assert run(lambda: discard(stream(b"a" * 100), 100, 10, 1)) is False  # over the bound: not read at all
    assert run(lambda: discard(stream(b"ab"), 3, 10, 0.05)) is False  # the rest never comes
    assert run(lambda: discard(stream(b"ab", eof=True), 3, 10, 1)) is False
