"""Issue 15, items 9, 10 (its keyguard part) and 12, against the real keyguard on loopback.

On the baseline the keyguard ran on ``http.server``: with no key at all, ``Content-Length:
-1`` made it buffer the body until the connection closed; it started one thread per
connection with no cap; it parsed the unread rest of a refused body as a new request; and it
forwarded a body-less ``GET /v1/models`` to whichever model came first. Now it runs on the
gateway's own HTTP code, with caps and deadlines, and answers ``/v1/models`` itself.
"""

from __future__ import annotations

import socket
import time

import pytest

from tests.keyguard_harness import INTERNAL_KEY, Keyguard, read_until_closed

HOST = b"Host: gpu-01\r\n"


@pytest.fixture
def keyguard(tmp_path):
    with Keyguard(tmp_path, models=("tiny", "other")) as started:
        yield started


def forwarded(keyguard: Keyguard) -> list:
    return [seen for server in keyguard.served.values() for seen in server.requests]


def test_a_negative_content_length_without_a_key_is_refused_at_once_and_nothing_is_buffered(keyguard):
    before = keyguard.resident_kib()
    with keyguard.tls_socket(timeout=3) as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\n" + HOST + b"Content-Length: -1\r\n\r\n")
        try:
            answer = sock.recv(65536)
        except TimeoutError:
            answer = b""  # no answer: the baseline waited for a body of unknown length
        sent = 0
        try:  # then the flood the baseline kept in memory: it must go nowhere now
            for _ in range(256):
                sock.sendall(b"x" * (128 << 10))
                sent += 128 << 10
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:200]
    assert sent < 16 << 20, "the connection stayed open for the body"
    assert keyguard.resident_kib() - before < 16 << 10
    assert forwarded(keyguard) == []


def test_two_hundred_idle_connections_leave_room_for_the_gateway(tmp_path):
    # A host whose keyguard may hold 160 descriptors: the baseline took one thread and one
    # descriptor per connection until accept() failed; now one source gets at most its share.
    with Keyguard(tmp_path, models=("tiny",), descriptors=160) as keyguard:
        idle = []
        try:
            for _ in range(200):
                idle.append(socket.create_connection(("127.0.0.1", keyguard.port), timeout=5))
            time.sleep(0.5)
            started = time.monotonic()
            request = b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + f"Authorization: Bearer {INTERNAL_KEY}\r\n".encode()
            answer = keyguard.exchange(request + b"Connection: close\r\n\r\n", source="127.0.0.2", timeout=10)
            elapsed = time.monotonic() - started
            held = keyguard.open_descriptors()
        finally:
            for sock in idle:
                sock.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and b'"key_version": 1' in answer, answer[:300]
    assert elapsed < 5
    assert held < 120, f"{held} descriptors held for 200 idle connections"


def test_a_refused_body_is_never_read_as_a_second_request(keyguard):
    # The baseline read at most 1 MiB of a refused body and took what followed for a request.
    inner = b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + b"\r\n"
    body = b"x" * (1 << 20) + inner
    head = b"POST /v1/completions HTTP/1.1\r\n" + HOST + b"Content-Length: %d\r\n\r\n" % len(body)
    with keyguard.tls_socket() as sock:
        try:
            sock.sendall(head + body)
        except OSError:
            pass  # closed after the refusal, as it should be
        answer = read_until_closed(sock)
    assert answer.startswith(b"HTTP/1.1 401 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:500]
    time.sleep(0.2)
    assert keyguard.log().count(" 401 ") == 1, keyguard.log()
    assert forwarded(keyguard) == []


def test_models_are_answered_from_this_hosts_models_and_never_forwarded(keyguard):
    status, body, _ = keyguard.request("GET", "/v1/models", key=INTERNAL_KEY)
    assert status == 200 and sorted(m["id"] for m in body["data"]) == ["other", "tiny"]
    status, _, _ = keyguard.request("POST", "/v1/completions", key=INTERNAL_KEY, body={"prompt": "no model named"})
    assert status == 400
    assert forwarded(keyguard) == []


LOOSE = {
    "HTTP/1.1 without Host": b"GET /citadel/whoami HTTP/1.1\r\n\r\n",
    "a control character in a value": b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + b"X-Note: a\x01b\r\n\r\n",
    "a newline in the target": b"GET /v1/models\n HTTP/1.1\r\n" + HOST + b"\r\n",
}


@pytest.mark.parametrize("name", list(LOOSE))
def test_loose_heads_are_refused(keyguard, name):
    key = f"Authorization: Bearer {INTERNAL_KEY}\r\n".encode()
    answer = keyguard.exchange(LOOSE[name].replace(b"\r\n\r\n", b"\r\n" + key + b"\r\n", 1))
    assert answer.startswith(b"HTTP/1.1 400 "), answer[:300]
    time.sleep(0.2)
    assert len(keyguard.log()) < 2000  # the log line holds no part of the head
    assert forwarded(keyguard) == []


def test_connection_close_is_honoured(keyguard):
    request = (b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + f"Authorization: Bearer {INTERNAL_KEY}\r\n".encode()
               + b"Connection: close\r\n\r\n")
    with keyguard.tls_socket(timeout=5) as sock:
        sock.sendall(request * 2)  # a second request after close: never answered
        started = time.monotonic()
        answer = read_until_closed(sock)
    assert answer.count(b"HTTP/1.1 200 ") == 1 and time.monotonic() - started < 3, answer


def test_a_chunked_body_is_refused_not_guessed_at(keyguard):
    # The baseline took a chunked body for none (no Content-Length) and its chunks for the next request.
    inner = b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + f"Authorization: Bearer {INTERNAL_KEY}\r\n\r\n".encode()
    body = b'{"model": "tiny"}'
    answer = keyguard.exchange(b"POST /v1/completions HTTP/1.1\r\n" + HOST
                               + f"Authorization: Bearer {INTERNAL_KEY}\r\n".encode()
                               + b"Transfer-Encoding: chunked\r\n\r\n%x\r\n%s\r\n0\r\n\r\n" % (len(body), body) + inner)
    assert answer.startswith(b"HTTP/1.1 411 ") and answer.count(b"HTTP/1.1 ") == 1, answer[:500]
    assert forwarded(keyguard) == []


def test_a_head_sent_a_byte_at_a_time_is_cut_off_at_its_deadline(keyguard):
    # The baseline's deadline was per read (30 s): a byte every few seconds held the connection forever.
    head = b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + b"X-Slow: " + b"a" * 100
    started = time.monotonic()
    answer = b""
    with keyguard.tls_socket(timeout=0.5) as sock:
        for byte in head:  # a byte every half second: about a minute in all, were it allowed
            try:
                sock.sendall(bytes([byte]))
                answer = sock.recv(65536)
                break
            except TimeoutError:
                continue  # no answer yet: the next byte
            except OSError:
                break
    assert answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert time.monotonic() - started < 15
