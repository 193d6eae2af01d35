"""Citadel's own pyinfra operations, tested from data as pyinfra tests its own.

Each ``tests/operations/<module>.<operation>/<case>.json`` names an operation of ``roles/ops``
and gives:

- ``args``, ``kwargs``: the operation's arguments (a string ``"secret:VALUE"`` becomes
  ``deploy.redaction.Secret("VALUE")``);
- ``facts``: what the host holds, by fact name (``files.File``, ``roles.facts.NftablesHashes``,
  pyinfra's ``FactBase.name``) and, for a fact with arguments, by ``"arg=value, ..."`` (sorted,
  pyinfra's ``get_kwargs_str``); a JSON object stands for a fact whose value is a dataclass;
- ``commands``: what the operation yields, in order: a shell command as a string, an upload as
  ``["upload", data, remote path, remote temporary path or null]``; a command with its own
  global arguments as ``{"command": ..., "_sudo": false}``;
- ``noop_description`` (what ``host.noop`` said; required when nothing is yielded), or
  ``exception`` (``{"name": ..., "message": ...}``) instead of ``commands``.

The operation's generator runs against a fake state and host as in pyinfra's own
``tests/test_operations.py`` and ``tests/util.py`` (``FakeState``, ``FakeHost``), written small
here. A fact the operation asks for that the case does not give fails the case, so each case
lists exactly what the operation reads.
"""

from __future__ import annotations

import dataclasses
import importlib
import inspect
import json
import pkgutil
from pathlib import Path

import pytest
from pyinfra.api import Config, FileUploadCommand, StringCommand
from pyinfra.api.arguments import all_global_arguments
from pyinfra.api.util import get_kwargs_str
from pyinfra.context import ctx_host, ctx_state

import roles.ops
from deploy.redaction import Secret
from roles.ops.pyinfra_private import inner

CASES_DIR = Path(__file__).resolve().parents[1] / "operations"
GLOBAL_ARGUMENTS = {name for name, _ in all_global_arguments()}


def citadel_operations() -> dict[str, object]:
    """Every pyinfra operation defined in roles/ops, as "<module>.<operation>"."""
    found = {}
    for info in pkgutil.iter_modules(roles.ops.__path__):
        module = importlib.import_module(f"roles.ops.{info.name}")
        for name, value in vars(module).items():
            if hasattr(value, "_inner") and getattr(value, "__module__", None) == module.__name__:
                found[f"{info.name}.{name}"] = value
    return found


def case_files() -> list[Path]:
    return sorted(CASES_DIR.glob("*/*.json"))


def parse_value(value):
    """JSON to the values operations take (pyinfra's tests/util.py does the same for datetimes and sets)."""
    if isinstance(value, str) and value.startswith("secret:"):
        return Secret(value.removeprefix("secret:"))
    if isinstance(value, list):
        return [parse_value(item) for item in value]
    if isinstance(value, dict):
        return {key: parse_value(item) for key, item in value.items()}
    return value


class FakeState:
    """The parts of pyinfra's State that operations read while they generate commands."""

    cwd = "/"
    is_executing = False

    def __init__(self):
        self.config = Config()


class FakeHost:
    """A host whose facts come from a case; records the last ``host.noop``."""

    name = "testhost"
    in_op = True
    current_op_global_arguments = None

    def __init__(self, facts: dict):
        self.facts = facts
        self.data: dict = {}
        self.noop_description: str | None = None

    def noop(self, description: str) -> None:
        self.noop_description = description

    def get_temp_filename(self, *args, **kwargs) -> str:
        return "_tempfile_"

    def get_fact(self, fact_cls, **kwargs):
        arguments = {key: value for key, value in kwargs.items() if key not in GLOBAL_ARGUMENTS}
        # As pyinfra's FakeHost: an argument the fact does not take would hide a bug in the operation.
        accepted = inspect.signature(fact_cls.command).parameters
        assert all(key in accepted for key in arguments), f"{fact_cls.name} takes no {sorted(arguments)}"
        if fact_cls.name not in self.facts:
            raise KeyError(f"the case gives no fact {fact_cls.name}")
        value = self.facts[fact_cls.name]
        if arguments:
            key = get_kwargs_str(arguments)
            if key not in value:
                raise KeyError(f"the case gives no fact {fact_cls.name} for {key!r}")
            value = value[key]
        return typed(fact_cls, value)


def typed(fact_cls, value):
    """A JSON object given for a fact whose value is a dataclass becomes that dataclass."""
    if isinstance(value, dict) and isinstance(vars(fact_cls).get("default"), staticmethod):
        default = fact_cls.default()
        if dataclasses.is_dataclass(default):
            return dataclasses.replace(default, **value)
    return parse_value(value)


def as_json(command):
    """A yielded command as the case spells it (pyinfra's tests/test_operations.py parse_commands)."""
    if isinstance(command, str):  # pyinfra turns yielded strings into StringCommands
        command = StringCommand(command.strip())
    if isinstance(command, StringCommand):
        raw, masked = command.get_raw_value(), command.get_masked_value()
        spelled = raw if raw == masked else [raw, masked]
    elif isinstance(command, FileUploadCommand):
        data = command.src
        if hasattr(data, "read"):
            data.seek(0)
            data = data.read()
        spelled = ["upload", data.decode() if isinstance(data, bytes) else str(data), str(command.dest),
                   command.remote_temp_filename]
    else:
        raise TypeError(f"{command!r}: no JSON spelling for this kind of command")
    if command.connector_arguments:
        return {**command.connector_arguments, "command": spelled}
    return spelled


@pytest.mark.parametrize("path", case_files(), ids=lambda p: f"{p.parent.name}/{p.stem}")
def test_operation_case(path: Path):
    case = json.loads(path.read_text())
    operation = citadel_operations()[path.parent.name]
    host = FakeHost(case.get("facts", {}))
    args, kwargs = parse_value(case.get("args", [])), parse_value(case.get("kwargs", {}))
    with ctx_state.use(FakeState()), ctx_host.use(host):
        try:
            commands = [as_json(command) for command in inner(operation)(*args, **kwargs)]
        except Exception as error:
            if "exception" not in case:
                raise
            assert [type(error).__name__, str(error)] == [case["exception"]["name"], case["exception"]["message"]]
            return
    assert "exception" not in case, f"expected {case['exception']['name']}, the operation yielded {commands}"
    assert commands == case["commands"]
    if "noop_description" in case or not commands:
        assert host.noop_description == case.get("noop_description")


def test_every_operation_has_a_change_case_and_a_noop_case():
    kinds: dict[str, set[str]] = {name: set() for name in citadel_operations()}
    for path in case_files():
        case = json.loads(path.read_text())
        assert path.parent.name in kinds, f"{path}: no Citadel operation {path.parent.name}"
        if case.get("commands"):
            kinds[path.parent.name].add("change")
        elif "commands" in case:
            kinds[path.parent.name].add("noop")
    missing = {name: {"change", "noop"} - found for name, found in kinds.items() if found != {"change", "noop"}}
    assert not missing, f"operations without these cases in tests/operations: {missing}"
