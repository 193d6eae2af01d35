"""Break-and-audit harness for hardening controls, on real lab hosts.

For a set of controls: deploy the hardening areas that fix them, expect every applicable
control to pass, expect a second deploy to change nothing, then, for each control, run its
``break_with`` on one host, expect the audit to fail exactly that control on that host and
nothing else, redeploy, and expect it fixed. Hosts are used in parallel: each round breaks
several controls of one area per host.

Used by tests/lab/test_hardening.py, and by hand while writing an area::

    python -m tests.lab.hardening_harness --area kernel --lab hwk --subnet 10.81.0.0/16 --hosts 3
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from pyinfra import host
from pyinfra.api import deploy

from deploy.runner import run_deploy
from hardening.engine import run_audit
from hardening.model import Control
from roles import Role


def area_role(area_names: list[str]) -> Role:
    """A role applying only some areas of the hardening role (all of them: use 'hardening')."""
    modules = [importlib.import_module(f"roles.hardening.{name}") for name in area_names]

    @deploy(f"Hardening areas {', '.join(area_names)}")
    def apply() -> None:
        site = host.data.citadel_site
        for module in modules:
            module.apply(site, site.hosts[host.name])

    return Role(name=f"hardening[{','.join(area_names)}]", summary="test", groups=(), apply=apply)


def area_controls(area_names: list[str]) -> list[Control]:
    return [c for name in area_names for c in importlib.import_module(f"hardening.controls.{name}").CONTROLS]


def run_as_root(lab, lab_host, command: str) -> subprocess.CompletedProcess:
    from tests.lab.sshutil import ssh

    quoted = command.replace("'", "'\"'\"'")
    return ssh(lab, lab_host, f"sudo sh -c '{quoted}'", check=False)


@dataclass
class Findings:
    problems: list[str] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    # Per control: None when its break was caught alone and fixed; else what went wrong.
    breaks: dict[str, list[str]] = field(default_factory=dict)
    untestable: list[str] = field(default_factory=list)
    retested_alone: list[str] = field(default_factory=list)  # surprised in a round of several breaks

    def add(self, message: str) -> None:
        self.problems.append(message)

    def add_break(self, control_id: str, message: str) -> None:
        self.breaks.setdefault(control_id, []).append(message)
        self.add(f"{control_id}: {message}")


def plan_rounds(controls: list[Control], hosts: list, per_host: int, area_of: Callable[[str], str]) -> list[dict]:
    """Rounds of breaks, each within one area (so one area's part of the role is redeployed,
    a fraction of the whole): up to `per_host` of that area's controls on each host.

    Breaking several controls on one host at once, and expecting exactly those to fail, shows
    each fails alone unless two breaks mask or trip each other; a host where the failing set
    is not exactly the broken set has its controls re-tested one at a time.
    """
    by_area: dict[str, list[Control]] = {}
    for control in controls:
        by_area.setdefault(area_of(control.id), []).append(control)
    size = len(hosts) * per_host
    rounds = []
    for group in by_area.values():
        count = -(-len(group) // size)  # as few rounds as fit, evenly filled
        for chunk in (group[i::count] for i in range(count)):
            plan: dict = {}
            for index, control in enumerate(chunk):
                plan.setdefault(hosts[index % len(hosts)], []).append(control)
            rounds.append(plan)
    return rounds


def _break_round(site, lab, controls, plan: dict, fix_roles, findings: Findings, known_bad: dict, isolated: bool) -> set[str]:
    """Break each host's controls, audit, redeploy, audit again. Returns the control ids to re-test alone."""
    names = [h.name for h in plan]
    retest: set[str] = set()

    def blame(control: Control, message: str) -> None:
        # In a round of several breaks on a host a surprise may come from two breaks meeting;
        # only a control that misbehaves alone is a finding.
        if isolated:
            findings.add_break(control.id, message)
        else:
            retest.add(control.id)

    broken: dict = {}
    for lab_host, host_controls in plan.items():
        for control in host_controls:
            done = run_as_root(lab, lab_host, control.break_with)
            if done.returncode != 0:
                blame(control, f"break_with failed on {lab_host.name}: {done.stderr.strip()[:300]}")
            else:
                broken.setdefault(lab_host, []).append(control)
    seen = run_audit(site, controls, limit=names)
    for lab_host, host_controls in broken.items():
        expected = {c.id for c in host_controls}
        failing = {r.control for r in seen if r.host == lab_host.name and r.status in ("fail", "error")}
        failing -= known_bad.get(lab_host.name, set())
        if failing != expected:
            for control in host_controls:
                blame(control, f"after breaking {sorted(expected)} on {lab_host.name}, failing controls are {sorted(failing)}")
    all_broken = [c for host_controls in broken.values() for c in host_controls]
    if not all_broken:
        return retest
    fixed = run_deploy(site, fix_roles(all_broken), limit=names)
    for lab_host, host_controls in broken.items():
        outcome = fixed.hosts[lab_host.name]
        if outcome.errors or outcome.failed:
            for control in host_controls:
                findings.add_break(control.id, f"redeploy after breaking {[c.id for c in host_controls]} failed on {lab_host.name}: {outcome.errors}")
    # Whatever was broken, together or alone, one redeploy must repair all of it: failures
    # from here on are findings in any round. The whole catalog again: a redeploy that leaves
    # something else failing is a finding too, and must not be blamed on a later round.
    still = run_audit(site, controls, limit=names)
    for lab_host, host_controls in broken.items():
        failing = {r.control: r.evidence for r in still if r.host == lab_host.name and r.status in ("fail", "error")}
        ids = [c.id for c in host_controls]
        others = sorted(failing.keys() - set(ids) - known_bad.get(lab_host.name, set()))
        for control in host_controls:
            if control.id in failing:
                findings.add_break(control.id, f"not fixed by redeploy on {lab_host.name}: {failing[control.id]}")
            if others:
                findings.add_break(control.id, f"after breaking {ids} and redeploying on {lab_host.name}, {others} fail")
        known_bad[lab_host.name] = set(failing)  # what the next round on this host starts from
    return retest


