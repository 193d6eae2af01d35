"""Per-host network plumbing: a network namespace, a veth pair and one /30 per host.

Host i (1-based) gets the i-th /30 of the lab's subnet: this machine's end is .1 and the
container's end .2 of that /30. Nothing else: no default route and no forwarding, so a
container cannot reach anything beyond its /30 (like an air-gapped hospital network),
except one host route to this machine's end of the first link, the lab's Vault address
(`vault_address`): where `citadel vault serve --lab` also listens, as a hospital's hosts
reach their Vault and nothing else.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from deploy.lab.errors import LabError

NETNS_DIR = Path("/run/netns")
SYS_NET = Path("/sys/class/net")


@dataclass(frozen=True)
class HostNet:
    netns: str
    veth: str  # this machine's end, in the root namespace
    peer: str  # the container's end, inside the namespace
    controller_address: str
    address: str
    prefixlen: int = 30


def lab_hash(lab_name: str) -> str:
    return hashlib.sha256(lab_name.encode()).hexdigest()[:8]


def netns_name(lab_name: str, index: int) -> str:
    return f"{lab_name}-lab-{index:02d}"


def veth_name(lab_name: str, index: int) -> str:
    """``cl`` + 8 hex digits of the lab name's hash + the host index: at most 15 characters."""
    name = f"cl{lab_hash(lab_name)}{index:02d}"
    assert len(name) <= 15, name
    return name


def netns_pattern(lab_name: str) -> re.Pattern[str]:
    return re.compile(rf"^{re.escape(lab_name)}-lab-\d+$")


def veth_pattern(lab_name: str) -> re.Pattern[str]:
    return re.compile(rf"^cl{lab_hash(lab_name)}\d+$")


def plan(lab_name: str, subnet: str, index: int) -> HostNet:
    """The names and addresses of host ``index`` (1-based) in ``subnet``."""
    try:
        network = ipaddress.ip_network(subnet)
    except ValueError as error:
        raise LabError(f"the lab subnet {subnet!r} is not a valid IPv4 network ({error}); use e.g. 10.77.0.0/16.") from error
    if network.version != 4 or network.prefixlen > 30:
        raise LabError(f"the lab subnet {subnet} must be an IPv4 network of /30 or larger, e.g. 10.77.0.0/16.")
    count = 2 ** (30 - network.prefixlen)
    if index > count:
        raise LabError(f"the lab subnet {subnet} has room for only {count} hosts; use a larger one.")
    base = network.network_address + 4 * (index - 1)
    return HostNet(
        netns=netns_name(lab_name, index),
        veth=veth_name(lab_name, index),
        peer="eth0",
        controller_address=str(base + 1),
        address=str(base + 2),
    )


def vault_address(subnet: str) -> str:
    """Where lab hosts reach this machine's Vault: this machine's end of host 1's link."""
    return str(ipaddress.ip_network(subnet).network_address + 1)


def check_subnet_free(subnet: str) -> None:
    """Raise LabError if an address of this machine already lies in ``subnet``."""
    network = ipaddress.ip_network(subnet)
    result = subprocess.run(["ip", "-o", "-4", "addr", "show"], capture_output=True, text=True)
    for line in result.stdout.splitlines():
        parts = line.split()
        if "inet" in parts:
            iface = ipaddress.ip_interface(parts[parts.index("inet") + 1])
            if iface.network.overlaps(network):
                raise LabError(
                    f"the lab subnet {subnet} overlaps {iface} on {parts[1]} of this machine; "
                    "choose another subnet or run `citadel lab down` for the lab using it."
                )


def _ip(*args: str, netns: str | None = None, check: bool = True) -> subprocess.CompletedProcess:
    cmd = ["ip", *(["-n", netns] if netns else []), *args]
    result = subprocess.run(cmd, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if check and result.returncode != 0:
        raise LabError(f"`{' '.join(cmd)}` failed: {result.stderr.strip()}")
    return result


def create(net: HostNet, service_address: str | None = None) -> None:
    """Create the namespace and the veth pair, address both ends and bring them up.

    `service_address` (this machine's, on another host's link) gets a host route via this
    host's link, so the host reaches it; nothing else is routed.
    """
    _ip("netns", "add", net.netns)
    _ip("link", "add", net.veth, "type", "veth", "peer", "name", net.peer, "netns", net.netns)
    _ip("addr", "add", f"{net.controller_address}/{net.prefixlen}", "dev", net.veth)
    _ip("link", "set", net.veth, "up")
    _ip("link", "set", "lo", "up", netns=net.netns)
    _ip("addr", "add", f"{net.address}/{net.prefixlen}", "dev", net.peer, netns=net.netns)
    _ip("link", "set", net.peer, "up", netns=net.netns)
    if service_address and service_address != net.controller_address:
        _ip("route", "add", f"{service_address}/32", "via", net.controller_address, netns=net.netns)


def destroy(netns: str, veth: str) -> None:
    """Delete the veth (and with it its peer) and the namespace; missing ones are fine."""
    if veth and (SYS_NET / veth).exists():
        _ip("link", "del", veth, check=False)
    if netns and (NETNS_DIR / netns).exists():
        result = _ip("netns", "del", netns, check=False)
        if result.returncode != 0 and (NETNS_DIR / netns).exists():
            # A stale bind mount whose namespace is gone: unmount and remove by hand.
            subprocess.run(["umount", "-l", str(NETNS_DIR / netns)], capture_output=True)
            try:
                os.unlink(NETNS_DIR / netns)
            except OSError:
                pass


def existing_netns(lab_name: str) -> list[str]:
    pattern = netns_pattern(lab_name)
    names = set()
    if NETNS_DIR.is_dir():
        names.update(p.name for p in NETNS_DIR.iterdir())
    result = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True)
    names.update(line.split()[0] for line in result.stdout.splitlines() if line.strip())
    return sorted(n for n in names if pattern.match(n))


def existing_veths(lab_name: str) -> list[str]:
    pattern = veth_pattern(lab_name)
    return sorted(p.name for p in SYS_NET.iterdir() if pattern.match(p.name))
