"""Draining (citadel_runtime.drain): the wait's judgement, the marker's file handling, and the
audit of the shipped keyguard and vllm units (and of each one broken as the catalog breaks it)."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

import pytest

from citadel_runtime import drain
from hardening.controls.keyguard import DRAINS_ON_STOP
from hardening.controls.vllm import DRAINS_BEFORE_STOP
from roles.vllm import unit_text

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
KEYGUARD = (ROOT / "roles/keyguard/files/citadel-keyguard.service").read_text()
VLLM = unit_text(0)
DEAD_PID = 2**22 + 1  # above pid_max's largest value: never a live process


def report(nonce="n1", inflight=0, pid=None) -> dict:
    return {"pid": pid or os.getpid(), "draining": {"tiny": nonce}, "inflight": {"tiny": inflight}}


@pytest.mark.parametrize(("found", "expected"), [
    (None, None),  # no keyguard report: nothing in flight through it
    (report(pid=DEAD_PID, inflight=3), None),  # its keyguard is gone
    (report(nonce="older"), "the keyguard has not yet seen the marker"),
    (report(inflight=1), "1 request in flight"),
    (report(inflight=3), "3 requests in flight"),
    (report(), None),
])
def test_settled(found, expected):
    assert drain.settled(found, "tiny", "n1") == expected


def test_the_marker_round_trip_and_what_the_keyguard_reads(tmp_path):
    drain.prepare(str(tmp_path))
    nonce = drain.request(str(tmp_path), "tiny")
    marker = tmp_path / "draining" / "tiny"
    assert marker.stat().st_mode & 0o777 == 0o644  # whatever the caller's umask: the keyguard reads it
    assert drain.markers(str(tmp_path)) == {"tiny": nonce}
    drain.write_report(str(tmp_path), report(nonce))
    assert drain.read_report(str(tmp_path)) == report(nonce)
    assert drain.release(str(tmp_path), "tiny") and not drain.release(str(tmp_path), "tiny")
    assert drain.markers(str(tmp_path)) == {}
    drain.remove_report(str(tmp_path))
    assert drain.read_report(str(tmp_path)) is None


def test_the_marker_never_writes_through_a_link_the_keyguard_user_placed(tmp_path):
    drain.prepare(str(tmp_path))
    target = tmp_path / "precious"
    target.write_text("keep")
    (tmp_path / "draining" / "tiny").symlink_to(target)
    drain.request(str(tmp_path), "tiny")
    assert target.read_text() == "keep" and not (tmp_path / "draining" / "tiny").is_symlink()


def test_a_report_that_is_not_the_keyguards_is_none(tmp_path):
    (tmp_path / drain.REPORT).write_text("[1, 2")
    assert drain.read_report(str(tmp_path)) is None
    (tmp_path / drain.REPORT).write_text(json.dumps([1]))
    assert drain.read_report(str(tmp_path)) is None


def test_the_wait_ends_at_once_without_a_keyguard(tmp_path):
    assert drain.wait(str(tmp_path / "absent"), "tiny", 5) is None
    assert not (tmp_path / "absent").exists()  # nothing made on a host without a keyguard
    (tmp_path / drain.REPORT).write_text(json.dumps(report(pid=DEAD_PID, inflight=2)))
    assert drain.wait(str(tmp_path), "tiny", 5) is None
    assert "tiny" in drain.markers(str(tmp_path))  # held for a keyguard that starts meanwhile


def test_the_wait_gives_up_at_its_deadline_with_what_is_awaited(tmp_path):
    assert drain.wait(str(tmp_path), "tiny", 0.1, poll=0.02) is None  # no report at all
    drain.write_report(str(tmp_path), {"pid": os.getpid(), "draining": {}, "inflight": {}})
    assert drain.wait(str(tmp_path), "tiny", 0.1, poll=0.02) == "the keyguard has not yet seen the marker"


@pytest.mark.parametrize(("text", "expected"), [
    ("90", 90), ("75s", 75), ("1min 30s", 90), ("2min", 120), ("infinity", float("inf")), ("500ms", 0.5),
    ("soon", None), ("5 parsecs", None), ("", None),
])
def test_systemd_time_spans(text, expected):
    assert drain.seconds(text) == expected


def test_the_shipped_units_drain():
    assert drain.audit_keyguard(KEYGUARD) is None
    assert drain.audit_vllm(VLLM) is None


def sed(script: str, text: str) -> str:
    """The catalog break's `sed -i` expression applied to a unit's text (s/// or /re/d)."""
    if script.startswith("s/"):
        _, pattern, replacement, _ = script.split("/")
        return re.sub(pattern, replacement, text, flags=re.MULTILINE)
    pattern = script.strip("/").removesuffix("/d")
    return "".join(line for line in text.splitlines(keepends=True) if not re.search(pattern, line))


def test_the_catalog_breaks_fail_the_audit():
    keyguard_sed = re.search(r"sed -i '([^']*)'", DRAINS_ON_STOP.break_with).group(1)
    assert "not above its drain deadline of 60 s" in drain.audit_keyguard(sed(keyguard_sed, KEYGUARD))
    vllm_sed = re.search(r"sed -i '([^']*)'", DRAINS_BEFORE_STOP.break_with).group(1)
    assert "no ExecStop= runs 'citadel_runtime.drain wait'" in drain.audit_vllm(sed(vllm_sed, VLLM))


def test_drop_ins_count_as_systemd_reads_them():
    drop_in = "\n# /etc/systemd/system/citadel-keyguard.service.d/x.conf\n[Service]\nTimeoutStopSec=30\n"
    assert "TimeoutStopSec= 30 s" in drain.audit_keyguard(KEYGUARD + drop_in)
    reset = "\n[Service]\nExecStop=\n"  # an empty assignment empties the list
    assert "no ExecStop=" in drain.audit_vllm(VLLM + reset)
    no_deadline = KEYGUARD.replace(" --drain-seconds 60", "").replace("TimeoutStopSec=75", "TimeoutStopSec=50")
    assert "above its drain deadline of 60 s" in drain.audit_keyguard(no_deadline)  # the default deadline counts
    assert "without draining" in drain.audit_keyguard(KEYGUARD.replace("--drain-seconds 60", "--drain-seconds 0"))


def test_a_linked_markers_directory_or_a_fifo_report_is_refused(tmp_path):
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    state = tmp_path / "state"
    state.mkdir()
    (state / "draining").symlink_to(elsewhere)
    with pytest.raises(OSError):
        drain.request(str(state), "tiny")
    assert list(elsewhere.iterdir()) == []
    os.mkfifo(state / drain.REPORT)
    assert drain.read_report(str(state)) is None  # at once, not blocked on the FIFO
