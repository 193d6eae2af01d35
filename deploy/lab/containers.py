"""One lab host as a systemd-nspawn container on an overlay of the golden rootfs.

Prepared on the overlay before boot (hostname, user ``citadel`` with NOPASSWD sudo and the
controller's key, a pinned ed25519 host key, the local apt repository as the only source),
then booted detached with the flags measured in docs/lab-hosts.md, each nspawn in its
own cgroup directories. Teardown kills by cgroup, so nothing escapes. A reboot asks the
container's systemd to reboot (``request_reboot``), waits for nspawn to exit
(``wait_stopped``), frees what it leaves (``clear_stopped``) and boots the same overlay again.
"""

from __future__ import annotations

import errno
import os
import shlex
import shutil
import signal
import socket
import subprocess
import time
import uuid
from pathlib import Path

from deploy.lab import aptrepo, sshkeys
from deploy.lab.errors import LabError
from deploy.lab.ssh import ssh_command

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROPAGATE_DIR = Path("/run/systemd/nspawn/propagate")
LOCKS_DIR = Path("/run/systemd/nspawn/locks")
USER = "citadel"
UID = GID = 1000

# systemd starts reboot.target on this signal, as `systemctl reboot` does: every unit stops in
# order (ExecStop= runs), then the container's PID 1 reboots and nspawn exits with status 133.
# (SIGINT would go through ctrl-alt-del.target, which hardened hosts often mask.)
REBOOT_SIGNAL = signal.SIGRTMIN + 5
NSPAWN_REBOOTED = 133

# Popen objects of nspawn processes started by this Python process, so they can be reaped.
_children: dict[int, subprocess.Popen] = {}


def machine_name(lab_name: str, host: str) -> str:
    """The nspawn machine name; unique across labs (it names /run/systemd/nspawn/propagate/...)."""
    return f"{lab_name}-{host}"


def cgroup_name(lab_name: str, host: str) -> str:
    return f"citadel-lab.{lab_name}.{host}"


def cgroup_prefix(lab_name: str) -> str:
    return f"citadel-lab.{lab_name}."


def hierarchies() -> list[Path]:
    """The cgroup hierarchies each nspawn is moved into before it starts."""
    if (CGROUP_ROOT / "cgroup.controllers").exists():  # pure cgroup2 host
        return [CGROUP_ROOT]
    found = [CGROUP_ROOT / "systemd", CGROUP_ROOT / "unified"]
    return [h for h in found if h.is_dir()]


def cgroup_dirs(lab_name: str, host: str) -> list[Path]:
    return [h / cgroup_name(lab_name, host) for h in hierarchies()]


# --- preparing the overlay -------------------------------------------------------------------


def mount_overlay(lower: Path, host_dir: Path) -> Path:
    upper, work, merged = host_dir / "upper", host_dir / "work", host_dir / "merged"
    for path in (upper, work, merged):
        path.mkdir(parents=True, exist_ok=True)
    options = f"lowerdir={lower},upperdir={upper},workdir={work}"
    result = subprocess.run(
        ["mount", "-t", "overlay", "overlay", "-o", options, str(merged)], capture_output=True, text=True
    )
    if result.returncode != 0:
        raise LabError(f"mounting the overlay for {host_dir.name} failed: {result.stderr.strip()}")
    return merged


def prepare(root: Path, hostname: str, controller_pubkey: str) -> str:
    """Make the overlay ``root`` into host ``hostname``; returns its pinned host key line."""
    etc = root / "etc"
    (etc / "hostname").write_text(hostname + "\n")
    (etc / "hosts").write_text(
        f"127.0.0.1\tlocalhost\n127.0.1.1\t{hostname}\n::1\tlocalhost ip6-localhost ip6-loopback\n"
    )
    (etc / "machine-id").write_text(uuid.uuid4().hex + "\n")
    resolv = etc / "resolv.conf"
    if resolv.is_symlink() or resolv.exists():
        resolv.unlink()
    resolv.write_text("# air-gapped lab host: no DNS\n")

    # The local repository is the only package source.
    (etc / "apt/sources.list").unlink(missing_ok=True)
    sources_d = etc / "apt/sources.list.d"
    sources_d.mkdir(parents=True, exist_ok=True)
    for path in sources_d.iterdir():
        path.unlink()
    (sources_d / "citadel-repo.list").write_text(aptrepo.SOURCE_LINE + "\n")
    (root / aptrepo.MOUNT_POINT.lstrip("/")).mkdir(parents=True, exist_ok=True)

    # The user pyinfra logs in as: key only, with no password ('*', not the locked '!':
    # with UsePAM off, sshd refuses even key logins to '!'-locked accounts). Root has no
    # usable password and no key.
    result = subprocess.run(
        [
            "chroot", str(root), "/bin/sh", "-ec",
            f"useradd --create-home --uid {UID} --user-group --shell /bin/bash {USER}\n"
            f"usermod --password '*' {USER}\n"
            "usermod --password '*' root\n",
        ],
        stdin=subprocess.DEVNULL, capture_output=True, text=True,
        env={"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"},
    )
    if result.returncode != 0:
        raise LabError(f"creating the user {USER} on {hostname} failed: {result.stderr.strip()}")
    sudoers = etc / "sudoers.d" / USER
    sudoers.write_text(f"{USER} ALL=(ALL:ALL) NOPASSWD: ALL\n")
    os.chmod(sudoers, 0o440)
    (root / "root/.ssh/authorized_keys").unlink(missing_ok=True)
    sshkeys.write_authorized_key(root / "home" / USER / ".ssh", controller_pubkey, UID, GID)

    host_key = sshkeys.generate_host_keys(etc / "ssh")
    wants = etc / "systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    if not (wants / "ssh.service").is_symlink():
        (wants / "ssh.service").symlink_to("/lib/systemd/system/ssh.service")
    return host_key


