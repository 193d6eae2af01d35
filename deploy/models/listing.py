"""``citadel model list``: what the store holds, read from each manifest (no Vault needed).

A listing is not a verification: it reads ``manifest.json`` as it is; ``citadel model
verify`` checks signatures and every chunk.

Example::

    >>> [(r["name"], r["revision"]) for r in list_models(Path("/srv/models"))]   # doctest: +SKIP
    [('llama-3-8b', 'r1')]
"""

from __future__ import annotations

from pathlib import Path

from citadel_runtime import sealed
from deploy.models.location import revisions


def list_models(root: Path) -> list[dict]:
    rows = []
    for model, rev, directory in revisions(root):
        row = {"name": model, "revision": rev, "path": str(directory)}
        try:
            manifest = sealed.Manifest.from_json((directory / sealed.MANIFEST).read_bytes())
            row.update(created=manifest.created, files=len(manifest.files), bytes=sum(f.size for f in manifest.files),
                       key_version=manifest.key_version, error=None)
        except (OSError, sealed.SealError) as exc:
            row.update(created=None, files=None, bytes=None, key_version=None,
                       error=str(exc) if isinstance(exc, sealed.SealError) else f"{sealed.MANIFEST}: unreadable")
        rows.append(row)
    return rows
