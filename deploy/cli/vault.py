"""``citadel vault``: set up what Citadel needs on a Vault/OpenBao server, or run an embedded one.

The work is in :mod:`deploy.vault` (bootstrap, embedded server) and :mod:`hardening.vault`
(the server's own audit); this module parses options, calls them and prints.

Example::

    citadel vault serve --dir /tmp/vault --port 8200
    VAULT_TOKEN_FILE=~/.citadel/admin.token citadel vault bootstrap -i site.yaml --dry-run
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli.common import (
    InventoryOption,
    JsonOption,
    TokenFileOption,
    err,
    load_site,
    out,
    vault_call,
    vault_client,
)
from deploy.cli.lab import lab_call
from deploy.lab import vault_address as lab_vault_address
from deploy.vault.bootstrap import bootstrap
from deploy.vault.client import connect, resolve

vault_app = typer.Typer(
    help=(
        "Vault / OpenBao: set up what Citadel needs on a server (`bootstrap`), or run an embedded "
        "OpenBao server to try Citadel (`serve`, `stop`)."
    ),
    no_args_is_help=True,
)

VaultDirOption = Annotated[
    Path | None,
    typer.Option(
        "--dir",
        help="Directory of the embedded server (data, config, keys, audit log). "
        "Default: /var/lib/citadel-vault as root, else ~/.local/share/citadel/vault.",
        show_default=False,
    ),
]


@vault_app.command("serve")
def vault_serve(
    directory: VaultDirOption = None,
    port: Annotated[
        int, typer.Option("--port", "-p", help="TCP port on 127.0.0.1 (the cluster port is PORT+1).")
    ] = 8200,
    lab: Annotated[
        bool,
        typer.Option(
            "--lab",
            help="Also listen on the address where the running lab's hosts reach this machine "
            "(written by `citadel lab up` into the lab inventory's vault.address).",
        ),
    ] = False,
) -> None:
    """Run an embedded OpenBao server on 127.0.0.1, initialised and unsealed. NOT FOR PRODUCTION.

    Writes an HCL config into DIR (raft storage under DIR/data, a TLS listener on
    127.0.0.1:PORT with a certificate from a CA made for it, DIR/ca.pem for clients, and a
    file audit device logging to DIR/audit/audit.log), starts `bao server` in the
    background (pid in DIR/bao.pid), initialises it with one key share and unseals it.
    The unseal key and root token are kept in DIR/unseal.key and DIR/root.token (mode
    0600): on the same disk as the data, which is why this mode is only for trying
    Citadel. Nothing secret is printed.

    With --lab it also listens on the lab's Vault address (the first host link's address on
    this machine; every lab host has a route to it and nowhere else), so the hosts' Vault
    agents can reach it; its certificate names that address too.

    Running it again is safe: a running, unsealed server is left alone; a stopped one is
    started and unsealed from the stored key.

    Exit 0 when the server runs and is unsealed, 1 when it could not be started, 2 on bad
    input (a port already used by this DIR's server on another port).

    Example: `citadel vault serve --dir /tmp/vault --port 8200`, then
    `export BAO_ADDR=https://127.0.0.1:8200 BAO_CACERT=/tmp/vault/ca.pem VAULT_TOKEN_FILE=/tmp/vault/root.token`
    """
    # requests and cryptography.x509 add a tenth of a second to every `citadel --help`: loaded when used.
    from deploy.vault.server import WARNING, serve

    err.print(f"[bold yellow]warning:[/] {WARNING}", highlight=False, soft_wrap=True)
    also: tuple[str, ...] = ()
    if lab:
        also = (lab_call(lab_vault_address),)
    with err.status("starting the embedded OpenBao server"):
        vault = vault_call(serve, directory, port, also)
    if vault.changed:
        for action in vault.actions:
            err.print(f"  {action}", highlight=False)
    else:
        err.print("  already running and unsealed: nothing to do", highlight=False)
    out.print(f"OpenBao at {vault.address} (pid {vault.pid})", highlight=False)
    out.print(f"  CA certificate: {vault.ca_file}", highlight=False)
    out.print(f"  root token file: {vault.token_file} (0600; never printed)", highlight=False)
    out.print(f"  audit log: {vault.audit_log}", highlight=False)
    out.print(
        f"to use it: export BAO_ADDR={vault.address} BAO_CACERT={vault.ca_file} VAULT_TOKEN_FILE={vault.token_file}",
        highlight=False,
        soft_wrap=True,
    )


@vault_app.command("stop")
def vault_stop(directory: VaultDirOption = None) -> None:
    """Stop the embedded OpenBao server of DIR; leave no process behind.

    The data, keys and audit log stay in DIR: `citadel vault serve` starts and unseals it
    again. Exit 0 when no server of DIR runs afterwards (also when none was running).
    """
    # slow to import, as in vault_serve
    from deploy.vault.server import default_directory, stop

    stopped = vault_call(stop, directory)
    where = directory or default_directory()
    out.print(f"stopped the embedded server of {where}" if stopped else f"no embedded server of {where} was running")


@vault_app.command("bootstrap")
def vault_bootstrap(
    inventory: InventoryOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; change nothing.")] = False,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="File (mode 0600) holding an administrator's token. Tokens are never taken as arguments.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Set up exactly what Citadel needs on a Vault or OpenBao server, idempotently.

    Manages, with names from the inventory's `vault` block: a KV v2 mount; a transit mount
    with keys `model-data` (aes256-gcm96), `model-signing` (ecdsa-p256), `audit-chain`
    (hmac) and `store-volume` (aes256-gcm96, LUKS volume keys), none exportable or
    deletable; a PKI mount with an internal root CA and roles
    `host` and `gateway` for short-lived certificates of the inventory's own names, and
    `agent-gpu`, `agent-gateway` for the hosts' identities; a cert auth mount with one role
    per host and group (GROUP-HOST: that host's identity only, tokens bound to its address,
    the policies in deploy/vault/policies/), none for a host revoked by `citadel secrets
    revoke-host`. Lifetimes come from the inventory's vault.lifetimes. Each item is reported as
    created, updated, unchanged or removed (the identity role of a host no longer in the
    inventory); a second run changes nothing.

    Server: BAO_ADDR or VAULT_ADDR, else the inventory's vault.address (https only). CA:
    BAO_CACERT or VAULT_CACERT, else vault.ca_file. Token: --token-file, else BAO_TOKEN or
    VAULT_TOKEN, else the file named by BAO_TOKEN_FILE or VAULT_TOKEN_FILE.

    Exit 0 when done (or, with --dry-run, planned), 1 when the server is unreachable or
    refused a step, 2 on bad input (inventory, missing token, http address).

    Example: `VAULT_TOKEN_FILE=~/.citadel/admin.token citadel vault bootstrap -i site.yaml --dry-run`
    """
    site = load_site(inventory)
    settings = vault_call(resolve, site.vault, token_file)
    client = vault_call(connect, settings)
    report = vault_call(bootstrap, client, site, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    verb = {"created": "would create", "updated": "would update", "removed": "would remove"} if dry_run else {}
    colour = {"created": "green", "updated": "yellow", "unchanged": "dim", "removed": "red"}
    table = Table(
        title=f"{'Dry run of the' if dry_run else 'The'} bootstrap of {report.address} ({report.flavor})",
        title_justify="left",
    )
    for column in ("kind", "name", "status", "detail"):
        table.add_column(column, overflow="fold")
    for item in report.items:
        status = verb.get(item.status, item.status)
        table.add_row(item.kind, item.name, f"[{colour[item.status]}]{status}[/]", item.detail)
    out.print(table)
    for note in report.notes:
        err.print(f"note: {note}", highlight=False)
    counts = report.counts()
    out.print(", ".join(f"{verb.get(k, k)} {n}" for k, n in counts.items()))


@vault_app.command("audit")
def vault_audit(inventory: InventoryOption, token_file: TokenFileOption = None, as_json: JsonOption = False) -> None:
    """Check the Vault/OpenBao server itself, read-only, through its API.

    Controls (each with a rationale and HIPAA 164.312, NIST SP 800-53 r5, OWASP LLM and
    threat references, in `hardening/vault/controls.py`): Vault reached over verified TLS
    only; an audit device enabled; no root token in use by Citadel; host identities with
    short TTLs, one host each, tokens bound to their hosts' addresses; no wildcard paths in Citadel's
    policies; transit keys younger than settings.transit_key_max_age_days, not
    exportable or deletable; the PKI root CA not near expiry; API keys
    rotated within the policy and no rotation stopped midway.

    Use an auditor's token (`hardening/vault/auditor.hcl` lists the reads it needs), not
    root: with a root token, vault-no-root-token fails, as it should. Server, CA and token
    are resolved as for `citadel vault bootstrap`.

    Exit 0 when every control passes, 1 when any fails, 2 when any check could not run
    (the reason is given) or on bad input.

    Example: `VAULT_TOKEN_FILE=~/.citadel/auditor.token citadel vault audit -i site.yaml --json`
    """
    # pydantic (the catalog's models) adds a tenth of a second to every `citadel --help`: loaded when used.
    from hardening.vault.facts import Facts
    from hardening.vault.run import exit_code, run_checks

    site = load_site(inventory)
    client = vault_client(site, token_file)
    results = run_checks(Facts(client, site))
    if as_json:
        out.print_json(json.dumps({"site": site.site, "address": client.url, "results": results}))
    else:
        colour = {"pass": "green", "fail": "red", "error": "yellow"}
        table = Table(title=f"Audit of Vault at {client.url}", title_justify="left")
        for column in ("control", "severity", "result", "evidence"):
            table.add_column(column, overflow="fold")
        for r in results:
            table.add_row(r["id"], r["severity"], f"[{colour[r['status']]}]{r['status']}[/]", r["evidence"])
        out.print(table)
    raise typer.Exit(exit_code(results))
