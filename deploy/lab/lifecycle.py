"""The lab's life cycle: ``up``, ``status``, ``reboot``, ``down`` and ``leftovers``, over the state file.

``up`` builds (or reuses) the cached golden rootfs and apt repository, then boots each
container host on its own overlay and network namespace in parallel, and the VM on request;
every step is recorded in the lab's state file first, so ``down`` removes exactly what was
made, even after a crash. ``leftovers`` lists whatever is still there.

    lab = up(hosts=2)          # SSH-ready hosts, as citadel@10.77.0.2, 10.77.0.6, ...
    status()                   # per host: name, kind, address, running, ssh
    reboot("lab-01")           # a real reboot; seconds until SSH answers again
    down()                     # removes everything; leftovers() == [] afterwards
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from deploy.lab import aptrepo, containers, network, rootfs, sshkeys, state
from deploy.lab.errors import LabError
from deploy.lab.host import LabHost
from deploy.lab.reboot import CONTAINER_TIMEOUT_S, reboot_container, reboot_vm
from deploy.lab.ssh import known_hosts_line
from deploy.lab.vm import SSH_TIMEOUT_S as VM_SSH_TIMEOUT_S
from deploy.lab.vm import check_vault_forward, start_vm, stop_vm, vm_leftovers, vm_running

SSH_USER = containers.USER
INOTIFY = Path("/proc/sys/fs/inotify/max_user_instances")
INOTIFY_TARGET = 8192
INOTIFY_ORIGINAL = ".inotify-original"
MAX_HOSTS = 99
VAULT_PORT = 8200  # where `citadel vault serve --lab` listens unless told otherwise

Progress = Callable[[str], None]


@dataclass(frozen=True)
class Lab:
    name: str
    hosts: list[LabHost]
    ssh_user: str
    ssh_key: Path
    apt_repo: Path
    vault_address: str | None = None  # where its hosts reach this machine's Vault (the VM too, when it has one)
    vault_port: int = VAULT_PORT  # ... on this port (the VM's forward is made for it when the VM boots)


# --- checks ----------------------------------------------------------------------------------


def _ensure_sbin_on_path() -> None:
    """ip, chroot, debootstrap live in sbin directories that a non-login PATH may lack."""
    parts = os.environ.get("PATH", "").split(os.pathsep)
    extra = [d for d in ("/usr/local/sbin", "/usr/sbin", "/sbin", "/usr/bin", "/bin") if d not in parts]
    if extra:
        os.environ["PATH"] = os.pathsep.join([p for p in parts if p] + extra)


def _require_root(command: str = "up") -> None:
    if os.geteuid() != 0:
        raise LabError(
            "citadel lab needs root: it creates network namespaces, mounts and containers. "
            f"Re-run as root (sudo citadel lab {command})."
        )


def _require_tools(vm: bool) -> None:
    needed = {
        "systemd-nspawn": "systemd-container",
        "debootstrap": "debootstrap",
        "dpkg-scanpackages": "dpkg-dev",
        "zstd": "zstd",
        "ip": "iproute2",
        "ssh": "openssh-client",
        "ssh-keygen": "openssh-client",
        "chroot": "coreutils",
        "mount": "mount",
    }
    missing = sorted({pkg for tool, pkg in needed.items() if shutil.which(tool) is None})
    if missing:
        raise LabError(
            "citadel lab is missing tools: install them with "
            f"`apt-get install -y {' '.join(missing)}` and run it again."
        )


# --- state helpers ---------------------------------------------------------------------------


def _host_from_record(record: dict[str, Any]) -> LabHost:
    return LabHost(
        name=record["name"],
        kind=record["kind"],
        address=record["address"],
        port=int(record["port"]),
        host_key=record["host_key"],
        controller_address=record["controller_address"],
    )


def _lab_from_state(st: dict[str, Any]) -> Lab:
    hosts = [_host_from_record(h) for h in st["hosts"] if h.get("ready")]
    if st.get("vm_host"):
        hosts.append(_host_from_record(st["vm_host"]))
    return Lab(
        name=st["name"],
        hosts=hosts,
        ssh_user=SSH_USER,
        ssh_key=Path(st["ssh_key"]),
        apt_repo=Path(st["apt_repo"]),
        vault_address=network.vault_address(st["subnet"]) if st.get("host_count") else None,
        vault_port=int(st.get("vault_port", VAULT_PORT)),
    )


def vault_address(*, name: str = "citadel") -> str:
    """The address the running lab's container hosts reach this machine's Vault on."""
    st = state.load(name)
    if not st or not st.get("complete"):
        raise LabError("no lab is up: run `citadel lab up` first")
    if not st.get("host_count"):
        raise LabError("the lab has no container host (the VM reaches nothing): nothing to listen for")
    return network.vault_address(st["subnet"])


def _host_running(record: dict[str, Any]) -> bool:
    pid = record.get("pid")
    return containers.pid_alive(pid) and containers.is_nspawn(pid)


def _vm_running(lab_dir: Path) -> bool:
    try:
        return bool(vm_running(lab_dir))
    except Exception:  # noqa: BLE001 - status must not fail on a broken VM
        return False


def existing_lab_verdict(*, same_shape: bool, dead: int, recorded: int) -> str:
    """What ``up`` does with a lab already recorded under its name: "reuse", "rebuild" or "refuse".

    A lab of this shape is reused when all of it runs and rebuilt when any of it is down. One of
    another shape is refused while any of it runs (somebody may be using it), but when none
    of it runs the record is only what a killed run or a rebooted or copied machine left, so
    it is rebuilt: CI once failed on exactly such a record.
    """
    if same_shape:
        return "rebuild" if dead else "reuse"
    return "rebuild" if dead >= recorded else "refuse"


def _vm_leftovers(lab_dir: Path) -> list[str]:
    return list(vm_leftovers(lab_dir))


def _raise_inotify(name: str, st: dict[str, Any]) -> None:
    try:
        current = int(INOTIFY.read_text())
    except OSError:
        return
    if current >= INOTIFY_TARGET:
        return
    marker = state.base_dir() / INOTIFY_ORIGINAL
    marker.parent.mkdir(parents=True, exist_ok=True)
    if not marker.exists():
        marker.write_text(f"{current}\n")
    INOTIFY.write_text(f"{INOTIFY_TARGET}\n")
    st["inotify_raised"] = True


def _restore_inotify(name: str) -> None:
    """Put fs.inotify.max_user_instances back once no other lab is left."""
    marker = state.base_dir() / INOTIFY_ORIGINAL
    if not marker.exists() or state.other_labs(name):
        return
    try:
        INOTIFY.write_text(marker.read_text())
    except OSError:
        pass
    marker.unlink(missing_ok=True)


# --- up --------------------------------------------------------------------------------------


def up(
    hosts: int = 2,
    vm: bool = False,
    *,
    name: str = "citadel",
    subnet: str = "10.77.0.0/16",
    vault_port: int = VAULT_PORT,
    progress: Progress | None = None,
) -> Lab:
    """Create the lab (or return it when it already exists with this shape) with SSH-ready hosts.

    The hosts reach this machine's Vault at the lab's Vault address on ``vault_port``: the
    containers through their link, the VM through a forward made when it boots (so the
    port is fixed now; with no container host there is no lab Vault address, and the VM
    reaches nothing).
    """
    say = progress or (lambda _text: None)
    state.check_name(name)
    _require_root()
    _ensure_sbin_on_path()
    if not 0 <= hosts <= MAX_HOSTS:
        raise LabError(f"a lab has 0 to {MAX_HOSTS} container hosts; {hosts} was asked for.")
    if hosts == 0 and not vm:
        raise LabError("a lab needs at least one host: ask for --hosts 1 or more, or --vm.")
    if not 1024 <= vault_port <= 65534:
        raise LabError(f"the lab's Vault port must be between 1024 and 65534 (Vault also uses the next), not {vault_port}.")
    _require_tools(vm)

    existing = state.load(name)
    if existing is not None:
        same = (
            existing.get("host_count") == hosts
            and bool(existing.get("vm")) == vm
            and existing.get("subnet") == subnet
            and existing.get("vault_port", VAULT_PORT) == vault_port
            and existing.get("complete")
        )
        lab_dir = state.lab_dir(name)
        dead = [h["name"] for h in existing.get("hosts", []) if not _host_running(h)]
        if existing.get("vm") and not _vm_running(lab_dir):
            dead.append("lab-vm")
        recorded = len(existing.get("hosts", [])) + bool(existing.get("vm"))
        verdict = existing_lab_verdict(same_shape=same, dead=len(dead), recorded=recorded)
        if verdict == "refuse":
            raise LabError(
                f"a lab named {name} already exists with another shape "
                f"({existing.get('host_count')} hosts, vm={bool(existing.get('vm'))}, subnet {existing.get('subnet')}, "
                f"Vault port {existing.get('vault_port', VAULT_PORT)}); "
                "run `citadel lab down` first."
            )
        if verdict == "reuse":
            say("the lab is already up")
            return _lab_from_state(existing)
        if same:
            say(f"hosts {', '.join(dead)} of the existing lab are not running; rebuilding the lab")
        else:
            say(f"a lab named {name} is recorded with another shape but none of its hosts runs; removing what is left of it")
        down(name=name, progress=progress)

    network.plan(name, subnet, max(hosts, 1))  # validates the subnet and its size
    network.check_subnet_free(subnet)
    vm_vault = (network.vault_address(subnet), vault_port) if vm and hosts else None
    if vm_vault:
        check_vault_forward(vm_vault[0])  # before anything is made

    lab_dir = state.lab_dir(name)
    started = time.monotonic()
    st: dict[str, Any] = {
        "name": name,
        "subnet": subnet,
        "host_count": hosts,
        "vm": vm,
        "vault_port": vault_port,
        "complete": False,
        "lab_dir": str(lab_dir),
        "hosts": [],
        "vm_host": None,
    }
    state.save(name, st)
    try:
        key = sshkeys.ensure_controller_key(lab_dir)
        st["ssh_key"] = str(key)
        tarball = rootfs.ensure_golden_tarball(say)
        repo = aptrepo.ensure_repo(tarball, say)
        st["apt_repo"] = str(repo)
        state.save(name, st)

        if hosts:
            _raise_inotify(name, st)
            lower = rootfs.ensure_extracted(tarball, say)
            st["rootfs"] = str(lower)
            pubkey = sshkeys.public_key_line(key)
            for index in range(1, hosts + 1):
                host = f"lab-{index:02d}"
                net = network.plan(name, subnet, index)
                host_dir = lab_dir / "hosts" / host
                st["hosts"].append(
                    {
                        "name": host,
                        "kind": "container",
                        "index": index,
                        "machine": containers.machine_name(name, host),
                        "address": net.address,
                        "controller_address": net.controller_address,
                        "port": 22,
                        "host_key": "",
                        "netns": net.netns,
                        "veth": net.veth,
                        "cgroups": [str(c) for c in containers.cgroup_dirs(name, host)],
                        "dir": str(host_dir),
                        "log": str(host_dir / "console.log"),
                        "pid": None,
                        "lock": None,
                        "ready": False,
                    }
                )
            state.save(name, st)
            say(f"booting {hosts} container host{'s' if hosts > 1 else ''}")
            with ThreadPoolExecutor(max_workers=min(hosts, 16)) as pool:
                futures = [
                    pool.submit(_bring_up_host, name, st, record, lower, repo, key, pubkey)
                    for record in st["hosts"]
                ]
                errors: list[Exception] = []
                for future in futures:
                    try:
                        future.result()
                    except Exception as error:  # noqa: BLE001 - the first one is raised below
                        errors.append(error)
            if errors:
                raise errors[0]

        if vm:
            say("starting the VM host (about half a minute)")
            vm_host = start_vm(lab_dir, key, repo, say, vault=vm_vault)
            st["vm_host"] = {
                "name": vm_host.name,
                "kind": vm_host.kind,
                "address": vm_host.address,
                "port": vm_host.port,
                "host_key": vm_host.host_key,
                "controller_address": vm_host.controller_address,
            }
        st["complete"] = True
        state.save(name, st)
    except BaseException as error:
        kept = _keep_logs(name, st)
        try:
            down(name=name)
        except Exception:  # noqa: BLE001 - report the original failure
            pass
        if isinstance(error, LabError) and kept:
            message = str(error)
            for record in st.get("hosts", []):
                message = message.replace(record["log"], f"{kept}/{record['name']}.log")
            raise LabError(f"{message} (the half-built lab was removed again)") from error
        raise
    say(f"lab {name} is up in {time.monotonic() - started:.1f} s")
    return _lab_from_state(st)


def _bring_up_host(
    name: str, st: dict[str, Any], record: dict[str, Any], lower: Path, repo: Path, key: Path, pubkey: str
) -> None:
    host = record["name"]
    host_dir = Path(record["dir"])
    host_dir.mkdir(parents=True, exist_ok=True)
    root = containers.mount_overlay(lower, host_dir)
    record["host_key"] = containers.prepare(root, host, pubkey)
    known_hosts = host_dir / "known_hosts"
    known_hosts.write_text(known_hosts_line(record["address"], 22, record["host_key"]))
    network.create(network.plan(name, st["subnet"], record["index"]), network.vault_address(st["subnet"]))
    cgroups = [Path(c) for c in record["cgroups"]]
    log = Path(record["log"])
    record["lock"] = containers.lock_file(root)
    record["pid"] = containers.boot(root, record["machine"], host, record["netns"], repo, cgroups, log)
    state.save(name, st)
    containers.wait_ready(host, record["address"], record["pid"], key, known_hosts, log)
    record["ready"] = True
    state.save(name, st)


def _keep_logs(name: str, st: dict[str, Any]) -> str | None:
    logs = [Path(h["log"]) for h in st.get("hosts", []) if Path(h["log"]).is_file()]
    if not logs:
        return None
    keep = Path(tempfile.mkdtemp(prefix=f"citadel-lab-{name}-failed-"))
    for log in logs:
        shutil.copyfile(log, keep / f"{log.parent.name}.log")
    return str(keep)


# --- status ----------------------------------------------------------------------------------


def status(*, name: str = "citadel") -> list[dict]:
    """Per host: name, kind, address, running, ssh (whether TCP port 22 answers)."""
    st = state.load(name)
    if st is None:
        return []
    rows = []
    for record in st.get("hosts", []):
        running = _host_running(record)
        rows.append(
            {
                "name": record["name"],
                "kind": "container",
                "address": record["address"],
                "running": running,
                "ssh": running and containers.tcp_open(record["address"], 22),
            }
        )
    vm_host = st.get("vm_host")
    if vm_host:
        running = _vm_running(Path(st["lab_dir"]))
        rows.append(
            {
                "name": vm_host["name"],
                "kind": "vm",
                "address": vm_host["address"],
                "running": running,
                "ssh": running and containers.tcp_open(vm_host["address"], int(vm_host["port"])),
            }
        )
    return rows


# --- reboot ----------------------------------------------------------------------------------


def reboot(
    host: str, *, name: str = "citadel", timeout: float | None = None, progress: Progress | None = None
) -> float:
    """Reboot one lab host for real (its systemd stops, then boots); seconds from the request until SSH answers.

    A container is booted again on the same overlay and network namespace, and the state file
    records its new nspawn PID. ``timeout`` bounds the orderly shutdown (then the container is
    killed, as ``down`` does) and again the boot to SSH; by default 120 s for a container and
    the VM's SSH timeout (420 s) for the VM.
    """
    say = progress or (lambda _text: None)
    state.check_name(name)
    st = state.load(name)
    if st is None:
        raise LabError(f"no lab named {name} is up, so there is no {host} to reboot: run `citadel lab up` first.")
    if not st.get("complete"):
        raise LabError(
            f"the lab {name} is not fully up (its state file {state.lab_dir(name) / state.STATE_FILE} says "
            f"incomplete), so {host} is not rebooted: wait for `citadel lab up` to finish, or run `citadel lab down`."
        )
    records = {r["name"]: r for r in st.get("hosts", [])}
    vm_record = st.get("vm_host")
    if host not in records and not (vm_record and vm_record["name"] == host):
        known = sorted(records) + ([vm_record["name"]] if vm_record else [])
        raise LabError(f"the lab {name} has no host {host!r}; its hosts are {', '.join(known) or 'none'}.")
    _require_root("reboot")
    _ensure_sbin_on_path()
    if host not in records:
        seconds = reboot_vm(st, timeout=timeout or VM_SSH_TIMEOUT_S, say=say)
    else:
        seconds = reboot_container(
            st, records[host], timeout=timeout or CONTAINER_TIMEOUT_S, save=lambda: state.save(name, st), say=say
        )
    say(f"{host} answers SSH again {seconds:.1f} s after the reboot was asked for")
    return seconds


# --- down ------------------------------------------------------------------------------------


def down(*, name: str = "citadel", progress: Progress | None = None) -> None:
    """Remove every trace of the lab: processes, mounts, namespaces, veths, cgroups, its directory.

    A lab that does not exist is fine (nothing to do). Also cleans what a crashed ``up`` or a
    lost state file left, by name.
    """
    say = progress or (lambda _text: None)
    state.check_name(name)
    _require_root("down")
    _ensure_sbin_on_path()
    lab_dir = state.lab_dir(name)
    st = state.load(name) or {}
    if not st and not lab_dir.exists() and not leftovers(name=name):
        return

    if st.get("vm") or st.get("vm_host") or (lab_dir / "vm").exists():
        say("stopping the VM host")
        stop_vm(lab_dir)

    say("stopping the container hosts")
    records = list(st.get("hosts", []))
    known = {r["name"] for r in records}
    # Anything else of this lab found by name (e.g. a state file lost mid-up).
    for hierarchy in containers.hierarchies():
        prefix = containers.cgroup_prefix(name)
        for path in hierarchy.glob(prefix + "*"):
            host = path.name[len(prefix):]
            if host not in known:
                known.add(host)
                records.append({"name": host, "cgroups": [str(c) for c in containers.cgroup_dirs(name, host)]})
    for record in records:
        cgroups = [Path(c) for c in record.get("cgroups", [])] or containers.cgroup_dirs(name, record["name"])
        containers.kill_tree(cgroups, record.get("pid"))

    locks = {r["lock"] for r in records if r.get("lock")} | set(_mounted_host_locks(lab_dir))
    say("unmounting")
    propagate = sorted(
        {containers.PROPAGATE_DIR / containers.machine_name(name, r["name"]) for r in records}
        | set(_propagate_dirs(name))
    )
    containers.unmount_all(lab_dir, *propagate)

    say("removing network namespaces and veths")
    for netns in network.existing_netns(name):
        network.destroy(netns, "")
    for veth in network.existing_veths(name):
        network.destroy("", veth)

    for record in records:
        containers.remove_cgroups(
            [Path(c) for c in record.get("cgroups", [])] or containers.cgroup_dirs(name, record["name"])
        )
    for path in propagate:
        shutil.rmtree(path, ignore_errors=True)
    for lock in locks:
        Path(lock).unlink(missing_ok=True)

    say("removing the lab directory")
    if lab_dir.exists() and not containers.mounts_under(lab_dir):
        shutil.rmtree(lab_dir, ignore_errors=True)
    _restore_inotify(name)


def _propagate_dirs(name: str) -> list[Path]:
    """nspawn's /run/systemd/nspawn/propagate/NAME directories of this lab's machines."""
    machine = re.compile(rf"^{re.escape(name)}-lab-\d+$")
    try:
        return sorted(p for p in containers.PROPAGATE_DIR.iterdir() if machine.match(p.name))
    except OSError:  # missing, or not root
        return []


def _mounted_host_locks(lab_dir: Path) -> list[str]:
    """nspawn's lock files for the host overlays still mounted under the lab directory."""
    mounted = set(containers.mounts_under(lab_dir))
    return [
        containers.lock_file(Path(point))
        for point in sorted(mounted)
        if Path(point).name == "merged" and Path(point).parent.parent.name == "hosts"
    ]


