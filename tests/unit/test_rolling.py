"""Rolling deploys (deploy.rolling): the waves planned, the roll run wave after wave, the waits.

The deploy and the readiness checks over SSH are replaced by fakes: what is tested is the
order, the stops and the messages; `citadel deploy --dry-run` runs in-process (CliRunner).
"""

from __future__ import annotations

import http.server
import json
import socket
import subprocess
import threading
from contextlib import nullcontext
from types import SimpleNamespace

import pytest
import yaml
from typer.testing import CliRunner

from citadel_runtime.gateway.metrics import Metrics
from deploy import rolling
from deploy.cli import app
from deploy.rolling import ProbeError, SshReadiness, in_rotation, not_ready, plan_waves, roll, wait_until_ready
from deploy.runner import DeployReport, HostOutcome
from inventory.loader import parse_inventory

KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1kKmvSbq3oL0tmNxMq7eE8lRk9l0nqYy4m1qVw2aa"


def site_data(**hosts) -> dict:
    """A site with a gateway and these GPU hosts (name -> models)."""
    entries = {"gw-01": {"address": "10.0.0.9", "groups": ["gateway"], "ssh": {"host_key": KEY}}}
    for number, (name, models) in enumerate(hosts.items(), 1):
        entries[name.replace("_", "-")] = {"address": f"10.0.0.{number}", "groups": ["gpu"], "models": models,
                                           "ssh": {"host_key": KEY}}
    return {"site": "rolling-test", "vault": {"address": "https://vault.example:8200"},
            "models": {"llama": {"revision": "r2"}, "qwen": {"revision": "v3"}, "solo": {"revision": "r1"}},
            "hosts": entries}


def make_site(tmp_path, **hosts):
    return parse_inventory(site_data(**hosts), tmp_path / "site.yaml")


@pytest.fixture
def site(tmp_path):
    # llama on three hosts, qwen on two, solo on one (not rolled).
    return make_site(tmp_path, gpu_01=["llama", "qwen"], gpu_02=["llama", "qwen"], gpu_03=["llama"], gpu_04=["solo"])


def hosts_of(waves):
    return [wave.hosts for wave in waves]


# -- the planner -------------------------------------------------------------------------


def test_batch_size_1_takes_one_replica_of_each_model_at_a_time_and_the_rest_go_first(site):
    waves = plan_waves(site, list(site.hosts), 1)
    assert hosts_of(waves) == [["gw-01", "gpu-01", "gpu-04"], ["gpu-02"], ["gpu-03"]]
    assert [w.describe() for w in waves] == [
        "gw-01, gpu-01, gpu-04 (takes out llama 1 of 3, qwen 1 of 2)",
        "gpu-02 (takes out llama 1 of 3, qwen 1 of 2)",
        "gpu-03 (takes out llama 1 of 3)",
    ]


def test_batch_size_2_takes_two_of_three_but_never_both_of_two(site):
    waves = plan_waves(site, list(site.hosts), 2)
    assert hosts_of(waves) == [["gw-01", "gpu-01", "gpu-03", "gpu-04"], ["gpu-02"]]
    assert waves[0].taken_out == {"llama": (2, 3), "qwen": (1, 2)}


@pytest.mark.parametrize("batch", [1, 2, 3, 64])
def test_a_model_never_loses_more_than_the_batch_nor_all_its_replicas(tmp_path, batch):
    site = make_site(tmp_path, a=["llama"], b=["llama", "qwen"], c=["llama"], d=["qwen", "llama"], e=["qwen"])
    waves = plan_waves(site, list(site.hosts), batch)
    assert sorted(h for w in waves for h in w.hosts) == sorted(site.hosts)
    for wave in waves:
        for model, (out, total) in wave.taken_out.items():
            assert out == sum(model in site.hosts[h].models for h in wave.hosts)
            assert out <= min(batch, total - 1), (model, wave)


def test_single_replica_models_and_gateways_are_not_rolled(tmp_path):
    site = make_site(tmp_path, gpu_01=["llama"], gpu_02=["qwen"], gpu_03=[])
    waves = plan_waves(site, list(site.hosts), 1)
    assert hosts_of(waves) == [["gw-01", "gpu-01", "gpu-02", "gpu-03"]]
    assert waves[0].taken_out == {}
    assert hosts_of(plan_waves(site, ["gw-01"], 1)) == [["gw-01"]]


