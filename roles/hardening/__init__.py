"""The ``hardening`` role: applies every control of the catalog that a role can fix.

Each area module (``ssh``, ...) applies the fixes for the controls of the matching
``hardening/controls/<area>.py``, from the same data, so the check and the fix cannot
drift apart. Values come from the inventory; every default is the safe one.

Example::

    citadel deploy -i site.yaml --role hardening --dry-run
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy

from roles import Role
from roles.hardening import accounts, filesystem, firewall, kernel, logging, services, ssh

# Order matters: packages and services first, the firewall and SSH lock-down last.
AREAS = [services, kernel, filesystem, accounts, logging, firewall, ssh]


@deploy("Citadel hardening")
def apply() -> None:
    site = host.data.citadel_site
    entry = site.hosts[host.name]
    for area in AREAS:
        area.apply(site, entry)


ROLE = Role(name="hardening", summary="OS hardening: every control in the catalog", groups=(), apply=apply)
