"""Issue 15, item 1: no single request's CPU work delays another client's request.

On the baseline one authenticated 128 KB prompt (``"a."`` repeated) froze every other
client for 20 to 34 s: the PHI guard's e-mail pattern backtracked quadratically, and every
scan ran inline on the one event loop. Now the guard is linear, and a large body is parsed,
checked and scanned in a worker process (``offload``), so the event loop stays free.

The must-show, at loopback scale: while one client sends worst-case 1 MiB prompts back to
back, in each PHI mode (off, detect, redact, block), another client's p99 latency through the
gateway (to the stand-in model server) stays under 50 ms. The attacker runs in its own
process, and its model ("bulk") is served by a stand-in in a process of its own, so that
neither shares an interpreter lock with the measuring client or its stand-in.
"""

from __future__ import annotations

import json
import statistics
import time

from tests import phi_flood
from tests.adversarial.harness import CHAT
from tests.gateway_harness import REPO, UpstreamProcess

MODES = ("off", "detect", "redact", "block")


def test_worst_case_1_mib_prompts_do_not_delay_another_client(gateway_with, upstream):
    policy = {"models": ["tiny", "bulk"], "max_tokens": 8, "requests_per_minute": 100_000, "concurrent_requests": 8}
    policies = {mode: {**policy, "phi": mode} for mode in MODES} | {"ward": {**policy, "phi": "detect"}}
    with UpstreamProcess() as bulk:
        gateway = gateway_with(keys={name: f"ck_{name}" for name in policies}, policies=policies,
                               config={"upstreams": {"tiny": upstream.address, "bulk": bulk.address}})
        latencies, load = measure_while_attacked(gateway)
    p99 = statistics.quantiles(latencies, n=100)[98] * 1000
    p50 = statistics.median(latencies) * 1000
    print(f"\nother client: {len(latencies)} requests, p50 {p50:.1f} ms, p99 {p99:.1f} ms, max "
          f"{max(latencies) * 1000:.1f} ms; attacker: {load}")
    # The load was real: 1 MiB bodies in every mode, each answered (block mode refuses most: 422).
    assert load["sent"] >= 3 * len(MODES), load
    # The must-show is p99 under 50 ms. CI runs this on two cores shared with the rest of the
    # suite (and a worker busy with the attacker's bodies takes one of them), so the test
    # allows five times that: what it must catch is a stall, which on the baseline lasts
    # minutes (the first 1 MiB prompt held the event loop in the PHI guard).
    assert p99 < 250, f"p99 {p99:.1f} ms while another client sends worst-case 1 MiB prompts"


def measure_while_attacked(gateway, seconds: float = 20) -> tuple[list[float], dict]:
    """The latencies of a client sending small requests while the attacker sends its bodies."""
    attacker = phi_flood.start("127.0.0.1", gateway.port, str(gateway.tls.ca_file), seconds,
                               {mode: f"ck_{mode}" for mode in MODES}, "bulk", cwd=str(REPO))
    try:
        time.sleep(2)  # the attacker's first bodies are in the gateway
        latencies = []
        connection = gateway.connection(timeout=5)
        body = json.dumps(CHAT)
        end = time.monotonic() + seconds - 4
        while time.monotonic() < end:
            started = time.perf_counter()
            connection.request("POST", "/v1/chat/completions", body=body,
                               headers={"Authorization": "Bearer ck_ward", "Content-Type": "application/json"})
            response = connection.getresponse()
            response.read()
            latencies.append(time.perf_counter() - started)
            assert response.status == 200
            time.sleep(0.02)
        connection.close()
    except BaseException:
        attacker.kill()
        raise
    return latencies, phi_flood.finish(attacker, timeout=seconds + 120)
