"""The internal model-server key: what the gateway presents to vLLM on the GPU hosts.

Both sides read the same overlap document (see :mod:`deploy.secrets.overlap`), written to
``gpu/internal-api-key`` (vLLM accepts ``current`` or ``previous``) and
``gateway/internal-api-key`` (the gateway presents ``current``, and retries with
``previous`` on a 401 during the overlap). Whichever host picks the new document up first,
some pair of keys still matches, so no request fails; ``--finish`` retires the old key once
every host has had the grace period to catch up.

Rotation steps (each skipped on a re-run when already done): record the intent (target
version), write the GPU side, write the gateway side, record the overlap.

Example::

    >>> result = rotate(store, grace=dt.timedelta(hours=1))       # doctest: +SKIP
    >>> result.phase, result.version
    ('overlap', 2)
    >>> finish(store).phase                                         # doctest: +SKIP
    'done'
"""

from __future__ import annotations

import datetime as dt

from deploy.secrets import overlap
from deploy.secrets.rotation import Result, Rotation
from deploy.secrets.store import Store, now, vault_errors
from deploy.vault import VaultError

KIND = "internal-api-key"
NAME = "vllm"
PATHS = ("gpu/internal-api-key", "gateway/internal-api-key")  # order matters: hosts that check first
PREFIX = "ik_"
COMMAND = "citadel secrets rotate internal-api-key"
DEFAULT_GRACE = dt.timedelta(hours=1)


def _version(doc: dict | None) -> int:
    return int(((doc or {}).get("current") or {}).get("version", 0))


def rotate(store: Store, grace: dt.timedelta, progress=None) -> Result:
    """Start (or resume) a rotation: a new key, the old one accepted until now + `grace`."""
    with vault_errors(f"secret {KIND}", COMMAND):
        run = Rotation(store, KIND, NAME, progress=progress)
        first, first_version = store.read(PATHS[0])
        if run.phase == "overlap":
            if overlap.overlap_open(first or {}, now()):
                raise VaultError(
                    f"{KIND}: the previous key is still accepted until {first['previous_expires']}; "
                    f"run `{COMMAND} --finish` first",
                    exit_code=2,
                )
            finish(store, progress=progress, run=run)  # its grace is over: retiring it breaks nothing
        if not run.resuming:
            run.begin(target=_version(first) + 1)
        target = int(run.state["target"])
        if _version(first) < target:
            doc = overlap.start(first or {}, _new_slot(target), grace, now())
            store.write(PATHS[0], doc, first_version)
            run.step(f"wrote version {target} to {PATHS[0]} (old key still accepted)")
        else:
            doc = first
        for path in PATHS[1:]:
            current, version = store.read(path)
            if _version(current) < target:
                store.write(path, doc, version)
                run.step(f"wrote version {target} to {path}")
        previous = (doc.get("previous") or {}).get("version")
        run.result.version, run.result.previous_version = target, previous
        run.result.overlap_until = doc.get("previous_expires")
        versions = {"to": target, "from": previous}
        run.reach("overlap" if previous else "done", versions=versions, overlap_until=doc.get("previous_expires"))
        return run.result


def _new_slot(version: int) -> dict:
    return overlap.slot(overlap.new_key(PREFIX).reveal(), version, now(), hashed=False)


def finish(store: Store, progress=None, run: Rotation | None = None) -> Result:
    """Retire the previous key everywhere; a no-op when no overlap is open."""
    with vault_errors(f"secret {KIND}", f"{COMMAND} --finish"):
        run = run or Rotation(store, KIND, NAME, action="finish", progress=progress)
        run.refuse_unfinished(COMMAND)
        if run.phase != "overlap":
            run.result.notes.append("no rotation in overlap: nothing to finish")
            return run.result
        for path in PATHS:
            doc, version = store.read(path)
            if doc and doc.get("previous"):
                store.write(path, overlap.finish(doc), version)
                run.step(f"retired the previous key at {path}")
        run.result.version = int(run.state.get("target", 0))
        run.reach("done", versions={"to": run.result.version})
        return run.result


def read_pair(store: Store) -> dict:
    """The document the GPU hosts check presented keys against (for status and tests)."""
    doc, _ = store.read(PATHS[0])
    return doc or {}
