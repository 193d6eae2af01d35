"""How many connections the gateway holds, in total and per source address, and for how long.

Counted when a connection is accepted, before its TLS handshake: a connection over either
limit is closed at once, so no source can hold more than ``per_source`` of the gateway's
descriptors, and all of them together no more than ``total`` (well under the unit's
descriptor limit, so ``accept()`` itself never fails for a real client). Every step of a
connection then has a total deadline (`Deadlines`): the handshake, the wait for a request,
the head once it has started, the body, and the drain of a refused body. None is per read:
a byte every few seconds does not keep a connection alive.

Example::

    >>> limits = ConnectionLimits(total=3, per_source=2)
    >>> [limits.open("10.0.0.5") for _ in range(3)]
    [None, None, 'per source']
    >>> limits.open("10.0.0.6"), limits.open("10.0.0.7")
    (None, 'total')
    >>> limits.close("10.0.0.5"); limits.open("10.0.0.7")
"""

from __future__ import annotations

from dataclasses import dataclass


class ConnectionLimits:
    def __init__(self, total: int = 1024, per_source: int = 64):
        self.total = total
        self.per_source = per_source
        self.by_source: dict[str, int] = {}
        self.count = 0

    def open(self, source: str) -> str | None:
        """None when the connection may stay (the caller must `close` it later), else which limit it hit."""
        if self.count >= self.total:
            return "total"
        held = self.by_source.get(source, 0)
        if held >= self.per_source:
            return "per source"
        self.by_source[source] = held + 1
        self.count += 1
        return None

    def close(self, source: str) -> None:
        held = self.by_source.get(source, 0) - 1
        if held > 0:
            self.by_source[source] = held
        else:
            self.by_source.pop(source, None)  # the table holds only sources with connections open
        self.count = max(0, self.count - 1)


@dataclass(frozen=True)
class Deadlines:
    """Total seconds each step of a connection may take (the configuration's ``*_seconds`` keys)."""

    handshake: float = 10  # TLS, from accept
    head: float = 10  # a request head, from its first byte (and a new connection's first byte)
    idle: float = 30  # a keep-alive connection waiting for its next request's first byte
    body: float = 30  # an admitted request's body
    drain: float = 5  # a refused request's body, read and dropped so the client gets the answer

    @classmethod
    def from_config(cls, config: dict) -> Deadlines:
        return cls(**{name: float(config[f"{name}_seconds"]) for name in cls.__dataclass_fields__
                      if f"{name}_seconds" in config})
