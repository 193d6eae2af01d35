"""Key documents: which API keys are accepted at a given moment, and matching one.

A key document holds a ``current`` slot and, during a rotation, a ``previous`` slot with
``previous_expires``. Whoever checks a presented key accepts both until that time, so no
request fails while hosts pick up a new key. A slot holds the key itself (``value``, for a
key a host must present) or only its SHA-256 (``sha256``, for a key a host must only
recognise). The controller writes these documents (``deploy.secrets.overlap``); hosts read
the copies their Vault agent renders.

Example::

    >>> doc = {"current": {"version": 2, "sha256": digest("k2")},
    ...        "previous": {"version": 1, "sha256": digest("k1")},
    ...        "previous_expires": "2025-01-01T01:00:00+00:00"}
    >>> import datetime as dt
    >>> t = dt.datetime(2025, 1, 1, tzinfo=dt.timezone.utc)
    >>> match(doc, "k1", t)["version"], match(doc, "k1", t + dt.timedelta(hours=2))
    (1, None)
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac


def digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def key_id(value: str) -> str:
    """A short public identifier of a key (from its hash): safe to show, log and record."""
    return digest(value)[:12]


def _expires(doc: dict) -> dt.datetime | None:
    text = doc.get("previous_expires")
    return dt.datetime.fromisoformat(text) if text else None


def overlap_open(doc: dict, when: dt.datetime) -> bool:
    """Whether a previous key is still accepted at `when`."""
    expires = _expires(doc)
    return bool(doc.get("previous")) and expires is not None and when < expires


def accepted(doc: dict, when: dt.datetime) -> list[dict]:
    """The slots a checker accepts at `when`, newest first."""
    slots = [doc["current"]] if doc.get("current") else []
    if overlap_open(doc, when):
        slots.append(doc["previous"])
    return slots


def match(doc: dict, presented: str, when: dt.datetime) -> dict | None:
    """The accepted slot that `presented` is the key of, or None (constant-time compares)."""
    found = None
    for entry in accepted(doc, when):
        expected = entry.get("sha256") or entry.get("value") or ""
        candidate = digest(presented) if "sha256" in entry else presented
        if hmac.compare_digest(candidate.encode(), expected.encode()):
            found = entry
    return found
