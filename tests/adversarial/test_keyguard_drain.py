"""Issue 18, draining: the real keyguard stopping (SIGTERM) and a model's server about to stop (its marker).

The keyguard runs as on a GPU host (tests/keyguard_harness.py) in front of stand-in vLLMs
that answer after ``behaviour.answer_delay``; the drain helper runs as vLLM's ``ExecStop=``
does (``python3 -m citadel_runtime.drain wait MODEL``). The last tests put the real gateway
in front of two keyguards (the fixtures of test_gateway_replicas.py) and drain one replica
under a loop of requests: none may fail; and run the catalog's ``gateway-replicas-in-rotation``
check and break against that gateway.
"""

from __future__ import annotations

import json
import subprocess
import threading
import time

import pytest

from hardening.controls.gateway import add_unserved_replica, in_rotation
from tests.adversarial.test_gateway_replicas import chat, keyguards, pki, site, wait_for  # noqa: F401 - fixtures
from tests.keyguard_harness import INTERNAL_KEY, Keyguard

BODY = {"model": "tiny", "prompt": "hi"}


def post(keyguard: Keyguard, model: str = "tiny") -> tuple[int, dict, dict]:
    return keyguard.request("POST", "/v1/completions", key=INTERNAL_KEY, body={**BODY, "model": model}, timeout=15)


def cut_short(keyguard: Keyguard) -> int | str:
    """A request's status, or "cut" when the connection closed before its answer."""
    try:
        return post(keyguard)[0]
    except OSError:  # http.client's RemoteDisconnected is a ConnectionResetError
        return "cut"


def in_background(count: int, job) -> tuple[list, list[threading.Thread]]:
    """`count` threads each running `job`, their results collected in a list."""
    results: list = []
    threads = [threading.Thread(target=lambda: results.append(job())) for _ in range(count)]
    for thread in threads:
        thread.start()
    return results, threads


def report(keyguard: Keyguard) -> dict:
    """The keyguard's in-flight report (citadel_runtime.drain), or {} before its first."""
    try:
        return json.loads((keyguard.state_dir / "inflight.json").read_text())
    except (OSError, ValueError):
        return {}


def seen(keyguard: Keyguard, model: str = "tiny") -> int:
    return sum(1 for request in keyguard.served[model].requests if request.method == "POST")


@pytest.fixture
def start_keyguard(tmp_path):
    started: list[Keyguard] = []

    def start(*arguments: str, models=("tiny",)) -> Keyguard:
        keyguard = Keyguard(tmp_path / f"kg{len(started)}", models=models, arguments=arguments)
        started.append(keyguard.start())
        return keyguard

    yield start
    for keyguard in started:
        keyguard.stop()


def test_sigterm_finishes_the_requests_in_flight_refuses_new_ones_and_exits(start_keyguard):
    keyguard = start_keyguard("--drain-seconds", "5")
    open_connection = keyguard.connection()  # kept alive across the stop, as the gateway's pool keeps one
    open_connection.request("GET", "/v1/models", headers={"Authorization": f"Bearer {INTERNAL_KEY}"})
    first = open_connection.getresponse()
    assert first.status == 200 and first.read()
    keyguard.served["tiny"].behaviour.answer_delay = 1.5
    results, threads = in_background(3, lambda: post(keyguard)[0])
    assert wait_for(lambda: seen(keyguard) == 3), keyguard.log()

    stopped_at = time.monotonic()
    keyguard.terminate()
    assert wait_for(lambda: "draining: no new connection" in keyguard.log()), keyguard.log()
    open_connection.request("POST", "/v1/completions", body=json.dumps(BODY),
                            headers={"Authorization": f"Bearer {INTERNAL_KEY}"})
    refused = open_connection.getresponse()
    assert refused.status == 503 and refused.getheader("Connection") == "close"
    assert "draining" in json.loads(refused.read())["error"]
    open_connection.close()
    with pytest.raises(ConnectionRefusedError):
        post(keyguard)  # the listener is closed: new connections go to another replica

    for thread in threads:
        thread.join(10)
    assert results == [200, 200, 200]
    assert keyguard.process.wait(timeout=10) == 0
    elapsed = time.monotonic() - stopped_at
    print(f"\nstopped {elapsed:.2f} s after SIGTERM with 3 requests of 1.5 s in flight")
    assert elapsed < 5
    assert seen(keyguard) == 3  # the refused request reached no model server
    assert "draining: done, every request under way was answered" in keyguard.log()


def test_sigterm_stops_at_the_drain_deadline_when_a_request_hangs(start_keyguard):
    keyguard = start_keyguard("--drain-seconds", "1")
    keyguard.served["tiny"].behaviour.answer_delay = 3
    results, threads = in_background(1, lambda: cut_short(keyguard))
    assert wait_for(lambda: seen(keyguard) == 1)
    stopped_at = time.monotonic()
    keyguard.terminate()
    assert keyguard.process.wait(timeout=5) == 0
    assert time.monotonic() - stopped_at < 3
    assert "stopping with 1 requests still under way after 1 s" in keyguard.log()
    for thread in threads:
        thread.join(5)
    assert results == ["cut"]


