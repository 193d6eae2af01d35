"""Roles: how a host is made. One pyinfra deploy per concern.

A role is a ``Role``: a name, a summary, the host groups it applies to (none: every host) and
``apply``, a function decorated with ``pyinfra.api.deploy``. ``apply`` reads the validated
inventory from ``host.data.citadel_site`` and its host's entry as ``site.hosts[host.name]``;
the roles that talk to Vault find the controller's access in ``host.data.citadel_vault``
(``deploy.connection`` puts both there). Citadel's own facts and operations, shared by the
roles, are in ``roles.facts`` and ``roles.ops``. ``registry()`` is what
``citadel deploy --role NAME`` chooses from, in the order a full deploy applies them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Role:
    name: str
    summary: str
    groups: tuple[str, ...]  # host groups it applies to; empty means every host
    apply: Callable[[], None]

    def applies_to(self, host_groups: list[str]) -> bool:
        return not self.groups or any(g in host_groups for g in self.groups)


def registry() -> dict[str, Role]:
    """All roles, in the order a full deploy applies them."""
    # Imported when asked, not at the top: every ``roles.*`` import runs this package first, and
    # one role's paths or facts must not load every role (nor a role its own package mid-import).
    from roles import base, gateway, hardening, keyguard, model_store, store_volume, vault_agent, vllm

    roles = [base.ROLE, hardening.ROLE, vault_agent.ROLE, store_volume.ROLE, model_store.ROLE, vllm.ROLE, keyguard.ROLE, gateway.ROLE]
    return {role.name: role for role in roles}
