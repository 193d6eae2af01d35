"""The ``vllm`` role: the isolated model server on GPU hosts, installed offline.

For a GPU host that serves models (``hosts.NAME.models``), it:

- installs vLLM into ``/opt/citadel/vllm/KEY`` (a virtualenv on Debian's python3) from the
  wheelhouse the controller builds (:mod:`deploy.vllm.wheelhouse`), pushed with rsync and
  installed with ``pip --no-index --no-deps --require-hashes``: the host fetches nothing;
  ``/opt/citadel/vllm/current`` points at it, and older installs are removed;
- writes ``/etc/citadel/vllm/MODEL.conf`` (the model's vLLM flags and the inventory's
  named opt-ins; no secrets) and the sandboxed ``citadel-vllm@.service``: it starts after
  ``citadel-unseal@MODEL`` (no valid model, no server), runs as ``citadel-vllm``, serves
  only on ``/run/citadel-vllm/MODEL/vllm.sock`` inside its own network namespace, takes its
  API key from the Vault agent's file, and only counts as started once a real completion
  comes back (``citadel_runtime.vllm_ready``);
- installs the isolation probe (``citadel-isolation-probe.timer``): every
  ``vllm.probe_interval_seconds`` it tries to reach the probe targets and Vault as the
  model server's user and alerts on any success.

The firewall's rule that drops the user's non-loopback traffic is in the hardening role
(area firewall); the unit's settings, and why each remaining exposure is needed, are in
``roles/vllm/README.md``.

Threats: data exfiltration and lateral movement from a compromised model server;
inference through direct, unauthenticated access to it; supply-chain compromise.

Example::

    citadel deploy -i site.yaml --role vllm
"""

from __future__ import annotations

import functools
import io
import json
import shlex
import tempfile
from pathlib import Path

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.api.exceptions import OperationError
from pyinfra.operations import apt, files, python, server, systemd

from citadel_runtime.layout import (
    ISOLATION_PROBE_CONFIG,
    ISOLATION_PROBE_METRICS,
    ISOLATION_PROBE_TIMER,
    ISOLATION_PROBE_UNIT,
    MODEL_USER,
    VLLM_CONF_DIR,
    VLLM_CURRENT,
    VLLM_INSTALLED_MARK,
    VLLM_UNIT,
    VLLM_VENV_ROOT,
    VLLM_WHEELHOUSE_DIR,
)
from deploy.models import ModelError
from deploy.models.push import sync_directory
from deploy.steps import say, sent_bytes
from deploy.vllm import VllmError
from deploy.vllm.wheelhouse import ensure
from inventory.known_hosts import write_known_hosts
from roles import Role
from roles.facts import DirectoryEntries, UnitActive, VllmInstalled
from roles.hardening.firewall import vault_endpoint
from roles.model_store import unit_name as unseal_unit
from roles.model_store.user import ensure_model_user
from roles.ops.pyinfra_private import will_change
from roles.ops.runtime import install_runtime

FILES = Path(__file__).parent / "files"
MODULES = ("__init__.py", "layout.py", "uds.py", "vllm_ready.py", "vllm_inspect.py", "isolation_probe.py", "drain.py")
# What differs with the hardware. CPU-only hosts: no devices at all, and no writable
# executable memory (measured: vLLM's CPU backend serves with it, --enforce-eager or not).
CPU_DEVICES = "PrivateDevices=yes\nMemoryDenyWriteExecute=yes"
# GPU hosts: the NVIDIA nodes only; CUDA's driver JIT-compiles kernels into W+X memory.
GPU_DEVICES = "\n".join([
    "# Only the NVIDIA nodes: the driver's control, memory and per-GPU devices.",
    "DevicePolicy=closed",
    "DeviceAllow=/dev/nvidiactl rw",
    "DeviceAllow=/dev/nvidia-uvm rw",
    "DeviceAllow=/dev/nvidia-uvm-tools rw",
    "DeviceAllow=char-nvidia-frontend rw",
    "DeviceAllow=char-nvidia-caps rw",
])


def unit_text(gpus: int) -> str:
    """The unit file for a host with `gpus` GPUs (0: CPU only, no devices at all)."""
    text = (FILES / VLLM_UNIT).read_text()
    devices = GPU_DEVICES if gpus else CPU_DEVICES
    if gpus:  # the NVIDIA driver's user-space needs the host's uid view of its nodes
        text = text.replace("PrivateUsers=yes\n", "")
    return text.replace("@HARDWARE@", devices)


