"""The repository explains itself: no code or doc points at files outside it."""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OUTSIDE = ("../shared/", "shared/notes/")


def tracked_text_files() -> list[Path]:
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    paths = [ROOT / name for name in listed.decode().split("\0") if name]
    return [p for p in paths if p.suffix in {".py", ".md", ".sh", ".yaml", ".toml", ".txt", ".hcl", ".service", ""}
            and p.is_file()]


def test_nothing_points_outside_the_repo():
    this_file = Path(__file__).resolve()
    offenders = [
        f"{path.relative_to(ROOT)}:{number}"
        for path in tracked_text_files() if path != this_file
        for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1)
        if any(marker in line for marker in OUTSIDE)
    ]
    assert not offenders, f"references to files outside the repository: {offenders}"
