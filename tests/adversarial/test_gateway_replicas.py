"""Issue 18, a model served by several GPU hosts: the real gateway in front of two real keyguards.

Each keyguard (tests/keyguard_harness.py) serves the model ``tiny`` from its own recording
stand-in vLLM, with a certificate from one CA made here (tests/pki_fixture.py) that the
gateway checks. The gateway's configuration lists both as replicas, ``gpu-01`` and
``gpu-02``, as role ``gateway`` renders them. A keyguard is lost by SIGKILL (its stand-in
stays, so what reached a model server is still known) and brought back by starting it again
on its port; vLLM restarting is its socket gone from where the keyguard looks.

What reached which model server is joined to the client's answers and the records by the
request id the gateway sends (``X-Request-Id``).
"""

from __future__ import annotations

import http.client
import json
import os
import threading
import time

import pytest

from tests.gateway_harness import CHAT, Gateway
from tests.keyguard_harness import INTERNAL_KEY, Keyguard
from tests.pki_fixture import TestPKI

NAMES = ("gpu-01", "gpu-02")


@pytest.fixture
def pki(tmp_path):
    return TestPKI(tmp_path / "pki")


@pytest.fixture
def keyguards(tmp_path, pki):
    started = {}
    for name in NAMES:
        keyguard = Keyguard(tmp_path / name)
        keyguard.tls = pki.leaf(name, unit="gpu").paths
        started[name] = keyguard.start()
    yield started
    for keyguard in started.values():
        keyguard.stop()


@pytest.fixture
def site(tmp_path, pki, keyguards):
    """Start the gateway in front of both keyguards: ``site(health_seconds=...)``."""
    started = []

    def start(**config) -> Gateway:
        key = tmp_path / "gateway-internal-key.json"
        key.write_text(json.dumps({"current": {"version": 1, "value": INTERNAL_KEY}}))
        replicas = [{"name": name, "url": f"https://127.0.0.1:{k.port}"} for name, k in keyguards.items()]
        config = {"upstreams": {"tiny": replicas}, "upstream_ca": str(pki.ca_file),
                  "upstream_key": {"kind": "keydoc", "path": str(key)}, "health_seconds": 0.3,
                  "health_timeout": 1, **config}
        (tmp_path / "gateway").mkdir()
        policies = {"ward": {"models": ["tiny"], "max_tokens": 8, "concurrent_requests": 16}}
        gateway = Gateway(tmp_path / "gateway", policies=policies, config=config).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


def chat(gateway: Gateway) -> tuple[int, str]:
    """One chat: its status and request id."""
    status, _, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w", body=CHAT)
    return status, headers["x-request-id"]


def seen_ids(keyguard: Keyguard) -> set[str]:
    """The request ids of the chats that reached this keyguard's model server."""
    return {seen.request_id for seen in keyguard.served["tiny"].requests if seen.method == "POST"}


def records_by_id(gateway: Gateway, count: int) -> dict[str, dict]:
    records = gateway.wait_for_records(count)
    return {r["request_id"]: r for r in records if r["type"] == "request"}


def wait_for(condition, seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.02)
    return True


def in_rotation(gateway: Gateway, name: str) -> float:
    return gateway.metric(f'citadel_gateway_replica_in_rotation{{model="tiny",replica="{name}"}}')


def test_requests_spread_over_both_replicas_and_each_record_names_its_replica(site, keyguards):
    gateway = site()
    answers = [chat(gateway) for _ in range(10)]
    assert [status for status, _ in answers] == [200] * 10
    by_id = records_by_id(gateway, 10)
    for name, keyguard in keyguards.items():
        reached = seen_ids(keyguard)
        assert len(reached) == 5  # one at a time: none outstanding, round robin
        assert {by_id[i]["replica"] for i in reached} == {name}
    assert not any("retries" in r for r in by_id.values())
    assert gateway.metric('citadel_gateway_replica_requests_total{model="tiny",replica="gpu-01"}') == 5
    assert gateway.chain_ok()


def test_the_least_loaded_replica_takes_the_next_request(site, keyguards):
    gateway = site()
    keyguards["gpu-01"].served["tiny"].behaviour.answer_delay = 1.0  # gpu-01 is slow: its requests pile up
    results = []
    threads = [threading.Thread(target=lambda: results.append(chat(gateway))) for _ in range(6)]
    for thread in threads:
        thread.start()
        time.sleep(0.05)  # one after another, so each sees the load the one before left
    for thread in threads:
        thread.join(15)
    assert sorted(status for status, _ in results) == [200] * 6
    assert len(seen_ids(keyguards["gpu-01"])) < len(seen_ids(keyguards["gpu-02"]))


