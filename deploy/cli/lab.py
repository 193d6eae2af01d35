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
from deploy.cli.common import JsonOption, TokenFileOption, err, fail, load_site, out, vault_call, vault_client
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


@lab_app.command("demo-client")
def lab_demo_client(
    inventory: Annotated[
        Path, typer.Option("--inventory", "-i", help="The lab inventory (written by `citadel lab up --model`).")
    ] = Path("inventory/lab.yaml"),
    directory: Annotated[
        Path, typer.Option("--dir", help="Where the client's key (0600) and the gateway's CA are written.")
    ] = Path("/var/lib/citadel-demo"),
    chat: Annotated[
        bool, typer.Option("--chat/--no-chat", help="Send one chat through the gateway as proof (after the deploy).")
    ] = True,
    vault_dir: Annotated[
        Path, typer.Option("--vault-dir", help="The embedded Vault's directory, named in the teardown printed at the end.")
    ] = Path("/var/lib/citadel-vault"),
    token_file: TokenFileOption = None,
) -> None:
    """The demo's gateway client: its key, the CA, one chat, and how to send another.

    The lab inventory gives a client named demo a policy for the lab model. This makes
    its key in Vault (issued once; replaced when the key file is lost) and writes it, mode
    0600, to DIR/demo-client.key, with the CA that signs the gateway's certificate in
    DIR/citadel-ca.pem. Then it sends one chat completion through the gateway of the host
    serving the model, as any client would, and prints the answer, its request id, the
    curl for another request, where its audit record is, how to run the audit and how to
    take everything down. The key is never printed.

    ./demo.sh runs it twice: with --no-chat before the deploy (so the gateway knows the key
    from its start), then after it. Vault: as for `citadel secrets` (the embedded server's
    token file in the demo).

    Exit codes: 0 the model answered; 1 Vault failed, or the gateway did not answer 200
    within 90 s (the message says what it answered); 2 wrong usage (no demo client in the
    inventory).

    Example: citadel lab demo-client -i inventory/lab.yaml
    """
    from deploy.lab import demo
    from deploy.secrets.store import Store

    site = load_site(inventory)
    policy = site.gateway.clients.get(demo.DEMO_CLIENT)
    if policy is None or not policy.models:
        raise fail(f"{inventory}: gateway.clients has no {demo.DEMO_CLIENT!r} client with a model; "
                   "bring the lab up with `citadel lab up --model NAME`")
    model = policy.models[0]
    serving = [n for n, h in site.hosts.items() if "gateway" in h.groups and model in h.models]
    if not serving:
        raise fail(f"{inventory}: no host of group gateway serves model {model!r} (hosts.*.models)")
    host_name = serving[0]
    host = site.hosts[host_name]
    client = vault_client(site, token_file)
    done = vault_call(demo.ensure_key, Store(client, site.vault.kv_mount), directory)
    ca_pem = vault_call(lambda: client.secrets.pki.read_ca_certificate(mount_point=site.vault.pki_mount))
    ca = demo.write_ca(ca_pem if ca_pem.endswith("\n") else ca_pem + "\n", directory)
    err.print(f"client {demo.DEMO_CLIENT}: key {done}, in {demo.key_path(directory)} (0600); CA in {ca}")
    if not chat:
        return
    key = demo.read_key(demo.key_path(directory))
    with err.status(f"a chat through the gateway of {host_name}") as status:
        result = demo.first_chat(str(host.address), ca, key, model, progress=lambda text: status.update(text))
    if result.status != 200:
        raise fail(f"the gateway of {host_name} ({host.address}) answered {result.status or 'nothing'}: "
                   f"{result.answer[:300]}", code=1)
    out.print(f"the model answered through the gateway (request {result.request_id}): {result.answer!r}")
    out.print("")
    from deploy.lab.ssh import ssh_command

    settings = host.ssh
    known_hosts = demo.write_known_hosts(directory, str(host.address), settings.port, settings.host_key)
    ssh = ssh_command(settings.user or site.ssh.user or "citadel", str(host.address), settings.port,
                      settings.key or site.ssh.key, known_hosts)
    out.print(demo.instructions(address=str(host.address), directory=directory.resolve(), model=model,
                                inventory=inventory.resolve(),
                                host=host_name, ssh=ssh, request_id=result.request_id, vault_dir=vault_dir),
              highlight=False, markup=False, soft_wrap=True)


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
