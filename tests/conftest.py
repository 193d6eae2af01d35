"""Shared test set-up: tiers by folder, and one lab of real hosts for the whole session."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

TESTS = Path(__file__).parent
TIERS = ("unit", "lab", "vm", "vllm", "adversarial")

# The session's lab has its own name and subnet, so it never touches a lab a person has up.
TEST_LAB_NAME = "ctest"
TEST_LAB_SUBNET = "10.79.0.0/16"


# The long parts run beside everything else when the suite runs on two workers
# (./test.sh: pytest-xdist, --dist loadgroup): the VM is one emulated CPU, busy for most
# of the run; the hardening lab breaks and redeploys every control; the quick start runs the
# whole demo in a fresh clone, with its own lab and Vault. Everything else shares
# one worker, so the session's lab below is made once.
LONG_GROUPS = {"vm": "vm", "lab/test_hardening.py": "hardening", "vllm/test_quick_start.py": "demo"}


def xdist_group(path: Path) -> str:
    relative = path.relative_to(TESTS).as_posix()
    return next((group for prefix, group in LONG_GROUPS.items() if relative.startswith(prefix)), "main")


# First, so xdist's own hook (which turns the group into the test's scope) sees the marker.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items):
    for item in items:
        path = Path(item.fspath)
        tier = path.relative_to(TESTS).parts[0]
        if tier in TIERS:
            item.add_marker(getattr(pytest.mark, tier))
        item.add_marker(pytest.mark.xdist_group(xdist_group(path)))


def require_root(what: str) -> None:
    if os.geteuid() != 0:
        pytest.skip(f"{what} needs root (network namespaces, mounts, containers); run the suite as root")
    for tool in ("systemd-nspawn", "debootstrap"):
        if shutil.which(tool) is None:
            pytest.fail(f"{what} needs {tool}: the README's set-up command installs it", pytrace=False)


@pytest.fixture(scope="session")
def lab():
    """Two real lab hosts (nspawn containers over SSH), torn down at the end of the session."""
    require_root("the lab tier")
    import deploy.lab

    result = deploy.lab.up(hosts=2, name=TEST_LAB_NAME, subnet=TEST_LAB_SUBNET)
    try:
        yield result
    finally:
        deploy.lab.down(name=TEST_LAB_NAME)


@pytest.fixture(scope="session")
def lab_inventory_file(lab, tmp_path_factory) -> Path:
    from inventory.lab import write_lab_inventory

    return write_lab_inventory(lab, tmp_path_factory.mktemp("lab") / "lab.yaml")


def pytest_collection_finish(session):
    # Without the group in the node id, xdist would spread a group's tests over both workers
    # and each would build the same lab: fail at once instead.
    if getattr(session.config.option, "loadgroup", False) and any("@" not in item.nodeid for item in session.items):
        raise pytest.UsageError(
            "pytest-xdist did not add the test groups to the node ids (--dist loadgroup): "
            "this pytest and pytest-xdist do not work together; see the pin in pyproject.toml"
        )
