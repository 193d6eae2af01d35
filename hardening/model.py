"""The control record: one declarative entry per control, as ComplianceAsCode and dev-sec do.

A control says what must be true of a host, why, how bad it is when it is not, which
frameworks it satisfies, which threat it answers, how to check it (read-only), and which
role fixes it. The catalog is data; the audit and the hardening role are two readers of it.

Example::

    Control(
        id="ssh-permit-root-login",
        title="SSH refuses root logins",
        rationale="Every administrative login must be attributable to a person (164.312(a)(2)(i)).",
        severity="high",
        refs=References(hipaa=["164.312(a)(2)(i)"], nist=["AC-6(2)", "IA-2"], cis=["5.1.20"],
                        threats=["T9"]),
        check=SshdOption(option="permitrootlogin", expected=["no"]),
        remediation="hardening",
    )
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from hardening.checks import Check

Severity = Literal["low", "medium", "high", "critical"]
# Where a control can be verified: containers share the lab machine's kernel, so kernel-level
# controls are only meaningful on a VM or real hardware.
Scope = Literal["any", "kernel"]


class References(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    hipaa: list[str] = Field(default_factory=list, description="45 CFR 164.312 subsections, e.g. 164.312(b)")
    nist: list[str] = Field(default_factory=list, description="NIST SP 800-53 r5 control ids, e.g. AU-2")
    cis: list[str] = Field(default_factory=list, description="CIS Debian 12 benchmark sections, e.g. 5.1.20")
    owasp_llm: list[str] = Field(default_factory=list, description="OWASP Top 10 for LLM 2025, e.g. LLM10")
    threats: list[str] = Field(min_length=1, description="threat ids from the threat model, e.g. T9")
    devsec: list[str] = Field(default_factory=list, description="dev-sec baseline control ids it covers")


class Control(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    id: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")
    title: str = Field(min_length=5, max_length=120)
    rationale: str = Field(min_length=10)
    severity: Severity
    refs: References
    check: Check
    remediation: str = Field(description="the role that fixes it")
    scope: Scope = "any"
    profiles: list[str] = Field(default_factory=lambda: ["all"])
    # A shell command (run as root) that violates exactly this control on a hardened host:
    # the test scenario ComplianceAsCode keeps beside each rule. Tests run it, expect the
    # audit to fail this control alone, then redeploy and expect it fixed.
    break_with: str = Field(min_length=3)
