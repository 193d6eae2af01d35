"""Secret rotation for Citadel (`citadel secrets ...`): Vault-side logic, one module per kind.

- :mod:`deploy.secrets.store` reads and writes Citadel's records in KV (check-and-set),
  says who is acting, keeps the rotation trail and turns Vault failures into messages
  that name the secret and the command to re-run;
- :mod:`deploy.secrets.overlap` is the pure logic of keys that overlap during a rotation
  (current and previous both accepted until a grace expiry);
- :mod:`deploy.secrets.client_keys` issues, rotates and revokes the gateway's client API
  keys (stored only as hashes);
- :mod:`deploy.secrets.internal_key` rotates the key the gateway presents to vLLM;
- :mod:`deploy.secrets.vllm_key` rotates vLLM's own key (the keyguard presents it);
- :mod:`deploy.secrets.transit` rotates transit keys and rewraps model data keys;
- :mod:`deploy.secrets.tls` has the hosts' agents issue new TLS certificates;
- :mod:`deploy.secrets.hosts` revokes a host's identity (and readmits it);
- :mod:`deploy.secrets.status` gathers every secret's version, age, expiry and hosts.

Every rotation is a small state machine kept in KV under ``admin/rotation/<kind>/<name>``:
the intent is recorded first, each step is skipped on a re-run when already done, and the
completion is recorded with who, what, when and versions in ``admin/trail/``. Old and new
secrets overlap (both work) from ``rotate`` until ``rotate --finish`` or the grace expiry.

Example::

    >>> from deploy.secrets import KINDS
    >>> "internal-api-key" in KINDS
    True
"""

from __future__ import annotations

# What `citadel secrets rotate KIND` accepts, and whether KIND needs a NAME.
KINDS = {
    "internal-api-key": False,
    "vllm-api-key": False,
    "client-key": True,
    "transit-key": True,
    "tls-cert": True,
}
