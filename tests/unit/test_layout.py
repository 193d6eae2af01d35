"""``citadel_runtime.layout``: every path and port Citadel shares, defined once, importable anywhere.

The catalog, the roles and the code on the hosts read it; a role installs it with the
runtime modules that import it, so each role's ``MODULES`` must carry what its modules need.
"""

from __future__ import annotations

import ast
import importlib
from pathlib import Path

import pytest

import citadel_runtime
from citadel_runtime import layout
from citadel_runtime.keyguard import parse_args
from inventory.schema import Gateway
from roles.vault_agent.templates import SPECS

ROOT = Path(__file__).resolve().parents[2]
RUNTIME = Path(citadel_runtime.__file__).parent
PACKAGES = ("inventory", "hardening", "deploy", "roles", "citadel_runtime")
# The roles that install runtime code on hosts (roles.ops.runtime.install_runtime).
RUNTIME_ROLES = ("roles.gateway", "roles.keyguard", "roles.model_store", "roles.store_volume", "roles.vllm")


def test_layout_imports_nothing():
    tree = ast.parse((RUNTIME / "layout.py").read_text())
    imports = [node.lineno for node in ast.walk(tree) if isinstance(node, (ast.Import, ast.ImportFrom))]
    assert not imports, f"citadel_runtime/layout.py must import nothing (lines {imports})"


def _module_level_runtime_imports(module: str) -> set[str]:
    """The runtime modules (as MODULES names them: 'uds.py', 'gateway/server.py') a module imports when loaded."""
    path = RUNTIME / module
    package = ".".join(["citadel_runtime", *Path(module).parent.parts])
    # Its packages' __init__.py, which Python loads first.
    found = {str(Path(*Path(module).parts[:depth], "__init__.py")) for depth in range(len(Path(module).parts))}
    for node in ast.parse(path.read_text()).body:  # not inside functions: those run only when called
        names = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join([*package.split(".")[: len(package.split(".")) - node.level + 1], base]).rstrip(".")
            names = [base] + [f"{base}.{alias.name}" for alias in node.names]
        for name in names:
            parts = name.split(".")
            if parts[0] != "citadel_runtime":
                continue
            relative = Path(*parts[1:]) if len(parts) > 1 else Path()
            if (RUNTIME / relative).with_suffix(".py").is_file():
                found.add(str(relative.with_suffix(".py")))
            elif (RUNTIME / relative / "__init__.py").is_file():
                found.add(str(relative / "__init__.py"))
    return found


@pytest.mark.parametrize("role", RUNTIME_ROLES)
def test_each_role_installs_every_runtime_module_its_modules_import(role):
    modules = set(importlib.import_module(role).MODULES)
    missing = {
        f"{module} imports {needed}"
        for module in modules
        for needed in _module_level_runtime_imports(module)
        if needed not in modules
    }
    assert not missing, f"{role}.MODULES lacks what its modules import on the host: {sorted(missing)}"


def _shared(name: str, value: object) -> bool:
    """A path, a unit name or a port: what two places could spell differently (a bare name may recur)."""
    if name.endswith("_PORT"):
        return True
    return isinstance(value, str) and (value.startswith("/") or value.endswith((".service", ".timer")))


def _layout_values() -> dict[object, str]:
    return {value: name for name, value in vars(layout).items() if name.isupper() and _shared(name, value)}


def test_no_other_module_defines_a_layout_value_again():
    """A module-level ``NAME = <a path or port of the layout>`` elsewhere is a second definition."""
    values = _layout_values()
    again = []
    for path in sorted(p for package in PACKAGES for p in (ROOT / package).rglob("*.py")):
        if path == RUNTIME / "layout.py":
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant):
                value = node.value.value
                if isinstance(value, (str, int)) and not isinstance(value, bool) and value in values:
                    again.append(f"{path.relative_to(ROOT)}:{node.lineno} is citadel_runtime.layout.{values[value]}")
    assert not again, "defined again outside citadel_runtime/layout.py:\n" + "\n".join(again)


def test_the_vault_agent_specs_are_built_on_the_layout():
    assert list(SPECS) == list(layout.AGENT_SECRETS)
    for group, spec in SPECS.items():
        assert {"user": spec.user, "secrets_dir": spec.secrets_dir} == layout.AGENT_SECRETS[group]
        assert spec.sink.startswith(f"{layout.AGENT_RUN_ROOT}/")
    assert layout.VLLM_KEY_FILE.startswith(f"{SPECS['gpu'].secrets_dir}/") and "vllm.env" in SPECS["gpu"].files


def test_the_runtime_defaults_are_the_layout_ports():
    args = parse_args(["--tls", "t.pem", "--keys", "k.json"])
    assert args.listen == f"0.0.0.0:{layout.KEYGUARD_PORT}"
    assert Gateway.model_fields["admin_port"].default == layout.GATEWAY_ADMIN_PORT