# --- leftovers -------------------------------------------------------------------------------


def leftovers(*, name: str = "citadel") -> list[str]:
    """Everything of this lab still present on the machine, in words; [] when clean."""
    state.check_name(name)
    lab_dir = state.lab_dir(name)
    found: list[str] = []
    st = None
    try:
        st = state.load(name)
    except LabError:
        found.append(f"an unreadable state file in {lab_dir}")

    cgroup_paths: list[Path] = []
    for hierarchy in containers.hierarchies():
        cgroup_paths.extend(sorted(hierarchy.glob(containers.cgroup_prefix(name) + "*")))
    pids: set[int] = set()
    for path in cgroup_paths:
        pids |= {p for p in containers.cgroup_pids(path) if containers.pid_alive(p)}
    for record in (st or {}).get("hosts", []):
        if _host_running(record):
            pids.add(record["pid"])
    if pids:
        found.append(f"processes {', '.join(str(p) for p in sorted(pids))}")
    for path in cgroup_paths:
        found.append(f"cgroup directory {path}")

    propagate = _propagate_dirs(name)
    mounts = containers.mounts_under(lab_dir, *propagate)
    for point in mounts:
        found.append(f"mount {point}")
    for netns in network.existing_netns(name):
        found.append(f"network namespace {netns}")
    for veth in network.existing_veths(name):
        found.append(f"veth {veth}")
    for path in propagate:
        found.append(f"directory {path}")
    locks = {r["lock"] for r in (st or {}).get("hosts", []) if r.get("lock")}
    for lock in sorted(locks | set(_mounted_host_locks(lab_dir))):
        if Path(lock).exists():
            found.append(f"nspawn lock file {lock}")
    if lab_dir.exists():
        found.extend(_vm_leftovers(lab_dir))
    if lab_dir.exists():
        found.append(f"lab directory {lab_dir}")
    return found
