"""The lab's one qemu VM host, for what containers cannot test.

Containers share this machine's kernel, so kernel.* sysctls, dm-crypt/LUKS and AppArmor cannot
be tried in them. The VM runs Debian 12's own kernel under qemu's software emulation (TCG;
``/dev/kvm`` here only offers nested PVM, which hangs the stock kernel).

How it is made:

* A base image, built once and cached under ``~/.cache/citadel/vm/<key>/`` (debootstrap of
  bookworm with a kernel, configured in a chroot, packed into an ext4 filesystem with
  ``mkfs.ext4 -d`` - no loop mount - and converted to qcow2), plus the kernel and initrd
  extracted for direct ``-kernel``/``-initrd`` boot. It is key-independent: the hostname
  ``lab-vm``, the user ``citadel`` (uid 1000, NOPASSWD sudo), root without a password and the
  local apt source are baked in; no SSH host key and no authorized key are.
* Per boot: a qcow2 overlay on the base (the base stays pristine; every boot is fresh) and a
  seed directory shared read-only over virtio-9p (tag ``citadelseed``) with a freshly made
  ed25519 host key and the controller's public key. ``citadel-seed.service`` copies them in
  before sshd starts. The local apt repository is shared read-only over 9p too (tag
  ``citadelrepo``) and mounted at /srv/citadel-repo.
* Air-gapped: ``-netdev user,restrict=on`` (no outbound traffic) with only a forward of a free
  127.0.0.1 port to the VM's port 22, and one way out: to the lab's Vault, at the same
  address and port the container hosts use (``https://10.77.0.1:8200`` by default), so the
  whole lab shares one inventory. A ``guestfwd`` rule has qemu run ``deploy/lab/relay.py``
  for each connection the VM opens there, which relays it to that port on this machine's
  127.0.0.1, where the lab's Vault listens too (``citadel vault serve`` always does). Vault
  sees the VM come from 127.0.0.1, its address in the inventory, which its tokens are bound
  to. qemu accepts a ``guestfwd`` address only inside the VM's own network, so that network
  is 10.0.0.0/8 (holding every lab subnet inside 10.0.0.0/8), with qemu's usual addresses:
  this machine 10.0.2.2, the VM 10.0.2.15.
"""

from __future__ import annotations

import hashlib
import ipaddress
import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from deploy.lab import rootfs, sshkeys
from deploy.lab.errors import LabError
from deploy.lab.host import LabHost
from deploy.lab.packages import vm_packages
from deploy.lab.rootfs import MIRROR, RELEASE, cache_root, run
from deploy.lab.ssh import known_hosts_line, ssh_command

Progress = Callable[[str], None]

NAME = "lab-vm"
USER = "citadel"
UID = GID = 1000
# Bump when the way the image is made changes, so old caches are not reused.
FORMAT_VERSION = 1
IMAGE_SIZE = "4G"
MEMORY_MB = 2048
CPUS = 2
# Boot to SSH costs qemu 80-100 CPU seconds under emulation: 47-62 s on this machine's 2 cores
# when lightly shared, 135-246 s at load averages of 6-14 (other labs busy). -smp 1 used less CPU
# but took longer. $CITADEL_VM_SSH_TIMEOUT overrides.
SSH_TIMEOUT_S = 420.0
CONTROLLER_ADDRESS = "10.0.2.2"  # qemu user networking: the host as the guest sees it
# The VM's user network: qemu's usual addresses (this machine .2.2, DNS .2.3, the VM from
# .2.15) in a network wide enough to hold the lab's Vault address, which a guestfwd rule
# may name only inside it.
GUEST_NETWORK = "10.0.0.0/8"
GUEST_DNS = "10.0.2.3"
GUEST_DHCP_START = "10.0.2.15"
QEMU_OWN = "10.0.2.0/24"  # qemu's own addresses in it: no Vault address may fall here
RELAY = Path(__file__).with_name("relay.py")
REPO_MOUNT = "/srv/citadel-repo"
REPO_TAG = "citadelrepo"
SEED_TAG = "citadelseed"
KERNEL_APPEND = "root=/dev/vda rw console=ttyS0 quiet apparmor=1 security=apparmor systemd.show_status=1"
# MODULES=list: only these (and their dependencies) go into the initrd - small, so it unpacks
# quickly under emulation. ext4 needs crc32c, and qemu's default CPU has no SSE4.2 for crc32c_intel.
INITRAMFS_MODULES = ("virtio_pci", "virtio_blk", "ext4", "crc32c_generic")

