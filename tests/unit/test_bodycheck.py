"""Request bodies: bounded parsing, JSON types, and output caps on every field (issue 15, items 3 and 5)."""

from __future__ import annotations

import copy
import json
import random
import time

import pytest

from citadel_runtime.gateway import phi
from citadel_runtime.gateway.bodycheck import (
    LENGTH_FIELDS,
    MAX_DEPTH,
    REFUSAL_PREFIXES,
    cap_outputs,
    check_types,
    nesting,
    parse_json,
)

CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"
EMBEDDINGS = "/v1/embeddings"


def chat(**fields) -> dict:
    return {"model": "m", "messages": [{"role": "user", "content": "hi"}], **fields}


def completion(**fields) -> dict:
    return {"model": "m", "prompt": "hi", **fields}


# -- parse_json -------------------------------------------------------------------------------


def test_json_is_parsed_up_to_the_depth_bound_and_refused_beyond_it():
    assert MAX_DEPTH == phi.MAX_DEPTH  # one depth limit, whichever step meets it first
    assert parse_json(b"[" * MAX_DEPTH + b"]" * MAX_DEPTH) is not None
    with pytest.raises(ValueError, match=f"nested deeper than {MAX_DEPTH} levels"):
        parse_json(b"[" * (MAX_DEPTH + 1) + b"]" * (MAX_DEPTH + 1))
    nested = b'{"messages": ' + b'{"a": ' * MAX_DEPTH + b"1" + b"}" * MAX_DEPTH + b"}"
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json(nested)


@pytest.mark.parametrize("raw", [
    b"[" * 1_000_000,  # unclosed: json.loads would recurse until RecursionError
    b'{"a":' * 200_000,
    b"[" * 500_000 + b"]" * 500_000,
])
def test_very_deep_input_is_refused_quickly_and_never_reaches_json_loads(raw):
    started = time.perf_counter()
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json(raw)
    assert time.perf_counter() - started < 5  # about 50 ms; generous for a busy CI machine


@pytest.mark.parametrize("raw", [
    b'{"prompt": "' + b"[" * 1000 + b'"}',  # brackets inside a string do not nest
    b'{"prompt": "\\"' + b"{" * 1000 + b'\\\\"}',  # escaped quotes and backslashes inside it
    b'{"a": "\\\\", "b": "' + b"[" * 100 + b'"}',
])
def test_brackets_inside_strings_do_not_count(raw):
    assert isinstance(parse_json(raw), dict)


def random_json(rng: random.Random, depth: int = 0):
    pick = rng.random()
    if depth > 70 or pick < 0.3:
        return rng.choice(["a[b", 'q"]{', "\\", "\\\"[", "", 1, 2.5, True, None, "\u2028x", "é{"])
    if pick < 0.65:
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    return {f"k{n}[": random_json(rng, depth + 1) for n in range(rng.randint(0, 3))}


def reference_depth(value) -> int:
    if isinstance(value, list):
        return 1 + max(map(reference_depth, value), default=0)
    if isinstance(value, dict):
        return 1 + max(map(reference_depth, value.values()), default=0)
    return 0


def test_the_depth_scan_agrees_with_the_parsed_depth_on_generated_json():
    rng = random.Random(15)
    for _ in range(400):
        value = random_json(rng)
        raw = json.dumps(value, ensure_ascii=rng.random() < 0.5).encode()
        assert nesting(raw) == reference_depth(value), raw


@pytest.mark.parametrize("raw,message", [
    (b"\xff\xfe{}", "not UTF-8"),
    (b'{"max_tokens": 1, "max_tokens": 100000}', "names the field 'max_tokens' twice"),
    (b'{"temperature": NaN}', "NaN is not a number"),
    (b'{"n": Infinity}', "Infinity is not a number"),
    (b'{"model": "m",}', "not JSON"),
    (b"", "not JSON"),
    (b"1" * 5000, "not JSON|digits"),
])
def test_bodies_that_are_not_plain_json_are_refused_with_a_reason(raw, message):
    with pytest.raises(ValueError, match=message):
        parse_json(raw)


# -- check_types -----------------------------------------------------------------------------


