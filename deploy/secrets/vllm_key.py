"""The model server's own API key: what the keyguard presents to vLLM on the same GPU host.

vLLM checks it (``VLLM_API_KEY``) on its /v1 routes. It never leaves the GPU hosts' group:
``citadel-agent@gpu`` renders it into ``/etc/citadel/secrets/keyguard/vllm.env`` (the
keyguard's, 0400), systemd reads that file into vLLM's environment, and it is never on a
command line. Made once by ``citadel vault bootstrap``; a new value written here reaches
hosts within the agent's render interval, which reloads the keyguard and restarts vLLM.

Rotation (``citadel secrets rotate vllm-api-key``, then ``--finish``), and why its overlap
is in the keyguard: vLLM 0.32 takes one key from its environment (several only through
``--api-key`` on its command line, which every local user can read) and reads it only at
start. So vLLM never accepts two keys at once; instead the keyguard holds both during the
overlap (the new one from ``vllm.env``, the old one remembered across its reload) and
presents to each model server the key that server accepts, the new one only once it does
(:mod:`citadel_runtime.upstream_key`). The document at ``gpu/vllm-api-key``::

    {"value": "vk_...",                               # the key in force: the agent's template
     "current":  {"version": 2, "created": ..., "key_id": ...},
     "previous": {"version": 1, "created": ..., "key_id": ...},   # metadata only
     "previous_expires": "2025-01-01T01:00:00+00:00"}

The old key's value is not kept: no host needs it from Vault. ``previous`` and
``previous_expires`` say that an overlap is open; a new rotation is refused until it is
finished (or expired), because a keyguard remembers only one old key: a second new key
before every vLLM had restarted on the first would leave one on a key no one presents.
``--finish`` records the end of the overlap. The agent's template is unchanged (it renders
``value``).

Threat: inference through direct access to the model server (defence in depth behind the
Unix socket's permissions and the keyguard); a key rotation failing requests.

Example::

    >>> seed(store)                                                 # doctest: +SKIP
    True
    >>> rotate(store, grace=dt.timedelta(hours=1)).phase            # doctest: +SKIP
    'overlap'
    >>> finish(store).phase                                         # doctest: +SKIP
    'done'
"""

from __future__ import annotations

import datetime as dt
import secrets

from deploy.secrets import overlap
from deploy.secrets.rotation import Result, Rotation
from deploy.secrets.store import Store, now, vault_errors
from deploy.vault import VaultError

PATH = "gpu/vllm-api-key"
PREFIX = "vk_"
KIND = "vllm-api-key"
NAME = "vllm"
COMMAND = "citadel secrets rotate vllm-api-key"
DEFAULT_GRACE = dt.timedelta(hours=1)


def seed(store: Store) -> bool:
    """Write a first key when there is none; False when one exists (never replaced here)."""
    if store.read(PATH)[0] is not None:
        return False
    store.write(PATH, {"value": PREFIX + secrets.token_urlsafe(32)}, 0)
    return True


def metadata(doc: dict | None) -> dict:
    """The document without any key value: current (version 1 for a seeded key), previous, expiry."""
    doc = doc or {}
    current = doc.get("current")
    if current is None and doc.get("value"):
        current = {"version": 1, "created": None, "key_id": overlap.key_id(doc["value"])}  # seeded, never rotated
    return {"current": current, "previous": doc.get("previous"),
            "previous_expires": doc.get("previous_expires")}


def version(doc: dict | None) -> int:
    return int((metadata(doc)["current"] or {}).get("version", 0))


def _refuse_open_overlap(doc: dict) -> None:
    raise VaultError(
        f"{KIND}: the previous key may still be presented until {doc['previous_expires']} (GPU hosts whose vLLM "
        f"has not restarted yet); run `{COMMAND} --finish` first",
        exit_code=2,
    )


def rotate(store: Store, grace: dt.timedelta, progress=None) -> Result:
    """Start (or resume) a rotation: a new key in force, the old one presented until vLLM takes the new."""
    with vault_errors(f"secret {KIND}", COMMAND):
        run = Rotation(store, KIND, NAME, progress=progress)
        doc, doc_version = store.read(PATH)
        if run.phase == "overlap":
            if overlap.overlap_open(metadata(doc), now()):
                _refuse_open_overlap(doc)
            finish(store, progress=progress, run=run)  # its grace is over: recording its end breaks nothing
            doc, doc_version = store.read(PATH)
        if not run.resuming:
            run.begin(target=version(doc) + 1)
        target = int(run.state["target"])
        if version(doc) < target:
            value = overlap.new_key(PREFIX).reveal()
            new = overlap.slot(value, target, now(), hashed=False)
            del new["value"]  # kept once, at the top, where the agent's template reads it
            doc = {"value": value, **overlap.start(metadata(doc), new, grace, now())}
            store.write(PATH, doc, doc_version)
            run.step(f"wrote version {target} to {PATH} (GPU hosts take it within 30 s; each keyguard presents it "
                     "to a vLLM once that vLLM accepts it)")
        meta = metadata(doc)
        previous = (meta["previous"] or {}).get("version")
        run.result.version, run.result.previous_version = target, previous
        run.result.overlap_until = meta["previous_expires"]
        run.reach("overlap" if previous else "done", versions={"to": target, "from": previous},
                  overlap_until=meta["previous_expires"])
        return run.result


def finish(store: Store, progress=None, run: Rotation | None = None) -> Result:
    """Record the end of the overlap (no old key may be presented any more); a no-op when none is open."""
    with vault_errors(f"secret {KIND}", f"{COMMAND} --finish"):
        run = run or Rotation(store, KIND, NAME, action="finish", progress=progress)
        run.refuse_unfinished(COMMAND)
        if run.phase != "overlap":
            run.result.notes.append("no rotation in overlap: nothing to finish")
            return run.result
        doc, doc_version = store.read(PATH)
        if doc and doc.get("previous"):
            store.write(PATH, {**doc, **overlap.finish(metadata(doc))}, doc_version)
            run.step(f"ended the overlap at {PATH}")
        run.result.version = int(run.state.get("target", 0))
        run.reach("done", versions={"to": run.result.version})
        return run.result


def read_meta(store: Store) -> dict:
    """The key's metadata, never its value (for status and tests)."""
    return metadata(store.read(PATH)[0])
