"""``citadel model``: seal, verify, list and rekey encrypted, signed models; export the signing key.

The work is in :mod:`deploy.models` (controller side) and :mod:`citadel_runtime.sealed`
(the format, shared with hosts); this module only parses options, calls them, and prints.
No data key is ever printed, logged or passed in argv: keys are unwrapped in memory and
registered for redaction the moment Vault returns them.

Example::

    citadel model seal ./llama-3-8b --name llama-3-8b --revision r1 -i site.yaml --store /srv/models
    citadel model verify llama-3-8b/r1 -i site.yaml --store /srv/models
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from citadel_runtime.sealed import SealError
from deploy.cli.common import (
    InventoryOption,
    JsonOption,
    TokenFileOption,
    err,
    fail,
    load_site,
    out,
    vault_call,
    vault_client,
)
from deploy.models import ModelError
from deploy.models.keys import Keys
from deploy.models.listing import list_models
from deploy.models.location import new_revision, parse_ref, store_root
from deploy.models.rekey import rekey_models
from deploy.models.seal import seal_model, seal_total
from deploy.models.verify import verify_models, verify_total
from deploy.progress import byte_bars
from deploy.secrets.store import Store
from deploy.steps import size

STORE_HELP = "The model store (a directory of NAME/REVISION/ folders). Default: $CITADEL_MODEL_STORE."

model_app = typer.Typer(
    help=(
        "Encrypted, signed model storage. `seal` encrypts every file of a model directory with AES-256-GCM "
        "under a fresh data key (wrapped by Vault transit key model-data) and signs it with transit key "
        "model-signing, in the OpenSSF model-signing format; hosts check the signature offline with the "
        "exported public key before decrypting. The store holds only ciphertext, manifests and signatures. "
        "Vault: BAO_ADDR/VAULT_ADDR or the inventory's vault.address; the operator's token from "
        "--token-file, BAO_TOKEN/VAULT_TOKEN or BAO_TOKEN_FILE/VAULT_TOKEN_FILE (never an argument). "
        "Format: docs/sealed-model-format.md."
    ),
    no_args_is_help=True,
)

StoreOption = Annotated[Path | None, typer.Option("--store", help=STORE_HELP, show_default=False)]
WorkersOption = Annotated[
    int | None, typer.Option("--workers", min=1, help="Processes for encryption/decryption. Default: all cores.")
]


def _root(store: Path | None) -> Path:
    return _call(store_root, store)


def _call(function, *args, **kwargs):
    """`function(...)` with Citadel's errors turned into exits: 2 bad input, 1 failed checks or Vault."""
    try:
        return vault_call(function, *args, **kwargs)
    except ModelError as exc:
        raise fail(str(exc), code=exc.exit_code) from None
    except SealError as exc:
        raise fail(str(exc), code=1) from None


def _keys(inventory: Path, token_file: Path | None):
    site = load_site(inventory)
    return Keys(Store(vault_client(site, token_file), site.vault.kv_mount), site.vault.transit_mount)


def _size(count: int | None) -> str:
    return "-" if count is None else size(count)


