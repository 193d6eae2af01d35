"""Issue 15, item 4: no byte of an answer leaves before its request's record is durable.

With the disk full, the baseline still delivered the answer whose record had failed (the
503 started only with the next request), and a stream was recorded only after it ended, so
every stream in flight when the disk filled went unrecorded. Now:

- with the log on /dev/full (every write fails, ENOSPC), no answer at all is delivered:
  each request gets a 503 and nothing of its answer, refusals included;
- when the disk fills while the gateway runs (the gateway's file size limit, EFBIG), the
  next answer is a 503, and once there is space again it serves, with the chain intact;
- a stream's request record is on disk before its first byte reaches the client
  (``stream: "started"``), and a second record of type ``stream_end``, linked by the
  request id, says how it ended.
"""

from __future__ import annotations

import json

from tests.adversarial.harness import CHAT


def test_with_the_log_on_a_full_disk_no_answer_is_delivered(gateway_with, upstream):
    gateway = gateway_with(config={"audit_log": "/dev/full"})
    for key in ("ck_w", None):  # an answer, and a refusal: neither leaves unrecorded
        status, body, _ = gateway.request("POST", "/v1/chat/completions", key=key, body=CHAT)
        assert status == 503 and "audit log" in body["error"]["message"], (key, status, body)
        assert "choices" not in body
    assert gateway.admin("/health")[0] == 503


def test_when_the_disk_fills_and_frees_the_gateway_fails_closed_then_serves_with_the_chain_intact(gateway):
    assert gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0] == 200
    gateway.wait_for_records(1)
    gateway.limit_file_size(gateway.audit_log.stat().st_size + 10)  # the disk is full now
    for _ in range(3):
        status, body, _ = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
        assert status == 503 and "choices" not in body, (status, body)
    gateway.limit_file_size(None)  # space again
    # The first request after that may still be refused (503), but its record is written,
    # which shows the log works again: from the next one on, the gateway serves.
    gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
    status, body, _ = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
    assert status == 200 and body["choices"], (status, body)
    records = gateway.records()
    assert gateway.chain_ok()
    assert [r["status"] for r in records if r.get("type", "request") == "request"][0] == 200
    assert records[-1]["status"] == 200


def test_a_stream_is_recorded_before_its_first_byte_and_its_end_is_recorded_too(gateway, upstream):
    upstream.behaviour.chunks, upstream.behaviour.chunk_delay = 4, 0.5
    with gateway.tls_socket() as sock:
        body = json.dumps({**CHAT, "stream": True}).encode()
        sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n"
                     b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
        first = sock.recv(65536)
        assert first.startswith(b"HTTP/1.1 200"), first
        request_id = next(line.split(b": ")[1].decode() for line in first.split(b"\r\n")
                          if line.lower().startswith(b"x-request-id"))
        on_disk = gateway.records()  # read the moment the first bytes arrived, before the stream ends
        assert [(r["request_id"], r["status"], r["stream"]) for r in on_disk] == [(request_id, 200, "started")]
        rest = b""
        while not rest.endswith(b"0\r\n\r\n"):
            piece = sock.recv(65536)
            assert piece, "the stream ended without its last chunk"
            rest += piece
    end = gateway.wait_for_records(2)[-1]
    assert end["type"] == "stream_end" and end["request_id"] == request_id
    assert end["outcome"] == "completed" and end["bytes"] > 0 and end["duration_ms"] >= 1000
    assert gateway.chain_ok()


def test_a_stream_whose_record_cannot_be_written_gets_a_503_and_nothing_of_the_answer(gateway, upstream):
    assert gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0] == 200
    gateway.wait_for_records(1)
    gateway.limit_file_size(gateway.audit_log.stat().st_size + 10)
    status, body, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w", body={**CHAT, "stream": True})
    assert status == 503 and "audit log" in body["error"]["message"], (status, body)
    assert "text/event-stream" not in headers.get("content-type", "")
