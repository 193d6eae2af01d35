"""The gateway service itself, on this machine's loopback: what it does before any model is involved.

It runs as on a host (``python3 -m citadel_runtime.gateway.server --config FILE``), through
the tests' one harness (tests/gateway_harness.py), with a certificate made here and no model
server at all: refusals, the admin listener, ``GET /v1/models`` answered from the client's
policy, and the audit log failing closed when its file cannot be written (``/dev/full``:
every write is ENOSPC, as on a full disk).
"""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import ssl
from pathlib import Path

import pytest

from citadel_runtime.gateway import server
from tests.gateway_harness import CHAT, Gateway


@pytest.fixture
def gateway(tmp_path, request):
    config = {"audit_log": request.param} if hasattr(request, "param") else {}
    with Gateway(tmp_path, config=config) as started:  # no model server: nothing listens at its address
        yield started


def test_refusals_are_json_with_a_request_id_and_each_is_recorded(gateway):
    assert gateway.request("POST", "/invocations", key="ck_w", body=CHAT)[0] == 404
    assert gateway.request("POST", "/v1/chat/completions", body=CHAT)[0] == 401
    status, body, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w", body={**CHAT, "model": "other"})
    assert status == 403 and body["error"]["request_id"] == headers["x-request-id"]
    # No model server answers: a clean 503, not a hang or a reset.
    status, body, _ = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
    assert status == 503 and "model server" in body["error"]["message"]
    assert [r["status"] for r in gateway.records()] == [404, 401, 403, 503]
    status, metrics = gateway.admin("/metrics")
    assert status == 200 and 'citadel_gateway_refusals_total{reason="unauthenticated"} 1' in metrics
    assert 'citadel_gateway_upstream_errors_total{kind="connect"} 1' in metrics


def test_models_are_listed_from_the_clients_policy_without_a_model_server(gateway):
    status, body, _ = gateway.request("GET", "/v1/models", key="ck_w")
    assert status == 200 and body == {"object": "list", "data": [{"id": "tiny", "object": "model", "owned_by": "citadel"}]}
    assert [(r["route"], r["status"], r["client"]) for r in gateway.records()] == [("/v1/models", 200, "ward")]


@pytest.mark.parametrize("gateway", ["/dev/full"], indirect=True)
def test_when_the_record_cannot_be_written_the_gateway_answers_nothing(gateway):
    # Not even a refusal leaves unrecorded: every answer is a 503 until a record can be written.
    for key in (None, "ck_w"):
        status, body, _ = gateway.request("POST", "/v1/chat/completions", key=key, body=CHAT)
        assert status == 503 and "audit log unavailable" in body["error"]["message"]
    assert gateway.admin("/health")[0] == 503
    assert "citadel_gateway_audit_log_healthy 0" in gateway.admin("/metrics")[1]


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
    gateway = Gateway(tmp_path, keys={"radiology": "ck_r", "ward": "ck_w"},
                      policies={"radiology": {"models": [], "client_certificate": "radiology-app"},
                                "ward": {"models": []}}, config={"client_ca": str(ca)})
    with gateway:
        def status(key, cert=None):
            context = gateway.context()
            if cert:
                context.load_cert_chain(str(cert))
            connection = http.client.HTTPSConnection("127.0.0.1", gateway.port, context=context, timeout=10)
            try:
                connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {key}"})
                return connection.getresponse().status
            except (ssl.SSLError, ConnectionError):
                return "handshake refused"
            finally:
                connection.close()

        assert status("ck_r") == 403  # its key alone is not enough
        assert status("ck_r", bundle) == 200  # key and certificate: its (empty) list of models
        assert status("ck_r", other) == "handshake refused"  # same name, signed by another CA
        assert status("ck_w") == 200  # a client without the requirement needs no certificate
        records = gateway.records()
        assert [r.get("client_cert") for r in records if r["client"] == "radiology"][:2] == [None, "radiology-app"]


def test_an_unexpected_error_in_a_handler_is_a_recorded_500_never_a_silent_close(tmp_path, capsys):
    """The last resort: whatever raises inside a request's handling, the client gets a 500 with its
    request id, the record says so, and the gateway goes on serving."""
    config = json.loads(Gateway(tmp_path).write_config().read_text())

    async def run() -> bytes:
        gateway = server.Gateway(config)

        async def broken(*args):
            raise KeyError("a bug holding a prompt's SSN 123-45-6789")

        gateway.exchange = broken
        ours, theirs = socket.socketpair()
        reader, writer = await asyncio.open_connection(sock=ours)
        client_reader, client_writer = await asyncio.open_connection(sock=theirs)
        client_writer.write(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nContent-Length: 2\r\n\r\n{}")
        await gateway.connection(reader, writer, "127.0.0.1")
        writer.close()
        answer = await client_reader.read()
        client_writer.close()
        await gateway.audit.aclose()
        return answer

    answer = asyncio.run(run())
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 500") and b"Connection: close" in head
    records = [json.loads(line) for line in (tmp_path / "audit.jsonl").read_text().splitlines()]
    assert [(r["status"], r["refusal"]) for r in records] == [(500, "internal error in the gateway")]
    journal = capsys.readouterr().err
    assert "internal error: KeyError at " in journal and "broken" in journal  # where, for the bug report
    assert "123-45-6789" not in journal  # ... never what the exception carried
    assert json.loads(body)["error"]["request_id"] == records[0]["request_id"]
