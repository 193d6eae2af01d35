r"""Check kinds of the accounts controls (``hardening/controls/accounts.py``): effective
values of key/value files and of sudo ``Defaults``, required and forbidden lines of files
(the PAM stack, login scripts), and offender scripts whose output names what to fix.

Example::

    >>> check = ConfigValue(paths=["/etc/login.defs"], key="PASS_MAX_DAYS", style="space", op="range", high=365)
    >>> check.evaluate("PASS_MAX_DAYS\t365\n@@end", 0).status
    'pass'
"""

from __future__ import annotations

import re
import shlex
from typing import Literal

from pydantic import Field

from hardening.checks.base import CheckKind, Verdict


class _AccountsCheck(CheckKind):
    """What this module's kinds share: `describe`, the words the evidence line starts with."""

    describe: str = ""


def _shell_paths(paths: list[str]) -> str:
    """Quote plain paths; leave glob patterns (fixed strings of this module) to the shell."""
    return " ".join(p if "*" in p else shlex.quote(p) for p in paths)


class ConfigValue(_AccountsCheck):
    """The effective value of `key` in key/value files read in order (later assignments win).

    ``style`` is ``space`` (``KEY value``, login.defs) or ``equals`` (``key = value``;
    a bare ``key`` is a flag). ``default`` is the program's value when the key is absent.
    """

    kind: Literal["config_value"] = "config_value"
    paths: list[str]
    key: str
    style: Literal["space", "equals"]
    op: Literal["eq", "range", "zero_or_min", "flag", "umask", "path"]
    values: list[str] = Field(default_factory=list)  # eq: allowed values; umask: the required mask
    low: int | None = None
    high: int | None = None
    default: str | None = None

    def script(self) -> str:
        pattern = shlex.quote(rf"^[[:space:]]*{self.key}([[:space:]]|=|$)")
        return f"for f in {_shell_paths(self.paths)}; do [ -f \"$f\" ] && grep -E {pattern} \"$f\"; done; echo @@end"

    def value_of(self, evidence: str) -> str | None:
        """The last assignment's value ('' for a bare flag), or None when the key is absent."""
        value = None
        for line in evidence.splitlines():
            line = line.strip()
            if not line or line.startswith("@@"):
                continue
            if self.style == "space":
                parts = line.split(None, 1)
                value = parts[1].strip() if len(parts) > 1 else ""
            else:
                value = line.split("=", 1)[1].strip() if "=" in line else ""
        return value

    def judge(self, value: str | None) -> bool:
        if self.op == "flag":
            return value is not None
        if value is None:
            value = self.default
        if value is None:
            return False
        value = value.strip().strip('"')
        if self.op == "eq":
            return value in self.values
        if self.op == "path":
            entries = value.removeprefix("PATH=").split(":")
            return value.startswith("PATH=") and all(e.startswith("/") for e in entries)
        if self.op == "umask":
            if not re.fullmatch(r"[0-7]{3,4}", value):
                return False
            mask = int(self.values[0], 8)
            return int(value, 8) & mask == mask
        if not re.fullmatch(r"-?\d+", value):
            return False
        number = int(value)
        if self.op == "zero_or_min":
            return number == 0 or number >= (self.low or 0)
        return (self.low is None or number >= self.low) and (self.high is None or number <= self.high)

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence:
            return Verdict("error", f"could not read {self.key}: {evidence.strip()[:200]!r}")
        value = self.value_of(evidence)
        shown = "absent" if value is None else ("set" if value == "" else value)
        if value is None and self.default is not None and self.op != "flag":
            shown = f"absent (default {self.default})"
        where = ", ".join(self.paths)
        if self.judge(value):
            return Verdict("pass", f"{self.key}: {shown} ({where})")
        return Verdict("fail", f"{self.key}: {shown}, expected {self.want()} ({where})")

    def want(self) -> str:
        if self.op == "eq":
            return " or ".join(self.values)
        if self.op == "flag":
            return "the flag set"
        if self.op == "path":
            return "only absolute directories (no '.', no empty entry)"
        if self.op == "umask":
            return f"a umask at least as strict as {self.values[0]}"
        if self.op == "zero_or_min":
            return f"0 (until an administrator unlocks) or at least {self.low}"
        if self.low is not None and self.high is not None:
            return f"between {self.low} and {self.high}"
        return f"at least {self.low}" if self.low is not None else f"at most {self.high}"


