"""The store volume's boot-time unwrap against a real OpenBao, with a GPU host's own token (its identity's login).

What ``citadel-store-unlock.service`` does before cryptsetup: read the wrapped key, unwrap it
through transit ``store-volume`` with the token the agent keeps in its sink (the GPU policy's
``decrypt`` on that key), and turn it into the key slot's passphrase. cryptsetup, the mount
and the whole unit at boot, through Vault, are tested on the VM (tests/vm/test_vm_hardening.py).
"""

from __future__ import annotations

import base64

import pytest

from citadel_runtime import store_unlock
from deploy.vault.server import stop
from tests.lab.vaultutil import host_client, start_bootstrapped

pytestmark = pytest.mark.lab


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = start_bootstrapped(tmp_path_factory.mktemp("store-volume-vault"))
    try:
        yield s
    finally:
        stop(s["dir"])


def settings_for(s, tmp_path, token: str, wrapped: str) -> dict:
    (tmp_path / "token").write_text(token + "\n")
    (tmp_path / "wrapped").write_text(wrapped + "\n")
    return {"vault_address": s["vault"].address, "vault_ca": str(s["vault"].ca_file), "token_file": str(tmp_path / "token"),
            "transit_mount": "citadel-transit", "transit_key": "store-volume", "wrapped_file": str(tmp_path / "wrapped"),
            "wait_seconds": 0}


def test_a_gpu_host_token_unwraps_the_volume_key(server, tmp_path):
    data = server["root"].secrets.transit.generate_data_key("store-volume", "plaintext",
                                                            mount_point="citadel-transit")["data"]
    gpu = host_client(server, "gpu")
    phrase = store_unlock.unwrap_key(settings_for(server, tmp_path, gpu.token, data["ciphertext"]))
    assert phrase == base64.b64decode(data["plaintext"]).hex().encode()


def test_other_tokens_and_other_ciphertexts_are_refused_without_leaking(server, tmp_path):
    data = server["root"].secrets.transit.generate_data_key("store-volume", "plaintext",
                                                            mount_point="citadel-transit")["data"]
    gateway = host_client(server, "gateway")
    with pytest.raises(store_unlock.StoreError, match=r"Vault refused to unwrap the volume key \(HTTP 403") as caught:
        store_unlock.unwrap_key(settings_for(server, tmp_path, gateway.token, data["ciphertext"]))
    assert data["plaintext"] not in str(caught.value) and gateway.token not in str(caught.value)
    # A model's data key (transit model-data) is no volume key: store-volume cannot unwrap it.
    model = server["root"].secrets.transit.generate_data_key("model-data", "wrapped",
                                                             mount_point="citadel-transit")["data"]["ciphertext"]
    gpu = host_client(server, "gpu")
    with pytest.raises(store_unlock.StoreError, match="Vault refused to unwrap the volume key"):
        store_unlock.unwrap_key(settings_for(server, tmp_path, gpu.token, model))
