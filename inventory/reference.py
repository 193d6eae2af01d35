"""The inventory's reference, made from its schema: a JSON Schema for editors and a Markdown page.

Both are generated from the pydantic models of ``inventory.schema``, so a field's type,
default, bounds and description are written once, in the schema. ``docs/inventory.schema.json``
and ``docs/inventory-reference.md`` are this module's output, committed, and a unit test
(``tests/unit/test_inventory_reference.py``) fails when they differ from what it makes now.
Regenerate them with::

    citadel inventory schema --json --out docs/inventory.schema.json
    citadel inventory schema --out docs/inventory-reference.md

Example::

    >>> json_schema()["properties"]["hosts"]["minProperties"]
    1
    >>> "| `address` | string |" in markdown_reference()
    True
"""

from __future__ import annotations

import json

from inventory.schema import Inventory

SCHEMA_DIALECT = "https://json-schema.org/draft/2020-12/schema"
REGENERATE = (
    "citadel inventory schema --json --out docs/inventory.schema.json && "
    "citadel inventory schema --out docs/inventory-reference.md"
)

# Rules across fields, which a JSON Schema cannot say: enforced by Inventory._cross_checks and
# the models' own validators (inventory/schema.py). Keep this list beside any new rule there.
CROSS_FIELD_RULES = (
    "Every host has a pinned SSH host key: `ssh.host_key` or `ssh.known_hosts`, its own or the site's.",
    "No two hosts share an address and SSH port.",
    "`ssh.user` is not `root` while `ssh.sudo` is true: log in as an unprivileged user with sudo.",
    "A model a host serves (`hosts.NAME.models`), a client may use (`gateway.clients.NAME.models`) or an "
    "opt-in names (`settings.vllm_trust_remote_code`, `settings.vllm_runtime_lora`) is declared under `models`.",
    "Only hosts in the `gpu` group serve models or have `model_store.luks`.",
    "A client with `client_certificate` needs `gateway.client_ca_file`.",
    "`vault.address` is https; `vault.lifetimes.host_credential_seconds` is at least three `token_seconds`.",
    "`hosts.NAME.gpus.model` needs a `count` above 0; `model_store.luks` gives exactly one of `device` and "
    "`image_size` (at least 64M).",
    "`address` is an IP address or a DNS host name; networks are in CIDR form with no host bits set; "
    "`host_key` is an OpenSSH public key line (`ssh-ed25519 AAAA...`).",
)


def json_schema() -> dict:
    """The inventory's JSON Schema (draft 2020-12), for editors and other tools to validate against."""
    schema = _names_only(Inventory.model_json_schema(mode="validation"))
    return {
        "$schema": SCHEMA_DIALECT,
        "$comment": f"Generated from inventory/schema.py; do not edit. Regenerate: {REGENERATE}",
        **schema,
        "title": "Citadel inventory",
    }


def _names_only(node):
    """The schema with every map of NAME keys closed to other keys, as the models are.

    pydantic writes ``dict[Name, X]`` as ``patternProperties`` alone, which lets a key that does
    not match the pattern through; the inventory refuses it.
    """
    if isinstance(node, list):
        return [_names_only(item) for item in node]
    if not isinstance(node, dict):
        return node
    closed = {key: _names_only(value) for key, value in node.items()}
    if "patternProperties" in closed:
        closed.setdefault("additionalProperties", False)
    return closed


def _map_values(prop: dict) -> dict | None:
    """The schema of a map's values (a NAME-keyed map or a free one), or None."""
    patterns = prop.get("patternProperties")
    if patterns:
        return next(iter(patterns.values()))
    values = prop.get("additionalProperties")
    return values if isinstance(values, dict) else None


# -- Markdown ---------------------------------------------------------------------------------


def _definition(schema: dict, ref: str) -> tuple[str, dict]:
    name = ref.rsplit("/", 1)[-1]
    return name, schema["$defs"][name]


