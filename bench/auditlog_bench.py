"""Benchmark: durable audit records per second, one writer at a time and 32 at once.

Goal (issue 15, item 4): every record is on disk (fdatasync) before its answer leaves,
without the log becoming the gateway's bottleneck. ``Writer.commit`` batches the records
of concurrent callers into one write and one sync, so at concurrency 32 it should reach
many times the rate of one sync per record. For comparison, the same records through the
synchronous ``Writer.write``: without a sync (what the gateway did before) and with one per
record. A record like the gateway's (about 600 bytes). The file lies under --dir (a real
disk: tmpfs syncs for free), and the best of --rounds is printed.

Run:  .venv/bin/python bench/auditlog_bench.py [--records 2000] [--rounds 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from citadel_runtime.gateway.auditlog import Writer, verify_file  # noqa: E402

KEY = b"k" * 64
RECORD = {"time": "2026-01-01T00:00:00.000+00:00", "request_id": "0123456789abcdef", "source": "10.0.0.7",
          "method": "POST", "route": "/v1/chat/completions", "client": "radiology", "key_version": 3,
          "model": "qwen2.5-32b-radiology", "status": 200, "refusal": None, "stream": False, "prompt_tokens": 812,
          "completion_tokens": 256, "request_sha256": "a" * 64, "response_sha256": "b" * 64, "phi": {},
          "latency_ms": 123.456}


async def commits(path: str, records: int, concurrency: int) -> float:
    writer = Writer(path, KEY)
    left = records

    async def caller() -> None:
        nonlocal left
        while left > 0:
            left -= 1
            await writer.commit(RECORD)

    started = time.perf_counter()
    await asyncio.gather(*(caller() for _ in range(concurrency)))
    elapsed = time.perf_counter() - started
    await writer.aclose()
    return records / elapsed


def writes(path: str, records: int, durable: bool) -> float:
    writer = Writer(path, KEY)
    started = time.perf_counter()
    for _ in range(records):
        writer.write(RECORD, durable=durable)
    elapsed = time.perf_counter() - started
    writer.close()
    return records / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--records", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--dir", default="/tmp")
    args = parser.parse_args()
    runs = {
        "commit (durable), concurrency 1": lambda p: asyncio.run(commits(p, args.records, 1)),
        "commit (durable), concurrency 32": lambda p: asyncio.run(commits(p, args.records, 32)),
        "write, one fdatasync per record": lambda p: writes(p, args.records, True),
        "write, no sync (before issue 15)": lambda p: writes(p, args.records, False),
    }
    best = dict.fromkeys(runs, 0.0)
    with tempfile.TemporaryDirectory(dir=args.dir) as work:
        for round_ in range(args.rounds):
            for name, run in runs.items():
                path = os.path.join(work, f"audit-{round_}-{len(name)}.jsonl")
                best[name] = max(best[name], run(path))
                assert verify_file(path, KEY).ok, path
    print(f"{args.records} records per run, best of {args.rounds}, log under {args.dir}")
    for name, rate in best.items():
        print(f"  {name:<36} {rate:>10,.0f} records/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
