"""The citadel command's surface: groups, help and inventory checking."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example-hospital.yaml"


def citadel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=60
    )


def test_help_lists_command_groups():
    result = citadel("--help")
    assert result.returncode == 0
    for group in ("deploy", "inventory", "lab"):
        assert group in result.stdout


def test_every_command_has_help():
    for args in (["deploy"], ["inventory", "check"], ["lab", "up"], ["lab", "down"], ["lab", "status"]):
        result = citadel(*args, "--help")
        assert result.returncode == 0, result.stderr
        assert "Usage:" in result.stdout


def test_inventory_check_example():
    result = citadel("inventory", "check", str(EXAMPLE), "--json")
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    assert summary["valid"] and summary["site"] == "st-example-general" and len(summary["hosts"]) == 3


def test_inventory_check_names_the_mistake(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(EXAMPLE.read_text().replace("    gpus: {count: 4", "    gpu: {count: 4").replace("10.20.1.12", "10.20.1.312"))
    result = citadel("inventory", "check", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr
    assert "hosts.gpu-01.gpu: unknown key" in result.stderr
    assert "hosts.gpu-02.address: expected an IP address or a DNS host name, got '10.20.1.312'" in result.stderr


def test_deploy_with_unknown_role_changes_nothing():
    result = citadel("deploy", "-i", str(EXAMPLE), "--role", "nope")
    assert result.returncode == 2
    assert "unknown role 'nope'" in result.stderr


def test_deploy_with_unknown_limit():
    result = citadel("deploy", "-i", str(EXAMPLE), "--limit", "gpu-99")
    assert result.returncode == 2
    assert "--limit 'gpu-99' matches no host or group" in result.stderr
