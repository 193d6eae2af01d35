"""``citadel audit-log``: check the gateway's record of model interactions.

Each gateway host keeps its own chain: ``verify`` takes one copy per host and verifies
each on its own.

Example::

    scp gw-01:/var/log/citadel-gateway/audit.jsonl gw-01.jsonl
    scp gw-02:/var/log/citadel-gateway/audit.jsonl gw-02.jsonl
    citadel audit-log verify gw-01.jsonl gw-02.jsonl -i site.yaml
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from citadel_runtime.gateway.auditlog import verify_file
from citadel_runtime.gateway.content import open_sealed
from deploy.cli.common import (
    InventoryOption,
    JsonOption,
    TokenFileOption,
    fail,
    load_site,
    out,
    vault_call,
    vault_client,
)
from deploy.secrets import audit_key
from deploy.secrets.store import Store

audit_log_app = typer.Typer(
    help="The gateway's audit log: one HMAC-chained JSON line per interaction with the model.",
    no_args_is_help=True,
)


@dataclass
class FileVerdict:
    """One log's verdict, with what tells where and when it was written."""

    file: str
    host: str | None
    records: int
    first: str | None
    last: str | None
    problems: list[str]

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict:
        return {"file": self.file, "host": self.host, "ok": self.ok, "records": self.records, "first": self.first,
                "last": self.last, "problems": self.problems}


def span(path: Path) -> tuple[str | None, str | None, str | None]:
    """The first and last record times of a log, and the gateway host its records name, if any."""
    first = last = host = None
    with open(path, encoding="ascii", errors="replace") as handle:
        for line in handle:
            try:
                record = json.loads(line)
            except ValueError:
                continue  # torn or foreign lines: the verdict names them
            if not isinstance(record, dict):
                continue
            when = record.get("time")
            if isinstance(when, str):
                first, last = first or when, when
            named = record.get("gateway_host") or record.get("host")
            host = host or (named if isinstance(named, str) else None)
    return first, last, host


def host_of(path: Path, named: str | None, gateways: list[str]) -> str | None:
    """The records' own host name, else the inventory's gateway host the file's name contains."""
    if named:
        return named
    found = [h for h in gateways if h in path.name]
    return max(found, key=len) if found else None


def verify_one(path: Path, key: bytes, gateways: list[str], expect_records: int | None) -> FileVerdict:
    verdict = verify_file(str(path), key)
    problems = list(verdict.problems)
    if expect_records is not None and verdict.lines < expect_records:
        problems.append(f"{verdict.lines} record(s) where the gateway reports {expect_records}: lines missing at the end")
    first, last, named = span(path)
    return FileVerdict(str(path), host_of(path, named, gateways), verdict.lines, first, last, problems)


def print_single(result: FileVerdict) -> None:
    if result.ok:
        out.print(f"{result.file}: {result.records} record(s), the chain verifies")
        return
    out.print(f"{result.file}: {result.records} record(s), does NOT verify:")
    for problem in result.problems:
        out.print(f"  {problem}", highlight=False)


def short_time(stamp: str | None) -> str:
    """'YYYY-MM-DD HH:MM:SS' for the table (the records' UTC times); --json keeps them whole."""
    return stamp[:19].replace("T", " ") if stamp else "-"


def print_table(results: list[FileVerdict]) -> None:
    """One row per log (problems counted), then each problem on its own line, named by file."""
    table = Table(title="Audit logs, one chain per gateway host", title_justify="left")
    for column in ("file", "host", "records", "first", "last", "verdict", "problems"):
        table.add_column(column, overflow="fold", no_wrap=column in ("file", "host", "first", "last"))
    for r in results:
        verdict = "verifies" if r.ok else "[red]does NOT verify[/]"
        table.add_row(r.file, r.host or "-", str(r.records), short_time(r.first), short_time(r.last), verdict,
                      str(len(r.problems)))
    out.print(table)
    for r in results:
        for problem in r.problems:
            out.print(f"{r.file}: {problem}", highlight=False, soft_wrap=True)
    failed = [r.file for r in results if not r.ok]
    out.print(f"{len(results) - len(failed)} of {len(results)} log(s) verify"
              + (f"; does NOT verify: {', '.join(failed)}" if failed else ""), highlight=False, soft_wrap=True)


