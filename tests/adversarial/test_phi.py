"""Issue 15, items 11 and 1 (the PHI guard's part): no field or spelling slips past it, and no
prompt makes it slow.

On the baseline, block mode scanned only prompt, input and message content: an SSN in
`documents`, in a tool call's arguments or in `chat_template_kwargs`, or split by zero-width
characters, reached the model server. And its e-mail pattern backtracked quadratically: a
1 MiB prompt of "a." took many minutes to scan. Now every string that can reach the chat
template is scanned after normalisation, each pattern in linear time.
"""

from __future__ import annotations

import json
import time

import pytest

from tests.adversarial.harness import CHAT

SSN = "123-45-6789"
MESSAGES = [{"role": "user", "content": "Summarise the attached note."}]
HIDDEN = {
    "in documents": {"documents": [{"title": "note", "text": f"SSN {SSN}"}]},
    "in a tool call's arguments": {"messages": MESSAGES + [{"role": "assistant", "content": None, "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"ssn": SSN})}}]}]},
    "in chat_template_kwargs": {"chat_template_kwargs": {"context": {"patient": [f"SSN {SSN}"]}}},
    "in a tool's description": {"tools": [{"type": "function", "function": {"name": "f", "description": SSN}}]},
    "in a message's name": {"messages": [{"role": "user", "name": SSN, "content": "hi"}]},
    "split by zero-width characters": {"messages": [{"role": "user", "content": "SSN 1\u200b23-4\u200c5-67\u2060" "89"}]},
    "in full-width characters": {"messages": [{"role": "user", "content": "SSN １２３－４５－６７８９"}]},
}


def blocking(gateway_with, mode: str = "block"):
    return gateway_with(policies={"ward": {"models": ["tiny"], "max_tokens": 8, "phi": mode}})


@pytest.mark.parametrize("place", list(HIDDEN))
def test_block_mode_refuses_an_identifier_wherever_it_hides(gateway_with, upstream, place):
    gateway = blocking(gateway_with)
    body = {"model": "tiny", "messages": MESSAGES, **HIDDEN[place]}
    status, answer, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=body)
    assert status == 422, (place, status, answer)
    assert answer["error"]["request_id"] == headers["x-request-id"]
    record = gateway.wait_for_records(1)[-1]
    assert (record["status"], record["phi"]) == (422, {"ssn": 1})
    assert upstream.requests == []  # it never reached the model server
    assert gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0] == 200


def test_redact_mode_forwards_no_hidden_identifier(gateway_with, upstream):
    gateway = blocking(gateway_with, "redact")
    body = {"model": "tiny", "messages": MESSAGES}
    for hidden in HIDDEN.values():
        for key, value in hidden.items():
            body[key] = value if key != "messages" else body.get(key, []) + value
    status, answer, _ = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=body)
    assert status == 200, answer
    forwarded = upstream.requests[-1].body.decode()
    assert not any(digits in forwarded for digits in ("6789", "67\\u2060", "\\uff16\\uff17\\uff18\\uff19")), forwarded
    assert forwarded.count("[SSN]") == len(HIDDEN)
    assert gateway.wait_for_records(1)[-1]["phi"] == {"ssn": len(HIDDEN)}


# The old e-mail pattern's quadratic cases: runs of its local-part characters with no '@'.
SLOW_ON_THE_BASELINE = ("a.", "1-", "+1", "1.")


@pytest.mark.parametrize("shape", SLOW_ON_THE_BASELINE)
def test_a_worst_case_mebibyte_prompt_is_answered_in_seconds(gateway_with, upstream, shape):
    gateway = blocking(gateway_with, "detect")
    body = {"model": "tiny", "messages": [{"role": "user", "content": ""}]}
    room = (1 << 20) - len(json.dumps(body)) - 64  # the client's body limit is 1 MiB
    body["messages"][0]["content"] = shape * (room // len(shape))
    started = time.monotonic()
    status, answer, _ = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=body, timeout=15)
    elapsed = time.monotonic() - started
    assert status == 200, answer
    assert elapsed < 5, f"{elapsed:.1f} s for one 1 MiB prompt of {shape!r}"
