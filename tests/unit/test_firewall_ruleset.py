"""The firewall ruleset rendered from the inventory (pure logic; tests/lab loads it for real)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from hardening.controls.firewall import DEFAULT_DENY
from inventory.loader import load_inventory, parse_inventory
from roles.hardening.firewall import lockout_problem, render_ruleset

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example-hospital.yaml"


def chain(ruleset: str, name: str) -> list[str]:
    lines = ruleset.splitlines()
    start = lines.index(f"    chain {name} {{")
    return [line.strip() for line in lines[start + 1 : lines.index("    }", start)]]


def test_ssh_from_administrators_precedes_the_invalid_state_drop():
    # The first load must not stall the deploy's own SSH session (conntrack picks it up
    # mid-stream and would mark it invalid): its packets are accepted before that drop.
    site = load_inventory(EXAMPLE)
    ruleset = render_ruleset(site, "gpu-01")
    rules_in, rules_out = chain(ruleset, "input"), chain(ruleset, "output")
    ssh_in = rules_in.index("ip saddr @ssh_allowed_ip tcp dport 22 accept")
    ssh_out = rules_out.index("ip daddr @ssh_allowed_ip tcp sport 22 accept")
    assert ssh_in < rules_in.index("ct state invalid drop")
    assert ssh_out < rules_out.index("ct state invalid drop")
    assert rules_in.count("ip saddr @ssh_allowed_ip tcp dport 22 accept") == 1


def test_default_deny_and_gateway_only_on_gateway_hosts():
    site = load_inventory(EXAMPLE)
    gpu, gateway = render_ruleset(site, "gpu-01"), render_ruleset(site, "gw-01")
    for ruleset in (gpu, gateway):
        for name in ("input", "forward", "output"):
            assert "policy drop;" in chain(ruleset, name)[0]
    assert "dport 443" not in gpu and "ip saddr @gateway_allowed_ip tcp dport 443 accept" in gateway
    assert render_ruleset(site, "gpu-01") == gpu  # deterministic: a rerun is a no-op


def test_behind_a_port_forward_the_rules_use_the_port_sshd_listens_on():
    # The lab's VM is dialled on a forwarded port; inside it sshd listens on 22, and a rule
    # for the forwarded port would cut the deploy (it did: the CI run hung there).
    data = yaml.safe_load(EXAMPLE.read_text())
    data["hosts"]["gpu-01"]["ssh"]["port"] = 40022
    assert "tcp dport 40022 accept" in render_ruleset(parse_inventory(data, EXAMPLE), "gpu-01")
    data["hosts"]["gpu-01"]["ssh"]["listen_port"] = 22
    ruleset = render_ruleset(parse_inventory(data, EXAMPLE), "gpu-01")
    assert "ip saddr @ssh_allowed_ip tcp dport 22 accept" in ruleset and "40022" not in ruleset


def test_lockout_is_refused_for_a_foreign_source_or_another_port():
    site = load_inventory(EXAMPLE)
    admin = site.networks.ssh_allowed[0].split("/")[0]
    assert lockout_problem(site, "gpu-01", "") is None  # a local connector
    assert lockout_problem(site, "gpu-01", f"{admin} 50000 10.0.0.5 22") is None
    outsider = lockout_problem(site, "gpu-01", "192.0.2.77 50000 10.0.0.5 22")
    assert outsider and "192.0.2.77" in outsider and "networks.ssh_allowed" in outsider
    forwarded = lockout_problem(site, "gpu-01", f"{admin} 50000 10.0.0.5 2222")
    assert forwarded and "port 2222" in forwarded and "hosts.gpu-01.ssh.listen_port" in forwarded


def test_default_deny_rows_cover_every_chain_of_the_ruleset():
    ruleset = render_ruleset(load_inventory(EXAMPLE), "gpu-01")
    assert [row.chain for row in DEFAULT_DENY] == re.findall(r"^    chain (\w+) \{", ruleset, re.MULTILINE)
    assert all(row.id == f"fw-{row.chain}-default-deny" for row in DEFAULT_DENY)
