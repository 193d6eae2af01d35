"""The demo client's pieces that need no lab: its key file, the first chat's retries, what it prints."""

from __future__ import annotations

import json
import shlex
from pathlib import Path

from deploy.lab import demo
from inventory.lab import lab_inventory


def test_a_key_file_is_written_0600_and_read_back(tmp_path):
    path = demo.key_path(tmp_path / "d")
    demo.write_private(path, ("ck_" + "a" * 43 + "\n").encode())
    assert path.stat().st_mode & 0o777 == 0o600
    assert (tmp_path / "d").stat().st_mode & 0o777 == 0o700
    assert demo.read_key(path) == "ck_" + "a" * 43


def test_a_foreign_or_oversized_key_file_is_not_sent(tmp_path):
    path = tmp_path / "k"
    assert demo.read_key(path) is None  # absent
    path.write_text("hunter2\n")
    assert demo.read_key(path) is None  # not a client key
    path.write_text("ck_" + "a" * 10_000)
    assert demo.read_key(path) is None  # longer than any key: never sent


def test_the_first_chat_is_asked_again_while_the_gateway_does_not_know_the_key(monkeypatch, tmp_path):
    answers = iter([demo.Chat(401, "r1", "invalid key"), demo.Chat(503, "r2", "starting"), demo.Chat(200, "r3", "hi")])
    monkeypatch.setattr(demo, "chat", lambda *a, **k: next(answers))
    monkeypatch.setattr(demo.time, "sleep", lambda s: None)
    said = []
    assert demo.first_chat("10.77.0.2", tmp_path, "ck_x", "m", progress=said.append) == demo.Chat(200, "r3", "hi")
    assert len(said) == 2


def test_a_refusal_that_waiting_does_not_change_is_returned_at_once(monkeypatch, tmp_path):
    monkeypatch.setattr(demo, "chat", lambda *a, **k: demo.Chat(403, "r", "no policy for this client"))
    assert demo.first_chat("10.77.0.2", tmp_path, "ck_x", "m").status == 403


def test_what_it_prints_runs_as_printed():
    text = demo.instructions(address="10.77.0.2", directory=Path("/var/lib/citadel demo"), model="tiny-clinical",
                             inventory=Path("/srv/c/inventory/lab.yaml"), host="lab-01",
                             ssh=["ssh", "-i", "/k", "citadel@10.77.0.2"], request_id="abc",
                             vault_dir=Path("/var/lib/citadel-vault"))
    curl = text[text.index("curl "):].split("\n\n")[0]
    words = shlex.split(curl.replace("\\\n", " "))
    assert words[:3] == ["curl", "--cacert", "/var/lib/citadel demo/citadel-ca.pem"]  # quoted: a space survives
    assert json.loads(words[words.index("-d") + 1])["model"] == "tiny-clinical"
    assert "$(cat '/var/lib/citadel demo/demo-client.key')" in curl  # the key itself is never printed
    for needed in ("audit-log verify", "--request-id abc", "citadel audit -i", "citadel lab down", "vault stop",
                   "rm -rf"):
        assert needed in text


def test_the_lab_inventory_gives_the_demo_client_the_lab_model_only():
    class Host:
        name, kind, address, port, host_key = "lab-01", "container", "10.77.0.2", 22, "ssh-ed25519 AAAA"
        controller_address = "10.77.0.1"

    class Lab:
        name, hosts, vault_address, vault_port, ssh_user, ssh_key = "citadel", [Host()], "10.77.0.1", 8200, "citadel", "/k"

    assert lab_inventory(Lab(), "tiny-clinical")["gateway"]["clients"] == {"demo": {"models": ["tiny-clinical"]}}
    assert "gateway" not in lab_inventory(Lab())
