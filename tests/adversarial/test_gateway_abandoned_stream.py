"""Issue 15, item 6: when a client drops a stream, the gateway drops the model server's too.

The baseline never closed its connection to the model server when a client went away
mid-stream, so generation went on to the end, the client's concurrency slot was held all
the while (its limit no longer held), and the record said 200 with no trace of the
disconnect. Now the upstream connection is closed within a second (the stand-in notes when
its writes start failing: `cut_at`), the slot is free again at once, and the stream's end
record says it was cut by the client.
"""

from __future__ import annotations

import json
import time

from tests.adversarial.harness import CHAT

STREAM = json.dumps({**CHAT, "stream": True}).encode()
HEAD = (b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n"
        b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(STREAM))


def test_a_dropped_stream_closes_the_upstream_frees_the_slot_and_is_recorded(gateway_with, upstream):
    gateway = gateway_with(policies={"ward": {"models": ["tiny"], "max_tokens": 8, "concurrent_requests": 1}})
    upstream.behaviour.chunks, upstream.behaviour.chunk_delay = 200, 0.05  # ten seconds of tokens
    sock = gateway.tls_socket()
    sock.sendall(HEAD + STREAM)
    assert sock.recv(65536).startswith(b"HTTP/1.1 200")
    sock.close()
    dropped = time.monotonic()

    # The one concurrency slot is free again: a new request is served, not refused (429).
    deadline = time.monotonic() + 5
    while (status := gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0]) == 429:
        assert time.monotonic() < deadline, "the dropped stream still holds the client's concurrency slot"
        time.sleep(0.1)
    assert status == 200

    stream_seen = next(seen for seen in upstream.requests if seen.json.get("stream"))
    deadline = time.monotonic() + 5
    while stream_seen.cut_at is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stream_seen.cut_at is not None, "the model server is still generating for a client that left"
    # Within 1 s of the drop, plus the stand-in's own delay before its next write notices.
    assert stream_seen.cut_at - dropped < 1 + 2 * upstream.behaviour.chunk_delay

    ends = [r for r in gateway.wait_for_records(3) if r.get("type") == "stream_end"]
    assert [(e["request_id"], e["outcome"]) for e in ends] == [(stream_seen.request_id, "cut by client")]
    assert ends[0]["duration_ms"] < 5000
    assert gateway.chain_ok()
