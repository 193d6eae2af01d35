"""Issue 15, item 12: the gateway's parser was loose in small ways.

On the baseline the route patterns' `$` matched before a trailing newline (a target with a
newline in its query was allowed and forwarded), control characters in header values were
forwarded to the model server, HTTP/1.1 without Host was served, ``Connection: close`` was
ignored, and a 16 KB method was copied into the record. Each is now refused (or honoured),
recorded once, and nothing of it reaches the model server. The parser itself is compared
with h11 in test_parser.py.
"""

from __future__ import annotations

import json

import pytest

from tests.adversarial.harness import CHAT

BODY = json.dumps(CHAT).encode()


def post(target: bytes = b"/v1/chat/completions", host: bytes | None = b"gw", extra: bytes = b"") -> bytes:
    head = b"POST " + target + b" HTTP/1.1\r\n" + (b"Host: " + host + b"\r\n" if host is not None else b"")
    return (head + b"Authorization: Bearer ck_w\r\nContent-Type: application/json\r\n" + extra
            + b"Content-Length: %d\r\n\r\n" % len(BODY) + BODY)


LOOSE = {
    "a newline at the end of the target": post(target=b"/v1/chat/completions?a=b\n"),
    "a control character in a forwarded header": post(extra=b"Accept: text/x\x01y\r\n"),
    "DEL in a header value": post(extra=b"Accept: text/x\x7f\r\n"),
    "HTTP/1.1 without Host": post(host=None),
}


@pytest.mark.parametrize("name", list(LOOSE))
def test_a_loose_request_is_a_recorded_400_and_reaches_nothing(gateway, upstream, name):
    answer = gateway.send_raw(LOOSE[name])
    assert answer.startswith(b"HTTP/1.1 400 "), (name, answer[:300])
    records = gateway.wait_for_records(1)
    assert [r["status"] for r in records] == [400], records
    assert upstream.requests == []


def test_connection_close_is_honoured(gateway, upstream):
    with gateway.tls_socket(timeout=5) as sock:
        # Two requests at once; the first asks to close after its answer.
        sock.sendall(post(extra=b"Connection: close\r\n") + post())
        data = b""
        while piece := sock.recv(65536):
            data += piece
    assert data.count(b"HTTP/1.1 200 ") == 1, data[:500]
    assert len(upstream.requests) == 1


def test_a_16_kb_method_is_refused_and_its_record_is_bounded(gateway, upstream):
    answer = gateway.send_raw(b"X" * 16_000 + b" /v1/models HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 501 "), answer[:200]
    records = gateway.wait_for_records(1)
    assert len(records) == 1 and "XXXXXXXXXXXXXXXXX" not in json.dumps(records)
    assert gateway.audit_log.stat().st_size < 2048
    assert upstream.requests == []
