"""Issue 15, item 3: bodies of the wrong shape get a clean 400 with a record, never a silent close.

An authenticated client sent `"messages": 1`, `"messages": true` or JSON nested thousands of
levels deep; the handler raised, the client got no answer and nothing was recorded or
counted. Each must be a 400 (JSON error with the request id), one record, and a refusal in
the metrics; nothing reaches the model server.
"""

from __future__ import annotations

import json

import pytest

from tests.adversarial.harness import CHAT

DEEP = b'{"model": "tiny", "messages": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
WRONG = {
    "messages is a number": json.dumps({"model": "tiny", "messages": 1}).encode(),
    "messages is true": json.dumps({"model": "tiny", "messages": True}).encode(),
    "a message is a string": json.dumps({"model": "tiny", "messages": ["hi"]}).encode(),
    "content is a number": json.dumps({"model": "tiny", "messages": [{"role": "user", "content": 5}]}).encode(),
    "prompt is an object": json.dumps({"model": "tiny", "prompt": {"a": 1}}).encode(),
    "deeply nested": DEEP,
    "not UTF-8": b'{"model": "tiny", "messages": "\xff\xfe"}',
}


@pytest.mark.parametrize("name", list(WRONG))
def test_a_body_of_the_wrong_shape_is_a_recorded_400(gateway, upstream, name):
    path = "/v1/completions" if "prompt" in name else "/v1/chat/completions"
    status, body, headers = gateway.request("POST", path, key="ck_w", raw=WRONG[name],
                                            headers={"Content-Type": "application/json"})
    assert status == 400, (name, status, body)
    assert body["error"]["request_id"] == headers["x-request-id"]
    records = gateway.wait_for_records(1)
    assert [(r["request_id"], r["status"], r["client"]) for r in records] == [(headers["x-request-id"], 400, "ward")]
    assert records[0]["refusal"]
    assert gateway.metric('citadel_gateway_requests_total{client="ward"') == 1
    assert upstream.requests == []
    # The connection and the gateway are fine afterwards: a good request is served.
    assert gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0] == 200


@pytest.mark.parametrize("status", [400, 503])
def test_an_error_from_the_model_server_in_any_framing_is_one_record_and_relayed_whole(gateway, upstream, status):
    # vLLM and the keyguard answer errors with a length; a server that sends one chunked must
    # not turn a plain request into a "stream" with two records (seen across vLLM restarts).
    upstream.behaviour.status, upstream.behaviour.chunked_errors = status, True
    got, body, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
    assert got == status and body == {"error": {"message": "stand-in failure, chunked"}}
    assert "transfer-encoding" not in headers  # relayed whole, with its length
    records = gateway.wait_for_records(1)
    assert [(r.get("type", "request"), r["request_id"], r["status"]) for r in records] == [
        ("request", headers["x-request-id"], status)]
    assert records[0]["stream"] is False
