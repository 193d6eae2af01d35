"""The gateway under attack on a lab host, in front of the real vLLM (issue 15's lab must-shows).

The adversarial tier shows each item on loopback against a stand-in model server; these two
show the same on the deployed service, under systemd's sandbox, with the real vLLM:

- While one client sends worst-case 1 MiB prompts back to back in each PHI mode, another
  client's requests are not delayed (p99 printed; the must-show is 50 ms).
- With the log's filesystem full, no answer is delivered unrecorded; once there is space
  the gateway serves again, and the chain verifies across the gap.
"""

from __future__ import annotations

import http.client
import json
import shlex
import ssl
import statistics
import time

from citadel_runtime.gateway.auditlog import verify_lines
from citadel_runtime.layout import GATEWAY_AUDIT_LOG, GATEWAY_PORT, GATEWAY_UNIT
from deploy.secrets import audit_key
from tests import phi_flood
from tests.gateway_harness import REPO
from tests.vllm.conftest import FLOOD_MODES, MODEL, on_host

LOG_DIR = GATEWAY_AUDIT_LOG.rsplit("/", 1)[0]
COMPLETION = json.dumps({"model": MODEL, "prompt": "hello", "max_tokens": 1, "temperature": 0})
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}


def connect(gw) -> http.client.HTTPSConnection:
    return http.client.HTTPSConnection(gw["address"], GATEWAY_PORT, timeout=30,
                                       context=ssl.create_default_context(cadata=gw["ca"]))


def probe(gw, seconds: float) -> dict[str, list[float]]:
    """Another client's latencies for `seconds`: one request answered by the gateway itself
    (its models, from its policy) and one by vLLM (a 1-token completion), in turns."""
    latencies: dict[str, list[float]] = {"models": [], "completion": []}
    connection = connect(gw)
    headers = {"Authorization": f"Bearer {gw['keys']['ward']}", "Content-Type": "application/json"}
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            for kind, method, path, body in (("models", "GET", "/v1/models", None),
                                             ("completion", "POST", "/v1/completions", COMPLETION)):
                started = time.perf_counter()
                connection.request(method, path, body=body, headers=headers)
                response = connection.getresponse()
                response.read()
                latencies[kind].append(time.perf_counter() - started)
                assert response.status == 200, (kind, response.status)
            time.sleep(0.02)
    finally:
        connection.close()
    return latencies


def summary(values: list[float]) -> str:
    p99 = statistics.quantiles(values, n=100)[98] * 1000
    return f"{len(values)} requests, p50 {statistics.median(values) * 1000:.1f} ms, p99 {p99:.1f} ms"


def p99_ms(values: list[float]) -> float:
    return statistics.quantiles(values, n=100)[98] * 1000


def test_worst_case_1_mib_prompts_in_each_phi_mode_do_not_delay_another_client(env, gw, tmp_path):
    quiet = probe(gw, 8)
    ca = tmp_path / "ca.pem"
    ca.write_text(gw["ca"])
    keys = {mode: gw["keys"][f"flood-{mode}"] for mode in FLOOD_MODES}
    attacker = phi_flood.start(gw["address"], GATEWAY_PORT, str(ca), 40, keys, MODEL, cwd=str(REPO))
    try:
        time.sleep(3)  # the attacker's first bodies are in the gateway
        attacked = probe(gw, 30)
    except BaseException:
        attacker.kill()
        raise
    load = phi_flood.finish(attacker)
    for kind in ("models", "completion"):
        print(f"\n{kind}: quiet {summary(quiet[kind])}; under attack {summary(attacked[kind])}")
    print(f"attacker: {load}")
    assert load["sent"] >= 2 * len(FLOOD_MODES), load
    # The must-show is 50 ms for a request through the gateway. CI's two cores also run the
    # lab host's vLLM, the gateway's worker busy with 1 MiB bodies and this test's attacker,
    # so the test allows five times that: what it must catch is the baseline's stall (the
    # first worst-case prompt held the gateway's event loop for minutes).
    assert p99_ms(attacked["models"]) < 250, summary(attacked["models"])
    assert p99_ms(attacked["completion"]) < 500, summary(attacked["completion"])


