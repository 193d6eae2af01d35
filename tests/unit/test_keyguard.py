"""The keyguard's certificate and key reload (pure file handling; the lab runs it for real)."""

from __future__ import annotations

import datetime as dt
import json
import ssl

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from citadel_runtime.keydoc import digest
from citadel_runtime.keyguard import Secrets


def write_bundle(path) -> None:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "gpu-01")])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now)
            .not_valid_after(now + dt.timedelta(hours=1)).sign(key, hashes.SHA256()))
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    path.write_bytes(pem + cert.public_bytes(serialization.Encoding.PEM))


def keys(version: int) -> str:
    return json.dumps({"current": {"version": version, "sha256": digest(f"k{version}")}, "previous": None,
                       "previous_expires": None})


def test_a_reload_takes_new_keys_and_a_broken_file_keeps_the_previous_ones(tmp_path, capsys):
    bundle, key_file = tmp_path / "tls.pem", tmp_path / "keys.json"
    write_bundle(bundle)
    key_file.write_text(keys(1))
    secrets = Secrets(str(bundle), str(key_file))
    key_file.write_text(keys(2))
    secrets.reload()
    assert secrets.keys["current"]["version"] == 2
    context = secrets.context
    key_file.write_text("{half written")
    secrets.reload()
    assert secrets.keys["current"]["version"] == 2 and secrets.context is context
    key_file.write_text(json.dumps({"current": None}))  # no current key: refused, not taken
    bundle.write_text("not a certificate")
    secrets.reload()
    assert secrets.keys["current"]["version"] == 2 and secrets.context is context
    assert capsys.readouterr().err.count("reload failed, keeping the previous certificate and keys") == 2


def test_it_does_not_start_without_a_usable_certificate(tmp_path):
    (tmp_path / "keys.json").write_text(keys(1))
    (tmp_path / "tls.pem").write_text("nothing")
    with pytest.raises(ssl.SSLError):
        Secrets(str(tmp_path / "tls.pem"), str(tmp_path / "keys.json"))


# -- the service, on loopback (tests/keyguard_harness.py) ----------------------------------


@pytest.fixture
def keyguard(tmp_path):
    from tests.keyguard_harness import Keyguard

    with Keyguard(tmp_path, models=("tiny", "other")) as started:
        yield started


def test_the_gateways_key_is_swapped_for_vllms_and_answers_pass_as_they_come(keyguard):
    status, body, headers = keyguard.request("POST", "/v1/completions", key="ik_1", body={"model": "tiny"},
                                             headers={"X-Request-Id": "r-1"})
    seen = keyguard.served["tiny"].requests[-1]
    assert status == 200 and body["object"] == "chat.completion"
    assert seen.headers["authorization"] == "Bearer vk_x" and seen.headers["x-request-id"] == "r-1"
    assert "ik_1" not in json.dumps(seen.headers) and seen.json == {"model": "tiny"}
    assert int(headers["content-length"]) == len(json.dumps(body))  # passed through, not re-chunked
    connection = keyguard.connection()
    connection.request("POST", "/v1/chat/completions", body=json.dumps({"model": "other", "stream": True}),
                       headers={"Authorization": "Bearer ik_1"})
    response = connection.getresponse()
    assert response.getheader("Transfer-Encoding") == "chunked" and response.read().endswith(b"data: [DONE]\n\n")
    connection.request("GET", "/citadel/whoami", headers={"Authorization": "Bearer ik_0"})  # the same connection
    assert json.loads(connection.getresponse().read()) == {"key_version": 0}  # the previous key, in its overlap
    connection.close()
    assert [len(server.requests) for server in keyguard.served.values()] == [1, 1]


