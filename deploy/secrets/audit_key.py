"""The keys of the gateway's audit log, kept in Vault: the chain's HMAC key and the content key.

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
# The key sealing recorded content (citadel_runtime.gateway.content): a separate key, so
# verifying the log does not give the means to read what it recorded.
CONTENT_PATH = "gateway/content-key"


def seed(store: Store, path: str = PATH) -> bool:
    """Write a key (256 random bits, hex) when there is none; False when one exists (never replaced here)."""
    if store.read(path)[0] is not None:
        return False
    store.write(path, {"value": secrets.token_hex(32)}, 0)
    return True


def read(store: Store, path: str = PATH) -> Secret | None:
    doc, _ = store.read(path)
    return Secret(doc["value"]) if doc and doc.get("value") else None
