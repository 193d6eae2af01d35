"""`citadel audit-log verify` on several gateway hosts' logs: each chain on its own, one verdict per file."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
from typer.testing import CliRunner

from citadel_runtime.gateway.auditlog import Chain
from deploy.cli import app
from deploy.cli import audit_log as cli
from deploy.redaction import Secret

KEY = "k" * 64


def write_log(path, n: int, start: str = "2025-01-01T00:00") -> list[str]:
    chain = Chain(KEY.encode())
    lines = [chain.seal({"type": "request", "time": f"{start}:{i:02d}+00:00", "status": 200}) for i in range(n)]
    path.write_text("".join(line + "\n" for line in lines))
    return lines


@pytest.fixture
def citadel(monkeypatch, tmp_path):
    site = SimpleNamespace(vault=SimpleNamespace(kv_mount="kv"), hosts_in=lambda g: ["gw-01", "gw-02"])
    monkeypatch.setattr(cli, "load_site", lambda inventory: site)
    monkeypatch.setattr(cli, "vault_client", lambda site, token_file: None)
    monkeypatch.setattr(cli.audit_key, "read", lambda store: Secret(KEY))
    monkeypatch.chdir(tmp_path)  # short, relative names: the table fits the 80 columns of the runner
    runner = CliRunner()

    def run(*args):
        result = runner.invoke(app, ["audit-log", "verify", *map(str, args), "-i", str(tmp_path / "site.yaml")])
        assert KEY not in result.output
        return result

    return run


def test_one_log_keeps_its_one_line_output(citadel, tmp_path):
    write_log(tmp_path / "audit.jsonl", 3)
    result = citadel("audit.jsonl")
    assert result.exit_code == 0 and result.stdout == "audit.jsonl: 3 record(s), the chain verifies\n"
    data = json.loads(citadel(tmp_path / "audit.jsonl", "--json").stdout)
    assert data["ok"] and data["records"] == 3 and data["file"] == str(tmp_path / "audit.jsonl")
    assert data["first"] == "2025-01-01T00:00:00+00:00" and data["last"] == "2025-01-01T00:00:02+00:00"


def test_each_host_verifies_on_its_own_and_the_tampered_one_is_named(citadel, tmp_path):
    write_log(tmp_path / "gw-01.jsonl", 4)
    lines = write_log(tmp_path / "gw-02.jsonl", 5, start="2025-01-02T00:00")
    (tmp_path / "gw-02.jsonl").write_text("".join(line + "\n" for line in lines[:2] + lines[3:]))  # one deleted
    result = citadel("gw-01.jsonl", "gw-02.jsonl")
    assert result.exit_code == 1
    assert "1 of 2 log(s) verify; does NOT verify: gw-02.jsonl" in result.stdout
    assert "gw-01" in result.stdout and "2025-01-02" in result.stdout
    assert "gw-02.jsonl: line 3: seq 4 where 3 was expected" in result.stdout
    data = json.loads(citadel(tmp_path / "gw-01.jsonl", tmp_path / "gw-02.jsonl", "--json").stdout)
    assert data["ok"] is False
    first, second = data["files"]
    assert (first["host"], first["ok"], first["records"], first["problems"]) == ("gw-01", True, 4, [])
    assert (second["host"], second["ok"], second["records"]) == ("gw-02", False, 4)
    assert second["first"].startswith("2025-01-02") and any("line 3" in p for p in second["problems"])


def test_every_log_verifying_exits_zero_and_the_records_name_their_host(citadel, tmp_path):
    write_log(tmp_path / "a.jsonl", 2)
    chain = Chain(KEY.encode())
    (tmp_path / "b.jsonl").write_text(chain.seal({"time": "2025-01-03T00:00:00+00:00", "gateway_host": "gw-09"}) + "\n")
    data = json.loads(citadel(tmp_path / "a.jsonl", tmp_path / "b.jsonl", "--json").stdout)
    assert data["ok"] and [f["host"] for f in data["files"]] == [None, "gw-09"]
    result = citadel(tmp_path / "a.jsonl", tmp_path / "b.jsonl")
    assert result.exit_code == 0 and "2 of 2 log(s) verify" in result.stdout


def test_expect_records_takes_one_log_only(citadel, tmp_path):
    write_log(tmp_path / "gw-01.jsonl", 2)
    write_log(tmp_path / "gw-02.jsonl", 2)
    result = citadel(tmp_path / "gw-01.jsonl", tmp_path / "gw-02.jsonl", "--expect-records", "2")
    assert result.exit_code == 2 and "one log at a time" in result.output
    cut = citadel(tmp_path / "gw-01.jsonl", "--expect-records", "3")
    assert cut.exit_code == 1 and "lines missing at the end" in cut.stdout
