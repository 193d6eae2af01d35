"""The PHI guard (citadel_runtime/gateway/phi.py): what it finds, where it looks, how it reads
text, that it runs in linear time on any input, and its precision and recall on the corpus."""

from __future__ import annotations

import doctest
import json
import re
import sys
import time
import unicodedata
from concurrent.futures import ProcessPoolExecutor

import pytest

from citadel_runtime.gateway import phi
from tests.phi_corpus import evaluate, generate
from tests.phi_flood import ADVERSARIAL, cpu_seconds, repeated

MiB = 1 << 20


@pytest.mark.parametrize("text,kinds", [
    ("MRN: 00123456", {"mrn"}), ("call (555) 123-4567", {"phone"}), ("mail a.b@example.org", {"email"}),
    ("SSN 123-45-6789", {"ssn"}), ("MBI 1EG4-TE5-MK73", {"insurance"}), ("member id: XJ99812345", {"insurance"}),
    ("born 03/04/1950", {"date"}), ("on March 3, 2024", {"date"}), ("lives at 12 Oak Street", {"address"}),
    ("seen by Dr. Smith", {"name"}), ("patient: Jane Doe", {"name"}),
    ("The dose is 5 mg twice a day for 10 days.", set()),
    # added with issue 15
    ("a 92-year-old man", {"age"}), ("Age: 95", {"age"}), ("a 45-year-old man", set()),
    ("Dr. O'Brien called", {"name"}), ("Patient Name: Susanne Samuelson", {"name"}), ("Pt: Tolerated well", set()),
    ("mail jane.doe@example.org.", {"email"}), ("+44 20 7946 0958", {"phone"}), ("seen on the 3rd of May", {"date"}),
    ("version 3.11.2, build 2024.3.4", set()), ("insurance coverage pending", set()), ("titrate 5-10-20 mg", set()),
    ("SSN 123\u200b-45-6789", {"ssn"}), ("５５５-１２３-４５６７", {"phone"}), ("5\u200b5\u200b5-12-3456", {"ssn"}),
])
def test_the_phi_guard_finds_each_kind(text, kinds):
    assert set(phi.scan(text)) == kinds


def test_the_phi_guard_redacts_in_place_and_off_sees_nothing():
    body = {"messages": [{"role": "user", "content": "SSN 123-45-6789"},
                         {"role": "user", "content": [{"type": "text", "text": "call 555-123-4567"}]}],
            "prompt": ["DOB 01/02/1960"]}
    counts, changed = phi.guard(body, "redact")
    assert counts == {"ssn": 1, "phone": 1, "date": 1} and changed
    assert "123-45" not in json.dumps(body) and "[SSN]" in json.dumps(body)
    assert phi.guard({"prompt": "SSN 123-45-6789"}, "off") == ({}, False)
    detect = {"prompt": "SSN 123-45-6789"}
    assert phi.guard(detect, "detect") == ({"ssn": 1}, False) and "123-45" in detect["prompt"]


def test_the_examples_in_the_docstrings_hold():
    for module in (phi, evaluate):
        assert doctest.testmod(module).failed == 0, module.__name__


# -- where it looks ---------------------------------------------------------------------------

