"""The ``citadel`` command.

Exit codes, for every command: 0 success; 1 the work ran but something on a host failed
(a failed operation, an unreachable host); 2 bad input (inventory, options), nothing done.
"""

from __future__ import annotations

import json
import logging
import sys
from enum import Enum
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.logging import RichHandler
from rich.table import Table

from deploy.cli_auditlog import audit_log_app
from deploy.cli_secrets import secrets_app
from deploy.cli_model import model_app
from deploy.cli_vllm import vllm_app
from deploy.cli_common import InventoryOption, JsonOption, TokenFileOption, err, fail, load_site, out, vault_call
from deploy.redaction import redact

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
inventory_app = typer.Typer(help="Validate and summarise inventories (what the fleet is).", no_args_is_help=True)
lab_app = typer.Typer(
    help="A local lab of disposable Debian 12 hosts (systemd-nspawn containers, and a qemu VM) to try Citadel on. Needs root.",
    no_args_is_help=True,
)
vault_app = typer.Typer(
    help=(
        "Vault / OpenBao: set up what Citadel needs on a server (`bootstrap`), or run an embedded "
        "OpenBao server to try Citadel (`serve`, `stop`)."
    ),
    no_args_is_help=True,
)
app.add_typer(inventory_app, name="inventory")
app.add_typer(lab_app, name="lab")
app.add_typer(vault_app, name="vault")
app.add_typer(secrets_app, name="secrets")
app.add_typer(model_app, name="model")
app.add_typer(vllm_app, name="vllm")
app.add_typer(audit_log_app, name="audit-log")

_load = load_site


# --- inventory -------------------------------------------------------------------------


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
    site = _load(file)
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


# --- deploy ----------------------------------------------------------------------------


