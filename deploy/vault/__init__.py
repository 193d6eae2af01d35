"""Vault / OpenBao for Citadel: an embedded lab server, a client, and the bootstrap.

Modules, one purpose each:

- :mod:`deploy.vault.tls` makes the embedded server's CA and certificate;
- :mod:`deploy.vault.server` runs a real OpenBao server for the lab and the demo;
- :mod:`deploy.vault.client` resolves address, CA and token and returns an hvac client;
- :mod:`deploy.vault.policies` loads and checks the ACL policies kept as HCL files;
- :mod:`deploy.vault.bootstrap` sets up exactly the mounts, keys, roles and policies
  Citadel needs on an existing server, idempotently.

Example::

    >>> from deploy.vault import VaultError
    >>> raise VaultError("no token: set VAULT_TOKEN_FILE", exit_code=2)
    Traceback (most recent call last):
    ...
    deploy.vault.VaultError: no token: set VAULT_TOKEN_FILE
"""

from __future__ import annotations


class VaultError(Exception):
    """A problem the operator can act on; its message never carries a secret.

    ``exit_code`` follows the CLI convention: 2 bad input (nothing was done), 1 the work
    ran and failed (server unreachable, permission denied, a conflicting existing setup).
    """

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code
