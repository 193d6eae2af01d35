"""``citadel secrets``: status, rotation, and the gateway's client keys.

The Vault-side logic is in :mod:`deploy.secrets`; this module only parses options, calls
it, and prints. Secret values are printed in exactly one place: the new key of
``issue-client`` and ``rotate client-key``, once, on stdout.

Example::

    citadel secrets status -i site.yaml --json
    citadel secrets rotate transit-key model-data -i site.yaml
"""

from __future__ import annotations

import datetime as dt
import json
from enum import Enum
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli.common import (
    InventoryOption,
    JsonOption,
    TokenFileOption,
    err,
    fail,
    load_site,
    out,
    vault_call,
    vault_client,
)
from deploy.secrets import KINDS, client_keys, hosts, internal_key, tls, transit, vllm_key
from deploy.secrets.status import collect
from deploy.secrets.store import Store, vault_errors
from deploy.vault.bootstrap import seconds

AUTH_HELP = (
    "Server: BAO_ADDR or VAULT_ADDR, else the inventory's vault.address (https only). CA: BAO_CACERT or "
    "VAULT_CACERT, else vault.ca_file. Token (an operator's, never root in production): --token-file, else "
    "BAO_TOKEN or VAULT_TOKEN, else the file named by BAO_TOKEN_FILE or VAULT_TOKEN_FILE."
)

secrets_app = typer.Typer(
    help=(
        "Rotate and inspect the secrets Citadel manages in Vault/OpenBao: the internal model-server key, "
        "vLLM's own key, "
        "the gateway's client keys, transit keys and the hosts' TLS certificates; cut a host off "
        "(revoke-host) or let it back in (readmit-host). Old and new overlap during a rotation, so no request "
        "fails; every change is recorded (who, what, when). " + AUTH_HELP
    ),
    no_args_is_help=True,
)


class Kind(str, Enum):
    internal_api_key = "internal-api-key"
    vllm_api_key = "vllm-api-key"
    client_key = "client-key"
    transit_key = "transit-key"
    tls_cert = "tls-cert"


def _store(inventory, token_file):
    site = load_site(inventory)
    return site, Store(vault_client(site, token_file), site.vault.kv_mount)


def _grace(text: str) -> dt.timedelta:
    try:
        value = seconds(text)
    except ValueError:
        raise fail(f"--grace {text!r}: give a duration like 30m, 1h or 2d") from None
    if value <= 0:
        raise fail("--grace must be longer than 0: without an overlap, requests in flight would fail")
    return dt.timedelta(seconds=value)


def _progress(text: str) -> None:
    err.print(f"  {text}", highlight=False)


def _print_result(result, as_json: bool, key=None) -> None:
    """The outcome of one change; `key` (a new client key) is printed here, once, and nowhere else."""
    data = result.as_dict()
    if as_json:
        if key is not None:
            data["key"] = key.reveal()
        out.print_json(json.dumps(data))
        return
    version = f"; version {result.version}" if result.version else ""
    phase = "current" if result.phase == "done" else result.phase
    out.print(f"{result.kind} {result.name}: {result.action} complete{version} ({phase})", highlight=False)
    if result.overlap_until:
        out.print(f"  the previous key is still accepted until {result.overlap_until}", highlight=False)
    for note in result.notes:
        out.print(f"  {note}", highlight=False)
    if key is not None:
        err.print("[bold yellow]The new key is shown once, now; only its hash is stored. Give it to the client:[/]")
        out.print(key.reveal(), highlight=False, soft_wrap=True)


def _short(stamp: str | None) -> str:
    """An ISO time as 'YYYY-MM-DD HH:MM' (UTC) for tables; JSON keeps the full value."""
    return stamp[:16].replace("T", " ") if stamp else "-"


