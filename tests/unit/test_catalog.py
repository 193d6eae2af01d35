"""The control catalog as data: complete, well-referenced, and mapped to the dev-sec baselines."""

from __future__ import annotations

import re

import pytest

from hardening.catalog import CatalogError, areas, cis_levels, load_catalog, profile_names, select
from hardening.coverage import MAPPING, build_mapping, render
from roles import registry

CATALOG = load_catalog()
THREATS = {f"T{i}" for i in range(1, 11)}
HIPAA = re.compile(r"^164\.312\([a-e]\)(\(\d\)(\((i|ii|iii|iv)\))?)?$")
NIST = re.compile(r"^[A-Z]{2}-\d+(\(\d+\))?$")
OWASP = re.compile(r"^LLM(0[1-9]|10)$")


def test_at_least_150_controls_with_unique_ids():
    assert len(CATALOG) >= 150
    assert len({c.id for c in CATALOG}) == len(CATALOG)


@pytest.mark.parametrize("control", CATALOG, ids=lambda c: c.id)
def test_control_record_is_complete(control):
    assert set(control.refs.threats) <= THREATS, control.refs.threats
    assert all(HIPAA.match(ref) for ref in control.refs.hipaa), control.refs.hipaa
    assert all(NIST.match(ref) for ref in control.refs.nist), control.refs.nist
    assert all(OWASP.match(ref) for ref in control.refs.owasp_llm), control.refs.owasp_llm
    assert control.refs.hipaa or control.refs.nist or control.refs.cis, "cites no framework"
    assert control.remediation in registry(), f"unknown remediating role {control.remediation!r}"
    assert control.break_with.strip()


def test_every_area_has_a_role_part():
    """Hardening areas have their part of the hardening role; other controls name a registered role."""
    import importlib

    from roles import registry

    for area, controls in areas().items():
        if all(c.remediation == "hardening" for c in controls):
            module = importlib.import_module(f"roles.hardening.{area}")
            assert callable(module.apply)
        else:
            assert {c.remediation for c in controls} <= set(registry()), area


def test_cis_references_name_recommendations_of_the_benchmark():
    """No placeholder (5.1.x), no section heading (5.1), no number of another benchmark."""
    wrong = {c.id: [s for s in c.refs.cis if s not in cis_levels()] for c in CATALOG}
    wrong = {cid: sections for cid, sections in wrong.items() if sections}
    assert not wrong, f"CIS references that are not CIS Debian Linux 12 recommendations: {wrong}"


def test_profiles():
    assert set(profile_names(CATALOG)) >= {"all", "hipaa", "cis-level1", "cis-level2", "llm"}
    assert len(select(CATALOG, "all")) == len(CATALOG)
    assert 0 < len(select(CATALOG, "hipaa")) <= len(CATALOG)
    level1 = {c.id for c in select(CATALOG, "cis-level1")}
    level2 = {c.id for c in select(CATALOG, "cis-level2")}
    assert level1 < level2 == {c.id for c in CATALOG if c.refs.cis}
    # Level 2 - Server only: sshd DisableForwarding is CIS 5.1.8; PermitRootLogin (5.1.20) is Level 1.
    assert "ssh-disable-forwarding" in level2 - level1
    assert "ssh-permit-root-login" in level1
    assert all(c.refs.owasp_llm for c in select(CATALOG, "llm"))
    with pytest.raises(CatalogError, match="unknown profile 'nope'"):
        select(CATALOG, "nope")


def test_devsec_mapping_is_complete_and_current():
    mapping, problems = build_mapping()
    assert not problems, "\n".join(problems)
    assert MAPPING.read_text() == render(mapping), "run: python -m hardening.coverage --write"