def check_areas(
    site,
    lab,
    roles: list,
    controls: list[Control],
    say: Callable[[str], None] = print,
    fix_roles: Callable[[list[Control]], list] | None = None,
    area_of: Callable[[str], str] | None = None,
    per_host: int = 8,
) -> Findings:
    """Deploy, audit, redeploy, then break every testable control once; see the module doc.

    `fix_roles(broken)` gives the roles to redeploy after breaking `broken` (default: `roles`);
    `area_of(control_id)` keeps each round within one area; `per_host` is how many controls
    one host breaks per round.
    """
    findings = Findings()
    fix_roles = fix_roles or (lambda broken: roles)
    area_of = area_of or (lambda control_id: "all")
    start = time.monotonic()
    first = run_deploy(site, roles)
    findings.timings["first deploy"] = time.monotonic() - start
    if not first.ok:
        for o in first.hosts.values():
            findings.add(f"first deploy failed on {o.host}: {o.errors}")
        return findings

    start = time.monotonic()
    results = run_audit(site, controls)
    findings.timings["audit"] = time.monotonic() - start
    for r in results:
        if r.status not in ("pass", "notapplicable"):
            findings.add(f"after deploy, {r.host} {r.control}: {r.status}: {r.evidence}")

    start = time.monotonic()
    second = run_deploy(site, roles)
    findings.timings["second deploy"] = time.monotonic() - start
    for o in second.hosts.values():
        if o.changed or not second.ok:
            findings.add(f"second deploy on {o.host}: changed={o.changed} errors={o.errors}")

    # Only controls that can be seen failing here: kernel-level ones are N/A in containers.
    applicable = {(r.host, r.control) for r in results if r.status != "notapplicable"}
    testable = [c for c in controls if all((h.name, c.id) in applicable for h in lab.hosts)]
    findings.untestable = [c.id for c in controls if c not in testable]
    # Controls still failing after the deploy are reported above; breaking them shows nothing.
    known_bad = {h.name: {r.control for r in results if r.host == h.name and r.status in ("fail", "error")} for h in lab.hosts}
    hosts = list(lab.hosts)
    rounds = plan_rounds(testable, hosts, per_host, area_of)
    say(f"{len(testable)} of {len(controls)} controls testable on these hosts; breaking them in {len(rounds)} round(s)")
    start = time.monotonic()
    retest: set[str] = set()
    for number, plan in enumerate(rounds, 1):
        retest |= _break_round(site, lab, controls, plan, fix_roles, findings, known_bad, isolated=False)
        say(f"  round {number}: {sum(len(v) for v in plan.values())} breaks; {len(retest)} to re-test alone")
    alone = [c for c in testable if c.id in retest]
    for number, plan in enumerate(plan_rounds(alone, hosts, 1, area_of), 1):
        _break_round(site, lab, controls, plan, fix_roles, findings, known_bad, isolated=True)
        say(f"  alone {number}: {', '.join(c.id for v in plan.values() for c in v)}")
    findings.timings["break rounds"] = time.monotonic() - start
    findings.retested_alone = [c.id for c in alone]
    return findings


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--area", action="append", required=True, help="hardening area (repeatable)")
    parser.add_argument("--lab", default="hwx", help="lab name (keep it apart from others' labs)")
    parser.add_argument("--subnet", default="10.90.0.0/16")
    parser.add_argument("--hosts", type=int, default=2)
    parser.add_argument("--down", action="store_true", help="take the lab down afterwards")
    args = parser.parse_args()

    import tempfile
    from pathlib import Path

    import deploy.lab
    from inventory.lab import write_lab_inventory
    from inventory.loader import load_inventory

    lab = deploy.lab.up(hosts=args.hosts, name=args.lab, subnet=args.subnet)
    try:
        path = write_lab_inventory(lab, Path(tempfile.mkdtemp()) / "lab.yaml")
        site = load_inventory(path)
        findings = check_areas(site, lab, ["base", area_role(args.area)], area_controls(args.area))
        print(f"timings: {findings.timings}; re-tested alone: {findings.retested_alone}")
        for problem in findings.problems:
            print(f"PROBLEM: {problem}")
        print(f"{len(findings.problems)} problem(s)")
        return 1 if findings.problems else 0
    finally:
        if args.down:
            deploy.lab.down(name=args.lab)


if __name__ == "__main__":
    sys.exit(main())
