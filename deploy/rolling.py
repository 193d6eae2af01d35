"""Rolling deploys: a model served by several GPU hosts keeps serving while they change.

``citadel deploy`` runs its roles in waves. A host that serves a model with several replicas
(several hosts of group gpu list it) goes in a wave that takes at most
``settings.rolling_batch_size`` of that model's replicas out at once, and never all of them;
every other host (gateways, hosts whose models have one replica, hosts serving nothing) goes
in the first wave, as in a plain deploy. Each wave is a normal parallel deploy
(:func:`deploy.runner.run_deploy`) of its hosts. After a wave, each of its rolled hosts that
changed must have every model server active (the unit only counts as started once vLLM
answered a real completion: ``citadel_runtime.vllm_ready``) and be back in every gateway's
rotation (``citadel_gateway_replica_in_rotation`` on the gateway's loopback admin port),
within ``settings.rolling_ready_seconds``, before the next wave starts. A failed wave, or a
host that never becomes ready, stops the roll: later hosts are left as they were, so a
broken change never reaches the last healthy replica.

Example::

    >>> [wave.hosts for wave in plan_waves(site, ["gw-01", "gpu-01", "gpu-02"], 1)]  # doctest: +SKIP
    [['gw-01', 'gpu-01'], ['gpu-02']]
    >>> report = roll(site, ["vllm"], batch_size=1)                                  # doctest: +SKIP
    >>> report.ok, report.stopped                                                    # doctest: +SKIP
    (False, "wave 2/2: not ready after 300 s: gpu-02: llama is out of gateway gw-01's rotation; not started: none")
"""

from __future__ import annotations

import re
import shlex
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from pyinfra.api import BaseStateCallback, Config, State, StringCommand
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.exceptions import PyinfraError

from deploy.connection import MAX_PARALLEL, build_pyinfra_inventory, select_hosts
from deploy.redaction import redact
from deploy.runner import DeployListener, DeployReport, run_deploy, select_roles
from deploy.steps import reporting_to, say
from inventory.known_hosts import write_known_hosts
from inventory.schema import Inventory

