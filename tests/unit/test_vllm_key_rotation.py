"""`citadel secrets rotate vllm-api-key`: the document, the phases, the refusals and status, on an in-memory KV."""

from __future__ import annotations

import datetime as dt
from types import SimpleNamespace

import pytest

from deploy.secrets import status, vllm_key
from deploy.secrets.store import Store
from deploy.vault import VaultError

HOUR = dt.timedelta(hours=1)


class MemoryStore(Store):
    """Store's interface over a dict, with KV v2's check-and-set versions."""

    def __init__(self):
        super().__init__(client=None, mount="kv")
        self.data: dict[str, tuple[dict, int]] = {}
        self.fail_on: str | None = None  # a path whose next write fails, as a lost Vault would

    def read(self, path):
        doc, version = self.data.get(path, (None, 0))
        return (dict(doc) if doc is not None else None), version

    def write(self, path, data, version):
        if path == self.fail_on:
            self.fail_on = None
            raise VaultError(f"lost Vault writing {path}")
        assert self.data.get(path, (None, 0))[1] == version, f"check-and-set failed at {path}"
        self.data[path] = (dict(data), version + 1)
        return version + 1

    def list(self, prefix):
        return sorted(p[len(prefix) + 1:] for p in self.data if p.startswith(prefix + "/"))

    def actor(self):
        return {"display_name": "token-alice", "entity_id": "", "policies": ["operator"], "os_user": "alice"}


@pytest.fixture
def store():
    memory = MemoryStore()
    assert vllm_key.seed(memory)
    return memory


def trail(store):
    return [(e["action"], e["phase"], e["by"]["display_name"]) for e in store.trail()]


def test_a_seeded_key_is_version_one_and_its_value_stays_where_the_template_reads_it(store):
    doc, _ = store.read(vllm_key.PATH)
    assert set(doc) == {"value"} and doc["value"].startswith("vk_")
    assert vllm_key.read_meta(store)["current"]["version"] == 1
    assert "value" not in str(vllm_key.read_meta(store))


def test_rotate_puts_a_new_key_in_force_and_keeps_only_the_old_keys_metadata(store):
    old = store.read(vllm_key.PATH)[0]["value"]
    result = vllm_key.rotate(store, HOUR)
    doc, _ = store.read(vllm_key.PATH)
    assert result.phase == "overlap" and (result.version, result.previous_version) == (2, 1)
    assert doc["value"] != old and doc["value"].startswith("vk_") and old not in str(doc)
    assert doc["current"]["version"] == 2 and "value" not in doc["current"] and "value" not in doc["previous"]
    assert result.overlap_until == doc["previous_expires"]
    assert doc["value"] not in str(result.as_dict())  # the result is printed: never a key in it
    assert trail(store) == [("rotate", "overlap", "token-alice")]


def test_a_second_rotation_is_refused_while_the_overlap_is_open(store):
    vllm_key.rotate(store, HOUR)
    with pytest.raises(VaultError) as refused:
        vllm_key.rotate(store, HOUR)
    assert refused.value.exit_code == 2 and "rotate vllm-api-key --finish" in str(refused.value)
    assert vllm_key.read_meta(store)["current"]["version"] == 2


def test_finish_ends_the_overlap_and_keeps_the_key_in_force(store):
    vllm_key.rotate(store, HOUR)
    value = store.read(vllm_key.PATH)[0]["value"]
    result = vllm_key.finish(store)
    doc, _ = store.read(vllm_key.PATH)
    assert result.phase == "done" and doc["value"] == value and doc["previous"] is None
    assert doc["previous_expires"] is None
    assert vllm_key.finish(store).notes == ["no rotation in overlap: nothing to finish"]
    assert vllm_key.rotate(store, HOUR).version == 3
    assert [a for a, _, _ in trail(store)] == ["rotate", "finish", "rotate"]


def test_an_expired_overlap_is_finished_by_the_next_rotation(store):
    vllm_key.rotate(store, dt.timedelta(seconds=-1))  # its grace is already over
    result = vllm_key.rotate(store, HOUR)
    assert result.version == 3 and result.previous_version == 2
    assert [(a, p) for a, p, _ in trail(store)] == [("rotate", "overlap"), ("rotate", "done"), ("rotate", "overlap")]


def test_a_rotation_stopped_midway_resumes_the_same_version_and_finish_waits_for_it(store):
    store.fail_on = vllm_key.PATH
    with pytest.raises(VaultError):
        vllm_key.rotate(store, HOUR)
    assert store.state(vllm_key.KIND, vllm_key.NAME)[0]["phase"] == "rotating"
    with pytest.raises(VaultError) as refused:
        vllm_key.finish(store)
    assert refused.value.exit_code == 2 and "unfinished" in str(refused.value)
    assert vllm_key.rotate(store, HOUR).version == 2  # the intent recorded first: the same target


def test_status_shows_the_key_its_hosts_and_the_overlap(store):
    site = SimpleNamespace(hosts_in=lambda group: {"gpu": ["gpu1", "gpu2"]}.get(group, []))
    when = dt.datetime.now(dt.UTC)
    row = status._vllm_key_row(store, site, when, 90)
    assert (row["kind"], row["name"], row["version"], row["phase"]) == ("vllm-api-key", "vllm", 1, "current")
    assert row["hosts"] == ["gpu1", "gpu2"] and not row["due"]
    vllm_key.rotate(store, HOUR)
    row = status._vllm_key_row(store, site, when, 90)
    assert (row["version"], row["phase"]) == (2, "overlap") and row["expires"]
    assert store.read(vllm_key.PATH)[0]["value"] not in str(row)
    vllm_key.finish(store)
    assert status._vllm_key_row(store, site, when, 90)["phase"] == "current"
    assert status._vllm_key_row(MemoryStore(), site, when, 90)["phase"] == "missing"


def test_the_cli_rotates_refuses_a_second_start_and_finishes(store, monkeypatch, tmp_path):
    import json

    from typer.testing import CliRunner

    from deploy.cli import app
    from deploy.cli import secrets as cli

    site = SimpleNamespace(vault=SimpleNamespace(transit_mount="transit"))
    monkeypatch.setattr(cli, "_store", lambda inventory, token_file: (site, store))
    runner = CliRunner()

    def citadel(*args):
        return runner.invoke(app, ["secrets", "rotate", "vllm-api-key", "-i", str(tmp_path / "site.yaml"), *args])

    started = citadel("--json")
    assert started.exit_code == 0, started.output
    assert json.loads(started.stdout)["phase"] == "overlap"
    assert store.read(vllm_key.PATH)[0]["value"] not in started.output
    again = citadel()
    assert again.exit_code == 2 and "--finish" in again.output
    finished = citadel("--finish")
    assert finished.exit_code == 0 and "vllm-api-key vllm: finish complete; version 2 (current)" in finished.stdout
    named = runner.invoke(app, ["secrets", "rotate", "vllm-api-key", "extra", "-i", str(tmp_path / "site.yaml")])
    assert named.exit_code == 2 and "takes no NAME" in named.output
    assert "vllm-api-key" in runner.invoke(app, ["secrets", "rotate", "--help"]).stdout