# --- boot ------------------------------------------------------------------------------------


def nspawn_command(root: Path, machine: str, hostname: str, netns: str, repo: Path) -> list[str]:
    return [
        "systemd-nspawn",
        "--boot",
        "--register=no",
        "--keep-unit",
        f"--directory={root}",
        f"--machine={machine}",
        f"--hostname={hostname}",
        f"--network-namespace-path=/run/netns/{netns}",
        "--private-network",
        "--console=read-only",
        "--resolv-conf=off",
        "--timezone=off",
        "--link-journal=no",
        # Allow bpf(2): without it systemd's IPAddressDeny= is silently not enforced.
        "--system-call-filter=bpf",
        f"--bind-ro={repo}:{aptrepo.MOUNT_POINT}",
    ]


def boot(
    root: Path, machine: str, hostname: str, netns: str, repo: Path, cgroups: list[Path], log: Path
) -> int:
    """Start nspawn detached, inside its own cgroup directories; returns its PID."""
    for cgroup in cgroups:
        cgroup.mkdir(exist_ok=True)
    moves = "".join(f"echo $$ > {shlex.quote(str(c / 'cgroup.procs'))} || exit 97\n" for c in cgroups)
    script = moves + 'exec "$@"\n'
    env = dict(os.environ, SYSTEMD_NSPAWN_UNIFIED_HIERARCHY="1")
    with open(log, "ab") as out:
        process = subprocess.Popen(
            ["/bin/sh", "-c", script, "nspawn", *nspawn_command(root, machine, hostname, netns, repo)],
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
            close_fds=True,
        )
    _children[process.pid] = process
    return process.pid


def lock_file(root: Path) -> str:
    """The lock file nspawn makes for an image directory (it stays when nspawn is killed)."""
    info = os.stat(root)
    return str(LOCKS_DIR / f"inode-{info.st_dev}:{info.st_ino}")


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        with open(f"/proc/{pid}/stat") as stat:
            state = stat.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def is_nspawn(pid: int) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    except OSError:
        return False
    return any(part.endswith(b"systemd-nspawn") or part == b"nspawn" for part in cmdline)


