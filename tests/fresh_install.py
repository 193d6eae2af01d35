"""Citadel installed as a site would install it: from its wheel, into a fresh venv, not editable.

An editable install reads the checkout, so it hides a data file missing from the wheel; these
helpers build the real wheel from a clean copy of the sources and run the installed
``citadel``, from a folder outside the checkout, with pip's configuration on this machine
(its local mirrors and find-links) shut out.

Example::

    wheel = build_wheel(tmp_path / "wheel")
    venv = make_venv(tmp_path / "venv", dependencies_from=project_site_packages())
    pip_install(venv, "--no-deps", str(wheel))
    run_installed(venv, "citadel", "--version")
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("deploy", "inventory", "roles", "hardening", "citadel_runtime")
WHEEL_SOURCES = ("pyproject.toml", "README.md", *PACKAGES)


def isolated_pip_env() -> dict[str, str]:
    """The environment with no pip configuration: no config files, no PIP_* settings."""
    env = {key: value for key, value in os.environ.items() if not key.startswith("PIP_")}
    env.update(PIP_CONFIG_FILE=os.devnull, PIP_DISABLE_PIP_VERSION_CHECK="1", PIP_NO_INPUT="1")
    return env


def run(*argv: str | Path, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """`argv`, checked; its output in the assertion message when it fails."""
    done = subprocess.run(
        [str(arg) for arg in argv], capture_output=True, text=True, timeout=timeout,
        env=isolated_pip_env(), cwd=cwd,
    )
    assert done.returncode == 0, f"{' '.join(map(str, argv))} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done


def build_wheel(destination: Path) -> Path:
    """Citadel's wheel, built offline from a clean copy of the sources (no stale build/ folder)."""
    setuptools_major = int(version("setuptools").split(".")[0])
    assert setuptools_major >= 77, (
        f"setuptools {version('setuptools')} in {sys.prefix} cannot build the wheel offline: the test extra "
        "asks for setuptools>=77 (pyproject.toml); scripts/install.sh installs it"
    )
    source = destination / "source"
    source.mkdir(parents=True)
    for name in WHEEL_SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            shutil.copy2(REPO / name, source / name)
    run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation", "--no-index",
        "--wheel-dir", destination, source)
    return next(destination.glob("citadel-*.whl"))


def project_site_packages() -> Path:
    """The site-packages of the venv running the tests, which holds Citadel's dependencies."""
    return Path(sysconfig.get_paths()["purelib"])


def make_venv(path: Path, *, dependencies_from: Path | None = None, with_pip: bool = False) -> Path:
    """A fresh venv at `path`; `dependencies_from` (a site-packages) is appended to its path.

    A .pth line only adds the folder: the .pth files inside it, among them the editable
    install's, are not run, so `import roles` still finds the installed copy.
    """
    run(sys.executable, "-m", "venv", *(() if with_pip else ("--without-pip",)), path)
    if dependencies_from is not None:
        (venv_site_packages(path) / "citadel-test-dependencies.pth").write_text(f"{dependencies_from}\n")
    return path


def venv_site_packages(venv: Path) -> Path:
    return venv / "lib" / f"python{sys.version_info[0]}.{sys.version_info[1]}" / "site-packages"


def pip_install(venv: Path, *arguments: str) -> None:
    """`pip install arguments` into `venv`, with the tests' own pip (the venv may have none)."""
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "-q", "--no-index", *arguments)


def run_installed(venv: Path, program: str, *argv: str) -> subprocess.CompletedProcess:
    """`program` (citadel, python) of `venv`, run from its own folder, away from the checkout."""
    return run(venv / "bin" / program, *argv, cwd=venv)
