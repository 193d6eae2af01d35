"""The control catalog: every control of every area, validated once, in a stable order.

Areas live in ``hardening/controls/<area>.py``, each exporting ``CONTROLS: list[Control]``, and
are named after the role (or the hardening role's part) that fixes them.

Profiles are selections of the catalog (as in ComplianceAsCode), each meaning what it says:

- ``all``: every control;
- ``hipaa``: controls implementing a HIPAA Security Rule technical safeguard (45 CFR 164.312);
- ``cis-level1``: controls implementing a recommendation of the CIS Debian Linux 12 Benchmark's
  Level 1 - Server profile;
- ``cis-level2``: controls implementing any recommendation of its Level 2 - Server profile
  (which includes Level 1);
- ``llm``: controls answering an OWASP Top 10 for LLM Applications risk;
- any other name a control lists in its own ``profiles``.

The CIS levels come from ``hardening/frameworks/cis-debian12.yaml``.

Example::

    >>> from hardening.catalog import load_catalog, select
    >>> len(select(load_catalog(), "hipaa")) <= len(load_catalog())
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache
from pathlib import Path

import yaml

from hardening import controls as controls_package
from hardening.model import Control


class CatalogError(Exception):
    pass


@lru_cache(maxsize=1)
def areas() -> dict[str, tuple[Control, ...]]:
    """Controls by area (the module that defines them, and the role part that fixes them)."""
    found: dict[str, tuple[Control, ...]] = {}
    for module_info in sorted(pkgutil.iter_modules(controls_package.__path__), key=lambda m: m.name):
        module = importlib.import_module(f"{controls_package.__name__}.{module_info.name}")
        found[module_info.name] = tuple(getattr(module, "CONTROLS", []))
    return found


def area_of(control_id: str) -> str:
    for area, controls in areas().items():
        if any(c.id == control_id for c in controls):
            return area
    raise CatalogError(f"no control {control_id!r} in the catalog")


@lru_cache(maxsize=1)
def load_catalog() -> tuple[Control, ...]:
    found: list[Control] = [c for controls in areas().values() for c in controls]
    seen: set[str] = set()
    for control in found:
        if control.id in seen:
            raise CatalogError(f"control id {control.id!r} is defined twice")
        seen.add(control.id)
    return tuple(found)


CIS_LEVELS_FILE = Path(__file__).parent / "frameworks" / "cis-debian12.yaml"


@lru_cache(maxsize=1)
def cis_levels() -> dict[str, int]:
    """Every CIS Debian Linux 12 recommendation, by the lowest server level that includes it."""
    data = yaml.safe_load(CIS_LEVELS_FILE.read_text())
    levels = {section: 1 for section in data["level1_server"]}
    levels.update({section: 2 for section in data["level2_server_only"]})
    return levels


def _cis_at_most(level: int):
    return lambda c: any(cis_levels().get(section, 99) <= level for section in c.refs.cis)


# name: (what it selects, the selection)
PROFILES = {
    "all": ("every control", lambda c: True),
    "hipaa": ("controls implementing a HIPAA 164.312 technical safeguard", lambda c: bool(c.refs.hipaa)),
    "cis-level1": ("controls implementing a CIS Debian Linux 12 Level 1 - Server recommendation", _cis_at_most(1)),
    "cis-level2": ("controls implementing a CIS Debian Linux 12 Level 2 - Server recommendation (includes Level 1)",
                   _cis_at_most(2)),
    "llm": ("controls answering an OWASP Top 10 for LLM Applications 2025 risk", lambda c: bool(c.refs.owasp_llm)),
}


def profile_names(catalog: tuple[Control, ...]) -> list[str]:
    extra = sorted({p for c in catalog for p in c.profiles} - set(PROFILES))
    return [*PROFILES, *extra]


def select(catalog: tuple[Control, ...], profile: str = "all") -> list[Control]:
    if profile in PROFILES:
        _, selects = PROFILES[profile]
        return [c for c in catalog if selects(c)]
    chosen = [c for c in catalog if profile in c.profiles]
    if not chosen:
        raise CatalogError(f"unknown profile {profile!r}; profiles are: {', '.join(profile_names(catalog))}")
    return chosen


def by_id(catalog: tuple[Control, ...]) -> dict[str, Control]:
    return {c.id: c for c in catalog}
