"""Host identities: how each host's Vault agent logs in, with no operator in the loop.

Each host's agent, one per host group, logs in with Vault's ``cert`` auth, presenting its
own **identity certificate**: a client-only certificate from the PKI role ``agent-GROUP``
(organisational unit ``agent-GROUP``, common name the host's inventory name), whose private
key stays in the agent's state directory (``/var/lib/citadel-agent/GROUP/identity.pem``,
root only). The agent re-issues that certificate itself, with the token the certificate
got it, before it ends (and at each new login), so the identity survives reboots and time
by itself. Only a host that stays off longer than ``vault.lifetimes.host_credential_seconds``
needs a deploy to come back: its certificate has expired, and nothing else lets it in.

Vault holds one ``cert`` role per host and group (``auth/cert/certs/GROUP-HOST``): the PKI
CA, exactly that common name and organisational unit, the group's policy and tokens bound to
the host's own address. ``citadel secrets revoke-host`` deletes those roles (and revokes the
host's tokens and certificates): nothing the host still holds logs in again, after any
number of reboots, until ``citadel secrets readmit-host`` and a deploy.

Why not the service certificates (``tls.pem``) as the login credential: those are readable
by the service's user; a compromised keyguard must not be able to log in as its host.

Example::

    >>> identity_role("gpu", "gpu1")
    'gpu-gpu1'
    >>> agent_pki_role("gateway")
    'agent-gateway'
"""

from __future__ import annotations

CERT_MOUNT = "cert"  # the auth mount hosts log in at
REVOKED_PATH = "admin/hosts/revoked"  # KV: {host: {"at": ..., "by": ...}} of revoked hosts
TOKEN_MAX_LIFETIMES = 3  # a token is renewed up to this many lifetimes, then the agent logs in again


def agent_pki_role(group: str) -> str:
    """The PKI role that issues the group's identity certificates (client-only)."""
    return f"agent-{group}"


def identity_role(group: str, host: str) -> str:
    """The cert auth role one host's agent of `group` logs in with."""
    return f"{group}-{host}"


def revoked_hosts(store) -> dict[str, dict]:
    """The hosts revoked by `citadel secrets revoke-host` and not readmitted: {host: details}."""
    data, _ = store.read(REVOKED_PATH)
    return dict((data or {}).get("hosts") or {})
