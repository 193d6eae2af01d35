"""Issue 16, revocation: the keyguard and the gateway stop trusting a revoked host at their next reload.

Real processes on loopback, no Vault: a CA made here (tests/pki_fixture.py) issues the GPU
host's certificate (OU ``gpu``) and the gateways' (OU ``gateway``); a revocation is a new
CRL, written whole as the agent writes ``crl.pem``, then SIGHUP, as the agent's reload
command sends (the gateway also notices the file within a second by itself). The keyguard
runs with ``--client-ca CA --crl CRL`` (mutual TLS); the gateway with ``upstream_ca``,
``upstream_crl`` and ``upstream_client_certificate``, in front of that keyguard.

Times are measured from the signal (or the file's rename) to the first refusal and printed
(``pytest -s`` shows them); the bounds asserted are loose, for a loaded machine.
"""

from __future__ import annotations

import datetime as dt
import json
import re
import socket
import ssl
import threading
import time
from pathlib import Path

import pytest
from cryptography import x509

from tests.gateway_harness import CHAT, Gateway
from tests.keyguard_harness import INTERNAL_KEY, Keyguard
from tests.pki_fixture import Leaf, TestPKI, client_context

HOST = b"Host: gpu-01\r\n"
REFUSAL_SECONDS = 1.0  # SIGHUP to the keyguard's first refusal ("well under a second")
WATCH_SECONDS = 3.0  # a rewritten CRL to the gateway's first refusal: its watch looks every second


def whoami(key: str | None = INTERNAL_KEY) -> bytes:
    return b"GET /citadel/whoami HTTP/1.1\r\n" + HOST + (f"Authorization: Bearer {key}\r\n".encode() if key else b"") + b"\r\n"


def completion() -> bytes:
    body = json.dumps({"model": "tiny", "prompt": "hi"}).encode()
    return (b"POST /v1/completions HTTP/1.1\r\n" + HOST + f"Authorization: Bearer {INTERNAL_KEY}\r\n".encode()
            + b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body) + body)


def read_answer(sock: ssl.SSLSocket) -> bytes:
    """One HTTP answer (head and Content-Length body); b"" when the connection closed instead."""
    data = b""
    while b"\r\n\r\n" not in data:
        piece = sock.recv(65536)
        if not piece:
            return data
        data += piece
    head, _, body = data.partition(b"\r\n\r\n")
    length = int(re.search(rb"(?i)\r\ncontent-length: *(\d+)", head).group(1))
    while len(body) < length and (piece := sock.recv(65536)):
        body += piece
    return head + b"\r\n\r\n" + body


def outcome(sock: ssl.SSLSocket, request: bytes) -> int | str:
    """Send `request` on the open connection `sock`: the answer's status, or how the connection ended."""
    try:
        sock.sendall(request)
        answer = read_answer(sock)
    except OSError as exc:  # ssl.SSLError among them: the peer's alert
        return f"{type(exc).__name__}: {exc}"
    return int(answer.split(b" ", 2)[1]) if answer else "closed"


def connect(keyguard: Keyguard, context: ssl.SSLContext) -> ssl.SSLSocket:
    sock = socket.create_connection(("127.0.0.1", keyguard.port), timeout=5)
    try:
        return context.wrap_socket(sock, server_hostname="127.0.0.1")
    except BaseException:
        sock.close()
        raise


def first_request(keyguard: Keyguard, context: ssl.SSLContext, request: bytes | None = None) -> int | str:
    """A new connection and one request (whoami with the right key): its status, or how it failed.

    Under TLS 1.3 a client's certificate is checked after the client has finished its side
    of the handshake: a refusal then reaches it on its first read, as a connection closed
    with no answer (asyncio sends no alert); the keyguard's journal line says why.
    """
    try:
        with connect(keyguard, context) as sock:
            return outcome(sock, request or whoami())
    except OSError as exc:
        return f"{type(exc).__name__}: {exc}"


def wait_for(predicate, seconds: float = 10, step: float = 0.01):
    deadline = time.monotonic() + seconds
    while not (found := predicate()) and time.monotonic() < deadline:
        time.sleep(step)
    return found