# Run files under lab_dir/vm
PID_FILE = "qemu.pid"
CONSOLE_LOG = "console.log"
OVERLAY = "overlay.qcow2"
SEED_DIR = "seed"
KNOWN_HOSTS = "known_hosts"
PORT_FILE = "port"


# --- base image ------------------------------------------------------------------------------


def cache_key(packages: list[str] | None = None) -> str:
    packages = vm_packages() if packages is None else packages
    setup = "|".join((SEED_SCRIPT, SEED_UNIT, *INITRAMFS_MODULES))  # baked into the image
    text = f"v{FORMAT_VERSION}|{RELEASE}|{MIRROR}|{','.join(sorted(packages))}|{hashlib.sha256(setup.encode()).hexdigest()}"
    return f"{RELEASE}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def image_dir(packages: list[str] | None = None) -> Path:
    return cache_root() / "vm" / cache_key(packages)


def _image_complete(directory: Path) -> bool:
    return all((directory / name).is_file() for name in ("base.qcow2", "vmlinuz", "initrd.img"))


def ensure_image(progress: Progress | None = None) -> Path:
    """Return the cached base image directory (base.qcow2, vmlinuz, initrd.img), building it if missing.

    Built in a temporary directory next to the cache and renamed into place when complete, so an
    interrupted build leaves no broken cache. A lock keeps two builds from running at once.
    """
    target = image_dir()
    if _image_complete(target):
        return target
    for tool, package in (("debootstrap", "debootstrap"), ("mkfs.ext4", "e2fsprogs"), ("qemu-img", "qemu-utils")):
        if shutil.which(tool) is None:
            raise LabError(f"{tool} was not found: install it with `apt-get install -y {package}`.")
    target.parent.mkdir(parents=True, exist_ok=True)
    with rootfs.build_lock(target.parent, "build"):
        if _image_complete(target):
            return target
        say = progress or (lambda _text: None)
        say("building the VM image (first time, about 3 minutes: debootstrap with a kernel)")
        work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
        log = target.parent / f"{target.name}.build.log"
        log.unlink(missing_ok=True)
        try:
            root = work / "rootfs"
            run(
                [
                    "debootstrap",
                    "--variant=minbase",
                    "--include=" + ",".join(vm_packages()),
                    RELEASE,
                    str(root),
                    MIRROR,
                ],
                f"debootstrap of the VM image (is {MIRROR} reachable?)",
                log,
            )
            say("configuring the VM image")
            _configure_rootfs(root, log)
            out = work / "image"
            out.mkdir()
            _extract_boot_files(root, out)
            say("packing the VM image into an ext4 disk")
            raw = work / "base.raw"
            run(
                ["mkfs.ext4", "-q", "-F", "-L", "citadel-root", "-d", str(root), str(raw), IMAGE_SIZE],
                "making the VM's ext4 image (mkfs.ext4 -d)",
                log,
            )
            shutil.rmtree(root)
            run(
                ["qemu-img", "convert", "-f", "raw", "-O", "qcow2", str(raw), str(out / "base.qcow2")],
                "converting the VM image to qcow2",
                log,
            )
            raw.unlink()
            for path in out.iterdir():
                os.chmod(path, 0o444)
            if target.exists():
                shutil.rmtree(target)
            os.replace(out, target)
            log.unlink(missing_ok=True)
            _prune_old_images(target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


def _prune_old_images(keep: Path) -> None:
    """Remove images of earlier package lists or formats (about 700 MB each)."""
    for path in keep.parent.iterdir():
        if path != keep and path.is_dir() and not path.name.startswith(".") and _image_complete(path):
            shutil.rmtree(path, ignore_errors=True)


def _chroot(root: Path, args: list[str], what: str, log: Path) -> None:
    env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "DEBIAN_FRONTEND": "noninteractive", "LANG": "C.UTF-8"}
    run(["chroot", str(root), *args], what, log, env=env)


def _write(path: Path, text: str, mode: int = 0o644) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.is_symlink():
        path.unlink()
    path.write_text(text)
    os.chmod(path, mode)


