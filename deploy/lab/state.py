"""Where a lab lives on this machine and the state.json that ``down`` needs to remove it."""

from __future__ import annotations

import json
import os
import re
import threading
from pathlib import Path
from typing import Any

from deploy.lab.errors import LabError

STATE_FILE = "state.json"
_NAME = re.compile(r"^[a-z][a-z0-9-]{0,23}$")
_lock = threading.Lock()


def base_dir() -> Path:
    return Path(os.environ.get("CITADEL_LAB_DIR", "/var/lib/citadel-lab"))


def check_name(name: str) -> str:
    if not _NAME.match(name):
        raise LabError(
            f"the lab name {name!r} is not usable: use 1-24 lowercase letters, digits and dashes, "
            "starting with a letter (e.g. citadel)."
        )
    return name


def lab_dir(name: str) -> Path:
    return base_dir() / check_name(name)


def load(name: str) -> dict[str, Any] | None:
    """The lab's recorded state, or None when no lab of that name exists."""
    path = lab_dir(name) / STATE_FILE
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as error:
        raise LabError(f"the lab state file {path} is unreadable ({error}); remove it by hand after checking.") from error


def save(name: str, state: dict[str, Any]) -> None:
    """Write state.json atomically; safe to call from several threads."""
    directory = lab_dir(name)
    with _lock:
        directory.mkdir(parents=True, exist_ok=True)
        partial = directory / (STATE_FILE + ".partial")
        partial.write_text(json.dumps(state, indent=2, sort_keys=True) + "\n")
        os.replace(partial, directory / STATE_FILE)


def other_labs(name: str) -> list[str]:
    """Names of other labs that still have a state file under the base directory."""
    base = base_dir()
    if not base.is_dir():
        return []
    return sorted(
        p.name for p in base.iterdir() if p.name != name and (p / STATE_FILE).is_file()
    )
