"""Run roles on a site's hosts through pyinfra's Python API.

The flow is pyinfra's own (connect, prepare, execute, disconnect), with what a hospital's
IT team needs around it: every host's outcome is kept (an unreachable or failing host
does not stop the others), change counts per host, a dry run that stops after prepare,
pinned host keys only, and every line of output passed through redaction.

Example::

    from inventory.loader import load_inventory
    from deploy.runner import run_deploy

    report = run_deploy(load_inventory("inventory/lab.yaml"), ["base"])
    for outcome in report.hosts.values():
        print(outcome.host, outcome.changed, outcome.unchanged, outcome.failed)
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Protocol

from pyinfra.api import BaseStateCallback, Config, State, output
from pyinfra.api.connect import connect_all, disconnect_all
from pyinfra.api.deploy import add_deploy
from pyinfra.api.exceptions import PyinfraError
from pyinfra.api.operations import run_ops

from deploy.connection import MAX_PARALLEL, DeployError, build_pyinfra_inventory, select_hosts
from deploy.redaction import RedactingFilter, redact
from deploy.steps import reporting_to
from inventory.known_hosts import write_known_hosts
from inventory.schema import Inventory
from roles import Role, registry
from roles.ops.pyinfra_private import will_change


@dataclass
class HostOutcome:
    host: str
    reachable: bool = True
    changed: int = 0
    unchanged: int = 0
    failed: int = 0
    skipped: int = 0
    errors: list[str] = field(default_factory=list)

    @property
    def status(self) -> str:
        if not self.reachable:
            return "unreachable"
        return "failed" if self.failed or self.errors else "ok"


@dataclass
class DeployReport:
    roles: list[str]
    dry_run: bool
    hosts: dict[str, HostOutcome]

    @property
    def ok(self) -> bool:
        return all(outcome.status == "ok" for outcome in self.hosts.values())

    def as_dict(self) -> dict:
        return {
            "roles": self.roles,
            "dry_run": self.dry_run,
            "ok": self.ok,
            "hosts": {
                name: {**asdict(outcome), "status": outcome.status} for name, outcome in self.hosts.items()
            },
        }


class DeployListener(Protocol):
    """What a progress display is told. Every method is optional in practice."""

    def stage(self, text: str) -> None: ...
    def note(self, text: str) -> None: ...
    def host_planned(self, host: str, operations: int) -> None: ...
    def host_step(self, host: str, text: str) -> None: ...
    def host_progress(self, host: str, ok: bool) -> None: ...


class _QuietListener:
    def stage(self, text: str) -> None:
        pass

    def note(self, text: str) -> None:
        pass

    def host_planned(self, host: str, operations: int) -> None:
        pass

    def host_step(self, host: str, text: str) -> None:
        pass

    def host_progress(self, host: str, ok: bool) -> None:
        pass


class _Recorder(BaseStateCallback):
    """Turns pyinfra's callbacks into outcomes and progress, redacting every message."""

    def __init__(self, outcomes: dict[str, HostOutcome], listener: DeployListener):
        self.outcomes = outcomes
        self.listener = listener

    def host_connect_error(self, state, host, error):
        outcome = self.outcomes[host.name]
        outcome.reachable = False
        outcome.errors.append(redact(f"cannot connect: {error}"))

    def operation_host_start(self, state, host, op_hash):
        # The row shows the operation under way: a multi-GB push is named, not a frozen bar.
        names = ", ".join(sorted(state.get_op_meta(op_hash).names))
        self.listener.host_step(host.name, redact(names))

    def operation_host_success(self, state, host, op_hash, retry_count=0):
        self.listener.host_progress(host.name, True)

    def operation_host_error(self, state, host, op_hash, retry_count=0, max_retries=0):
        names = ", ".join(sorted(state.get_op_meta(op_hash).names))
        self.outcomes[host.name].errors.append(redact(f"operation failed: {names}"))
        self.listener.host_progress(host.name, False)


def select_roles(names: list[str | Role] | None) -> list[Role]:
    """The roles to run, in registry order; all of them when `names` is empty.

    `Role` objects are taken as they are (for roles composed in Python, not the registry).
    """
    known = registry()
    if not names:
        return list(known.values())
    given = [r for r in names if isinstance(r, Role)]
    wanted = [n for n in names if not isinstance(n, Role)]
    unknown = [n for n in wanted if n not in known]
    if unknown:
        raise DeployError(f"unknown role {', '.join(map(repr, unknown))}; roles are: {', '.join(known)}")
    return [role for name, role in known.items() if name in wanted] + given


