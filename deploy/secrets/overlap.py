"""Keys that overlap during a rotation: the pure logic, shared by every API-key kind.

A key document holds a ``current`` slot and, during a rotation, a ``previous`` slot with
``previous_expires``. Whoever checks a presented key (vLLM behind the gateway, the gateway
for its clients) accepts both until that time, so no request fails while hosts pick up
the new key; ``finish`` (or the expiry) drops the old one. A slot stores either the key
itself (``value``, for a key a host must present) or only its SHA-256 (``sha256``, for a
key a host must only recognise).

Why plain SHA-256 and not a slow password hash: keys are 256 random bits, so there is no
dictionary to try; a pepper or key stretching protects low-entropy secrets, not these.

Example::

    >>> import datetime as dt
    >>> t0 = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> doc = start({}, slot("ck_old", 1, t0, hashed=True), grace=dt.timedelta(hours=1), when=t0)
    >>> doc = start(doc, slot("ck_new", 2, t0, hashed=True), grace=dt.timedelta(hours=1), when=t0)
    >>> [s["version"] for s in accepted(doc, t0)]
    [2, 1]
    >>> match(doc, "ck_old", t0 + dt.timedelta(hours=2)) is None
    True
"""

from __future__ import annotations

import datetime as dt
import secrets as pysecrets

# The checking side lives with the hosts' runtime code, which reads the same documents.
from citadel_runtime.keydoc import accepted, digest, key_id, match, overlap_open  # noqa: F401
from deploy.redaction import Secret


class OverlapOpen(Exception):
    """A rotation is still in its overlap: finish it before starting another."""


def new_key(prefix: str) -> Secret:
    """A fresh 256-bit key, URL-safe, with a prefix that says what it is (like ``ck_``)."""
    return Secret(prefix + pysecrets.token_urlsafe(32))


def slot(value: str, version: int, when: dt.datetime, hashed: bool) -> dict:
    """One key's record: its version, creation time, id, and the key or only its hash."""
    entry = {"version": version, "created": when.isoformat(), "key_id": key_id(value)}
    if hashed:
        entry["sha256"] = digest(value)
    else:
        entry["value"] = value
    return entry


def start(doc: dict, new: dict, grace: dt.timedelta, when: dt.datetime) -> dict:
    """`doc` with `new` current and the old current accepted until `when + grace`.

    Refused while an earlier overlap is open: three live keys would make "which key does
    this host hold" unanswerable. An expired previous key is simply replaced.
    """
    if overlap_open(doc, when):
        raise OverlapOpen(f"the previous key is accepted until {doc['previous_expires']}")
    old = doc.get("current")
    return {
        "current": new,
        "previous": old,
        "previous_expires": (when + grace).isoformat() if old else None,
    }


def finish(doc: dict) -> dict:
    """`doc` with only its current key: the previous one is no longer accepted."""
    return {"current": doc.get("current"), "previous": None, "previous_expires": None}
