"""Pure logic of deploy/vault: address/CA/token precedence, the policy checks, durations,
host networks, the server's config. No server is started here."""

from __future__ import annotations

import datetime
import os
import re
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from deploy.redaction import redact
from deploy.vault import VaultError
from deploy.vault.bootstrap import group_names, group_networks, seconds
from deploy.vault.client import resolve
from deploy.vault.policies import GROUPS, PLACEHOLDERS, check, parse, policy_file, policy_text, render
from deploy.vault.server import Layout, render_config
from deploy.vault.tls import needs_new_certificate, tls_paths, write_private, write_tls
from inventory.schema import Vault

REPO = Path(__file__).resolve().parents[2]
TOKEN = "s.unit-test-token-value"


@pytest.fixture
def vault_block(tmp_path):
    ca = tmp_path / "inventory-ca.pem"
    ca.write_text("ca")
    return Vault(address="https://vault.example.org:8200", ca_file=ca)


def token_file(tmp_path: Path, value: str = TOKEN, mode: int = 0o600) -> Path:
    path = tmp_path / f"token-{mode:o}"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT, mode)
    with os.fdopen(fd, "w") as handle:
        handle.write(value + "\n")
    os.chmod(path, mode)
    return path


# --- address and CA ---------------------------------------------------------------------


def test_inventory_address_and_ca_are_the_default(vault_block):
    settings = resolve(vault_block, env={"VAULT_TOKEN": TOKEN})
    assert settings.address == "https://vault.example.org:8200"
    assert settings.ca_file == vault_block.ca_file


@pytest.mark.parametrize("variable", ["VAULT_ADDR", "BAO_ADDR"])
def test_environment_address_overrides_the_inventory(vault_block, variable):
    settings = resolve(vault_block, env={variable: "https://127.0.0.1:8201/", "VAULT_TOKEN": TOKEN})
    assert settings.address == "https://127.0.0.1:8201"


def test_conflicting_bao_and_vault_variables_are_refused(vault_block):
    with pytest.raises(VaultError) as caught:
        resolve(vault_block, env={"VAULT_ADDR": "https://a:8200", "BAO_ADDR": "https://b:8200", "VAULT_TOKEN": TOKEN})
    assert caught.value.exit_code == 2 and "BAO_ADDR and VAULT_ADDR" in str(caught.value)
    # The same value under both names is not a conflict.
    assert resolve(vault_block, env={"VAULT_ADDR": "https://a:8200", "BAO_ADDR": "https://a:8200", "BAO_TOKEN": TOKEN})


@pytest.mark.parametrize("address", ["http://127.0.0.1:8200", "127.0.0.1:8200", "https://", "https://h:8200/v1/x"])
def test_bad_addresses_are_refused(vault_block, address):
    with pytest.raises(VaultError) as caught:
        resolve(vault_block, env={"BAO_ADDR": address, "VAULT_TOKEN": TOKEN})
    assert caught.value.exit_code == 2


def test_no_address_anywhere_names_what_to_set():
    with pytest.raises(VaultError, match="BAO_ADDR"):
        resolve(None, env={"VAULT_TOKEN": TOKEN})


def test_environment_ca_overrides_the_inventory(vault_block, tmp_path):
    ca = tmp_path / "env-ca.pem"
    ca.write_text("ca")
    assert resolve(vault_block, env={"BAO_CACERT": str(ca), "VAULT_TOKEN": TOKEN}).ca_file == ca
    with pytest.raises(VaultError, match="does not exist"):
        resolve(vault_block, env={"VAULT_CACERT": str(tmp_path / "missing.pem"), "VAULT_TOKEN": TOKEN})


# --- token ------------------------------------------------------------------------------


def test_token_precedence(vault_block, tmp_path):
    option_file = token_file(tmp_path, "from-the-option-file")
    env_file = tmp_path / "env-token"
    env_file.write_text("from-the-env-file")
    env_file.chmod(0o600)
    env = {"VAULT_TOKEN": "from-the-environment", "VAULT_TOKEN_FILE": str(env_file)}
    assert resolve(vault_block, option_file, env=env).token.reveal() == "from-the-option-file"
    assert resolve(vault_block, env=env).token.reveal() == "from-the-environment"
    del env["VAULT_TOKEN"]
    assert resolve(vault_block, env=env).token.reveal() == "from-the-env-file"
    assert resolve(vault_block, env={"BAO_TOKEN": "bao-name"}).token.reveal() == "bao-name"


def test_missing_token_names_every_way_to_give_one(vault_block):
    with pytest.raises(VaultError) as caught:
        resolve(vault_block, env={})
    message = str(caught.value)
    assert caught.value.exit_code == 2
    for name in ("BAO_TOKEN", "VAULT_TOKEN", "--token-file", "VAULT_TOKEN_FILE"):
        assert name in message


def test_token_file_readable_by_others_is_refused(vault_block, tmp_path):
    loose = token_file(tmp_path, mode=0o644)
    with pytest.raises(VaultError, match="readable by others") as caught:
        resolve(vault_block, loose, env={})
    assert TOKEN not in str(caught.value)


def test_token_is_masked(vault_block, tmp_path):
    settings = resolve(vault_block, token_file(tmp_path, "s.masked-token-123"), env={})
    assert "s.masked-token-123" not in repr(settings) and "s.masked-token-123" not in str(settings.token)
    assert redact("header s.masked-token-123") == "header ***"


def test_cli_has_no_token_argument():
    for command in ("bootstrap", "serve", "stop"):
        result = subprocess.run(
            [sys.executable, "-m", "deploy.cli", "vault", command, "--help"],
            capture_output=True, text=True, cwd=REPO, timeout=60,
        )
        assert result.returncode == 0 and "Usage:" in result.stdout
        assert not re.search(r"--token(?!-file)\b", result.stdout)


