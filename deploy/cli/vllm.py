"""``citadel vllm``: the model server's offline install, prepared on the controller.

Example::

    citadel vllm wheelhouse -i site.yaml
"""

from __future__ import annotations

import json

import typer

from deploy.cli.common import InventoryOption, JsonOption, err, fail, load_site, out
from deploy.vllm import VllmError
from deploy.vllm.wheelhouse import ensure

vllm_app = typer.Typer(
    help=(
        "The isolated vLLM model server. Hosts have no package index: the controller builds a wheelhouse "
        "(every wheel, pinned by sha256) that `citadel deploy` (role vllm) installs from with no index."
    ),
    no_args_is_help=True,
)


@vllm_app.command("wheelhouse")
def wheelhouse(inventory: InventoryOption, as_json: JsonOption = False) -> None:
    """Build (or find cached) the wheelhouse the inventory's `vllm:` section names.

    Runs `pip wheel` for `vllm.package` and `vllm.requirements` against `vllm.index_url`
    (the hospital's mirror) or pip's own configuration, drops `vllm.exclude`, and writes
    `requirements.lock` with one sha256 per wheel. Cached under
    ~/.cache/citadel/wheelhouse/KEY/ (KEY: a hash of those settings and this Python), so a
    deploy reuses it; build it ahead of a maintenance window with this command. Its
    Python must be the hosts' (Debian 12: 3.11).

    Exit 0 when ready, 1 when pip failed (nothing kept), 2 when `vllm.package` is unset.
    """
    site = load_site(inventory)
    try:
        with err.status("vLLM wheelhouse") as status:
            def step(text: str) -> None:  # each pip step stays on screen; the spinner shows the latest
                err.print(text, markup=False, highlight=False)
                status.update(text)

            house = ensure(site.vllm, progress=step)
    except VllmError as exc:
        raise fail(str(exc), code=exc.exit_code) from None
    wheels = house.wheels()
    summary = {"key": house.key, "path": str(house.root), "wheels": len(wheels),
               "bytes": sum(w.stat().st_size for w in wheels), **house.meta()}
    if as_json:
        out.print_json(json.dumps(summary))
    else:
        out.print(f"wheelhouse {house.key}: {len(wheels)} wheels, {summary['bytes'] / 2**20:.0f} MiB, in {house.root}")
