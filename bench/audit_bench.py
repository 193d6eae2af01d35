"""Benchmark: the audit's wall time on 1 and on 10 lab hosts, against a baseline.

Goal (issue 3): under 10 s for one host and under 30 s for ten, on a 2-core machine.
Baseline: the same hosts each running one trivial command over SSH in parallel (`true`),
which is the least any agentless audit must pay to reach them. Both run in this one run,
on the same lab, and the ratio is printed.

Run as root:  .venv/bin/python bench/audit_bench.py [--repeat 3]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from timing import timed  # noqa: E402  (bench/timing.py: this script's own folder is on sys.path)

import deploy.lab  # noqa: E402
from deploy.lab.ssh import known_hosts_line, ssh_command  # noqa: E402
from deploy.runner import run_deploy  # noqa: E402
from hardening.catalog import load_catalog  # noqa: E402
from hardening.engine import run_audit  # noqa: E402
from inventory.lab import write_lab_inventory  # noqa: E402
from inventory.loader import load_inventory  # noqa: E402

LAB = "cbench"
SUBNET = "10.88.0.0/16"


def ssh_true(lab, hosts, known_hosts: Path) -> None:
    def one(h):
        subprocess.run(
            ssh_command(lab.ssh_user, h.address, h.port, lab.ssh_key, known_hosts, "true", connect_timeout=10),
            check=True, capture_output=True,
        )

    with ThreadPoolExecutor(len(hosts)) as pool:
        list(pool.map(one, hosts))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    catalog = list(load_catalog())
    lab = deploy.lab.up(hosts=10, name=LAB, subnet=SUBNET)
    try:
        scratch = Path(tempfile.mkdtemp())
        site = load_inventory(write_lab_inventory(lab, scratch / "lab.yaml"))
        known_hosts = scratch / "known_hosts"
        known_hosts.write_text("".join(known_hosts_line(h.address, h.port, h.host_key) for h in lab.hosts))
        print("hardening the 10 bench hosts first (the audit of a hardened host is the usual case)...", flush=True)
        run_deploy(site, ["base", "hardening"])
        print(f"{len(catalog)} controls; median of {args.repeat} runs each")
        print(f"{'hosts':>5}  {'audit s':>8}  {'ssh true s':>10}  {'ratio':>6}  goal")
        for count, goal in ((1, 10.0), (10, 30.0)):
            names = [h.name for h in lab.hosts[:count]]
            audit = timed(lambda names=names: run_audit(site, catalog, limit=names), args.repeat)
            base = timed(lambda count=count: ssh_true(lab, lab.hosts[:count], known_hosts), args.repeat)
            verdict = "met" if audit < goal else "MISSED"
            print(f"{count:>5}  {audit:>8.2f}  {base:>10.2f}  {audit / base:>6.1f}  < {goal:.0f} s: {verdict}")
    finally:
        deploy.lab.down(name=LAB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
