"""Which vLLM key the keyguard presents to each model server while the key is being rotated.

vLLM reads its key once, at start, from ``VLLM_API_KEY`` (one key: several only through
``--api-key`` on its command line, where every local user could read them). So a new key
(``citadel secrets rotate vllm-api-key``) reaches vLLM only when it restarts, one model
server after another, while the keyguard takes the new ``vllm.env`` at once on its reload.
Presenting the new key to a vLLM that has not restarted yet would fail every request
with vLLM's 401 until it has.

So the keyguard holds two keys during a rotation: the one in force (its ``vllm.env``) and
the one before it (remembered across the reload, never written anywhere). To each model
server it presents the key that server accepts:

- a server it has not seen since the key changed (a new socket: vLLM started again) is
  first asked a cheap authenticated ``GET /v1/models`` with the new key; it gets the new key
  only once it accepts it, the old one otherwise;
- what a server accepted is remembered per socket (path, inode, change time), so a restart,
  which makes a new socket, is asked again;
- should a server still answer 401 (it restarted between the question and the request),
  the request is sent once more with the other key: vLLM checks the key before anything
  else, so no generation had begun.

The old key is dropped at the next change, or `RETIRE_SECONDS` after the new one arrived
(vLLM restarts take minutes; the rotation's default grace is the same hour). With one key
held (no rotation under way) nothing is asked or retried: the key goes as it always did.

Threat: a rotation of the model server's key failing requests (availability), without
widening who can reach vLLM (the keys stay in the keyguard's memory and vLLM's environment).

Example (the keyguard's forward, with `self.upstream_keys = UpstreamKeys()`)::

    response = await self.upstream_keys.request(pool, self.secrets.upstream_key, head.method,
                                                head.target, headers, body, UPSTREAM_SECONDS)
"""

from __future__ import annotations

import os
import time

RETIRE_SECONDS = 3600
PROBE_SECONDS = 5  # vLLM answers /v1/models from memory: a server slower than this gets the new key
PROBE_PATH = "/v1/models"
UNAUTHORIZED = 401


def server_identity(address) -> tuple:
    """What names one running model server: its socket file as it is now, or HOST:PORT."""
    if getattr(address, "scheme", None) == "unix":
        try:
            info = os.stat(address.path)
        except OSError:
            return (address.path,)
        return (address.path, info.st_ino, info.st_ctime_ns)
    return (address.host, address.port)


def bearer(headers: list[tuple[str, str]], key: str | None) -> list[tuple[str, str]]:
    return [*headers, ("Authorization", f"Bearer {key}")] if key else list(headers)


class UpstreamKeys:
    """The key in force, the one before it during a rotation, and which one each server accepts."""

    def __init__(self, clock=time.monotonic):
        self.clock = clock
        self.current: str | None = None
        self.previous: str | None = None
        self.changed_at = 0.0
        self.accepted: dict[tuple, str] = {}

    def hold(self, key: str | None) -> None:
        """Take the key in force now; a different one makes the held key the fallback.

        None (the file could not be read on a reload) keeps what is held: the model servers
        still have it, so presenting nothing would only turn every request into a 401.
        """
        if key and key != self.current:
            self.previous, self.current = self.current, key
            self.changed_at = self.clock()
            self.accepted.clear()
        if self.previous and self.clock() - self.changed_at > RETIRE_SECONDS:
            self.previous = None
            self.accepted.clear()

    @property
    def rotating(self) -> bool:
        return bool(self.previous and self.current)

    def order(self, server: tuple) -> list[str]:
        """The keys to present to `server`, the one it is known to accept first."""
        keys = [k for k in (self.current, self.previous) if k]
        known = self.accepted.get(server)
        return [known, *(k for k in keys if k != known)] if known in keys else keys

    async def probe(self, pool, server: tuple) -> None:
        """Ask `server` whether it accepts the new key; remember the answer when it is one."""
        try:
            response = await pool.request("GET", PROBE_PATH, bearer([], self.current), b"", PROBE_SECONDS)
            await response.read_all(1 << 20, PROBE_SECONDS)
        except Exception:  # noqa: BLE001 - no answer says nothing about the key: the request itself decides
            return
        if response.status == UNAUTHORIZED:
            self.accepted[server] = self.previous
        elif response.status < 500:
            self.accepted[server] = self.current

    async def request(self, pool, key_in_force: str | None, method: str, target: str,
                      headers: list[tuple[str, str]], body: bytes, timeout: float):
        """`pool.request` with the key the model server accepts (see the module docstring)."""
        self.hold(key_in_force)
        if not self.rotating:
            return await pool.request(method, target, bearer(headers, self.current), body, timeout)
        server = server_identity(pool.address)
        if server not in self.accepted:
            await self.probe(pool, server)
        keys = self.order(server)
        for attempt, key in enumerate(keys):
            response = await pool.request(method, target, bearer(headers, key), body, timeout)
            if response.status != UNAUTHORIZED:
                self.accepted[server] = key
                return response
            if attempt + 1 < len(keys):
                response.close()  # refused at the door: vLLM checks the key before any work
        return response
