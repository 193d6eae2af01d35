"""The lab's package lists: one file each, read the same way.

* ``rootfs_packages.txt``: what debootstrap puts into the golden rootfs every container boots from.
* ``vm_packages.txt``: what the VM image has besides those: a kernel, an initrd, and what only a
  kernel of its own can use (dm-crypt, AppArmor).
* ``packages.txt``: what the local apt repository serves the hosts (what the roles install).

One name a line; ``#`` starts a comment. A list feeds the cache key of what it builds, so
changing it rebuilds that cache once.
"""

from __future__ import annotations

from pathlib import Path

HERE = Path(__file__).parent
ROOTFS_FILE = HERE / "rootfs_packages.txt"
VM_FILE = HERE / "vm_packages.txt"
REPO_FILE = HERE / "packages.txt"


def read_list(path: Path) -> list[str]:
    """The package names in `path`, in order, each once."""
    names: list[str] = []
    for line in path.read_text().splitlines():
        name = line.split("#", 1)[0].strip()
        if name and name not in names:
            names.append(name)
    return names


def rootfs_packages() -> list[str]:
    """The golden rootfs's packages (debootstrap --include)."""
    return read_list(ROOTFS_FILE)


def vm_packages() -> list[str]:
    """The VM image's packages: the golden rootfs's, then the VM's own."""
    base = rootfs_packages()
    return base + [name for name in read_list(VM_FILE) if name not in base]


def repo_packages() -> list[str]:
    """What the local apt repository serves (each with its dependencies)."""
    return read_list(REPO_FILE)