def test_a_draining_model_refuses_new_requests_and_its_helper_returns_once_none_is_in_flight(start_keyguard):
    keyguard = start_keyguard(models=("tiny", "other"))
    keyguard.served["tiny"].behaviour.answer_delay = 1.5
    results, threads = in_background(2, lambda: post(keyguard)[0])
    assert wait_for(lambda: seen(keyguard) == 2)

    helper = keyguard.drain_model("tiny", deadline=10)
    assert wait_for(lambda: "tiny" in report(keyguard).get("draining", {}), 5), keyguard.log()
    assert report(keyguard)["inflight"] == {"tiny": 2}
    status, body, headers = post(keyguard)
    assert status == 503 and "draining" in body["error"] and headers["retry-after"] == "5"
    assert post(keyguard, "other")[0] == 200  # the other model is served meanwhile
    _, models, _ = keyguard.request("GET", "/v1/models", key=INTERNAL_KEY)
    assert [m["id"] for m in models["data"]] == ["other"]  # out of the gateway's health check
    assert helper.poll() is None  # still waiting: two requests are in flight

    for thread in threads:
        thread.join(10)
    assert results == [200, 200]
    out, err = helper.communicate(timeout=5)
    assert helper.returncode == 0, err
    assert "model tiny: drained" in out
    assert seen(keyguard) == 2  # none of the refused ones reached the model server

    keyguard.served["tiny"].behaviour.answer_delay = 0
    keyguard.release_model("tiny")  # vLLM's next start
    assert wait_for(lambda: post(keyguard)[0] == 200, 5)


def test_the_drain_helper_fails_naming_the_model_at_its_deadline(start_keyguard):
    keyguard = start_keyguard()
    keyguard.served["tiny"].behaviour.answer_delay = 3
    results, threads = in_background(1, lambda: post(keyguard)[0])
    assert wait_for(lambda: seen(keyguard) == 1)
    started = time.monotonic()
    helper = keyguard.drain_model("tiny", deadline=1)
    _, err = helper.communicate(timeout=10)
    assert helper.returncode == 1
    assert time.monotonic() - started < 4
    assert "model tiny: not drained after 1 s: 1 request in flight" in err
    for thread in threads:
        thread.join(5)
    assert results == [200]  # the helper gave up waiting; the keyguard cut nothing


def test_the_drain_helper_returns_at_once_when_no_keyguard_runs(start_keyguard):
    keyguard = start_keyguard()
    keyguard.terminate()
    assert keyguard.process.wait(timeout=10) == 0
    assert not (keyguard.state_dir / "inflight.json").exists()  # its report goes with it
    helper = keyguard.drain_model("tiny", deadline=10)
    out, err = helper.communicate(timeout=5)
    assert helper.returncode == 0, err
    keyguard.revive()  # a keyguard starting while the model's server stops: the marker holds
    assert post(keyguard)[0] == 503


def drive(gateway, stop: threading.Event, statuses: list) -> None:
    while not stop.is_set():
        statuses.append(chat(gateway)[0])


def under_load(gateway, keyguards, change) -> list[int]:  # noqa: F811 - the fixture's value
    """Run `change` while 4 clients send chats in a loop; every status they got."""
    for keyguard in keyguards.values():
        keyguard.served["tiny"].behaviour.answer_delay = 0.2
    stop, statuses = threading.Event(), []
    threads = [threading.Thread(target=drive, args=(gateway, stop, statuses)) for _ in range(4)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.5)
        change()
        time.sleep(0.5)
    finally:
        stop.set()
        for thread in threads:
            thread.join(15)
    return statuses


def test_draining_a_model_on_one_replica_under_load_fails_no_request(site, keyguards):  # noqa: F811
    gateway = site()
    gpu01 = keyguards["gpu-01"]

    def restart_model_server():
        helper = gpu01.drain_model("tiny", deadline=10)
        _, err = helper.communicate(timeout=15)
        assert helper.returncode == 0, err
        time.sleep(0.5)  # vLLM stopped and starting again: the gateway sends its share to gpu-02
        gpu01.release_model("tiny")

    statuses = under_load(gateway, keyguards, restart_model_server)
    print(f"\n{len(statuses)} chats while tiny drained on gpu-01: {sorted(set(statuses))}")
    assert statuses and set(statuses) == {200}
    assert "model tiny: draining" in gpu01.log()


def test_stopping_one_keyguard_under_load_fails_no_request(site, keyguards):  # noqa: F811
    gateway = site()
    gpu01 = keyguards["gpu-01"]

    def restart_keyguard():
        gpu01.terminate()
        assert gpu01.process.wait(timeout=15) == 0
        gpu01.revive()

    statuses = under_load(gateway, keyguards, restart_keyguard)
    print(f"\n{len(statuses)} chats while gpu-01's keyguard restarted: {sorted(set(statuses))}")
    assert statuses and set(statuses) == {200}
    assert wait_for(lambda: gateway.metric(
        'citadel_gateway_replica_in_rotation{model="tiny",replica="gpu-01"}') == 1), gateway.log()


def test_the_audit_sees_a_replica_out_of_rotation_and_the_break_makes_one(site, keyguards, tmp_path):  # noqa: F811
    gateway = site()
    config = gateway.workdir / "gateway.json"
    check = subprocess.run(["sh", "-c", in_rotation(str(config))], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0 and "2 replicas, all in rotation" in check.stdout, check.stderr
    keyguards["gpu-01"].kill()
    assert wait_for(lambda: gateway.metric('citadel_gateway_replica_in_rotation{model="tiny",replica="gpu-01"}') == 0)
    check = subprocess.run(["sh", "-c", in_rotation(str(config))], capture_output=True, text=True, timeout=30)
    assert check.returncode == 1 and 'out of rotation: model="tiny",replica="gpu-01"' in check.stdout

    copy = tmp_path / "copy.json"
    copy.write_text(config.read_text())
    subprocess.run(["sh", "-c", add_unserved_replica(str(copy))], check=True, timeout=30)
    assert [r["name"] for r in json.loads(copy.read_text())["upstreams"]["tiny"]] == ["gpu-01", "gpu-02", "audit-break"]
