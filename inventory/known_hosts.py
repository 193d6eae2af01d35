"""The pinned host keys of an inventory, as an OpenSSH known_hosts file.

Hosts are never trusted on first use: each one pins its key inline (``ssh.host_key``) or
names a known_hosts file of its own (``ssh.known_hosts``). This module writes the inline
pins into one file, for every tool that reaches hosts over SSH: the pyinfra connection of
deploys and audits, and rsync when models or the vLLM wheelhouse are pushed.

Example::

    import tempfile
    from pathlib import Path

    from inventory.known_hosts import write_known_hosts
    from inventory.loader import load_inventory

    site = load_inventory("inventory/lab.yaml")
    with tempfile.TemporaryDirectory() as scratch:
        known_hosts = write_known_hosts(site, list(site.hosts), Path(scratch))
        # ssh -o UserKnownHostsFile=<known_hosts> -o StrictHostKeyChecking=yes ...
"""

from __future__ import annotations

from pathlib import Path

from inventory.schema import Inventory


def write_known_hosts(site: Inventory, names: list[str], directory: Path) -> Path:
    """Write ``directory/known_hosts`` with the inline pinned keys of the named hosts; return its path.

    A host on a port other than 22 is written as ``[address]:port``, as OpenSSH looks it up.
    Hosts that pin their key in a file of their own add no line (their ``ssh.known_hosts`` is used).
    """
    lines = []
    for name in names:
        ssh = site.ssh_for(name)
        if ssh.host_key:
            address = site.hosts[name].address
            target = address if ssh.port == 22 else f"[{address}]:{ssh.port}"
            lines.append(f"{target} {ssh.host_key}\n")
    path = directory / "known_hosts"
    path.write_text("".join(lines))
    return path
