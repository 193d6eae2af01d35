"""Roles: how a host is made. One pyinfra deploy per concern.

A role is a plain function decorated with ``pyinfra.api.deploy`` that reads the host's
inventory entry from ``host.data.citadel_host`` and the site from ``host.data.citadel_site``.
The registry below is what ``citadel deploy --role NAME`` chooses from, in this order.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable


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
    from roles import base, gateway, hardening, keyguard, model_store, store_volume, vault_agent, vllm

    roles = [base.ROLE, hardening.ROLE, vault_agent.ROLE, store_volume.ROLE, model_store.ROLE, vllm.ROLE, keyguard.ROLE, gateway.ROLE]
    return {role.name: role for role in roles}