@pytest.mark.parametrize("method,path,body,key,status", [
    ("POST", "/v1/completions", {"model": "nope"}, "ik_1", 503),  # no socket: not served here, or restarting
    ("POST", "/v1/completions", {"prompt": "x"}, "ik_1", 400),  # names no model: never "the first one"
    ("POST", "/v1/completions", {"model": "../tiny"}, "ik_1", 400),
    ("POST", "/tokenize", {"model": "tiny"}, "ik_1", 404),  # vLLM's other routes stay closed
    ("POST", "/v1/%2e%2e/tokenize", {"model": "tiny"}, "ik_1", 403),
    ("GET", "/v1/chat/completions", None, "ik_1", 405),
    ("POST", "/v1/completions", {"model": "tiny"}, "ik_9", 401),
    ("POST", "/v1/completions", {"model": "tiny"}, None, 401),
])
def test_only_the_gateways_routes_reach_a_model_this_host_serves(keyguard, method, path, body, key, status):
    assert keyguard.request(method, path, key=key, body=body)[0] == status
    assert [server.requests for server in keyguard.served.values()] == [[], []]


def test_a_reload_takes_new_keys_without_dropping_open_connections(keyguard):
    from tests.keyguard_harness import key_document

    connection = keyguard.connection()
    connection.request("GET", "/citadel/whoami", headers={"Authorization": "Bearer ik_1"})
    assert json.loads(connection.getresponse().read()) == {"key_version": 1}
    keyguard.reload(key_document("ik_2", version=2))
    connection.request("GET", "/citadel/whoami", headers={"Authorization": "Bearer ik_2"})  # still open
    assert json.loads(connection.getresponse().read()) == {"key_version": 2}
    connection.close()
    assert keyguard.request("GET", "/citadel/whoami", key="ik_1")[0] == 401  # neither current nor previous now


def test_a_client_that_goes_away_mid_stream_closes_the_model_servers_connection(keyguard):
    import time

    stand_in = keyguard.served["tiny"]
    stand_in.behaviour.chunks, stand_in.behaviour.chunk_delay = 100, 0.05
    body = b'{"model": "tiny", "stream": true}'
    with keyguard.tls_socket() as sock:
        sock.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: gpu\r\nAuthorization: Bearer ik_1\r\n"
                     b"Content-Length: %d\r\n\r\n%s" % (len(body), body))
        assert sock.recv(4096).startswith(b"HTTP/1.1 200 ")
    left = time.monotonic()
    while stand_in.requests[-1].cut_at is None and time.monotonic() - left < 5:
        time.sleep(0.05)
    assert stand_in.requests[-1].cut_at is not None and stand_in.requests[-1].cut_at - left < 2


def test_a_model_whose_server_is_down_is_a_503_and_the_models_are_the_sockets_present(tmp_path):
    from citadel_runtime.keyguard import Upstream

    upstream = Upstream(f"unix:{tmp_path}/{{model}}/vllm.sock")
    assert upstream.served() == [] and upstream.pool("tiny") is None
    for model in ("b-model", "a-model", "Not_A_Name"):
        (tmp_path / model).mkdir()
        (tmp_path / model / "vllm.sock").touch()
    assert upstream.served() == ["a-model", "b-model"]
    assert upstream.pool("b-model").address.path == f"{tmp_path}/b-model/vllm.sock"
    assert upstream.pool("b-model") is upstream.pool("b-model")  # one pool of connections per model
    assert Upstream("127.0.0.1:8000").pool("any").address.port == 8000


def test_a_socket_nobody_listens_on_is_a_503(keyguard):
    (keyguard.run_dir / "gone").mkdir()
    (keyguard.run_dir / "gone" / "vllm.sock").touch()
    assert keyguard.request("POST", "/v1/completions", key="ik_1", body={"model": "gone"})[0] == 503
    # No socket at all (vLLM stopped or restarting): 503 too, and when to try again.
    status, _, headers = keyguard.request("POST", "/v1/completions", key="ik_1", body={"model": "restarting"})
    assert status == 503 and headers["retry-after"] == "5"


def test_the_model_is_read_from_the_body_only_when_it_is_a_name():
    from citadel_runtime.keyguard import requested_model

    assert requested_model(b'{"model": "tiny-clinical", "prompt": "x"}') == "tiny-clinical"
    for body in (b'{"model": "../../etc/x"}', b'{"model": 5}', b"not json", b"[1]", None, b"", b"[" * 100_000):
        assert requested_model(body) is None