def revoke(keyguard: Keyguard, pki: TestPKI, crl: Path, *leaves: Leaf) -> float:
    """The agent's render of a CRL listing `leaves`, then its reload command; when the signal went."""
    pki.write_crl(crl, revoked=[leaf.serial for leaf in leaves])
    sent = time.monotonic()
    keyguard.process.send_signal(1)
    return sent


def refused_within(keyguard: Keyguard, context: ssl.SSLContext, since: float, seconds: float = 10) -> float:
    """Seconds from `since` to the first new connection with `context` that is refused."""
    assert wait_for(lambda: not isinstance(first_request(keyguard, context), int), seconds, step=0), "never refused"
    return time.monotonic() - since


@pytest.fixture
def pki(tmp_path) -> TestPKI:
    return TestPKI(tmp_path / "pki")


@pytest.fixture
def crl(tmp_path, pki) -> Path:
    """The keyguard's crl.pem: nobody revoked yet."""
    return pki.write_crl(tmp_path / "keyguard-crl.pem")


@pytest.fixture
def keyguard(tmp_path, pki, crl):
    """The keyguard of GPU host gpu-01 (its certificate from `pki`, OU gpu), taking gateways of `pki` only."""
    started = Keyguard(tmp_path / "keyguard", arguments=("--client-ca", str(pki.ca_file), "--crl", str(crl)))
    started.tls = pki.leaf("gpu-01", unit="gpu").paths
    with started:
        yield started


@pytest.fixture
def gateways(pki) -> tuple[Leaf, Leaf]:
    return pki.leaf("gateway-01", unit="gateway"), pki.leaf("gateway-02", unit="gateway")


def context_of(pki: TestPKI, leaf: Leaf) -> ssl.SSLContext:
    return client_context(pki.ca_file, leaf.pem)


def served_serial(keyguard: Keyguard) -> int:
    """The serial of the certificate the keyguard serves (what a CRL lists to revoke that GPU host)."""
    return x509.load_pem_x509_certificate(keyguard.tls.cert_file.read_bytes()).serial_number


def forwarded(keyguard: Keyguard) -> int:
    return sum(len(server.requests) for server in keyguard.served.values())


# -- the keyguard: mutual TLS ---------------------------------------------------------------


def test_a_client_without_a_certificate_is_refused_in_the_handshake(keyguard, pki):
    assert first_request(keyguard, client_context(pki.ca_file)) == "closed"
    assert wait_for(lambda: "peer did not return a certificate" in keyguard.log()), keyguard.log()
    assert forwarded(keyguard) == 0


def test_a_gateway_certificate_from_another_ca_is_refused_in_the_handshake(keyguard, pki, tmp_path):
    stranger = TestPKI(tmp_path / "another-ca").leaf("gateway-01", unit="gateway")
    assert first_request(keyguard, client_context(pki.ca_file, stranger.pem)) == "closed"
    assert wait_for(lambda: "TLS handshake failed: SSLCertVerificationError" in keyguard.log()), keyguard.log()


def test_a_gpu_hosts_certificate_is_refused_after_the_handshake_with_one_journal_line(keyguard, pki):
    gpu = pki.leaf("gpu-02", unit="gpu")  # a compromised GPU host would hold one: not a gateway
    assert first_request(keyguard, context_of(pki, gpu)) == "closed"
    assert wait_for(lambda: "refused: its certificate is not a gateway host's (OU 'gpu')" in keyguard.log())
    assert keyguard.log().count("refused:") == 1 and forwarded(keyguard) == 0


def test_a_gateway_certificate_reaches_the_key_check(keyguard, pki, gateways):
    context = context_of(pki, gateways[0])
    assert first_request(keyguard, context, whoami(key=None)) == 401
    with connect(keyguard, context) as sock:
        sock.sendall(whoami())
        answer = read_answer(sock)
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b'{"key_version": 1}'), answer


# -- the keyguard: revocation -----------------------------------------------------------------


