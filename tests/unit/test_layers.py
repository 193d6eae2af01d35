"""The one-way layers of docs/architecture.md, enforced.

Every import in every module counts: at the top, inside a function, under ``if TYPE_CHECKING:``.
A module may import its own layer or a lower one; ``citadel_runtime`` (code that runs on the
hosts) sits beside the layers: anyone may import it, and it imports only the standard library
and ``cryptography``. The hardening catalog must load without pyinfra.
"""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("inventory", "hardening", "deploy", "roles", "citadel_runtime")

# Mirrors the table of docs/architecture.md. The longest matching prefix decides a module's layer.
LAYERS: dict[str, int] = {
    # 0: the inventory (schema, loader, pinned host keys)
    "inventory": 0,
    # 1: the hardening model, checks and catalog
    "hardening": 1,
    # 2: controller services
    "deploy.vault": 2,
    "deploy.secrets": 2,
    "deploy.models": 2,
    "deploy.vllm": 2,
    "deploy.lab": 2,
    "deploy.redaction": 2,
    "deploy.steps": 2,  # what roles say during a deploy, shown by the CLI's live display
    "hardening.vault.controls": 2,  # the Vault server audit reads services
    "hardening.vault.facts": 2,
    "hardening.vault.run": 2,
    # 3: roles
    "roles": 3,
    # 4: runner and connection
    "deploy.connection": 4,
    "deploy.runner": 4,
    "deploy.rolling": 4,  # rolling deploys: waves of run_deploy, readiness between them
    "hardening.engine": 4,
    # 5: the CLI, and the deploy package's own __init__
    "deploy.cli": 5,
    "deploy.progress": 5,
    "deploy": 5,
}
LAYER_NAMES = {0: "inventory", 1: "hardening", 2: "services", 3: "roles", 4: "runner", 5: "CLI"}
# Beside the layers: importable from anywhere, imports only these (besides itself).
RUNTIME = "citadel_runtime"
RUNTIME_ALLOWED = set(sys.stdlib_module_names) | {"cryptography", RUNTIME}


def matching_prefix(module: str) -> str | None:
    """The longest entry of LAYERS that is `module` or a package above it."""
    parts = module.split(".")
    for end in range(len(parts), 0, -1):
        prefix = ".".join(parts[:end])
        if prefix in LAYERS:
            return prefix
    return None


def layer_of(module: str) -> int | None:
    """The layer of a project module; None for citadel_runtime and anything outside the project."""
    prefix = matching_prefix(module)
    return None if prefix is None else LAYERS[prefix]


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def is_module(name: str) -> bool:
    path = ROOT.joinpath(*name.split("."))
    return path.with_suffix(".py").is_file() or (path / "__init__.py").is_file()


def imports(path: Path) -> list[tuple[int, str]]:
    """(line, module) for every import anywhere in the file; ``from a import b`` gives a.b when b is a module."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = module_name(path) if path.name == "__init__.py" else module_name(path).rpartition(".")[0]
    found: dict[tuple[int, str], None] = {}  # ordered, without repeats
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(((node.lineno, alias.name), None) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join([*anchor, base] if base else anchor)
            for alias in node.names:
                submodule = f"{base}.{alias.name}"
                found[node.lineno, submodule if is_module(submodule) else base] = None
    return sorted(found)


def project_files() -> list[Path]:
    return sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py"))


def test_the_table_names_real_modules():
    missing = [prefix for prefix in LAYERS if not is_module(prefix)]
    if missing:
        pytest.fail(f"the layer table names modules that do not exist: {', '.join(missing)}", pytrace=False)


def test_every_deploy_module_has_a_place():
    """``deploy`` holds layers 2 to 5: a new module there is placed in the table on purpose."""
    unplaced = [
        str(path.relative_to(ROOT))
        for path in sorted((ROOT / "deploy").rglob("*.py"))
        if path != ROOT / "deploy" / "__init__.py" and matching_prefix(module_name(path)) == "deploy"
    ]
    if unplaced:
        pytest.fail(f"modules with no layer in LAYERS and docs/architecture.md: {', '.join(unplaced)}", pytrace=False)


def test_imports_go_down_only():
    violations = []
    for path in project_files():
        own = layer_of(module_name(path))
        if own is None:
            continue  # citadel_runtime: test_runtime_imports_only_the_standard_library
        for line, imported in imports(path):
            theirs = layer_of(imported)
            if theirs is not None and theirs > own:
                violations.append(
                    f"{path.relative_to(ROOT)}:{line} imports {imported} "
                    f"(layer {theirs} {LAYER_NAMES[theirs]} above layer {own} {LAYER_NAMES[own]})"
                )
    if violations:
        pytest.fail("imports that go up a layer (docs/architecture.md):\n" + "\n".join(violations), pytrace=False)


def test_runtime_imports_only_the_standard_library():
    violations = [
        f"{path.relative_to(ROOT)}:{line} imports {imported}"
        for path in sorted((ROOT / RUNTIME).rglob("*.py"))
        for line, imported in imports(path)
        if imported.split(".")[0] not in RUNTIME_ALLOWED
    ]
    if violations:
        pytest.fail(f"{RUNTIME} runs on hosts: standard library and cryptography only:\n" + "\n".join(violations),
                    pytrace=False)


# Makes pyinfra and gevent unimportable, then loads the catalog.
_WITHOUT_PYINFRA = """
import json, sys

class Refuse:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("pyinfra", "gevent"):
            raise ImportError(f"{name} is not importable in this test")
        return None

sys.meta_path.insert(0, Refuse())
import hardening.catalog

print(json.dumps([control.id for control in hardening.catalog.load_catalog()]))
"""


def test_catalog_loads_without_pyinfra():
    from hardening.catalog import load_catalog  # here: a broken catalog fails this test, not the file's collection

    result = subprocess.run(
        [sys.executable, "-c", _WITHOUT_PYINFRA], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    if result.returncode != 0:
        pytest.fail(f"the catalog needs pyinfra or gevent:\n{result.stderr}", pytrace=False)
    assert json.loads(result.stdout) == [control.id for control in load_catalog()]
