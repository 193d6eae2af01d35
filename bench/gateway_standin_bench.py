"""Benchmark: the gateway's own cost, in front of the tests' recording stand-in model server.

A quick companion to gateway_bench.py (which needs the real vLLM and minutes to start):
the same asyncio client (keep-alive connections, one small completion per request) against
the stand-in directly and through the gateway, at concurrency 1 (p50, p99, requests/s) and
32 (requests/s). The stand-in runs in its own process, so the client's and its threads do
not share one interpreter lock. ``CITADEL_RUNTIME_ROOT=/path/to/checkout`` measures another
checkout's gateway (how a change is compared with the one before it).

Run:  .venv/bin/python bench/gateway_standin_bench.py [--requests 400] [--rounds 2]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gateway_bench import measure  # noqa: E402
from tests.gateway_harness import Gateway, UpstreamProcess  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=400, help="requests per latency run (x2 at concurrency 32)")
    parser.add_argument("--rounds", type=int, default=2)
    args = parser.parse_args()
    policy = {"models": ["tiny"], "requests_per_minute": 10_000_000, "concurrent_requests": 1000,
              "max_tokens": 16, "phi": "detect"}
    with UpstreamProcess() as standin, tempfile.TemporaryDirectory(prefix="citadel-standin-bench-") as scratch, \
            Gateway(Path(scratch), keys={"bench": "ck_b"}, policies={"bench": policy}, upstream=standin) as gateway:
        targets = {"direct": (standin.port, None, "x"), "gateway": (gateway.port, gateway.context(), "ck_b")}
        best: dict[str, dict] = {}
        for round_number in range(args.rounds):
            for name, (port, ctx, key) in targets.items():
                result = measure(port, ctx, key, args.requests)
                print(f"[bench] round {round_number + 1} {name}: "
                      + ", ".join(f"{k} {v:.2f}" for k, v in result.items()), file=sys.stderr)
                prior = best.get(name)
                best[name] = result if prior is None else {
                    k: (min if k.endswith("_ms") else max)(prior[k], result[k]) for k in result}
        time.sleep(0.5)
        records = len(gateway.records())
    print(f"\n{'':10} {'p50 ms':>8} {'p99 ms':>8} {'rps c=1':>9} {'rps c=32':>9}")
    for name, r in best.items():
        print(f"{name:10} {r['p50_ms']:8.2f} {r['p99_ms']:8.2f} {r['rps_c1']:9.1f} {r['rps_c32']:9.1f}")
    direct, g = best["direct"], best["gateway"]
    print(f"\ngateway: added p50 {g['p50_ms'] - direct['p50_ms']:+.2f} ms, added p99 {g['p99_ms'] - direct['p99_ms']:+.2f} ms;"
          f" {records} audit records")
    return 0


if __name__ == "__main__":
    sys.exit(main())