@model_app.command("seal")
def model_seal(
    source: Annotated[Path, typer.Argument(help="The model directory (regular files only; symlinks are refused).",
                                           show_default=False)],
    name: Annotated[str, typer.Option("--name", help="Model name (letters, digits, '.', '_', '-').", show_default=False)],
    inventory: InventoryOption,
    revision: Annotated[
        str | None, typer.Option("--revision", help="Revision label. Default: the UTC time, e.g. 20250101T120000Z.",
                                    show_default=False)
    ] = None,
    store: StoreOption = None,
    workers: WorkersOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Encrypt and sign a model directory into STORE/NAME/REVISION/.

    Every regular file is encrypted in 4 MiB AES-256-GCM chunks under a new random 256-bit
    data key from transit key model-data; only its wrapped form (vault:vN:...) is stored,
    in the manifest and, as the model's current key, in KV gpu/models/NAME. The manifest
    and an OpenSSF model-signing bundle (model.sig, over the plaintext files' sha256) are
    signed by transit key model-signing. Top-level .git, .gitattributes, .github and
    .gitignore are skipped, like model_signing does; symlinks and special files are refused.

    The sealed directory appears whole (one rename) or not at all; an existing revision is
    never overwritten. Progress (bytes, rate, time left) is shown on stderr, except with
    --json or when stderr is not a terminal.

    Exit 0 sealed; 1 Vault or I/O failed (nothing left behind); 2 bad input.

    Example: `citadel model seal ./llama-3-8b --name llama-3-8b --revision r1 -i site.yaml --store /srv/models`
    """
    root = _root(store)
    keys = _keys(inventory, token_file)
    with byte_bars(err, enabled=not as_json) as bars:
        row = bars.add_task(f"sealing {name}", total=_call(seal_total, source), note="")
        result = _call(seal_model, keys, root, source, name, revision or new_revision(), workers=workers,
                       progress=lambda count: bars.advance(row, count))
    if as_json:
        out.print_json(json.dumps(result.as_dict()))
        return
    out.print(f"sealed {result.name}/{result.revision}: {result.files} file(s), {_size(result.bytes)}, data key "
              f"wrapped by model-data v{result.key_version}", highlight=False)
    out.print(f"  {result.directory}", highlight=False)
    if result.kv_updated:
        out.print(f"  KV gpu/models/{result.name} now holds this revision's wrapped key", highlight=False)


@model_app.command("verify")
def model_verify(
    ref: Annotated[str, typer.Argument(help="NAME (every revision) or NAME/REVISION.", show_default=False)],
    inventory: InventoryOption,
    store: StoreOption = None,
    workers: WorkersOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Check a sealed model completely: signatures, manifest and every chunk's tag.

    Checks, in order: manifest.sig with every public key version of transit key
    model-signing; manifest.json identical to the signed copy; model.sig (the OpenSSF
    bundle) signed too, its statement the one the manifest names, and its files and
    digests equal to the manifest's; each sealed file's exact size; then, with the data
    key unwrapped through Vault by your token (memory only), every chunk's AES-GCM tag and
    each file's plaintext sha256. No plaintext is written. Progress (bytes read, rate, time
    left) is shown on stderr, except with --json or when stderr is not a terminal.

    Exit 0 when every revision checks; 1 when one fails (the message names the file, the
    chunk and the check) or Vault fails; 2 on bad input.

    Example: `citadel model verify llama-3-8b/r1 -i site.yaml --store /srv/models --json`
    """
    root = _root(store)
    name, revision = _call(parse_ref, ref)
    keys = _keys(inventory, token_file)
    with byte_bars(err, enabled=not as_json) as bars:
        row = bars.add_task(f"verifying {ref}", total=_call(verify_total, root, name, revision), note="")
        rows = _call(verify_models, keys, root, name, revision, workers, progress=lambda count: bars.advance(row, count))
    failed = [r for r in rows if not r["ok"]]
    if as_json:
        out.print_json(json.dumps({"models": rows, "failed": len(failed)}))
    else:
        for r in rows:
            if r["ok"]:
                out.print(f"[green]ok[/] {r['name']}/{r['revision']}: {r['files']} file(s), {_size(r['bytes'])}, "
                          f"signatures and every chunk verified", highlight=False)
            else:
                out.print(f"[bold red]FAILED[/] {r['name']}/{r['revision']}: {r['error']}", highlight=False, soft_wrap=True)
    raise typer.Exit(1 if failed else 0)


@model_app.command("list")
def model_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List the sealed models in the store, from their manifests (no Vault needed).

    One row per NAME/REVISION: when it was sealed, its files and plaintext size, and the
    version of model-data wrapping its data key (lower than the key's latest means it
    needs `citadel model rekey`). Listing reads manifests as they are; it proves nothing:
    use `citadel model verify` for that.

    Exit 0; 2 when the store is missing.

    Example: `citadel model list --store /srv/models --json`
    """
    rows = _call(list_models, _root(store))
    if as_json:
        out.print_json(json.dumps({"models": rows}))
        return
    table = Table(title="Sealed models", title_justify="left")
    for column in ("name", "revision", "sealed at", "files", "size", "key version"):
        table.add_column(column, no_wrap=column in ("name", "revision"))
    for r in rows:
        if r["error"]:
            table.add_row(r["name"], r["revision"], f"[red]{r['error']}[/]", "-", "-", "-")
        else:
            table.add_row(r["name"], r["revision"], r["created"], str(r["files"]), _size(r["bytes"]), f"v{r['key_version']}")
    out.print(table)


@model_app.command("push")
def model_push(
    inventory: InventoryOption = ...,
    model: Annotated[
        list[str] | None, typer.Option("--model", "-m", help="Only this model (repeatable). Default: every assigned one.")
    ] = None,
    limit: Annotated[
        list[str] | None, typer.Option("--limit", "-l", help="Only this host (repeatable). Default: every host serving models.")
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Copy sealed models to the hosts that serve them (rsync over the deploy's SSH).

    Each host gets the models its inventory entry lists, at the revision `models:` names,
    in /var/lib/citadel/models/NAME/REVISION/ (root only). Only files that differ are
    sent (a rekey sends one manifest), and an interrupted push resumes where it stopped.
    Only ciphertext, signatures and manifests travel. Host keys are pinned as for
    `citadel deploy`. The model-store role (`citadel deploy`) pushes too, and unseals.

    Up to 8 hosts are pushed at once, each with its own progress bar on stderr (none with
    --json, or when stderr is not a terminal); a host that fails does not stop the others.

    Exit 0 when every host has its models; 1 when a host failed (named, with what to
    re-run); 2 on bad input (an unknown model, a revision not sealed in the store).

    Example: `citadel model push -i site.yaml --store /srv/models --model llama-3-8b`
    """
    # pyinfra takes longer to import than the rest of the CLI together: only commands that connect load it.
    from deploy.models.push import checked_plan, push_models, push_totals

    site = load_site(inventory)
    root = _root(store)
    totals = push_totals(root, _call(checked_plan, site, root, limit, model))
    with byte_bars(err, enabled=not as_json) as bars:
        rows = {host: bars.add_task(host, total=total, note="") for host, total in totals.items()}
        try:
            done = _call(push_models, site, root, hosts=limit, models=model,
                         progress=lambda host, count: bars.advance(rows[host], count))
        finally:
            for task in bars.tasks:  # the hosts that did not finish: the error below names them
                if not task.finished:
                    bars.update(task.id, note="[red]failed[/]")
    if as_json:
        out.print_json(json.dumps({"hosts": done}))
        return
    if not done:
        out.print("no host serves these models (hosts.NAME.models in the inventory)")
    for host, lines in done.items():
        for line in lines:
            out.print(f"{host}: {line}")


@model_app.command("rekey")
def model_rekey(
    ref: Annotated[str, typer.Argument(help="NAME (every revision) or NAME/REVISION.", show_default=False)],
    inventory: InventoryOption,
    store: StoreOption = None,
    token_file: TokenFileOption = None,
    as_json: JsonOption = False,
) -> None:
    """Rewrap a model's data key to the latest model-data version and sign it again.

    For use after `citadel secrets rotate transit-key model-data`, during the overlap and
    before `--finish`: transit rewraps each manifest's data key (the plaintext never leaves
    Vault), the manifest and bundle are signed again with the latest model-signing
    version, and KV gpu/models/NAME is updated when it holds that revision's key. The
    data key is unchanged, so no weight is re-encrypted and the sealed files stay
    byte-identical. Signatures are checked before anything changes; a revision already
    at the latest version is left alone, so re-running is safe.

    Exit 0 done; 1 a check or Vault failed; 2 bad input.

    Example: `citadel model rekey llama-3-8b -i site.yaml --store /srv/models`
    """
    root = _root(store)
    name, revision = _call(parse_ref, ref)
    rows = _call(rekey_models, _keys(inventory, token_file), root, name, revision)
    if as_json:
        out.print_json(json.dumps({"models": rows}))
        return
    for r in rows:
        what = f"rewrapped v{r['from']} -> v{r['key_version']}" if r["changed"] else f"already at v{r['key_version']}"
        kv = "; KV copy updated" if r["kv_updated"] else ""
        out.print(f"{r['name']}/{r['revision']}: {what}{kv}", highlight=False)


@model_app.command("public-key")
def model_public_key(
    inventory: InventoryOption,
    all_versions: Annotated[
        bool, typer.Option("--all-versions", help="Every version's key (newest first), to check models signed before a rotation.")
    ] = False,
    token_file: TokenFileOption = None,
) -> None:
    """Print the PEM public key of transit key model-signing (its latest version).

    Hosts and auditors verify sealed models offline with it: Citadel's own check, and the
    standard tool on an unsealed copy: `model_signing verify key DIR --signature
    model.sig --public_key pub.pem`. The private key never leaves Vault.

    Example: `citadel model public-key -i site.yaml > model-signing.pem`
    """
    keys = _keys(inventory, token_file)
    pem = _call(keys.public_key_pem, all_versions)
    out.print(pem.decode().rstrip("\n"), highlight=False, soft_wrap=True)
    err.print("model-signing public key(s) printed; pass the PEM to hosts and auditors", highlight=False)