POLL_SECONDS = 2.0  # between two readiness checks; the gateway checks its replicas every 5 s
_IN_ROTATION = re.compile(r"^citadel_gateway_replica_in_rotation\{(?P<labels>[^}]*)\}\s+(?P<value>\S+)\s*$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


@dataclass
class Wave:
    """Hosts deployed together, and what each rolled model loses meanwhile."""

    hosts: list[str]
    taken_out: dict[str, tuple[int, int]] = field(default_factory=dict)  # model -> (out now, replicas)
    status: str = "planned"  # planned, done, failed, not ready, not started

    def describe(self) -> str:
        """``gw-01, gpu-01 (takes out llama 1 of 2)``."""
        models = ", ".join(f"{model} {out} of {total}" for model, (out, total) in self.taken_out.items())
        return ", ".join(self.hosts) + (f" (takes out {models})" if models else "")

    def as_dict(self) -> dict:
        return {"hosts": self.hosts, "status": self.status,
                "models": {m: {"out": out, "replicas": total} for m, (out, total) in self.taken_out.items()}}


@dataclass
class RollReport(DeployReport):
    """A deploy's report, with its waves and, when the roll stopped early, why."""

    waves: list[Wave] = field(default_factory=list)
    stopped: str | None = None

    @property
    def ok(self) -> bool:
        return super().ok and self.stopped is None

    def as_dict(self) -> dict:
        return {**super().as_dict(), "waves": [w.as_dict() for w in self.waves], "stopped": self.stopped}


def replica_counts(site: Inventory) -> Counter:
    """model -> how many GPU hosts serve it."""
    counts: Counter = Counter()
    for name in site.hosts_in("gpu"):
        counts.update(set(site.hosts[name].models))
    return counts


def rolled_models(site: Inventory, host: str, counts: Counter | None = None) -> list[str]:
    """The models of `host` that other hosts serve too: those a rolling deploy keeps serving."""
    counts = replica_counts(site) if counts is None else counts
    if "gpu" not in site.hosts[host].groups:
        return []
    return [model for model in site.hosts[host].models if counts[model] > 1]


def plan_waves(site: Inventory, hosts: list[str], batch_size: int) -> list[Wave]:
    """`hosts` in waves, in order; each rolled model loses at most `batch_size` replicas per wave.

    A host goes in the first wave where every rolled model it serves still has room (fewer
    than ``min(batch_size, replicas - 1)`` there), else in a new wave; hosts with no rolled
    model all go in the first wave. Pure: reads the inventory only.
    """
    if batch_size < 1:
        raise ValueError(f"batch size {batch_size}: at least 1")
    counts = replica_counts(site)
    waves: list[list[str]] = [[]]
    loads: list[Counter] = [Counter()]
    for host in hosts:
        models = rolled_models(site, host, counts)
        if not models:
            waves[0].append(host)
            continue
        room = [i for i, load in enumerate(loads)
                if all(load[m] < min(batch_size, counts[m] - 1) for m in models)]
        if not room:
            waves.append([])
            loads.append(Counter())
        index = room[0] if room else len(waves) - 1
        waves[index].append(host)
        loads[index].update(models)
    return [Wave(members, {m: (load[m], counts[m]) for m in sorted(load)})
            for members, load in zip(waves, loads, strict=True) if members]


def in_rotation(metrics: str) -> dict[tuple[str, str], bool]:
    """(model, replica) -> in rotation, from a gateway's Prometheus exposition."""
    found = {}
    for line in metrics.splitlines():
        match = _IN_ROTATION.match(line.strip())
        if not match:
            continue
        labels = {k: re.sub(r"\\(.)", r"\1", v) for k, v in _LABEL.findall(match["labels"])}
        if "model" in labels and "replica" in labels:
            try:
                found[(labels["model"], labels["replica"])] = float(match["value"]) == 1
            except ValueError:
                continue  # not a number: not a sign that it is in rotation
    return found


class ProbeError(Exception):
    """A readiness check that could not run (host unreachable, command failed); retried."""


class Readiness(Protocol):
    """What the roll asks of hosts between waves (over SSH in practice; fakes in tests)."""

    def unit_states(self, host: str, models: list[str]) -> dict[str, str]: ...  # model -> systemctl is-active
    def gateway_metrics(self, gateway: str) -> str: ...  # the gateway's /metrics text


def not_ready(site: Inventory, hosts: list[str], readiness: Readiness) -> list[str]:
    """What keeps `hosts` from taking requests again; empty once all are ready and in rotation."""
    problems = []
    counts = replica_counts(site)
    for host in hosts:
        models = list(site.hosts[host].models)
        try:
            states = readiness.unit_states(host, models)
        except ProbeError as exc:
            problems.append(f"{host}: {exc}")
            continue
        problems += [f"{host}: citadel-vllm@{m}.service is {states.get(m) or 'unknown'}"
                     for m in models if states.get(m) != "active"]
    for gateway in site.hosts_in("gateway"):
        try:
            gauges = in_rotation(readiness.gateway_metrics(gateway))
        except ProbeError as exc:
            problems.append(f"gateway {gateway}: {exc}")
            continue
        for host in hosts:
            for model in rolled_models(site, host, counts):
                if (model, host) not in gauges:
                    problems.append(f"{host}: {model} is not among gateway {gateway}'s replicas "
                                    "(deploy the gateway role to it)")
                elif not gauges[(model, host)]:
                    problems.append(f"{host}: {model} is out of gateway {gateway}'s rotation")
    return problems


def wait_until_ready(site: Inventory, hosts: list[str], readiness: Readiness, timeout: float, *,
                     clock: Callable[[], float] | None = None, sleep: Callable[[float], None] | None = None,
                     ) -> list[str]:
    """Check `hosts` until they are ready (returns []) or `timeout` seconds pass (returns what is not)."""
    clock, sleep = clock or time.monotonic, sleep or time.sleep
    deadline = clock() + timeout
    started, shown = clock(), None
    while True:
        problems = not_ready(site, hosts, readiness)
        if not problems:
            say(f"{', '.join(hosts)}: ready and in rotation after {clock() - started:.0f} s")
            return []
        if clock() >= deadline:
            return problems
        if problems != shown:  # a line when something changes, not one per check
            say(f"waiting (up to {timeout:.0f} s): {'; '.join(problems)}")
            shown = problems
        sleep(POLL_SECONDS)


class _Unreachable(BaseStateCallback):
    """Keeps why each host could not be reached, so the roll's message says so."""

    def __init__(self, why: dict[str, str]):
        self.why = why

    def host_connect_error(self, state, host, error):
        self.why[host.name] = redact(str(error))


class SshReadiness:
    """Readiness checks over SSH with the deploy's pinned host keys; a context manager.

    A model server is ready when its unit is active; the gateway's metrics are read on the
    gateway host itself (the admin port listens on loopback only) with Debian's python3.
    """

    def __init__(self, site: Inventory, hosts: list[str]):
        self.site = site
        self.names = list(dict.fromkeys([*hosts, *site.hosts_in("gateway")]))
        self.connected: dict = {}
        self.why: dict[str, str] = {}

    def __enter__(self) -> SshReadiness:
        self._scratch = tempfile.TemporaryDirectory(prefix="citadel-rolling-")
        known_hosts = write_known_hosts(self.site, self.names, Path(self._scratch.name))
        config = Config(PARALLEL=min(len(self.names), MAX_PARALLEL))
        self.state = State(build_pyinfra_inventory(self.site, self.names, known_hosts), config)
        self.state.add_callback_handler(_Unreachable(self.why))
        try:
            connect_all(self.state)
        except PyinfraError:
            pass  # every host failed to connect; `why` says how
        self.connected = {h.name: h for h in self.state.inventory if h in self.state.active_hosts}
        return self

    def __exit__(self, *exc: object) -> None:
        if self.state.activated_hosts:
            disconnect_all(self.state)
        self._scratch.cleanup()

    def _run(self, host: str, command: str) -> list[str]:
        pyinfra_host = self.connected.get(host)
        if pyinfra_host is None:
            raise ProbeError(f"unreachable over SSH{': ' + self.why[host] if host in self.why else ''}")
        try:
            ok, output = pyinfra_host.run_shell_command(StringCommand(command), print_output=False)
        except Exception as exc:  # a connection lost mid-roll fails in any of paramiko's ways
            raise ProbeError(redact(f"check failed: {exc}")) from None
        if not ok:
            raise ProbeError(redact(f"check failed: {' '.join(output.stderr_lines)[-200:] or 'no output'}"))
        return output.stdout_lines

    def unit_states(self, host: str, models: list[str]) -> dict[str, str]:
        if not models:
            return {}
        units = [f"citadel-vllm@{model}.service" for model in models]
        # One word per unit, in order; a unit not active makes the exit status non-zero.
        lines = self._run(host, f"systemctl is-active {shlex.join(units)} || true")
        return dict(zip(models, (line.strip() for line in lines), strict=False))

    def gateway_metrics(self, gateway: str) -> str:
        url = f"http://127.0.0.1:{self.site.gateway.admin_port}/metrics"
        script = f"import urllib.request; print(urllib.request.urlopen({url!r}, timeout=5).read().decode())"
        return "\n".join(self._run(gateway, f"python3 -c {shlex.quote(script)}"))


def roll(
    site: Inventory,
    role_names: list | None = None,
    *,
    limit: list[str] | None = None,
    batch_size: int | None = None,
    ready_seconds: float | None = None,
    dry_run: bool = False,
    listener: DeployListener | None = None,
    deploy: Callable[..., DeployReport] | None = None,
    readiness: Callable[[Inventory, list[str]], object] | None = None,
    **deploy_options,
) -> RollReport:
    """Deploy wave after wave; see the module docstring. Never raises for a host's failure.

    `batch_size` and `ready_seconds` default to the inventory's settings. A dry run deploys
    every host at once (it changes nothing) and reports the waves a real run would take.
    `deploy_options` go to every `deploy` call (verbosity, diff, vault, host_data). `deploy`
    (:func:`deploy.runner.run_deploy`) and `readiness` (:class:`SshReadiness`) are replaced in tests.
    """
    deploy = deploy or run_deploy
    readiness = readiness or SshReadiness
    roles = select_roles(role_names)
    hosts = select_hosts(site, limit)
    batch = batch_size or site.settings.rolling_batch_size
    timeout = ready_seconds or site.settings.rolling_ready_seconds
    # Only roles that run on GPU hosts can restart a model server: others need no roll.
    waves = plan_waves(site, hosts, batch) if any(r.applies_to(["gpu"]) for r in roles) else [Wave(hosts)]
    if dry_run:
        report = deploy(site, role_names, limit=hosts, dry_run=True, listener=listener, **deploy_options)
        return RollReport(report.roles, True, report.hosts, waves=waves)
    outcomes: dict = {}
    names = [r.name for r in roles]
    stopped = None
    # The waits' lines go to the deploy's display, between its waves.
    with reporting_to(listener) if listener else nullcontext():
        for number, wave in enumerate(waves, 1):
            label = f"wave {number}/{len(waves)}"
            if len(waves) > 1:
                say(f"{label}: {wave.describe()}")
            report = deploy(site, role_names, limit=wave.hosts, listener=listener, **deploy_options)
            outcomes.update(report.hosts)
            names = report.roles
            broken = [name for name, outcome in report.hosts.items() if outcome.status != "ok"]
            if broken:
                wave.status = "failed"
                stopped = f"{label} failed on {', '.join(broken)}"
                break
            # A host whose deploy changed nothing restarted nothing: no wait. Nor a wave that
            # takes no replica out (no role of this deploy runs on GPU hosts).
            changed = [h for h in wave.hosts if wave.taken_out and rolled_models(site, h) and report.hosts[h].changed]
            if changed:
                with readiness(site, changed) as probe:
                    problems = wait_until_ready(site, changed, probe, timeout)
                if problems:
                    wave.status = "not ready"
                    stopped = f"{label}: not ready after {timeout:.0f} s: {'; '.join(problems)}"
                    break
            wave.status = "done"
    left = [w for w in waves if w.status == "planned"]
    for wave in left:
        wave.status = "not started"
    if stopped:
        stopped += f"; not started: {', '.join(h for w in left for h in w.hosts) or 'none'}"
    return RollReport(names, False, outcomes, waves=waves, stopped=stopped)
