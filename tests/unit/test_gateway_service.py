"""The gateway service itself, on this machine's loopback: what it does before any model is involved.

It runs as on a host (``python3 -m citadel_runtime.gateway.server --config FILE``), with a
certificate made here and no model server at all: refusals, the admin listener, and the
audit log failing closed when its file cannot be written (``/dev/full``: every write is
ENOSPC, as on a full disk).
"""

from __future__ import annotations

import http.client
import json
import socket
import ssl
import subprocess
import sys
import time
from pathlib import Path

import pytest

from citadel_runtime.keydoc import digest
from deploy.vault.tls import write_tls

REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def gateway(tmp_path, request):
    tls = write_tls(tmp_path / "tls")
    (tmp_path / "tls.pem").write_bytes(tls.key_file.read_bytes() + tls.cert_file.read_bytes())
    (tmp_path / "clients.json").write_text(json.dumps({"clients": {"ward": {"current": {"version": 1, "sha256": digest("ck_w")}}}}))
    (tmp_path / "audit.json").write_text(json.dumps({"value": "a" * 64}))
    (tmp_path / "keys.json").write_text(json.dumps({"current": {"version": 1, "value": "ik_x"}}))
    port, admin = free_port(), free_port()
    config = {"listen": f"127.0.0.1:{port}", "admin_listen": f"127.0.0.1:{admin}", "tls": str(tmp_path / "tls.pem"),
              "client_keys": str(tmp_path / "clients.json"), "audit_key": str(tmp_path / "audit.json"),
              "audit_log": getattr(request, "param", str(tmp_path / "audit.jsonl")), "journal": False,
              "upstreams": {"tiny": f"https://127.0.0.1:{free_port()}"},  # nothing listens there
              "upstream_key": {"kind": "keydoc", "path": str(tmp_path / "keys.json")},
              "clients": {"ward": {"models": ["tiny"], "max_tokens": 8}}}
    (tmp_path / "gateway.json").write_text(json.dumps(config))
    process = subprocess.Popen([sys.executable, "-m", "citadel_runtime.gateway.server", "--config",
                                str(tmp_path / "gateway.json")], cwd=REPO, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 20
    while True:
        try:
            socket.create_connection(("127.0.0.1", admin), timeout=1).close()
            break
        except OSError:
            assert process.poll() is None and time.monotonic() < deadline, process.stderr.read()
            time.sleep(0.1)
    context = ssl.create_default_context(cafile=str(tls.ca_file))

    def call(method, path, key=None, body=None):
        connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        headers = {"Authorization": f"Bearer {key}"} if key else {}
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        return response.status, json.loads(response.read() or b"{}")

    def admin_get(path):
        connection = http.client.HTTPConnection("127.0.0.1", admin, timeout=10)
        connection.request("GET", path)
        response = connection.getresponse()
        return response.status, response.read().decode()

    yield call, admin_get, tmp_path
    process.terminate()
    process.wait(timeout=10)


CHAT = {"model": "tiny", "messages": [{"role": "user", "content": "hi"}]}


def test_refusals_are_json_with_a_request_id_and_each_is_recorded(gateway):
    call, admin_get, tmp_path = gateway
    assert call("POST", "/invocations", "ck_w", CHAT)[0] == 404
    assert call("POST", "/v1/chat/completions", None, CHAT)[0] == 401
    status, body = call("POST", "/v1/chat/completions", "ck_w", {**CHAT, "model": "other"})
    assert status == 403 and body["error"]["request_id"]
    # No model server answers: a clean 503, not a hang or a reset.
    status, body = call("POST", "/v1/chat/completions", "ck_w", CHAT)
    assert status == 503 and "model server" in body["error"]["message"]
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [r["status"] for r in records] == [404, 401, 403, 503]
    status, metrics = admin_get("/metrics")
    assert status == 200 and 'citadel_gateway_refusals_total{reason="unauthenticated"} 1' in metrics
    assert 'citadel_gateway_upstream_errors_total{kind="connect"} 1' in metrics


@pytest.mark.parametrize("gateway", ["/dev/full"], indirect=True)
def test_when_the_record_cannot_be_written_the_gateway_refuses_to_serve(gateway):
    call, admin_get, _ = gateway
    assert call("POST", "/v1/chat/completions", None, CHAT)[0] == 401  # answered; its record failed
    status, body = call("POST", "/v1/chat/completions", "ck_w", CHAT)
    assert status == 503 and "audit log unavailable" in body["error"]["message"]
    assert admin_get("/health")[0] == 503
    assert "citadel_gateway_audit_log_healthy 0" in admin_get("/metrics")[1]
