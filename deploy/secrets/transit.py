"""Transit keys: rotate, rewrap the model data keys they wrap, then retire the old version.

Sealed models keep their data key wrapped by transit key ``model-data`` in KV at
``gpu/models/<model>`` (field ``wrapped_key``, ``vault:vN:...``; GPU hosts read it and
ask transit to decrypt it). Rotating ``model-data``:

1. record the intent (target version = latest + 1);
2. rotate the key in transit, unless it is already at the target (a re-run);
3. rewrap every stored data key below the target (each is its own check-and-set write, and
   a wrapped key still decrypts after the rewrap, so a failure here breaks nothing);
4. overlap: old ciphertexts still decrypt. ``--finish`` rewraps any straggler, then raises
   ``min_decryption_version`` to the target: only then are old versions refused.

The signing key (``model-signing``) and the audit-chain HMAC key are rotated in one step:
old versions must keep verifying the manifests and log records made with them.

Example::

    >>> rotate(store, transit_mount="citadel-transit", name="model-data").phase   # doctest: +SKIP
    'overlap'
"""

from __future__ import annotations

import re

from deploy.secrets.rotation import Result, Rotation
from deploy.secrets.store import Store, vault_errors
from deploy.vault import VaultError
from deploy.vault.bootstrap import TRANSIT_KEYS

KIND = "transit-key"
MODELS_PREFIX = "gpu/models"
WRAPPING_KEYS = {"model-data"}  # keys whose ciphertexts Citadel stores, and so rewraps
_VERSION = re.compile(r"^vault:v(\d+):")


def ciphertext_version(ciphertext: str) -> int:
    """The key version a transit ciphertext was made with (``vault:v3:...`` -> 3)."""
    found = _VERSION.match(ciphertext or "")
    if not found:
        raise ValueError("not a transit ciphertext")
    return int(found.group(1))


def _command(name: str, finishing: bool = False) -> str:
    return f"citadel secrets rotate transit-key {name}{' --finish' if finishing else ''}"


def check_name(name: str) -> str:
    if name not in TRANSIT_KEYS:
        raise VaultError(f"transit key {name!r}: Citadel's keys are {', '.join(TRANSIT_KEYS)}", exit_code=2)
    return name


def key_info(store: Store, mount: str, name: str) -> dict:
    return store.client.secrets.transit.read_key(name, mount_point=mount)["data"]


def wrapped_keys(store: Store) -> list[str]:
    """Models with a wrapped data key in KV."""
    return [key for key in store.list(MODELS_PREFIX) if not key.endswith("/")]


def seal_data_key(store: Store, mount: str, model: str) -> str:
    """Make a new data key for `model`, stored only wrapped (what `citadel model seal` builds on)."""
    wrapped = store.client.secrets.transit.generate_data_key("model-data", "wrapped", mount_point=mount)
    ciphertext = wrapped["data"]["ciphertext"]
    _, version = store.read(f"{MODELS_PREFIX}/{model}")
    store.write(f"{MODELS_PREFIX}/{model}", {"wrapped_key": ciphertext, "transit_key": "model-data"}, version)
    return ciphertext


def _rewrap_all(store: Store, mount: str, name: str, target: int, run: Rotation) -> int:
    rewrapped = 0
    for model in wrapped_keys(store):
        path = f"{MODELS_PREFIX}/{model}"
        doc, version = store.read(path)
        if not doc or doc.get("transit_key", "model-data") != name:
            continue
        if ciphertext_version(doc["wrapped_key"]) >= target:
            continue
        fresh = store.client.secrets.transit.rewrap_data(name, doc["wrapped_key"], mount_point=mount)
        store.write(path, {**doc, "wrapped_key": fresh["data"]["ciphertext"]}, version)
        rewrapped += 1
        run.step(f"rewrapped the data key of model {model} to version {target}")
    return rewrapped


def rotate(store: Store, mount: str, name: str, progress=None) -> Result:
    """Start (or resume) the rotation of transit key `name` (see the module docstring)."""
    check_name(name)
    with vault_errors(f"transit key {mount}/{name}", _command(name)):
        run = Rotation(store, KIND, name, progress=progress)
        run.refuse_overlap(f"transit key {name}", _command(name, True))
        latest = int(key_info(store, mount, name)["latest_version"])
        if not run.resuming:
            run.begin(target=latest + 1, previous=latest)
        target = int(run.state["target"])
        if latest < target:
            store.client.secrets.transit.rotate_key(name, mount_point=mount)
            run.step(f"rotated {mount}/{name} to version {target}")
        if name in WRAPPING_KEYS:
            count = _rewrap_all(store, mount, name, target, run)
            run.result.notes.append(f"{count} data key(s) rewrapped; old ciphertexts still decrypt until --finish")
        else:
            run.result.notes.append("old versions stay valid for verifying what they signed or chained")
        run.result.version, run.result.previous_version = target, int(run.state.get("previous", target - 1))
        versions = {"to": target, "from": run.result.previous_version}
        run.reach("overlap" if name in WRAPPING_KEYS else "done", versions=versions)
        return run.result


def finish(store: Store, mount: str, name: str, progress=None) -> Result:
    """Rewrap stragglers, then refuse decryption with versions below the target."""
    check_name(name)
    with vault_errors(f"transit key {mount}/{name}", _command(name, True)):
        run = Rotation(store, KIND, name, action="finish", progress=progress)
        run.refuse_unfinished(_command(name))
        if run.phase != "overlap":
            run.result.notes.append("no rotation in overlap: nothing to finish")
            return run.result
        target = int(run.state["target"])
        _rewrap_all(store, mount, name, target, run)
        store.client.secrets.transit.update_key_configuration(name, min_decryption_version=target, mount_point=mount)
        run.step(f"raised min_decryption_version of {mount}/{name} to {target}")
        run.result.version = target
        run.reach("done", versions={"to": target, "min_decryption_version": target})
        return run.result
