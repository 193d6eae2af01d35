"""The audit's one shell script per host, and how its output is read and judged.

Every control's snippet runs in one shell per host (one SSH round trip), each in a subshell
with no input, between markers that carry its id and exit status; a first section, ``__env``,
says whether the host is a container and which OS it runs. Judging the evidence happens here,
in Python, never on the host.

Pure functions, no pyinfra: ``hardening.engine`` runs the script over SSH for ``citadel
audit``, and ``roles.facts`` runs it as a pyinfra fact so that a role fixes exactly what the
audit would report.

Example::

    >>> from hardening.catalog import by_id, load_catalog
    >>> swap = by_id(load_catalog())["fs-swap-inactive"]
    >>> script = build_script([swap], "n0nce")  # run it on the host, then:
    >>> lines = ["@@n0nce begin fs-swap-inactive", "no active swap", "", "@@n0nce end fs-swap-inactive 0"]
    >>> sections = parse_output(lines, "n0nce")
    >>> judge(swap, HostFacts(container="none", os="debian 12"), sections["fs-swap-inactive"]).status
    'pass'
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from hardening.checks import Verdict
from hardening.model import Control

# Facts about the host itself, gathered in the same round trip: they decide applicability.
ENV_SNIPPET = (
    "systemd-detect-virt --container 2>/dev/null || echo none; "
    ". /etc/os-release 2>/dev/null; echo \"$ID $VERSION_ID\""
)
ENV_SECTION = "__env"


@dataclass
class HostFacts:
    container: str  # "none" on a VM or bare metal
    os: str


def build_script(controls: list[Control], nonce: str) -> str:
    """One POSIX shell script that runs each check in a subshell between markers."""
    parts = []
    for section, snippet in [(ENV_SECTION, ENV_SNIPPET), *((c.id, c.check.script()) for c in controls)]:
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


def host_facts(sections: dict[str, tuple[str, int]]) -> HostFacts:
    """The host's facts from the ``__env`` section; a host that printed none reads as a non-container."""
    env_lines = sections.get(ENV_SECTION, ("none\nunknown", 0))[0].splitlines() + ["", ""]
    return HostFacts(container=env_lines[0].strip() or "none", os=env_lines[1].strip())


def judge(control: Control, facts: HostFacts, section: tuple[str, int] | None) -> Verdict:
    """A control's verdict from its section of the output (None: the script never reached it)."""
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
