"""Load an inventory file and turn every problem into one clear, located message.

Example::

    >>> from inventory.loader import load_inventory
    >>> site = load_inventory("inventory/example-hospital.yaml")
    >>> sorted(site.hosts)[:2]
    ['gpu-01', 'gpu-02']
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import ValidationError

from inventory.schema import Inventory


class InventoryError(Exception):
    """An inventory that cannot be used. The message names the file and each field path."""

    def __init__(self, path: Path, problems: list[str]):
        self.path = path
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{path}: invalid inventory:\n{lines}")


class _UniqueKeyLoader(yaml.SafeLoader):
    """A safe YAML loader that refuses duplicate keys (PyYAML keeps the last one silently)."""


def _construct_mapping(loader: _UniqueKeyLoader, node: yaml.MappingNode, deep: bool = False):
    seen: dict[object, int] = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=deep)
        if key in seen:
            raise yaml.constructor.ConstructorError(
                None, None, f"duplicate key {key!r} (first at line {seen[key] + 1})", key_node.start_mark
            )
        seen[key] = key_node.start_mark.line
    return loader.construct_mapping(node, deep=deep)


_UniqueKeyLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def describe_error(error: dict) -> str:
    """One pydantic error as 'field.path: what was expected'.

    Public: every file Citadel validates with pydantic (inventories, waivers) words its errors this way.
    """
    location = ".".join(str(part) for part in error["loc"])
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{location}: unknown key (check its spelling; unknown keys are not ignored)"
    if kind == "missing":
        return f"{location}: required field is missing"
    message = error["msg"].removeprefix("Value error, ")
    if kind == "value_error" and not location:
        return message  # cross-field checks already name their own paths
    got = error.get("input")
    if kind not in ("value_error",) and not isinstance(got, (dict, list)):
        message = f"{message} (got {got!r})"
    return f"{location}: {message}" if location else message


def parse_inventory(data: object, path: Path) -> Inventory:
    """Validate already-parsed YAML data, naming `path` in any error."""
    if not isinstance(data, dict):
        raise InventoryError(path, ["the top level must be a mapping with site:, vault: and hosts:"])
    try:
        return Inventory.model_validate(data)
    except ValidationError as exc:
        problems: list[str] = []
        for error in exc.errors(include_url=False):
            described = describe_error(error)
            # A cross-field check (no location) may report several problems at once, joined by "; ".
            cross_field = error["type"] == "value_error" and not error["loc"]
            problems.extend(described.split("; ") if cross_field else [described])
        raise InventoryError(path, problems) from None


def load_inventory(path: str | Path) -> Inventory:
    """Read and validate an inventory file. Relative key paths are resolved from its folder."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InventoryError(path, ["file not found"]) from None
    except OSError as exc:
        raise InventoryError(path, [f"cannot be read: {exc.strerror}"]) from None
    try:
        data = yaml.load(text, Loader=_UniqueKeyLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise InventoryError(path, [f"{where}not valid YAML: {problem}"]) from None
    return _resolve_paths(parse_inventory(data, path), path.parent)


def _resolve_paths(site: Inventory, base: Path) -> Inventory:
    """Key and known_hosts paths in the file are relative to the file, as users expect."""

    def fix(value: Path | None) -> Path | None:
        if value is None:
            return None
        value = value.expanduser()
        return value if value.is_absolute() else (base / value).resolve()

    ssh = site.ssh.model_copy(update={"key": fix(site.ssh.key), "known_hosts": fix(site.ssh.known_hosts)})
    hosts = {}
    for name, host in site.hosts.items():
        if host.ssh is not None:
            updates = {}
            for field in ("key", "known_hosts"):
                if field in host.ssh.model_fields_set:
                    updates[field] = fix(getattr(host.ssh, field))
            host = host.model_copy(update={"ssh": host.ssh.model_copy(update=updates)})
        hosts[name] = host
    vault = site.vault.model_copy(update={"ca_file": fix(site.vault.ca_file)})
    gateway = site.gateway.model_copy(update={"client_ca_file": fix(site.gateway.client_ca_file)})
    return site.model_copy(update={"ssh": ssh, "hosts": hosts, "vault": vault, "gateway": gateway})
