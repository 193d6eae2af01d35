"""What every benchmark here shares: the median of repeated wall-clock timings."""

from __future__ import annotations

import statistics
import time


def timed(function, repeat: int) -> float:
    """Median seconds of `repeat` calls of `function()` (the median shrugs off one slow run)."""
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        function()
        samples.append(time.perf_counter() - start)
    return statistics.median(samples)
