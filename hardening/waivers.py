"""Waivers: an accepted, approved, time-limited exception to a control on some hosts.

A waiver never hides a result: a waived failure is still reported as a failure, marked
with who approved it, why, and until when. It only stops that failure from failing the
audit's exit status. An expired waiver stops counting, and the report says it expired.

Example file::

    waivers:
      - control: ssh-max-auth-tries
        hosts: "gpu-0*"
        justification: "Vendor support tool retries keys; ticket CHG-1234"
        approver: "J. Doe, CISO"
        expires: 2027-03-31
"""

from __future__ import annotations

import datetime as dt
import fnmatch
from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from inventory.loader import describe_error  # one wording for located errors across all files


class Waiver(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    control: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{2,63}$")
    hosts: str = Field("*", description="shell-style pattern of host names")
    justification: str = Field(min_length=10)
    approver: str = Field(min_length=2)
    expires: dt.date

    def covers(self, host: str, control: str) -> bool:
        return control == self.control and fnmatch.fnmatchcase(host, self.hosts)

    def expired(self, today: dt.date) -> bool:
        return today > self.expires


class WaiverFile(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    waivers: list[Waiver] = Field(default_factory=list)


class WaiverError(Exception):
    pass


def load_waivers(path: Path, known_controls: set[str]) -> list[Waiver]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise WaiverError(f"{path}: file not found") from None
    except yaml.YAMLError as exc:
        raise WaiverError(f"{path}: not valid YAML: {exc}") from None
    try:
        parsed = WaiverFile.model_validate(data or {})
    except ValidationError as exc:
        problems = "\n".join(f"  - {describe_error(e)}" for e in exc.errors(include_url=False))
        raise WaiverError(f"{path}: invalid waivers:\n{problems}") from None
    unknown = [f"waivers.{i}.control: no control {w.control!r} in the catalog" for i, w in enumerate(parsed.waivers) if w.control not in known_controls]
    if unknown:
        raise WaiverError(f"{path}: invalid waivers:\n" + "\n".join(f"  - {u}" for u in unknown))
    return list(parsed.waivers)


def apply_waivers(results, waivers: list[Waiver], today: dt.date | None = None) -> None:
    """Mark each failed or errored result with the waiver that covers it (in place)."""
    today = today or dt.date.today()
    for result in results:
        if result.status not in ("fail", "error"):
            continue
        for waiver in waivers:
            if waiver.covers(result.host, result.control):
                result.waiver = {
                    "justification": waiver.justification,
                    "approver": waiver.approver,
                    "expires": waiver.expires.isoformat(),
                    "expired": waiver.expired(today),
                }
                if not waiver.expired(today):
                    break