# --- policies ---------------------------------------------------------------------------


@pytest.mark.parametrize("group", GROUPS)
def test_repo_policies_pass_the_least_privilege_check(group):
    assert policy_file(group).exists()
    assert check(group, policy_text(group)) == []


@pytest.mark.parametrize("group", GROUPS)
def test_no_bare_wildcards_and_no_sudo_or_root(group):
    """Read the HCL directly (not through `check`), as an independent second look."""
    text = re.sub(r"#.*", "", policy_text(group))
    paths = re.findall(r'path\s+"([^"]+)"', text)
    assert paths
    for path in paths:
        if path.endswith("*"):
            assert path == f"{{{{kv_mount}}}}/data/{group}/*", f"bare wildcard outside the group's KV prefix: {path}"
        assert "+" not in path and "*" not in path.rstrip("*")
    capabilities = re.findall(r"capabilities\s*=\s*\[([^\]]*)\]", text)
    granted = {c.strip().strip('"') for line in capabilities for c in line.split(",")}
    assert not granted & {"sudo", "root"}
    assert granted <= {"read", "update", "create", "list"}


def test_each_group_reaches_only_its_own_kv_prefix():
    for group in GROUPS:
        others = [g for g in GROUPS if g != group]
        for rule in parse(policy_text(group)):
            for other in others:
                assert f"/data/{other}/" not in rule.path


@pytest.mark.parametrize(
    "text, problem",
    [
        ('path "*" { capabilities = ["read"] }', "globs"),
        ('path "secret/*" { capabilities = ["read"] }', "globs"),
        ('path "{{kv_mount}}/data/gateway/*" { capabilities = ["read"] }', "globs"),
        ('path "{{kv_mount}}/data/gpu/+/x" { capabilities = ["read"] }', "globs"),
        ('path "{{transit_mount}}/decrypt/model-data" { capabilities = ["update", "sudo"] }', "sudo"),
        ('path "{{transit_mount}}/decrypt/model-data" { capabilities = ["root"] }', "root"),
        ('path "sys/mounts" { capabilities = ["read"] }', "mounts"),
        ('path "{{other}}/x" { capabilities = ["read"] }', "placeholder"),
        ('path "{{pki_mount}}/issue/host" { }', "capabilities"),
    ],
)
def test_the_checker_catches_bad_policies(text, problem):
    problems = check("gpu", text)
    assert problems and any(problem in p for p in problems), problems


def test_render_fills_every_placeholder():
    for group in GROUPS:
        rendered = render(policy_text(group), kv_mount="kv", transit_mount="tr", pki_mount="pki")
        assert "{{" not in rendered
        assert set(re.findall(r"\{\{(\w+)\}\}", policy_text(group))) <= set(PLACEHOLDERS)
    with pytest.raises(ValueError):
        render(policy_text("gpu"), kv_mount="kv")


# --- bootstrap helpers ------------------------------------------------------------------


@pytest.mark.parametrize("value, expected", [("20m", 1200), ("72h", 259200), ("3600s", 3600), (3600, 3600), ("7", 7), ("1d", 86400)])
def test_seconds(value, expected):
    assert seconds(value) == expected


def test_group_networks_and_names():
    from inventory.loader import load_inventory

    site = load_inventory(REPO / "inventory" / "example-hospital.yaml")
    assert group_networks(site, "gpu") == ["10.20.1.11/32", "10.20.1.12/32"]
    assert group_names(site, "gateway") == ["gw-01", "gw-01.clin.st-example.org"]
    assert group_names(site, "gpu") == ["gpu-01", "gpu-02"]  # IPs go in ip_sans, not domains


# --- embedded server configuration and TLS -------------------------------------------------


def test_server_config_is_loopback_tls_with_a_file_audit_device(tmp_path):
    config = render_config(Layout(tmp_path), 8200)
    assert 'address         = "127.0.0.1:8200"' in config
    assert "tls_cert_file" in config and "tls_disable" not in config
    assert re.search(r'audit "file" "file" \{\s*options = \{\s*file_path = ', config)
    assert 'storage "raft"' in config


def test_tls_material(tmp_path):
    paths = write_tls(tmp_path)
    assert stat.S_IMODE(paths.key_file.stat().st_mode) == 0o600
    assert not needs_new_certificate(paths)
    later = datetime.datetime.now(datetime.UTC) + datetime.timedelta(days=80)
    assert needs_new_certificate(paths, now=later)
    assert not list(tmp_path.rglob("*ca-key*")), "the CA's key must never be written"
    assert needs_new_certificate(tls_paths(tmp_path / "empty"))


def test_write_private_never_widens(tmp_path):
    target = tmp_path / "secret"
    write_private(target, b"one")
    write_private(target, b"two")
    assert target.read_bytes() == b"two" and stat.S_IMODE(target.stat().st_mode) == 0o600


def test_the_auditor_policy_reads_every_transit_key_bootstrap_makes():
    """The audit's transit checks read each key; a key added to bootstrap needs its read here too."""
    from deploy.vault.bootstrap import TRANSIT_KEYS

    auditor = (Path(__file__).resolve().parents[2] / "hardening" / "vault" / "auditor.hcl").read_text()
    readable = set(re.findall(r'path "\{\{transit_mount\}\}/keys/([^"]+)" \{\s*capabilities = \["read"\]', auditor))
    assert set(TRANSIT_KEYS) <= readable, sorted(set(TRANSIT_KEYS) - readable)