def configure_output(verbosity: int, state: State) -> None:
    """Set how much pyinfra says, and route everything it says through redaction."""
    state.print_noop_info = verbosity >= 1
    state.print_fact_info = verbosity >= 2
    state.print_input = verbosity >= 2
    state.print_fact_input = verbosity >= 3
    state.print_output = verbosity >= 3
    state.print_fact_output = verbosity >= 3


def _count(state: State, outcomes: dict[str, HostOutcome], dry_run: bool) -> None:
    for pyinfra_host, ops in state.ops.items():
        outcome = outcomes.get(pyinfra_host.name)
        if outcome is None or not outcome.reachable:
            continue
        for op_data in ops.values():
            meta = op_data.operation_meta
            if dry_run:
                if will_change(meta):  # pyinfra's own prediction from facts
                    outcome.changed += 1
                else:
                    outcome.unchanged += 1
            elif not meta.is_complete():
                outcome.skipped += 1
            elif not meta.did_succeed():
                outcome.failed += 1
            elif meta.did_change():
                outcome.changed += 1
            else:
                outcome.unchanged += 1


def run_deploy(
    site: Inventory,
    role_names: list[str | Role] | None = None,
    *,
    limit: list[str] | None = None,
    dry_run: bool = False,
    verbosity: int = 0,
    diff: bool = False,
    listener: DeployListener | None = None,
    vault=None,
    host_data: dict | None = None,
) -> DeployReport:
    """Apply roles to hosts; see the module docstring. Never raises for a host's failure.

    `host_data` is added to every host's data: what a command asks of its roles beyond the
    inventory (tests use it to pass what a command would).
    """
    roles = select_roles(role_names)
    names = select_hosts(site, limit)
    listener = listener or _QuietListener()
    outcomes = {name: HostOutcome(name) for name in names}

    with tempfile.TemporaryDirectory(prefix="citadel-deploy-") as scratch, reporting_to(listener):
        known_hosts = write_known_hosts(site, names, Path(scratch))
        config = Config(PARALLEL=min(len(names), MAX_PARALLEL), DIFF=diff)
        state = State(build_pyinfra_inventory(site, names, known_hosts, vault, host_data), config)
        configure_output(verbosity, state)
        state.add_callback_handler(_Recorder(outcomes, listener))

        listener.stage(f"connecting to {len(names)} host(s)")
        try:
            connect_all(state)
        except PyinfraError:
            pass  # every host failed to connect; each outcome already says why

        try:
            _prepare(state, roles, outcomes, listener)
            for pyinfra_host in state.activated_hosts:
                listener.host_planned(pyinfra_host.name, len(state.ops[pyinfra_host]))
            if not dry_run and state.active_hosts:
                listener.stage("applying")
                try:
                    run_ops(state)
                except PyinfraError:
                    pass  # all remaining hosts failed; outcomes record which operations
        finally:
            if state.activated_hosts:
                disconnect_all(state)
        _count(state, outcomes, dry_run)
    return DeployReport(roles=[r.name for r in roles], dry_run=dry_run, hosts=outcomes)


def _prepare(state: State, roles: list[Role], outcomes: dict[str, HostOutcome], listener: DeployListener) -> None:
    """Work out every operation per host from facts. A host that errors here is failed alone."""
    for role in roles:
        listener.stage(f"preparing role {role.name}")
        for pyinfra_host in list(state.inventory):
            if pyinfra_host not in state.active_hosts:
                continue
            groups = list(pyinfra_host.data.citadel_site.hosts[pyinfra_host.name].groups)
            if not role.applies_to(groups):
                continue
            try:
                add_deploy(state, role.apply, host=pyinfra_host)
            except Exception as exc:  # facts can fail in any way on a broken host
                outcomes[pyinfra_host.name].errors.append(redact(f"role {role.name}: {exc}"))
                try:
                    state.fail_hosts({pyinfra_host})
                except PyinfraError:
                    return  # no host left to prepare


def configure_logging(verbosity: int, handler: logging.Handler) -> None:
    """Attach `handler` to pyinfra's logger behind redaction, at a level for `verbosity`."""
    handler.addFilter(_REDACTING_FILTER)
    pyinfra_logger = logging.getLogger("pyinfra")
    for old in list(pyinfra_logger.handlers):
        pyinfra_logger.removeHandler(old)
    pyinfra_logger.addHandler(handler)
    pyinfra_logger.propagate = False
    pyinfra_logger.setLevel(logging.DEBUG if verbosity >= 2 else logging.INFO if verbosity >= 1 else logging.WARNING)

    def _echo(message=None, err: bool = False, **_: object) -> None:
        # Command output at -vvv: the most likely place for a secret to surface.
        if message is not None:
            pyinfra_logger.info("%s", message)

    output.set_echo(_echo)


_REDACTING_FILTER = RedactingFilter()