FILL = f"""
set -e
size=$(( $(stat -c %s {GATEWAY_AUDIT_LOG}) / 1024 + 512 ))k
cp -a {GATEWAY_AUDIT_LOG} /root/audit-before-full.jsonl
systemctl stop {GATEWAY_UNIT}
mount -t tmpfs -o size=$size,mode=0750,uid=$(id -u citadel-gateway),gid=$(id -g citadel-gateway) citadel-log-full {LOG_DIR}
cp -a /root/audit-before-full.jsonl {GATEWAY_AUDIT_LOG}
systemctl start {GATEWAY_UNIT}
"""
RESTORE = f"""
set -e
systemctl stop {GATEWAY_UNIT}
rm -f {LOG_DIR}/filler
cp -a {GATEWAY_AUDIT_LOG} /root/audit-after-full.jsonl
umount {LOG_DIR}
cp -a /root/audit-after-full.jsonl {GATEWAY_AUDIT_LOG}
rm -f /root/audit-before-full.jsonl /root/audit-after-full.jsonl
systemctl start {GATEWAY_UNIT}
"""


def ask(gw, method: str, path: str, body: dict | None = None, key: str | None = "ward") -> tuple[int, dict, bytes]:
    connection = connect(gw)
    headers = {"Content-Type": "application/json"}
    if key:
        headers["Authorization"] = f"Bearer {gw['keys'][key]}"
    try:
        connection.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        response = connection.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    except (ConnectionError, http.client.HTTPException) as exc:  # closed without an answer: nothing delivered
        return 0, {}, repr(exc).encode()
    finally:
        connection.close()


def wait_serving(gw, timeout: float = 60) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        try:
            if ask(gw, "GET", "/v1/models")[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise AssertionError("the gateway did not come back")


def test_with_the_log_filesystem_full_no_answer_is_delivered_unrecorded_and_serving_resumes(env, gw):
    on_host(env, f"sudo bash -c {shlex.quote(FILL)}")
    try:
        wait_serving(gw)
        answered = {}
        status, headers, _ = ask(gw, "POST", "/v1/chat/completions", CHAT)
        assert status == 200
        answered[headers["x-request-id"]] = status
        # The log's filesystem fills up, as a disk does (root's filler takes every free block).
        on_host(env, f"sudo dd if=/dev/zero of={LOG_DIR}/filler bs=4k status=none", check=False)
        kinds = [("POST", "/v1/chat/completions", CHAT, "ward"), ("POST", "/v1/chat/completions",
                                                                   {**CHAT, "stream": True}, "ward"),
                 ("POST", "/v1/completions", json.loads(COMPLETION), "ward"), ("GET", "/v1/models", None, "ward"),
                 ("GET", "/v1/models", None, None)]
        # The log's last page may still hold a record or two: those are answered, recorded.
        during = []
        for index in range(40):
            method, path, body, key = kinds[index % len(kinds)]
            status, headers, data = ask(gw, method, path, body, key)
            during.append((status, data))
            if status == 200:
                answered[headers["x-request-id"]] = status
            elif len(during) >= 10 and all(s in (503, 0, 401) for s, _ in during[-len(kinds):]):
                break
        print("\nwhile full:", [(s, b[:80]) for s, b in during])
        refused = during[-len(kinds):]
        for status, data in refused:  # full now: 503 (401 for no key) and never a model's answer
            assert status in (503, 0, 401), (status, data[:200])
            assert b"choices" not in data and b'"data"' not in data, data[:200]
        on_host(env, f"sudo rm -f {LOG_DIR}/filler")
        # Space again: the next request's refusal is recorded, which puts the gateway back in
        # service (a record written is how it knows); every answer after that is served.
        statuses = []
        for _ in range(6):
            status, headers, body = ask(gw, "POST", "/v1/chat/completions", CHAT)
            statuses.append(status)
            if status == 200:
                answered[headers["x-request-id"]] = status
        assert statuses[1:] == [200] * 5 and statuses[0] in (200, 503), statuses
        lines = on_host(env, f"sudo cat {GATEWAY_AUDIT_LOG}").stdout.splitlines()
    finally:
        on_host(env, f"sudo bash -c {shlex.quote(RESTORE)}")
    records = [json.loads(line) for line in lines if line.strip()]
    recorded = {r["request_id"] for r in records if r.get("type", "request") == "request"}
    assert set(answered) <= recorded, set(answered) - recorded  # every answer delivered has its record
    verdict = verify_lines(lines, audit_key.read(env["store"]).reveal().encode())
    assert verdict.ok, verdict.problems
    wait_serving(gw)
