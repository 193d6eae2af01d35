"""Every threat id a control cites is defined in docs/threat-model.md, and every threat
defined there is answered by at least one control."""

from __future__ import annotations

import re
from pathlib import Path

from hardening.catalog import load_catalog
from hardening.vault.controls import CONTROLS as VAULT_CONTROLS

THREAT_MODEL = Path(__file__).resolve().parents[2] / "docs" / "threat-model.md"


def table_ids(prefix: str) -> set[str]:
    """Ids in the first column of the page's tables, e.g. T1..T10 or M1..M10."""
    return set(re.findall(rf"^\| ({prefix}\d+) \|", THREAT_MODEL.read_text(), flags=re.MULTILINE))


def cited() -> dict[str, set[str]]:
    by_threat: dict[str, set[str]] = {}
    for control in [*load_catalog(), *VAULT_CONTROLS]:
        for threat in control.refs.threats:
            by_threat.setdefault(threat, set()).add(control.id)
    return by_threat


def test_the_threat_model_defines_ten_threats_and_ten_mitigations():
    assert table_ids("T") == {f"T{n}" for n in range(1, 11)}
    assert table_ids("M") == {f"M{n}" for n in range(1, 11)}


def test_every_cited_threat_is_defined():
    undefined = {threat: sorted(ids) for threat, ids in cited().items() if threat not in table_ids("T")}
    assert not undefined, f"controls cite threats not defined in {THREAT_MODEL.name}: {undefined}"


def test_every_defined_threat_is_answered_by_a_control():
    unanswered = table_ids("T") - set(cited())
    assert not unanswered, f"threats of {THREAT_MODEL.name} that no control answers: {sorted(unanswered)}"


def test_the_ids_the_page_names_as_examples_are_real_controls():
    ids = {c.id for c in [*load_catalog(), *VAULT_CONTROLS]}
    named = set(re.findall(r"`([a-z][a-z0-9-]+[a-z0-9])`", THREAT_MODEL.read_text()))
    assert {n for n in named if "-" in n and n in ids}, "the page names no control at all"
    exact = {n for n in named if n.split("-")[0] in {"acct", "fs", "fw", "kern", "log", "svc", "ssh", "gateway",
                                                      "models", "secrets", "vllm", "vault"}}
    assert exact <= ids, f"{THREAT_MODEL.name} names controls that do not exist: {sorted(exact - ids)}"
