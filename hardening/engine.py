"""Run controls' checks on hosts, read-only, and turn what was seen into results.

Every control's snippet runs in one shell per host (one SSH round trip), each in a
subshell with no input, between markers that carry its id and exit status. Judging the
evidence happens here, in Python, never on the host.

Example::

    from hardening.catalog import load_catalog
    from hardening.engine import run_audit
    results = run_audit(site, load_catalog())
"""

from __future__ import annotations

import re
import secrets as pysecrets
from dataclasses import dataclass

import gevent
from pyinfra.api import BaseStateCallback, Config, State, StringCommand
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError

from deploy.redaction import redact
from hardening.checks import Verdict
from hardening.model import Control

# Facts about the host itself, gathered in the same round trip: they decide applicability.
_ENV_SNIPPET = "systemd-detect-virt --container 2>/dev/null || echo none; . /etc/os-release 2>/dev/null; echo \"$ID $VERSION_ID\""


@dataclass
class Result:
    host: str
    control: str
    status: str  # pass, fail, notapplicable, error
    evidence: str
    waiver: dict | None = None


@dataclass
class HostFacts:
    container: str  # "none" on a VM or bare metal
    os: str


def build_script(controls: list[Control], nonce: str) -> str:
    """One POSIX shell script that runs each check in a subshell between markers."""
    parts = []
    for section, snippet in [("__env", _ENV_SNIPPET), *((c.id, c.check.script()) for c in controls)]:
        parts.append(f"echo '@@{nonce} begin {section}'")
        # The newline before the end marker keeps it on its own line even when the
        # snippet's output has no trailing newline; the parser drops that empty line.
        parts.append(f"( {snippet} ) </dev/null 2>&1; rc=$?; echo; echo \"@@{nonce} end {section} $rc\"")
    return "\n".join(parts)


def parse_output(lines: list[str], nonce: str) -> dict[str, tuple[str, int]]:
    """Each section's (evidence, exit status) by control id."""
    sections: dict[str, tuple[str, int]] = {}
    current: str | None = None
    buffer: list[str] = []
    begin = re.compile(rf"^@@{nonce} begin (\S+)$")
    end = re.compile(rf"^@@{nonce} end (\S+) (\d+)$")
    for line in lines:
        if (m := begin.match(line)) is not None:
            current, buffer = m.group(1), []
        elif (m := end.match(line)) is not None and m.group(1) == current:
            if buffer and buffer[-1] == "":
                buffer.pop()
            sections[current] = ("\n".join(buffer), int(m.group(2)))
            current = None
        elif current is not None:
            buffer.append(line)
    return sections


def judge(control: Control, facts: HostFacts, section: tuple[str, int] | None) -> Verdict:
    if control.scope == "kernel" and facts.container != "none":
        return Verdict(
            "notapplicable",
            f"kernel-level control: this host is a {facts.container} container sharing its parent's kernel "
            "(the setting is still written for boot; verify on a VM or bare-metal host)",
        )
    if section is None:
        return Verdict("error", "the check produced no result (the audit script was cut short)")
    evidence, status = section
    try:
        return control.check.evaluate(evidence, status)
    except Exception as exc:  # a check that cannot read its evidence is an error, not a pass
        return Verdict("error", f"could not interpret the evidence ({exc}): {evidence[:200]!r}")


def audit_host(pyinfra_host, controls: list[Control]) -> list[Result]:
    nonce = pysecrets.token_hex(8)
    script = build_script(controls, nonce)
    ok, output = pyinfra_host.run_shell_command(StringCommand(script), _sudo=True, print_output=False)
    sections = parse_output(output.stdout_lines, nonce)
    env_lines = sections.get("__env", ("none\nunknown", 0))[0].splitlines() + ["", ""]
    facts = HostFacts(container=env_lines[0].strip() or "none", os=env_lines[1].strip())
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
    from deploy.runner import _known_hosts_file, build_pyinfra_inventory, select_hosts
    import tempfile
    from pathlib import Path

    names = select_hosts(site, limit)
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="citadel-audit-") as scratch:
        known_hosts = _known_hosts_file(site, names, Path(scratch))
        state = State(build_pyinfra_inventory(site, names, known_hosts), Config(PARALLEL=min(len(names), 50)))
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
