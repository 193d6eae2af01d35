"""The lab's whole life: up, SSH as citadel with the pinned key, offline apt, down, nothing left."""

from __future__ import annotations

import os
import shlex
import subprocess
import time
from pathlib import Path

import pytest

from deploy.lab.ssh import known_hosts_line, ssh_command

pytestmark = pytest.mark.lab

NAME = "citadeltest"
SUBNET = "10.78.0.0/16"


def _ssh(lab, host, known_hosts: Path, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(
        ssh_command(lab.ssh_user, host.address, host.port, lab.ssh_key, known_hosts, command, connect_timeout=10),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _check(result: subprocess.CompletedProcess, what: str) -> str:
    assert result.returncode == 0, f"{what} failed ({result.returncode}): {result.stdout}\n{result.stderr}"
    return result.stdout


def test_lab_up_ssh_apt_down_leaves_nothing(tmp_path):
    if os.geteuid() != 0:
        print("skipping: the lab needs root (network namespaces, mounts, containers)")
        pytest.skip("the lab needs root (network namespaces, mounts, containers)")

    import deploy.lab as lab_api
    from deploy.lab import state

    lab_dir = state.lab_dir(NAME)
    lab_api.down(name=NAME)  # a previous run that was killed hard
    try:
        started = time.monotonic()
        lab = lab_api.up(hosts=2, name=NAME, subnet=SUBNET, progress=print)
        print(f"lab up in {time.monotonic() - started:.1f} s")
        assert [h.name for h in lab.hosts] == ["lab-01", "lab-02"]
        assert all(h.kind == "container" and h.port == 22 for h in lab.hosts)
        assert lab.ssh_user == "citadel"

        # Same shape again: the existing lab comes back; another shape is refused.
        assert lab_api.up(hosts=2, name=NAME, subnet=SUBNET) == lab
        with pytest.raises(lab_api.LabError, match="citadel lab down"):
            lab_api.up(hosts=3, name=NAME, subnet=SUBNET)

        hostnames = set()
        for host in lab.hosts:
            assert host.host_key.startswith("ssh-ed25519 ")
            known_hosts = tmp_path / f"known_hosts-{host.name}"
            known_hosts.write_text(known_hosts_line(host.address, host.port, host.host_key))

            hostnames.add(_check(_ssh(lab, host, known_hosts, "hostname"), "ssh hostname").strip())
            _check(_ssh(lab, host, known_hosts, "sudo -n true"), "sudo -n true")

            routes = _check(_ssh(lab, host, known_hosts, "ip route"), "ip route")
            assert "default" not in routes, routes

            sources = _check(
                _ssh(lab, host, known_hosts, "cat /etc/apt/sources.list.d/* /etc/apt/sources.list 2>/dev/null; true"),
                "read apt sources",
            )
            assert "deb.debian.org" not in sources and "file:/srv/citadel-repo" in sources
            _check(_ssh(lab, host, known_hosts, "sudo -n apt-get update"), "apt-get update (offline)")
            _check(
                _ssh(
                    lab,
                    host,
                    known_hosts,
                    "sudo -n env DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends rsync"
                    " && rsync --version",
                ),
                "apt-get install rsync",
            )

            # A wrong pinned key must be refused: the pin is real.
            wrong = tmp_path / "known_hosts-wrong"
            other = next(h for h in lab.hosts if h.name != host.name)
            wrong.write_text(known_hosts_line(host.address, host.port, other.host_key))
            assert _ssh(lab, host, wrong, "true").returncode != 0

        assert hostnames == {"lab-01", "lab-02"}

        rows = lab_api.status(name=NAME)
        assert [r["name"] for r in rows] == ["lab-01", "lab-02"]
        assert all(r["running"] and r["ssh"] and r["kind"] == "container" for r in rows), rows
    finally:
        started = time.monotonic()
        lab_api.down(name=NAME, progress=print)
        print(f"lab down in {time.monotonic() - started:.1f} s")

    assert lab_api.leftovers(name=NAME) == []
    netns = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout
    assert NAME not in netns
    mounts = Path("/proc/mounts").read_text()
    assert str(lab_dir) not in mounts
    assert lab_api.status(name=NAME) == []
    lab_api.down(name=NAME)  # down on a lab that does not exist is a no-op


PROBE_UNIT = """[Unit]
Description=citadel lab reboot probe: ExecStop= leaves a mark, so an orderly stop shows
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/true
ExecStop=/bin/sh -c 'cat /proc/sys/kernel/random/boot_id > /var/lib/citadel-reboot-probe'
[Install]
WantedBy=multi-user.target
"""


def test_lab_reboot_stops_in_order_and_boots_again(lab, tmp_path):
    import deploy.lab as lab_api
    from deploy.lab import state

    host = lab.hosts[-1]
    known_hosts = tmp_path / "known_hosts"
    known_hosts.write_text(known_hosts_line(host.address, host.port, host.host_key))
    old_pid = next(r["pid"] for r in state.load(lab.name)["hosts"] if r["name"] == host.name)
    old_boot = _check(_ssh(lab, host, known_hosts, "cat /proc/sys/kernel/random/boot_id"), "read boot id").strip()
    install = f"printf '%s' {shlex.quote(PROBE_UNIT)} | sudo -n tee /etc/systemd/system/citadel-reboot-probe.service >/dev/null"
    _check(_ssh(lab, host, known_hosts, install + " && sudo -n systemctl enable --now citadel-reboot-probe"), "enable the probe")
    try:
        seconds = lab_api.reboot(host.name, name=lab.name, progress=print)
        print(f"{host.name} answers SSH {seconds:.2f} s after the reboot request")

        new_boot = _check(_ssh(lab, host, known_hosts, "cat /proc/sys/kernel/random/boot_id"), "read boot id").strip()
        assert new_boot != old_boot
        running = _ssh(lab, host, known_hosts, "systemctl is-system-running --wait").stdout.strip()
        assert running in ("running", "degraded"), running
        active = _check(_ssh(lab, host, known_hosts, "systemctl is-active ssh citadel-reboot-probe"), "units active")
        assert active.split() == ["active", "active"]
        # The probe's ExecStop= ran during the shutdown, in the old boot.
        mark = _check(_ssh(lab, host, known_hosts, "cat /var/lib/citadel-reboot-probe"), "read the probe's mark")
        assert mark.strip() == old_boot

        record = next(r for r in state.load(lab.name)["hosts"] if r["name"] == host.name)
        assert record["pid"] != old_pid
        row = next(r for r in lab_api.status(name=lab.name) if r["name"] == host.name)
        assert row["running"] and row["ssh"], row
    finally:
        _ssh(
            lab, host, known_hosts,
            "sudo -n systemctl disable --now citadel-reboot-probe; "
            "sudo -n rm -f /etc/systemd/system/citadel-reboot-probe.service /var/lib/citadel-reboot-probe",
        )
