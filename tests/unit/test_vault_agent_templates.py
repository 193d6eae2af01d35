"""What the vault-agent role writes, and the firewall's keyguard rules (pure logic).

tests/lab/test_vault_agent.py runs all of it for real against OpenBao and lab hosts.
"""

from __future__ import annotations

import yaml

from inventory.loader import load_inventory, parse_inventory
from roles.hardening.firewall import render_ruleset
from roles.vault_agent.templates import SPECS, agent_hcl, identity_template, templates
from tests.unit.test_firewall_ruleset import EXAMPLE, chain


def test_agent_config_logs_in_with_the_hosts_own_identity_and_keeps_its_sink_private():
    hcl = agent_hcl(SPECS["gpu"], "https://vault.example.org:8200", "citadel", "citadel-pki", "gpu-01", 604800)
    assert 'method "cert"' in hcl and 'name        = "gpu-gpu-01"' in hcl and "approle" not in hcl
    assert 'client_cert = "/var/lib/citadel-agent/gpu/identity.pem"' in hcl and "reload      = true" in hcl
    assert 'max_backoff = "30s"' in hcl and "num_retries = -1" in hcl  # Vault away: keep trying, 30 s apart at most
    assert "mode = 0600" in hcl
    # The identity (root only, 0600) and the service's files (its user, 0400).
    assert hcl.count("template {") == 5 and hcl.count('perms       = "0400"') == 4 and hcl.count('perms       = "0600"') == 1
    assert hcl.count('user        = "citadel-keyguard"') == 4
    # A new vLLM key restarts vLLM (it reads its key at start); the others only reload the keyguard.
    assert hcl.count("try-restart 'citadel-vllm@*.service'") == 1
    assert "token" not in hcl.replace("/token", "")  # no token in the configuration
    gateway = agent_hcl(SPECS["gateway"], "https://vault.example.org:8200", "citadel", "citadel-pki", "gw-01", 604800)
    # identity, tls, crl, internal keys, client keys, audit key, content key
    assert gateway.count("template {") == 7 and "citadel-gateway" in gateway


def test_the_identity_is_renewed_from_the_groups_own_client_only_role():
    text = identity_template(SPECS["gateway"], "citadel-pki", "gw-01", 86400)
    assert '"citadel-pki/issue/agent-gateway" "common_name=gw-01" "ttl=86400s"' in text
    assert ".Data.private_key" in text and ".Data.certificate" in text and "issuing_ca" not in text


def test_the_gpu_side_renders_hashes_and_certificates_follow_the_rotation_counter():
    gpu = templates(SPECS["gpu"], "citadel", "citadel-pki", "gpu-01", "10.20.1.11", ip=True)
    assert set(gpu) == {"tls.pem", "crl.pem", "internal-api-key.json", "vllm.env"}
    assert gpu["crl.pem"] == '{{ with secret "citadel-pki/cert/crl" }}{{ .Data.certificate }}{{ end }}\n'
    assert gpu["vllm.env"].startswith('{{ with secret "citadel/data/gpu/vllm-api-key" }}VLLM_API_KEY=')
    assert "sha256Hex" in gpu["internal-api-key.json"] and "toJSON" not in gpu["internal-api-key.json"]
    tls = gpu["tls.pem"]
    assert 'secret "citadel/data/gpu/tls-rotation"' in tls and "citadel_rotation=%v" in tls
    assert '"common_name=gpu-01" "ip_sans=10.20.1.11"' in tls and "citadel-pki/issue/host" in tls
    named = templates(SPECS["gateway"], "citadel", "citadel-pki", "gw-01", "gw-01.example.org", ip=False)
    assert '"alt_names=gw-01.example.org"' in named["tls.pem"] and "citadel-pki/issue/gateway" in named["tls.pem"]
    assert "toJSON" in named["internal-api-key.json"]  # the gateway presents the keys themselves


def test_keyguard_port_is_open_to_gateway_hosts_only():
    data = yaml.safe_load(EXAMPLE.read_text())
    data["hosts"]["gw-01"]["address"] = "10.30.1.5"  # the example's name does not resolve here
    site = parse_inventory(data, EXAMPLE)
    gpu, gateway = render_ruleset(site, "gpu-01"), render_ruleset(site, "gw-01")
    assert "set gateway_hosts_ip { type ipv4_addr; flags interval; elements = { 10.30.1.5/32 } }" in gpu
    assert "ip saddr @gateway_hosts_ip tcp dport 8443 accept" in chain(gpu, "input")
    assert "dport 8443" not in "\n".join(chain(gateway, "input"))
    assert "ip daddr @gpu_hosts_ip tcp dport 8443 accept" in chain(gateway, "output")
    assert "elements = { 10.20.1.11/32, 10.20.1.12/32 }" in gateway


def test_a_gateway_name_that_does_not_resolve_stays_blocked():
    ruleset = render_ruleset(load_inventory(EXAMPLE), "gpu-01")
    assert "set gateway_hosts_ip { type ipv4_addr; flags interval; }" in ruleset
