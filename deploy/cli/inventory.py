"""``citadel inventory``: validate and summarise an inventory (what the fleet is).

Example::

    citadel inventory check inventory/example-hospital.yaml --json
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli.common import JsonOption, load_site, out

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
