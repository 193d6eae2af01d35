"""Read-only checks: what to look at on a host, and how to judge what was seen.

Each check kind renders a POSIX shell snippet that only reads (cat, stat, sshd -T,
systemctl is-*, dpkg-query...) and prints its evidence, and judges that evidence in Python.
The audit runs every control's snippet on a host in one SSH session, so 300 controls cost
one round trip, not 300.

Every kind lives in this package, one module per family, and is a member of the `Check`
union that a control's ``check`` field validates against:

- ``core``: the generic kinds (sysctl, sshd options, file modes and content, units,
  packages, blocked modules, and ``Command`` for a read-only command);
- ``accounts``, ``kernel``, ``logging``, ``services``: the kinds of those areas' tables.

A new kind subclasses ``CheckKind`` with its own literal ``kind``, and is listed in its
module's ``KINDS`` (see docs/adding-a-control.md).
"""

from __future__ import annotations

from typing import Annotated, Union

from pydantic import Field

from hardening.checks import accounts, core, kernel, logging, services
from hardening.checks.base import CheckKind, Status, Verdict, quote
from hardening.checks.core import (
    Command,
    FileContent,
    FileMode,
    KernelModuleBlocked,
    Package,
    ServiceState,
    SshdOption,
    Sysctl,
    SysctlPersisted,
)

KINDS: tuple[type[CheckKind], ...] = (*core.KINDS, *accounts.KINDS, *kernel.KINDS, *logging.KINDS, *services.KINDS)

Check = Annotated[Union[KINDS], Field(discriminator="kind")]  # noqa: UP007 - a Union of a runtime tuple

__all__ = [
    "Check", "CheckKind", "Command", "FileContent", "FileMode", "KINDS", "KernelModuleBlocked", "Package",
    "ServiceState", "SshdOption", "Status", "Sysctl", "SysctlPersisted", "Verdict", "quote",
]
