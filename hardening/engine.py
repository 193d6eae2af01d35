"""Run the audit over SSH: every control's check on every selected host, read-only.

The script each host runs, and how its output is judged, are ``hardening.audit_script``'s
(pure, no pyinfra); this module connects (``deploy.connection``), runs that script on every
reachable host in parallel, and turns each verdict into a redacted result. An unreachable
host gets an ``error`` result for every control, saying why.

Example::

    from hardening.catalog import load_catalog
    from hardening.engine import run_audit
    results = run_audit(site, load_catalog())
"""

from __future__ import annotations

import secrets as pysecrets
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gevent
from pyinfra.api import BaseStateCallback, Config, State, StringCommand
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError

from deploy.connection import MAX_PARALLEL, build_pyinfra_inventory, select_hosts
from deploy.redaction import redact
from hardening.audit_script import build_script, host_facts, judge, parse_output
from hardening.model import Control
from inventory.known_hosts import write_known_hosts


@dataclass
class Result:
    host: str
    control: str
    status: str  # pass, fail, notapplicable, error
    evidence: str
    waiver: dict | None = None


def audit_host(pyinfra_host, controls: list[Control]) -> list[Result]:
    nonce = pysecrets.token_hex(8)
    script = build_script(controls, nonce)
    ok, output = pyinfra_host.run_shell_command(StringCommand(script), _sudo=True, print_output=False)
    sections = parse_output(output.stdout_lines, nonce)
    facts = host_facts(sections)
    results = []
    for control in controls:
        verdict = judge(control, facts, sections.get(control.id))
        results.append(Result(pyinfra_host.name, control.id, verdict.status, redact(verdict.message)))
    return results


class _ConnectErrors(BaseStateCallback):
    """Keeps why each host could not be reached, so its results say so."""

    def __init__(self):
        self.reasons: dict[str, str] = {}

    def host_connect_error(self, state, host, error):
        self.reasons[host.name] = redact(str(error))


def run_audit(site, controls: list[Control], *, limit: list[str] | None = None, progress=None) -> list[Result]:
    """Audit every selected host in parallel. An unreachable host gives error results."""
    names = select_hosts(site, limit)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="citadel-audit-") as scratch:
        known_hosts = write_known_hosts(site, names, Path(scratch))
        config = Config(PARALLEL=min(len(names), MAX_PARALLEL))
        state = State(build_pyinfra_inventory(site, names, known_hosts), config)
        unreachable = _ConnectErrors()
        state.add_callback_handler(unreachable)
        try:
            connect_all(state)
        except PyinfraError:
            pass
        try:
            reachable = [h for h in state.inventory if h in state.active_hosts]
            jobs = {h.name: gevent.spawn(audit_host, h, controls) for h in reachable}
            for name, job in jobs.items():
                job.join()
                if job.successful():
                    results.extend(job.value)
                else:
                    message = redact(f"audit failed on this host: {job.exception}")
                    results.extend(Result(name, c.id, "error", message) for c in controls)
                if progress:
                    progress(name)
            for h in state.inventory:
                if h not in state.active_hosts:
                    why = unreachable.reasons.get(h.name, "")
                    evidence = f"host unreachable over SSH: {why}" if why else "host unreachable over SSH"
                    results.extend(Result(h.name, c.id, "error", evidence) for c in controls)
        finally:
            if state.activated_hosts:
                disconnect_all(state)
    return results
