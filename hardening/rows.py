"""Row tables: one row per control, read by the catalog (the check) and by a role (the fix).

Areas keep their settings as tables of rows (sshd options, sysctl keys, PAM rules...), so
that the check and the fix come from one source and cannot drift apart. Every row type
subclasses `Row`, which holds what all controls share (identity, reasons, references), and
turns itself into a `Control` through one builder, `Row.control()`. A row type only says
how its check, its break recipe and (where it differs) its scope are made.

Rows are keyword-only: a row reads as ``nist=["AC-7"], cis=["5.3.2.2"]``, never as a
positional list where NIST and CIS look alike.

Example::

    @dataclass(frozen=True, kw_only=True)
    class BannerFile(Row):
        path: str
        remediation: ClassVar[str] = "hardening"

        def make_check(self) -> Check:
            return FileMode(path=self.path, max_mode="0644", owner="root")

        def make_break(self) -> str:
            return f"chmod 0666 {self.path}"

    CONTROLS = controls_of([
        BannerFile(id="acct-issue-perms", path="/etc/issue", title="...", rationale="...",
                   severity="low", hipaa=["164.312(a)(1)"], nist=["AC-8"], cis=["7.1.9"], threats=["T9"]),
    ])
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar

from hardening.checks import Check
from hardening.model import Control, References, Scope, Severity


@dataclass(frozen=True, kw_only=True)
class Row:
    """What every control row carries. Subclasses add the fields their check and fix read."""

    id: str
    title: str
    rationale: str
    severity: Severity
    hipaa: Sequence[str] = ()  # 45 CFR 164.312 subsections
    nist: Sequence[str] = ()  # NIST SP 800-53 r5 control ids
    cis: Sequence[str] = ()  # CIS Debian Linux 12 benchmark sections
    owasp_llm: Sequence[str] = ()  # OWASP Top 10 for LLM applications 2025
    devsec: Sequence[str] = ()  # dev-sec baseline control ids this control covers
    threats: Sequence[str] = ()  # docs/threat-model.md ids (at least one)
    profiles: Sequence[str] = ("all",)

    # The role that fixes rows of this type (a ClassVar: the same for the whole table).
    remediation: ClassVar[str] = "hardening"

    def make_check(self) -> Check:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not say how its check is made")

    def make_break(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError(f"{type(self).__name__} does not say how it is broken")

    def scope(self) -> Scope:
        return "any"

    def references(self) -> References:
        return References(
            hipaa=list(self.hipaa), nist=list(self.nist), cis=list(self.cis), owasp_llm=list(self.owasp_llm),
            threats=list(self.threats), devsec=list(self.devsec),
        )

    def control(self) -> Control:
        """The one row-to-Control builder every table uses."""
        return Control(
            id=self.id, title=self.title, rationale=self.rationale, severity=self.severity,
            refs=self.references(), check=self.make_check(), remediation=self.remediation,
            scope=self.scope(), profiles=list(self.profiles), break_with=self.make_break(),
        )


def controls_of(rows: Iterable[Row]) -> list[Control]:
    """Controls for a table of rows, in table order."""
    return [row.control() for row in rows]