@pytest.mark.parametrize("body,reason", [
    # The issue's cases: these crashed the handler.
    (chat(messages=1), "wrong type: messages must be a list of messages (objects), got an integer"),
    (chat(messages=True), "wrong type: messages must be a list of messages (objects), got a boolean"),
    (chat(messages="hi"), "wrong type: messages must be a list of messages (objects), got a string"),
    (chat(messages=[]), "wrong value: messages must not be empty"),
    (chat(messages=["hi"]), "wrong type: messages[0] must be a message (an object), got a string"),
    (chat(messages=[{"content": "hi"}]), "wrong type: messages[0].role must be a string, got null"),
    (chat(messages=[{"role": 1, "content": "hi"}]), "wrong type: messages[0].role must be a string, got an integer"),
    (chat(messages=[{"role": "user", "content": 5}]),
     "wrong type: messages[0].content must be a string or a list of content parts, got an integer"),
    (chat(messages=[{"role": "user", "content": {"text": "x"}}]),
     "wrong type: messages[0].content must be a string or a list of content parts, got an object"),
    (chat(messages=[{"role": "user", "content": ["x"]}]),
     "wrong type: messages[0].content[0] must be a content part (an object), got a string"),
    (chat(messages=[{"role": "user", "content": [{"text": "x"}]}]),
     "wrong type: messages[0].content[0].type must be a string, got null"),
    (chat(messages=[{"role": "user", "content": [{"type": "text", "text": ["x"]}]}]),
     "wrong type: messages[0].content[0].text must be a string, got a list"),
    (chat(messages=[{"role": "assistant", "tool_calls": {"id": 1}}]),
     "wrong type: messages[0].tool_calls must be a list of tool calls (objects), got an object"),
    (chat(messages=[{"role": "assistant", "tool_calls": [{"function": {"name": "f", "arguments": {"a": 1}}}]}]),
     "wrong type: messages[0].tool_calls[0].function.arguments must be a string, got an object"),
    (chat(messages=[{"role": "user", "content": "x", "name": 3}]), "wrong type: messages[0].name must be a string"),
    # The body and its model.
    ([], "wrong type: the body must be a JSON object, got a list"),
    ("x", "wrong type: the body must be a JSON object, got a string"),
    ({"messages": []}, "missing field: model"),
    (chat(model=7), "wrong type: model must be a string, got an integer"),
    ({"model": "m"}, "missing field: messages"),
    # Scalars: no coercion, whatever the model server would do with them.
    (chat(stream="true"), "wrong type: stream must be true or false, got a string"),
    (chat(stream=1), "wrong type: stream must be true or false, got an integer"),
    (chat(max_completion_tokens="100000"), "wrong type: max_completion_tokens must be an integer, got a string"),
    (chat(max_completion_tokens=100000.0),
     "wrong type: max_completion_tokens must be an integer, got a number with a fraction or an exponent"),
    (chat(max_completion_tokens=1e5), "wrong type: max_completion_tokens must be an integer, got a number"),
    (chat(max_tokens=True), "wrong type: max_tokens must be an integer, got a boolean"),
    (chat(n="2"), "wrong type: n must be an integer"),
    (chat(temperature="0.5"), "wrong type: temperature must be a number, got a string"),
    (chat(logprobs=5), "wrong type: logprobs must be true or false, got an integer"),
    (chat(stop=["a", 1]), "wrong type: stop must be a string or a list of strings, got a list"),
    (chat(ignore_eos="yes"), "wrong type: ignore_eos must be true or false"),
    (chat(use_beam_search=1), "wrong type: use_beam_search must be true or false"),
    (chat(documents="notes"), "wrong type: documents must be a list of objects"),
    (chat(chat_template_kwargs=[1]), "wrong type: chat_template_kwargs must be an object"),
    (chat(logit_bias={"1": "x"}), "wrong type: logit_bias must be an object of numbers"),
    # Prompts and inputs.
    (completion(prompt=5), "wrong type: prompt must be a string, a list of strings or a list of token ids"),
    (completion(prompt=[1, "a"]), "wrong type: prompt must be"),
    (completion(prompt=[]), "wrong type: prompt must be"),
    (completion(prompt=[[1], []]), "wrong type: prompt must be"),
    (completion(prompt=[True]), "wrong type: prompt must be"),
    (completion(logprobs=True), "wrong type: logprobs must be an integer, got a boolean"),
    ({"model": "m", "prompt": None}, "missing field: prompt"),
    ({"model": "m", "input": {"a": 1}}, "wrong type: input must be"),
])
def test_wrong_json_types_are_refused_naming_the_field_and_the_type(body, reason):
    route = COMPLETIONS if isinstance(body, dict) and "prompt" in body else CHAT
    route = EMBEDDINGS if isinstance(body, dict) and "input" in body else route
    refusal = check_types(route, body)
    assert refusal is not None and refusal.startswith(reason), refusal
    assert refusal.startswith(REFUSAL_PREFIXES)


