"""Issue 15, item 5: every field that sets the length or the number of outputs is capped, whatever its type.

On the baseline ``max_completion_tokens`` given as a string, a float or an exponent
(``"100000"``, ``100000.0``, ``1e5``) was forwarded unchecked (vLLM prefers that field and
coerces it), and ``n``, ``best_of``, ``min_tokens`` with ``ignore_eos`` and prompt lists
multiplied the output without any bound. Now each is refused (400, the field named), or, for
a client whose policy says ``clamp_outputs``, lowered to the cap; the record says which.
Nothing over the cap reaches the model server.
"""

from __future__ import annotations

import json

import pytest

from tests.adversarial.harness import CHAT

LIMIT = 8  # the client's max_tokens: all its outputs together
OVER = {
    "max_completion_tokens as a string": ("/v1/chat/completions", {**CHAT, "max_completion_tokens": "100000"}),
    "max_completion_tokens as a float": ("/v1/chat/completions", {**CHAT, "max_completion_tokens": 100000.0}),
    "max_completion_tokens as an exponent": ("/v1/chat/completions", b"EXPONENT"),
    "max_tokens as true": ("/v1/chat/completions", {**CHAT, "max_tokens": True}),
    "n choices": ("/v1/chat/completions", {**CHAT, "n": 5}),
    "best_of": ("/v1/completions", {"model": "tiny", "prompt": "hi", "best_of": 5}),
    "min_tokens with ignore_eos": ("/v1/chat/completions", {**CHAT, "min_tokens": 100, "ignore_eos": True}),
    "a prompt list": ("/v1/completions", {"model": "tiny", "prompt": ["a"] * 20}),
    "max_tokens over the limit": ("/v1/completions", {"model": "tiny", "prompt": "hi", "max_tokens": 100000}),
}


def payload(body) -> bytes:
    if body == b"EXPONENT":  # json.dumps would write 100000.0: the exponent is only in raw JSON
        return json.dumps(CHAT)[:-1].encode() + b', "max_completion_tokens": 1e5}'
    return json.dumps(body).encode()


def outputs_asked(seen) -> int:
    """The most tokens a forwarded request could make the model server generate."""
    body = seen.json
    per_choice = max(int(body.get(k) or 0) for k in ("max_tokens", "max_completion_tokens"))
    choices = max(int(body.get("n") or 1), int(body.get("best_of") or 1))
    prompts = len(body["prompt"]) if isinstance(body.get("prompt"), list) else 1
    return max(per_choice, int(body.get("min_tokens") or 0)) * choices * prompts


@pytest.mark.parametrize("name", list(OVER))
def test_a_request_over_the_output_cap_is_refused_and_never_forwarded(gateway, upstream, name):
    route, body = OVER[name]
    status, answer, headers = gateway.request("POST", route, key="ck_w", raw=payload(body))
    assert status == 400, (name, status, answer)
    record = gateway.wait_for_records(1)[-1]
    assert record["request_id"] == headers["x-request-id"] and record["status"] == 400 and record["refusal"]
    assert upstream.requests == []


@pytest.mark.parametrize("name", ["n choices", "min_tokens with ignore_eos", "max_tokens over the limit"])
def test_a_clamping_client_is_held_to_the_cap_and_the_record_says_what_was_lowered(gateway_with, upstream, name):
    gateway = gateway_with(policies={"ward": {"models": ["tiny"], "max_tokens": LIMIT, "clamp_outputs": True}})
    route, body = OVER[name]
    status, _, headers = gateway.request("POST", route, key="ck_w", raw=payload(body))
    assert status == 200, name
    record = gateway.wait_for_records(1)[-1]
    assert record["request_id"] == headers["x-request-id"] and record["clamped"]
    assert outputs_asked(upstream.requests[-1]) <= LIMIT


def test_a_request_within_the_cap_gets_the_clients_limit_when_it_names_none(gateway, upstream):
    assert gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0] == 200
    forwarded = upstream.requests[-1].json
    assert forwarded["max_tokens"] == forwarded["max_completion_tokens"] == LIMIT
    assert outputs_asked(upstream.requests[-1]) <= LIMIT
