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
from rich.markup import escape
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
    batch_size: Annotated[
        int | None,
        typer.Option("--batch-size", min=1, max=64, metavar="N",
                     help="Take at most N replicas of a model out at once (never all). "
                     "Default: the inventory's settings.rolling_batch_size (1)."),
    ] = None,
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

    Rolling: a model served by several GPU hosts keeps serving. Their hosts are deployed in
    waves that take at most --batch-size of the model's replicas out at once, never all of
    them; every other host goes in the first wave. Before the next wave starts, each host of
    a wave that changed must have its model servers active (vLLM answered a real completion)
    and be back in every gateway's rotation (the gateway's metrics, read on the gateway host),
    within settings.rolling_ready_seconds. A failed wave, or a host that is not ready in time,
    stops the roll: later hosts are left untouched, and the message names the host and what
    was not ready. --dry-run lists the waves in order (with --json: "waves").

    Exit 0 when every host succeeded, 1 when any host failed or was unreachable or the roll
    stopped, 2 on bad input (nothing is done).

    Examples: `citadel deploy -i inventory/lab.yaml --role base --dry-run`;
    `citadel deploy -i site.yaml --role vllm --batch-size 2`
    """
    # pyinfra takes longer to import than the rest of the CLI together: only commands that connect load it.
    from deploy.connection import DeployError, select_hosts
    from deploy.rolling import roll
    from deploy.runner import configure_logging, select_roles

    site = load_site(inventory)
    vault = Access(lambda: resolve(site.vault, token_file))
    try:
        roles = select_roles(role)
        hosts = select_hosts(site, limit)
    except DeployError as exc:
        raise fail(str(exc)) from None
    configure_logging(verbose, RichHandler(console=err, show_time=False, show_path=False, markup=False))
    with RichDeployListener(err) as listener:
        report = roll(
            site, [r.name for r in roles], limit=hosts, batch_size=batch_size, dry_run=dry_run, verbosity=verbose,
            diff=diff, listener=listener, vault=vault,
        )
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
    else:
        _print_deploy_table(report)
        _print_waves(report)
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


def _print_waves(report) -> None:
    """The roll's waves in order (a deploy with nothing to roll has one wave, not shown)."""
    rolled = len(report.waves) > 1 or any(w.taken_out for w in report.waves)
    if rolled:
        out.print("Rolling order:" if report.dry_run else "Waves:", highlight=False)
        for number, wave in enumerate(report.waves, 1):
            status = "" if report.dry_run else f": {wave.status}"
            out.print(f"  wave {number}: {escape(wave.describe())}{status}", highlight=False)
    if report.stopped:
        err.print(f"[red]roll stopped:[/] {escape(redact(report.stopped))}", highlight=False)
