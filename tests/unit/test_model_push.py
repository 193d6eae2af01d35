"""`citadel model push`: which host gets which model, and what is refused before any SSH."""

from __future__ import annotations

import pytest

from deploy.models import ModelError
from deploy.models.push import assignments, host_dir, push_models, rsync_argv
from inventory.loader import parse_inventory

pytestmark = pytest.mark.unit
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1kKmvSbq3oL0tmNxMq7eE8lRk9l0nqYy4m1qVw2aa"


@pytest.fixture
def site(tmp_path):
    return parse_inventory({
        "site": "push-test",
        "vault": {"address": "https://vault.example:8200"},
        "models": {"llama": {"revision": "r2"}, "qwen": {"revision": "v3"}},
        "hosts": {
            "gpu-01": {"address": "10.0.0.1", "groups": ["gpu"], "models": ["llama", "qwen"], "ssh": {"host_key": KEY}},
            "gpu-02": {"address": "10.0.0.2", "groups": ["gpu"], "models": ["qwen"], "ssh": {"host_key": KEY, "port": 2222}},
            "gw-01": {"address": "10.0.0.3", "groups": ["gateway"], "ssh": {"host_key": KEY}},
        },
    }, tmp_path / "site.yaml")


def test_each_host_gets_the_revisions_the_inventory_names(site):
    assert assignments(site) == {"gpu-01": [("llama", "r2"), ("qwen", "v3")], "gpu-02": [("qwen", "v3")]}
    assert assignments(site, models=["llama"]) == {"gpu-01": [("llama", "r2")]}
    assert assignments(site, hosts=["gpu-02"]) == {"gpu-02": [("qwen", "v3")]}


def test_an_unknown_model_or_an_unsealed_revision_is_refused_before_any_ssh(site, tmp_path):
    with pytest.raises(ModelError, match="model 'mistral' is not declared"):
        assignments(site, models=["mistral"])
    (tmp_path / "store" / "llama" / "r1").mkdir(parents=True)  # another revision than the inventory's
    (tmp_path / "store" / "llama" / "r1" / "manifest.json").write_text("{}")
    with pytest.raises(ModelError) as refused:
        push_models(site, tmp_path / "store", models=["llama"])
    assert refused.value.exit_code == 2
    assert "host gpu-01 serves llama revision r2" in str(refused.value) and "citadel model seal" in str(refused.value)


def test_rsync_pins_the_host_key_uses_sudo_and_keeps_partial_files(site, tmp_path):
    argv = rsync_argv(site, "gpu-02", tmp_path / "qwen" / "v3", host_dir("qwen", "v3"), tmp_path / "known_hosts")
    ssh = argv[argv.index("-e") + 1]
    assert "StrictHostKeyChecking=yes" in ssh and f"UserKnownHostsFile={tmp_path / 'known_hosts'}" in ssh
    assert "-p 2222" in ssh and "BatchMode=yes" in ssh
    assert "--partial-dir=.citadel-partial" in argv and "--delete" in argv
    assert any(a.startswith("--rsync-path=sudo install -d -m 0700 /var/lib/citadel/models/qwen/v3") for a in argv)
    assert argv[-1] == "citadel@10.0.0.2:/var/lib/citadel/models/qwen/v3/"
