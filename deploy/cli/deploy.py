"""``citadel deploy``: apply roles to the hosts of an inventory, over SSH, in parallel.

The work is in :mod:`deploy.runner`; this module parses options, calls it and prints the
outcome per host.

Example::

    citadel deploy -i inventory/lab.yaml --role base --dry-run
"""

from __future__ import annotations

import json
from typing import Annotated

import typer
from rich.logging import RichHandler
from rich.table import Table

from deploy.cli.common import InventoryOption, JsonOption, TokenFileOption, err, fail, load_site, out
from deploy.progress import RichDeployListener
from deploy.redaction import redact
from deploy.vault.client import Access, resolve


def deploy_command(
    inventory: InventoryOption,
    role: Annotated[
        list[str] | None,
        typer.Option("--role", "-r", help="Run only this role (repeatable). Default: every role, in order."),
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", "-l", help="Only these hosts or groups (repeatable)."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Gather facts and show what would change; change nothing.")
    ] = False,
    diff: Annotated[bool, typer.Option("--diff", help="Show the diff of files that would change.")] = False,
    verbose: Annotated[
        int, typer.Option("--verbose", "-v", count=True, help="More output: -v no-ops, -vv commands, -vvv their output.")
    ] = 0,
    as_json: JsonOption = False,
    token_file: TokenFileOption = None,
) -> None:
    """Apply roles to the hosts of an inventory, over SSH, in parallel.

    Hosts are reached with the inventory's pinned host keys only. Each host's outcome is
    kept: an unreachable or failing host is reported and the others still complete. A
    second run on an unchanged host changes nothing. Secrets never appear in the output,
    at any verbosity.

    Three roles talk to Vault: vault-agent (a first identity certificate for each host whose
    agent must log in anew; agents renew it themselves), model-store (the signing public keys, for hosts that serve a
    model) and store-volume (a host's LUKS volume key, for hosts with model_store.luks).
    The address, CA and token are found as for `citadel vault bootstrap` (BAO_ADDR/VAULT_ADDR,
    BAO_CACERT/VAULT_CACERT, BAO_TOKEN/VAULT_TOKEN or a token file; never an argument).
    Other roles never ask for it.

    Exit 0 when every host succeeded, 1 when any host failed or was unreachable, 2 on bad
    input (nothing is done).

    Example: `citadel deploy -i inventory/lab.yaml --role base --dry-run`
    """
    # pyinfra takes longer to import than the rest of the CLI together: only commands that connect load it.
    from deploy.connection import DeployError, select_hosts
    from deploy.runner import configure_logging, run_deploy, select_roles

    site = load_site(inventory)
    vault = Access(lambda: resolve(site.vault, token_file))
    try:
        roles = select_roles(role)
        hosts = select_hosts(site, limit)
    except DeployError as exc:
        raise fail(str(exc)) from None
    configure_logging(verbose, RichHandler(console=err, show_time=False, show_path=False, markup=False))
    with RichDeployListener(err) as listener:
        report = run_deploy(
            site, [r.name for r in roles], limit=hosts, dry_run=dry_run, verbosity=verbose, diff=diff, listener=listener,
            vault=vault,
        )
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        _print_deploy_table(report)
    raise typer.Exit(0 if report.ok else 1)


def _print_deploy_table(report) -> None:
    verb = "would change" if report.dry_run else "changed"
    title = f"{'Dry run' if report.dry_run else 'Deploy'} of role(s) {', '.join(report.roles)}"
    table = Table(title=title, title_justify="left")
    for column in ("host", "status", verb, "unchanged", "failed", "skipped"):
        table.add_column(column, justify="left" if column in ("host", "status") else "right")
    colour = {"ok": "green", "failed": "red", "unreachable": "red"}
    for o in report.hosts.values():
        table.add_row(
            o.host, f"[{colour[o.status]}]{o.status}[/]", str(o.changed), str(o.unchanged), str(o.failed), str(o.skipped)
        )
    out.print(table)
    for o in report.hosts.values():
        for message in o.errors:
            err.print(f"[red]{o.host}:[/] {redact(message)}", highlight=False)