def test_a_lost_keyguard_fails_only_the_requests_in_flight_on_it_then_none(site, keyguards):
    gateway = site(health_seconds=60)  # passive ejection alone (one check at the start: pooled connections)
    for keyguard in keyguards.values():
        keyguard.served["tiny"].behaviour.answer_delay = 1.5
    results: dict[str, int] = {}

    def one() -> None:
        status, request_id = chat(gateway)
        results[request_id] = status

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    # Two on each replica (least outstanding), all inside their model servers now.
    assert wait_for(lambda: all(len(seen_ids(k)) == 2 for k in keyguards.values())), gateway.log()
    in_flight = seen_ids(keyguards["gpu-01"])
    keyguards["gpu-01"].kill()
    for keyguard in keyguards.values():
        keyguard.served["tiny"].behaviour.answer_delay = 0
    after = [chat(gateway) for _ in range(10)]
    for thread in threads:
        thread.join(15)

    failed = {request_id for request_id, status in results.items() if status != 200}
    print(f"\nin flight on gpu-01 when it was lost: {len(in_flight)}; failed: {len(failed)}; after: "
          f"{[s for s, _ in after]}")
    assert failed == in_flight  # exactly the requests in flight there, each one provably reached a model server
    assert [status for status, _ in after] == [200] * 10
    by_id = records_by_id(gateway, 14)
    for request_id in failed:
        record = by_id[request_id]
        assert record["status"] == 502 and record["replica"] == "gpu-01" and "retries" not in record
    assert {by_id[i]["replica"] for _, i in after} == {"gpu-02"}
    # What was in flight was never sent a second time, anywhere.
    assert not in_flight & seen_ids(keyguards["gpu-02"])
    assert gateway.metric('citadel_gateway_replica_ejections_total{model="tiny",replica="gpu-01"}') == 1
    assert gateway.chain_ok()


def test_a_request_to_a_lost_keyguard_fails_over_and_its_record_names_the_retry(site, keyguards):
    gateway = site(health_seconds=0)  # no health check in the way: the request finds gpu-01 gone
    assert [chat(gateway)[0] for _ in range(2)] == [200, 200]  # one each: a pooled connection to each
    keyguards["gpu-01"].kill()
    status, request_id = chat(gateway)  # round robin: gpu-01's turn
    assert status == 200 and request_id in seen_ids(keyguards["gpu-02"])
    record = records_by_id(gateway, 3)[request_id]
    assert record["replica"] == "gpu-02"
    assert record["retries"] == [{"replica": "gpu-01", "reason": "connect refused"}]
    assert gateway.metric('citadel_gateway_replica_failovers_total{model="tiny",replica="gpu-01",'
                          'reason="connect refused"}') == 1
    assert in_rotation(gateway, "gpu-01") == 0 and in_rotation(gateway, "gpu-02") == 1
    assert [chat(gateway)[0] for _ in range(4)] == [200] * 4
    assert len(seen_ids(keyguards["gpu-02"])) == 6  # gpu-01 out of rotation: no more retries
    assert gateway.chain_ok()


def test_a_model_not_served_on_a_host_now_is_asked_of_the_other(site, keyguards):
    gateway = site(health_seconds=0)  # no health check: it would eject gpu-01 first
    socket_path = keyguards["gpu-01"].template.format(model="tiny")
    os.rename(socket_path, socket_path + ".away")  # vLLM restarting on gpu-01: its socket is gone
    status, request_id = chat(gateway)  # gpu-01's turn: its keyguard answers 503, no model server asked
    assert status == 200 and request_id in seen_ids(keyguards["gpu-02"])
    record = records_by_id(gateway, 1)[request_id]
    assert record["replica"] == "gpu-02"
    assert record["retries"] == [{"replica": "gpu-01", "reason": "not served there now"}]
    assert not seen_ids(keyguards["gpu-01"])


def test_a_replica_that_began_its_answer_is_not_retried(site, keyguards):
    gateway = site(health_seconds=0)
    for keyguard in keyguards.values():
        keyguard.served["tiny"].behaviour.chunks, keyguard.served["tiny"].behaviour.chunk_delay = 30, 0.05
    connection = gateway.connection(timeout=10)
    connection.request("POST", "/v1/chat/completions", body=json.dumps({**CHAT, "stream": True}),
                       headers={"Authorization": "Bearer ck_w"})
    response = connection.getresponse()  # the first request of this gateway: gpu-01's
    assert response.status == 200 and response.read1(65536).startswith(b"data:")  # generation has begun
    request_id = response.getheader("x-request-id")
    keyguards["gpu-01"].kill()
    with pytest.raises(http.client.IncompleteRead):
        response.read()  # the stream ends without its last chunk
    connection.close()
    records = gateway.wait_for_records(2)
    end = next(r for r in records if r["type"] == "stream_end")
    assert end["request_id"] == request_id and end["outcome"] == "cut by upstream" and end["replica"] == "gpu-01"
    request = next(r for r in records if r["type"] == "request")
    assert request["replica"] == "gpu-01" and "retries" not in request
    assert request_id in seen_ids(keyguards["gpu-01"]) and not seen_ids(keyguards["gpu-02"])


def test_an_ejected_replica_is_back_in_rotation_once_its_health_check_passes(site, keyguards):
    gateway = site()
    assert wait_for(lambda: in_rotation(gateway, "gpu-01") == 1)
    keyguards["gpu-01"].kill()
    assert wait_for(lambda: in_rotation(gateway, "gpu-01") == 0), gateway.log()  # the health check saw it
    assert [chat(gateway)[0] for _ in range(4)] == [200] * 4
    assert len(seen_ids(keyguards["gpu-02"])) == 4  # out of rotation: not even tried
    keyguards["gpu-01"].revive()
    assert wait_for(lambda: in_rotation(gateway, "gpu-01") == 1), gateway.log()
    assert [chat(gateway)[0] for _ in range(4)] == [200] * 4
    assert len(seen_ids(keyguards["gpu-01"])) == 2  # back: its share again
    assert "gpu-01: back in rotation (its health check passed)" in gateway.log()