@pytest.mark.parametrize("route,body", [
    (CHAT, chat(stream=True, max_completion_tokens=5, temperature=0, top_p=0.9, logprobs=True, top_logprobs=2,
                stop=["\n"], n=None, user="u", stream_options={"include_usage": True})),
    (CHAT, chat(messages=[{"role": "system", "content": "be brief"},
                          {"role": "user", "content": [{"type": "text", "text": "hi"},
                                                       {"type": "image_url", "image_url": {"url": "x"}}]},
                          {"role": "assistant", "content": None,
                           "tool_calls": [{"id": "c", "type": "function",
                                           "function": {"name": "f", "arguments": "{}"}}]},
                          {"role": "tool", "tool_call_id": "c", "content": "ok"}])),
    (COMPLETIONS, completion(prompt=["a", "b"], max_tokens=5, logprobs=2, echo=False, seed=1)),
    (COMPLETIONS, completion(prompt=[1, 2, 3])),
    (COMPLETIONS, completion(prompt=[[1, 2], [3]])),
    (EMBEDDINGS, {"model": "m", "input": ["a", "b"], "encoding_format": "float"}),
    (CHAT, chat(vllm_anything={"unknown": ["fields", "pass"]})),
])
def test_well_typed_bodies_pass(route, body):
    assert check_types(route, body) is None


def test_deeply_nested_json_from_the_issue_is_refused_before_any_handler_sees_it():
    raw = b'{"model": "m", "messages": ' + b"[" * 10_000 + b"]" * 10_000 + b"}"
    with pytest.raises(ValueError, match="nested deeper"):
        parse_json(raw)


# -- cap_outputs ------------------------------------------------------------------------------


def test_a_request_without_a_length_gets_the_clients_limit_on_both_fields():
    body = chat()
    result = cap_outputs(body, 512)
    assert result.refusal is None and result.changed and result.clamped == []
    assert body["max_tokens"] == body["max_completion_tokens"] == 512 and result.total_tokens == 512
    body = chat(max_tokens=None)  # null is absent
    assert cap_outputs(body, 512).changed and body["max_tokens"] == 512


def test_a_request_within_its_limit_is_left_as_it_is():
    body = chat(max_completion_tokens=100)
    before = copy.deepcopy(body)
    result = cap_outputs(body, 512)
    assert result.refusal is None and not result.changed and body == before
    assert (result.per_choice, result.choices, result.prompts, result.total_tokens) == (100, 1, 1, 100)


