"""Kernel-level controls on the VM host, where a real kernel can show and change them.

After `citadel deploy` the VM passes every control, kernel-scoped ones included. Then each
kernel-scoped control is broken in turn: software emulation makes a redeploy per control too
slow, so breaks accumulate and each new break must add exactly its own control to the
failing set of kernel controls; with all of them broken no other control may fail; one
redeploy at the end must fix them all.
"""

from __future__ import annotations

import pytest

import deploy.lab
from deploy.runner import run_deploy
from hardening.catalog import load_catalog
from hardening.engine import run_audit
from inventory.lab import write_lab_inventory
from inventory.loader import load_inventory
from tests.conftest import require_root
from tests.lab.hardening_harness import run_as_root

# The controls the base and hardening roles fix; the VM reaches no Vault (qemu's restricted network): the vault-agent role's controls are tested on containers, tests/lab/test_vault_agent.py.
CATALOG = tuple(c for c in load_catalog() if c.remediation in ("base", "hardening"))
KERNEL = [c for c in CATALOG if c.scope == "kernel"]
# What the air-gapped lab cannot give the VM, so these controls cannot pass there.
LAB_CANNOT = {
    "svc-chrony-synchronised": "the air-gapped lab has no NTP server: qemu's restricted user network carries "
    "no UDP, so chrony has nothing to synchronise with (it is checked to be running)",
}
LAB_NAME = "cvm"
LAB_SUBNET = "10.89.0.0/16"


@pytest.fixture(scope="module")
def vm_lab():
    require_root("the VM tier")
    lab = deploy.lab.up(hosts=1, vm=True, name=LAB_NAME, subnet=LAB_SUBNET, progress=lambda t: print(f"[lab] {t}"))
    try:
        yield lab
    finally:
        deploy.lab.down(name=LAB_NAME)


@pytest.fixture(scope="module")
def vm_site(vm_lab, tmp_path_factory):
    return load_inventory(write_lab_inventory(vm_lab, tmp_path_factory.mktemp("vm") / "lab.yaml"))


@pytest.fixture(scope="module")
def vm_host(vm_lab):
    return next(h for h in vm_lab.hosts if h.kind == "vm")


@pytest.fixture(scope="module")
def hardened(vm_site, vm_host):
    report = run_deploy(vm_site, ["base", "hardening"], limit=[vm_host.name])
    assert report.ok, report.hosts[vm_host.name].errors
    return run_audit(vm_site, list(CATALOG), limit=[vm_host.name])


def test_vm_passes_every_control_after_deploy(hardened):
    bad = [
        f"{r.control}: {r.status}: {r.evidence}"
        for r in hardened
        if r.status not in ("pass", "notapplicable") and r.control not in LAB_CANNOT
    ]
    assert not bad, "\n".join(bad)


def test_vm_passes_kernel_level_controls(hardened):
    kernel_ids = {c.id for c in KERNEL}
    results = [r for r in hardened if r.control in kernel_ids]
    assert len(results) == len(kernel_ids)
    # On the VM nothing kernel-level is left to "a container cannot show this".
    container = [r.control for r in results if r.status == "notapplicable" and "container" in r.evidence]
    assert not container, container
    bad = [f"{r.control}: {r.evidence}" for r in results if r.status not in ("pass", "notapplicable") and r.control not in LAB_CANNOT]
    assert not bad, "\n".join(bad)


@pytest.fixture(scope="module")
def cumulative_breaks(hardened, vm_site, vm_lab, vm_host):
    outcome: dict[str, str | None] = {}
    kernel_ids = {c.id for c in KERNEL}
    # Failing already (the lab cannot pass it, or the deploy missed it: reported above).
    failing_before = {r.control for r in hardened if r.status in ("fail", "error")}
    broken = failing_before & kernel_ids
    passing_before = {r.control for r in hardened if r.status == "pass"}
    for control in KERNEL:
        if control.id not in passing_before:
            outcome[control.id] = "did not pass after deploy, so its break cannot be observed"
            continue
        done = run_as_root(vm_lab, vm_host, control.break_with)
        if done.returncode != 0:
            outcome[control.id] = f"break_with failed: {done.stderr.strip()[:300]}"
            continue
        broken.add(control.id)
        # Under emulation a whole-catalog audit per break is too slow: audit the kernel
        # controls here, and the whole catalog once below, when every break is in.
        failing = {r.control for r in run_audit(vm_site, KERNEL, limit=[vm_host.name]) if r.status in ("fail", "error")}
        outcome[control.id] = None if failing == broken else f"expected failing {sorted(broken)}, got {sorted(failing)}"
        broken = failing  # carry on from what is really broken, so one mistake does not cascade
    everything = {r.control for r in run_audit(vm_site, list(CATALOG), limit=[vm_host.name]) if r.status in ("fail", "error")}
    collateral = sorted(everything - broken - failing_before)
    fixed = run_deploy(vm_site, ["base", "hardening"], limit=[vm_host.name])
    still = [
        r for r in run_audit(vm_site, list(CATALOG), limit=[vm_host.name])
        if r.status in ("fail", "error") and r.control not in LAB_CANNOT
    ]
    return outcome, collateral, fixed, still


@pytest.mark.parametrize("control_id", [c.id for c in KERNEL])
def test_breaking_a_kernel_control_fails_it_alone(cumulative_breaks, control_id):
    if control_id in LAB_CANNOT:
        pytest.skip(f"cannot pass in the lab, so its break cannot be seen: {LAB_CANNOT[control_id]}")
    outcome, _, _, _ = cumulative_breaks
    assert outcome[control_id] is None, outcome[control_id]


def test_kernel_breaks_fail_no_other_control(cumulative_breaks):
    _, collateral, _, _ = cumulative_breaks
    assert not collateral, f"with every kernel control broken, these others failed too: {collateral}"


def test_one_redeploy_fixes_every_kernel_break(cumulative_breaks):
    _, _, fixed, still = cumulative_breaks
    assert fixed.ok
    assert not still, "\n".join(f"{r.control}: {r.evidence}" for r in still)