def test_a_model_on_every_host_keeps_one_replica_serving(tmp_path):
    site = make_site(tmp_path, gpu_01=["llama"], gpu_02=["llama"])
    assert hosts_of(plan_waves(site, list(site.hosts), 64)) == [["gw-01", "gpu-01"], ["gpu-02"]]


def test_a_limited_deploy_counts_the_replicas_left_out(site):
    waves = plan_waves(site, ["gpu-03"], 1)
    assert hosts_of(waves) == [["gpu-03"]]
    assert waves[0].taken_out == {"llama": (1, 3)}


def test_a_batch_size_below_1_is_refused(site):
    with pytest.raises(ValueError, match="batch size 0"):
        plan_waves(site, list(site.hosts), 0)


# -- the gateway's metrics -----------------------------------------------------------------


def test_in_rotation_reads_the_gateways_own_exposition():
    text = Metrics().render(audit_healthy=True, audit_written=0, replicas=(
        ("llama", "gpu-01", True, 0), ("llama", "gpu-02", False, 2), ("solo", "https://10.0.0.4:8443", True, 0)))
    assert in_rotation(text) == {("llama", "gpu-01"): True, ("llama", "gpu-02"): False,
                                 ("solo", "https://10.0.0.4:8443"): True}


def test_in_rotation_skips_what_it_cannot_read():
    text = "\n".join([
        "# TYPE citadel_gateway_replica_in_rotation gauge",
        'citadel_gateway_replica_in_rotation{model="llama"} 1',  # no replica label
        'citadel_gateway_replica_in_rotation{model="llama",replica="gpu-01"} NaNish',
        'citadel_gateway_replica_outstanding{model="llama",replica="gpu-02"} 1',
        'citadel_gateway_replica_in_rotation{model="q\\"x",replica="gpu-03"} 1',
    ])
    assert in_rotation(text) == {('q"x', "gpu-03"): True}


# -- readiness -----------------------------------------------------------------------------


class FakeHosts:
    """Unit states per host and gateway gauges, as SSH would find them; changeable over time."""

    def __init__(self, site, *, units=None, out_of_rotation=(), unreachable=()):
        self.site = site
        self.units = units or {}  # (host, model) -> state; absent: active
        self.out = set(out_of_rotation)  # (model, host) at 0
        self.unreachable = set(unreachable)
        self.asked: list[tuple[str, ...]] = []

    def unit_states(self, host, models):
        self.asked.append(("units", host))
        if host in self.unreachable:
            raise ProbeError("unreachable over SSH: timed out")
        return {m: self.units.get((host, m), "active") for m in models}

    def gateway_metrics(self, gateway):
        self.asked.append(("metrics", gateway))
        if gateway in self.unreachable:
            raise ProbeError("unreachable over SSH: timed out")
        replicas = tuple((m, h, (m, h) not in self.out, 0) for h in self.site.hosts_in("gpu")
                         for m in self.site.hosts[h].models)
        return Metrics().render(audit_healthy=True, audit_written=0, replicas=replicas)


def test_not_ready_names_the_host_the_unit_and_the_gateway(site):
    fake = FakeHosts(site, units={("gpu-02", "qwen"): "activating"}, out_of_rotation={("llama", "gpu-02")})
    assert not_ready(site, ["gpu-02"], fake) == [
        "gpu-02: citadel-vllm@qwen.service is activating",
        "gpu-02: llama is out of gateway gw-01's rotation",
    ]
    fake = FakeHosts(site, unreachable={"gpu-02", "gw-01"})
    assert not_ready(site, ["gpu-02"], fake) == [
        "gpu-02: unreachable over SSH: timed out", "gateway gw-01: unreachable over SSH: timed out"]
    assert not_ready(site, ["gpu-01", "gpu-04"], FakeHosts(site)) == []


def test_a_replica_the_gateway_does_not_know_is_not_ready(tmp_path, site):
    fake = FakeHosts(make_site(tmp_path, gpu_01=["llama"], gpu_02=[], gpu_03=["llama"], gpu_04=["solo"]))
    assert not_ready(site, ["gpu-02"], fake) == [
        "gpu-02: llama is not among gateway gw-01's replicas (deploy the gateway role to it)",
        "gpu-02: qwen is not among gateway gw-01's replicas (deploy the gateway role to it)",
    ]


class Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


def test_wait_until_ready_returns_once_back_in_rotation(site, capsys):
    fake, clock = FakeHosts(site, out_of_rotation={("llama", "gpu-02")}), Clock()

    def sleep(seconds):
        clock.sleep(seconds)
        if clock.now >= 6:  # the gateway's next health check puts it back
            fake.out.clear()

    assert wait_until_ready(site, ["gpu-02"], fake, 60, clock=clock, sleep=sleep) == []
    lines = capsys.readouterr().err.splitlines()
    assert lines == ["waiting (up to 60 s): gpu-02: llama is out of gateway gw-01's rotation",
                     "gpu-02: ready and in rotation after 6 s"]


def test_wait_until_ready_gives_up_at_the_timeout_with_what_is_not_ready(site):
    fake, clock = FakeHosts(site, units={("gpu-03", "llama"): "failed"}), Clock()
    assert wait_until_ready(site, ["gpu-03"], fake, 30, clock=clock, sleep=clock.sleep) == [
        "gpu-03: citadel-vllm@llama.service is failed"]
    assert 30 <= clock.now <= 32


# -- the roll ------------------------------------------------------------------------------


class FakeDeploy:
    """run_deploy's stand-in: records each wave's hosts; `failing` hosts fail, `changes` per host."""

    def __init__(self, events, failing=(), changes=1):
        self.events = events
        self.failing = set(failing)
        self.changes = changes
        self.calls: list[dict] = []

    def __call__(self, site, role_names=None, *, limit=None, dry_run=False, listener=None, **options):
        self.calls.append({"limit": list(limit), "dry_run": dry_run, **options})
        self.events.append(("deploy", *limit))
        outcomes = {}
        for host in limit:
            outcome = HostOutcome(host, changed=self.changes)
            if host in self.failing:
                outcome.failed, outcome.errors = 1, ["operation failed: vllm-serves-signed-model: start vLLM"]
            outcomes[host] = outcome
        return DeployReport(roles=["vllm"], dry_run=dry_run, hosts=outcomes)


def readiness_of(fake, events):
    def open_probe(site, hosts):
        events.append(("wait", *hosts))
        return nullcontext(fake)
    return open_probe


def test_waves_run_in_order_each_waiting_for_its_hosts(site):
    events = []
    deploy = FakeDeploy(events)
    report = roll(site, ["vllm"], batch_size=1, deploy=deploy, readiness=readiness_of(FakeHosts(site), events),
                  verbosity=2)
    assert events == [("deploy", "gw-01", "gpu-01", "gpu-04"), ("wait", "gpu-01"),
                      ("deploy", "gpu-02"), ("wait", "gpu-02"),
                      ("deploy", "gpu-03"), ("wait", "gpu-03")]
    assert all(call["verbosity"] == 2 and not call["dry_run"] for call in deploy.calls)
    assert report.ok and report.stopped is None
    assert list(report.hosts) == ["gw-01", "gpu-01", "gpu-04", "gpu-02", "gpu-03"]
    assert [w.status for w in report.waves] == ["done"] * 3


def test_the_batch_size_defaults_to_the_inventorys_setting(tmp_path):
    data = site_data(gpu_01=["llama"], gpu_02=["llama"], gpu_03=["llama"])
    data["settings"] = {"rolling_batch_size": 2}
    site = parse_inventory(data, tmp_path / "site.yaml")
    events = []
    roll(site, ["vllm"], deploy=FakeDeploy(events), readiness=readiness_of(FakeHosts(site), events))
    assert [e for e in events if e[0] == "deploy"] == [("deploy", "gw-01", "gpu-01", "gpu-02"), ("deploy", "gpu-03")]


def test_a_failed_wave_stops_the_roll_and_names_the_host(site):
    events = []
    report = roll(site, ["vllm"], batch_size=1, deploy=FakeDeploy(events, failing={"gpu-02"}),
                  readiness=readiness_of(FakeHosts(site), events))
    assert events == [("deploy", "gw-01", "gpu-01", "gpu-04"), ("wait", "gpu-01"), ("deploy", "gpu-02")]
    assert not report.ok
    assert report.stopped == "wave 2/3 failed on gpu-02; not started: gpu-03"
    assert [w.status for w in report.waves] == ["done", "failed", "not started"]
    assert "gpu-03" not in report.hosts
    assert report.as_dict()["stopped"] == report.stopped and report.as_dict()["ok"] is False