def _cell(text: str) -> str:
    """Text fit for one Markdown table cell: one line, no column separator."""
    return " ".join(str(text).split()).replace("|", "\\|")


def _code(value) -> str:
    return f"`{_cell(value)}`"


def _non_null(prop: dict) -> tuple[dict, bool]:
    """(the property without its `null` alternative, whether null is allowed)."""
    options = prop.get("anyOf")
    if not options:
        return prop, False
    kept = [o for o in options if o.get("type") != "null"]
    nullable = len(kept) < len(options)
    if len(kept) == 1:
        return {**kept[0], **{k: v for k, v in prop.items() if k != "anyOf"}}, nullable
    return {**prop, "anyOf": kept}, nullable


class _Writer:
    """Renders one schema: each nested model gets a section, named by the first path that reaches it."""

    def __init__(self, schema: dict):
        self.schema = schema
        self.paths: dict[str, list[str]] = {}  # model name -> the inventory paths where it appears
        self._walk(schema, "", "Inventory")

    # Which sections exist, and where: depth first, in the schema's field order.
    def _walk(self, model: dict, path: str, name: str) -> None:
        self.paths.setdefault(name, []).append(path or "(top level)")
        if len(self.paths[name]) > 1:
            return
        for field, prop in model.get("properties", {}).items():
            for ref, sub_path in self._refs(prop, f"{path}.{field}" if path else field):
                sub_name, sub_model = _definition(self.schema, ref)
                self._walk(sub_model, sub_path, sub_name)

    def _refs(self, prop: dict, path: str):
        prop, _ = _non_null(prop)
        if "$ref" in prop:
            yield prop["$ref"], path
        elif prop.get("type") == "array":
            yield from self._refs(prop.get("items", {}), f"{path}[]")
        elif prop.get("type") == "object" and _map_values(prop) is not None:
            yield from self._refs(_map_values(prop), f"{path}.NAME")

    def heading(self, name: str) -> str:
        path = self.paths[name][0]
        return "The file (top level)" if path == "(top level)" else f"`{path}` ({name})"

    def _link(self, name: str) -> str:
        # GitHub's anchors: lower case, punctuation dropped but '-' and '_', spaces to '-'.
        text = self.heading(name).lower()
        anchor = "".join(c for c in text if c.isalnum() or c in "-_ ").replace(" ", "-")
        return f"[{name}](#{anchor})"

    def type_of(self, prop: dict) -> str:
        prop, nullable = _non_null(prop)
        suffix = " or null" if nullable else ""
        if "$ref" in prop:
            return self._link(_definition(self.schema, prop["$ref"])[0]) + suffix
        if "anyOf" in prop:
            return " or ".join(self.type_of(o) for o in prop["anyOf"]) + suffix
        if "enum" in prop:
            return "one of " + ", ".join(_code(v) for v in prop["enum"]) + suffix
        if "const" in prop:
            return _code(prop["const"]) + suffix
        kind = prop.get("type", "any")
        if kind == "array":
            return f"list of {self.type_of(prop.get('items', {}))}{suffix}"
        if kind == "object":
            values = _map_values(prop)
            inner = self.type_of(values) if values is not None else "any"
            return f"map of NAME to {inner}{suffix}"
        shown = {"uri": "URL", "path": "path"}.get(prop.get("format"), kind)
        return shown + suffix

    @staticmethod
    def bounds_of(prop: dict) -> str:
        prop, _ = _non_null(prop)
        found = []
        for key, shown in (("minimum", ">= {}"), ("exclusiveMinimum", "> {}"), ("maximum", "<= {}"),
                           ("exclusiveMaximum", "< {}"), ("minLength", "length >= {}"), ("maxLength", "length <= {}"),
                           ("minItems", "at least {} item"), ("maxItems", "at most {} item"),
                           ("minProperties", "at least {} entry")):
            if key in prop:
                count = prop[key]
                plural = "s" if key in ("maxItems", "minItems") and count != 1 else ""
                shown = shown.replace("entry", "entries") if key == "minProperties" and count != 1 else shown
                found.append(shown.format(count) + plural)
        if "pattern" in prop:
            found.append(f"matches {_code(prop['pattern'])}")
        for pattern in prop.get("patternProperties", {}):
            found.append(f"NAME matches {_code(pattern)}")
        for label, inner in (("each item", prop.get("items")), ("each value", _map_values(prop))):
            if isinstance(inner, dict) and "$ref" not in inner:
                inner_bounds = _Writer.bounds_of(inner)
                if inner_bounds:
                    found.append(f"{label}: {inner_bounds}")
        return "; ".join(found)

    @staticmethod
    def default_of(prop: dict, required: bool) -> str:
        if required:
            return "**required**"
        if "default" not in prop:  # a default_factory: an empty list or map, or the model's own defaults
            kind = _non_null(prop)[0]
            return "its fields' defaults" if "$ref" in kind else _code("[]" if kind.get("type") == "array" else "{}")
        value = prop["default"]
        if isinstance(value, dict) and value:
            return "its fields' defaults"
        return _code(json.dumps(value, ensure_ascii=False))

    def description_of(self, prop: dict) -> str:
        if "description" in prop:
            return _cell(prop["description"])
        # A nested model (alone, in a list or in a map) says what it is in its own docstring.
        inner, _ = _non_null(prop)
        inner = _map_values(inner) or inner.get("items") or inner
        if "$ref" in inner:
            _, model = _definition(self.schema, inner["$ref"])
            return _cell(model.get("description", "").split("\n\n")[0])
        return ""

    def section(self, name: str, model: dict) -> list[str]:
        paths = self.paths[name]
        lines = [f"## {self.heading(name)}", ""]
        about = " ".join(model.get("description", "").split("\n\nExample")[0].split())
        lines += [about, ""] if about else []
        if len(paths) > 1:
            lines += ["Also at: " + ", ".join(_code(p) for p in paths[1:]) + ".", ""]
        lines += ["| field | type | default | bounds | description |", "|---|---|---|---|---|"]
        required = set(model.get("required", ()))
        for field, prop in model.get("properties", {}).items():
            lines.append(f"| `{field}` | {self.type_of(prop)} | {self.default_of(prop, field in required)} | "
                         f"{self.bounds_of(prop)} | {self.description_of(prop)} |")
        return [*lines, ""]

    def page(self) -> str:
        lines = [
            "# Inventory reference",
            "",
            "<!-- Generated from inventory/schema.py by `citadel inventory schema`; do not edit.",
            f"     Regenerate: {REGENERATE} -->",
            "",
            "One YAML file describes a site (`inventory/example-hospital.yaml` is a realistic one). Every "
            "section below is one object of it; unknown keys are errors, and every error names the file and "
            "the field path (`hosts.gpu-01.address`). `NAME` stands for a name you choose: lower-case letters, "
            "digits, `.`, `_` and `-`, starting with a letter or digit, at most 63 characters. Editors can "
            "validate a file as you type against the JSON Schema `docs/inventory.schema.json` (README, "
            '"The inventory").',
            "",
            "## Rules across fields",
            "",
            "Checked by `citadel inventory check` (and every command that reads an inventory), not by the "
            "JSON Schema:",
            "",
            *(f"- {rule}" for rule in CROSS_FIELD_RULES),
            "",
        ]
        lines += self.section("Inventory", self.schema)
        for name in self.paths:
            if name != "Inventory":
                lines += self.section(name, self.schema["$defs"][name])
        return "\n".join(lines).rstrip("\n") + "\n"


def markdown_reference() -> str:
    """The inventory's reference as Markdown: one section per object, one table row per field."""
    return _Writer(json_schema()).page()
