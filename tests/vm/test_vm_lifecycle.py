"""The qemu VM lab host: boots fresh from the cached image, is reachable with the pinned host
key, has what containers lack (kernel.* sysctls, AppArmor, dm-crypt), is air-gapped with the
local apt repository as its only source, and leaves nothing behind when stopped."""

from __future__ import annotations

import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

from deploy.lab.ssh import known_hosts_line, ssh_command

pytestmark = pytest.mark.vm


def _require_vm_tools() -> None:
    if os.geteuid() != 0:
        pytest.skip("the VM tier needs root (debootstrap, chroot); run the suite as root")
    if shutil.which("qemu-system-x86_64") is None:
        pytest.skip("the VM tier needs qemu-system-x86_64: apt-get install -y qemu-system-x86 qemu-utils")


def _qemu_processes_under(path: Path) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            args = (entry / "cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        if args and b"qemu-system" in args[0] and any(str(path).encode() in a for a in args):
            found.append(int(entry.name))
    return found


@pytest.fixture(scope="module")
def vm(tmp_path_factory):
    _require_vm_tools()
    from deploy.lab import aptrepo, rootfs, sshkeys
    from deploy.lab.vm import ensure_image, start_vm, stop_vm

    lab_dir = tmp_path_factory.mktemp("vmlab")
    key = sshkeys.ensure_controller_key(lab_dir)
    repo = aptrepo.ensure_repo(rootfs.ensure_golden_tarball(print), print)
    started = time.monotonic()
    base = ensure_image(lambda text: print(f"[vm] {text}")) / "base.qcow2"
    print(f"[vm] image ready after {time.monotonic() - started:.1f} s")
    base_before = base.stat()
    started = time.monotonic()
    try:
        host = start_vm(lab_dir, key, repo, lambda text: print(f"[vm] {text}"))
        print(f"[vm] SSH-ready after {time.monotonic() - started:.1f} s on port {host.port}")
        known_hosts = lab_dir / "vm-test-known_hosts"
        known_hosts.write_text(known_hosts_line(host.address, host.port, host.host_key))
        yield {"lab_dir": lab_dir, "host": host, "key": key, "known_hosts": known_hosts, "repo": repo,
               "base": base, "base_before": base_before}
    finally:
        stop_vm(lab_dir)


def ssh(vm, command: str, timeout: float = 120) -> subprocess.CompletedProcess:
    host = vm["host"]
    return subprocess.run(
        ssh_command("citadel", host.address, host.port, vm["key"], vm["known_hosts"], command, connect_timeout=20),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def ok(vm, command: str, timeout: float = 120) -> str:
    result = ssh(vm, command, timeout)
    assert result.returncode == 0, f"{command!r} failed ({result.returncode}): {result.stdout}{result.stderr}"
    return result.stdout


def test_lab_host_record(vm):
    host = vm["host"]
    assert (host.name, host.kind, host.address, host.controller_address) == ("lab-vm", "vm", "127.0.0.1", "10.0.2.2")
    assert host.host_key.startswith("ssh-ed25519 AAAA")
    assert len(host.host_key.split()) == 2


def test_ssh_with_pinned_key_as_citadel_with_sudo(vm):
    assert ok(vm, "hostname").strip() == "lab-vm"
    assert ok(vm, "id -u").strip() == "1000"
    assert ok(vm, "sudo -n id -u").strip() == "0"
    # Only the pinned ed25519 host key exists.
    keys = ok(vm, "ls /etc/ssh").split()
    assert [k for k in keys if k.startswith("ssh_host_")] == ["ssh_host_ed25519_key", "ssh_host_ed25519_key.pub"]


def test_wrong_host_key_is_refused(vm, tmp_path):
    other = tmp_path / "other"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other)], check=True)
    wrong = other.with_suffix(".pub").read_text().split()
    vm_bad = dict(vm, known_hosts=tmp_path / "known_hosts")
    vm_bad["known_hosts"].write_text(known_hosts_line("127.0.0.1", vm["host"].port, f"{wrong[0]} {wrong[1]}"))
    result = ssh(vm_bad, "true")
    assert result.returncode != 0
    assert "host key" in result.stderr.lower()


def test_kernel_sysctls_are_writable(vm):
    ok(vm, "sudo -n sysctl -w kernel.kptr_restrict=2")
    assert ok(vm, "cat /proc/sys/kernel/kptr_restrict").strip() == "2"


def test_apparmor_is_an_active_lsm(vm):
    assert "apparmor" in ok(vm, "cat /sys/kernel/security/lsm").split(",")


def test_dm_crypt_is_available(vm):
    assert "cryptsetup" in ok(vm, "sudo -n cryptsetup --version")
    ok(vm, "sudo -n modprobe dm_crypt")
    ok(vm, "test -e /dev/mapper/control")


def test_air_gapped_with_the_local_repository(vm):
    sources = ok(vm, "cat /etc/apt/sources.list; ls /etc/apt/sources.list.d").split("\n")
    assert "deb [trusted=yes] file:/srv/citadel-repo ./" in sources
    ok(vm, "findmnt -no OPTIONS /srv/citadel-repo | grep -qw ro")
    ok(vm, "sudo -n apt-get -q update", timeout=240)
    assert "file:/srv/citadel-repo" in ok(vm, "apt-cache policy rsync")
    # Nothing leaves the VM: qemu's user network is restricted. The probe's target is a
    # listener on this machine's loopback, which an unrestricted user network would reach
    # as 10.0.2.2 (never an address outside this machine).
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        port = listener.getsockname()[1]
        result = ssh(vm, f"timeout 8 bash -c 'exec 3<>/dev/tcp/10.0.2.2/{port}' && echo OPEN")
    assert "OPEN" not in result.stdout


def test_stop_leaves_nothing(vm):
    from deploy.lab.vm import stop_vm, vm_leftovers, vm_running

    lab_dir = vm["lab_dir"]
    assert vm_running(lab_dir)
    assert vm_leftovers(lab_dir)  # it is running: there is something to find
    stop_vm(lab_dir)
    assert not vm_running(lab_dir)
    assert vm_leftovers(lab_dir) == []
    assert _qemu_processes_under(lab_dir) == []
    stop_vm(lab_dir)  # a no-op once stopped
    assert vm_leftovers(lab_dir) == []
    # The cached base image stayed pristine (each boot writes to its own overlay).
    after = vm["base"].stat()
    assert (after.st_size, after.st_mtime_ns) == (vm["base_before"].st_size, vm["base_before"].st_mtime_ns)


def test_missing_repository_is_a_clear_error(vm, tmp_path):
    from deploy.lab.errors import LabError
    from deploy.lab.vm import start_vm, vm_leftovers

    with pytest.raises(LabError, match="no Packages index"):
        start_vm(tmp_path, vm["key"], tmp_path / "no-repo")
    assert vm_leftovers(tmp_path) == []


def test_boot_timeout_names_the_console_log_and_cleans_up(vm, tmp_path, monkeypatch):
    import deploy.lab.vm as vm_module
    from deploy.lab.errors import LabError

    monkeypatch.setattr(vm_module, "SSH_TIMEOUT_S", 1.0)
    monkeypatch.delenv("CITADEL_VM_SSH_TIMEOUT", raising=False)
    with pytest.raises(LabError, match="console log") as caught:
        vm_module.start_vm(tmp_path, vm["key"], vm["repo"])
    assert "did not answer SSH" in str(caught.value)
    assert vm_module.vm_leftovers(tmp_path) == []
    assert _qemu_processes_under(tmp_path) == []
