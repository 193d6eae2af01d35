"""The gateway's pure logic: routes, keys, limits, the PHI guard, the chained record, its config."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from citadel_runtime.gateway import phi
from citadel_runtime.gateway.auditlog import GENESIS, Chain, Writer, tail_state, verify_lines
from citadel_runtime.gateway.clients import KeyTable, Limits, Policy, requested_tokens
from citadel_runtime.gateway.http1 import HttpError, parse_head
from citadel_runtime.gateway.routes import classify
from citadel_runtime.gateway.server import refusal_code
from citadel_runtime.gateway.upstream import Address
from citadel_runtime.keydoc import digest

KEY = b"k" * 64


@pytest.mark.parametrize("method,target", [
    ("POST", "/v1/chat/completions"), ("POST", "/v1/completions"), ("POST", "/v1/embeddings"), ("GET", "/v1/models"),
])
def test_the_allowed_routes_pass_in_their_canonical_spelling(method, target):
    assert classify(method, target).status == 200


@pytest.mark.parametrize("target", ["/invocations", "/tokenize", "/metrics", "/docs", "/v1/load_lora_adapter",
                                    "/health", "/v2/models", "/"])
def test_unknown_routes_are_404(target):
    assert classify("POST", target).status == 404


@pytest.mark.parametrize("target", [
    "/v1/%2e%2e/invocations", "/v1/..%2Finvocations", "//v1/models", "/v1//models", "/V1/models",
    "/v1/Models", "/v1/models/", "/v1/./models", "/v1/chat/../../invocations", "/v1/chat%2Fcompletions",
    "/%69nvocations", "/v1/models;x", "/v1/models\\..\\x", "/v1/models?x=%2e", "/v1/mödels",
])
def test_path_tricks_are_403(target):
    decision = classify("POST", target)
    assert decision.status == 403 and decision.reason.startswith("path trick"), (target, decision)


def test_a_wrong_method_on_an_allowed_route_is_405():
    assert classify("DELETE", "/v1/models").status == 405
    assert classify("GET", "/v1/chat/completions").status == 405


def test_request_heads_are_read_strictly():
    head = parse_head(b"POST /v1/models HTTP/1.1\r\nHost: x\r\nContent-Length: 12\r\nAuthorization: Bearer k")
    assert (head.content_length, head.headers["authorization"], head.keep_alive) == (12, "Bearer k", True)
    for bad, status in ((b"POST /x HTTP/1.1\r\nTransfer-Encoding: chunked", 411),
                        (b"POST /x HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2", 400),
                        (b"POST /x HTTP/1.1\r\nContent-Length: -1", 400),
                        (b"POST /x HTTP/2.0", 505), (b"GARBAGE", 400),
                        (b"POST /x HTTP/1.1\r\nBad header", 400), ("POST /é HTTP/1.1".encode(), 400)):
        with pytest.raises(HttpError) as caught:
            parse_head(bad)
        assert caught.value.status == status, bad


def test_client_keys_match_by_hash_and_a_previous_key_only_during_its_overlap():
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    table = KeyTable({"clients": {
        "ward": {"current": {"version": 2, "sha256": digest("ck_new")}, "previous": {"version": 1, "sha256": digest("ck_old")},
                 "previous_expires": (now + dt.timedelta(hours=1)).isoformat()},
        "lab": {"current": {"version": 1, "sha256": digest("ck_lab")}}}})
    assert table.identify("ck_new", now) == ("ward", 2)
    assert table.identify("ck_old", now) == ("ward", 1)
    assert table.identify("ck_old", now + dt.timedelta(hours=2)) is None
    assert table.identify("ck_lab", now) == ("lab", 1)
    assert table.identify("nope", now) is None


def test_a_client_table_with_a_plaintext_key_is_refused(tmp_path):
    path = tmp_path / "client-keys.json"
    path.write_text(json.dumps({"clients": {"x": {"current": {"version": 1, "value": "ck_plain"}}}}))
    with pytest.raises(ValueError, match="plaintext"):
        KeyTable.load(str(path))


def test_rate_and_concurrency_limits():
    limits, policy = Limits(), Policy(requests_per_minute=3, concurrent_requests=2)
    assert limits.admit("a", policy, now=0) is None
    assert limits.admit("a", policy, now=1) is None
    assert limits.admit("a", policy, now=2)[0] == "concurrency limit"
    limits.release("a")
    assert limits.admit("a", policy, now=3) is None
    limits.release("a"), limits.release("a")
    reason, retry = limits.admit("a", policy, now=4)
    assert reason == "rate limit" and retry == pytest.approx(56)
    assert limits.admit("a", policy, now=61) is None  # the window moved on
    assert limits.admit("b", policy, now=4) is None  # per client


def test_requested_tokens():
    assert requested_tokens({"max_tokens": 5, "max_completion_tokens": 9}) == 9
    assert requested_tokens({"max_tokens": True}) is None and requested_tokens({}) is None


@pytest.mark.parametrize("text,kinds", [
    ("MRN: 00123456", {"mrn"}), ("call (555) 123-4567", {"phone"}), ("mail a.b@example.org", {"email"}),
    ("SSN 123-45-6789", {"ssn"}), ("MBI 1EG4-TE5-MK73", {"insurance"}), ("member id: XJ99812345", {"insurance"}),
    ("born 03/04/1950", {"date"}), ("on March 3, 2024", {"date"}), ("lives at 12 Oak Street", {"address"}),
    ("seen by Dr. Smith", {"name"}), ("patient: Jane Doe", {"name"}),
    ("The dose is 5 mg twice a day for 10 days.", set()),
])
def test_the_phi_guard_finds_each_kind(text, kinds):
    assert set(phi.scan(text)) == kinds


def test_the_phi_guard_redacts_in_place_and_off_sees_nothing():
    body = {"messages": [{"role": "user", "content": "SSN 123-45-6789"},
                         {"role": "user", "content": [{"type": "text", "text": "call 555-123-4567"}]}],
            "prompt": ["DOB 01/02/1960"]}
    counts, changed = phi.guard(body, "redact")
    assert counts == {"ssn": 1, "phone": 1, "date": 1} and changed
    assert "123-45" not in json.dumps(body) and "[SSN]" in json.dumps(body)
    assert phi.guard({"prompt": "SSN 123-45-6789"}, "off") == ({}, False)
    detect = {"prompt": "SSN 123-45-6789"}
    assert phi.guard(detect, "detect") == ({"ssn": 1}, False) and "123-45" in detect["prompt"]


def chain_lines(n: int) -> list[str]:
    chain = Chain(KEY)
    return [chain.seal({"status": 200, "n": i}) for i in range(n)]


def test_the_chain_verifies_and_each_kind_of_tampering_is_named():
    lines = chain_lines(6)
    assert verify_lines(lines, KEY).ok
    edited = list(lines)
    edited[2] = edited[2].replace('"status":200', '"status":500')
    assert "line 3: MAC does not match" in verify_lines(edited, KEY).problems[0]
    deleted = lines[:3] + lines[4:]
    assert any("seq 5 where 4" in p for p in verify_lines(deleted, KEY).problems)
    swapped = lines[:1] + [lines[2], lines[1]] + lines[3:]
    assert not verify_lines(swapped, KEY).ok
    assert "starts at seq 2" in verify_lines(lines[1:], KEY).problems[0]
    assert not verify_lines(lines, b"x" * 64).ok  # another key
    assert "not a chained record" in verify_lines(lines[:2] + ["garbage"], KEY).problems[0]


def test_the_writer_continues_an_existing_chain_and_fails_closed_when_it_cannot_write(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = Writer(str(path), KEY)
    writer.write({"status": 200})
    writer.close()
    assert tail_state(str(path))[0] == 1
    writer = Writer(str(path), KEY)  # a restart carries on the chain
    writer.write({"status": 401})
    assert verify_lines(path.read_text().splitlines(), KEY).ok
    assert tail_state(str(tmp_path / "none")) == (0, GENESIS)
    import os
    os.close(writer.fd)
    writer.fd = os.open("/dev/full", os.O_WRONLY)  # every write: ENOSPC
    assert writer.write({"status": 200}) is None and not writer.healthy and not writer.may_serve()
    writer.fail_open = True
    assert writer.may_serve()
    assert writer.chain.seq == 2  # the failed record did not advance the chain


def test_refusal_codes_and_upstream_addresses():
    assert refusal_code("path trick: dot segment") == "path_trick"
    assert refusal_code("body larger than 1024 bytes") == "body_too_large"
    assert refusal_code("model server: connect: refused") == "upstream_error"
    assert Address.parse("https://10.0.0.5:8443") == Address("https", "10.0.0.5", 8443)
    assert Address.parse("unix:/run/x.sock").path == "/run/x.sock"
    with pytest.raises(ValueError):
        Address.parse("ftp://x:1")


def test_the_role_config_routes_each_model_to_its_gpu_hosts_keyguard_and_carries_no_secret():
    from pathlib import Path

    from inventory.loader import load_inventory
    from roles.gateway import gateway_config

    site = load_inventory(Path(__file__).resolve().parents[2] / "inventory" / "example-hospital.yaml")
    config = gateway_config(site)
    assert config["upstreams"] == {"qwen2.5-32b-radiology": "https://10.20.1.11:8443",
                                   "llama-3.1-8b-clinical": f"https://{site.hosts['gpu-02'].address}:8443"}
    assert config["admin_listen"] == "127.0.0.1:9464" and config["audit_fail_open"] is False
    assert config["clients"]["radiology-reporting"]["phi"] == "redact"
    assert config["clients"]["discharge-letters"]["max_body_bytes"] == 1 << 20  # the default
    assert gateway_config(site) == config  # deterministic: reruns are no-ops
    assert not any(word in json.dumps(config) for word in ("ck_", "sha256", "BEGIN"))


def test_a_client_policy_naming_an_undeclared_model_is_refused_with_its_field():
    from pathlib import Path

    import yaml

    from inventory.loader import InventoryError, parse_inventory

    example = Path(__file__).resolve().parents[2] / "inventory" / "example-hospital.yaml"
    data = yaml.safe_load(example.read_text())
    data["gateway"]["clients"]["radiology-reporting"]["models"] = ["gpt-9"]
    with pytest.raises(InventoryError, match=r"gateway.clients.radiology-reporting.models: model 'gpt-9'"):
        parse_inventory(data, example)
    data = yaml.safe_load(example.read_text())
    data["gateway"]["clients"]["radiology-reporting"]["phi"] = "maybe"
    with pytest.raises(InventoryError, match="phi"):
        parse_inventory(data, example)


def test_recorded_content_opens_only_with_its_key_and_its_own_request_id():
    from cryptography.exceptions import InvalidTag

    from citadel_runtime.gateway.content import LIMIT, open_sealed, seal

    key = bytes(range(32))
    sealed = seal(key, "r1", b'{"prompt": "MRN 123456"}', b"x" * (LIMIT + 10))
    opened = open_sealed(key, "r1", sealed)
    assert opened["request"] == '{"prompt": "MRN 123456"}' and opened["truncated"] and len(opened["response"]) == LIMIT
    assert "123456" not in json.dumps(sealed)
    with pytest.raises(InvalidTag):
        open_sealed(key, "r2", sealed)  # moved to another record
    with pytest.raises(InvalidTag):
        open_sealed(bytes(32), "r1", sealed)


def test_mutual_tls_needs_the_clients_ca_and_the_role_installs_it(tmp_path):
    from pathlib import Path

    import yaml

    from inventory.loader import InventoryError, load_inventory, parse_inventory
    from roles.gateway import CLIENT_CA, gateway_config

    example = Path(__file__).resolve().parents[2] / "inventory" / "example-hospital.yaml"
    data = yaml.safe_load(example.read_text())
    data["gateway"]["clients"]["radiology-reporting"]["client_certificate"] = "radiology-app"
    with pytest.raises(InventoryError, match="client_certificate: set gateway.client_ca_file"):
        parse_inventory(data, example)
    data["gateway"]["client_ca_file"] = "apps-ca.pem"  # relative to the inventory file
    site_file = tmp_path / "site.yaml"
    site_file.write_text(yaml.safe_dump(data))
    site = load_inventory(site_file)
    assert site.gateway.client_ca_file == tmp_path / "apps-ca.pem"
    config = gateway_config(site)
    assert config["client_ca"] == CLIENT_CA
    assert config["clients"]["radiology-reporting"]["client_certificate"] == "radiology-app"
