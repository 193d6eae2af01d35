"""Deploys over real SSH to real lab hosts: changes, idempotence, failures, dry runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from deploy.runner import run_deploy
from inventory.loader import load_inventory, parse_inventory
from roles.base import HOST_RECORD
from tests.lab.sshutil import ssh

REPO = Path(__file__).resolve().parents[2]


def citadel(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "deploy.cli", *args], capture_output=True, text=True, cwd=REPO, timeout=600
    )


def test_deploy_twice_second_run_changes_nothing(lab, lab_inventory_file):
    first = citadel("deploy", "-i", str(lab_inventory_file), "--role", "base", "--json")
    assert first.returncode == 0, first.stderr
    report = json.loads(first.stdout)
    assert set(report["hosts"]) == {h.name for h in lab.hosts}
    for outcome in report["hosts"].values():
        assert outcome["status"] == "ok" and outcome["failed"] == 0

    for h in lab.hosts:
        record = json.loads(ssh(lab, h, f"cat {HOST_RECORD}").stdout)
        assert record["host"] == h.name
        assert ssh(lab, h, "command -v rsync").returncode == 0

    second = citadel("deploy", "-i", str(lab_inventory_file), "--role", "base", "--json")
    assert second.returncode == 0, second.stderr
    again = json.loads(second.stdout)
    for name, outcome in again["hosts"].items():
        assert outcome["changed"] == 0, f"{name} changed on an identical second run: {outcome}"
        assert outcome["unchanged"] > 0 and outcome["failed"] == 0


def test_table_output_and_progress(lab, lab_inventory_file):
    result = citadel("deploy", "-i", str(lab_inventory_file), "--role", "base")
    assert result.returncode == 0, result.stderr
    for h in lab.hosts:
        assert h.name in result.stdout
    assert "unchanged" in result.stdout


def test_dry_run_reports_and_changes_nothing(lab, lab_inventory_file):
    target = lab.hosts[0]
    ssh(lab, target, f"sudo rm -f {HOST_RECORD}")
    try:
        result = citadel("deploy", "-i", str(lab_inventory_file), "--role", "base", "--dry-run", "--json")
        assert result.returncode == 0, result.stderr
        report = json.loads(result.stdout)
        assert report["dry_run"] is True
        assert report["hosts"][target.name]["changed"] >= 1
        assert all(report["hosts"][h.name]["changed"] == 0 for h in lab.hosts[1:])
        assert ssh(lab, target, f"test -e {HOST_RECORD}", check=False).returncode != 0
    finally:
        run_deploy(load_inventory(lab_inventory_file), ["base"], limit=[target.name])


def test_unreachable_host_is_reported_and_others_complete(lab, lab_inventory_file, tmp_path):
    data = yaml.safe_load(lab_inventory_file.read_text())
    first = next(iter(data["hosts"].values()))
    # A closed port on this machine: the connection is refused at once.
    data["hosts"]["ghost"] = {
        "address": "127.0.0.1",
        "groups": ["gpu"],
        "ssh": {"port": 9, "host_key": first["ssh"]["host_key"]},
    }
    path = tmp_path / "with-ghost.yaml"
    path.write_text(yaml.safe_dump(data))
    result = citadel("deploy", "-i", str(path), "--role", "base", "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert report["hosts"]["ghost"]["status"] == "unreachable"
    assert report["hosts"]["ghost"]["errors"]
    for h in lab.hosts:
        assert report["hosts"][h.name]["status"] == "ok"


def test_wrong_host_key_is_refused(lab, lab_inventory_file, tmp_path):
    data = yaml.safe_load(lab_inventory_file.read_text())
    names = list(data["hosts"])
    # Pin the second host's key for the first host: a man in the middle, as far as we know.
    data["hosts"][names[0]]["ssh"]["host_key"] = data["hosts"][names[1]]["ssh"]["host_key"]
    site = parse_inventory(data, tmp_path / "x.yaml")
    report = run_deploy(site, ["base"])
    assert report.hosts[names[0]].status == "unreachable"
    assert report.hosts[names[1]].status == "ok"


def test_failing_host_is_reported_and_others_complete(lab, lab_inventory_file):
    broken = lab.hosts[0]
    # Hide the local repository's sources from apt on one host: installing a package fails.
    ssh(lab, broken, "sudo apt-get -y -qq remove rsync >/dev/null && sudo mv /etc/apt/sources.list.d /etc/apt/sources.list.d.off && sudo mv /etc/apt/sources.list /etc/apt/sources.list.off 2>/dev/null; sudo rm -rf /var/lib/apt/lists/*; true")
    try:
        report = run_deploy(load_inventory(lab_inventory_file), ["base"])
        assert report.hosts[broken.name].status == "failed"
        assert report.hosts[broken.name].failed >= 1
        for h in lab.hosts[1:]:
            assert report.hosts[h.name].status == "ok"
        assert not report.ok
    finally:
        ssh(lab, broken, "sudo mv /etc/apt/sources.list.d.off /etc/apt/sources.list.d; sudo mv /etc/apt/sources.list.off /etc/apt/sources.list 2>/dev/null; true")
        ssh(lab, broken, "sudo rm -f /var/lib/apt/periodic/update-success-stamp")
    healed = run_deploy(load_inventory(lab_inventory_file), ["base"])
    assert healed.ok
