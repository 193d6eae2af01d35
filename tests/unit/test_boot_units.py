"""The boot chain's units, as files: store unlock -> unseal -> vLLM, keyguard and gateway beside them.

What a reboot relies on: each model server starts only after its unseal succeeded; the
oneshots that wait for Vault have no start limit (they wait in-process, one journal line per
wait); every ordering line says why; the sandboxing stays.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from roles.vllm import unit_text

pytestmark = pytest.mark.unit
ROOT = Path(__file__).resolve().parents[2]
UNITS = {
    "citadel-store-unlock.service": ROOT / "roles/store_volume/files/citadel-store-unlock.service",
    "citadel-unseal@m.service": ROOT / "roles/model_store/files/citadel-unseal@.service",
    "citadel-keyguard.service": ROOT / "roles/keyguard/files/citadel-keyguard.service",
    "citadel-gateway.service": ROOT / "roles/gateway/files/citadel-gateway.service",
}
DEPENDENCIES = ("After=", "Before=", "Wants=", "Requires=", "BindsTo=", "PartOf=")
WAITING = ("citadel-store-unlock.service", "citadel-unseal@m.service")


def text(name: str) -> str:
    return unit_text(0) if name == "citadel-vllm@m.service" else UNITS[name].read_text()


def settings(name: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text(name).splitlines():
        if "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            found.setdefault(key, []).append(value)
    return found


def test_a_model_server_starts_only_after_its_unseal_succeeded():
    vllm = settings("citadel-vllm@m.service")
    for key in ("Requires", "BindsTo", "After"):
        assert any("citadel-unseal@%i.service" in value.split() for value in vllm[key]), key
    unseal = settings("citadel-unseal@m.service")
    assert "citadel-store-unlock.service" in " ".join(unseal["After"]).split()
    # Ordering only: a host without the LUKS volume has no unlock unit, and a Requires= would fail its unseal.
    assert "citadel-store-unlock.service" not in " ".join(unseal.get("Requires", []) + unseal.get("Wants", []))


@pytest.mark.parametrize("name", WAITING)
def test_the_waiting_oneshots_have_no_start_limit_and_pull_in_what_they_wait_for(name):
    unit = settings(name)
    assert unit["Type"] == ["oneshot"] and unit["TimeoutStartSec"] == ["infinity"]
    assert "Restart" not in unit  # they wait in-process; what fails after the waits is a refusal
    assert {"citadel-agent@gpu.service", "network-online.target"} <= set(" ".join(unit["Wants"]).split())
    assert {"citadel-agent@gpu.service", "network-online.target"} <= set(" ".join(unit["After"]).split())


@pytest.mark.parametrize("name", [*UNITS, "citadel-vllm@m.service"])
def test_every_ordering_line_says_why(name):
    lines = text(name).splitlines()
    section = lines[lines.index("[Unit]") + 1:lines.index("[Service]")]
    for number, line in enumerate(section):
        if not line.startswith(DEPENDENCIES):
            continue
        above = number - 1
        while above >= 0 and section[above].startswith(DEPENDENCIES):
            above -= 1
        assert above >= 0 and section[above].startswith("#"), f"{name}: no comment says why {line!r}"


@pytest.mark.parametrize("name", [*UNITS, "citadel-vllm@m.service"])
def test_the_sandboxing_stays(name):
    unit = settings(name)
    assert unit["NoNewPrivileges"] == ["yes"] and unit["LimitCORE"] == ["0"]
    assert unit["SystemCallArchitectures"] == ["native"] and "CapabilityBoundingSet" in unit


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("name", WAITING)
def test_systemd_parses_the_waiting_units(tmp_path, name):
    unit = tmp_path / name
    unit.write_text(text(name))
    result = subprocess.run(["systemd-analyze", "verify", "--man=no", str(unit)], capture_output=True, text=True)
    assert "Failed to parse" not in result.stderr and "Unknown key" not in result.stderr, result.stderr