@pytest.mark.parametrize("fields,reason", [
    # The issue's bypasses: a string, a float, an exponent (JSON 1e5 is a float), a boolean.
    ({"max_completion_tokens": "100000"}, "wrong type: max_completion_tokens must be an integer, got a string"),
    ({"max_completion_tokens": 100000.0}, "wrong type: max_completion_tokens must be an integer"),
    ({"max_completion_tokens": 1e5}, "wrong type: max_completion_tokens must be an integer"),
    ({"max_tokens": True}, "wrong type: max_tokens must be an integer, got a boolean"),
    ({"n": 2.0}, "wrong type: n must be an integer"),
    ({"min_tokens": "10"}, "wrong type: min_tokens must be an integer"),
    ({"ignore_eos": "true"}, "wrong type: ignore_eos must be true or false"),
    ({"use_beam_search": 1}, "wrong type: use_beam_search must be true or false"),
    # Over the cap, whichever field says it.
    ({"max_completion_tokens": 100000}, "output cap: max_completion_tokens 100000 is above this client's limit of "
                                        "512 tokens per request"),
    ({"max_tokens": 10, "max_completion_tokens": 600}, "output cap: max_completion_tokens 600"),
    ({"max_tokens": 600, "max_completion_tokens": 10}, "output cap: max_tokens 600"),
    ({"n": 4}, "output cap: n 4 is above this client's limit of 1 choices"),
    ({"best_of": 8}, "output cap: best_of 8 is above this client's limit of 1 choices"),
    ({"n": 1, "best_of": 5, "use_beam_search": True}, "output cap: best_of 5"),
    ({"min_tokens": 1000, "ignore_eos": True}, "output cap: min_tokens 1000 is above the 512 tokens each output"),
    ({"max_tokens": 100, "min_tokens": 200}, "output cap: min_tokens 200 is above the 100 tokens"),
    ({"logprobs": 100}, "output cap: logprobs 100 is above the limit of 20"),
    ({"top_logprobs": 21, "logprobs": True}, "output cap: top_logprobs 21"),
    ({"prompt_logprobs": 1000}, "output cap: prompt_logprobs 1000"),
    # Values no model server accepts.
    ({"max_tokens": 0}, "wrong value: max_tokens must be at least 1, got 0"),
    ({"n": 0}, "wrong value: n must be at least 1"),
    ({"min_tokens": -1}, "wrong value: min_tokens must be at least 0"),
    ({"n": 3, "best_of": 2}, "wrong value: best_of (2) must be at least n (3)"),
])
def test_every_field_that_sets_the_length_or_the_number_of_outputs_is_capped(fields, reason):
    body = chat(**fields)
    before = copy.deepcopy(body)
    result = cap_outputs(body, 512)
    assert result.refusal is not None and result.refusal.startswith(reason), result.refusal
    assert body == before  # nothing half-applied


def test_prompt_lists_multiply_the_outputs():
    body = completion(prompt=["a"] * 4, max_tokens=200)
    result = cap_outputs(body, 512)
    assert result.refusal.startswith("output cap: max_tokens 200 for each of 4 outputs (4 prompt(s) x 1 choice(s))")
    body = completion(prompt=["a"] * 4)
    result = cap_outputs(body, 512)
    assert result.refusal is None and body["max_tokens"] == 128 and result.total_tokens == 512
    body = completion(prompt=[[1, 2]] * 600)
    assert cap_outputs(body, 512, clamp=True).refusal.startswith("output cap: 600 outputs")  # never clamped away
    body = completion(prompt=[1, 2, 3], max_tokens=512)  # token ids: one prompt
    assert cap_outputs(body, 512).refusal is None


def test_choices_multiply_the_outputs_when_the_client_may_have_several():
    body = chat(n=4)
    result = cap_outputs(body, 512, max_choices=4)
    assert result.refusal is None and body["max_completion_tokens"] == 128 and result.total_tokens == 512
    body = chat(n=2, best_of=4, max_tokens=200)
    assert cap_outputs(body, 512, max_choices=4).refusal.startswith("output cap: max_tokens 200 for each of 4 outputs")


def test_clamping_lowers_each_field_to_its_cap_and_says_which():
    body = chat(max_tokens=100, max_completion_tokens=100000, n=3, min_tokens=600, top_logprobs=50, logprobs=True)
    result = cap_outputs(body, 512, clamp=True)
    assert result.refusal is None and result.changed
    assert result.clamped == ["max_completion_tokens", "min_tokens", "n", "top_logprobs"]
    assert (body["max_tokens"], body["max_completion_tokens"], body["n"], body["min_tokens"], body["top_logprobs"]) \
        == (100, 512, 1, 512, 20)
    assert result.total_tokens == 512
    body = completion(prompt=["a", "b"], max_tokens=512)
    result = cap_outputs(body, 512, clamp=True)
    assert result.clamped == ["max_tokens"] and body["max_tokens"] == 256 and result.total_tokens == 512


def test_wrong_types_are_refused_even_when_clamping():
    body = chat(max_completion_tokens="100000")
    assert cap_outputs(body, 512, clamp=True).refusal.startswith("wrong type")
    assert body["max_completion_tokens"] == "100000"


def test_every_length_field_is_known():
    assert LENGTH_FIELDS == ("max_tokens", "max_completion_tokens")
