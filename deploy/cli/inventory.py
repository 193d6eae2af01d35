"""``citadel inventory``: validate and summarise an inventory (what the fleet is).

Example::

    citadel inventory check inventory/example-hospital.yaml --json
    citadel inventory schema --json --out docs/inventory.schema.json
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli.common import JsonOption, err, fail, load_site, out

inventory_app = typer.Typer(help="Validate and summarise inventories (what the fleet is).", no_args_is_help=True)


@inventory_app.command("check")
def inventory_check(
    file: Annotated[Path, typer.Argument(help="Inventory file to validate.", show_default=False)],
    as_json: JsonOption = False,
) -> None:
    """Validate an inventory and summarise its hosts.

    Every problem is reported with the file and the field path (for example
    `hosts.gpu-01.address`); unknown keys are errors, not ignored. Exit 0 when the
    inventory is valid, 2 when it is not.
    """
    site = load_site(file)
    hosts = []
    for name, host in site.hosts.items():
        ssh = site.ssh_for(name)
        hosts.append(
            {
                "name": name,
                "address": host.address,
                "ssh": f"{ssh.user}@{host.address}:{ssh.port}",
                "groups": list(host.groups),
                "gpus": host.gpus.count,
                "gpu_model": host.gpus.model,
                "models": list(host.models),
                "host_key": "pinned" if ssh.host_key else f"known_hosts {ssh.known_hosts}",
            }
        )
    if as_json:
        summary = {"file": str(file), "valid": True, "site": site.site, "vault": str(site.vault.address), "hosts": hosts}
        out.print_json(json.dumps(summary))
        return
    table = Table(title=f"{file}: site {site.site} ({len(hosts)} hosts)", title_justify="left")
    for column in ("host", "ssh", "groups", "GPUs", "models", "host key"):
        table.add_column(column)
    for h in hosts:
        gpus = f"{h['gpus']} x {h['gpu_model']}" if h["gpus"] else "-"
        table.add_row(h["name"], h["ssh"], ", ".join(h["groups"]), gpus, ", ".join(h["models"]) or "-", h["host_key"])
    out.print(table)
    out.print(f"Vault: {site.vault.address} ({site.vault.flavor})")
    out.print(f"SSH allowed from: {', '.join(site.networks.ssh_allowed) or 'nowhere (no network listed)'}")
    out.print(f"Gateway allowed from: {', '.join(site.networks.gateway_allowed) or 'nowhere (no network listed)'}")
    out.print("[green]valid[/]")


@inventory_app.command("schema")
def inventory_schema(
    as_json: Annotated[
        bool, typer.Option("--json", help="The JSON Schema (draft 2020-12) instead of the Markdown reference.")
    ] = False,
    out_file: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Write to FILE (replaced whole) instead of stdout.", metavar="FILE",
                     show_default=False),
    ] = None,
) -> None:
    """Print the inventory's reference, or its JSON Schema, generated from the schema itself.

    Without --json: a Markdown page with one section per object of the inventory (the top level,
    `vault`, `hosts.NAME`, `hosts.NAME.ssh`, ...) and one row per field: its type, default, bounds
    and description, and the rules across fields that only `citadel inventory check` enforces.
    With --json: a JSON Schema that editors and CI tools validate inventory files against; in
    VS Code (the YAML extension), put `# yaml-language-server: $schema=PATH/inventory.schema.json`
    on the first line of an inventory.

    Both are made from `inventory/schema.py` and never edited by hand. The repository keeps them
    in `docs/inventory-reference.md` and `docs/inventory.schema.json`, and a unit test fails when
    they fall behind the schema.

    Exit 0 when written, 2 when FILE cannot be written (named).

    Example: `citadel inventory schema --json --out docs/inventory.schema.json`
    """
    # pydantic (the schema) adds a tenth of a second to every `citadel --help`: loaded when used.
    from inventory.reference import json_schema, markdown_reference

    text = json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n" if as_json else markdown_reference()
    if out_file is None:
        sys.stdout.write(text)
        return
    try:
        out_file.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise fail(f"--out {out_file}: cannot write it: {exc.strerror or exc}") from None
    err.print(f"written: {out_file}", highlight=False)
