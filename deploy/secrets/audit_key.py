"""The key that chains the gateway's audit log (HMAC-SHA256), kept in Vault.

``citadel vault bootstrap`` makes it once, when the site has gateway hosts;
``citadel-agent@gateway`` renders it for the gateway (``audit-hmac.json``, 0400), and
``citadel audit-log verify`` reads it from Vault with the auditor's token. It is never
rotated in place: a new key would break verification of every line chained with the old
one (a rotation would start a new log file; not built yet).

Threat: lack of monitoring and accountability (an attacker on the host who edits, deletes or
reorders records cannot forge the chain without this key).

Example::

    >>> seed(store)                                                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import secrets

from deploy.redaction import Secret
from deploy.secrets.store import Store

PATH = "gateway/audit-hmac-key"


def seed(store: Store) -> bool:
    """Write the key when there is none; False when one exists (never replaced here)."""
    if store.read(PATH)[0] is not None:
        return False
    store.write(PATH, {"value": secrets.token_hex(32)}, 0)
    return True


def read(store: Store) -> Secret | None:
    doc, _ = store.read(PATH)
    return Secret(doc["value"]) if doc and doc.get("value") else None
