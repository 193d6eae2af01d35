"""Issue 18, a model served by several GPU hosts: the gateway's choice of replica, its ejections, and
which failures may be tried again elsewhere (``citadel_runtime.gateway.replicas``), as pure logic;
plus the upstream's `unsent` flag on real loopback sockets and the role's rendering of replicas.

The processes themselves (two keyguards, one killed and brought back) are in
tests/adversarial/test_gateway_replicas.py.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from types import SimpleNamespace

import pytest

from citadel_runtime.gateway.metrics import Metrics
from citadel_runtime.gateway.replicas import Replica, Replicas, ejects, parse_upstreams, retryable, unserved
from citadel_runtime.gateway.upstream import Address, Pool, UpstreamError


def group(*names: str) -> Replicas:
    return Replicas("tiny", [Replica(name, None) for name in names])


def test_ties_go_round_robin_in_configuration_order():
    g = group("gpu-01", "gpu-02", "gpu-03")
    assert [g.choose().name for _ in range(6)] == ["gpu-01", "gpu-02", "gpu-03"] * 2


def test_the_least_outstanding_replica_is_chosen():
    g = group("gpu-01", "gpu-02", "gpu-03")
    g.replicas[0].outstanding, g.replicas[1].outstanding, g.replicas[2].outstanding = 3, 1, 2
    assert g.choose().name == "gpu-02"
    g.replicas[1].outstanding = 5
    assert g.choose().name == "gpu-03"


def test_an_ejected_replica_gets_nothing_until_admitted():
    g = group("gpu-01", "gpu-02")
    assert g.eject(g.replicas[0], "connect refused") is True
    assert g.eject(g.replicas[0], "again") is False  # already out: counted once
    assert {g.choose().name for _ in range(4)} == {"gpu-02"}
    assert g.admit(g.replicas[0]) is True and g.admit(g.replicas[0]) is False
    assert {g.choose().name for _ in range(4)} == {"gpu-01", "gpu-02"}


def test_when_every_replica_is_out_they_are_tried_anyway_and_each_only_once():
    g = group("gpu-01", "gpu-02")
    for replica in g.replicas:
        g.eject(replica, "health check: connect refused")
    tried = set()
    for _ in range(2):
        tried.add(g.choose(tried))
    assert {r.name for r in tried} == {"gpu-01", "gpu-02"}
    assert g.choose(tried) is None


def test_a_single_replica_is_always_chosen_even_when_ejected():
    g = group("gpu-01")
    g.eject(g.replicas[0], "connect refused")
    assert g.choose().name == "gpu-01" and g.choose({g.replicas[0]}) is None


def test_replica_names_must_be_distinct_and_present():
    with pytest.raises(ValueError, match="upstreams.tiny"):
        group("gpu-01", "gpu-01")
    with pytest.raises(ValueError, match="upstreams.tiny: no replica"):
        group()


def test_only_failures_that_provably_reached_no_model_server_are_retried():
    refused = UpstreamError("connect", "cannot connect", unsent=True, reason="connect refused")
    assert retryable(refused) == "connect refused"
    # The request was written (a pooled connection retried, then no fresh one): not provable.
    assert retryable(UpstreamError("connect", "cannot connect", unsent=False)) is None
    assert retryable(UpstreamError("protocol", "the model server closed the connection")) is None
    assert retryable(UpstreamError("timeout", "the model server did not answer in time")) is None
    not_served = json.dumps({"error": "model tiny is not being served on this host now"}).encode()
    assert retryable(None, 503, not_served) == "not served there now"
    assert retryable(None, 503, b'{"error": "model tiny is draining on this host"}') == "not served there now"
    assert retryable(None, 503, b'{"error": "the model server is not answering (connect)"}') is None
    assert retryable(None, 502, not_served) is None and retryable(None, 200, b"{}") is None
    assert not unserved(503, b"not json") and not unserved(503, None) and not unserved(503, b"[1]")


def test_connection_failures_and_server_errors_eject_but_a_slow_answer_does_not():
    assert ejects(UpstreamError("connect", "x")) and ejects(UpstreamError("protocol", "x"))
    assert not ejects(UpstreamError("timeout", "x"))
    assert ejects(None, 502) and ejects(None, 500) and ejects(None, 503)
    assert not ejects(None, 504) and not ejects(None, 200) and not ejects(None, 429)


def test_the_configuration_takes_an_address_or_a_list_of_replicas():
    models = parse_upstreams({"upstreams": {
        "tiny": "https://10.0.0.5:8443",
        "big": [{"name": "gpu-01", "url": "https://10.0.0.5:8443"}, {"name": "gpu-02", "url": "https://10.0.0.6:8443"}],
        "mixed": ["http://127.0.0.1:8000", "unix:/run/x.sock"]}}, None)
    assert [r.name for r in models["tiny"].replicas] == ["https://10.0.0.5:8443"]
    assert [r.name for r in models["big"].replicas] == ["gpu-01", "gpu-02"]
    assert models["big"].replicas[1].pool.address == Address("https", "10.0.0.6", 8443)
    assert [r.pool.address.scheme for r in models["mixed"].replicas] == ["http", "unix"]
    with pytest.raises(ValueError, match="upstream"):
        parse_upstreams({"upstreams": {"tiny": [{"name": "gpu-01", "url": "ftp://x:1"}]}}, None)


def test_metrics_count_per_replica_requests_failovers_and_ejections():
    m = Metrics()
    m.replica_requests[("tiny", "gpu-01")] += 2
    m.failovers[("tiny", "gpu-01", "connect refused")] += 1
    m.ejections[("tiny", "gpu-01")] += 1
    text = m.render(audit_healthy=True, audit_written=0, replicas=(("tiny", "gpu-01", False, 0), ("tiny", "gpu-02", True, 3)))
    assert 'citadel_gateway_replica_requests_total{model="tiny",replica="gpu-01"} 2' in text
    assert 'citadel_gateway_replica_failovers_total{model="tiny",replica="gpu-01",reason="connect refused"} 1' in text
    assert 'citadel_gateway_replica_ejections_total{model="tiny",replica="gpu-01"} 1' in text
    assert 'citadel_gateway_replica_in_rotation{model="tiny",replica="gpu-01"} 0' in text
    assert 'citadel_gateway_replica_outstanding{model="tiny",replica="gpu-02"} 3' in text


# -- the upstream's `unsent`, on real loopback sockets ------------------------------------------------


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nobody listens there once closed


def test_a_refused_connection_is_unsent():
    async def go():
        pool = Pool(Address.parse(f"http://127.0.0.1:{closed_port()}"))
        with pytest.raises(UpstreamError) as caught:
            await pool.request("POST", "/v1/completions", [], b"{}", 2)
        return caught.value

    error = asyncio.run(go())
    assert error.kind == "connect" and error.unsent and error.reason == "connect refused"


def test_a_connection_closed_after_the_request_was_written_is_not_unsent():
    async def go():
        async def swallow(reader, writer):  # reads the request, answers nothing, closes
            await reader.readuntil(b"\r\n\r\n")
            writer.close()

        server = await asyncio.start_server(swallow, "127.0.0.1", 0)
        port = server.sockets[0].getsockname()[1]
        pool = Pool(Address.parse(f"http://127.0.0.1:{port}"))
        try:
            with pytest.raises(UpstreamError) as caught:
                await pool.request("GET", "/v1/models", [], b"", 2)
        finally:
            server.close()
        return caught.value

    error = asyncio.run(go())
    assert error.kind == "protocol" and not error.unsent


def answer_once_then_go(listener: socket.socket) -> None:
    """A server in its own thread: one answer (keep-alive framing), then it is gone, as a killed keyguard."""
    conn, _ = listener.accept()
    with conn:
        data = b""
        while b"\r\n\r\n" not in data:
            data += conn.recv(4096)
        conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}")
    listener.close()


@pytest.mark.parametrize("pause", ["loop running", "loop blocked"])
def test_a_pooled_connection_closed_while_idle_is_dropped_unused_so_the_failure_stays_unsent(pause):
    # "loop blocked": the event loop has not seen the close yet; only the socket knows (the peek).
    # Were the dead connection written to, no later failure could prove the request unsent.
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    thread = threading.Thread(target=answer_once_then_go, args=(listener,), daemon=True)
    thread.start()

    async def go():
        pool = Pool(Address.parse(f"http://127.0.0.1:{port}"))
        first = await pool.request("GET", "/v1/models", [], b"", 2)
        assert await first.read_all(100, 2) == b"{}" and len(pool.idle) == 1  # pooled
        thread.join(5)
        if pause == "loop running":
            await asyncio.sleep(0.2)
        else:
            time.sleep(0.2)
        with pytest.raises(UpstreamError) as caught:
            await pool.request("POST", "/v1/completions", [], b"{}", 2)
        return caught.value

    error = asyncio.run(go())
    assert error.kind == "connect" and error.unsent


# -- the role ------------------------------------------------------------------------------------------


def test_the_role_renders_every_gpu_host_serving_a_model_as_its_replicas():
    from roles.gateway import upstreams

    hosts = {"gpu-01": SimpleNamespace(address="10.0.0.5", models=["big", "tiny"]),
             "gpu-02": SimpleNamespace(address="fd00::6", models=["big"]),
             "gw-01": SimpleNamespace(address="10.0.0.9", models=[])}
    site = SimpleNamespace(hosts=hosts, hosts_in=lambda group: ["gpu-01", "gpu-02"])
    assert upstreams(site) == {
        "big": [{"name": "gpu-01", "url": "https://10.0.0.5:8443"}, {"name": "gpu-02", "url": "https://[fd00::6]:8443"}],
        "tiny": "https://10.0.0.5:8443"}  # one host: the address alone, as before
    assert parse_upstreams({"upstreams": upstreams(site)}, None)["big"].replicas[1].pool.address.host == "fd00::6"
