"""The hardening role and the audit, against real lab hosts, over the whole catalog.

Fresh hosts fail many controls; after `citadel deploy` every control that applies to a
container passes; a second deploy changes nothing; breaking any one control (each control's
own `break_with`) makes the audit fail exactly that control, and a redeploy fixes it; the
audit itself changes nothing on the host.
"""

from __future__ import annotations

import pytest

import deploy.lab
from hardening.catalog import area_of, load_catalog
from hardening.engine import run_audit
from inventory.lab import write_lab_inventory
from inventory.loader import load_inventory
from tests.conftest import require_root
from tests.lab.hardening_harness import area_role, check_areas
from tests.lab.sshutil import ssh

# The controls the base and hardening roles fix; this lab runs no Vault: the vault-agent role's controls are broken and fixed in tests/lab/test_vault_agent.py.
CATALOG = tuple(c for c in load_catalog() if c.remediation in ("base", "hardening"))
LAB_NAME = "chard"
LAB_SUBNET = "10.80.0.0/16"
# Each round breaks several controls on every host and redeploys the areas it broke.
HOSTS = 6


@pytest.fixture(scope="module")
def hardening_lab():
    require_root("the hardening tests")
    lab = deploy.lab.up(hosts=HOSTS, name=LAB_NAME, subnet=LAB_SUBNET)
    try:
        yield lab
    finally:
        deploy.lab.down(name=LAB_NAME)


@pytest.fixture(scope="module")
def site(hardening_lab, tmp_path_factory):
    return load_inventory(write_lab_inventory(hardening_lab, tmp_path_factory.mktemp("hardening") / "lab.yaml"))


def test_fresh_hosts_fail_many_controls(site):
    results = run_audit(site, list(CATALOG))
    for host in site.hosts:
        failing = [r for r in results if r.host == host and r.status == "fail"]
        assert len(failing) >= len(CATALOG) // 3, f"{host}: only {len(failing)} failures on a fresh host"
        assert not [r for r in results if r.host == host and r.status == "error"]


def tree_digest(lab, lab_host) -> str:
    """A digest of /etc's files and modes, and of the package list."""
    command = (
        "sudo sh -c \"find /etc -xdev \\( -type f -o -type l \\) -printf '%p %m %U %G\\n' | sort | sha256sum; "
        "find /etc -xdev -type f -print0 | sort -z | xargs -0 sha256sum | sha256sum; dpkg -l | sha256sum\""
    )
    return ssh(lab, lab_host, command).stdout


def test_audit_changes_nothing(site, hardening_lab):
    host = hardening_lab.hosts[0]
    before = tree_digest(hardening_lab, host)
    run_audit(site, list(CATALOG), limit=[host.name])
    assert tree_digest(hardening_lab, host) == before


@pytest.fixture(scope="module")
def findings(site, hardening_lab):
    return check_areas(
        site,
        hardening_lab,
        ["base", "hardening"],
        list(CATALOG),
        # Redeploy only the areas a round broke.
        fix_roles=lambda broken: [area_role(sorted({area_of(c.id) for c in broken}))],
        area_of=area_of,
    )


def test_deploy_passes_every_control_that_applies_to_a_container(findings):
    after = [p for p in findings.problems if p.startswith(("after deploy", "first deploy"))]
    assert not after, "\n".join(after)


def test_second_deploy_changes_nothing(findings):
    second = [p for p in findings.problems if p.startswith("second deploy")]
    assert not second, "\n".join(second)


@pytest.mark.parametrize("control_id", [c.id for c in CATALOG])
def test_breaking_a_control_fails_it_alone_and_redeploy_fixes_it(findings, control_id):
    if control_id in findings.untestable:
        pytest.skip("kernel-level control: a container shares the lab machine's kernel; tests/vm checks it on the VM host")
    assert not findings.breaks.get(control_id), "\n".join(findings.breaks[control_id])
