"""How this machine reaches a lab host over SSH: one command line, one known_hosts line.

Only the controller's key (no agent, no other identity), only the host key pinned in a
known_hosts file of the lab's own (strict checking, no global file), never a prompt.

Example::

    subprocess.run(ssh_command("citadel", "10.77.0.2", 22, key, known_hosts, "true"))
"""

from __future__ import annotations

from pathlib import Path


def ssh_command(
    user: str, address: str, port: int, key: Path, known_hosts: Path, *remote: str, connect_timeout: int = 5
) -> list[str]:
    """The ssh argv that runs `remote` as `user` on the host at `address`:`port`."""
    return [
        "ssh",
        "-i", str(key),
        "-p", str(port),
        "-o", "BatchMode=yes",
        "-o", "IdentitiesOnly=yes",
        "-o", "StrictHostKeyChecking=yes",
        "-o", f"UserKnownHostsFile={known_hosts}",
        "-o", "GlobalKnownHostsFile=/dev/null",
        "-o", f"ConnectTimeout={connect_timeout}",
        "-o", "LogLevel=ERROR",
        f"{user}@{address}",
        *remote,
    ]


def known_hosts_line(address: str, port: int, host_key: str) -> str:
    """The known_hosts line pinning `host_key` for `address`:`port` (ssh writes other ports as [address]:port)."""
    target = address if port == 22 else f"[{address}]:{port}"
    return f"{target} {host_key}\n"