class Lines(_AccountsCheck):
    """Non-comment lines of files: each `required` (path, regex) matches a line of that file,
    no `forbidden` one matches any. Regexes are Python's, judged here, not on the host."""

    kind: Literal["lines"] = "lines"
    required: list[tuple[str, str]] = Field(default_factory=list)
    forbidden: list[tuple[str, str]] = Field(default_factory=list)

    def paths(self) -> list[str]:
        return list(dict.fromkeys(p for p, _ in self.required + self.forbidden))

    def script(self) -> str:
        parts = []
        for path in self.paths():
            q = shlex.quote(path)
            parts.append(
                f"echo '@@file {path}'; if [ -f {q} ]; then grep -v '^[[:space:]]*#' {q}; else echo '@@missing'; fi"
            )
        return "; ".join(parts) + "; echo @@end"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence:
            return Verdict("error", f"could not read {', '.join(self.paths())}")
        content: dict[str, list[str]] = {}
        current = None
        for line in evidence.splitlines():
            if line.startswith("@@file "):
                current = line[len("@@file "):]
                content[current] = []
            elif line == "@@missing" and current is not None:
                content.pop(current, None)
                current = None
            elif current is not None and not line.startswith("@@"):
                content[current].append(line)
        problems = []
        for path, regex in self.required:
            if path not in content:
                problems.append(f"{path} is missing")
            elif not any(re.search(regex, line) for line in content[path]):
                problems.append(f"{path}: no line matches {regex!r}")
        for path, regex in self.forbidden:
            for line in content.get(path, []):
                if re.search(regex, line):
                    problems.append(f"{path}: unwanted line {line.strip()[:150]!r}")
                    break
        if problems:
            return Verdict("fail", "; ".join(dict.fromkeys(problems)))
        return Verdict("pass", f"{self.describe}: {', '.join(self.paths())}")


class SudoDefault(_AccountsCheck):
    """The effective value of a sudo `Defaults` option across /etc/sudoers and /etc/sudoers.d
    (read in sudo's order; the last setting wins). ``op``: ``on`` (a boolean flag), ``eq``,
    ``range`` (an integer between low and high)."""

    kind: Literal["sudo_default"] = "sudo_default"
    option: str
    op: Literal["on", "eq", "range"]
    values: list[str] = Field(default_factory=list)
    low: int | None = None
    high: int | None = None
    default: str | None = None

    def script(self) -> str:
        # sudo reads sudoers.d files in lexical order and skips names with a '.' or ending in '~'.
        return (
            "cat /etc/sudoers; for f in /etc/sudoers.d/*; do case \"${f##*/}\" in *.*|*~) continue;; esac; "
            "[ -f \"$f\" ] && cat \"$f\"; done; echo @@end"
        )

    def value_of(self, evidence: str) -> str | None:
        value = None
        for line in evidence.splitlines():
            line = line.split("#", 1)[0].strip() if not line.strip().startswith("#include") else ""
            match = re.match(r"^Defaults(?:[:@!>]\S+)?\s+(.*)$", line)
            if not match:
                continue
            # Options are comma-separated; commas inside double quotes do not split.
            for option in re.findall(r'(?:[^,"]|"[^"]*")+', match.group(1)):
                option = option.strip()
                name = re.split(r"\s*[+-]?=\s*", option, maxsplit=1)[0]
                if name == self.option:
                    value = option.split("=", 1)[1].strip().strip('"') if "=" in option else "on"
                elif name == "!" + self.option:
                    value = "off"
        return value

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence:
            return Verdict("error", f"could not read the sudoers files: {evidence.strip()[:200]!r}")
        value = self.value_of(evidence)
        effective = self.default if value is None else value
        if self.op == "on":
            ok = effective == "on"
        elif self.op == "eq":
            ok = effective in self.values
        else:
            ok = effective is not None and bool(re.fullmatch(r"-?\d+", effective)) and (
                (self.low is None or int(effective) >= self.low) and (self.high is None or int(effective) <= self.high)
            )
        shown = f"{self.option} = {effective}" + (" (default)" if value is None else "")
        return Verdict("pass" if ok else "fail", f"sudo {shown}" + ("" if ok else f"; {self.describe}"))


class Offenders(_AccountsCheck):
    """A read-only script prints one offender per line (first word: what to fix), then
    ``@@end``. It passes when it ran to the end and named nobody. The role runs the same
    script as a fact and fixes exactly the offenders it names."""

    kind: Literal["offenders"] = "offenders"
    script_text: str

    def script(self) -> str:
        return f"{{ {self.script_text.strip()}\n}}; echo @@end"

    def offenders(self, evidence: str) -> list[str]:
        return [line.strip() for line in evidence.splitlines() if line.strip() and not line.startswith("@@")]

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence.splitlines():
            return Verdict("error", f"the check did not complete: {evidence.strip()[:200]!r}")
        found = self.offenders(evidence)
        if found:
            return Verdict("fail", f"{self.describe}: " + "; ".join(found)[:300])
        return Verdict("pass", f"{self.describe}: none")


KINDS = [ConfigValue, Lines, SudoDefault, Offenders]
