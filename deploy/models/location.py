"""Where sealed models live: ``STORE/NAME/REVISION/`` (see docs/sealed-model-format.md).

The store is a plain directory (local disk, or an NFS share the hosts read); it holds
only ciphertext, signatures and manifests, never a plaintext key or weight.

Example::

    >>> store_root(None, env={"CITADEL_MODEL_STORE": "/srv/models"})
    PosixPath('/srv/models')
    >>> parse_ref("llama-3-8b/r2")
    ('llama-3-8b', 'r2')
"""

from __future__ import annotations

import datetime as dt
import os
import re
from pathlib import Path

from deploy.models import ModelError

ENV = "CITADEL_MODEL_STORE"
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def store_root(option: Path | None, env: dict | None = None) -> Path:
    """`--store`, else $CITADEL_MODEL_STORE, else a clear error."""
    env = os.environ if env is None else env
    root = option or (Path(env[ENV]) if env.get(ENV) else None)
    if root is None:
        raise ModelError(f"no model store: give --store PATH or set {ENV}")
    return Path(root)


def check_name(label: str, value: str) -> str:
    if not _NAME.match(value or ""):
        raise ModelError(f"{label} {value!r}: use letters, digits, '.', '_', '-' (at most 128, starting with a letter or digit)")
    return value


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``NAME`` or ``NAME/REVISION``."""
    name, _, revision = ref.partition("/")
    check_name("model", name)
    return name, (check_name("revision", revision) if revision else None)


def new_revision() -> str:
    """A default revision: the UTC time, sortable (``20250101T120000Z``)."""
    return dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%SZ")


def revisions(root: Path, name: str | None = None, revision: str | None = None) -> list[tuple[str, str, Path]]:
    """(name, revision, directory) of the sealed models under `root`, optionally one name or one revision."""
    if not root.is_dir():
        raise ModelError(f"model store {root}: not a directory")
    names = [name] if name else sorted(p.name for p in root.iterdir() if p.is_dir() and _NAME.match(p.name))
    found = []
    for model in names:
        folder = root / model
        if not folder.is_dir():
            continue
        for child in sorted(folder.iterdir()):
            if child.is_dir() and _NAME.match(child.name) and (revision is None or child.name == revision):
                found.append((model, child.name, child))
    if (name or revision) and not found:
        raise ModelError(f"model {name}{'/' + revision if revision else ''}: not in the store {root}")
    return found
