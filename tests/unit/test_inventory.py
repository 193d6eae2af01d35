"""The inventory schema and loader: valid sites load, every mistake is named precisely."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from inventory.loader import InventoryError, load_inventory, parse_inventory

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "inventory" / "example-hospital.yaml"
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1kKmvSbq3oL0tmNxMq7eE8lRk9l0nqYy4m1qVw2aa"


def minimal() -> dict:
    return {
        "site": "demo",
        "vault": {"address": "https://vault.example.org:8200"},
        "hosts": {"gpu-01": {"address": "10.0.0.1", "groups": ["gpu"], "ssh": {"host_key": KEY}}},
    }


def problems(data: dict) -> list[str]:
    with pytest.raises(InventoryError) as caught:
        parse_inventory(data, Path("site.yaml"))
    assert str(caught.value).startswith("site.yaml: invalid inventory")
    return caught.value.problems


def test_example_hospital_is_valid():
    site = load_inventory(EXAMPLE)
    assert set(site.hosts) == {"gpu-01", "gpu-02", "gw-01"}
    assert site.hosts_in("gpu") == ["gpu-01", "gpu-02"]
    assert site.hosts["gpu-01"].gpus.count == 4


def test_defaults_are_the_safe_ones():
    site = parse_inventory(minimal(), Path("x"))
    s = site.settings
    assert not s.ssh_password_auth and not s.permit_root_login and not s.core_dumps and not s.usb_storage
    assert s.swap == "off" and s.automatic_security_updates
    assert s.vllm_trust_remote_code == [] and s.vllm_runtime_lora == []
    assert site.networks.ssh_allowed == [] and site.networks.gateway_allowed == []
    assert site.ssh_for("gpu-01").sudo and site.ssh_for("gpu-01").user == "citadel"


def test_mistyped_key_names_the_field_path():
    data = minimal()
    data["hosts"]["gpu-01"]["gpu"] = {"count": 1}
    assert "hosts.gpu-01.gpu: unknown key (check its spelling; unknown keys are not ignored)" in problems(data)


def test_nested_unknown_key():
    data = minimal()
    data["settings"] = {"core_dump": True}
    assert any(p.startswith("settings.core_dump: unknown key") for p in problems(data))


@pytest.mark.parametrize("address", ["10.0.0.300", "not an address", "-bad.example.org", "10.0.0"])
def test_bad_address_names_host(address):
    data = minimal()
    data["hosts"]["gpu-01"]["address"] = address
    (problem,) = problems(data)
    assert problem.startswith("hosts.gpu-01.address: expected an IP address or a DNS host name")


@pytest.mark.parametrize("address", ["10.0.0.7", "fd00::7", "gpu-01.clin.example.org", "gpu01"])
def test_good_addresses(address):
    data = minimal()
    data["hosts"]["gpu-01"]["address"] = address
    assert parse_inventory(data, Path("x")).hosts["gpu-01"].address == address


def test_plain_http_vault_is_refused():
    data = minimal()
    data["vault"]["address"] = "http://vault.example.org:8200"
    (problem,) = problems(data)
    assert problem.startswith("vault.address: Vault must be reached over https")


def test_bad_network():
    data = minimal()
    data["networks"] = {"ssh_allowed": ["10.0.0.1/24"]}
    (problem,) = problems(data)
    assert problem.startswith("networks.ssh_allowed.0: expected a network in CIDR form")


def test_host_key_must_be_pinned():
    data = minimal()
    del data["hosts"]["gpu-01"]["ssh"]
    assert any("hosts.gpu-01.ssh: no pinned host key" in p for p in problems(data))


def test_bad_host_key():
    data = minimal()
    data["hosts"]["gpu-01"]["ssh"]["host_key"] = "ssh-dss AAAA"
    (problem,) = problems(data)
    assert problem.startswith("hosts.gpu-01.ssh.host_key: expected an OpenSSH public host key line")


def test_unknown_group_and_model_cross_checks():
    data = minimal()
    data["hosts"]["gpu-01"]["groups"] = ["gpus"]
    assert any(p.startswith("hosts.gpu-01.groups.0:") for p in problems(data))
    data = minimal()
    data["hosts"]["gpu-01"]["models"] = ["nope"]
    assert "hosts.gpu-01.models: model 'nope' is not declared under models:" in problems(data)


def test_root_login_is_refused():
    data = minimal()
    data["ssh"] = {"user": "root"}
    assert any(p.startswith("hosts.gpu-01.ssh.user: log in as an unprivileged user") for p in problems(data))


def test_duplicate_endpoint():
    data = minimal()
    data["hosts"]["gpu-02"] = copy.deepcopy(data["hosts"]["gpu-01"])
    assert any("10.0.0.1:22 is also used by host gpu-01" in p for p in problems(data))


def test_ssh_defaults_merge_field_by_field():
    data = minimal()
    data["ssh"] = {"user": "ops", "port": 2222}
    data["hosts"]["gpu-01"]["ssh"]["port"] = 22
    ssh = parse_inventory(data, Path("x")).ssh_for("gpu-01")
    assert (ssh.user, ssh.port, ssh.host_key) == ("ops", 22, KEY)


def test_file_errors(tmp_path):
    with pytest.raises(InventoryError, match="file not found"):
        load_inventory(tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("site: [unclosed\n")
    with pytest.raises(InventoryError, match=r"bad.yaml: invalid inventory:\n  - line 2, column 1: not valid YAML"):
        load_inventory(bad)
    dup = tmp_path / "dup.yaml"
    dup.write_text(yaml.safe_dump(minimal()) + "site: other\n")
    with pytest.raises(InventoryError, match="duplicate key 'site'"):
        load_inventory(dup)
    scalar = tmp_path / "scalar.yaml"
    scalar.write_text("just text\n")
    with pytest.raises(InventoryError, match="top level must be a mapping"):
        load_inventory(scalar)


def test_relative_key_paths_resolve_from_the_file(tmp_path):
    data = minimal()
    data["ssh"] = {"key": "keys/id_ed25519"}
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(data))
    assert load_inventory(path).ssh_for("gpu-01").key == tmp_path / "keys" / "id_ed25519"
