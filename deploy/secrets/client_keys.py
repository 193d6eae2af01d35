"""The gateway's client API keys: issued once, stored only as hashes, rotated, revoked.

All clients live in one document, ``gateway/client-keys`` (the gateway reads it; hosts of
the GPU group cannot), ``{"clients": {NAME: overlap document with hashed slots}}``. Every
change is one check-and-set write of that document, so it is atomic by construction: it
either happened or the old document still stands. A new key is returned to the caller once,
as a :class:`~deploy.redaction.Secret`, and never stored: only its SHA-256 and a short
public ``key_id`` are.

Example::

    >>> key, result = issue(store, "radiology-reporting")         # doctest: +SKIP
    >>> verify(read(store), key.reveal())                         # doctest: +SKIP
    'radiology-reporting'
    >>> revoke(store, "radiology-reporting").action                # doctest: +SKIP
    'revoke'
"""

from __future__ import annotations

import datetime as dt
import re

from deploy.redaction import Secret
from deploy.secrets import overlap
from deploy.secrets.rotation import Result
from deploy.secrets.store import Store, now, vault_errors
from deploy.vault import VaultError

KIND = "client-key"
PATH = "gateway/client-keys"
PREFIX = "ck_"
NAME_PATTERN = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")


def check_name(name: str) -> str:
    if not NAME_PATTERN.match(name):
        raise VaultError(
            f"client name {name!r}: use 1-63 lower-case letters, digits, '.', '_' or '-', starting with a letter or digit",
            exit_code=2,
        )
    return name


def read(store: Store) -> dict:
    doc, _ = store.read(PATH)
    return doc or {"clients": {}}


def _change(store: Store, name: str, action: str, rerun: str, change) -> Result:
    """Read the document, apply `change(clients)` (which returns details), write it back, record."""
    check_name(name)
    with vault_errors(f"client key {name}", rerun):
        doc, version = store.read(PATH)
        doc = doc or {"clients": {}}
        details = change(doc["clients"])
        store.write(PATH, doc, version)
        store.record(KIND, name, action, **details)
        entry = doc["clients"].get(name) or {}
        return Result(
            KIND, name, action, "overlap" if overlap.overlap_open(entry, now()) else ("revoked" if not entry else "done"),
            version=(entry.get("current") or {}).get("version"),
            previous_version=(entry.get("previous") or {}).get("version"),
            overlap_until=entry.get("previous_expires"),
            steps=[f"{action}: wrote {PATH}"],
        )


def issue(store: Store, name: str) -> tuple[Secret, Result]:
    """A new client and its first key (returned once; only its hash is stored)."""
    key = overlap.new_key(PREFIX)

    def change(clients):
        if name in clients:
            raise VaultError(
                f"client {name} already exists: `citadel secrets rotate client-key {name}` gives it a new key",
                exit_code=2,
            )
        clients[name] = overlap.start({}, overlap.slot(key.reveal(), 1, now(), hashed=True), dt.timedelta(0), now())
        return {"versions": {"to": 1}, "key_id": overlap.key_id(key.reveal())}

    return key, _change(store, name, "issue", f"citadel secrets issue-client {name}", change)


def rotate(store: Store, name: str, grace: dt.timedelta) -> tuple[Secret, Result]:
    """A new key for `name`; its old key keeps working until now + `grace`."""
    key = overlap.new_key(PREFIX)

    def change(clients):
        entry = _existing(clients, name)
        version = int(entry["current"]["version"]) + 1
        try:
            clients[name] = overlap.start(entry, overlap.slot(key.reveal(), version, now(), hashed=True), grace, now())
        except overlap.OverlapOpen as exc:
            raise VaultError(
                f"client key {name}: {exc}; run `citadel secrets rotate client-key {name} --finish` first", exit_code=2
            ) from None
        return {"versions": {"to": version, "from": version - 1}, "key_id": overlap.key_id(key.reveal()),
                "overlap_until": clients[name]["previous_expires"]}

    return key, _change(store, name, "rotate", f"citadel secrets rotate client-key {name}", change)


def finish(store: Store, name: str) -> Result:
    """Stop accepting `name`'s previous key."""

    def change(clients):
        entry = _existing(clients, name)
        clients[name] = overlap.finish(entry)
        return {"versions": {"to": entry["current"]["version"]}}

    return _change(store, name, "finish", f"citadel secrets rotate client-key {name} --finish", change)


def revoke(store: Store, name: str) -> Result:
    """Remove `name` and every key it had, at once (no grace: revocation is for a leak)."""

    def change(clients):
        entry = _existing(clients, name)
        del clients[name]
        return {"versions": {"from": entry["current"]["version"]}}

    return _change(store, name, "revoke", f"citadel secrets revoke-client {name}", change)


def _existing(clients: dict, name: str) -> dict:
    if name not in clients:
        known = ", ".join(sorted(clients)) or "none"
        raise VaultError(f"no client named {name} (clients: {known})", exit_code=2)
    return clients[name]


def verify(doc: dict, presented: str, when: dt.datetime | None = None) -> str | None:
    """The client whose accepted key `presented` is (what the gateway does per request), or None."""
    for name, entry in (doc.get("clients") or {}).items():
        if overlap.match(entry, presented, when or now()) is not None:
            return name
    return None
