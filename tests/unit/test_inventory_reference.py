"""The inventory's generated reference and JSON Schema: committed copies current, the example valid."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import yaml

from inventory.reference import REGENERATE, json_schema, markdown_reference
from inventory.schema import Inventory

REPO = Path(__file__).resolve().parents[2]
SCHEMA_FILE = REPO / "docs" / "inventory.schema.json"
REFERENCE_FILE = REPO / "docs" / "inventory-reference.md"
EXAMPLE = REPO / "inventory" / "example-hospital.yaml"
STALE = f"is older than inventory/schema.py; regenerate it (from the repository root): {REGENERATE}"


def test_committed_json_schema_is_current():
    assert json.loads(SCHEMA_FILE.read_text(encoding="utf-8")) == json_schema(), f"{SCHEMA_FILE.name} {STALE}"


def test_committed_reference_is_current():
    assert REFERENCE_FILE.read_text(encoding="utf-8") == markdown_reference(), f"{REFERENCE_FILE.name} {STALE}"


def _fields(model) -> set[str]:
    """Every field name of `model` and of the models nested in it."""
    names = set()
    for name, info in model.model_fields.items():
        names.add(name)
        for nested in _nested_models(info.annotation):
            names |= _fields(nested)
    return names


def _nested_models(annotation) -> list:
    from pydantic import BaseModel

    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [model for arg in getattr(annotation, "__args__", ()) for model in _nested_models(arg)]


def test_reference_has_a_row_for_every_field():
    reference = markdown_reference()
    missing = sorted(name for name in _fields(Inventory) if f"| `{name}` |" not in reference)
    assert not missing, f"fields without a row in the reference: {missing}"


def test_every_link_in_the_reference_has_its_section():
    reference = markdown_reference()
    anchors = {
        "".join(c for c in line[3:].lower() if c.isalnum() or c in "-_ ").replace(" ", "-")
        for line in reference.splitlines() if line.startswith("## ")
    }
    links = {part.split(")", 1)[0] for part in reference.split("](#")[1:]}
    assert links and links <= anchors, f"links to no section: {sorted(links - anchors)}"


def test_example_validates_against_the_json_schema():
    import jsonschema  # a test dependency (pyproject.toml's test extra)

    schema = json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    validator = jsonschema.Draft202012Validator(schema)
    document = yaml.safe_load(EXAMPLE.read_text(encoding="utf-8"))
    assert not [e.message for e in validator.iter_errors(document)]
    document["hosts"]["gpu-01"]["adress"] = "10.20.1.11"  # a typo is refused, as the loader refuses it
    assert any("adress" in e.message for e in validator.iter_errors(document))


def test_maps_of_names_refuse_other_keys():
    # pydantic writes dict[Name, X] as patternProperties alone; the export closes them like the loader.
    hosts = json_schema()["properties"]["hosts"]
    assert hosts["additionalProperties"] is False and hosts["patternProperties"]


def test_cli_prints_what_the_generator_makes(tmp_path):
    run = [sys.executable, "-m", "deploy.cli", "inventory", "schema"]
    printed = subprocess.run([*run, "--json"], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert printed.returncode == 0, printed.stderr
    assert json.loads(printed.stdout) == json_schema()
    written = subprocess.run([*run, "--out", str(tmp_path / "ref.md")], capture_output=True, text=True, cwd=REPO,
                             timeout=60)
    assert written.returncode == 0, written.stderr
    assert (tmp_path / "ref.md").read_text(encoding="utf-8") == markdown_reference()
    refused = subprocess.run([*run, "--out", str(tmp_path / "absent" / "ref.md")], capture_output=True, text=True,
                             cwd=REPO, timeout=60)
    assert refused.returncode == 2 and "absent/ref.md" in refused.stderr
