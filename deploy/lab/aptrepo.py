"""The lab's local apt repository: what an air-gapped hospital host can install.

The packages in ``packages.txt`` are downloaded once from deb.debian.org with their
dependency closure relative to the golden rootfs (apt runs in a chroot of a scratch copy
of it), indexed with ``dpkg-scanpackages``, and cached under
``~/.cache/citadel/apt-repo/<key>/``. Containers get it bind-mounted read-only at
/srv/citadel-repo with the source line ``deb [trusted=yes] file:/srv/citadel-repo ./``.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable
from email.utils import formatdate
from pathlib import Path

from deploy.lab import rootfs
from deploy.lab.errors import LabError
from deploy.lab.packages import repo_packages

MOUNT_POINT = "/srv/citadel-repo"
SOURCE_LINE = f"deb [trusted=yes] file:{MOUNT_POINT} ./"
FORMAT_VERSION = 1

Progress = Callable[[str], None]


def cache_key(packages: list[str]) -> str:
    text = f"v{FORMAT_VERSION}|{rootfs.RELEASE}|{rootfs.cache_key()}|{' '.join(sorted(packages))}"
    return f"{rootfs.RELEASE}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"


def repo_path(packages: list[str] | None = None) -> Path:
    packages = repo_packages() if packages is None else packages
    return rootfs.cache_root() / "apt-repo" / cache_key(packages)


def ensure_repo(golden_tarball: Path, progress: Progress | None = None, packages: list[str] | None = None) -> Path:
    """Return the cached local apt repository directory, building it if it is missing."""
    packages = repo_packages() if packages is None else packages
    target = repo_path(packages)
    if _complete(target):
        return target
    with rootfs.build_lock(target.parent, "apt-repo-build"):
        if _complete(target):  # built by another process while this one waited
            return target
        return _build_repo(target, golden_tarball, packages, progress)


def _complete(target: Path) -> bool:
    return (target / "Packages.gz").is_file() and (target / "Release").is_file()


def _build_repo(target: Path, golden_tarball: Path, packages: list[str], progress: Progress | None) -> Path:
    if shutil.which("dpkg-scanpackages") is None:
        raise LabError("dpkg-scanpackages was not found: install it with `apt-get install -y dpkg-dev`.")
    say = progress or (lambda _text: None)
    say(f"building the local apt repository ({len(packages)} packages and their dependencies, once)")
    target.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=".build-", dir=target.parent))
    try:
        root = rootfs.extract(golden_tarball, work / "root")
        resolv = root / "etc/resolv.conf"
        if resolv.is_symlink() or resolv.exists():
            resolv.unlink()
        shutil.copyfile("/etc/resolv.conf", resolv)
        log = work / "apt.log"
        _chroot(root, ["apt-get", "-q", "update"], "apt-get update against deb.debian.org", log)
        _chroot(
            root,
            [
                "apt-get", "-q", "-y", "--no-install-recommends", "--download-only", "--reinstall",
                "install", *packages,
            ],
            "downloading the lab packages (is every name in deploy/lab/packages.txt a bookworm package?)",
            log,
        )
        repo = work / "repo"
        repo.mkdir()
        debs = sorted((root / "var/cache/apt/archives").glob("*.deb"))
        if not debs:
            raise LabError("apt downloaded no packages for the lab repository; see deploy/lab/packages.txt.")
        for deb in debs:
            shutil.move(str(deb), repo / deb.name)
        _index(repo)
        os.chmod(repo, 0o755)
        for path in repo.iterdir():
            os.chmod(path, 0o644)
        if target.exists():
            shutil.rmtree(target)
        os.replace(repo, target)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return target


def _chroot(root: Path, args: list[str], what: str, log: Path) -> None:
    env = {
        "PATH": "/usr/sbin:/usr/bin:/sbin:/bin",
        "DEBIAN_FRONTEND": "noninteractive",
        "LANG": "C.UTF-8",
    }
    with open(log, "ab") as out:
        result = subprocess.run(
            ["chroot", str(root), *args], stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=env
        )
    if result.returncode != 0:
        tail = log.read_text(errors="replace").strip().splitlines()[-15:]
        raise LabError(f"{what} failed (exit {result.returncode}):\n" + "\n".join(tail))


def _index(repo: Path) -> None:
    """Write Packages, Packages.gz and a Release file for a flat repository."""
    result = subprocess.run(
        ["dpkg-scanpackages", "--multiversion", ".", "/dev/null"],
        cwd=repo,
        stdin=subprocess.DEVNULL,
        capture_output=True,
    )
    if result.returncode != 0:
        raise LabError(f"dpkg-scanpackages failed: {result.stderr.decode(errors='replace').strip()}")
    packages = result.stdout
    (repo / "Packages").write_bytes(packages)
    with open(repo / "Packages.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(packages)
    lines = [
        "Origin: citadel-lab",
        "Label: citadel-lab",
        f"Suite: {rootfs.RELEASE}",
        f"Codename: {rootfs.RELEASE}",
        f"Date: {formatdate(time.time(), usegmt=True)}",
        "Description: Citadel lab local repository (air-gapped packages)",
    ]
    for field, algo in (("MD5Sum", hashlib.md5), ("SHA256", hashlib.sha256)):
        lines.append(f"{field}:")
        for name in ("Packages", "Packages.gz"):
            data = (repo / name).read_bytes()
            lines.append(f" {algo(data).hexdigest()} {len(data)} {name}")
    (repo / "Release").write_text("\n".join(lines) + "\n")