SSN = "123-45-6789"
# One identifier in each place a request can carry text to the model or its chat template.
PLACES = {
    "prompt": {"prompt": SSN},
    "prompt list": {"prompt": ["ok", SSN]},
    "input": {"input": [SSN]},
    "suffix": {"prompt": "a", "suffix": SSN},
    "message content": {"messages": [{"role": "user", "content": SSN}]},
    "content part": {"messages": [{"role": "user", "content": [{"type": "text", "text": SSN}]}]},
    "message name": {"messages": [{"role": "user", "name": SSN, "content": "hi"}]},
    "role": {"messages": [{"role": SSN, "content": "hi"}]},
    "document dict": {"documents": [{"title": "note", "text": SSN}]},
    "document snippet": {"documents": [{"snippet": SSN}]},
    "document string": {"documents": ["fine", SSN]},
    "tool call arguments": {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c1", "type": "function", "function": {"name": "lookup", "arguments": json.dumps({"ssn": SSN})}}]}]},
    "tool result": {"messages": [{"role": "tool", "tool_call_id": "c1", "content": SSN}]},
    "tool description": {"tools": [{"type": "function", "function": {"name": "f", "description": SSN}}]},
    "tool parameters": {"tools": [{"type": "function", "function": {"name": "f", "parameters": {
        "type": "object", "properties": {"x": {"type": "string", "description": SSN}}}}}]},
    "chat_template_kwargs": {"chat_template_kwargs": {"extra": {"deep": [SSN]}}},
    "system": {"system": SSN},
    "instructions": {"instructions": SSN},
    "stop": {"stop": ["\n", SSN]},
    "a dict key": {"chat_template_kwargs": {SSN: True}},
    "an unknown field": {"vendor_extension": {"notes": SSN}},
}


@pytest.mark.parametrize("place", list(PLACES))
def test_every_string_that_can_reach_the_template_is_scanned_and_redacted(place):
    body = {"model": "tiny", **json.loads(json.dumps(PLACES[place]))}
    assert phi.guard(json.loads(json.dumps(body)), "block") == ({"ssn": 1}, False)
    assert phi.guard(body, "redact") == ({"ssn": 1}, True)
    assert "6789" not in json.dumps(body) and "[SSN]" in json.dumps(body)


def test_the_model_name_and_numbers_are_settings_not_text():
    body = {"model": "llama-2024-08-06", "max_tokens": 5551234567, "temperature": 0.5, "seed": 1234567890,
            "logprobs": True, "messages": [{"role": "user", "content": "hello"}]}
    before = json.dumps(body)
    assert phi.guard(body, "redact") == ({}, False) and json.dumps(body) == before
    assert phi.guard({"messages": [{"role": "user", "content": "2024-08-06"}]}, "detect") == ({"date": 1}, False)


def test_one_pass_over_a_whole_body_finds_what_the_strings_do_one_by_one():
    rows = [row["text"] for row in evaluate.load()]
    body = {"messages": [{"role": "user", "content": text} for text in rows]}
    expected: dict[str, int] = {}
    for text in rows:
        for kind, n in phi.scan(text).items():
            expected[kind] = expected.get(kind, 0) + n
    assert phi.guard(body, "detect") == (expected, False)
    assert phi.guard(body, "redact") == (expected, True)
    assert [message["content"] for message in body["messages"]] == [phi.redact(text) for text in rows]


def test_keys_redacted_alike_stay_distinct_and_in_order():
    body = {"chat_template_kwargs": {"a": 1, "555-123-4567": 2, "555-987-6543": 3, "z": 4}}
    assert phi.guard(body, "redact") == ({"phone": 2}, True)
    assert list(body["chat_template_kwargs"].items()) == [("a", 1), ("[PHONE]", 2), ("[PHONE]'", 3), ("z", 4)]


def test_strings_with_no_finding_are_forwarded_exactly_as_sent():
    untouched = "ﬁne\u200b text with ligatures and a zero-width space"
    body = {"messages": [{"role": "user", "content": untouched}, {"role": "user", "content": "SSN ５５５-12-3456"}]}
    assert phi.guard(body, "redact") == ({"ssn": 1}, True)
    assert body["messages"][0]["content"] == untouched  # not normalised: nothing was found in it
    assert body["messages"][1]["content"] == "SSN [SSN]"  # normalised, then redacted


def test_the_walk_is_bounded_in_depth_and_count():
    def nested(levels: int) -> dict:
        body: dict = {"x": SSN}
        for _ in range(levels - 1):
            body = {"x": body}
        return body
    assert phi.guard(nested(phi.MAX_DEPTH), "detect") == ({"ssn": 1}, False)
    with pytest.raises(phi.BodyTooComplex, match="deeper"):
        phi.guard(nested(phi.MAX_DEPTH + 1), "detect")
    with pytest.raises(phi.BodyTooComplex, match="strings"):
        phi.texts({"prompt": ["a"] * phi.MAX_STRINGS})  # and the key "prompt": one more
    assert phi.guard(nested(1000), "off") == ({}, False)  # off reads nothing
    with pytest.raises(ValueError, match="unknown PHI mode"):
        phi.guard({}, "maybe")


def test_it_runs_in_a_worker_process():
    body = {"model": "tiny", "messages": [{"role": "user", "content": f"call 555-123-4567, SSN {SSN}"}]}
    with ProcessPoolExecutor(max_workers=1) as pool:
        counts, rewritten = pool.submit(phi.guarded, body, "redact").result(timeout=60)
        assert pool.submit(phi.guarded, body, "detect").result(timeout=60) == ({"phone": 1, "ssn": 1}, None)
    assert counts == {"phone": 1, "ssn": 1}
    assert rewritten["messages"][0]["content"] == "call [PHONE], SSN [SSN]"
    assert body["messages"][0]["content"].startswith("call 555")  # the caller's copy: only the result changed


# -- how it reads text ------------------------------------------------------------------------


def test_invisible_characters_are_every_cf_and_the_other_default_ignorables():
    everything = {c for c in range(sys.maxunicode + 1) if unicodedata.category(chr(c)) == "Cf"}
    table = {c for c in range(sys.maxunicode + 1) if phi._INVISIBLE.fullmatch(chr(c))}
    assert everything <= table  # the table walks planes 0, 1 and 14 only: nothing is left out
    assert {0x200B, 0x200C, 0x200D, 0x2060, 0xFEFF, 0x00AD, 0x034F, 0xFE0F} <= table
    assert phi.normalise("5\u200b5\u200b5-1\u00ad2-３４５６") == "555-12-3456"


def test_non_starters_outside_the_walked_planes_do_not_exist():
    outside = [c for c in range(0x20000, sys.maxunicode + 1) if not 0xE0000 <= c < 0xE1000
               and (unicodedata.combining(chr(c)) or unicodedata.category(chr(c)) == "Cf")]
    assert outside == []


def test_a_long_run_of_combining_marks_normalises_in_linear_time():
    # CPython's NFKC sorts each run of marks by insertion: 80k marks alone took minutes.
    for marks in ("\u0301\u0316", "\u0f73", "\u0344\u0316"):
        started = time.process_time()
        text = phi.normalise("a" + marks * (MiB // len(marks)))
        assert time.process_time() - started < 2, marks
        assert max(len(run) for run in re.findall(phi._NON_STARTER + "+", text)) <= 4 * 30


# -- linear time ------------------------------------------------------------------------------

# Repeated to 1 and 2 MiB: each is the worst case of at least one pattern as first written
# ("a." made the e-mail pattern backtrack quadratically: 128 KB took 20-34 s).


@pytest.mark.parametrize("kind,pattern", phi.PATTERNS, ids=phi.KINDS)
def test_every_pattern_scans_a_worst_case_mebibyte_in_well_under_two_seconds(kind, pattern):
    slow = {seed: t for seed in ADVERSARIAL if (t := cpu_seconds(pattern.subn, "[X]", repeated(seed, MiB))) > 2}
    assert not slow, f"{kind}: {slow}"


@pytest.mark.parametrize("seed", ADVERSARIAL, ids=ascii)
def test_scanning_time_grows_linearly(seed):
    one, two = repeated(seed, MiB), repeated(seed, 2 * MiB)
    t1, t2 = cpu_seconds(phi.findings, one), cpu_seconds(phi.findings, two)
    assert t1 < 2
    assert t2 < 3 * t1 + 0.05, f"1 MiB {t1:.3f} s, 2 MiB {t2:.3f} s"  # + 50 ms: noise when both are tiny


def test_the_first_character_lookaheads_change_no_finding():
    """`starting_with` only skips positions where nothing can start: the bare patterns agree."""
    texts = [row["text"] for row in evaluate.load()] + [repeated(seed, 2000) for seed in ADVERSARIAL]
    for kind, pattern in phi.PATTERNS:
        bare = re.compile(re.sub(r"^\(\?=\[[^\]]*\]\)\(\?:(.*)\)$", r"\1", pattern.pattern, flags=re.S),
                          pattern.flags)
        for text in map(phi.normalise, texts):
            assert [m.span() for m in pattern.finditer(text)] == [m.span() for m in bare.finditer(text)], (kind, text)


# -- precision and recall on the labelled corpus ----------------------------------------------

# Just below what docs/phi-guard.md reports; a change that lowers one must say why there.
FLOORS = {  # kind: (precision, recall)
    "email": (0.99, 0.99), "ssn": (0.99, 0.90), "insurance": (0.99, 0.99), "mrn": (0.99, 0.90),
    "phone": (0.99, 0.92), "date": (0.90, 0.92), "age": (0.99, 0.90), "address": (0.99, 0.90), "name": (0.99, 0.90),
}


def test_the_corpus_is_what_its_generator_writes():
    rows = evaluate.load()
    assert rows == json.loads(json.dumps(generate.build()))
    assert len(rows) >= 500 and sum(not row["spans"] for row in rows) >= 150
    assert {kind for row in rows for kind, _, _ in row["spans"]} == set(phi.KINDS)


def test_the_evaluation_counts_what_the_guard_counts():
    for row in evaluate.load():
        located: dict[str, int] = {}
        for kind, _, _ in evaluate.locate(row["text"]):
            located[kind] = located.get(kind, 0) + 1
        assert located == phi.scan(row["text"]), row["text"]


def test_precision_and_recall_per_kind_stay_above_their_floors():
    scores = evaluate.score(evaluate.load())
    low = {kind: (round(s.precision, 3), round(s.recall, 3)) for kind, s in scores.items()
           if s.precision < FLOORS[kind][0] or s.recall < FLOORS[kind][1]}
    assert not low, f"below the floors {FLOORS}: {low}\n{evaluate.table(scores)}"
