"""Issue 15, item 10: limits come first; ``GET /v1/models`` is the client's own list.

The baseline read an authenticated body whole (up to the client's 1 MiB, for up to 30 s)
before it checked the client's rate and concurrency, so a client at its limit could still
make the gateway hold megabytes per connection. And it forwarded ``GET /v1/models`` to the
model server, which listed every model it serves (the keyguard chose a model by the body of
a GET, or the first one). Now a client over its limit is refused (429) as soon as its head
is read, and the gateway answers ``/v1/models`` itself from the client's policy.
"""

from __future__ import annotations

import json
import time

from tests.adversarial.harness import CHAT


def test_a_client_at_its_concurrency_limit_is_refused_before_its_body_is_read(gateway_with, upstream):
    gateway = gateway_with(policies={"ward": {"models": ["tiny"], "max_tokens": 8, "concurrent_requests": 1}})
    upstream.behaviour.chunks, upstream.behaviour.chunk_delay = 40, 0.1  # holds the one slot for 4 s
    stream = json.dumps({**CHAT, "stream": True}).encode()
    with gateway.tls_socket() as busy, gateway.tls_socket(timeout=5) as second:
        busy.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(stream), stream))
        assert busy.recv(65536).startswith(b"HTTP/1.1 200")
        started = time.monotonic()
        # Only the head of a 1 MB body: the answer must not wait for the body.
        second.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n"
                       b"Content-Length: 1000000\r\n\r\n")
        answer = second.recv(65536)
        assert answer.startswith(b"HTTP/1.1 429"), answer[:200]
        assert time.monotonic() - started < 3
    refused = [r for r in gateway.wait_for_records(2) if r["status"] == 429]
    assert len(refused) == 1 and refused[0]["refusal"] == "concurrency limit" and refused[0]["request_sha256"] is None


def test_models_are_the_clients_own_and_answered_by_the_gateway(gateway_with, upstream):
    gateway = gateway_with(keys={"ward": "ck_w", "lab": "ck_l"},
                           policies={"ward": {"models": ["tiny"]}, "lab": {"models": []}},
                           config={"upstreams": {"tiny": upstream.address, "big": upstream.address}})
    status, body, headers = gateway.request("GET", "/v1/models", key="ck_w")
    assert status == 200 and [m["id"] for m in body["data"]] == ["tiny"] and body["object"] == "list"
    status, body, _ = gateway.request("GET", "/v1/models", key="ck_l")
    assert status == 200 and body["data"] == []
    assert gateway.request("GET", "/v1/models")[0] == 401
    assert upstream.requests == []  # the model server never saw a GET
    records = gateway.wait_for_records(3)
    assert [(r["client"], r["route"], r["status"]) for r in records] == [
        ("ward", "/v1/models", 200), ("lab", "/v1/models", 200), (None, "/v1/models", 401)]
    assert records[0]["request_id"] == headers["x-request-id"] and records[0]["response_sha256"]
