"""The citadel command's conventions across every command: `--version`, flags' help, `audit --json`.

Runs the app in-process (typer's CliRunner); the audit's checks over SSH are replaced by
canned results, so what is tested is the command's options and its report, not the hosts.
"""

from __future__ import annotations

import json
import re
from importlib.metadata import version
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from deploy.cli import app

EXAMPLE = Path(__file__).resolve().parents[2] / "inventory" / "example-hospital.yaml"
runner = CliRunner()


def command_paths(group, path: tuple[str, ...] = ()):
    """Every command and group below `group`, as argv prefixes: (), ("deploy",), ("lab", "up"), ..."""
    yield path
    for name, command in getattr(group, "commands", {}).items():
        yield from command_paths(command, (*path, name))


def all_command_paths() -> list[tuple[str, ...]]:
    return list(command_paths(typer.main.get_command(app)))


def test_version_is_the_installed_package_version():
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0, result.output
    assert result.output.startswith(f"citadel {version('citadel')}")


@pytest.mark.parametrize("path", all_command_paths(), ids=lambda path: " ".join(path) or "citadel")
def test_help_shows_no_type_for_flags(path):
    # typer's rich help printed `--dry-run <bool>`, which reads as if the flag took a value.
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "Usage:" in result.output
    assert "<bool>" not in result.output
    assert not re.search(r"-v\s+<int>", result.output)  # a counter (-v, -vv) takes no value either


def test_every_group_is_walked():
    paths = all_command_paths()
    assert ("deploy",) in paths and ("audit",) in paths and ("lab", "up") in paths and len(paths) > 20


@pytest.fixture
def canned_audit(monkeypatch):
    """`citadel audit` on the example inventory, each check answered 'pass' without SSH."""
    import hardening.engine
    from hardening.engine import Result

    def run_audit(site, controls, *, limit=None, progress=None):
        return [Result(host, control.id, "pass", "canned") for host in limit for control in controls]

    monkeypatch.setattr(hardening.engine, "run_audit", run_audit)


def audit_json(*options: str) -> dict:
    result = runner.invoke(app, ["audit", "-i", str(EXAMPLE), "--limit", "gpu-01", *options])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_audit_json_is_the_same_as_format_json(canned_audit):
    with_json, with_format = audit_json("--json"), audit_json("--format", "json")
    for report in (with_json, with_format):
        report.pop("generated_at")
    assert with_json == with_format
    assert with_json["citadel_version"].startswith(version("citadel"))
    assert with_json["summary"] == {"gpu-01": {"pass": len(with_json["results"])}}


def test_audit_json_writes_the_file_asked_for(canned_audit, tmp_path):
    target = tmp_path / "audit.json"
    result = runner.invoke(app, ["audit", "-i", str(EXAMPLE), "--limit", "gpu-01", "--json", "-o", str(target)])
    assert result.exit_code == 0, result.output
    assert json.loads(target.read_text())["site"] == "st-example-general"


def test_audit_json_with_another_format_is_refused():
    result = runner.invoke(app, ["audit", "-i", str(EXAMPLE), "--json", "--format", "html"])
    assert result.exit_code == 2
    assert "--json and --format html ask for two report formats" in result.output


def test_every_report_names_the_citadel_version(canned_audit, tmp_path):
    expected = version("citadel")
    table = runner.invoke(app, ["audit", "-i", str(EXAMPLE), "--limit", "gpu-01"], env={"COLUMNS": "200"})
    assert table.exit_code == 0, table.output
    assert f"citadel {expected}" in table.stdout
    for report_format in ("html", "junit"):
        result = runner.invoke(app, ["audit", "-i", str(EXAMPLE), "--limit", "gpu-01", "--format", report_format])
        assert result.exit_code == 0, result.output
        assert expected in result.stdout, report_format
