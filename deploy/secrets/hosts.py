"""Cutting one host off, and letting it back in: ``citadel secrets revoke-host`` / ``readmit-host``.

A host's only way into Vault is its identity (:mod:`deploy.vault.identity`). Revoking it, in
this order, each step safe to repeat (a revocation that stops midway is finished by running
it again):

1. record the host as revoked in KV (``admin/hosts/revoked``): from now on the bootstrap
   makes no identity role for it and the vault-agent role refuses to deploy it, so nothing
   brings it back by accident;
2. delete its cert auth roles (``GROUP-HOST``): its agent's next login fails, whatever
   certificate it holds, after any number of reboots;
3. revoke every token those roles issued (found by their ``cert_name``): its agent loses
   Vault at once instead of at its token's end;
4. revoke every certificate the PKI issued to it (identity and service certificates) and
   rebuild the CRL: the other hosts' agents render the CRL within their render interval, and
   the gateway and the keyguards then refuse the host's certificates.

Readmitting deletes the record and makes the host's identity roles again; a deploy of the
vault-agent role then hands it a new identity.

Example::

    >>> revoke(client, store, site, "gpu2")                    # doctest: +SKIP
    Revocation(host='gpu2', roles=['gpu-gpu2'], tokens=2, certificates=5)
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field

from deploy.secrets.store import Store, stamp, vault_errors
from deploy.secrets.tls import Certificates
from deploy.vault import VaultError
from deploy.vault.bootstrap import Bootstrapper
from deploy.vault.identity import CERT_MOUNT, REVOKED_PATH, identity_role
from deploy.vault.policies import GROUPS


@dataclass
class Revocation:
    host: str
    roles: list[str] = field(default_factory=list)  # cert auth roles deleted
    tokens: int = 0  # tokens revoked
    certificates: int = 0  # PKI certificates revoked
    already: bool = False  # it was recorded as revoked before this run

    def as_dict(self) -> dict:
        return {"host": self.host, "roles_deleted": self.roles, "tokens_revoked": self.tokens,
                "certificates_revoked": self.certificates, "already_revoked": self.already}


def _check_host(site, host: str) -> None:
    if host not in site.hosts:
        known = ", ".join(sorted(site.hosts))
        raise VaultError(f"host {host!r} is not in the inventory (hosts: {known})", exit_code=2)


def _record(store: Store, host: str, entry: dict | None) -> bool:
    """Set (entry) or clear (None) the host's revocation record; whether it was there before."""
    import hvac  # heavy: imported late, so `citadel --help` stays fast

    for _ in range(5):  # check-and-set: another operator's change in between is kept
        data, version = store.read(REVOKED_PATH)
        hosts = dict((data or {}).get("hosts") or {})
        before = host in hosts
        if entry is None and not before:
            return False
        if entry is not None and before:
            return True
        if entry is None:
            hosts.pop(host)
        else:
            hosts[host] = entry
        try:
            store.write(REVOKED_PATH, {"hosts": hosts}, version)
            return before
        except hvac.exceptions.InvalidRequest as exc:
            if "check-and-set" not in str(exc):
                raise
            continue
    raise VaultError(f"{REVOKED_PATH}: changed by someone else five times in a row; run the command again")


def _role_tokens(client, roles: set[str]) -> list[str]:
    """Accessors of the live tokens that cert auth issued to `roles`."""
    import hvac  # heavy: imported late, so `citadel --help` stays fast

    listed = client.list("auth/token/accessors") or {}
    found = []
    for accessor in (listed.get("data") or {}).get("keys") or []:
        try:
            info = client.write_data("auth/token/lookup-accessor", data={"accessor": accessor})["data"]
        except (hvac.exceptions.InvalidRequest, hvac.exceptions.InvalidPath):  # expired since the list
            continue
        if (info.get("meta") or {}).get("cert_name") in roles:
            found.append(accessor)
    return found


def _host_certificates(client, pki_mount: str, host: str) -> list[str]:
    """Serials of the unexpired certificates the PKI issued for `host` (identities and services)."""
    now = dt.datetime.now(dt.UTC)
    return [info["serial"] for info in Certificates(client, pki_mount).all()
            if info["host"] == host and info["not_after"] > now]


def revoke(client, store: Store, site, host: str) -> Revocation:
    """Cut `host` off (see the module docstring); safe to run again."""
    _check_host(site, host)
    result = Revocation(host=host)
    with vault_errors(f"host {host}'s identity", f"citadel secrets revoke-host {host}"):
        result.already = _record(store, host, {"at": stamp(), "by": store.actor()})
        roles = {identity_role(group, host) for group in GROUPS}
        for role in sorted(roles):
            if client.read(f"auth/{CERT_MOUNT}/certs/{role}") is not None:
                client.delete(f"auth/{CERT_MOUNT}/certs/{role}")
                result.roles.append(role)
        for accessor in _role_tokens(client, roles):
            client.write_data("auth/token/revoke-accessor", data={"accessor": accessor})
            result.tokens += 1
        pki = site.vault.pki_mount
        for serial in _host_certificates(client, pki, host):
            client.write_data(f"{pki}/revoke", data={"serial_number": serial})
            result.certificates += 1
        client.read(f"{pki}/crl/rotate")  # the CRL the agents render lists them now
        store.record("host-identity", host, "revoke", **result.as_dict())
    return result


def readmit(client, store: Store, site, host: str) -> bool:
    """Let a revoked host back in: its identity roles again; whether it was revoked."""
    _check_host(site, host)
    with vault_errors(f"host {host}'s identity", f"citadel secrets readmit-host {host}"):
        was = _record(store, host, None)
        Bootstrapper(client, site).identities()
        store.record("host-identity", host, "readmit", was_revoked=was)
    return was
