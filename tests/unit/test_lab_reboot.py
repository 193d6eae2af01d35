"""`citadel lab reboot`'s logic without a lab: refusals, finding the container's systemd, waiting, clean-up."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from deploy.lab import containers, lifecycle, state
from deploy.lab.errors import LabError

NESTED_STATUS = "Name:\tsystemd\nPPid:\t4120\nNSpid:\t4121\t1\nNSpgid:\t4121\t1\n"


def test_status_field_reads_namespaced_pids():
    assert containers.status_field(NESTED_STATUS, "NSpid") == ["4121", "1"]
    assert containers.status_field(NESTED_STATUS, "PPid") == ["4120"]
    assert containers.status_field("Name:\tbash\n", "NSpid") == []


def _write_state(tmp_path, monkeypatch, **fields):
    monkeypatch.setenv("CITADEL_LAB_DIR", str(tmp_path))
    st = {"name": "rb", "complete": True, "hosts": [{"name": "lab-01"}, {"name": "lab-02"}], "vm_host": None}
    st.update(fields)
    (tmp_path / "rb").mkdir()
    (tmp_path / "rb" / state.STATE_FILE).write_text(json.dumps(st))


def test_reboot_refuses_without_a_lab(tmp_path, monkeypatch):
    monkeypatch.setenv("CITADEL_LAB_DIR", str(tmp_path))
    with pytest.raises(LabError, match="no lab named rb is up, so there is no lab-01 to reboot"):
        lifecycle.reboot("lab-01", name="rb")


def test_reboot_refuses_a_half_made_lab(tmp_path, monkeypatch):
    _write_state(tmp_path, monkeypatch, complete=False)
    with pytest.raises(LabError, match=r"lab rb is not fully up .*state.json.* so lab-01 is not rebooted"):
        lifecycle.reboot("lab-01", name="rb")


def test_reboot_refuses_an_unknown_host_and_lists_the_lab_hosts(tmp_path, monkeypatch):
    _write_state(tmp_path, monkeypatch, vm_host={"name": "lab-vm"})
    with pytest.raises(LabError, match="the lab rb has no host 'lab-07'; its hosts are lab-01, lab-02, lab-vm"):
        lifecycle.reboot("lab-07", name="rb")


def test_wait_stopped_reads_the_exit_status_of_its_own_child():
    process = subprocess.Popen([sys.executable, "-c", "raise SystemExit(133)"])
    containers._children[process.pid] = process
    assert containers.wait_stopped(process.pid, timeout=30) == (True, containers.NSPAWN_REBOOTED)
    assert process.pid not in containers._children  # reaped


def test_wait_stopped_gives_up_after_the_timeout():
    process = subprocess.Popen(["sleep", "30"])
    containers._children[process.pid] = process
    try:
        assert containers.wait_stopped(process.pid, timeout=0.2) == (False, None)
    finally:
        process.kill()
        containers.reap(process.pid)


def test_wait_stopped_on_a_pid_that_is_no_nspawn_of_ours():
    # Another process's child (the nspawn of an earlier `lab up`): gone means not an nspawn any more.
    assert containers.wait_stopped(1, timeout=5) == (True, None)


def test_clear_stopped_frees_cgroups_propagate_dir_and_lock(tmp_path, monkeypatch):
    monkeypatch.setattr(containers, "PROPAGATE_DIR", tmp_path / "propagate")
    cgroups = [tmp_path / "systemd" / "citadel-lab.rb.lab-01", tmp_path / "unified" / "citadel-lab.rb.lab-01"]
    for cgroup in cgroups:
        (cgroup / "payload" / "init.scope").mkdir(parents=True)
        (cgroup / "supervisor").mkdir()
    (tmp_path / "propagate" / "rb-lab-01" / "incoming").mkdir(parents=True)
    lock = tmp_path / "inode-40:1"
    lock.write_text("")
    assert containers.clear_stopped(cgroups, "rb-lab-01", str(lock)) == []
    assert not any(c.exists() for c in cgroups)
    assert not (tmp_path / "propagate" / "rb-lab-01").exists() and not lock.exists()