def vllm_args(site, model: str, gpus: int) -> list[str]:
    """vLLM's flags for one model, from the inventory (its name, max length, dtype, cache)."""
    settings = site.models[model]
    args = ["--max-model-len", str(settings.max_model_len), "--dtype", settings.dtype]
    if settings.enforce_eager:
        args.append("--enforce-eager")
    if settings.kv_cache_bytes:
        args += ["--kv-cache-memory-bytes", str(settings.kv_cache_bytes)]
    if gpus:
        args += ["--gpu-memory-utilization", str(settings.gpu_memory_utilization)]
    if gpus > 1:
        args += ["--tensor-parallel-size", str(gpus)]
    if model in site.settings.vllm_trust_remote_code:
        args.append("--trust-remote-code")
    if model in site.settings.vllm_runtime_lora:
        args.append("--enable-lora")
    return args


def model_conf(site, model: str, gpus: int) -> str:
    """/etc/citadel/vllm/MODEL.conf: systemd environment syntax, no secrets."""
    trust = model in site.settings.vllm_trust_remote_code
    lora = model in site.settings.vllm_runtime_lora
    lines = [
        f"# Managed by Citadel (role vllm): settings of model {model}, from the inventory. No secrets.",
        f"CITADEL_VLLM_ARGS={shlex.join(vllm_args(site, model, gpus))}",
        "# Named opt-ins (settings.vllm_trust_remote_code / vllm_runtime_lora); 0 is the safe default.",
        f"CITADEL_OPT_IN_TRUST_REMOTE_CODE={int(trust)}",
        f"CITADEL_OPT_IN_RUNTIME_LORA={int(lora)}",
    ]
    if lora:
        lines.append("VLLM_ALLOW_RUNTIME_LORA_UPDATING=1")
    return "\n".join(lines) + "\n"


def probe_targets(site) -> list[str]:
    """The inventory's probe targets, and Vault: the one server every host may reach."""
    targets = list(site.vllm.probe_targets)
    vault = vault_endpoint(site)
    if vault:
        address = f"[{vault[0]}]" if ":" in vault[0] else vault[0]
        targets.append(f"{address}:{vault[1]}")
    return sorted(set(targets))


def probe_config(site) -> str:
    settings = {"user": MODEL_USER, "targets": probe_targets(site), "metrics": ISOLATION_PROBE_METRICS}
    return json.dumps(settings, indent=2) + "\n"


def timer_text(interval: int) -> str:
    return (
        "# Managed by Citadel (role vllm): how often the isolation probe runs.\n"
        "[Unit]\nDescription=Citadel: run the isolation probe of the model server regularly\n\n"
        f"[Timer]\nOnBootSec=2min\nOnUnitActiveSec={interval}s\nAccuracySec=1s\n\n"
        "[Install]\nWantedBy=timers.target\n"
    )


def _push_wheelhouse(site, wheelhouse, destination: str) -> None:
    with tempfile.TemporaryDirectory(prefix="citadel-wheelhouse-") as scratch:
        known_hosts = write_known_hosts(site, [host.name], Path(scratch))
        try:
            sync_directory(site, host.name, wheelhouse.root, destination, known_hosts,
                           functools.partial(sent_bytes(f"push the vLLM wheelhouse {wheelhouse.key}"), host.name))
        except ModelError as exc:
            raise OperationError(f"pushing the vLLM wheelhouse to {host.name}: {exc}") from None


def _install(site) -> bool:
    """Install vLLM when this wheelhouse's virtualenv is missing; True when it (re)installs."""
    try:
        # Through the deploy's live display (stderr): stdout may be the deploy's --json report.
        wheelhouse = ensure(site.vllm, progress=say)
    except VllmError as exc:
        raise OperationError(str(exc)) from None
    venv = f"{VLLM_VENV_ROOT}/{wheelhouse.key}"
    state = host.get_fact(VllmInstalled, mark=f"{venv}/{VLLM_INSTALLED_MARK}", current=VLLM_CURRENT, _sudo=True)
    wanted = wheelhouse.meta()["python"]
    if state.python != f"python{wanted}":
        raise OperationError(f"{host.name} has {state.python or 'no python3'}, but the wheelhouse was built for "
                             f"python{wanted}: build it on a controller with the hosts' Python version")
    if state.mark == wheelhouse.key and state.current == venv:
        return False
    staged = f"{VLLM_WHEELHOUSE_DIR}/{wheelhouse.key}"
    python.call(name=f"Push the vLLM wheelhouse {wheelhouse.key} (rsync, resumable)", function=_push_wheelhouse,
                site=site, wheelhouse=wheelhouse, destination=staged)
    quoted = shlex.quote(venv)
    server.shell(name=f"Install vLLM offline into {venv} (no index, hash-pinned)", commands=[
        f"rm -rf {quoted} && python3 -m venv {quoted}",
        f"{quoted}/bin/pip install --quiet --no-index --no-deps --require-hashes --no-cache-dir "
        f"--disable-pip-version-check --find-links {staged}/wheels -r {staged}/requirements.lock",
        # Read-only for everyone but root; byte-code compiled now, as the service cannot write.
        f"chown -R root:root {quoted} && chmod -R go-w {quoted}",
        f"echo {wheelhouse.key} > {quoted}/{VLLM_INSTALLED_MARK}",
        f"ln -sfn {quoted} {VLLM_CURRENT}.new && mv -T {VLLM_CURRENT}.new {VLLM_CURRENT}",
        # Older installs and the staged wheels are no longer needed (2-4 GB each).
        f"find {VLLM_VENV_ROOT} -mindepth 1 -maxdepth 1 -type d ! -name {shlex.quote(wheelhouse.key)} "
        "-exec rm -rf {} +",
        f"rm -rf {VLLM_WHEELHOUSE_DIR}",
    ])
    return True


