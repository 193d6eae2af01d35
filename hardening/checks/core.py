"""The generic check kinds: sysctl values, sshd options, file modes and content, units,
packages, blocked kernel modules, and a read-only command for what nothing else expresses.

Example::

    >>> check = FileMode(path="/etc/shadow", max_mode="0640", owner="root")
    >>> "stat" in check.script()
    True
    >>> check.evaluate("0640 root shadow", 0).status
    'pass'
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import Field

from hardening.checks.base import CheckKind, Verdict
from hardening.checks.base import quote as _q


class Sysctl(CheckKind):
    """A kernel parameter's running value (from /proc/sys) is one of `expected`."""

    kind: Literal["sysctl"] = "sysctl"
    key: str = Field(pattern=r"^[a-z0-9_.-]+$")
    expected: list[str] = Field(min_length=1)

    def script(self) -> str:
        return f"cat /proc/sys/{self.key.replace('.', '/')}"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if exit_code != 0:
            return Verdict("notapplicable", f"{self.key} does not exist on this kernel")
        value = " ".join(evidence.split())
        if value in self.expected:
            return Verdict("pass", f"{self.key} = {value}")
        return Verdict("fail", f"{self.key} = {value}, expected {' or '.join(self.expected)}")


class SysctlPersisted(CheckKind):
    """The boot-time configuration (/etc/sysctl.conf, /etc/sysctl.d) sets `key` to `expected`."""

    kind: Literal["sysctl_persisted"] = "sysctl_persisted"
    key: str = Field(pattern=r"^[a-z0-9_.-]+$")
    expected: str

    def script(self) -> str:
        # Same precedence as systemd-sysctl: files sorted by name, later assignments win.
        return "for f in /usr/lib/sysctl.d/*.conf /etc/sysctl.d/*.conf /etc/sysctl.conf; do [ -f \"$f\" ] && cat \"$f\"; done; true"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        value = None
        pattern = re.compile(rf"^\s*-?\s*{re.escape(self.key)}\s*=\s*(.*?)\s*$")
        for line in evidence.splitlines():
            match = pattern.match(line)
            if match:
                value = match.group(1)
        if value is None:
            return Verdict("fail", f"{self.key} is not set in the boot-time sysctl configuration")
        if value == self.expected:
            return Verdict("pass", f"{self.key} = {value} is applied at every boot")
        return Verdict("fail", f"{self.key} = {value} at boot, expected {self.expected}")


class SshdOption(CheckKind):
    """sshd's effective configuration (`sshd -T`) has `option` set to one of `expected`."""

    kind: Literal["sshd_option"] = "sshd_option"
    option: str = Field(pattern=r"^[a-z0-9]+$")
    expected: list[str] = Field(min_length=1)
    match: Literal["exact", "subset", "max_int"] = "exact"

    def script(self) -> str:
        return f"sshd -T 2>/dev/null | grep -i '^{self.option} ' || echo '{self.option} <unset>'"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        line = evidence.strip().splitlines()[-1] if evidence.strip() else f"{self.option} <unset>"
        value = line.split(None, 1)[1].strip() if " " in line else ""
        # sshd -T prints keywords in lower case but some values in upper (VERBOSE).
        value = value.lower()
        ok = (
            value in [e.lower() for e in self.expected]
            if self.match == "exact"
            else set(value.split(",")) <= set(self.expected)
            if self.match == "subset"
            else value.isdigit() and int(value) <= int(self.expected[0])
        )
        if ok:
            return Verdict("pass", f"sshd {self.option} {value}")
        return Verdict("fail", f"sshd {self.option} is {value!r}, expected {self._want()}")

    def _want(self) -> str:
        if self.match == "subset":
            return "only " + ",".join(self.expected)
        if self.match == "max_int":
            return f"at most {self.expected[0]}"
        return " or ".join(self.expected)


class FileMode(CheckKind):
    """A path exists with no more permission than `max_mode`, owned as given."""

    kind: Literal["file_mode"] = "file_mode"
    path: str
    max_mode: str = Field(pattern=r"^0?[0-7]{3,4}$")
    owner: str | None = None
    group: list[str] | None = None
    missing_ok: bool = False

    def script(self) -> str:
        return f"stat -c '%a %U %G' {_q(self.path)} 2>/dev/null || echo MISSING"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        text = evidence.strip()
        if text == "MISSING":
            if self.missing_ok:
                return Verdict("pass", f"{self.path} does not exist")
            return Verdict("fail", f"{self.path} does not exist")
        mode_s, owner, group = text.split()
        mode = int(mode_s, 8)
        problems = []
        if mode & ~int(self.max_mode, 8) & 0o7777:
            problems.append(f"mode {mode_s} exceeds {self.max_mode}")
        if self.owner and owner != self.owner:
            problems.append(f"owner {owner}, expected {self.owner}")
        if self.group and group not in self.group:
            problems.append(f"group {group}, expected {' or '.join(self.group)}")
        evidence_line = f"{self.path}: {mode_s} {owner}:{group}"
        return Verdict("fail", f"{evidence_line}; " + "; ".join(problems)) if problems else Verdict("pass", evidence_line)