SEED_SCRIPT = f"""#!/bin/sh
# Copies this boot's SSH host key and the controller's public key from the read-only seed
# share (virtio-9p tag {SEED_TAG}) into place before sshd starts.
set -eu
seed=/run/citadel-seed
mkdir -p "$seed"
modprobe 9pnet_virtio 2>/dev/null || true
mount -t 9p -o trans=virtio,version=9p2000.L,ro {SEED_TAG} "$seed"
rm -f /etc/ssh/ssh_host_*_key /etc/ssh/ssh_host_*_key.pub
install -o root -g root -m 0600 "$seed/ssh_host_ed25519_key" /etc/ssh/ssh_host_ed25519_key
install -o root -g root -m 0644 "$seed/ssh_host_ed25519_key.pub" /etc/ssh/ssh_host_ed25519_key.pub
install -d -o {UID} -g {GID} -m 0700 /home/{USER}/.ssh
install -o {UID} -g {GID} -m 0600 "$seed/authorized_keys" /home/{USER}/.ssh/authorized_keys
umount "$seed"
rmdir "$seed"
"""

SEED_UNIT = """[Unit]
Description=Citadel lab: SSH host key and authorized key from the seed share
DefaultDependencies=no
After=local-fs.target systemd-modules-load.service
Before=ssh.service sysinit.target
ConditionPathExists=!/etc/ssh/ssh_host_ed25519_key

[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/usr/local/sbin/citadel-seed

[Install]
WantedBy=sysinit.target
"""


