"""Request bodies: parsed within a depth bound, checked for types, and held to output caps.

Every byte a client sends is hostile, including the authenticated ones'. Three steps, in
this order, each answering with a clear refusal (the server sends it as a 400):

``parse_json(raw)``
    UTF-8 JSON with no duplicate field (the gateway and the model server must not read
    two different requests from one body), no NaN or Infinity, nested at most 64 deep.
    The depth is measured on the bytes before ``json.loads`` runs, in linear time, since
    ``json.loads`` itself recurses (very deep input: RecursionError). Raises ValueError.
``check_types(route, body)``
    The fields the gateway or the model server reads have the JSON type the OpenAI API
    gives them: ``messages`` a list of messages with role strings and string or list
    content, ``prompt`` a string, strings or token ids, ``model`` a string, ``stream`` a
    boolean, integer fields integers (not ``"100"``, ``100.0``, ``1e2`` or ``true``: the
    model server would coerce them, past the caps). Unknown fields pass, unchecked.
``cap_outputs(body, max_tokens)``
    Every field that sets the length or the number of outputs: a request's total (tokens
    per choice x choices x prompts, at worst, as with ``ignore_eos``) stays within the
    client's ``max_tokens``. Over it: refused naming the field, or clamped if asked. A
    request that names no length gets the client's limit set on both length fields.

Example::

    >>> body = parse_json(b'{"model": "m", "prompt": ["a", "b"], "max_tokens": 100}')
    >>> check_types("/v1/completions", body) is None
    True
    >>> cap_outputs(body, 128).refusal
    "output cap: max_tokens 100 for each of 2 outputs (2 prompt(s) x 1 choice(s)) is above this client's limit of 128 tokens per request"
    >>> check_types("/v1/chat/completions", {"model": "m", "messages": 1})
    'wrong type: messages must be a list of messages (objects), got an integer'
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from itertools import accumulate

# The same bound as the PHI guard's walk (phi.MAX_DEPTH): one depth limit for a client to meet.
MAX_DEPTH = 32
MAX_LOGPROBS = 20  # vLLM's own default bound (max_logprobs)
LENGTH_FIELDS = ("max_tokens", "max_completion_tokens")  # vLLM's chat route prefers the second

# -- parsing -------------------------------------------------------------------------

_ESCAPE = re.compile(rb"\\.", re.S)  # escapes first: then no quote inside a string is escaped
_STRING = re.compile(rb'"[^"]*"')  # linear: a failed match means no quote follows
_NOT_BRACKET = bytes(c for c in range(256) if c not in b"[]{}")
_STEP = tuple(1 if c in b"[{" else -1 if c in b"]}" else 0 for c in range(256))


def _openers(data: bytes) -> int:
    return data.count(b"[") + data.count(b"{")


def nesting(raw: bytes) -> int:
    """How deep the JSON text's arrays and objects nest (brackets inside strings not counted)."""
    if b"\\" in raw:
        raw = _ESCAPE.sub(b"", raw)
    brackets = _STRING.sub(b"", raw).translate(None, _NOT_BRACKET)
    return max(accumulate(map(_STEP.__getitem__, brackets)), default=0)


def _no_duplicates(pairs: list) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen = set()
        name = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"the body names the field {name[:64]!r} twice")
    return out


def _no_constant(name: str):
    raise ValueError(f"the body is not JSON: {name} is not a number")


