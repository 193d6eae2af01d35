"""`citadel vault bootstrap` against a real OpenBao server (the embedded one).

The root token is read from the server's 0600 file and handed to the client in-process, or
to the CLI through the environment (never argv). Nothing is mocked: the hosts' tokens are
real cert auth logins with identities from the server's PKI, and what they may and may not do is what the server enforces.
"""

from __future__ import annotations

import base64
import ipaddress
import json
import subprocess
import sys
import time
from pathlib import Path

import hvac
import pytest
import yaml

from deploy.vault.bootstrap import TRANSIT_KEYS, bootstrap
from deploy.vault.client import connect, resolve
from deploy.vault.policies import policy_text, render
from deploy.vault.server import serve, stop
from inventory.loader import load_inventory
from tests.lab.vaultutil import all_cmdlines, free_port_pair, host_client, require_bao, write_inventory

REPO = Path(__file__).resolve().parents[2]
# 3 mounts, 1 auth mount, 4 transit keys, 1 root CA, 1 CRL configuration, 4 pki roles (2 for services, 2 for
# identities), 2 policies, 3 host identities (gpu-01, gpu-02, gw-01), 7 first secrets
ITEMS = 26


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """A fresh embedded server; the dry run and two bootstraps are recorded in order."""
    require_bao()
    base = tmp_path_factory.mktemp("vault-bootstrap")
    directory = base / "vault"
    try:
        embedded = serve(directory, free_port_pair())
        token = embedded.token_file.read_text().strip()
        inventory = write_inventory(base / "site.yaml", embedded.address, embedded.ca_file)
        site = load_inventory(inventory)
        root = connect(resolve(site.vault, env={"BAO_TOKEN": token}))

        def mounts():
            return sorted(root.sys.list_mounted_secrets_engines()["data"]), sorted(root.sys.list_auth_methods()["data"])

        before = mounts()
        dry = bootstrap(root, site, dry_run=True)
        after_dry = mounts()
        timings = {}
        started = time.monotonic()
        first = bootstrap(root, site)
        timings["first"] = time.monotonic() - started
        started = time.monotonic()
        second = bootstrap(root, site)
        timings["second"] = time.monotonic() - started
        print(f"bootstrap: first {timings['first']:.2f} s, second {timings['second']:.2f} s")
        yield {
            "vault": embedded, "token": token, "root": root, "site": site, "inventory": inventory, "base": base,
            "before": before, "after_dry": after_dry, "dry": dry, "first": first, "second": second,
        }
    finally:
        stop(directory)


def test_dry_run_on_a_fresh_server_changes_nothing(server):
    assert server["before"] == server["after_dry"]
    assert "citadel/" not in server["before"][0] and "cert/" not in server["before"][1]
    assert server["dry"].dry_run and len(server["dry"].items) == ITEMS
    assert {i.status for i in server["dry"].items} == {"created"}


def test_first_bootstrap_creates_everything(server):
    report = server["first"]
    assert report.counts() == {"created": ITEMS, "updated": 0, "unchanged": 0, "removed": 0}
    engines = server["root"].sys.list_mounted_secrets_engines()["data"]
    assert engines["citadel/"]["type"] == "kv" and engines["citadel/"]["options"]["version"] == "2"
    assert engines["citadel-transit/"]["type"] == "transit"
    assert engines["citadel-pki/"]["type"] == "pki"
    assert engines["citadel-pki/"]["config"]["max_lease_ttl"] == 8760 * 3600


def test_second_bootstrap_changes_nothing(server):
    assert server["second"].counts() == {"created": 0, "updated": 0, "unchanged": ITEMS, "removed": 0}
    assert not server["second"].changed


def test_transit_keys_have_the_right_types_and_cannot_leave(server):
    root = server["root"]
    for name, key_type in TRANSIT_KEYS.items():
        key = root.secrets.transit.read_key(name, mount_point="citadel-transit")["data"]
        assert key["type"] == key_type
        assert key["exportable"] is False and key["allow_plaintext_backup"] is False
        assert key["deletion_allowed"] is False
        assert key["auto_rotate_period"] == 90 * 86400
    with pytest.raises(hvac.exceptions.VaultError):
        root.secrets.transit.export_key("model-data", "encryption-key", mount_point="citadel-transit")
    with pytest.raises(hvac.exceptions.VaultError):
        root.secrets.transit.delete_key("model-signing", mount_point="citadel-transit")
    # The signing key's public half is readable (that is how manifests are checked offline).
    signing = root.secrets.transit.read_key("model-signing", mount_point="citadel-transit")["data"]
    assert "BEGIN PUBLIC KEY" in signing["keys"]["1"]["public_key"]


