"""``citadel model rekey``: after ``model-data`` rotates, rewrap each manifest's data key and re-sign.

Transit ``rewrap`` re-encrypts the wrapped key under the latest version without the
plaintext leaving Vault; the data key itself, and so every sealed file, stays the same
(nothing is re-encrypted). The manifest and bundle are signed again with the latest
``model-signing`` version, and KV's copy is rewritten where it tracks that revision.
Run it for every model during a rotation's overlap, before ``--finish`` retires the old
version (after that, manifests still at the old version can no longer be unwrapped).

Example::

    >>> [r["key_version"] for r in rekey_models(keys, Path("/srv/models"), "llama-3-8b")]   # doctest: +SKIP
    [2]
"""

from __future__ import annotations

from pathlib import Path

from citadel_runtime import sealed
from deploy.models.keys import Keys
from deploy.models.location import revisions


def rekey_models(keys: Keys, root: Path, name: str, revision: str | None = None) -> list[dict]:
    public_keys = keys.public_key_pem(all_versions=True)
    latest = keys.latest_version()
    rows = []
    for model, rev, directory in revisions(root, name, revision):
        before = sealed.read_manifest(directory, public_keys, require_copy=False)
        if before.key_version >= latest:
            rows.append({"name": model, "revision": rev, "from": before.key_version, "key_version": before.key_version,
                         "changed": False, "kv_updated": False})
            continue
        wrapped = keys.rewrap(before.wrapped_key)
        after = sealed.resign(directory, public_keys, keys.signer(), wrapped)
        kv = keys.record_wrapped(model, rev, wrapped, only_if_revision=True)
        rows.append({"name": model, "revision": rev, "from": before.key_version, "key_version": after.key_version,
                     "changed": True, "kv_updated": kv})
    return rows
