"""A model's replicas: the GPU hosts that serve it, which one takes the next request, which are out.

Each replica is one keyguard (one connection pool). The next request goes to the healthy
replica with the fewest requests outstanding (ties: round robin). A replica is ejected
passively, the moment a request to it fails in a way that says the host is in trouble (no
connection, a connection broken off, a 5xx of its own, "not serving this model now"), and
actively, when its health check fails; only a passing health check puts it back in rotation.
When every replica is out, they are tried all the same: failing at once costs little, and
with a single replica that is today's behaviour.

Which failures may be tried again elsewhere is decided here too (`retryable`): only those that
prove the request never reached a model server (the upstream's ``unsent``: no connection, or a
TLS handshake refused; and the keyguard's 503 for a model not served there now), never once
any byte of an answer arrived nor after a timeout with the request written.

The configuration, per model: an address (one replica, as before), or a list of replicas::

    "upstreams": {"tiny": "https://10.80.0.2:8443",
                  "big": [{"name": "gpu-01", "url": "https://10.80.0.2:8443"},
                          {"name": "gpu-02", "url": "https://10.80.0.3:8443"}]}

Example::

    >>> group = Replicas("big", [Replica("gpu-01", None), Replica("gpu-02", None)])
    >>> first = group.choose(); first.outstanding += 1
    >>> group.choose().name != first.name
    True
    >>> _ = group.eject(group.replicas[0], "connect refused")
    >>> [r.name for r in group.in_rotation()]
    ['gpu-02']
"""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass

from citadel_runtime.gateway.upstream import Address, Pool, UpstreamError

HEALTH_SECONDS = 5.0  # between two health checks of a model's replicas
HEALTH_TIMEOUT = 2.0  # the most one health check may take
PROBE_LIMIT = 64 * 1024  # the model list a keyguard answers is small
# How a keyguard says that it did not pass a request to any model server: the model's socket
# is absent (vLLM stopped or restarting), or it is draining. Not its "not answering (connect)":
# the keyguard also says that after writing the request on a pooled connection that broke.
UNSERVED = ("not being served on this host now", "draining")


@dataclass(eq=False)
class Replica:
    """One GPU host serving a model: its name in the records, its pool, its load and state."""

    name: str
    pool: Pool | None
    outstanding: int = 0
    ejected: str | None = None  # why it is out of rotation; None while in

    @property
    def healthy(self) -> bool:
        return self.ejected is None


class Replicas:
    """One model's replicas, in the configuration's order."""

    def __init__(self, model: str, replicas: list[Replica]):
        if not replicas:
            raise ValueError(f"upstreams.{model}: no replica")
        names = [r.name for r in replicas]
        if len(set(names)) != len(names):
            raise ValueError(f"upstreams.{model}: replica names repeat: {names}")
        self.model = model
        self.replicas = replicas
        self.turn = 0  # round robin among the least loaded

    def in_rotation(self) -> list[Replica]:
        return [r for r in self.replicas if r.healthy]

    def choose(self, exclude: set | frozenset = frozenset()) -> Replica | None:
        """The replica for the next attempt, or None when every one was tried (`exclude`)."""
        left = [r for r in self.replicas if r not in exclude]
        candidates = [r for r in left if r.healthy] or left  # all out: try them anyway
        if not candidates:
            return None
        fewest = min(r.outstanding for r in candidates)
        count = len(self.replicas)
        # Among the least loaded, the first at or after `turn` in configuration order.
        chosen = min((r for r in candidates if r.outstanding == fewest),
                     key=lambda r: (self.replicas.index(r) - self.turn) % count)
        self.turn = (self.replicas.index(chosen) + 1) % count
        return chosen

    def eject(self, replica: Replica, reason: str) -> bool:
        """Take `replica` out of rotation; whether it was in."""
        was_in = replica.healthy
        replica.ejected = reason
        return was_in

    def admit(self, replica: Replica) -> bool:
        """Put `replica` back in rotation; whether it was out."""
        was_out = not replica.healthy
        replica.ejected = None
        return was_out


def parse_upstreams(config: dict, tls) -> dict[str, Replicas]:
    """The ``upstreams`` configuration as each model's replicas (an address alone: one replica)."""
    out = {}
    for model, spec in (config.get("upstreams") or {}).items():
        entries = spec if isinstance(spec, list) else [spec]
        replicas = []
        for entry in entries:
            url = entry if isinstance(entry, str) else entry["url"]
            address = Address.parse(url)
            name = url if isinstance(entry, str) else str(entry.get("name") or url)
            replicas.append(Replica(name, Pool(address, tls)))
        out[model] = Replicas(model, replicas)
    return out


def unserved(status: int, data: bytes | None) -> bool:
    """Whether an answer is a keyguard's 503 saying that no model server was asked."""
    if status != 503 or not data or len(data) > 4096:
        return False
    try:
        message = json.loads(data).get("error")
    except (ValueError, AttributeError):
        return False
    message = message.get("message") if isinstance(message, dict) else message
    return isinstance(message, str) and any(phrase in message for phrase in UNSERVED)


def retryable(error: UpstreamError | None, status: int | None = None, data: bytes | None = None) -> str | None:
    """Why the attempt may be made again on another replica, or None when it must not be."""
    if error is not None:
        return error.reason if error.unsent else None
    if status is not None and unserved(status, data):
        return "not served there now"
    return None


def ejects(error: UpstreamError | None, status: int | None = None) -> bool:
    """Whether a failed attempt takes its replica out of rotation (a slow answer does not)."""
    if error is not None:
        return error.kind in ("connect", "protocol")
    return status is not None and status >= 500 and status != 504


async def probe(replica: Replica, model: str, keys: list[str], timeout: float = HEALTH_TIMEOUT) -> str | None:
    """Ask the replica which models it serves now: None when `model` is among them, else why not."""
    response = data = None
    keys = keys or [""]
    for index, key in enumerate(keys):
        try:
            async with asyncio.timeout(timeout):
                response = await replica.pool.request("GET", "/v1/models", [("Authorization", f"Bearer {key}")],
                                                      b"", timeout)
                data = await response.read_all(PROBE_LIMIT, timeout)
        except (UpstreamError, TimeoutError) as exc:
            return f"health check: {exc}"
        if response.status != 401 or index + 1 == len(keys):
            break  # a 401: a host not yet on the newest key, asked with the previous one
    if response.status != 200:
        return f"health check: answered {response.status}"
    try:
        listed = {entry.get("id") for entry in json.loads(data).get("data") or []}
    except (ValueError, AttributeError):
        return "health check: the answer is not a model list"
    return None if model in listed else f"health check: {model} is not served there now"
