"""The model server's system user, made by whichever role needs it first.

The firewall's per-user rule (``meta skuid``) needs the name to exist when the ruleset
loads, the unseal mount is chowned to it and the keyguard joins its group (to reach the
socket), so the hardening, model-store, keyguard and vllm roles all call this; pyinfra
makes it once and the rest are no-ops.
"""

from __future__ import annotations

from pyinfra.operations import server

from citadel_runtime.layout import MODEL_USER


def ensure_model_user() -> None:
    server.user(name=f"System user {MODEL_USER} (the model server; reads the unsealed model)", user=MODEL_USER,
                system=True, shell="/usr/sbin/nologin", home="/nonexistent", create_home=False, ensure_home=False)
