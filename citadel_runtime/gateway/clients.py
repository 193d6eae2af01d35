"""Who is calling, and what that client may do: keys, policies and limits.

The Vault agent renders ``client-keys.json``: ``{"clients": {NAME: key document}}`` with
only SHA-256 hashes of each client's current (and, during a rotation, previous) key. A
presented key is hashed once and compared with every accepted hash in constant time, so
neither a key nor its position leaks through timing. The table is swapped whole on reload,
so a revoked client is refused from the next request on, without a restart.

A client's policy comes from the inventory (``gateway.clients``): which models, requests
per minute, concurrent requests, maximum tokens, body size, the PHI guard's mode. A key
holder the inventory gives no policy is refused (403): access is granted by name.

Example::

    >>> from citadel_runtime.keydoc import digest
    >>> table = KeyTable({"clients": {"ward": {"current": {"version": 1, "sha256": digest("ck_x")}}}})
    >>> table.identify("ck_x")
    ('ward', 1)
"""

from __future__ import annotations

import datetime as dt
import hmac
import json
import time
from collections import deque
from dataclasses import dataclass, field

from citadel_runtime.keydoc import accepted, digest


class KeyTable:
    def __init__(self, doc: dict):
        self.doc = doc

    @classmethod
    def load(cls, path: str) -> KeyTable:
        with open(path, encoding="utf-8") as handle:
            doc = json.load(handle)
        for name, keys in (doc.get("clients") or {}).items():
            for slot in (keys.get("current"), keys.get("previous")):
                if slot and ("value" in slot or not slot.get("sha256")):
                    raise ValueError(f"{path}: client {name}: a slot without a sha256 hash (plaintext keys are refused)")
        return cls(doc)

    def identify(self, presented: str, when: dt.datetime | None = None) -> tuple[str, int] | None:
        """(client, key version) for a presented key, or None. Every hash is compared."""
        when = when or dt.datetime.now(dt.UTC)
        candidate = digest(presented).encode()
        found = None
        clients = self.doc.get("clients") or {}
        for name, keys in sorted(clients.items()):
            for slot in accepted(keys, when):  # a previous key only until its overlap ends
                if hmac.compare_digest(candidate, (slot.get("sha256") or "").encode()):
                    found = (name, slot.get("version"))
        return found


@dataclass
class Policy:
    models: list[str] = field(default_factory=list)  # empty: none
    requests_per_minute: int = 60
    concurrent_requests: int = 4
    max_tokens: int = 512  # the most tokens one request may generate, all its outputs together (bodycheck)
    max_choices: int = 1  # n and best_of at most this
    clamp_outputs: bool = False  # over a cap: lowered to it (and recorded) rather than refused (400)
    max_body_bytes: int = 1 << 20
    phi: str = "detect"  # off | detect | redact | block
    record_content: bool = False  # bodies in the record, sealed with the content key
    client_certificate: str | None = None  # mutual TLS: the subject CN the client must present

    @classmethod
    def from_dict(cls, data: dict) -> Policy:
        return cls(**{k: v for k, v in data.items() if k in cls.__dataclass_fields__})


class Limits:
    """Per-client requests-per-minute (sliding window) and concurrency counters (one event loop)."""

    def __init__(self):
        self.recent: dict[str, deque] = {}
        self.active: dict[str, int] = {}

    def admit(self, client: str, policy: Policy, now: float | None = None) -> tuple[str, float] | None:
        """None when admitted (the caller must `release`), else (reason, retry-after seconds)."""
        now = time.monotonic() if now is None else now
        window = self.recent.setdefault(client, deque())
        while window and window[0] <= now - 60:
            window.popleft()
        if len(window) >= policy.requests_per_minute:
            return "rate limit", max(1.0, 60 - (now - window[0]))
        if self.active.get(client, 0) >= policy.concurrent_requests:
            return "concurrency limit", 1.0
        window.append(now)
        self.active[client] = self.active.get(client, 0) + 1
        return None

    def release(self, client: str) -> None:
        self.active[client] = max(0, self.active.get(client, 0) - 1)


def requested_tokens(body: dict) -> int | None:
    """The most tokens a request asks for (max_tokens or max_completion_tokens), if it says.

    Integers only: the server's check before ``bodycheck.cap_outputs``, which replaces it
    (that one also refuses strings, floats and booleans, and counts choices and prompts).
    """
    values = [body.get(k) for k in ("max_tokens", "max_completion_tokens")]
    numbers = [v for v in values if isinstance(v, int) and not isinstance(v, bool)]
    return max(numbers) if numbers else None