def test_a_host_never_ready_stops_the_roll_with_the_timeout_and_what_was_not_ready(site, monkeypatch):
    monkeypatch.setattr(rolling, "POLL_SECONDS", 0.01)
    events = []
    fake = FakeHosts(site, out_of_rotation={("llama", "gpu-01")})
    report = roll(site, ["vllm"], batch_size=1, ready_seconds=0.05, deploy=FakeDeploy(events),
                  readiness=readiness_of(fake, events))
    assert events == [("deploy", "gw-01", "gpu-01", "gpu-04"), ("wait", "gpu-01")]
    assert not report.ok
    assert report.stopped == ("wave 1/3: not ready after 0 s: gpu-01: llama is out of gateway gw-01's rotation; "
                              "not started: gpu-02, gpu-03")
    assert [w.status for w in report.waves] == ["not ready", "not started", "not started"]


def test_a_wave_that_changed_nothing_waits_for_nothing(site):
    events = []
    report = roll(site, ["vllm"], batch_size=1, deploy=FakeDeploy(events, changes=0),
                  readiness=readiness_of(FakeHosts(site), events))
    assert [e[0] for e in events] == ["deploy"] * 3
    assert report.ok


def test_roles_that_never_run_on_gpu_hosts_are_not_rolled(site):
    events = []
    report = roll(site, ["gateway"], deploy=FakeDeploy(events), readiness=readiness_of(FakeHosts(site), events))
    assert events == [("deploy", *site.hosts)]
    assert len(report.waves) == 1 and report.waves[0].taken_out == {}


def test_a_dry_run_deploys_every_host_at_once_and_reports_the_waves(site):
    events = []
    report = roll(site, ["vllm"], batch_size=1, dry_run=True, deploy=FakeDeploy(events),
                  readiness=readiness_of(FakeHosts(site), events))
    assert events == [("deploy", *site.hosts)]
    assert report.dry_run and report.ok
    assert [w.as_dict() for w in report.waves][1] == {
        "hosts": ["gpu-02"], "status": "planned",
        "models": {"llama": {"out": 1, "replicas": 3}, "qwen": {"out": 1, "replicas": 2}}}


# -- citadel deploy --dry-run ----------------------------------------------------------------


@pytest.fixture
def inventory_file(tmp_path):
    path = tmp_path / "site.yaml"
    path.write_text(yaml.safe_dump(site_data(gpu_01=["llama"], gpu_02=["llama"], gpu_03=["llama", "qwen"],
                                             gpu_04=["qwen"]), sort_keys=False))
    return path


@pytest.fixture
def faked_deploy(monkeypatch):
    deploy = FakeDeploy([])
    monkeypatch.setattr(rolling, "run_deploy", deploy)
    return deploy


def test_dry_run_prints_the_rolling_order(inventory_file, faked_deploy):
    result = CliRunner().invoke(app, ["deploy", "-i", str(inventory_file), "--role", "vllm", "--dry-run",
                                      "--batch-size", "2"])
    assert result.exit_code == 0, result.output
    assert faked_deploy.calls[0]["dry_run"] is True
    assert faked_deploy.calls[0]["limit"] == ["gw-01", "gpu-01", "gpu-02", "gpu-03", "gpu-04"]
    assert "Rolling order:\n" in result.stdout
    assert "  wave 1: gw-01, gpu-01, gpu-02, gpu-04 (takes out llama 2 of 3, qwen 1 of 2)\n" in result.stdout
    assert "  wave 2: gpu-03 (takes out llama 1 of 3, qwen 1 of 2)\n" in result.stdout


