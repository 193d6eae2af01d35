"""Pure logic of `citadel secrets` and the Vault controls: overlap windows, names, records."""

from __future__ import annotations

import datetime as dt

import pytest

from deploy.secrets import KINDS, overlap
from deploy.secrets.client_keys import check_name, verify
from deploy.secrets.status import _row, key_version_times
from deploy.secrets.transit import ciphertext_version
from deploy.vault import VaultError
from deploy.vault.policies import parse
from hardening.vault.controls import CONTROLS

T0 = dt.datetime(2025, 3, 1, 12, 0, tzinfo=dt.UTC)
HOUR = dt.timedelta(hours=1)


def test_overlap_accepts_both_until_the_grace_expiry():
    doc = overlap.start({}, overlap.slot("ik_first-key", 1, T0, hashed=False), HOUR, T0)
    assert doc["previous"] is None and doc["previous_expires"] is None
    doc = overlap.start(doc, overlap.slot("ik_second-key", 2, T0, hashed=False), HOUR, T0)
    assert overlap.match(doc, "ik_first-key", T0)["version"] == 1
    assert overlap.match(doc, "ik_second-key", T0)["version"] == 2
    assert overlap.match(doc, "ik_first-key", T0 + HOUR) is None  # expiry is exclusive
    assert overlap.match(doc, "ik_second-key", T0 + 10 * HOUR)["version"] == 2
    assert overlap.match(doc, "ik_other", T0) is None


def test_a_second_rotation_is_refused_while_the_first_overlaps():
    doc = overlap.start({}, overlap.slot("a" * 10, 1, T0, hashed=True), HOUR, T0)
    doc = overlap.start(doc, overlap.slot("b" * 10, 2, T0, hashed=True), HOUR, T0)
    with pytest.raises(overlap.OverlapOpen):
        overlap.start(doc, overlap.slot("c" * 10, 3, T0, hashed=True), HOUR, T0 + HOUR / 2)
    later = overlap.start(doc, overlap.slot("c" * 10, 3, T0, hashed=True), HOUR, T0 + HOUR)
    assert [s["version"] for s in overlap.accepted(later, T0 + HOUR)] == [3, 2]


def test_finish_keeps_only_the_current_key():
    doc = overlap.start({}, overlap.slot("old-key-1", 1, T0, hashed=True), HOUR, T0)
    doc = overlap.finish(overlap.start(doc, overlap.slot("new-key-2", 2, T0, hashed=True), HOUR, T0))
    assert overlap.match(doc, "old-key-1", T0) is None and overlap.match(doc, "new-key-2", T0)["version"] == 2


def test_hashed_slots_never_hold_the_key():
    entry = overlap.slot("ck_secret-value", 1, T0, hashed=True)
    assert "ck_secret-value" not in str(entry) and entry["sha256"] == overlap.digest("ck_secret-value")
    assert entry["key_id"] == entry["sha256"][:12]


def test_new_keys_are_long_random_and_masked():
    first, second = overlap.new_key("ck_"), overlap.new_key("ck_")
    assert first.reveal() != second.reveal() and len(first.reveal()) >= 40
    assert str(first) == "***" and first.reveal() not in repr(first)


def test_client_verification_names_the_client():
    doc = {"clients": {"radiology": overlap.start({}, overlap.slot("ck_r", 1, T0, hashed=True), HOUR, T0)}}
    assert verify(doc, "ck_r", T0) == "radiology" and verify(doc, "ck_x", T0) is None


@pytest.mark.parametrize("name", ["Radiology", "", "a b", "-x", "x" * 64, "a/b"])
def test_bad_client_names_are_refused_with_the_name(name):
    with pytest.raises(VaultError) as refused:
        check_name(name)
    assert refused.value.exit_code == 2 and repr(name) in str(refused.value)


def test_ciphertext_versions():
    assert ciphertext_version("vault:v12:abcd") == 12
    with pytest.raises(ValueError):
        ciphertext_version("plaintext")


def test_key_version_times_reads_both_formats():
    times = key_version_times({"keys": {"1": 1735732800, "2": {"creation_time": "2025-02-01T00:00:00.5Z"}}})
    assert times[1].year == 2025 and times[2].month == 2
    assert key_version_times({"type": "hmac"}) == {}


def test_status_row_is_due_at_the_earlier_of_age_and_expiry():
    row = _row("k", "n", 1, T0, [], T0 + dt.timedelta(days=91), 90)
    assert row["due"] and row["age_days"] == 91.0
    row = _row("k", "n", 1, T0, [], T0 + HOUR, 90, expires=T0 + 2 * HOUR)
    assert row["rotate_by"] == (T0 + 2 * HOUR).isoformat() and not row["due"]


def test_every_kind_is_known():
    assert KINDS == {"internal-api-key": False, "vllm-api-key": False, "client-key": True, "transit-key": True,
                     "tls-cert": True}


def test_vault_controls_are_complete_records():
    ids = [c.id for c in CONTROLS]
    assert len(ids) == len(set(ids)) >= 10
    for control in CONTROLS:
        assert control.refs.hipaa and control.refs.nist and control.refs.threats, control.id
        assert control.check.__doc__ or control.check.__name__, control.id


def test_auditor_policy_reads_exact_paths_only():
    from pathlib import Path

    import hardening.vault

    rules = parse((Path(hardening.vault.__file__).parent / "auditor.hcl").read_text())
    # One glob: the hosts' identity roles, one per host (their settings, no secret in them).
    assert rules and [r.path for r in rules if "*" in r.path or "+" in r.path] == ["auth/cert/certs/*"]
    for rule in rules:
        allowed = {"read"} | ({"sudo"} if rule.path == "sys/audit" else set())
        assert set(rule.capabilities) <= allowed, rule
