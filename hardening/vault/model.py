"""The record of one Vault control: declarative, like the host catalog's ``Control``.

Example::

    VaultControl(
        id="vault-audit-device",
        title="Vault has an audit device enabled",
        rationale="Every access to a secret must leave a record (164.312(b)).",
        severity="high",
        refs=References(hipaa=["164.312(b)"], nist=["AU-2", "AU-12"], threats=["T10"]),
        check=audit_device,
        remediation="declare an audit device in the server's config",
    )
"""

from __future__ import annotations

from collections.abc import Callable

from pydantic import BaseModel, ConfigDict, Field

from hardening.checks import Verdict
from hardening.model import References, Severity


class VaultControl(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, arbitrary_types_allowed=True)

    id: str = Field(pattern=r"^vault-[a-z0-9-]{2,58}$")
    title: str = Field(min_length=5, max_length=120)
    rationale: str = Field(min_length=10)
    severity: Severity
    refs: References
    check: Callable[..., Verdict] = Field(description="read-only: takes Facts, returns a Verdict")
    remediation: str = Field(min_length=5, description="the command or change that fixes it")
