"""Default-deny nftables firewall, inbound and outbound, with allowlists from the inventory.

Inbound: SSH only from ``networks.ssh_allowed``; the gateway's HTTPS port only from
``networks.gateway_allowed`` on gateway hosts; the keyguard's port (the model server's
door) on GPU hosts only from the gateway hosts. Outbound: gateway hosts to the GPU hosts'
keyguard port, Vault (when its address is an IP)
and each ``networks.outbound`` rule; everything else is dropped and logged. On GPU hosts
the model server's user (``citadel-vllm``) gets nothing but loopback, not even Vault:
its packets to anywhere else are dropped and logged before any allowlist is read (the
vllm role's unit adds its own network namespace and IP filter on top). Before the
ruleset is loaded, the SSH connection pyinfra is using is checked against the allowlist,
and the role refuses rather than cut it.

Example (the lab)::

    citadel deploy -i inventory/lab.yaml --role hardening
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit

from pyinfra import host
from pyinfra.api import OperationError
from pyinfra.operations import apt, files, systemd

from citadel_runtime.layout import GATEWAY_PORT, KEYGUARD_PORT, MODEL_USER
from deploy.vault import VaultError
from deploy.vault.bootstrap import host_networks
from roles.facts import SshConnection
from roles.model_store.user import ensure_model_user
from roles.ops import nftables

TABLE = "citadel"


def group_addresses(site, group: str) -> list[str]:
    """The /32 and /128 networks of a group's hosts; a DNS name is resolved now.

    A name that does not resolve is left out: that host stays blocked, the safe failure.
    """
    found = set()
    for name in site.hosts_in(group):
        try:
            found.update(host_networks(site, name))
        except VaultError:
            continue
    return sorted(found)


def _split(networks: list[str]) -> tuple[list[str], list[str]]:
    v4 = [n for n in networks if ipaddress.ip_network(n).version == 4]
    v6 = [n for n in networks if ipaddress.ip_network(n).version == 6]
    return v4, v6


def _set(name: str, family: str, networks: list[str]) -> list[str]:
    kind = "ipv4_addr" if family == "ip" else "ipv6_addr"
    elements = f" elements = {{ {', '.join(networks)} }}" if networks else ""
    return [f"    set {name}_{family} {{ type {kind}; flags interval;{elements} }}"]


def _accept_from(set_name: str, family: str, port: int, protocol: str = "tcp") -> str:
    return f"        {family} saddr @{set_name}_{family} {protocol} dport {port} accept"


def _ssh_replies_to(family: str, port: int) -> str:
    return f"        {family} daddr @ssh_allowed_{family} tcp sport {port} accept"


def vault_endpoint(site) -> tuple[str, int] | None:
    """Vault's (address, port) when its URL names an IP address; a DNS name needs an outbound rule."""
    parts = urlsplit(str(site.vault.address))
    try:
        ipaddress.ip_address(parts.hostname or "")
    except ValueError:
        return None
    return parts.hostname, parts.port or 443


