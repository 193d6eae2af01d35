"""Check kinds of the services controls (``hardening/controls/services.py``), and the pure
helper they share with the ``hardening`` role's services part (``installed_packages``).

- ``PackagesAbsent``: several package names, one verdict;
- ``FileExact``: a file's whole content equals what the role writes;
- ``PackageService``: a package is installed and its unit starts at boot;
- ``DeviceNodes``: device nodes' modes and group (not applicable where a host has none).

Example::

    >>> check = PackagesAbsent(names=["telnetd"])
    >>> check.evaluate("telnetd deinstall ok config-files 0.17-44", 0).status
    'pass'
"""

from __future__ import annotations

import shlex
from typing import Literal

from hardening.checks.base import CheckKind, Verdict


def installed_packages(evidence: str) -> list[str]:
    """Names from `dpkg-query -W -f='${Package} ${Status}'` lines that are (even partly) installed."""
    names = []
    for line in evidence.splitlines():
        parts = line.split()
        if len(parts) >= 4 and parts[1] in ("install", "hold") and parts[3] not in ("not-installed", "config-files"):
            names.append(parts[0])
        elif len(parts) >= 4 and parts[1] in ("deinstall", "purge") and parts[3] not in ("not-installed", "config-files"):
            names.append(parts[0])
    return names


class PackagesAbsent(CheckKind):
    """None of `names` is installed (a package left with only its configuration counts as removed)."""

    kind: Literal["packages_absent"] = "packages_absent"
    names: list[str]
    describe: str = "packages absent"

    def script(self) -> str:
        names = " ".join(shlex.quote(n) for n in self.names)
        return f"dpkg-query -W -f='${{Package}} ${{Status}} ${{Version}}\\n' {names} 2>/dev/null; true"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        names = installed_packages(evidence)
        versions = {line.split()[0]: line.split()[-1] for line in evidence.splitlines() if len(line.split()) >= 5}
        installed = [f"{name} {versions.get(name, '')}".strip() for name in names]
        if installed:
            return Verdict("fail", "installed: " + ", ".join(installed))
        return Verdict("pass", "not installed: " + ", ".join(self.names))


class FileExact(CheckKind):
    """A file's whole content is exactly `content` (the text the role writes)."""

    kind: Literal["file_exact"] = "file_exact"
    path: str
    content: str
    describe: str = "file content"

    def script(self) -> str:
        p = shlex.quote(self.path)
        return f"if [ -f {p} ]; then cat {p}; else echo '@@MISSING'; fi"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        seen = evidence.rstrip("\n").splitlines()
        want = self.content.rstrip("\n").splitlines()
        if seen == ["@@MISSING"]:
            return Verdict("fail", f"{self.path} does not exist")
        if seen == want:
            return Verdict("pass", f"{self.path} is Citadel's ({len(want)} lines)")
        for number, (a, b) in enumerate(zip(seen + [""] * len(want), want + [""] * len(seen), strict=True), 1):
            if a != b:
                return Verdict("fail", f"{self.path} line {number} is {a[:150]!r}, expected {b[:150]!r}")
        return Verdict("fail", f"{self.path} differs from Citadel's")


class PackageService(CheckKind):
    """A package is installed and its systemd unit is enabled (starts at boot)."""

    kind: Literal["package_service"] = "package_service"
    package: str
    unit: str
    describe: str = "package and service"

    def script(self) -> str:
        return (
            f"echo \"package=$(dpkg-query -W -f='${{Status}} ${{Version}}' {shlex.quote(self.package)} 2>/dev/null)\"; "
            f"echo \"enabled=$(systemctl is-enabled {shlex.quote(self.unit)} 2>/dev/null)\""
        )

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        facts = dict(line.split("=", 1) for line in evidence.splitlines() if "=" in line)
        package, enabled = facts.get("package", "").split(), facts.get("enabled", "").strip()
        if package[:3] not in (["install", "ok", "installed"], ["hold", "ok", "installed"]):
            return Verdict("fail", f"{self.package} is not installed ({' '.join(package) or 'unknown'})")
        if enabled not in ("enabled", "static", "alias"):
            return Verdict("fail", f"{self.package} {package[-1]} is installed but {self.unit} is {enabled or 'unknown'}")
        return Verdict("pass", f"{self.package} {package[-1]} installed, {self.unit} {enabled}")


class DeviceNodes(CheckKind):
    """Existing character devices matching `globs` have at most `max_mode` and group `group`.

    Not applicable on a host with no such device nodes (no GPU, or a container).
    """

    kind: Literal["device_nodes"] = "device_nodes"
    globs: list[str]
    max_mode: str = "0660"
    owner: str = "root"
    group: str
    describe: str = "device nodes"

    def script(self) -> str:
        return f"for f in {' '.join(self.globs)}; do [ -c \"$f\" ] && stat -c '%n %a %U %G' \"$f\"; done; true"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        nodes = [line.split() for line in evidence.splitlines() if len(line.split()) == 4]
        if not nodes:
            return Verdict("notapplicable", f"no GPU device nodes ({' '.join(self.globs)}) on this host")
        bad = []
        for path, mode, owner, group in nodes:
            if int(mode, 8) & ~int(self.max_mode, 8) & 0o7777 or owner != self.owner or group != self.group:
                bad.append(f"{path} {mode} {owner}:{group}")
        if bad:
            return Verdict("fail", f"expected {self.max_mode} {self.owner}:{self.group}; " + ", ".join(bad[:10]))
        return Verdict("pass", f"{len(nodes)} device nodes are {self.max_mode} or stricter, group {self.group}")


KINDS = [PackagesAbsent, FileExact, PackageService, DeviceNodes]
