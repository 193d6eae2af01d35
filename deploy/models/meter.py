"""Byte counts of long model work (seal, verify), watched from outside the work itself.

Sealing and verifying run in forked worker processes (:mod:`citadel_runtime.sealed`, the
hosts' code, which has no progress hook). A `Meter` samples how far they are from this
process instead: the bytes written into the sealing directory, or the bytes the workers
have read (``rchar`` in ``/proc/PID/io``). A thread samples a few times a second and
calls `report` with the bytes done since the last call; when the work succeeds the
remainder is reported, so the calls always add up to `total` (never more).

Example::

    >>> with Meter(lambda: written_bytes(work), total, report=bar.advance):   # doctest: +SKIP
    ...     sealed.seal(source, work, ...)
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from pathlib import Path

ByteCallback = Callable[[int], None]
"""Called with the bytes just processed (a positive count); the calls of one job sum to its total."""

SAMPLE_SECONDS = 0.25


class Meter:
    """Reports the growth of `sample()` (clamped to `total`) to `report`, from a thread."""

    def __init__(self, sample: Callable[[], int], total: int, report: ByteCallback | None,
                 interval: float = SAMPLE_SECONDS):
        self.sample, self.total, self.report, self.interval = sample, total, report, interval
        self.reported = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> Meter:
        if self.report is not None:
            self._thread = threading.Thread(target=self._watch, name="citadel-meter", daemon=True)
            self._thread.start()
        return self

    def __exit__(self, kind, value, traceback) -> None:
        if self._thread is None:
            return
        self._stop.set()
        self._thread.join()
        self._advance(self.total if kind is None else self._sampled())

    def _watch(self) -> None:
        while not self._stop.wait(self.interval):
            self._advance(self._sampled())

    def _sampled(self) -> int:
        try:
            return self.sample()
        except OSError:  # a file renamed or a process gone between listing and reading it
            return self.reported

    def _advance(self, done: int) -> None:
        delta = min(done, self.total) - self.reported
        if delta > 0:
            self.reported += delta
            self.report(delta)


def written_bytes(directory: Path) -> int:
    """The total size of the files directly in `directory` (0 while it does not exist)."""
    try:
        entries = list(os.scandir(directory))
    except FileNotFoundError:
        return 0
    total = 0
    for entry in entries:
        try:
            total += entry.stat(follow_symlinks=False).st_size
        except FileNotFoundError:
            continue
    return total


class BytesRead:
    """Bytes read by this process and its children since creation, from ``/proc`` (0 without it).

    A worker's count is kept after it exits, so the sum never goes back. Counts every read
    (a worker's task pipe too: a few hundred bytes per file), hence the Meter's clamp.
    """

    def __init__(self, proc: Path = Path("/proc")):
        self.proc = proc
        self.pid = os.getpid()
        self.seen: dict[int, int] = {}
        self.baseline = self._rchar(self.pid)

    def __call__(self) -> int:
        for pid in self._children():
            self.seen[pid] = max(self.seen.get(pid, 0), self._rchar(pid))
        return max(0, self._rchar(self.pid) - self.baseline) + sum(self.seen.values())

    def _children(self) -> list[int]:
        pids = []
        for listing in (self.proc / str(self.pid) / "task").glob("*/children"):
            try:
                pids += [int(pid) for pid in listing.read_text().split()]
            except OSError:
                continue  # a thread that ended meanwhile
        return pids

    def _rchar(self, pid: int) -> int:
        try:
            for line in (self.proc / str(pid) / "io").read_text().splitlines():
                if line.startswith("rchar:"):
                    return int(line.split()[1])
        except (OSError, ValueError):
            pass
        return 0
