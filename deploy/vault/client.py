"""Connect to Vault/OpenBao: where it is, which CA to trust, which token to use.

Precedence (the most specific source wins; a token never comes from the command line,
where every user of the machine could read it in /proc/*/cmdline):

- address: ``BAO_ADDR`` or ``VAULT_ADDR``, else the inventory's ``vault.address``.
  Only https:// is accepted.
- CA bundle: ``BAO_CACERT`` or ``VAULT_CACERT``, else the inventory's ``vault.ca_file``,
  else the system's trust store.
- token: the file named by ``--token-file``, else ``BAO_TOKEN`` or ``VAULT_TOKEN``, else
  the file named by ``BAO_TOKEN_FILE`` or ``VAULT_TOKEN_FILE``. A token file must not be
  readable by group or others (like ssh's private keys).

When both the BAO_ and the VAULT_ name of a variable are set to different values the
choice is ambiguous, and it is refused rather than guessed.

Example::

    >>> settings = resolve(site.vault, env={"VAULT_TOKEN_FILE": "/root/.citadel-token"})  # doctest: +SKIP
    >>> settings.address
    'https://vault.sec.st-example.org:8200'
    >>> client = connect(settings)                                                        # doctest: +SKIP
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from deploy.redaction import Secret
from deploy.vault import VaultError


@dataclass(frozen=True)
class Settings:
    """Where and how to connect; `token_source` says where the token came from (not what it is)."""

    address: str
    ca_file: Path | None
    token: Secret
    token_source: str


def _env(env: Mapping[str, str], suffix: str) -> tuple[str, str] | None:
    """(variable name, value) of BAO_<suffix> or VAULT_<suffix>; refuse two different values."""
    found = [(name, env[name]) for name in (f"BAO_{suffix}", f"VAULT_{suffix}") if env.get(name, "").strip()]
    if len({value.strip() for _, value in found}) > 1:
        raise VaultError(
            f"BAO_{suffix} and VAULT_{suffix} are both set, to different values: unset one", exit_code=2
        )
    return (found[0][0], found[0][1].strip()) if found else None


def check_address(address: str, source: str) -> str:
    """`address` without a trailing slash, if it is an https URL with a host."""
    parts = urlsplit(address)
    if parts.scheme != "https":
        raise VaultError(
            f"{source}: Vault must be reached over https, got {address!r} (plain http would expose secrets)",
            exit_code=2,
        )
    if not parts.hostname or parts.path not in ("", "/") or parts.query or parts.fragment:
        raise VaultError(f"{source}: expected an address like https://vault.example.org:8200, got {address!r}", exit_code=2)
    return address.rstrip("/")


def read_token_file(path: Path, source: str) -> Secret:
    """The token in `path`, refusing a file others could read."""
    path = Path(path).expanduser()
    try:
        info = path.stat()
        text = path.read_text().strip()
    except FileNotFoundError:
        raise VaultError(f"{source}: token file {path} does not exist", exit_code=2) from None
    except (PermissionError, IsADirectoryError) as exc:
        raise VaultError(f"{source}: cannot read token file {path} ({exc.strerror})", exit_code=2) from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise VaultError(
            f"{source}: token file {path} is readable by others (mode {stat.S_IMODE(info.st_mode):04o}): "
            "make it 0600",
            exit_code=2,
        )
    if not text:
        raise VaultError(f"{source}: token file {path} is empty", exit_code=2)
    return Secret(text)


def resolve(vault=None, token_file: Path | None = None, env: Mapping[str, str] | None = None) -> Settings:
    """Settings from the inventory's `vault` block (or None), an optional token file, and `env`."""
    env = os.environ if env is None else env

    from_env = _env(env, "ADDR")
    if from_env:
        address = check_address(from_env[1], from_env[0])
    elif vault is not None:
        address = check_address(str(vault.address), "inventory vault.address")
    else:
        raise VaultError("no Vault address: set BAO_ADDR (or VAULT_ADDR), or vault.address in the inventory", exit_code=2)

    ca_env = _env(env, "CACERT")
    if ca_env:
        ca_file, ca_source = Path(ca_env[1]).expanduser(), ca_env[0]
    elif vault is not None and vault.ca_file is not None:
        ca_file, ca_source = Path(vault.ca_file).expanduser(), "inventory vault.ca_file"
    else:
        ca_file, ca_source = None, ""
    if ca_file is not None and not ca_file.is_file():
        raise VaultError(f"{ca_source}: CA file {ca_file} does not exist", exit_code=2)

    if token_file is not None:
        token, source = read_token_file(token_file, "--token-file"), f"--token-file {token_file}"
    elif (value := _env(env, "TOKEN")) is not None:
        token, source = Secret(value[1]), value[0]
    elif (named := _env(env, "TOKEN_FILE")) is not None:
        token, source = read_token_file(Path(named[1]), named[0]), f"{named[0]} ({named[1]})"
    else:
        raise VaultError(
            "no Vault token: set BAO_TOKEN or VAULT_TOKEN in the environment, or point --token-file, "
            "BAO_TOKEN_FILE or VAULT_TOKEN_FILE at a 0600 file holding it (never pass a token as an argument)",
            exit_code=2,
        )
    return Settings(address=address, ca_file=ca_file, token=token, token_source=source)


def connect(settings: Settings, timeout: float = 30):
    """An authenticated hvac.Client, after checking the server answers and accepts the token."""
    import hvac  # heavy: imported late, so `citadel --help` stays fast
    import requests

    client = hvac.Client(
        url=settings.address,
        token=settings.token.reveal(),  # handed over in-process, never through argv or a log
        verify=str(settings.ca_file) if settings.ca_file else True,
        timeout=timeout,
    )
    try:
        health = client.sys.read_health_status(method="GET")
    except requests.exceptions.SSLError:
        raise VaultError(
            f"TLS verification of {settings.address} failed: point BAO_CACERT / VAULT_CACERT or the "
            "inventory's vault.ca_file at the CA that signed its certificate"
        ) from None
    except requests.exceptions.RequestException as exc:
        raise VaultError(
            f"cannot reach Vault at {settings.address} ({type(exc).__name__}): check that it runs, "
            "or set BAO_ADDR / VAULT_ADDR or the inventory's vault.address"
        ) from None
    body = health.json() if hasattr(health, "json") else health
    if isinstance(body, dict) and body.get("sealed"):
        raise VaultError(f"Vault at {settings.address} is sealed: unseal it first")
    try:
        client.auth.token.lookup_self()
    except (hvac.exceptions.Forbidden, hvac.exceptions.Unauthorized):
        raise VaultError(
            f"Vault at {settings.address} refused the token from {settings.token_source}: it is wrong, expired or revoked"
        ) from None
    return client


class Access:
    """Vault for a deploy: connected on first use, so roles that need no Vault never ask for it.

    Roles reach it as ``host.data.citadel_vault`` (see ``deploy.runner``).

    Example::

        >>> access = Access(lambda: resolve(site.vault))          # doctest: +SKIP
        >>> access.client.sys.read_health_status(method="GET")     # doctest: +SKIP
    """

    def __init__(self, settings_factory):
        self._settings_factory = settings_factory
        self._settings: Settings | None = None
        self._client = None

    @property
    def settings(self) -> Settings:
        if self._settings is None:
            self._settings = self._settings_factory()
        return self._settings

    @property
    def client(self):
        if self._client is None:
            self._client = connect(self.settings)
        return self._client
