"""The gateway's pure logic: routes, keys, limits, its config (the record: test_auditlog.py; PHI: test_phi.py)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pytest

from citadel_runtime.gateway.clients import KeyTable, Limits, Policy, requested_tokens
from citadel_runtime.gateway.routes import classify
from citadel_runtime.gateway.server import refusal_code
from citadel_runtime.gateway.upstream import Address
from citadel_runtime.keydoc import digest


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
    # The output caps' policy reaches the gateway, with its safe defaults (refuse, one choice).
    assert {k: config["clients"]["discharge-letters"][k] for k in ("max_choices", "clamp_outputs")} == {
        "max_choices": 1, "clamp_outputs": False}
    assert config["max_connections_per_source"] == 64 and config["body_seconds"] == 30  # gateway.limits' defaults
    assert "workers" not in config  # unset: the gateway chooses from its CPUs
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


def test_every_gateway_limit_of_the_inventory_is_a_key_the_gateway_reads():
    from citadel_runtime.gateway.connections import Deadlines
    from inventory.schema import GatewayLimits

    limits = GatewayLimits(handshake_seconds=1, head_seconds=2, idle_seconds=3, body_seconds=4, drain_seconds=5)
    assert Deadlines.from_config(limits.model_dump()) == Deadlines(handshake=1, head=2, idle=3, body=4, drain=5)
    server = (Path(__file__).parents[2] / "citadel_runtime" / "gateway" / "server.py").read_text()
    unread = [name for name in GatewayLimits.model_fields
              if not name.endswith("_seconds") or name == "audit_summary_seconds"
              if f'config.get("{name}"' not in server]
    assert not unread, f"inventory keys the gateway never reads: {unread}"


def test_every_key_the_gateway_reads_is_one_the_role_can_write():
    import re

    from inventory.loader import load_inventory
    from inventory.schema import GatewayLimits
    from roles.gateway import gateway_config

    site = load_inventory(Path(__file__).resolve().parents[2] / "inventory" / "example-hospital.yaml")
    # client_ca and content_key only when a client needs them; a limit left unset (workers) is left out.
    written = set(gateway_config(site)) | {"client_ca", "content_key"} | set(GatewayLimits.model_fields)
    server = (Path(__file__).parents[2] / "citadel_runtime" / "gateway" / "server.py").read_text()
    read = set(re.findall(r'config(?:\.get\(|\[)"([a-z_]+)"', server))
    assert read and not read - written, f"keys the gateway reads that no inventory setting reaches: {read - written}"


def test_the_gateway_unit_lets_the_screening_workers_lower_their_priority_and_nothing_more():
    # The unit denies @resources, and a denied system call kills the process: without this
    # one exception each worker would die at start (offload._worker_start calls os.nice).
    from citadel_runtime.gateway.offload import WORKER_NICENESS

    unit = (Path(__file__).parents[2] / "roles" / "gateway" / "files" / "citadel-gateway.service").read_text()
    filters = [line.split("=", 1)[1] for line in unit.splitlines() if line.startswith("SystemCallFilter=")]
    assert WORKER_NICENESS > 0 and filters == ["@system-service", "~@privileged @resources", "setpriority"]
