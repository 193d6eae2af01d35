"""The ``citadel`` command: the root app, its command groups and ``main()``.

One module per command group (``inventory``, ``lab``, ``vault``, ``secrets``, ``model``,
``vllm``, ``audit-log``) or top-level command (``deploy``, ``audit``); what they share
(consoles, option types, error exits) is in :mod:`deploy.cli.common`.

``citadel --version`` prints the package version (and the commit, when run from a checkout).

Exit codes, for every command: 0 success; 1 the work ran but something on a host failed
(a failed operation, an unreachable host); 2 bad input (inventory, options), nothing done.
"""

from __future__ import annotations

import logging
import sys
from typing import Annotated

import typer

from deploy.cli.audit import audit_command
from deploy.cli.audit_log import audit_log_app
from deploy.cli.common import err, out
from deploy.cli.deploy import deploy_command
from deploy.cli.inventory import inventory_app
from deploy.cli.lab import lab_app
from deploy.cli.model import model_app
from deploy.cli.secrets import secrets_app
from deploy.cli.vault import vault_app
from deploy.cli.version import citadel_version
from deploy.cli.vllm import vllm_app

app = typer.Typer(
    name="citadel",
    help=(
        "Citadel runs large language models on a hospital's own GPU servers without opening "
        "new holes: it provisions hardened hosts, Vault-managed secrets, encrypted and signed "
        "model storage and an isolated vLLM server, and proves it with compliance checks."
    ),
    no_args_is_help=True,
    rich_markup_mode="markdown",
    pretty_exceptions_enable=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _print_version(wanted: bool) -> None:
    if wanted:
        out.print(f"citadel {citadel_version()}", highlight=False, soft_wrap=True)
        raise typer.Exit()


@app.callback()
def _options(
    version: Annotated[
        bool,
        typer.Option(
            "--version", help="Print Citadel's version (and the commit, in a checkout) and exit.",
            is_eager=True, callback=_print_version,
        ),
    ] = False,
) -> None:
    # The options of `citadel` itself, before any command; the help text is the app's.
    pass


app.command("deploy")(deploy_command)
app.command("audit")(audit_command)
app.add_typer(inventory_app, name="inventory")
app.add_typer(lab_app, name="lab")
app.add_typer(vault_app, name="vault")
app.add_typer(secrets_app, name="secrets")
app.add_typer(model_app, name="model")
app.add_typer(vllm_app, name="vllm")
app.add_typer(audit_log_app, name="audit-log")


def main() -> None:
    logging.captureWarnings(True)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)