@secrets_app.command("status")
def secrets_status(inventory: InventoryOption, token_file: TokenFileOption = None, as_json: JsonOption = False) -> None:
    """Show every secret: version, age, expiry, rotation due date, hosts, last rotation.

    One row per secret Citadel manages: the internal model-server key, vLLM's own key, each gateway client
    key, each transit key, each host group's identities (the certificates the hosts' agents
    log in with, renewed by them; revoked hosts are named), TLS certificates and the PKI
    root CA. A
    secret is *due* when it is older than the site's rotation policy
    (settings.transit_key_max_age_days, 90 days by default) or about to expire; *overlap*
    means a rotation is waiting for `rotate ... --finish`; *rotating* means one stopped
    midway and must be re-run. No secret value is shown.

    Exit 0 when nothing is due, unfinished or missing; 1 when something is; 2 on bad input.

    Example: `citadel secrets status -i site.yaml --json`
    """
    site, store = _store(inventory, token_file)

    def gather():
        with vault_errors("secrets status", "citadel secrets status"):
            return collect(store, site)

    rows = vault_call(gather)
    attention = [r for r in rows if r["due"] or r["phase"] in ("rotating", "missing")]
    if as_json:
        out.print_json(json.dumps({"site": site.site, "secrets": rows, "attention": len(attention)}))
    else:
        table = Table(title=f"Secrets of {site.site}", title_justify="left")
        for column in ("kind", "name", "version", "age (d)", "rotate by", "phase", "hosts", "last rotation"):
            # Kind and name stay whole (they are what an operator types next); the rest folds.
            table.add_column(column, overflow="fold", no_wrap=column in ("kind", "name"))
        for r in rows:
            last = r["last_rotation"]
            phase = f"[red]{r['phase']}[/]" if r["phase"] in ("rotating", "missing") else r["phase"]
            rotate_by = f"[red]{_short(r['rotate_by'])} (due)[/]" if r["due"] else _short(r["rotate_by"])
            table.add_row(
                r["kind"], r["name"], str(r["version"]), "-" if r["age_days"] is None else str(r["age_days"]),
                rotate_by, phase, ", ".join(r["hosts"]) or "-",
                f"{last['action']} {_short(last['at'])} by {last['by']}" if last else "-",
            )
        out.print(table)
    raise typer.Exit(1 if attention else 0)