@app.command("deploy")
def deploy_command(
    inventory: InventoryOption,
    role: Annotated[
        Optional[list[str]],
        typer.Option("--role", "-r", help="Run only this role (repeatable). Default: every role, in order."),
    ] = None,
    limit: Annotated[
        Optional[list[str]],
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

    Three roles talk to Vault: vault-agent (a response-wrapped secret-id for each host whose
    agent must log in anew), model-store (the signing public keys, for hosts that serve a
    model) and store-volume (a host's LUKS volume key, for hosts with model_store.luks).
    The address, CA and token are found as for `citadel vault bootstrap` (BAO_ADDR/VAULT_ADDR,
    BAO_CACERT/VAULT_CACERT, BAO_TOKEN/VAULT_TOKEN or a token file; never an argument).
    Other roles never ask for it.

    Exit 0 when every host succeeded, 1 when any host failed or was unreachable, 2 on bad
    input (nothing is done).

    Example: `citadel deploy -i inventory/lab.yaml --role base --dry-run`
    """
    from deploy.progress import RichDeployListener
    from deploy.runner import DeployError, configure_logging, run_deploy, select_hosts, select_roles
    from deploy.vault.client import Access, resolve

    site = _load(inventory)
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


# --- audit -----------------------------------------------------------------------------


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    html = "html"
    junit = "junit"


@app.command("audit")
def audit_command(
    inventory: InventoryOption,
    limit: Annotated[
        Optional[list[str]], typer.Option("--limit", "-l", help="Only these hosts or groups (repeatable).")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Which controls: all, hipaa, cis-level1, llm, or a named profile.")
    ] = "all",
    waivers: Annotated[
        Optional[Path], typer.Option("--waivers", help="YAML file of approved, expiring exceptions.")
    ] = None,
    report_format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="Report format.", case_sensitive=False)
    ] = ReportFormat.table,
    output: Annotated[
        Optional[Path], typer.Option("--output", "-o", help="Write the report here instead of stdout.")
    ] = None,
) -> None:
    """Check every control on every host, read-only, and report the evidence.

    Runs each control's read-only check over SSH (all hosts in parallel, one round trip per
    host) and reports, per host and control: pass, fail, not applicable (with the reason)
    or error (with the reason), and the evidence observed. Nothing on the hosts is changed.

    Waived failures stay in the report, marked with the approver, justification and expiry;
    an expired waiver stops counting.

    Exit 0 when every applicable control passes (or is waived), 1 when any fails, 2 when
    any check could not be run (an error), or on bad input.

    Example: `citadel audit -i site.yaml --profile hipaa --format html -o audit.html`
    """
    from hardening.catalog import CatalogError, load_catalog, select
    from hardening.engine import run_audit
    from hardening.report import AuditReport
    from hardening.waivers import WaiverError, apply_waivers, load_waivers
    from deploy.runner import DeployError, select_hosts

    site = _load(inventory)
    catalog = load_catalog()
    try:
        controls = select(catalog, profile)
        hosts = select_hosts(site, limit)
        accepted = load_waivers(waivers, {c.id for c in catalog}) if waivers else []
    except (CatalogError, DeployError, WaiverError) as exc:
        raise fail(str(exc)) from None

    with err.status(f"auditing {len(hosts)} host(s) against {len(controls)} controls") as status:
        done: list[str] = []

        def progress(host: str) -> None:
            done.append(host)
            status.update(f"audited {len(done)}/{len(hosts)} host(s)")

        results = run_audit(site, controls, limit=hosts, progress=progress)
    apply_waivers(results, accepted)
    report = AuditReport(site=site.site, profile=profile, controls=controls, results=results)
    if report_format is ReportFormat.table:
        if output:
            raise fail("--output needs --format json, html or junit")
        _print_audit_table(report)
    else:
        text = {"json": report.to_json, "html": report.to_html, "junit": report.to_junit}[report_format.value]()
        if output:
            output.write_text(text, encoding="utf-8")
            err.print(f"report written to {output}")
        else:
            sys.stdout.write(text + "\n")
    raise typer.Exit(report.exit_code())


def _print_audit_table(report) -> None:
    from hardening.report import outcome

    colour = {"pass": "green", "fail": "red", "error": "yellow", "waived": "magenta", "notapplicable": "dim"}
    table = Table(title=f"Audit of {report.site} (profile {report.profile})", title_justify="left")
    for column in ("host", "control", "result", "evidence"):
        table.add_column(column, overflow="fold")
    for r in report.results:
        kind = outcome(r)
        if kind != "pass":
            table.add_row(r.host, r.control, f"[{colour[kind]}]{kind}[/]", r.evidence)
    out.print(table)
    summary = Table(title="Summary", title_justify="left")
    for column in ("host", "pass", "fail", "waived", "notapplicable", "error"):
        summary.add_column(column)
    for host, counts in report.by_host().items():
        summary.add_row(host, *(str(counts[k]) for k in ("pass", "fail", "waived", "notapplicable", "error")))
    out.print(summary)


# --- lab -------------------------------------------------------------------------------


def _lab_call(function, *args, **kwargs):
    from deploy.lab import LabError

    try:
        return function(*args, **kwargs)
    except LabError as exc:
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
        Optional[str],
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
    import deploy.lab as lab
    from inventory.lab import write_lab_inventory

    with err.status("bringing the lab up") as status:
        result = _lab_call(lab.up, hosts=hosts, vm=vm, progress=lambda text: status.update(text))
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
    from deploy.lab.tiny_model import write_tiny_model

    written = write_tiny_model(directory, seed)
    out.print(f"tiny model written to {written} ({sum(p.stat().st_size for p in written.iterdir())} bytes)")


@lab_app.command("status")
def lab_status(as_json: JsonOption = False) -> None:
    """Show the lab's hosts and whether each is running and answering SSH."""
    import deploy.lab as lab

    rows = _lab_call(lab.status)
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


@lab_app.command("down")
def lab_down(
    inventory: Annotated[
        Path, typer.Option("--inventory", "-i", help="The lab inventory to remove.")
    ] = Path("inventory/lab.yaml"),
) -> None:
    """Destroy every lab host; leave no process, mount, network namespace, veth or cgroup."""
    import deploy.lab as lab

    with err.status("taking the lab down") as status:
        _lab_call(lab.down, progress=lambda text: status.update(text))
    left = _lab_call(lab.leftovers)
    if inventory.exists() and inventory.read_text().startswith("# Written by `citadel lab up`"):
        inventory.unlink()
    if left:
        raise fail("the lab was not fully removed: " + "; ".join(left), code=1)
    out.print("lab removed; nothing left behind")


# --- vault -----------------------------------------------------------------------------

VaultDirOption = Annotated[
    Optional[Path],
    typer.Option(
        "--dir",
        help="Directory of the embedded server (data, config, keys, audit log). "
        "Default: /var/lib/citadel-vault as root, else ~/.local/share/citadel/vault.",
        show_default=False,
    ),
]


_vault_call = vault_call


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
    from deploy.vault.server import WARNING, serve

    err.print(f"[bold yellow]warning:[/] {WARNING}", highlight=False, soft_wrap=True)
    also: tuple[str, ...] = ()
    if lab:
        import deploy.lab

        also = (_lab_call(deploy.lab.vault_address),)
    with err.status("starting the embedded OpenBao server"):
        vault = _vault_call(serve, directory, port, also)
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
    from deploy.vault.server import default_directory, stop

    stopped = _vault_call(stop, directory)
    where = directory or default_directory()
    out.print(f"stopped the embedded server of {where}" if stopped else f"no embedded server of {where} was running")


@vault_app.command("bootstrap")
def vault_bootstrap(
    inventory: InventoryOption,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would change; change nothing.")] = False,
    token_file: Annotated[
        Optional[Path],
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
    `host` and `gateway` for short-lived certificates of the inventory's own names; an
    AppRole auth mount with roles `citadel-gpu` and `citadel-gateway`, bound to their hosts'
    addresses and to the policies in deploy/vault/policies/. Each item is reported as
    created, updated or unchanged; a second run changes nothing.

    Server: BAO_ADDR or VAULT_ADDR, else the inventory's vault.address (https only). CA:
    BAO_CACERT or VAULT_CACERT, else vault.ca_file. Token: --token-file, else BAO_TOKEN or
    VAULT_TOKEN, else the file named by BAO_TOKEN_FILE or VAULT_TOKEN_FILE.

    Exit 0 when done (or, with --dry-run, planned), 1 when the server is unreachable or
    refused a step, 2 on bad input (inventory, missing token, http address).

    Example: `VAULT_TOKEN_FILE=~/.citadel/admin.token citadel vault bootstrap -i site.yaml --dry-run`
    """
    from deploy.vault.bootstrap import bootstrap
    from deploy.vault.client import connect, resolve

    site = _load(inventory)
    settings = _vault_call(resolve, site.vault, token_file)
    client = _vault_call(connect, settings)
    report = _vault_call(bootstrap, client, site, dry_run=dry_run)
    if as_json:
        out.print_json(json.dumps(report.as_dict()))
        return
    verb = {"created": "would create", "updated": "would update"} if dry_run else {}
    colour = {"created": "green", "updated": "yellow", "unchanged": "dim"}
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
    only; an audit device enabled; no root token in use by Citadel; host AppRoles with
    short TTLs and bound to their hosts' addresses; no wildcard paths in Citadel's
    policies; transit keys younger than settings.transit_key_max_age_days, not
    exportable or deletable; the PKI root CA not near expiry; API keys and secret-ids
    rotated within the policy and no rotation stopped midway.

    Use an auditor's token (`hardening/vault/auditor.hcl` lists the reads it needs), not
    root: with a root token, vault-no-root-token fails, as it should. Server, CA and token
    are resolved as for `citadel vault bootstrap`.

    Exit 0 when every control passes, 1 when any fails, 2 when any check could not run
    (the reason is given) or on bad input.

    Example: `VAULT_TOKEN_FILE=~/.citadel/auditor.token citadel vault audit -i site.yaml --json`
    """
    from deploy.cli_common import vault_client
    from hardening.vault.facts import Facts
    from hardening.vault.run import exit_code, run_checks

    site = _load(inventory)
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


def main() -> None:
    logging.captureWarnings(True)
    try:
        app()
    except KeyboardInterrupt:
        err.print("interrupted")
        sys.exit(130)


if __name__ == "__main__":
    main()