@deploy("Citadel vLLM model server")
def apply() -> None:
    site = host.data.citadel_site
    entry = site.hosts[host.name]
    models = list(entry.models)
    ensure_model_user()
    # The probe tries the model server's egress, from the host and from inside each sandbox.
    code = install_runtime(MODULES, fixes={"isolation_probe.py": "vllm-egress-blocked"})
    probe = [
        files.put(name="vllm-egress-blocked: isolation probe targets", src=io.StringIO(probe_config(site)),
                  dest=ISOLATION_PROBE_CONFIG, user="root", group="root", mode="0644"),
        files.put(name=f"Unit {ISOLATION_PROBE_UNIT}", src=str(FILES / ISOLATION_PROBE_UNIT),
                  dest=f"/etc/systemd/system/{ISOLATION_PROBE_UNIT}", user="root", group="root", mode="0644"),
        files.put(name=f"Unit {ISOLATION_PROBE_TIMER}", src=io.StringIO(timer_text(site.vllm.probe_interval_seconds)),
                  dest=f"/etc/systemd/system/{ISOLATION_PROBE_TIMER}", user="root", group="root", mode="0644"),
    ]
    # The sandbox, its private network with the socket as the only door, the key from a file, offline, no remote code.
    unit = files.put(name="vllm-unit-exposure, vllm-listens-loopback-only, vllm-egress-blocked, "
                     f"vllm-api-key-not-on-cmdline, vllm-offline, vllm-no-remote-code, vllm-drains-before-stop: "
                     f"unit {VLLM_UNIT}",
                     src=io.StringIO(unit_text(entry.gpus.count)), dest=f"/etc/systemd/system/{VLLM_UNIT}",
                     user="root", group="root", mode="0644")
    files.directory(name="vLLM settings", path=VLLM_CONF_DIR, user="root", group="root", mode="0755")
    # Each model's flags, and the inventory's named opt-ins (remote code, runtime LoRA; off by default).
    confs = {model: files.put(name=f"vllm-no-remote-code: vLLM settings of {model}",
                              src=io.StringIO(model_conf(site, model, entry.gpus.count)),
                              dest=f"{VLLM_CONF_DIR}/{model}.conf", user="root", group="root", mode="0644")
             for model in models}
    # Settings of models no longer served go, and so do their servers.
    listed = host.get_fact(DirectoryEntries, path=VLLM_CONF_DIR)
    for stale in sorted({n[:-len(".conf")] for n in listed if n.endswith(".conf")} - set(models)):
        server.shell(name=f"Stop serving {stale} (no longer assigned)", commands=[
            f"systemctl disable --now citadel-vllm@{stale}.service || true", f"rm -f {VLLM_CONF_DIR}/{stale}.conf"])
    reload = any(will_change(op) for op in [unit, *probe])
    if reload:
        systemd.daemon_reload(name="Reload systemd units")
    systemd.service(name=f"vllm-egress-blocked: {ISOLATION_PROBE_TIMER} running and enabled",
                    service=ISOLATION_PROBE_TIMER, running=True, enabled=True, restarted=will_change(probe[2]))
    if not models:
        return
    apt.packages(name="python3-venv and libnuma1 (vLLM's virtualenv; its CPU kernels link libnuma)",
                 packages=["python3-venv", "libnuma1"])
    installed = _install(site)
    common = installed or will_change(unit) or any(will_change(op) for op in code)
    for model in models:
        name = f"citadel-vllm@{model}.service"
        files.link(name=f"{name} enabled at boot", path=f"/etc/systemd/system/multi-user.target.wants/{name}",
                   target=f"/etc/systemd/system/{VLLM_UNIT}")
        active = host.get_fact(UnitActive, unit=name)
        if common or will_change(confs[model]) or not active:
            # Blocks until a real completion comes back (ExecStartPost); says why when it does not.
            server.shell(name=f"vllm-serves-signed-model: start vLLM for {model} ({name})", commands=[
                f"systemctl restart {name} || {{ systemctl status --no-pager -n 0 {name} >&2; "
                f"journalctl -u {unseal_unit(model)} -u {name} -n 8 --no-pager -o cat >&2; exit 1; }}"])


ROLE = Role(name="vllm", summary="The isolated vLLM model server, installed offline, and its isolation probe",
            groups=("gpu",), apply=apply)
