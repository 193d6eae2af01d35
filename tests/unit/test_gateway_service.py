"""The gateway service itself, on this machine's loopback: what it does before any model is involved.

It runs as on a host (``python3 -m citadel_runtime.gateway.server --config FILE``), with a
certificate made here and no model server at all: refusals, the admin listener, and the
audit log failing closed when its file cannot be written (``/dev/full``: every write is
ENOSPC, as on a full disk).
"""

from __future__ import annotations

import http.client
import json
import ssl
from pathlib import Path

import pytest

from tests.gateway_harness import Gateway


def start_gateway(tmp_path: Path, keys: dict[str, str], policies: dict, **config) -> tuple:
    """The gateway as a host runs it (tests/gateway_harness.py): (process, port, admin port, TLS paths)."""
    gateway = Gateway(tmp_path, keys=keys, policies=policies, config=config).start()
    return gateway.process, gateway.port, gateway.admin_port, gateway.tls


@pytest.fixture
def gateway(tmp_path, request):
    extra = {"audit_log": request.param} if hasattr(request, "param") else {}
    process, port, admin, tls = start_gateway(tmp_path, {"ward": "ck_w"}, {"ward": {"models": ["tiny"], "max_tokens": 8}},
                                              **extra)
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


def client_certificate(tmp_path: Path, common_name: str) -> tuple[Path, Path]:
    """A CA of client applications and one client certificate it signs: (ca.pem, client bundle)."""
    import datetime as dt

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

    now = dt.datetime.now(dt.UTC)
    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Hospital applications CA")])
    ca = (x509.CertificateBuilder().subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
          .serial_number(x509.random_serial_number()).not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
          .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True).sign(ca_key, hashes.SHA256()))
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
            .issuer_name(ca_name).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now).not_valid_after(now + dt.timedelta(days=1))
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
            .sign(ca_key, hashes.SHA256()))
    pem = serialization.Encoding.PEM
    (tmp_path / "client-ca.pem").write_bytes(ca.public_bytes(pem))
    (tmp_path / "client.pem").write_bytes(
        key.private_bytes(pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()) + cert.public_bytes(pem))
    return tmp_path / "client-ca.pem", tmp_path / "client.pem"


def test_a_client_that_requires_mutual_tls_is_refused_without_its_certificate(tmp_path):
    ca, bundle = client_certificate(tmp_path, "radiology-app")
    (tmp_path / "other").mkdir()
    _, other = client_certificate(tmp_path / "other", "radiology-app")
    process, port, _, tls = start_gateway(
        tmp_path, {"radiology": "ck_r", "ward": "ck_w"},
        {"radiology": {"models": [], "client_certificate": "radiology-app"}, "ward": {"models": []}}, client_ca=str(ca))
    try:
        def status(key, cert=None):
            context = ssl.create_default_context(cafile=str(tls.ca_file))
            if cert:
                context.load_cert_chain(str(cert))
            connection = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
            try:
                connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
                return connection.getresponse().status
            except (ssl.SSLError, ConnectionError):
                return "handshake refused"
            finally:
                connection.close()

        assert status("ck_r") == 403  # its key alone is not enough
        assert status("ck_r", bundle) == 503  # key and certificate: through to (no) model server
        assert status("ck_r", other) == "handshake refused"  # same name, signed by another CA
        assert status("ck_w") == 503  # a client without the requirement needs no certificate
        records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
        assert [r.get("client_cert") for r in records if r["client"] == "radiology"][:2] == [None, "radiology-app"]
    finally:
        process.terminate()
        process.wait(timeout=10)