def render_ruleset(site, host_name: str) -> str:
    """The whole ruleset for one host, deterministic so that reruns are no-ops."""
    entry = site.hosts[host_name]
    # The port sshd listens on: behind a port forward it differs from the one we dial.
    ssh_port = site.ssh_for(host_name).server_port
    ssh4, ssh6 = _split(site.networks.ssh_allowed)
    gw4, gw6 = _split(site.networks.gateway_allowed)
    lines = [
        "#!/usr/sbin/nft -f",
        "# Managed by Citadel (role hardening, area firewall). Edits are overwritten.",
        "flush ruleset",
        "",
        f"table inet {TABLE} {{",
    ]
    lines += _set("ssh_allowed", "ip", ssh4) + _set("ssh_allowed", "ip6", ssh6)
    lines += _set("gateway_allowed", "ip", gw4) + _set("gateway_allowed", "ip6", gw6)
    gateways4, gateways6 = _split(group_addresses(site, "gateway") if "gpu" in entry.groups else [])
    gpus4, gpus6 = _split(group_addresses(site, "gpu") if "gateway" in entry.groups else [])
    lines += _set("gateway_hosts", "ip", gateways4) + _set("gateway_hosts", "ip6", gateways6)
    lines += _set("gpu_hosts", "ip", gpus4) + _set("gpu_hosts", "ip6", gpus6)
    lines += [
        "",
        "    chain input {",
        "        type filter hook input priority filter; policy drop;",
        # SSH from the administrators' networks comes before the invalid-state drop: when
        # the ruleset is first loaded, conntrack picks the deploy's own SSH connection up
        # mid-stream without its window scale, marks its segments invalid and the session
        # stalls (seen on the lab hosts). The TCP stack still rejects bad segments itself.
        _accept_from("ssh_allowed", "ip", ssh_port),
        _accept_from("ssh_allowed", "ip6", ssh_port),
        "        ct state invalid drop",
        "        ct state established,related accept",
        '        iif "lo" accept',
        '        iif != "lo" ip saddr 127.0.0.0/8 drop',
        '        iif != "lo" ip6 saddr ::1 drop',
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-advert, packet-too-big } accept",
        "        icmp type { echo-request, destination-unreachable, time-exceeded } limit rate 10/second accept",
    ]
    if "gateway" in entry.groups:
        lines += [_accept_from("gateway_allowed", "ip", GATEWAY_PORT), _accept_from("gateway_allowed", "ip6", GATEWAY_PORT)]
    if "gpu" in entry.groups:
        lines += [_accept_from("gateway_hosts", "ip", KEYGUARD_PORT), _accept_from("gateway_hosts", "ip6", KEYGUARD_PORT)]
    lines += [
        '        limit rate 5/minute log prefix "citadel-drop-in: " level warn',
        "    }",
        "",
        "    chain forward {",
        "        type filter hook forward priority filter; policy drop;",
        '        limit rate 5/minute log prefix "citadel-drop-fwd: " level warn',
        "    }",
        "",
        "    chain output {",
        "        type filter hook output priority filter; policy drop;",
        # The SSH server's replies to the administrators, before the invalid drop (see input).
        _ssh_replies_to("ip", ssh_port),
        _ssh_replies_to("ip6", ssh_port),
        "        ct state invalid drop",
        "        ct state established,related accept",
        '        oif "lo" accept',
    ]
    if "gpu" in entry.groups:
        # Before every allowlist: a compromised model server must not reach Vault either.
        lines.append(f'        meta skuid "{MODEL_USER}" limit rate 5/minute log prefix "citadel-vllm-egress: " '
                     "level warn")
        lines.append(f'        meta skuid "{MODEL_USER}" drop comment "the model server reaches nothing but loopback"')
    lines += [
        "        icmpv6 type { nd-neighbor-solicit, nd-neighbor-advert, nd-router-solicit, packet-too-big } accept",
    ]
    if "gateway" in entry.groups:
        lines += [
            f"        ip daddr @gpu_hosts_ip tcp dport {KEYGUARD_PORT} accept",
            f"        ip6 daddr @gpu_hosts_ip6 tcp dport {KEYGUARD_PORT} accept",
        ]
    vault = vault_endpoint(site)
    if vault:
        family = "ip" if ipaddress.ip_address(vault[0]).version == 4 else "ip6"
        lines.append(f'        {family} daddr {vault[0]} tcp dport {vault[1]} accept comment "Vault"')
    for rule in site.networks.outbound:
        family = "ip" if ipaddress.ip_network(rule.to).version == 4 else "ip6"
        ports = ", ".join(str(p) for p in rule.ports)
        comment = rule.why.replace('"', "'")
        lines.append(f'        {family} daddr {rule.to} {rule.protocol} dport {{ {ports} }} accept comment "{comment}"')
    lines += [
        '        limit rate 5/minute log prefix "citadel-drop-out: " level warn',
        "    }",
        "}",
    ]
    return "\n".join(lines) + "\n"


def lockout_problem(site, host_name: str, connection: str) -> str | None:
    """Why a ruleset for `host_name` would cut the SSH connection described by SSH_CONNECTION, or None."""
    fields = connection.split()
    if len(fields) < 4:
        return None  # not over SSH (a local connector): nothing to cut
    client, server_port = ipaddress.ip_address(fields[0]), int(fields[3])
    allowed = [ipaddress.ip_network(n) for n in site.networks.ssh_allowed]
    if not any(client in network for network in allowed):
        listed = ", ".join(site.networks.ssh_allowed) or "nothing"
        return (
            f"this SSH connection comes from {client}, which networks.ssh_allowed ({listed}) does not include, "
            "so it would be cut. Add the administrators' network to networks.ssh_allowed in the inventory."
        )
    ssh = site.ssh_for(host_name)
    if server_port != ssh.server_port:
        return (
            f"sshd on this host answers this connection on port {server_port}, but the ruleset would allow SSH "
            f"on port {ssh.server_port} only (hosts.{host_name}.ssh.port/listen_port), so it would be cut. "
            f"Set hosts.{host_name}.ssh.listen_port: {server_port} when a NAT or port forward sits in between."
        )
    return None


def check_no_lockout(site, host_name: str) -> None:
    """Refuse a ruleset that would drop the SSH connection this deploy is using."""
    connection = host.get_fact(SshConnection, _sudo=False)
    problem = lockout_problem(site, host_name, connection)
    if problem:
        raise OperationError(f"refusing to load the firewall on {host_name}: {problem}")


def apply(site, entry) -> None:
    check_no_lockout(site, host.name)
    if "gpu" in entry.groups:
        ensure_model_user()  # the ruleset names it: it must exist before the ruleset loads
    apt.packages(name="fw-nftables-enabled: nftables installed", packages=["nftables"], no_recommends=True)
    # The whole ruleset, file and live rules at once, fixes fw-boot-config-managed and every control that reads a
    # chain: fw-input-default-deny, fw-forward-default-deny, fw-output-default-deny, fw-inbound-sources-restricted,
    # fw-outbound-destinations-restricted, fw-invalid-dropped, fw-loopback-spoofing-dropped,
    # fw-inbound-drops-logged, fw-outbound-drops-logged.
    nftables.ruleset(name="fw-boot-config-managed and the chain controls: default-deny firewall (inbound and outbound)",
                     config=render_ruleset(site, host.name))
    files.file(name="fw-config-permissions: firewall configuration private to root", path="/etc/nftables.conf",
               user="root", group="root", mode="0700")
    systemd.service(name="fw-nftables-enabled: firewall loaded at boot", service="nftables", enabled=True, running=None)