def tcp_open(address: str, port: int = 22, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((address, port), timeout=timeout):
            return True
    except OSError:
        return False


def wait_ready(
    host: str, address: str, pid: int, key: Path, known_hosts: Path, log: Path, timeout: float = 90.0
) -> None:
    """Wait until sshd answers and an SSH login as citadel with the pinned key works."""
    deadline = time.monotonic() + timeout
    last = "sshd did not answer on port 22"
    while time.monotonic() < deadline:
        if not pid_alive(pid):
            raise LabError(f"lab host {host} stopped while booting; see its console log {log}.")
        if tcp_open(address, 22):
            try:
                result = subprocess.run(
                    ssh_command(USER, address, 22, key, known_hosts, "true"),
                    stdin=subprocess.DEVNULL, capture_output=True, text=True, timeout=30,
                )
            except subprocess.TimeoutExpired:
                last = f"SSH login as {USER} hung for 30 s"
                continue
            if result.returncode == 0:
                return
            last = f"SSH login as {USER} failed: {result.stderr.strip() or 'exit ' + str(result.returncode)}"
        time.sleep(0.1)
    raise LabError(f"lab host {host} ({address}) was not SSH-ready within {timeout:.0f} s ({last}); see its console log {log}.")


# --- reboot ----------------------------------------------------------------------------------


def status_field(status: str, field: str) -> list[str]:
    """The values of ``field`` (e.g. "NSpid", "PPid") in the text of /proc/PID/status; [] if absent."""
    for line in status.splitlines():
        key, _, values = line.partition(":")
        if key == field:
            return values.split()
    return []


def container_init(nspawn_pid: int, cgroups: list[Path]) -> int | None:
    """The container's systemd: the child of its nspawn that is PID 1 in its own PID namespace."""
    for pid in sorted(set().union(*(cgroup_pids(c) for c in cgroups))):
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            continue
        if status_field(status, "NSpid")[-1:] == ["1"] and status_field(status, "PPid") == [str(nspawn_pid)]:
            return pid
    return None


def request_reboot(nspawn_pid: int, cgroups: list[Path]) -> bool:
    """Ask the container's systemd for an orderly reboot; False when there is no systemd to ask."""
    init = container_init(nspawn_pid, cgroups)
    if init is None:
        return False
    try:
        os.kill(init, REBOOT_SIGNAL)
    except ProcessLookupError:
        return False
    return True


def wait_stopped(pid: int, timeout: float) -> tuple[bool, int | None]:
    """Wait up to ``timeout`` s for nspawn ``pid`` to exit: (exited, its exit status if this process started it)."""
    process = _children.get(pid)
    deadline = time.monotonic() + timeout
    while True:
        if process is not None:
            code = process.poll()
            if code is not None:
                _children.pop(pid, None)
                return True, code
        elif not (pid_alive(pid) and is_nspawn(pid)):
            return True, None  # its parent reaps it (or already did): no status to read
        if time.monotonic() >= deadline:
            return False, None
        time.sleep(0.05)


def clear_stopped(cgroups: list[Path], machine: str, lock: str | None) -> list[str]:
    """After a host's nspawn stopped: free its cgroups, propagate directory and lock for the next boot.

    A clean exit leaves the cgroup trees (payload/, supervisor/) behind; a killed nspawn also
    leaves its propagate directory and lock file. Returns what could not be removed.
    """
    propagate = PROPAGATE_DIR / machine
    still_mounted = unmount_all(propagate)
    if not still_mounted:
        shutil.rmtree(propagate, ignore_errors=True)
    if lock:
        Path(lock).unlink(missing_ok=True)
    return [f"mount {m}" for m in still_mounted] + [f"cgroup directory {c}" for c in remove_cgroups(cgroups)]


# --- teardown --------------------------------------------------------------------------------


def cgroup_pids(cgroup: Path) -> set[int]:
    pids: set[int] = set()
    if not cgroup.is_dir():
        return pids
    for directory, _subdirs, files in os.walk(cgroup):
        if "cgroup.procs" in files:
            try:
                text = Path(directory, "cgroup.procs").read_text()
            except OSError:
                continue
            pids.update(int(p) for p in text.split())
    return pids


def kill_tree(cgroups: list[Path], pid: int | None) -> None:
    """SIGKILL everything in the host's cgroups (and its nspawn), until nothing is left."""
    if pid and pid_alive(pid) and is_nspawn(pid):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    for _ in range(200):
        pids = set()
        for cgroup in cgroups:
            pids |= cgroup_pids(cgroup)
        pids = {p for p in pids if pid_alive(p)}
        if not pids:
            break
        for p in pids:
            try:
                os.kill(p, signal.SIGKILL)
            except ProcessLookupError:
                pass
        time.sleep(0.05)
    reap(pid)


def reap(pid: int | None) -> None:
    process = _children.pop(pid, None) if pid else None
    if process is not None:
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


def remove_cgroups(cgroups: list[Path]) -> list[str]:
    """rmdir the cgroup trees bottom-up; returns the ones that could not be removed."""
    failed = []
    for cgroup in cgroups:
        if not cgroup.is_dir():
            continue
        for _ in range(50):
            for directory, _subdirs, _files in os.walk(cgroup, topdown=False):
                try:
                    os.rmdir(directory)
                except OSError as error:
                    if error.errno not in (errno.ENOENT, errno.EBUSY, errno.ENOTEMPTY):
                        raise
            if not cgroup.exists():
                break
            time.sleep(0.05)
        else:
            failed.append(str(cgroup))
    return failed


def _unescape(field: str) -> str:
    return field.replace("\\040", " ").replace("\\011", "\t").replace("\\012", "\n").replace("\\134", "\\")


def mounts_under(*roots: Path) -> list[str]:
    """Mount points (deepest first) in this mount namespace that lie at or under ``roots``."""
    prefixes = [str(r).rstrip("/") for r in roots]
    found = []
    with open("/proc/self/mountinfo") as info:
        for line in info:
            point = _unescape(line.split()[4])
            if any(point == p or point.startswith(p + "/") for p in prefixes):
                found.append(point)
    return sorted(set(found), key=lambda p: (-p.count("/"), p))


def unmount_all(*roots: Path) -> list[str]:
    """Unmount everything under ``roots`` (lazily when busy); returns what is still mounted."""
    for _ in range(3):
        points = mounts_under(*roots)
        if not points:
            return []
        for point in points:
            if subprocess.run(["umount", point], capture_output=True).returncode != 0:
                subprocess.run(["umount", "-l", point], capture_output=True)
    return mounts_under(*roots)
