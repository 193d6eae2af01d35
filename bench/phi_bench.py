"""Benchmark: the PHI guard's CPU time on worst-case inputs, on prose, and on a small request.

Goal (issue 15): every pattern linear in the text's length; a worst-case 1 MiB prompt
scanned in well under 2 s on a 2-core machine, and 2 MiB in under three times as long.
Times are CPU seconds of this process (``time.process_time``), so other load on the machine
does not count. ``--root`` measures another checkout's guard (e.g. the baseline, whose
e-mail pattern was quadratic: give it a smaller ``--size``, or wait for hours).

Run:  .venv/bin/python bench/phi_bench.py [--size 1048576] [--root /work/baseline/wt]
"""

from __future__ import annotations

import argparse
import importlib.util
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.phi_flood import ADVERSARIAL, cpu_seconds, repeated  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
WORDS = ("the patient was seen in clinic today with a history of hypertension and type two diabetes treated with "
         "metformin 500 mg twice daily blood pressure 132/84 heart rate 72 no acute distress plan follow up in 3 "
         "months").split()


def load_phi(root: Path):
    spec = importlib.util.spec_from_file_location("phi_under_test", root / "citadel_runtime/gateway/phi.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1 << 20, help="characters of the smaller text (default 1 MiB)")
    parser.add_argument("--root", type=Path, default=REPO, help="the checkout whose guard to measure")
    args = parser.parse_args()
    phi = load_phi(args.root)
    size = args.size
    print(f"guard of {args.root}; CPU seconds to scan a seed repeated to {size} and {2 * size} characters\n")
    print("| seed | 1x | 2x | ratio |\n|---|---:|---:|---:|")
    worst = 0.0
    for seed in ADVERSARIAL:
        one, two = cpu_seconds(phi.scan, repeated(seed, size)), cpu_seconds(phi.scan, repeated(seed, 2 * size))
        worst = max(worst, one)
        print(f"| {ascii(seed)[:24]} | {one:.3f} | {two:.3f} | {two / max(one, 1e-3):.2f} |", flush=True)
    rng = random.Random(1)
    prose = " ".join(rng.choice(WORDS) for _ in range(size // 4))[:size]
    body = {"model": "tiny", "messages": [{"role": "user", "content": "hello, summarise this note please"}] * 4}
    calls = 2000
    small = cpu_seconds(lambda: [phi.guard(body, "detect") for _ in range(calls)]) / calls
    print(f"\nworst seed at {size} characters: {worst:.3f} s")
    print(f"clinical-looking prose, {size} characters: {cpu_seconds(phi.scan, prose):.3f} s")
    print(f"a small chat body (4 messages), guard in detect mode: {small * 1e6:.1f} us")


if __name__ == "__main__":
    main()
