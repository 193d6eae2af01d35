"""What every check kind shares: the verdict it gives, and the base class of the kinds.

A check kind renders a read-only POSIX shell snippet (`script`) and judges what it printed
(`evaluate`) in Python, never on the host. Kinds are pydantic models with a literal `kind`,
so the catalog's `Check` union (``hardening.checks``) validates any of them from data.
"""

from __future__ import annotations

import shlex
from dataclasses import dataclass
from typing import Literal

from pydantic import BaseModel, ConfigDict

Status = Literal["pass", "fail", "notapplicable", "error"]


@dataclass(frozen=True)
class Verdict:
    status: Status
    message: str


def quote(value: str) -> str:
    """A value made safe to paste into the shell snippet."""
    return shlex.quote(value)


class CheckKind(BaseModel):
    """Base of every check kind: a frozen pydantic model with `script()` and `evaluate()`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    def script(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:  # pragma: no cover - abstract
        raise NotImplementedError