def test_a_revoked_gateway_is_refused_from_its_next_connection_and_request(keyguard, pki, crl, gateways):
    revoked, other = (context_of(pki, leaf) for leaf in gateways)
    with connect(keyguard, revoked) as idle:
        assert outcome(idle, whoami()) == 200  # then idle, kept alive, as in the gateway's pool
        sent = revoke(keyguard, pki, crl, gateways[0])
        elapsed = refused_within(keyguard, revoked, sent)
        print(f"\nkeyguard: SIGHUP to the first refused connection of the revoked gateway: {elapsed * 1000:.0f} ms")
        late = outcome(idle, whoami())  # its connection from before the revocation
    assert elapsed < REFUSAL_SECONDS
    assert first_request(keyguard, revoked) == "closed"
    assert wait_for(lambda: "certificate verify failed: certificate revoked" in keyguard.log()), keyguard.log()
    # Not answered: a 421, "ask again on a new connection", which the revoked gateway cannot open.
    assert late == 421, "an idle connection opened before the revocation carried another request"
    assert first_request(keyguard, other) == 200  # the other gateway, not revoked, is still served


def test_a_request_under_way_at_the_revocation_is_answered_then_its_connection_closes(keyguard, pki, crl, gateways):
    keyguard.served["tiny"].behaviour.answer_delay = 1.5
    with connect(keyguard, context_of(pki, gateways[0])) as sock:
        sock.sendall(completion())
        assert wait_for(lambda: forwarded(keyguard) == 1)  # the request is with the model server
        revoke(keyguard, pki, crl, gateways[0])
        assert wait_for(lambda: "reloaded" in keyguard.log())
        answer = read_answer(sock)
        after = outcome(sock, whoami())
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:200]  # begun under the old list: finished
    assert after in (421, "closed"), "the connection carried a request after the revocation"
    assert forwarded(keyguard) == 1


def test_a_handshake_under_way_at_the_revocation_carries_no_request(keyguard, pki, crl, gateways):
    # The keyguard has sent its half of the handshake (its context chosen, the old CRL in it);
    # the gateway's certificate arrives only after the reload, and is checked against the old list.
    context = context_of(pki, gateways[0])
    context.maximum_version = ssl.TLSVersion.TLSv1_3
    with socket.create_connection(("127.0.0.1", keyguard.port), timeout=5) as sock:
        incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
        tls = context.wrap_bio(incoming, outgoing, server_hostname="127.0.0.1")
        while True:
            try:
                tls.do_handshake()
                break
            except ssl.SSLWantReadError:
                sock.sendall(outgoing.read())
                incoming.write(sock.recv(65536))
        held = outgoing.read()  # the client's certificate and Finished, not yet sent
        assert tls.version() == "TLSv1.3" and held
        revoke(keyguard, pki, crl, gateways[0])
        assert wait_for(lambda: "reloaded" in keyguard.log())
        tls.write(whoami())
        sock.sendall(held + outgoing.read())
        answer = b""
        try:
            while piece := sock.recv(65536):
                incoming.write(piece)
                try:
                    answer += tls.read(65536)
                except ssl.SSLWantReadError:
                    continue
                break
        except OSError:
            pass
    # Not served, and not dropped unanswered either: a 421 sends an honest client to a new connection.
    assert answer.startswith(b"HTTP/1.1 421 "), "a handshake begun before the revocation carried a request"


def test_an_unreadable_crl_keeps_the_list_in_force(keyguard, pki, crl, gateways):
    context = context_of(pki, gateways[0])
    crl.write_text("half a CRL\n")
    keyguard.process.send_signal(1)
    assert wait_for(lambda: "reload failed" in keyguard.log()), keyguard.log()
    assert first_request(keyguard, context) == 200
    revoke(keyguard, pki, crl, gateways[0])  # the next good render takes effect
    assert wait_for(lambda: "reloaded" in keyguard.log())
    assert first_request(keyguard, context) == "closed"
    assert wait_for(lambda: "certificate revoked" in keyguard.log()), keyguard.log()


def test_an_expired_crl_refuses_every_gateway(keyguard, pki, crl, gateways):
    # Fail closed: Vault's CRL must be rebuilt before its next update (PKI config/crl auto_rebuild),
    # or every gateway is cut off from every GPU host once it expires.
    pki.write_crl(crl, next_update=-dt.timedelta(minutes=1))
    keyguard.reload()
    assert not isinstance(first_request(keyguard, context_of(pki, gateways[1])), int)
    assert wait_for(lambda: "CRL has expired" in keyguard.log()), keyguard.log()