@audit_log_app.command("verify")
def verify(
    logs: Annotated[list[Path], typer.Argument(
        help="copies of /var/log/citadel-gateway/audit.jsonl, one per gateway host (name them after the host, "
        "like gw-01.jsonl, to see it in the table)", exists=True, dir_okay=False, readable=True)],
    inventory: InventoryOption,
    token_file: TokenFileOption = None,
    expect_records: Annotated[int | None, typer.Option(
        "--expect-records", help="one log only: the number of records its gateway reports (its metrics): fewer "
        "means lines were cut off the end", min=0)] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify every line's HMAC, its sequence number and its link to the line before.

    The key is read from Vault (`gateway/audit-hmac-key`, with your token: VAULT_TOKEN,
    BAO_TOKEN or --token-file), never from the host that wrote the log. An edited line
    fails its MAC; a deleted, inserted or reordered line breaks the sequence and the chain.
    Lines cut off the end are only seen against the count the gateway itself reports
    (--expect-records).

    Each gateway host keeps its own chain: give one copy per host, and each is verified on
    its own. With several, a table shows each file, its host (named by its records, or the
    inventory's gateway host its file name contains), its records, its first and last
    record times (UTC), its verdict and how many problems, then each problem on a line
    that starts with its file; --json gives the same per file
    (`{"ok": ..., "files": [...]}`). With one, the output is one line (or the problems).

    Exit 0 when every log verifies, 1 when any does not (each problem is named by file and
    line), 2 on bad input (no such inventory, no key in Vault, --expect-records with
    several logs).

    Example: `citadel audit-log verify gw-01.jsonl gw-02.jsonl -i site.yaml`
    """
    if expect_records is not None and len(logs) > 1:
        raise fail("--expect-records counts one gateway's records: give it with one log at a time")
    site = load_site(inventory)
    store = Store(vault_client(site, token_file), site.vault.kv_mount)
    key = vault_call(audit_key.read, store)
    if key is None:
        raise fail(f"no audit-log key in Vault at {site.vault.kv_mount}/{audit_key.PATH} "
                   "(run `citadel vault bootstrap`)")
    gateways = site.hosts_in("gateway")
    results = [verify_one(log, key.reveal().encode(), gateways, expect_records) for log in logs]
    ok = all(r.ok for r in results)
    if as_json and len(results) == 1:
        out.print_json(json.dumps(results[0].as_dict()))
    elif as_json:
        out.print_json(json.dumps({"ok": ok, "files": [r.as_dict() for r in results]}))
    elif len(results) == 1:
        print_single(results[0])
    else:
        print_table(results)
    raise typer.Exit(0 if ok else 1)


@audit_log_app.command("show")
def show(
    log: Annotated[Path, typer.Argument(help="a copy of a gateway's audit.jsonl", exists=True, dir_okay=False,
                                        readable=True)],
    inventory: InventoryOption,
    request_id: Annotated[list[str] | None, typer.Option(
        "--request-id", help="only this record (repeatable); the id each answer carries in X-Request-Id")] = None,
    client: Annotated[str | None, typer.Option("--client", help="only this client's records")] = None,
    decrypt: Annotated[bool, typer.Option(
        "--decrypt", help="open recorded content (clients with record_content) with the content key from Vault; "
        "it holds what patients and clinicians wrote: handle the output as PHI")] = False,
    token_file: TokenFileOption = None,
) -> None:
    """Print records of an audit log as JSON lines, optionally with their recorded content opened.

    Content exists only for clients whose inventory policy sets `record_content: true`, and is
    sealed (AES-256-GCM, bound to its request id) with `gateway/content-key` from Vault, a key
    apart from the chain's: verifying a log does not give the means to read it. Run
    `citadel audit-log verify` first: this command does not check the chain.

    Exit 0; 1 when a record's content cannot be opened (wrong key, or edited); 2 on bad input.
    """
    key = None
    if decrypt:
        site = load_site(inventory)
        secret = vault_call(audit_key.read, Store(vault_client(site, token_file), site.vault.kv_mount),
                            audit_key.CONTENT_PATH)
        if secret is None:
            raise fail(f"no content key in Vault at {site.vault.kv_mount}/{audit_key.CONTENT_PATH}")
        key = bytes.fromhex(secret.reveal())
    failed = 0
    with open(log, encoding="utf-8", errors="replace") as handle:
        for number, line in enumerate(handle, start=1):
            try:
                record = json.loads(line)
            except ValueError:
                raise fail(f"{log}: line {number} is not JSON") from None
            if (request_id and record.get("request_id") not in request_id) or (client and record.get("client") != client):
                continue
            if key is not None and record.get("content"):
                try:
                    record["content"] = open_sealed(key, record["request_id"], record["content"])
                except Exception:  # noqa: BLE001 - InvalidTag and malformed fields alike: say which record
                    record["content"] = {"error": "cannot be opened: wrong key, or the record was edited"}
                    failed += 1
            typer.echo(json.dumps(record))  # one JSON line per record, for jq and the like
    raise typer.Exit(1 if failed else 0)