def test_host_identities_are_bound_to_their_hosts_with_short_ttls(server):
    root = server["root"]
    expected = {"gpu-gpu-01": ("gpu-01", "127.0.0.1/32"), "gpu-gpu-02": ("gpu-02", "10.20.1.12/32"),
                "gateway-gw-01": ("gw-01", "127.0.0.1/32")}
    assert sorted(root.list("auth/cert/certs")["data"]["keys"]) == sorted(expected)
    for role, (host, cidr) in expected.items():
        group = role.split("-")[0]
        data = root.read(f"auth/cert/certs/{role}")["data"]
        assert data["token_policies"] == [f"citadel-{group}"]
        assert data["allowed_common_names"] == [host] and data["allowed_organizational_units"] == [f"agent-{group}"]
        assert data["token_ttl"] == 20 * 60 and data["token_max_ttl"] == 3600
        # The server stores a /32 as the bare address; compare as networks.
        assert [str(ipaddress.ip_network(c)) for c in data["token_bound_cidrs"]] == [cidr]
    for group in ("gpu", "gateway"):
        issuer = root.read(f"citadel-pki/roles/agent-{group}")["data"]
        assert issuer["max_ttl"] == 7 * 86400 and not issuer["server_flag"] and issuer["client_flag"]


def test_policies_on_the_server_are_the_repo_files(server):
    for group in ("gpu", "gateway"):
        stored = server["root"].sys.read_acl_policy(f"citadel-{group}")["data"]["policy"]
        expected = render(policy_text(group), kv_mount="citadel", transit_mount="citadel-transit", pki_mount="citadel-pki")
        assert stored.strip() == expected.strip()


def test_gpu_token_does_its_job_and_nothing_else(server):
    root = server["root"]
    root.secrets.kv.v2.create_or_update_secret("gpu/internal-api-key", {"key": "gpu-side"}, mount_point="citadel")
    root.secrets.kv.v2.create_or_update_secret("gateway/client-keys", {"hashes": "x"}, mount_point="citadel")
    plaintext = base64.b64encode(b"a model data key").decode()
    ciphertext = root.secrets.transit.encrypt_data("model-data", plaintext, mount_point="citadel-transit")["data"]["ciphertext"]

    gpu = host_client(server, "gpu")
    lookup = gpu.auth.token.lookup_self()["data"]
    assert lookup["ttl"] <= 20 * 60 and sorted(lookup["policies"]) == ["citadel-gpu", "default"]
    assert gpu.secrets.kv.v2.read_secret_version("gpu/internal-api-key", mount_point="citadel", raise_on_deleted_version=True)["data"]["data"] == {"key": "gpu-side"}
    assert gpu.secrets.transit.decrypt_data("model-data", ciphertext, mount_point="citadel-transit")["data"]["plaintext"] == plaintext
    cert = gpu.secrets.pki.generate_certificate("host", "gpu-01", extra_params={"ip_sans": "127.0.0.1"}, mount_point="citadel-pki")
    assert "BEGIN CERTIFICATE" in cert["data"]["certificate"]

    forbidden = [
        lambda: gpu.secrets.kv.v2.read_secret_version("gateway/client-keys", mount_point="citadel", raise_on_deleted_version=True),
        lambda: gpu.secrets.transit.encrypt_data("model-data", plaintext, mount_point="citadel-transit"),
        lambda: gpu.secrets.transit.rewrap_data("model-data", ciphertext, mount_point="citadel-transit"),
        lambda: gpu.secrets.transit.generate_hmac("audit-chain", plaintext, mount_point="citadel-transit"),
        lambda: gpu.secrets.transit.sign_data("model-signing", plaintext, mount_point="citadel-transit"),
        lambda: gpu.secrets.pki.generate_certificate("gateway", "gw-01", mount_point="citadel-pki"),
        lambda: gpu.sys.list_mounted_secrets_engines(),
        lambda: gpu.sys.read_acl_policy("citadel-gateway"),
    ]
    for attempt in forbidden:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()
    # Even through its own role, a GPU host gets no certificate for another group's name or a wildcard.
    for name in ("gw-01", "*.gpu-01", "localhost"):
        with pytest.raises(hvac.exceptions.InvalidRequest):
            gpu.secrets.pki.generate_certificate("host", name, mount_point="citadel-pki")


def test_gateway_token_does_its_job_and_nothing_else(server):
    root = server["root"]
    root.secrets.kv.v2.create_or_update_secret("gateway/client-keys", {"hashes": "x"}, mount_point="citadel")
    gateway = host_client(server, "gateway")
    assert gateway.secrets.kv.v2.read_secret_version("gateway/client-keys", mount_point="citadel", raise_on_deleted_version=True)["data"]["data"] == {"hashes": "x"}
    record = base64.b64encode(b"previous-hmac|request 42").decode()
    assert gateway.secrets.transit.generate_hmac("audit-chain", record, mount_point="citadel-transit")["data"]["hmac"].startswith("vault:v1:")
    assert "BEGIN CERTIFICATE" in gateway.secrets.pki.generate_certificate("gateway", "gw-01", mount_point="citadel-pki")["data"]["certificate"]
    forbidden = [
        lambda: gateway.secrets.kv.v2.read_secret_version("gpu/internal-api-key", mount_point="citadel", raise_on_deleted_version=True),
        lambda: gateway.secrets.transit.decrypt_data("model-data", "vault:v1:AAAA", mount_point="citadel-transit"),
        lambda: gateway.secrets.transit.read_key("audit-chain", mount_point="citadel-transit"),
        lambda: gateway.secrets.pki.generate_certificate("host", "gpu-01", mount_point="citadel-pki"),
    ]
    for attempt in forbidden:
        with pytest.raises(hvac.exceptions.Forbidden):
            attempt()


