"""Run commands on lab hosts over real SSH with the pinned host keys, for assertions."""

from __future__ import annotations

import subprocess
import tempfile
from pathlib import Path

from deploy.lab.ssh import known_hosts_line, ssh_command


def known_hosts_for(lab) -> Path:
    handle = tempfile.NamedTemporaryFile("w", prefix="citadel-test-kh-", delete=False)
    for h in lab.hosts:
        handle.write(known_hosts_line(h.address, h.port, h.host_key))
    handle.close()
    return Path(handle.name)


def ssh_argv(lab, host, command: str) -> list[str]:
    """The ssh command line that runs `command` as the lab's SSH user on `host`."""
    return ssh_command(lab.ssh_user, host.address, host.port, lab.ssh_key, known_hosts_for(lab), command,
                       connect_timeout=10)


def ssh(lab, host, command: str, check: bool = True, timeout: int = 60, stdin: str | None = None) -> subprocess.CompletedProcess:
    """Run `command` as the lab's SSH user on `host` (a LabHost); returns the completed process."""
    result = subprocess.run(ssh_argv(lab, host, command), capture_output=True, text=True, timeout=timeout, input=stdin)
    if check and result.returncode != 0:
        raise AssertionError(f"ssh {host.name} {command!r} failed ({result.returncode}): {result.stderr}")
    return result
