"""What every ``citadel`` command shares: the two consoles, option types, error exits.

Every command module of :mod:`deploy.cli` uses these, so all commands print, fail and
exit the same way.

Example::

    >>> from deploy.cli.common import fail
    >>> fail("inventory site.yaml: hosts.gpu-01.address: not an address").exit_code
    2
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
import typer.core
from rich.console import Console

from deploy.redaction import redact
from deploy.vault import VaultError
from deploy.vault.client import connect, resolve


def _hide_flag_types() -> None:
    """Show no type for flags and counters in `--help`, as click's plain help does.

    typer's rich help (0.2x) prints every option's type, and `--dry-run <bool>` or
    `-v <int>` read as if they took a value. Patched once, here, because every command
    module imports this one; tests/unit/test_cli_help.py walks every `--help` to keep it so.
    """
    option = typer.core.TyperOption
    shown = getattr(option, "display_type_rich", None)
    if shown is None or getattr(shown, "flags_hidden", False):  # another typer, or done already
        return

    def display_type_rich(self, ctx):
        return None if self.is_flag or self.count else shown(self, ctx)

    display_type_rich.flags_hidden = True
    option.display_type_rich = display_type_rich


_hide_flag_types()

out = Console()  # results (tables, JSON) on stdout
err = Console(stderr=True)  # progress, warnings and errors on stderr

InventoryOption = Annotated[
    Path,
    typer.Option("--inventory", "-i", help="Inventory file (YAML) describing the site.", show_default=False),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print results as JSON on stdout, for scripts and CI.")]
TokenFileOption = Annotated[
    Path | None,
    typer.Option(
        "--token-file",
        help="File (mode 0600) holding the Vault token to use. Tokens are never taken as arguments.",
        show_default=False,
    ),
]


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print `message` (secrets masked) as an error; return the Exit to raise."""
    err.print(f"[bold red]error:[/] {redact(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def load_site(path: Path):
    """The inventory at `path`, or exit 2 naming the file and field."""
    # pydantic (the inventory schema) adds a tenth of a second to every `citadel --help`: loaded when used.
    from inventory.loader import InventoryError, load_inventory

    try:
        return load_inventory(path)
    except InventoryError as exc:
        raise fail(str(exc)) from None


def vault_call(function, *args, **kwargs):
    """`function(*args, **kwargs)`, a VaultError turned into an error exit with its code."""
    try:
        return function(*args, **kwargs)
    except VaultError as exc:
        raise fail(str(exc), code=exc.exit_code) from None


def vault_client(site, token_file: Path | None):
    """An authenticated client for the site's Vault (address, CA, token resolved as documented)."""
    return vault_call(connect, vault_call(resolve, site.vault, token_file))
