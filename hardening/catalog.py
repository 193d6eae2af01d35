"""The control catalog: every control of every area, validated once, in a stable order.

Areas live in ``hardening/controls/<area>.py``, each exporting ``CONTROLS: list[Control]``.
Profiles select controls: ``all``, ``hipaa`` (controls citing a HIPAA 164.312 subsection),
``cis-level1`` (controls citing a CIS section) and any profile name a control lists itself.

Example::

    >>> from hardening.catalog import load_catalog, select
    >>> len(select(load_catalog(), "hipaa")) <= len(load_catalog())
    True
"""

from __future__ import annotations

import importlib
import pkgutil
from functools import lru_cache

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


PROFILES = {
    "all": lambda c: True,
    "hipaa": lambda c: bool(c.refs.hipaa),
    "cis-level1": lambda c: bool(c.refs.cis),
    "llm": lambda c: bool(c.refs.owasp_llm),
}


def profile_names(catalog: tuple[Control, ...]) -> list[str]:
    extra = sorted({p for c in catalog for p in c.profiles} - set(PROFILES))
    return [*PROFILES, *extra]


def select(catalog: tuple[Control, ...], profile: str = "all") -> list[Control]:
    if profile in PROFILES:
        return [c for c in catalog if PROFILES[profile](c)]
    chosen = [c for c in catalog if profile in c.profiles]
    if not chosen:
        raise CatalogError(f"unknown profile {profile!r}; profiles are: {', '.join(profile_names(catalog))}")
    return chosen


def by_id(catalog: tuple[Control, ...]) -> dict[str, Control]:
    return {c.id: c for c in catalog}
