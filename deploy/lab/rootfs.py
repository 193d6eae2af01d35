"""The golden Debian 12 root filesystem every lab container boots from.

Built once with debootstrap (about a minute, needs deb.debian.org), cached as a zstd tarball
under ``~/.cache/citadel/rootfs/`` and extracted (under a second) as an overlay lowerdir.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path

from deploy.lab.errors import LabError
from deploy.lab.packages import rootfs_packages

RELEASE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# How a root filesystem is packed and unpacked: numeric owners, extended attributes (file capabilities) and ACLs kept.
TAR = ("tar", "--numeric-owner", "--xattrs", "--xattrs-include=*", "--acls")
# Bump when the way the tarball is made changes, so old caches are not reused.
FORMAT_VERSION = 1

Progress = Callable[[str], None]


def cache_root() -> Path:
    """Where the lab's caches live: $CITADEL_CACHE_DIR or ~/.cache/citadel."""
    override = os.environ.get("CITADEL_CACHE_DIR")
    return Path(override) if override else Path.home() / ".cache" / "citadel"


def cache_key() -> str:
    text = f"v{FORMAT_VERSION}|{RELEASE}|{MIRROR}|{','.join(sorted(rootfs_packages()))}"
    return f"{RELEASE}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def tarball_path() -> Path:
    return cache_root() / "rootfs" / f"{cache_key()}.tar.zst"


def run(args: list[str], what: str, log: Path | None = None, **kwargs) -> None:
    """Run one build step; when it fails, raise a LabError naming `what`, with the tail of `log` or of its output."""
    if log is not None:
        with open(log, "ab") as out:
            result = subprocess.run(args, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, **kwargs)
        if result.returncode != 0:
            tail = log.read_text(errors="replace").strip().splitlines()[-15:]
            raise LabError(f"{what} failed (exit {result.returncode}); log {log}:\n" + "\n".join(tail))
        return
    result = subprocess.run(args, stdin=subprocess.DEVNULL, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-2000:]
        raise LabError(f"{what} failed (exit {result.returncode}): {detail}")


@contextlib.contextmanager
def build_lock(cache_dir: Path, what: str):
    """Hold an exclusive lock while building `what` in `cache_dir`: two test workers or two
    `lab up`s on a fresh machine must not build (or replace) the same cache at once."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    with open(cache_dir / f".{what}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def ensure_golden_tarball(progress: Progress | None = None) -> Path:
    """Return the cached golden rootfs tarball, building it with debootstrap if it is missing.

    The build goes into a temporary directory next to the cache and is renamed into place
    only when complete, so an interrupted build never leaves a broken cache behind.
    """
    target = tarball_path()
    if target.is_file():
        return target
    with build_lock(target.parent, "rootfs-build"):
        if target.is_file():  # built by another process while this one waited
            return target
        return _build_golden_tarball(target, progress)


def _build_golden_tarball(target: Path, progress: Progress | None) -> Path:
    if shutil.which("debootstrap") is None:
        raise LabError("debootstrap was not found: install it with `apt-get install -y debootstrap`.")
    if shutil.which("zstd") is None:
        raise LabError("zstd was not found: install it with `apt-get install -y zstd`.")
    target.parent.mkdir(parents=True, exist_ok=True)
    say = progress or (lambda _text: None)
    say(f"building the golden Debian {RELEASE} rootfs with debootstrap (about a minute, once)")
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        rootfs = work / "rootfs"
        log = target.parent / f"{cache_key()}.debootstrap.log"
        log.unlink(missing_ok=True)
        run(
            [
                "debootstrap",
                "--variant=minbase",
                "--include=" + ",".join(rootfs_packages()),
                RELEASE,
                str(rootfs),
                MIRROR,
            ],
            f"debootstrap of Debian {RELEASE} (is {MIRROR} reachable?)",
            log=log,
        )
        _clean_rootfs(rootfs)
        say("packing the golden rootfs into the cache")
        partial = work / "rootfs.tar.zst"
        run([*TAR, "-I", "zstd -T0 -3", "-C", str(rootfs), "-cf", str(partial), "."], "packing the golden rootfs")
        os.replace(partial, target)
        log.unlink(missing_ok=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _clean_rootfs(rootfs: Path) -> None:
    """Drop what every host gets fresh anyway: downloaded .debs, host keys, machine-id."""
    for deb in (rootfs / "var/cache/apt/archives").glob("*.deb"):
        deb.unlink()
    for path in (rootfs / "var/cache/apt").glob("*.bin"):
        path.unlink()
    for path in (rootfs / "etc/ssh").glob("ssh_host_*_key*"):
        path.unlink()
    (rootfs / "etc/machine-id").write_text("")
    dbus_id = rootfs / "var/lib/dbus/machine-id"
    if dbus_id.is_file() and not dbus_id.is_symlink():
        dbus_id.unlink()


def ensure_extracted(tarball: Path, progress: Progress | None = None) -> Path:
    """The golden rootfs extracted next to its tarball: the shared, read-only overlay lowerdir.

    Extracted once (about a second) and kept, so later labs neither extract nor delete it.
    """
    target = tarball.with_name(tarball.name.removesuffix(".tar.zst"))
    if (target / "etc/os-release").exists():
        return target
    if progress:
        progress("extracting the golden rootfs (once)")
    partial = Path(tempfile.mkdtemp(prefix=".extract-", dir=tarball.parent))
    try:
        extract(tarball, partial / "rootfs")
        try:
            os.rename(partial / "rootfs", target)
        except OSError:
            if not (target / "etc/os-release").exists():  # not merely another process winning
                raise
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    return target


def extract(tarball: Path, dest: Path) -> Path:
    """Extract the golden tarball into ``dest`` (which must not exist yet); returns ``dest``."""
    partial = dest.with_name(dest.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    run([*TAR, "-I", "zstd -T0", "-C", str(partial), "-xpf", str(tarball)], f"extracting {tarball}")
    os.replace(partial, dest)
    return dest
