"""Rebooting one lab host for real: its systemd stops every unit in order, then boots again.

A container's systemd is asked to reboot the way ``systemctl reboot`` asks it (SIGRTMIN+5 to
its PID 1). nspawn then exits with status 133 and does not come back by itself, so the same
overlay is booted again, in the same network namespace and cgroups, with the same flags, and
the state file gets the new nspawn PID. The VM reboots inside its qemu (``systemctl reboot``
over SSH; qemu runs without ``-no-reboot``), so nothing outside it changes.
``deploy.lab.lifecycle.reboot`` checks the lab and the host name first, then calls these.

    seconds = reboot_container(st, st["hosts"][0], timeout=120, save=lambda: state.save(name, st), say=print)
    seconds = reboot_vm(st, timeout=420, say=print)   # both: from the request until SSH answers
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from deploy.lab import containers
from deploy.lab.errors import LabError
from deploy.lab.ssh import ssh_command
from deploy.lab.vm import CONSOLE_LOG, KNOWN_HOSTS, vm_running

CONTAINER_TIMEOUT_S = 120.0
BOOT_ID = "/proc/sys/kernel/random/boot_id"  # nspawn and the kernel make a new one each boot
KILLED_AS_DOWN = "killing it as `citadel lab down` does"


def reboot_container(
    st: dict[str, Any], record: dict[str, Any], *, timeout: float, save: Callable[[], None], say: Callable[[str], None]
) -> float:
    """Reboot the container host of ``record`` (a host of the lab state ``st``); seconds until SSH answers.

    ``timeout`` bounds the orderly shutdown (then the host is killed) and, again, the boot to SSH.
    ``save`` writes ``st``: called when the old nspawn is gone and when the new one started.
    """
    host = record["name"]
    root = Path(record["dir"]) / "merged"
    cgroups = [Path(c) for c in record["cgroups"]]
    log = Path(record["log"])
    _check_reusable(host, root, record["netns"])
    started = time.monotonic()
    _stop(host, record.get("pid"), cgroups, timeout, say)
    containers.kill_tree(cgroups, record.get("pid"))  # strays, and a host that never stopped
    record["pid"] = None
    save()
    left = containers.clear_stopped(cgroups, record["machine"], record.get("lock"))
    if left:
        raise LabError(
            f"lab host {host} stopped but cannot boot again: {'; '.join(left)} is still there. "
            "Run `citadel lab down` and `citadel lab up`."
        )
    say(f"{host}: booting again")
    record["lock"] = containers.lock_file(root)
    record["pid"] = containers.boot(
        root, record["machine"], host, record["netns"], Path(st["apt_repo"]), cgroups, log
    )
    save()
    known_hosts = Path(record["dir"]) / "known_hosts"
    containers.wait_ready(host, record["address"], record["pid"], Path(st["ssh_key"]), known_hosts, log, timeout)
    return time.monotonic() - started


def _check_reusable(host: str, root: Path, netns: str) -> None:
    """The overlay and the network namespace outlive nspawn; without them the host cannot boot again."""
    if str(root) not in containers.mounts_under(root):
        raise LabError(f"lab host {host} cannot be rebooted: its overlay {root} is not mounted. Run `citadel lab down` and `citadel lab up`.")
    if not Path("/run/netns", netns).exists():
        raise LabError(f"lab host {host} cannot be rebooted: its network namespace {netns} is gone. Run `citadel lab down` and `citadel lab up`.")


def _stop(host: str, pid: int | None, cgroups: list[Path], timeout: float, say: Callable[[str], None]) -> None:
    """Ask the host's systemd to reboot and wait (at most ``timeout`` s) for its nspawn to exit."""
    if not (pid and containers.pid_alive(pid) and containers.is_nspawn(pid)):
        say(f"{host} was not running; booting it")
        return
    if not containers.request_reboot(pid, cgroups):
        say(f"{host}: its systemd was not found; {KILLED_AS_DOWN}")
        return
    say(f"{host}: rebooting (its systemd stops every unit in order)")
    asked = time.monotonic()
    stopped, status = containers.wait_stopped(pid, timeout)
    if not stopped:
        say(f"{host} did not shut down within {timeout:.0f} s; {KILLED_AS_DOWN}")
    elif status not in (None, containers.NSPAWN_REBOOTED):
        say(f"{host} shut down in {time.monotonic() - asked:.1f} s, but nspawn exited with {status}, not 133 (reboot)")
    else:
        say(f"{host} shut down in {time.monotonic() - asked:.1f} s")


def reboot_vm(st: dict[str, Any], *, timeout: float, say: Callable[[str], None]) -> float:
    """Reboot the lab VM (its qemu stays); seconds from the request until SSH answers with a new boot id."""
    lab_dir = Path(st["lab_dir"])
    record = st["vm_host"]
    host = record["name"]
    console = lab_dir / "vm" / CONSOLE_LOG

    def ssh(command: str) -> subprocess.CompletedProcess | None:
        argv = ssh_command(
            containers.USER, record["address"], int(record["port"]), Path(st["ssh_key"]),
            lab_dir / "vm" / KNOWN_HOSTS, command, connect_timeout=10,
        )
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30)
        except subprocess.TimeoutExpired:
            return None

    if not vm_running(lab_dir):
        raise LabError(f"the lab VM {host} is not running (its qemu is gone): run `citadel lab down` and `citadel lab up --vm`.")
    before = ssh(f"cat {BOOT_ID}")
    if before is None or before.returncode != 0 or not before.stdout.strip():
        detail = "no answer" if before is None else (before.stderr.strip() or f"exit {before.returncode}")
        raise LabError(f"the lab VM {host} does not answer SSH ({detail}), so it cannot be asked to reboot; see {console}.")
    say(f"{host}: rebooting (its systemd stops every unit in order; the boot takes a minute or more under emulation)")
    started = time.monotonic()
    asked = ssh("sudo -n systemctl reboot")
    # 255: sshd went away before the session closed, which a reboot may do.
    if asked is not None and asked.returncode not in (0, 255):
        raise LabError(f"`systemctl reboot` on the lab VM {host} failed: {asked.stderr.strip() or 'exit ' + str(asked.returncode)}")
    while True:
        if not vm_running(lab_dir):
            raise LabError(f"the lab VM's qemu exited while {host} rebooted; see its console log {console}.")
        now = ssh(f"cat {BOOT_ID}")
        if now is not None and now.returncode == 0 and now.stdout.strip() not in ("", before.stdout.strip()):
            return time.monotonic() - started
        if time.monotonic() - started > timeout:
            raise LabError(f"the lab VM {host} did not answer SSH again within {timeout:.0f} s of its reboot; see its console log {console}.")
        time.sleep(1)
