"""``citadel audit-log``: check the gateway's record of model interactions.

Example::

    scp gw-01:/var/log/citadel-gateway/audit.jsonl . && citadel audit-log verify audit.jsonl -i site.yaml
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

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


@audit_log_app.command("verify")
def verify(
    log: Annotated[Path, typer.Argument(help="a copy of /var/log/citadel-gateway/audit.jsonl from a gateway host",
                                        exists=True, dir_okay=False, readable=True)],
    inventory: InventoryOption,
    token_file: TokenFileOption = None,
    expect_records: Annotated[int | None, typer.Option(
        "--expect-records", help="the number of records the gateway reports (its metrics): fewer means lines "
        "were cut off the end", min=0)] = None,
    as_json: JsonOption = False,
) -> None:
    """Verify every line's HMAC, its sequence number and its link to the line before.

    The key is read from Vault (`gateway/audit-hmac-key`, with your token: VAULT_TOKEN,
    BAO_TOKEN or --token-file), never from the host that wrote the log. An edited line
    fails its MAC; a deleted, inserted or reordered line breaks the sequence and the chain.
    Lines cut off the end are only seen against the count the gateway itself reports
    (--expect-records).

    Exit 0 when the log verifies, 1 when it does not (each problem is named by line), 2 on
    bad input (no such inventory, no key in Vault).
    """
    site = load_site(inventory)
    store = Store(vault_client(site, token_file), site.vault.kv_mount)
    key = vault_call(audit_key.read, store)
    if key is None:
        raise fail(f"no audit-log key in Vault at {site.vault.kv_mount}/{audit_key.PATH} "
                   "(run `citadel vault bootstrap`)")
    verdict = verify_file(str(log), key.reveal().encode())
    problems = list(verdict.problems)
    if expect_records is not None and verdict.lines < expect_records:
        problems.append(f"{verdict.lines} record(s) where the gateway reports {expect_records}: lines missing at the end")
    ok = not problems
    if as_json:
        out.print_json(json.dumps({"file": str(log), "ok": ok, "records": verdict.lines, "problems": problems}))
    elif ok:
        out.print(f"{log}: {verdict.lines} record(s), the chain verifies")
    else:
        out.print(f"{log}: {verdict.lines} record(s), does NOT verify:")
        for problem in problems:
            out.print(f"  {problem}", highlight=False)
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