def test_dry_run_json_has_the_waves(inventory_file, faked_deploy):
    result = CliRunner().invoke(app, ["deploy", "-i", str(inventory_file), "--dry-run", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.stdout)
    assert [w["hosts"] for w in report["waves"]] == [["gw-01", "gpu-01", "gpu-04"], ["gpu-02"], ["gpu-03"]]
    assert report["waves"][2] == {"hosts": ["gpu-03"], "status": "planned",
                                  "models": {"llama": {"out": 1, "replicas": 3}, "qwen": {"out": 1, "replicas": 2}}}
    assert report["dry_run"] is True and report["stopped"] is None
    assert set(report["hosts"]) == {"gw-01", "gpu-01", "gpu-02", "gpu-03", "gpu-04"}


def test_a_batch_size_out_of_range_is_refused_before_anything_runs(inventory_file, faked_deploy):
    result = CliRunner().invoke(app, ["deploy", "-i", str(inventory_file), "--dry-run", "--batch-size", "0"])
    assert result.exit_code == 2
    assert faked_deploy.calls == []


# -- the checks' commands (run here, through a stand-in for pyinfra's host) ---------------------


class LocalHost:
    """A connected pyinfra host's stand-in that runs the command in a local shell."""

    def __init__(self, fixed_stdout=None):
        self.fixed_stdout = fixed_stdout
        self.commands: list[str] = []

    def run_shell_command(self, command, print_output=False):
        self.commands.append(command.get_raw_value())
        if self.fixed_stdout is not None:
            return True, SimpleNamespace(stdout_lines=self.fixed_stdout, stderr_lines=[])
        done = subprocess.run(["bash", "-c", command.get_raw_value()], capture_output=True, text=True, timeout=30)
        return done.returncode == 0, SimpleNamespace(stdout_lines=done.stdout.splitlines(),
                                                     stderr_lines=done.stderr.splitlines())


def test_the_gateway_metrics_are_read_on_loopback_with_python3(tmp_path):
    text = Metrics().render(audit_healthy=True, audit_written=0, replicas=(("llama", "gpu-01", True, 0),))

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = text.encode() if self.path == "/metrics" else b""
            self.send_response(200 if body else 404)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = http.server.HTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        data = site_data(gpu_01=["llama"], gpu_02=["llama"])
        data["gateway"] = {"admin_port": server.server_address[1]}
        probe = SshReadiness(parse_inventory(data, tmp_path / "site.yaml"), ["gpu-01"])
        probe.connected = {"gw-01": LocalHost()}
        assert in_rotation(probe.gateway_metrics("gw-01")) == {("llama", "gpu-01"): True}
    finally:
        server.shutdown()
        server.server_close()


def test_unit_states_ask_systemctl_about_each_model_in_order(site):
    probe = SshReadiness(site, ["gpu-01"])
    host = LocalHost(fixed_stdout=["active", "activating"])
    probe.connected = {"gpu-01": host}
    assert probe.unit_states("gpu-01", ["llama", "qwen"]) == {"llama": "active", "qwen": "activating"}
    assert host.commands == ["systemctl is-active citadel-vllm@llama.service citadel-vllm@qwen.service || true"]


def test_a_host_that_could_not_be_reached_or_checked_says_why(tmp_path):
    with socket.socket() as unused:  # a loopback port nothing listens on
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    data = site_data(gpu_01=["llama"], gpu_02=["llama"])
    data["gateway"] = {"admin_port": port}
    probe = SshReadiness(parse_inventory(data, tmp_path / "site.yaml"), ["gpu-01"])
    probe.why = {"gpu-01": "Connection refused"}
    with pytest.raises(ProbeError, match="^unreachable over SSH: Connection refused$"):
        probe.unit_states("gpu-01", ["llama"])
    probe.connected = {"gw-01": LocalHost()}
    with pytest.raises(ProbeError, match="check failed: .*Connection refused"):
        probe.gateway_metrics("gw-01")


def test_the_probe_connects_with_pyinfra_and_names_a_host_it_cannot_reach(tmp_path):
    with socket.socket() as unused:  # an SSH port nothing listens on: refused at once
        unused.bind(("127.0.0.1", 0))
        port = unused.getsockname()[1]
    data = site_data(gpu_01=["llama"])
    data["hosts"] = {"gpu-01": {**data["hosts"]["gpu-01"], "address": "127.0.0.1"}}
    data["ssh"] = {"port": port, "connect_timeout": 5}
    site = parse_inventory(data, tmp_path / "site.yaml")
    with SshReadiness(site, ["gpu-01"]) as probe:
        with pytest.raises(ProbeError, match="^unreachable over SSH: .+"):
            probe.unit_states("gpu-01", ["llama"])
    assert probe.connected == {}
