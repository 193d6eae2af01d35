"""docs/waivers.md's example is a file `citadel audit --waivers` accepts: the real loader, the real catalog."""

from __future__ import annotations

import re
from pathlib import Path

from hardening.catalog import load_catalog
from hardening.waivers import Waiver, load_waivers

DOC = Path(__file__).resolve().parents[2] / "docs" / "waivers.md"


def yaml_blocks(markdown: str) -> list[str]:
    """The contents of the page's fenced ```yaml blocks, in order."""
    return re.findall(r"^```yaml\n(.*?)^```$", markdown, flags=re.MULTILINE | re.DOTALL)


def test_the_documented_example_loads(tmp_path):
    blocks = yaml_blocks(DOC.read_text(encoding="utf-8"))
    assert len(blocks) == 1, f"{DOC.name}: expected one ```yaml example, found {len(blocks)}"
    example = tmp_path / "waivers.yaml"
    example.write_text(blocks[0], encoding="utf-8")
    waivers = load_waivers(example, {control.id for control in load_catalog()})
    assert [w.control for w in waivers] == ["ssh-max-auth-tries", "svc-chrony-synchronised"]
    assert waivers[0].covers("gpu-01", "ssh-max-auth-tries") and not waivers[0].covers("gw-01", "ssh-max-auth-tries")
    assert waivers[1].hosts == "*"  # the documented default


def test_every_documented_field_is_one_the_loader_knows():
    table = DOC.read_text(encoding="utf-8").split("| field |", 1)[1].split("\n\n", 1)[0]
    documented = re.findall(r"^\| `([a-z_]+)` \|", table, flags=re.MULTILINE)
    assert documented == list(Waiver.model_fields)