def _configure_rootfs(root: Path, log: Path) -> None:
    """Everything key-independent the VM needs, done in the image before it is packed."""
    etc = root / "etc"
    _write(etc / "hostname", NAME + "\n")
    _write(etc / "hosts", f"127.0.0.1\tlocalhost\n127.0.1.1\t{NAME}\n::1\tlocalhost ip6-localhost ip6-loopback\n")
    _write(
        etc / "fstab",
        "/dev/vda / ext4 rw,errors=remount-ro 0 1\n"
        f"{REPO_TAG} {REPO_MOUNT} 9p trans=virtio,version=9p2000.L,ro,nofail,msize=262144 0 0\n",
    )
    (root / REPO_MOUNT.lstrip("/")).mkdir(parents=True, exist_ok=True)
    _write(etc / "modules-load.d/citadel-lab.conf", "9p\n9pnet_virtio\n")
    # apt: the local repository is the only source (air-gapped, like a hospital host).
    _write(etc / "apt/sources.list", f"deb [trusted=yes] file:{REPO_MOUNT} ./\n")
    for extra in (etc / "apt/sources.list.d").glob("*"):
        extra.unlink()
    # Network: DHCP from qemu's user networking on the one virtio NIC.
    _write(
        etc / "systemd/network/20-lab.network",
        "[Match]\nName=en* eth*\n\n[Network]\nDHCP=ipv4\nIPv6AcceptRA=no\nLinkLocalAddressing=no\n",
    )
    _write(etc / "resolv.conf", "")  # no DNS in the lab; an empty file avoids lookups hanging
    # sshd: only the pinned ed25519 host key, keys only.
    _write(
        etc / "ssh/sshd_config.d/10-citadel-lab.conf",
        "HostKey /etc/ssh/ssh_host_ed25519_key\nPasswordAuthentication no\nUseDNS no\n",
    )
    for path in (etc / "ssh").glob("ssh_host_*_key*"):
        path.unlink()
    # The per-boot seed.
    _write(root / "usr/local/sbin/citadel-seed", SEED_SCRIPT, 0o755)
    _write(etc / "systemd/system/citadel-seed.service", SEED_UNIT)
    # The initrd must find the virtio disk.
    _write(etc / "initramfs-tools/modules", "\n".join(INITRAMFS_MODULES) + "\n")
    _write(etc / "initramfs-tools/conf.d/citadel-lab.conf", "MODULES=list\nCOMPRESS=zstd\n")
    _write(etc / "sudoers.d/citadel", f"{USER} ALL=(ALL) NOPASSWD:ALL\n", 0o440)

    _chroot(root, ["useradd", "--create-home", "--uid", str(UID), "--user-group", "--shell", "/bin/bash", USER],
            "creating the citadel user in the VM image", log)
    _chroot(root, ["passwd", "--delete", "root"], "clearing root's password in the VM image", log)
    _chroot(root, ["systemctl", "enable", "systemd-networkd.service", "citadel-seed.service", "ssh.service"],
            "enabling the VM's services", log)
    _chroot(root, ["systemctl", "mask", "systemd-networkd-wait-online.service", "apt-daily.timer",
                   "apt-daily-upgrade.timer", "e2scrub_all.timer", "e2scrub_reap.service", "fstrim.timer"],
            "masking slow services in the VM image", log)
    _chroot(root, ["update-initramfs", "-u", "-k", "all"], "regenerating the VM's initrd", log)

    for deb in (root / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for path in (root / "var/cache/apt").glob("*.bin"):
        path.unlink()
    shutil.rmtree(root / "var/lib/apt/lists", ignore_errors=True)
    (root / "var/lib/apt/lists/partial").mkdir(parents=True)
    _write(etc / "machine-id", "")  # systemd makes a fresh one each boot
    dbus_id = root / "var/lib/dbus/machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()


def _extract_boot_files(root: Path, out: Path) -> None:
    kernels = sorted((root / "boot").glob("vmlinuz-*"))
    initrds = sorted((root / "boot").glob("initrd.img-*"))
    if not kernels or not initrds:
        raise LabError("the VM image has no kernel or initrd in /boot (did linux-image-amd64 install?)")
    shutil.copyfile(kernels[-1], out / "vmlinuz")
    shutil.copyfile(initrds[-1], out / "initrd.img")


# --- per boot --------------------------------------------------------------------------------


def _vm_dir(lab_dir: Path) -> Path:
    return Path(lab_dir) / "vm"


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _make_seed(seed: Path, controller_key: Path) -> str:
    """Write this boot's host key and authorized_keys into ``seed``; returns the pinned host key line."""
    pub = Path(str(controller_key) + ".pub")
    if not pub.is_file():
        raise LabError(f"the controller's public key {pub} is missing; the lab makes it with its key pair.")
    seed.mkdir(parents=True, exist_ok=True)
    os.chmod(seed, 0o700)
    host_key = sshkeys.generate_host_keys(seed)
    (seed / "authorized_keys").write_text(sshkeys.public_key_line(controller_key) + "\n")
    return host_key


def check_vault_forward(address: str) -> None:
    """Raise LabError unless the VM can be given a route to the lab's Vault at ``address``."""
    ip = ipaddress.ip_address(address)
    if ip not in ipaddress.ip_network(GUEST_NETWORK) or ip in ipaddress.ip_network(QEMU_OWN):
        raise LabError(
            f"the lab's Vault address {address} cannot be forwarded into the VM: qemu forwards only addresses "
            f"inside the VM's network {GUEST_NETWORK}, and {QEMU_OWN} is qemu's own. Give the lab a subnet inside "
            f"{GUEST_NETWORK} and outside {QEMU_OWN} (the default 10.77.0.0/16 is)."
        )


def _netdev(port: int, vault: tuple[str, int] | None) -> str:
    """qemu's user network: SSH forwarded in from 127.0.0.1:``port``; out, only to ``vault`` (address, port)."""
    spec = (
        f"user,id=net0,restrict=on,net={GUEST_NETWORK},host={CONTROLLER_ADDRESS},dns={GUEST_DNS},"
        f"dhcpstart={GUEST_DHCP_START},hostfwd=tcp:127.0.0.1:{port}-:22"
    )
    if vault is None:
        return spec
    address, vault_port = vault
    check_vault_forward(address)
    # qemu runs this per connection (a shell-quoted command line); a comma is doubled in its options.
    relay = shlex.join([sys.executable, "-I", str(RELAY), str(vault_port)]).replace(",", ",,")
    return f"{spec},guestfwd=tcp:{address}:{vault_port}-cmd:{relay}"


def _qemu_command(vm_dir: Path, image: Path, port: int, apt_repo: Path, vault: tuple[str, int] | None) -> list[str]:
    return [
        "qemu-system-x86_64",
        "-name", NAME,
        "-accel", "tcg",
        "-m", str(MEMORY_MB),
        "-smp", str(CPUS),
        "-nodefaults",  # no floppy, CD-ROM, VGA or parallel port to probe while booting
        "-vga", "none",
        "-display", "none",
        "-monitor", "none",
        "-serial", f"file:{vm_dir / CONSOLE_LOG}",
        "-kernel", str(image / "vmlinuz"),
        "-initrd", str(image / "initrd.img"),
        "-append", KERNEL_APPEND,
        "-drive", f"if=virtio,format=qcow2,file={vm_dir / OVERLAY},cache=unsafe",
        "-netdev", _netdev(port, vault),
        "-device", "virtio-net-pci,netdev=net0",
        "-virtfs", f"local,path={vm_dir / SEED_DIR},mount_tag={SEED_TAG},security_model=none,readonly=on",
        "-virtfs", f"local,path={apt_repo},mount_tag={REPO_TAG},security_model=none,readonly=on",
        "-device", "virtio-rng-pci",
        "-daemonize",
        "-pidfile", str(vm_dir / PID_FILE),
    ]


def start_vm(
    lab_dir: Path,
    controller_key: Path,
    apt_repo: Path,
    progress: Callable[[str], None] | None = None,
    vault: tuple[str, int] | None = None,
) -> LabHost:
    """Boot the lab VM (fresh, from the cached base image) and return it once SSH answers.

    ``vault``: the (address, port) where the lab's hosts reach its Vault; the VM reaches it
    there too, relayed to that port on 127.0.0.1 (None: the VM reaches nothing).
    """
    say = progress or (lambda _text: None)
    if shutil.which("qemu-system-x86_64") is None:
        raise LabError("qemu-system-x86_64 was not found: install it with `apt-get install -y qemu-system-x86 qemu-utils`.")
    apt_repo = Path(apt_repo).resolve()
    if not (apt_repo / "Packages").is_file() and not (apt_repo / "Packages.gz").is_file():
        raise LabError(f"the local apt repository {apt_repo} has no Packages index; build the lab's repository first.")
    vm_dir = _vm_dir(lab_dir)
    if vm_running(lab_dir):
        raise LabError(f"a lab VM is already running from {vm_dir}; stop it first (citadel lab down).")
    stop_vm(lab_dir)  # leftovers of an earlier crashed boot

    image = ensure_image(say)
    log = _vm_dir(lab_dir) / CONSOLE_LOG
    try:
        vm_dir.mkdir(parents=True, exist_ok=True)
        os.chmod(vm_dir, 0o700)
        run(
            ["qemu-img", "create", "-q", "-f", "qcow2", "-F", "qcow2", "-b", str(image / "base.qcow2"), str(vm_dir / OVERLAY)],
            "creating the VM's overlay disk",
        )
        host_key = _make_seed(vm_dir / SEED_DIR, Path(controller_key))
        known_hosts = vm_dir / KNOWN_HOSTS
        say("booting the VM (software emulation, about a minute)")
        for attempt in range(5):  # the free port may be taken between choosing it and qemu binding it
            port = _free_port()
            (vm_dir / PORT_FILE).write_text(f"{port}\n")
            known_hosts.write_text(known_hosts_line("127.0.0.1", port, host_key))
            log.unlink(missing_ok=True)
            started = time.monotonic()
            result = subprocess.run(
                _qemu_command(vm_dir, image, port, apt_repo, vault), stdin=subprocess.DEVNULL, capture_output=True, text=True
            )
            if result.returncode == 0:
                break
            detail = (result.stderr or result.stdout).strip()[-2000:]
            if "host forwarding" not in detail or attempt == 4:
                raise LabError(f"qemu could not start the lab VM: {detail}")
        say("waiting for SSH on the VM")
        _wait_for_ssh(lab_dir, port, Path(controller_key), known_hosts, started)
    except BaseException as error:
        kept = _keep_console(log) if isinstance(error, LabError) else None
        stop_vm(lab_dir)  # no half-started VM is left behind
        if kept:
            raise LabError(f"{error} The console log was kept in {kept}.") from error
        raise
    say(f"the VM answers SSH after {time.monotonic() - started:.0f} s")
    return LabHost(
        name=NAME,
        kind="vm",
        address="127.0.0.1",
        port=port,
        host_key=host_key,
        controller_address=CONTROLLER_ADDRESS,
    )


def _ssh_timeout() -> float:
    override = os.environ.get("CITADEL_VM_SSH_TIMEOUT")
    if override:
        try:
            return float(override)
        except ValueError:
            raise LabError(f"CITADEL_VM_SSH_TIMEOUT must be a number of seconds, not {override!r}.") from None
    return SSH_TIMEOUT_S


def _wait_for_ssh(lab_dir: Path, port: int, key: Path, known_hosts: Path, started: float) -> None:
    log = _vm_dir(lab_dir) / CONSOLE_LOG
    timeout = _ssh_timeout()
    deadline = started + timeout
    last = ""
    while True:
        if not vm_running(lab_dir):
            raise LabError(f"the lab VM stopped while booting; see its console log {log}.")
        try:
            result = subprocess.run(
                ssh_command(USER, "127.0.0.1", port, key, known_hosts, "true", connect_timeout=10),
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=30,
            )
            if result.returncode == 0:
                return
            last = result.stderr.strip()
        except subprocess.TimeoutExpired:
            last = "ssh timed out"
        if time.monotonic() > deadline:
            raise LabError(
                f"the lab VM did not answer SSH as {USER}@127.0.0.1:{port} within {timeout:.0f} s "
                f"(last: {last or 'no answer'}); see its console log {log}."
            )
        time.sleep(2)


def _keep_console(log: Path) -> str | None:
    if not log.is_file():
        return None
    keep = Path(tempfile.mkdtemp(prefix="citadel-lab-vm-failed-"))
    shutil.copyfile(log, keep / CONSOLE_LOG)
    return str(keep / CONSOLE_LOG)


# --- state and teardown ----------------------------------------------------------------------


def _read_pid(vm_dir: Path) -> int | None:
    try:
        return int((vm_dir / PID_FILE).read_text().strip())
    except (OSError, ValueError):
        return None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _is_our_qemu(pid: int, vm_dir: Path) -> bool:
    args = _cmdline(pid)
    if not args or "qemu-system" not in Path(args[0]).name:
        return False
    marker = f"{vm_dir / PID_FILE}"
    return marker in args


def _qemu_pids(vm_dir: Path) -> list[int]:
    """Every qemu process of this lab's VM: the one in the pid file and any found by command line."""
    pids = set()
    pid = _read_pid(vm_dir)
    if pid is not None and _is_our_qemu(pid, vm_dir):
        pids.add(pid)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_our_qemu(int(entry.name), vm_dir):
            pids.add(int(entry.name))
    return sorted(pids)


def vm_running(lab_dir: Path) -> bool:
    """Whether this lab's VM (its qemu process) is running."""
    return bool(_qemu_pids(_vm_dir(lab_dir)))


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[-1].split()[0] != "Z"


def _signal_and_wait(pids: list[int], signum: int, seconds: float = 10) -> None:
    """Send `signum` to those of `pids` still alive, then wait up to `seconds` until none is."""
    for pid in pids:
        if _alive(pid):
            try:
                os.kill(pid, signum)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + seconds
    while any(_alive(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.1)


def stop_vm(lab_dir: Path) -> None:
    """Kill the VM's qemu and remove its run files under lab_dir/vm (the cached image stays)."""
    vm_dir = _vm_dir(lab_dir)
    pids = _qemu_pids(vm_dir)
    _signal_and_wait(pids, signal.SIGTERM)
    _signal_and_wait(pids, signal.SIGKILL)
    still = [p for p in pids if _alive(p)]
    if still:
        raise LabError(f"the lab VM's qemu (pid {', '.join(map(str, still))}) did not stop; kill it by hand.")
    if vm_dir.exists():
        shutil.rmtree(vm_dir)


def vm_leftovers(lab_dir: Path) -> list[str]:
    """Anything of the lab VM still present, in words; [] when clean."""
    vm_dir = _vm_dir(lab_dir)
    found = []
    pids = _qemu_pids(vm_dir)
    if pids:
        found.append(f"qemu processes {', '.join(map(str, pids))}")
    for name in (PID_FILE, OVERLAY, SEED_DIR, CONSOLE_LOG, KNOWN_HOSTS, PORT_FILE):
        if (vm_dir / name).exists():
            found.append(f"VM run file {vm_dir / name}")
    if vm_dir.exists() and not found:
        found.append(f"VM directory {vm_dir}")
    return found

