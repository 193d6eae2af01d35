"""``citadel audit``: check every control on every host, read-only, and report the evidence.

The checks run in :mod:`hardening.engine`; this module selects the controls and hosts,
applies the waivers and writes the report in the format asked for.

Example::

    citadel audit -i site.yaml --profile hipaa --format html -o audit.html
    citadel audit -i site.yaml --json > audit.json   # the same as --format json
"""

from __future__ import annotations

import sys
from enum import Enum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from deploy.cli.common import InventoryOption, err, fail, load_site, out
from deploy.cli.version import citadel_version


class ReportFormat(str, Enum):
    table = "table"
    json = "json"
    html = "html"
    junit = "junit"


def audit_command(
    inventory: InventoryOption,
    limit: Annotated[
        list[str] | None, typer.Option("--limit", "-l", help="Only these hosts or groups (repeatable).")
    ] = None,
    profile: Annotated[
        str, typer.Option("--profile", "-p", help="Which controls: all, hipaa, cis-level1, llm, or a named profile.")
    ] = "all",
    waivers: Annotated[
        Path | None, typer.Option("--waivers", help="YAML file of approved, expiring exceptions.")
    ] = None,
    report_format: Annotated[
        ReportFormat, typer.Option("--format", "-f", help="Report format.", case_sensitive=False)
    ] = ReportFormat.table,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write the report here instead of stdout.")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="Report as JSON, as every other command's --json: the same as --format json.")
    ] = False,
) -> None:
    """Check every control on every host, read-only, and report the evidence.

    Runs each control's read-only check over SSH (all hosts in parallel, one round trip per
    host) and reports, per host and control: pass, fail, not applicable (with the reason)
    or error (with the reason), and the evidence observed. Nothing on the hosts is changed.

    Waived failures stay in the report, marked with the approver, justification and expiry;
    an expired waiver stops counting.

    `--json` is the same as `--format json` (the option every other command takes); `--format`
    stays for the other formats and for scripts written against it. Every report names the
    Citadel version that produced it.

    Exit 0 when every applicable control passes (or is waived), 1 when any fails, 2 when
    any check could not be run (an error), or on bad input.

    Example: `citadel audit -i site.yaml --profile hipaa --format html -o audit.html`
    """
    # pyinfra (hardening.engine, deploy.connection) and pydantic (the catalog) would triple the time of
    # every `citadel --help`: loaded when used.
    from deploy.connection import DeployError, select_hosts
    from hardening.catalog import CatalogError, load_catalog, select
    from hardening.engine import run_audit
    from hardening.report import AuditReport
    from hardening.waivers import WaiverError, apply_waivers, load_waivers

    if as_json:
        if report_format not in (ReportFormat.table, ReportFormat.json):  # table: the default, not asked for
            raise fail(f"--json and --format {report_format.value} ask for two report formats: give one")
        report_format = ReportFormat.json
    site = load_site(inventory)
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
    report = AuditReport(
        site=site.site, profile=profile, controls=controls, results=results, citadel_version=citadel_version()
    )
    if report_format is ReportFormat.table:
        if output:
            raise fail("--output needs --json, or --format json, html or junit")
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
    from hardening.report import outcome  # pydantic, as in audit_command

    colour = {"pass": "green", "fail": "red", "error": "yellow", "waived": "magenta", "notapplicable": "dim"}
    table = Table(
        title=f"Audit of {report.site} (profile {report.profile}, citadel {report.citadel_version})",
        title_justify="left",
    )
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