class FileContent(CheckKind):
    """A file has (or, with `present: false`, lacks) a line matching `pattern` (a regex)."""

    kind: Literal["file_content"] = "file_content"
    path: str
    pattern: str
    present: bool = True
    ignore_case: bool = False
    missing_file: Literal["fail", "pass", "notapplicable"] = "fail"

    def script(self) -> str:
        flags = "-Ei" if self.ignore_case else "-E"
        return f"if [ -f {_q(self.path)} ]; then grep {flags} -- {_q(self.pattern)} {_q(self.path)}; echo \"@rc=$?\"; else echo MISSING; fi"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        lines = evidence.strip().splitlines()
        if lines == ["MISSING"]:
            return Verdict(self.missing_file, f"{self.path} does not exist")
        found = [line for line in lines if not line.startswith("@rc=")]
        if bool(found) == self.present:
            shown = found[0][:200] if found else "no matching line"
            return Verdict("pass", f"{self.path}: {shown}")
        if self.present:
            return Verdict("fail", f"{self.path}: no line matches {self.pattern!r}")
        return Verdict("fail", f"{self.path}: unwanted line {found[0][:200]!r}")


class ServiceState(CheckKind):
    """A systemd unit is (or is not) enabled and active."""

    kind: Literal["service"] = "service"
    unit: str
    enabled: bool | None = None
    active: bool | None = None

    def script(self) -> str:
        u = _q(self.unit)
        return f"echo enabled=$(systemctl is-enabled {u} 2>/dev/null); echo active=$(systemctl is-active {u} 2>/dev/null)"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        facts = dict(line.split("=", 1) for line in evidence.strip().splitlines() if "=" in line)
        enabled = facts.get("enabled", "")
        active = facts.get("active", "")
        problems = []
        if self.enabled is not None and (enabled in ("enabled", "static", "alias")) != self.enabled:
            problems.append(f"is-enabled={enabled or 'unknown'}")
        if self.active is not None and (active == "active") != self.active:
            problems.append(f"is-active={active or 'unknown'}")
        state = f"{self.unit}: enabled={enabled or '-'} active={active or '-'}"
        return Verdict("fail", state) if problems else Verdict("pass", state)


class Package(CheckKind):
    """A Debian package is installed (or absent)."""

    kind: Literal["package"] = "package"
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")
    installed: bool = True

    def script(self) -> str:
        return f"dpkg-query -W -f='${{Status}} ${{Version}}' {_q(self.name)} 2>/dev/null || echo not-installed"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        # "deinstall ok installed" is a package marked for removal: not counted as installed.
        is_installed = re.match(r"(install|hold) ok installed", evidence.strip()) is not None
        state = f"{self.name}: {'installed ' + evidence.split()[-1] if is_installed else 'not installed'}"
        return Verdict("pass" if is_installed == self.installed else "fail", state)


class KernelModuleBlocked(CheckKind):
    """`modprobe` will refuse to load a kernel module (install /bin/false and blacklist)."""

    kind: Literal["module_blocked"] = "module_blocked"
    module: str = Field(pattern=r"^[a-z0-9_-]+$")

    def script(self) -> str:
        m = self.module
        return (
            f"cat /etc/modprobe.d/*.conf 2>/dev/null | grep -E '^\\s*(install|blacklist)\\s+{m}\\b'; "
            f"grep -qw '^{m}' /proc/modules && echo LOADED; true"
        )

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        text = evidence.splitlines()
        install = any(re.match(rf"\s*install\s+{self.module}\s+/bin/(false|true)", line) for line in text)
        blacklist = any(re.match(rf"\s*blacklist\s+{self.module}\b", line) for line in text)
        loaded = "LOADED" in text
        if install and blacklist and not loaded:
            return Verdict("pass", f"{self.module}: install /bin/false and blacklisted, not loaded")
        missing = [w for w, ok in (("install /bin/false", install), ("blacklist", blacklist)) if not ok]
        problems = ([f"missing {' and '.join(missing)}"] if missing else []) + (["module is loaded"] if loaded else [])
        return Verdict("fail", f"{self.module}: " + "; ".join(problems))


class Command(CheckKind):
    """A read-only command whose exit status (0 = pass) or output decides the result.

    For checks no declarative kind expresses. The command must not change anything.
    """

    kind: Literal["command"] = "command"
    command: str
    expect_output: str | None = Field(None, description="regex the output must match (else exit 0 decides)")
    not_applicable_output: str | None = Field(
        None, description="regex: output matching it means the control does not apply to this host")
    describe: str = Field(description="what a pass means, for the evidence line")

    def script(self) -> str:
        return self.command

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        shown = " ".join(evidence.split())[:300]
        if self.not_applicable_output is not None and re.search(self.not_applicable_output, evidence, re.MULTILINE):
            return Verdict("notapplicable", shown)
        if self.expect_output is not None:
            ok = re.search(self.expect_output, evidence, re.MULTILINE) is not None
        else:
            ok = exit_code == 0
        return Verdict("pass" if ok else "fail", f"{self.describe}: {shown or '(no output)'}")


KINDS = [Sysctl, SysctlPersisted, SshdOption, FileMode, FileContent, ServiceState, Package, KernelModuleBlocked, Command]