def test_cidr_binding_refuses_logins_from_elsewhere(server):
    """Re-bound to another address, the gateway's identity is refused from 127.0.0.1; restored after."""
    moved = write_inventory(server["base"] / "moved.yaml", server["vault"].address, server["vault"].ca_file, "10.30.0.5")
    try:
        report = bootstrap(server["root"], load_inventory(moved))
        changed = {(i.kind, i.name): i.status for i in report.items if i.status != "unchanged"}
        assert changed == {("host-identity", "gateway-gw-01"): "updated"}
        with pytest.raises(hvac.exceptions.VaultError) as refused:
            host_client(server, "gateway")
        print(f"login from 127.0.0.1 to an identity bound to 10.30.0.5: {refused.value}")
    finally:
        restored = bootstrap(server["root"], server["site"])
    assert [i.name for i in restored.items if i.status != "unchanged"] == ["gateway-gw-01"]
    host_client(server, "gateway")


def citadel(server, *args: str, env_token: bool = True, extra_env: dict | None = None) -> subprocess.Popen:
    import os

    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    if env_token:
        env["BAO_TOKEN"] = server["token"]
    env.update(extra_env or {})
    return subprocess.Popen(
        [sys.executable, "-m", "deploy.cli", "vault", *args],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env,
    )


def test_cli_bootstrap_json(server):
    process = citadel(server, "bootstrap", "-i", str(server["inventory"]), "--json")
    stdout, stderr = process.communicate(timeout=120)
    assert process.returncode == 0, stderr
    report = json.loads(stdout)
    assert report["counts"] == {"created": 0, "updated": 0, "unchanged": ITEMS, "removed": 0}
    assert report["flavor"] == "openbao" and report["dry_run"] is False


def test_cli_never_shows_the_root_token(server):
    """The token goes in through the environment; it appears in no output and no process's argv."""
    token = server["token"].encode()
    runs = [
        ("bootstrap", "-i", str(server["inventory"])),
        ("bootstrap", "-i", str(server["inventory"]), "--dry-run", "--json"),
        ("bootstrap", "-i", str(server["inventory"]), "--token-file", str(server["vault"].token_file)),
    ]
    for args in runs:
        process = citadel(server, *args)
        seen_in_argv = False
        while process.poll() is None:
            seen_in_argv |= any(token in line for line in all_cmdlines())
            time.sleep(0.02)
        stdout, stderr = process.communicate()
        assert process.returncode == 0, stderr
        assert not seen_in_argv
        assert server["token"] not in stdout + stderr
    # Failure paths: an unreachable server and a refused token must not echo the token either.
    unreachable = citadel(server, "bootstrap", "-i", str(server["inventory"]),
                          extra_env={"BAO_ADDR": "https://127.0.0.1:1"})
    out, err = unreachable.communicate(timeout=60)
    assert unreachable.returncode == 1 and "cannot reach Vault" in err and server["token"] not in out + err
    wrong = citadel(server, "bootstrap", "-i", str(server["inventory"]), env_token=False,
                    extra_env={"VAULT_TOKEN": server["token"][:-3] + "zzz"})
    out, err = wrong.communicate(timeout=60)
    assert wrong.returncode == 1 and "refused the token" in err and server["token"][:-3] not in out + err


def test_cli_bootstrap_without_a_token_is_bad_input(server):
    process = citadel(server, "bootstrap", "-i", str(server["inventory"]), env_token=False)
    out, err = process.communicate(timeout=60)
    assert process.returncode == 2
    assert "BAO_TOKEN" in err and "Traceback" not in err


def test_a_host_taken_out_of_the_inventory_loses_its_identity_role(server):
    """Its certificate would log in until it expires; the bootstrap removes the role instead."""
    smaller = yaml.safe_load(server["inventory"].read_text())
    del smaller["hosts"]["gpu-02"]
    path = server["base"] / "smaller.yaml"
    path.write_text(yaml.safe_dump(smaller))
    try:
        dry = bootstrap(server["root"], load_inventory(path), dry_run=True)
        identities = [(i.name, i.status) for i in dry.items if i.kind == "host-identity" and i.status != "unchanged"]
        assert identities == [("gpu-gpu-02", "removed")]  # (the PKI roles drop its name too: "updated")
        assert server["root"].read("auth/cert/certs/gpu-gpu-02") is not None  # a dry run changes nothing
        report = bootstrap(server["root"], load_inventory(path))
        assert report.counts()["removed"] == 1 and server["root"].read("auth/cert/certs/gpu-gpu-02") is None
    finally:
        restored = bootstrap(server["root"], server["site"])
    assert [(i.name, i.status) for i in restored.items if i.kind == "host-identity" and i.status != "unchanged"] == [
        ("gpu-gpu-02", "created")]
