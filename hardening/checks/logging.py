"""Check kinds of the logging controls (``hardening/controls/logging.py``), and the pure
helpers they share with the tests: what augenrules makes of rules.d (``compile_rules``).

- ``AuditRules``: the audit rules of rules.d (present, locked with ``-e 2``, or compiled);
- ``AuditRulesLoaded``: the kernel runs the compiled rules, locked;
- ``JournaldOption``: journald's effective setting, after every drop-in;
- ``RsyslogConfig``: rsyslog's configuration in the order rsyslogd reads it;
- ``ServiceIfInstalled``: a unit's state, judged only while its package is installed.

Example::

    >>> check = JournaldOption(key="Storage", expected=["persistent"])
    >>> check.evaluate("[Journal]\\nStorage=volatile\\n[Journal]\\nStorage=persistent\\n", 0).status
    'pass'
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from typing import Literal

from pydantic import Field

from hardening.checks.base import CheckKind, Verdict
from hardening.checks.core import ServiceState

AUDIT_RULES_DIR = "/etc/audit/rules.d"
AUDIT_COMPILED = "/etc/audit/audit.rules"
RSYSLOG_CONF = "/etc/rsyslog.conf"

# Separates the parts of a snippet's output (rules.d, then the compiled file).
SPLIT = "@@citadel-compiled@@"


def _normalize(line: str) -> str:
    return " ".join(line.split())


def _rule_lines(text: str) -> list[str]:
    return [_normalize(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def compile_rules(rules_d_text: str) -> list[str]:
    """What augenrules makes of rules.d (concatenated in `ls -1v` order), as normalised lines.

    The last bare -D first, then the last -b, the last -f, the other lines in order, the last -e
    at the end (augenrules' own awk program).
    """
    minus = {"D": "", "b": "", "f": "", "e": ""}
    rest: list[str] = []
    for raw in rules_d_text.splitlines():
        if not raw or re.match(r"^\s*#", raw):
            continue
        if re.match(r"^\s*-e", raw):
            minus["e"] = raw
        elif re.match(r"^\s*-D\s*$", raw):
            minus["D"] = raw
        elif re.match(r"^\s*-f", raw):
            minus["f"] = raw
        elif re.match(r"^\s*-b", raw):
            minus["b"] = raw
        else:
            rest.append(raw)
    return [minus["D"], minus["b"], minus["f"], *rest, minus["e"]]


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines = lines[:-1]
    return lines


def _rule_keys(text: str) -> Counter:
    """How many watch and syscall rules each key (``-k`` or ``-F key=``) has."""
    keys: Counter = Counter()
    for line in text.splitlines():
        if not re.match(r"^\s*-[aw]\s", line):
            continue
        match = re.search(r"(?:-k\s+|-F\s+key=)(\S+)", line)
        keys[match.group(1) if match else "(no key)"] += 1
    return keys


class AuditRules(CheckKind):
    """The audit rules in rules.d: `rules` all present, or the last -e is `-e 2`, or compiled.

    - mode "present": every line of `rules` is in some /etc/audit/rules.d/*.rules (whitespace
      normalised), which is what augenrules compiles and auditd loads at boot.
    - mode "immutable": the last -e directive of rules.d is "-e 2".
    - mode "compiled": /etc/audit/audit.rules is what augenrules would make of rules.d now.
    """

    kind: Literal["audit_rules"] = "audit_rules"
    describe: str = "audit rules"
    mode: Literal["present", "immutable", "compiled"] = "present"
    rules: list[str] = Field(default_factory=list)

    def script(self) -> str:
        d = shlex.quote(AUDIT_RULES_DIR)
        return (
            f"[ -d {d} ] || {{ echo MISSING; exit 0; }}; "
            f"for f in $(ls -1v {d} | grep '\\.rules$'); do cat {d}/\"$f\"; done; "
            f"echo '{SPLIT}'; cat {shlex.quote(AUDIT_COMPILED)} 2>/dev/null; true"
        )

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if evidence.strip() == "MISSING":
            return Verdict("fail", f"{AUDIT_RULES_DIR} does not exist")
        source, _, compiled = evidence.partition(SPLIT)
        compiled = compiled[1:] if compiled.startswith("\n") else compiled
        lines = _rule_lines(source)
        if self.mode == "present":
            have = set(lines)
            missing = [rule for rule in self.rules if _normalize(rule) not in have]
            if missing:
                return Verdict(
                    "fail", f"{len(missing)} of {len(self.rules)} rules missing from {AUDIT_RULES_DIR}, e.g. {missing[0]!r}"
                )
            return Verdict("pass", f"{len(self.rules)} rules present in {AUDIT_RULES_DIR}")
        if self.mode == "immutable":
            last = [line for line in lines if line.startswith("-e")]
            if last and last[-1] == "-e 2":
                return Verdict("pass", "rules.d ends in -e 2: loaded rules cannot be changed until reboot")
            found = last[-1] if last else "absent"
            return Verdict("fail", f"last -e directive in {AUDIT_RULES_DIR} is {found!r}, expected '-e 2'")
        wanted = _trim([_normalize(x) for x in compile_rules(source)])
        generated = "## This file is automatically generated"
        actual = _trim([_normalize(x) for x in compiled.splitlines() if not x.startswith(generated)])
        if wanted == actual:
            return Verdict("pass", f"{AUDIT_COMPILED} matches {AUDIT_RULES_DIR} ({len(actual)} lines)")
        return Verdict("fail", f"{AUDIT_COMPILED} is out of date with {AUDIT_RULES_DIR}: run augenrules")


class AuditRulesLoaded(CheckKind):
    """The kernel runs the compiled rules, locked (`auditctl -s`: enabled 2), rule for rule by key."""

    kind: Literal["audit_rules_loaded"] = "audit_rules_loaded"
    describe: str = "loaded audit rules"

    def script(self) -> str:
        return f"auditctl -s; echo '{SPLIT}'; auditctl -l; echo '{SPLIT}'; cat {shlex.quote(AUDIT_COMPILED)}"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        parts = evidence.split(SPLIT)
        if len(parts) != 3:
            return Verdict("fail", f"could not read the audit status: {evidence[:200]!r}")
        status, loaded, compiled = parts
        enabled = re.search(r"^enabled (\d)", status, re.MULTILINE)
        problems = []
        if not enabled or enabled.group(1) != "2":
            problems.append(f"audit is not locked (enabled {enabled.group(1) if enabled else '?'}, expected 2)")
        want, have = _rule_keys(compiled), _rule_keys(loaded)
        if want != have:
            diff = sorted(set(want) ^ set(have) | {k for k in want if want[k] != have.get(k)})
            problems.append(f"loaded rules differ from {AUDIT_COMPILED} for keys {', '.join(diff[:6])}")
        if problems:
            return Verdict("fail", "; ".join(problems))
        return Verdict("pass", f"{sum(have.values())} rules loaded and locked (enabled 2)")


class JournaldOption(CheckKind):
    """journald's effective setting (systemd-analyze cat-config: last assignment in [Journal] wins)."""

    kind: Literal["journald_option"] = "journald_option"
    describe: str = "journald option"
    key: str = Field(pattern=r"^[A-Za-z]+$")
    expected: list[str] = Field(min_length=1)

    def script(self) -> str:
        return "systemd-analyze cat-config systemd/journald.conf 2>/dev/null"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        section, value = None, None
        for raw in evidence.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Journal]" and "=" in line:
                key, _, val = line.partition("=")
                if key.strip() == self.key:
                    value = val.strip()
        if value is None:
            return Verdict(
                "fail", f"journald {self.key} is not set (compiled-in default applies), expected {self.expected[0]}"
            )
        if value.lower() in [e.lower() for e in self.expected]:
            return Verdict("pass", f"journald {self.key}={value}")
        return Verdict("fail", f"journald {self.key}={value}, expected {' or '.join(self.expected)}")


# rsyslog.conf with its $IncludeConfig lines replaced by the files they include, in order.
_RSYSLOG_EXPANDED = (
    f"[ -f {RSYSLOG_CONF} ] || {{ echo MISSING; exit 0; }}; "
    "while IFS= read -r l; do case \"$l\" in "
    "'$IncludeConfig '*) for i in ${l#\\$IncludeConfig }; do [ -f \"$i\" ] && cat \"$i\"; done;; "
    "*) printf '%s\\n' \"$l\";; esac; "
    f"done < {RSYSLOG_CONF}"
)


class RsyslogConfig(CheckKind):
    """rsyslog's configuration in the order rsyslogd reads it: a legacy directive's last value,
    or (with `absent`) no line matching a pattern."""

    kind: Literal["rsyslog_config"] = "rsyslog_config"
    describe: str = "rsyslog configuration"
    directive: str | None = Field(None, pattern=r"^\$[A-Za-z]+$")
    expected: list[str] = Field(default_factory=list)
    absent: str | None = None

    def script(self) -> str:
        return _RSYSLOG_EXPANDED

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if evidence.strip() == "MISSING":
            return Verdict("fail", f"{RSYSLOG_CONF} does not exist")
        lines = [line.strip() for line in evidence.splitlines() if line.strip() and not line.strip().startswith("#")]
        if self.absent is not None:
            found = [line for line in lines if re.search(self.absent, line)]
            if found:
                return Verdict("fail", f"rsyslog configuration has {found[0][:200]!r}")
            return Verdict("pass", "rsyslog configuration loads no network input module")
        value = None
        for line in lines:
            parts = line.split()
            if parts[0].lower() == (self.directive or "").lower() and len(parts) > 1:
                value = parts[1]
        if value in self.expected:
            return Verdict("pass", f"rsyslog {self.directive} {value}")
        return Verdict("fail", f"rsyslog {self.directive} is {value or 'unset'}, expected {' or '.join(self.expected)}")


class ServiceIfInstalled(ServiceState):
    """A unit's state, judged only while its package is installed (else not applicable: the
    package's own control fails instead, so one removal fails one control)."""

    kind: Literal["service_if_installed"] = "service_if_installed"  # type: ignore[assignment]
    package: str = Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")

    def script(self) -> str:
        p = shlex.quote(self.package)
        return (
            f"dpkg-query -W -f='${{Status}}' {p} 2>/dev/null | grep -q ' ok installed$' || echo NOTINSTALLED; "
            + super().script()
        )

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "NOTINSTALLED" in evidence.splitlines():
            return Verdict("notapplicable", f"{self.package} is not installed (its package control fails instead)")
        return super().evaluate(evidence, exit_code)


KINDS = [AuditRules, AuditRulesLoaded, JournaldOption, RsyslogConfig, ServiceIfInstalled]