@secrets_app.command("issue-client")
def secrets_issue_client(
    name: Annotated[str, typer.Argument(help="The client's name (lower-case letters, digits, '.', '_', '-').")],
    inventory: InventoryOption,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a gateway client and print its API key, once.

    The key (256 random bits, prefixed `ck_`) is printed on stdout and never stored: Vault
    keeps only its SHA-256 and a short public key id in KV at gateway/client-keys, which
    the gateway reads to recognise it. Lost keys are replaced with `rotate client-key NAME`.

    Exit 0 when created, 1 when Vault failed (nothing was stored: re-run), 2 on bad input
    (an existing client, a bad name).

    Example: `citadel secrets issue-client radiology-reporting -i site.yaml`
    """
    _, store = _store(inventory, token_file)
    key, result = vault_call(client_keys.issue, store, name)
    _print_result(result, as_json, key)


@secrets_app.command("revoke-client")
def secrets_revoke_client(
    name: Annotated[str, typer.Argument(help="The client to remove.")],
    inventory: InventoryOption,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Remove a gateway client: its keys stop working at once (no grace period).

    Exit 0 when removed, 1 when Vault failed (re-run), 2 when there is no such client.

    Example: `citadel secrets revoke-client radiology-reporting -i site.yaml`
    """
    _, store = _store(inventory, token_file)
    _print_result(vault_call(client_keys.revoke, store, name), as_json)


@secrets_app.command("rotate")
def secrets_rotate(
    kind: Annotated[Kind, typer.Argument(help="What to rotate.", case_sensitive=False)],
    name: Annotated[
        str | None,
        typer.Argument(help="client-key: the client; transit-key: the key (model-data, model-signing, audit-chain, store-volume); "
                       "tls-cert: the group (gpu, gateway).", show_default=False),
    ] = None,
    inventory: InventoryOption = ...,
    finish: Annotated[
        bool, typer.Option("--finish", help="End the overlap: the previous secret stops working.")
    ] = False,
    grace: Annotated[
        str, typer.Option("--grace", help="API keys: how long the previous key stays accepted (e.g. 30m, 1h, 2d).")
    ] = "1h",
    wait: Annotated[
        float, typer.Option("--wait", min=1, help="tls-cert: seconds to wait for every host's agent to issue its new certificate.")
    ] = 180,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rotate a secret without a failed request: new and old overlap until --finish.

    Kinds:

    * `internal-api-key`: the key the gateway presents to vLLM; both sides accept the old
      key until --finish or the grace expiry.
    * `vllm-api-key`: vLLM's own key, which each GPU host's keyguard presents to it. vLLM
      takes one key, at start: the GPU hosts' agents render the new key within 30 s, which
      reloads the keyguard and restarts vLLM; until a vLLM accepts the new key, its
      keyguard keeps presenting the old one (remembered, never stored again). --finish
      (after the grace, once every GPU host's vLLM has restarted) ends the overlap; a new
      rotation is refused while it is open.
    * `client-key NAME`: a gateway client's key; the new one is printed once, the old one
      works until --finish or the grace expiry.
    * `transit-key NAME`: rotates the transit key; for model-data every stored model data
      key is rewrapped, and --finish raises min_decryption_version so old ciphertexts are
      refused. model-signing and audit-chain keep old versions for verification;
      store-volume keeps them so the hosts' wrapped LUKS volume keys still open.
    * `tls-cert GROUP`: every host of the group has its agent issue a new certificate (the
      private key never leaves the host) and reload its service; the command waits until
      PKI shows them all (--wait). --finish revokes the previous certificates.

    Each rotation records its intent before changing anything and resumes where it
    stopped when run again: if Vault fails midway the command exits 1, names the secret,
    and says what to re-run; the old secret still works. Every step is appended to the
    rotation trail in KV (who, from the token's display name and the OS user; what;
    when; versions), shown by `citadel secrets status`.

    Exit 0 when done, 1 when Vault failed midway (re-run the same command), 2 on bad input
    or when a previous overlap must be finished first.

    Example: `citadel secrets rotate transit-key model-data -i site.yaml`, then once hosts
    have caught up, `citadel secrets rotate transit-key model-data -i site.yaml --finish`
    """
    needs_name = KINDS[kind.value]
    if needs_name and not name:
        raise fail(f"rotate {kind.value} needs a NAME (see --help)")
    if not needs_name and name:
        raise fail(f"rotate {kind.value} takes no NAME (got {name!r})")
    period = _grace(grace)
    site, store = _store(inventory, token_file)
    mount = site.vault.transit_mount
    key = None
    if kind is Kind.internal_api_key:
        action = internal_key.finish if finish else lambda s, progress: internal_key.rotate(s, period, progress)
        result = vault_call(action, store, progress=_progress)
    elif kind is Kind.vllm_api_key:
        action = vllm_key.finish if finish else lambda s, progress: vllm_key.rotate(s, period, progress)
        result = vault_call(action, store, progress=_progress)
    elif kind is Kind.client_key:
        if finish:
            result = vault_call(client_keys.finish, store, name)
        else:
            key, result = vault_call(client_keys.rotate, store, name, period)
    elif kind is Kind.transit_key:
        result = vault_call(transit.finish if finish else transit.rotate, store, mount, name, progress=_progress)
    elif finish:
        result = vault_call(tls.finish, store, site, name, progress=_progress)
    else:
        result = vault_call(tls.rotate, store, site, name, wait=wait, progress=_progress)
    _print_result(result, as_json, key)


@secrets_app.command("revoke-host")
def secrets_revoke_host(
    host: Annotated[str, typer.Argument(help="The host to cut off (its name in the inventory).")],
    inventory: InventoryOption,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Cut one host off from Vault and from its peers; it stays out across reboots.

    For a host that is lost, stolen or suspected compromised. In this order, each step safe
    to repeat: the host is recorded as revoked (the bootstrap and the vault-agent role then
    refuse it); its identity roles are deleted, so its agent's next login fails whatever it
    holds; its live tokens are revoked, so it loses Vault at once; every certificate the PKI
    issued to it is revoked and the CRL rebuilt, so the other hosts' agents render the new
    CRL within their render interval (30 s) and the gateway and the keyguards refuse it.

    What it had already rendered (its own TLS certificate, keys) stays on its disk: rotate
    the secrets it could read (`rotate internal-api-key`, and for a gateway host the client
    keys and `transit-key audit-chain`) if it may be in the wrong hands. The other hosts keep
    serving throughout.

    Exit 0 when revoked (also when it already was: the steps are re-checked), 1 when Vault
    failed midway (re-run the same command), 2 when the host is not in the inventory.

    Example: `citadel secrets revoke-host gpu2 -i site.yaml`
    """
    site, store = _store(inventory, token_file)
    result = vault_call(hosts.revoke, store.client, store, site, host)
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
        return
    again = " (it already was: checked again)" if result.already else ""
    out.print(f"host {host}: revoked{again}; {len(result.roles)} identity role(s) deleted, {result.tokens} token(s) "
              f"and {result.certificates} certificate(s) revoked", highlight=False)
    out.print(f"  its peers refuse it within 30 s; `citadel secrets readmit-host {host}` lets it back in",
              highlight=False)


@secrets_app.command("readmit-host")
def secrets_readmit_host(
    host: Annotated[str, typer.Argument(help="The revoked host to let back in.")],
    inventory: InventoryOption,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Let a host cut off by `revoke-host` back in (after it was rebuilt or found safe).

    Removes the revocation record and makes the host's identity roles again. The host gets
    a new identity from the next deploy of the vault-agent role
    (`citadel deploy -i site.yaml --limit HOST`); its old certificates stay revoked.

    Exit 0 when readmitted (also when it was not revoked), 1 when Vault failed (re-run),
    2 when the host is not in the inventory.

    Example: `citadel secrets readmit-host gpu2 -i site.yaml`
    """
    site, store = _store(inventory, token_file)
    was = vault_call(hosts.readmit, store.client, store, site, host)
    if as_json:
        out.print_json(json.dumps({"host": host, "was_revoked": was}))
        return
    state = "readmitted" if was else "was not revoked; its identity roles are in place"
    out.print(f"host {host}: {state}; deploy it to give it a new identity: citadel deploy -i INVENTORY --limit {host}",
              highlight=False)
