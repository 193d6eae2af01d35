"""What the Vault controls read from the server: each read done once, on first use.

Reads only; a read the token is not allowed to make raises hvac's ``Forbidden``, which
the runner reports as an error naming the control (the token lacks a path of
``hardening/vault/auditor.hcl``), never as a pass.

Example::

    >>> facts = Facts(client, site)                                 # doctest: +SKIP
    >>> facts.token["policies"]
    ['citadel-auditor', 'default']
"""

from __future__ import annotations

from functools import cached_property

from deploy.secrets.store import Store
from deploy.vault.bootstrap import TRANSIT_KEYS
from deploy.vault.identity import CERT_MOUNT, agent_pki_role, identity_role, revoked_hosts
from deploy.vault.policies import GROUPS


class Facts:
    def __init__(self, client, site):
        self.client = client
        self.site = site
        self.vault = site.vault

    def _data(self, response) -> dict:
        return response.get("data", response) if isinstance(response, dict) else {}

    def _read(self, path: str) -> dict | None:
        """The data at `path`, or None where nothing is there."""
        response = self.client.read(path)
        return None if response is None else self._data(response)

    @cached_property
    def address(self) -> str:
        return self.client.url

    @cached_property
    def token(self) -> dict:
        data = self._data(self.client.auth.token.lookup_self())
        # Only what the checks need: the lookup also carries the token itself ("id").
        return {k: data.get(k) for k in ("display_name", "policies", "ttl", "expire_time", "path", "entity_id")}

    @cached_property
    def audit_devices(self) -> dict:
        return self._data(self.client.sys.list_enabled_audit_devices())

    @cached_property
    def revoked(self) -> dict[str, dict]:
        return revoked_hosts(Store(self.client, self.vault.kv_mount))

    @cached_property
    def identities(self) -> dict[tuple[str, str], tuple[str, dict | None]]:
        """(group, host) -> (cert auth role name, its settings or None), for every host not revoked."""
        found = {}
        for group in GROUPS:
            for host in self.site.hosts_in(group):
                if host not in self.revoked:
                    name = identity_role(group, host)
                    found[(group, host)] = (name, self._read(f"auth/{CERT_MOUNT}/certs/{name}"))
        return found

    @cached_property
    def agent_pki_roles(self) -> dict[str, dict | None]:
        return {group: self._read(f"{self.vault.pki_mount}/roles/{agent_pki_role(group)}") for group in GROUPS
                if self.site.hosts_in(group)}

    def policy(self, name: str) -> str | None:
        return (self._read(f"sys/policies/acl/{name}") or {}).get("policy")

    @cached_property
    def transit_keys(self) -> dict[str, dict | None]:
        return {name: self._read(f"{self.vault.transit_mount}/keys/{name}") for name in TRANSIT_KEYS}

    @cached_property
    def ca_certificate(self) -> str | None:
        return (self._read(f"{self.vault.pki_mount}/issuer/default") or {}).get("certificate")

    def kv(self, path: str) -> dict | None:
        """A KV v2 document's data (only non-secret records: rotation states, client key hashes)."""
        found = self._read(f"{self.vault.kv_mount}/data/{path}")
        return None if found is None else (found.get("data") or {})
