"""Audit checks of the Vault/OpenBao server itself, through its API (read-only).

The host catalog (``hardening/controls/``) runs shell snippets over SSH; these controls
instead look at Vault through an hvac client: TLS only, an audit device, no root token in
use, host identities (TTLs, one host each, address bindings) as bootstrapped, no wildcard policy, transit keys and
other secrets younger than the rotation policy, the CA not near expiry.

- :mod:`hardening.vault.model`: the control record (same fields as the host catalog's,
  with a Python check taking :class:`~hardening.vault.facts.Facts`);
- :mod:`hardening.vault.facts`: what the checks read from the server, each read once;
- :mod:`hardening.vault.controls`: the controls;
- :mod:`hardening.vault.run`: runs them and turns exceptions into ``error`` results.

``auditor.hcl`` is the least-privilege policy an auditor's token needs (read-only, plus
``sudo`` on ``sys/audit`` only because Vault requires it to list audit devices).

Example::

    >>> from hardening.vault.controls import CONTROLS
    >>> all(c.refs.threats for c in CONTROLS)
    True
"""
