"""Citadel's own records in KV v2: rotation state, the trail, and Vault errors made plain.

Paths under the inventory's KV mount (host policies read only ``gpu/*`` and ``gateway/*``,
so everything under ``admin/`` is for operators alone):

- ``admin/rotation/<kind>/<name>``: the state of the last or current rotation;
- ``admin/trail/<time>-<kind>-<name>``: one record per completed rotation step (who, what,
  when, versions), never rewritten;
- the secrets themselves, at the paths each kind's module documents.

Every write is check-and-set against the version that was read, so two operators rotating
the same secret at once cannot both win: the second is told to re-run.

Example::

    >>> store = Store(client, site.vault.kv_mount)                # doctest: +SKIP
    >>> doc, version = store.read("gpu/internal-api-key")         # doctest: +SKIP
    >>> store.write("gpu/internal-api-key", doc, version)         # doctest: +SKIP
"""

from __future__ import annotations

import datetime as dt
import getpass
import secrets as pysecrets
from contextlib import contextmanager

from deploy.vault import VaultError

STATE_PREFIX = "admin/rotation"
TRAIL_PREFIX = "admin/trail"


def now() -> dt.datetime:
    return dt.datetime.now(dt.UTC).replace(microsecond=0)


def stamp(when: dt.datetime | None = None) -> str:
    """An ISO 8601 UTC time, as every record stores it."""
    return (when or now()).isoformat()


def parse_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    value = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=dt.UTC)


class Store:
    """KV v2 reads and check-and-set writes under one mount, and who is acting."""

    def __init__(self, client, mount: str):
        self.client = client
        self.mount = mount
        self._actor: dict | None = None

    def read(self, path: str) -> tuple[dict | None, int]:
        """(data, version) at `path`; (None, 0) when nothing is there."""
        import hvac  # heavy: imported late, so `citadel --help` stays fast

        try:
            response = self.client.secrets.kv.v2.read_secret_version(
                path, mount_point=self.mount, raise_on_deleted_version=True
            )
        except hvac.exceptions.InvalidPath:
            return None, 0
        return response["data"]["data"], int(response["data"]["metadata"]["version"])

    def write(self, path: str, data: dict, version: int) -> int:
        """Write `data` if `path` is still at `version` (0: must not exist); the new version."""
        response = self.client.secrets.kv.v2.create_or_update_secret(path, data, cas=version, mount_point=self.mount)
        return int(response["data"]["version"])

    def list(self, prefix: str) -> list[str]:
        import hvac  # heavy: imported late, so `citadel --help` stays fast

        try:
            return sorted(self.client.secrets.kv.v2.list_secrets(prefix, mount_point=self.mount)["data"]["keys"])
        except hvac.exceptions.InvalidPath:
            return []

    def actor(self) -> dict:
        """Who is acting: the token's display name and entity (never the token), and the OS user."""
        if self._actor is None:
            data = self.client.auth.token.lookup_self()["data"]
            self._actor = {
                "display_name": data.get("display_name") or "",
                "entity_id": data.get("entity_id") or "",
                "policies": sorted(data.get("policies") or []),
                "os_user": getpass.getuser(),
            }
        return self._actor

    # -- rotation state and trail ------------------------------------------------------

    def state(self, kind: str, name: str) -> tuple[dict, int]:
        data, version = self.read(f"{STATE_PREFIX}/{kind}/{name}")
        return data or {}, version

    def save_state(self, kind: str, name: str, state: dict, version: int) -> int:
        return self.write(f"{STATE_PREFIX}/{kind}/{name}", state, version)

    def record(self, kind: str, name: str, action: str, **details) -> dict:
        """Append one record to the trail: who did `action` to which secret, when, versions."""
        entry = {"kind": kind, "name": name, "action": action, "at": stamp(), "by": self.actor(), **details}
        # Time to the microsecond first, so the listing sorts chronologically even for
        # records made within one second; a random tail keeps keys unique.
        precise = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S.%fZ")
        key = f"{precise}-{kind}-{name}-{pysecrets.token_hex(3)}"
        self.write(f"{TRAIL_PREFIX}/{key}", entry, 0)
        return entry

    def trail(self, limit: int | None = None) -> list[dict]:
        keys = self.list(TRAIL_PREFIX)
        chosen = keys[-limit:] if limit else keys
        return [self.read(f"{TRAIL_PREFIX}/{key}")[0] or {} for key in chosen]


@contextmanager
def vault_errors(secret: str, rerun: str):
    """Turn a Vault failure during work on `secret` into a VaultError saying what to re-run.

    Messages name the secret and the command, never a value: hvac's text is the server's
    error list, which names paths and reasons only.
    """
    import hvac  # heavy: imported late, so `citadel --help` stays fast
    import requests

    again = f"re-run `{rerun}` (it resumes where it stopped)"
    try:
        yield
    except VaultError:
        raise
    except requests.RequestException as exc:
        raise VaultError(
            f"{secret}: lost the connection to Vault ({type(exc).__name__}) midway; the old secret still "
            f"works. When Vault is back, {again}"
        ) from None
    except hvac.exceptions.VaultDown:
        raise VaultError(f"{secret}: Vault is sealed or down; the old secret still works. Unseal it, then {again}") from None
    except hvac.exceptions.Forbidden:
        raise VaultError(
            f"{secret}: permission denied: rotation needs an operator's token allowed to manage {secret}"
        ) from None
    except hvac.exceptions.InvalidRequest as exc:
        if "check-and-set" in str(exc):
            raise VaultError(f"{secret}: changed by someone else while rotating; {again}") from None
        raise VaultError(f"{secret}: Vault refused a step ({exc}); {again}") from None
    except hvac.exceptions.VaultError as exc:
        raise VaultError(f"{secret}: Vault refused a step ({exc}); {again}") from None
