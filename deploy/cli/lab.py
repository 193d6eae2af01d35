"""``citadel lab``: a local lab of disposable Debian 12 hosts to try Citadel on (needs root).

The lab itself is :mod:`deploy.lab`; this module calls it, writes the lab's inventory and
prints.

Example::

    sudo citadel lab up --hosts 2 && citadel deploy -i inventory/lab.yaml
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy import lab
from deploy.cli.common import JsonOption, err, fail, out
from deploy.lab.tiny_model import write_tiny_model

lab_app = typer.Typer(
    help="A local lab of disposable Debian 12 hosts (systemd-nspawn containers, and a qemu VM) to try Citadel on. Needs root.",
    no_args_is_help=True,
)


def lab_call(function, *args, **kwargs):
    """`function(*args, **kwargs)`, a LabError turned into an error exit (1: the lab failed, not the input)."""
    try:
        return function(*args, **kwargs)
    except lab.LabError as exc:
        raise fail(str(exc), code=1) from None


@lab_app.command("up")
def lab_up(
    hosts: Annotated[int, typer.Option("--hosts", "-n", min=1, max=40, help="Number of container hosts.")] = 2,
    vm: Annotated[
        bool, typer.Option("--vm", help="Also boot the qemu VM host (slow: software emulation), for kernel-level controls.")
    ] = False,
    inventory: Annotated[
        Path, typer.Option("--inventory", "-i", help="Where to write the lab's inventory.")
    ] = Path("inventory/lab.yaml"),
    model: Annotated[
        str | None,
        typer.Option("--model", help="Have the first host serve this model (seal it first: see `citadel lab tiny-model`)."),
    ] = None,
) -> None:
    """Create lab hosts and write their inventory.

    Each host is a Debian 12 system booted with systemd in its own network namespace,
    reachable over SSH from this machine only, with packages from a local read-only apt
    repository and no route anywhere else (like an air-gapped hospital network). The first
    run builds and caches a root filesystem and the apt repository under
    ~/.cache/citadel/ (a few minutes); later runs take seconds.
    """
    # pydantic (the inventory schema) adds a tenth of a second to every `citadel --help`: loaded when used.
    from inventory.lab import write_lab_inventory

    with err.status("bringing the lab up") as status:
        result = lab_call(lab.up, hosts=hosts, vm=vm, progress=lambda text: status.update(text))
    path = write_lab_inventory(result, inventory, model)
    for h in result.hosts:
        err.print(f"  {h.name:<10} {h.kind:<9} ssh {result.ssh_user}@{h.address} -p {h.port}")
    out.print(f"lab inventory written to {path}")
    out.print(f"next: citadel deploy -i {path}")


@lab_app.command("tiny-model")
def lab_tiny_model(
    directory: Annotated[Path, typer.Argument(help="Where to write it (created).")],
    seed: Annotated[int, typer.Option("--seed", help="Same seed, same bytes.")] = 0,
) -> None:
    """Write the lab's tiny model: a real Hugging Face model directory, generated offline.

    A 2-layer Llama with random weights and a byte-level tokenizer with a chat template
    (about 1.4 MB, under a second, nothing downloaded). vLLM serves it for real; what it
    says is nonsense. Seal it with `citadel model seal DIR --name NAME` and serve it with
    `citadel lab up --model NAME`.
    """
    written = write_tiny_model(directory, seed)
    out.print(f"tiny model written to {written} ({sum(p.stat().st_size for p in written.iterdir())} bytes)")


@lab_app.command("status")
def lab_status(as_json: JsonOption = False) -> None:
    """Show the lab's hosts and whether each is running and answering SSH."""
    rows = lab_call(lab.status)
    if as_json:
        out.print_json(json.dumps(rows))
        return
    if not rows:
        out.print("no lab is running")
        return
    table = Table()
    for column in ("host", "kind", "address", "running", "ssh"):
        table.add_column(column)
    for row in rows:
        table.add_row(row["name"], row["kind"], row["address"], _yes(row["running"]), _yes(row["ssh"]))
    out.print(table)


def _yes(flag: bool) -> str:
    return "[green]yes[/]" if flag else "[red]no[/]"


@lab_app.command("reboot")
def lab_reboot(
    host: Annotated[str, typer.Argument(help="The lab host to reboot, as `citadel lab status` names it (lab-01, lab-vm).")],
    timeout: Annotated[
        float | None,
        typer.Option(
            "--timeout",
            min=1,
            help="Seconds for the orderly shutdown (a container is then killed) and again for the boot to SSH. "
            "Default: 120 for a container, 420 for the VM.",
            show_default=False,
        ),
    ] = None,
    as_json: JsonOption = False,
) -> None:
    """Reboot one lab host for real, as `systemctl reboot` on a server does.

    The host's systemd stops every unit in order (their ExecStop= commands run), then the
    host boots again from the same disk: what was installed or written survives, /run starts
    empty, and every enabled unit starts as at a power-on.
    A container (systemd-nspawn) is booted again on the same overlay, network namespace and
    address; the lab's state gets its new PID, so `citadel lab status` and `citadel lab down`
    keep working. A container that does not shut down within --timeout is killed as
    `citadel lab down` does, then booted. The VM reboots inside its qemu.

    Takes about a second for a container (well under 1 s to stop, under 1 s to boot to SSH)
    and a minute or more for the VM (software emulation). Prints the seconds from the
    reboot request until SSH answers again; with --json: {"host": ..., "seconds": ...}.

    Exit codes: 0 the host rebooted and answers SSH; 1 it did not (no lab is up, no such
    host, or it did not answer SSH within --timeout; the message names the host and its
    console log); 2 wrong usage.

    Example: sudo citadel lab reboot lab-01
    """
    with err.status(f"rebooting {host}") as status:
        seconds = lab_call(lab.reboot, host, timeout=timeout, progress=lambda text: status.update(text))
    if as_json:
        out.print_json(json.dumps({"host": host, "seconds": round(seconds, 2)}))
        return
    out.print(f"{host} rebooted: SSH answers again {seconds:.1f} s after the reboot request")


@lab_app.command("down")
def lab_down(
    inventory: Annotated[
        Path, typer.Option("--inventory", "-i", help="The lab inventory to remove.")
    ] = Path("inventory/lab.yaml"),
) -> None:
    """Destroy every lab host; leave no process, mount, network namespace, veth or cgroup."""
    with err.status("taking the lab down") as status:
        lab_call(lab.down, progress=lambda text: status.update(text))
    left = lab_call(lab.leftovers)
    if inventory.exists() and inventory.read_text().startswith("# Written by `citadel lab up`"):
        inventory.unlink()
    if left:
        raise fail("the lab was not fully removed: " + "; ".join(left), code=1)
    out.print("lab removed; nothing left behind")