def parse_json(raw: bytes, max_depth: int = MAX_DEPTH) -> object:
    """The body as JSON; ValueError with a message a client can act on if it is not."""
    if _openers(raw) > max_depth and nesting(raw) > max_depth:  # the count alone clears most bodies
        raise ValueError(f"the body is nested deeper than {max_depth} levels")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ValueError(f"the body is not UTF-8 (byte {exc.start})") from None
    try:
        return json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except json.JSONDecodeError as exc:
        raise ValueError(f"the body is not JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
    except RecursionError:  # unreachable after the depth check; kept so it can never escape
        raise ValueError(f"the body is nested deeper than {max_depth} levels") from None


# -- types -----------------------------------------------------------------------------


def kind(value: object) -> str:
    """The JSON type of a value, as a refusal names it."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction or an exponent"
    if isinstance(value, str):
        return "a string"
    return "a list" if isinstance(value, list) else "an object"


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_strings(value: object) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) for v in value)


def _is_ints(value: object) -> bool:
    return isinstance(value, list) and all(is_int(v) for v in value)


def _is_prompt(value: object) -> bool:
    """A string, a list of strings, a list of token ids, or a list of lists of token ids."""
    if isinstance(value, str):
        return True
    if not isinstance(value, list) or not value:
        return False
    return _is_strings(value) or _is_ints(value) or all(_is_ints(v) and v for v in value)


# field -> (test, what it must be); null is accepted for every optional field (= absent).
_INTEGER = (is_int, "an integer")
_NUMBER = (_is_number, "a number")
_BOOL = (lambda v: isinstance(v, bool), "true or false")
_STR = (lambda v: isinstance(v, str), "a string")
_OBJECT = (lambda v: isinstance(v, dict), "an object")
_OBJECTS = (lambda v: isinstance(v, list) and all(isinstance(i, dict) for i in v), "a list of objects")
COMMON = {
    "model": _STR, "user": _STR, "stream": _BOOL, "stream_options": _OBJECT, **dict.fromkeys((
        "max_tokens", "max_completion_tokens", "n", "best_of", "min_tokens", "top_k", "seed", "top_logprobs",
        "prompt_logprobs", "truncate_prompt_tokens", "dimensions"), _INTEGER),
    **dict.fromkeys(("temperature", "top_p", "min_p", "presence_penalty", "frequency_penalty",
                     "repetition_penalty", "length_penalty"), _NUMBER),
    **dict.fromkeys(("ignore_eos", "use_beam_search", "echo", "skip_special_tokens", "include_stop_str_in_output",
                     "add_generation_prompt", "continue_final_message", "add_special_tokens",
                     "parallel_tool_calls"), _BOOL),
    "stop": (lambda v: isinstance(v, str) or _is_strings(v), "a string or a list of strings"),
    "stop_token_ids": (_is_ints, "a list of integers"),
    "logit_bias": (lambda v: isinstance(v, dict) and all(_is_number(x) for x in v.values()),
                   "an object of numbers"),
    "chat_template_kwargs": _OBJECT, "response_format": _OBJECT, "tools": _OBJECTS, "documents": _OBJECTS,
    "tool_choice": (lambda v: isinstance(v, str | dict), "a string or an object"),
}
BY_ROUTE = {
    "/v1/chat/completions": {"logprobs": _BOOL},
    "/v1/completions": {"logprobs": _INTEGER, "suffix": _STR,
                        "prompt": (_is_prompt, "a string, a list of strings or a list of token ids")},
    "/v1/embeddings": {"encoding_format": _STR,
                       "input": (_is_prompt, "a string, a list of strings or a list of token ids")},
}
REQUIRED = {"/v1/chat/completions": "messages", "/v1/completions": "prompt", "/v1/embeddings": "input"}
REFUSAL_PREFIXES = ("the body ", "wrong type: ", "wrong value: ", "missing field: ", "output cap: ")


def _wrong(name: str, expected: str, value: object) -> str:
    return f"wrong type: {name} must be {expected}, got {kind(value)}"


def check_types(route: str, body: object) -> str | None:
    """None if the body's fields have their types, else the refusal (naming field and type)."""
    if not isinstance(body, dict):
        return _wrong("the body", "a JSON object", body)
    for name in ("model", REQUIRED.get(route)):
        if name and body.get(name) is None:
            return f"missing field: {name}"
    fields = {**COMMON, **BY_ROUTE.get(route, {})}
    for name, value in body.items():
        if name in fields and value is not None and not fields[name][0](value):
            return _wrong(name, fields[name][1], value)
    return _check_messages(body["messages"]) if "messages" in body else None


_PART_TEXT = {"text": "text", "input_text": "text"}  # content parts whose text reaches the template


def _check_messages(messages: object) -> str | None:
    if not isinstance(messages, list):
        return _wrong("messages", "a list of messages (objects)", messages)
    if not messages:
        return "wrong value: messages must not be empty"
    for index, message in enumerate(messages):
        where = f"messages[{index}]"
        if not isinstance(message, dict):
            return _wrong(where, "a message (an object)", message)
        if not isinstance(message.get("role"), str):
            return _wrong(f"{where}.role", "a string", message.get("role"))
        content = message.get("content")
        if isinstance(content, list):
            for number, part in enumerate(content):
                refusal = _check_part(f"{where}.content[{number}]", part)
                if refusal:
                    return refusal
        elif content is not None and not isinstance(content, str):
            return _wrong(f"{where}.content", "a string or a list of content parts", content)
        for name in ("name", "tool_call_id", "reasoning_content"):
            if message.get(name) is not None and not isinstance(message[name], str):
                return _wrong(f"{where}.{name}", "a string", message[name])
        refusal = _check_tool_calls(where, message.get("tool_calls"))
        if refusal:
            return refusal
    return None


def _check_part(where: str, part: object) -> str | None:
    if not isinstance(part, dict):
        return _wrong(where, "a content part (an object)", part)
    if not isinstance(part.get("type"), str):
        return _wrong(f"{where}.type", "a string", part.get("type"))
    text_field = _PART_TEXT.get(part["type"])
    if text_field and not isinstance(part.get(text_field), str):
        return _wrong(f"{where}.{text_field}", "a string", part.get(text_field))
    return None


def _check_tool_calls(where: str, calls: object) -> str | None:
    if calls is None:
        return None
    if not isinstance(calls, list):
        return _wrong(f"{where}.tool_calls", "a list of tool calls (objects)", calls)
    for index, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if not isinstance(function, dict):
            return _wrong(f"{where}.tool_calls[{index}].function", "an object", function)
        for name in ("name", "arguments"):
            if function.get(name) is not None and not isinstance(function[name], str):
                return _wrong(f"{where}.tool_calls[{index}].function.{name}", "a string", function[name])
    return None


# -- output caps -------------------------------------------------------------------------


@dataclass
class CapResult:
    refusal: str | None  # the reason to refuse (400), or None
    clamped: list[str] = field(default_factory=list)  # the fields lowered to the cap (clamp=True only)
    total_tokens: int = 0  # the most tokens the request may generate: per_choice x choices x prompts
    per_choice: int = 0
    choices: int = 1
    prompts: int = 1
    changed: bool = False  # the body was changed (a length set or clamped): forward the re-serialised body


def prompt_count(body: dict) -> int:
    """How many prompts a request holds: each element of a prompt list generates on its own."""
    prompt = body.get("prompt")
    if isinstance(prompt, list) and prompt and not _is_ints(prompt):
        return len(prompt)
    return 1


class _Refused(Exception):
    pass


def _integers(body: dict) -> dict[str, int]:
    """The integer fields that bound outputs, checked for type and lower bound."""
    found = {}
    for name, least in (("max_tokens", 1), ("max_completion_tokens", 1), ("n", 1), ("best_of", 1),
                        ("min_tokens", 0), ("top_logprobs", 0), ("prompt_logprobs", 0), ("logprobs", 0)):
        value = body.get(name)
        if value is None or (name == "logprobs" and isinstance(value, bool)):  # chat: a boolean
            continue
        if not is_int(value):
            raise _Refused(_wrong(name, "an integer", value))
        if value < least:
            raise _Refused(f"wrong value: {name} must be at least {least}, got {value}")
        found[name] = value
    for name in ("ignore_eos", "use_beam_search"):
        if body.get(name) is not None and not isinstance(body[name], bool):
            raise _Refused(_wrong(name, "true or false", body[name]))
    return found


def cap_outputs(body: dict, max_tokens: int, *, max_choices: int = 1, clamp: bool = False,
                max_logprobs: int = MAX_LOGPROBS) -> CapResult:
    """Hold a generating request (chat or completions) to the client's ``max_tokens`` in all.

    Choices are ``max(n, best_of)`` (beam search too), prompts the elements of a prompt
    list, and each choice may run to its length (``ignore_eos``). Over a cap: a refusal
    naming the field, or with ``clamp`` the field lowered (listed in ``clamped``); more
    outputs than ``max_tokens`` allows tokens for are always refused. The body is changed
    only when nothing is refused: a length set on both fields when it names none, and
    what was clamped.
    """
    try:
        return _cap(body, max_tokens, max_choices, clamp, max_logprobs)
    except _Refused as refused:
        return CapResult(str(refused))


def _outputs(prompts: int, choices: int) -> str:
    return f"{prompts * choices} outputs ({prompts} prompt(s) x {choices} choice(s))"


def _cap(body: dict, max_tokens: int, max_choices: int, clamp: bool, max_logprobs: int) -> CapResult:
    given = _integers(body)
    changes: dict[str, int] = {}

    def cap(name: str, limit: int, what: str) -> int | None:
        value = given.get(name)
        if value is None or value <= limit:
            return value
        if not clamp:
            raise _Refused(f"output cap: {name} {value} is above {what}")
        changes[name] = limit
        return limit

    if "best_of" in given and given["best_of"] < given.get("n", 1):
        raise _Refused(f"wrong value: best_of ({given['best_of']}) must be at least n ({given.get('n', 1)})")
    n = cap("n", max_choices, f"this client's limit of {max_choices} choices") or 1
    best_of = cap("best_of", max_choices, f"this client's limit of {max_choices} choices") or n
    choices, prompts = max(n, best_of), prompt_count(body)
    per_choice = max_tokens // (choices * prompts)
    if per_choice < 1:
        raise _Refused(f"output cap: {_outputs(prompts, choices)} are more than this client's limit of "
                       f"{max_tokens} tokens allows")
    asked = [(given[name], name) for name in LENGTH_FIELDS if name in given]
    if not asked:
        changes.update(dict.fromkeys(LENGTH_FIELDS, per_choice))  # vLLM's default would be the whole context
    else:
        value, name = max(asked)
        if value > per_choice:
            if not clamp:
                each = f" for each of {_outputs(prompts, choices)}" if prompts * choices > 1 else ""
                raise _Refused(f"output cap: {name} {value}{each} is above this client's limit of {max_tokens} "
                               "tokens per request")
            changes.update({other: per_choice for _, other in asked if given[other] > per_choice})
        else:
            per_choice = value
    cap("min_tokens", per_choice, f"the {per_choice} tokens each output may have")
    for name in ("logprobs", "top_logprobs", "prompt_logprobs"):
        cap(name, max_logprobs, f"the limit of {max_logprobs}")
    body.update(changes)
    clamped = sorted(name for name in changes if name in given)
    return CapResult(None, clamped, per_choice * choices * prompts, per_choice, choices, prompts, bool(changes))