# -- the gateway in front of that keyguard ------------------------------------------------------------


@pytest.fixture
def site(tmp_path, pki, keyguard, gateways):
    """The real gateway (gateway-01's certificate) in front of the keyguard, over mutual TLS with CRLs."""
    (tmp_path / "gateway").mkdir()
    upstream_key = tmp_path / "gateway-internal-key.json"
    upstream_key.write_text(json.dumps({"current": {"version": 1, "value": INTERNAL_KEY}}))
    config = {"upstreams": {"tiny": f"https://127.0.0.1:{keyguard.port}"}, "upstream_ca": str(pki.ca_file),
              "upstream_crl": str(pki.write_crl(tmp_path / "gateway-crl.pem")), "upstream_client_certificate": True,
              "upstream_key": {"kind": "keydoc", "path": str(upstream_key)}}
    gateway = Gateway(tmp_path / "gateway", config=config)
    gateway.tls = gateways[0].paths
    with gateway:
        assert chat(gateway) == 200
        yield gateway


def chat(gateway: Gateway) -> int:
    return gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)[0]


@pytest.mark.parametrize("trigger", ["watch", "SIGHUP"])
def test_the_gateway_stops_using_a_revoked_gpu_host_at_once(site, keyguard, pki, trigger):
    assert chat(site) == 200  # a connection to the keyguard now idle in the gateway's pool
    pki.write_crl(Path(site.config["upstream_crl"]), revoked=[served_serial(keyguard)])
    since = time.monotonic()
    if trigger == "SIGHUP":
        site.process.send_signal(1)
    assert wait_for(lambda: "reloaded" in site.log())
    served = forwarded(keyguard)
    status = chat(site)  # the first after the reload: the pooled connection is not reused
    elapsed = time.monotonic() - since
    print(f"\ngateway ({trigger}): revocation of the GPU host to the first refused chat: {elapsed * 1000:.0f} ms")
    record = site.wait_for_records(1)[-1]
    assert status in (502, 503) and record["status"] == status and "SSLCertVerificationError" in record["refusal"]
    assert chat(site) in (502, 503) and forwarded(keyguard) == served  # nothing reaches that host any more
    assert elapsed < (REFUSAL_SECONDS if trigger == "SIGHUP" else WATCH_SECONDS)


def test_a_connection_in_use_at_the_reload_is_not_pooled_again(site, keyguard, pki):
    keyguard.served["tiny"].behaviour.answer_delay = 1.5
    results = []
    under_way = threading.Thread(target=lambda: results.append(chat(site)))
    under_way.start()
    assert wait_for(lambda: forwarded(keyguard) == 2)  # the chat is with the model server (the site's first, then this)
    pki.write_crl(Path(site.config["upstream_crl"]), revoked=[served_serial(keyguard)])
    site.process.send_signal(1)
    assert wait_for(lambda: "reloaded" in site.log())
    under_way.join()
    served = forwarded(keyguard)
    assert results == [200]  # begun on a connection checked before the revocation
    assert chat(site) in (502, 503) and forwarded(keyguard) == served


def test_a_revoked_gateway_is_cut_off_by_the_keyguard_through_its_pooled_connections(site, keyguard, pki, crl,
                                                                                     gateways):
    assert chat(site) == 200  # pooled, idle: it would carry the next chat
    served = forwarded(keyguard)
    sent = revoke(keyguard, pki, crl, gateways[0])
    assert wait_for(lambda: "reloaded" in keyguard.log())
    status = chat(site)
    elapsed = time.monotonic() - sent
    print(f"\nkeyguard: SIGHUP to the revoked gateway's first refused chat: {elapsed * 1000:.0f} ms")
    assert status in (502, 503) and site.wait_for_records(1)[-1]["status"] == status
    assert forwarded(keyguard) == served, "a chat reached the model server through a revoked gateway"
    assert elapsed < REFUSAL_SECONDS
    assert chat(site) in (502, 503)
    log = keyguard.log()  # the pooled connection answered 421, the new one refused
    assert "421 (opened before the last reload" in log and "certificate revoked" in log, log
