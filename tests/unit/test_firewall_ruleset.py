"""The firewall ruleset rendered from the inventory (pure logic; tests/lab loads it for real)."""

from __future__ import annotations

from pathlib import Path

from inventory.loader import load_inventory
from roles.hardening.firewall import render_ruleset

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
