"""CPU-heavy request work off the event loop: in worker processes, a bounded number at a time.

The gateway serves every client from one asyncio event loop, so a request whose body takes
long to parse or scan would stall every other client for as long. Bodies up to
``inline_below`` bytes are handled on the loop (cheaper than a trip to a worker: well under
a millisecond each, with a linear-time PHI guard); larger ones go to a pool of worker
processes (``workers``, default one less than the CPUs, at least one), started with the
gateway. At most ``workers + queue`` are in a worker or waiting for one; a request beyond
that waits for a slot within the caller's deadline (the caller refuses it with 503 if
none frees in time). A slot is given back only when its worker is done, even if the
request was abandoned meanwhile, so abandoned requests cannot pile up behind the pool.

Why processes and not threads: the work is pure Python and regular expressions, which hold
the interpreter lock. Why not several event loops on one listener (``SO_REUSEPORT``): one
audit chain, one set of per-client limits, and a process per loop to keep consistent; the
only heavy step is pure and small to ship (the body in, a verdict out).

Example::

    >>> async def demo():
    ...     offload = Offload(workers=1, queue=2, inline_below=1024)
    ...     try:  # 3 bytes: run on the loop; 1024 or more would go to the worker
    ...         return await offload.run(3, sum, [1, 2, 3])
    ...     finally:
    ...         offload.close()
    >>> asyncio.run(demo())
    6
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool

WORKER_NICENESS = 10  # os.nice: the workers yield the CPU to the event loop


def default_workers() -> int:
    return max(1, (os.cpu_count() or 2) - 1)


def _worker_start() -> None:
    # The gateway stops its workers itself; a Ctrl-C or SIGTERM to the process group must not
    # kill one mid-request (systemd stops the whole group after the gateway has exited anyway).
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Below the event loop: when a worker screening a large body and the loop want the same
    # core, the loop's small requests go first (what "no request delays another" needs on a
    # host with few cores). Lowering one's own priority needs no privilege; the unit allows
    # setpriority(2) for it alone of @resources.
    try:
        os.nice(WORKER_NICENESS)
    except OSError:
        pass


def _ready() -> int:
    return os.getpid()


class Offload:
    """Runs `fn(*args)` inline for small inputs, else in a worker process, bounded."""

    def __init__(self, workers: int | None = None, queue: int = 16, inline_below: int = 16 * 1024):
        self.workers = workers or default_workers()
        self.inline_below = inline_below
        self.slots = asyncio.Semaphore(self.workers + queue)
        self.pool = self._pool()
        self.offloaded = 0  # counted for the metrics: how many went to a worker

    def _pool(self) -> ProcessPoolExecutor:
        # forkserver: workers are forked from a clean process, not from the gateway with its
        # threads, sockets and keys.
        return ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("forkserver"),
                                   initializer=_worker_start)

    async def start(self) -> None:
        """Start every worker now (not on the first large request), and fail here if they cannot start."""
        loop = asyncio.get_running_loop()
        await asyncio.gather(*(loop.run_in_executor(self.pool, _ready) for _ in range(self.workers)))

    async def run(self, size: int, fn, *args):
        """`fn(*args)`, on the loop when `size` is below `inline_below`, else in a worker."""
        if size < self.inline_below:
            return fn(*args)
        await self.slots.acquire()
        loop = asyncio.get_running_loop()
        pool = self.pool
        try:
            future = pool.submit(fn, *args)
        except BrokenProcessPool:
            self.slots.release()
            self._renew(pool)
            raise
        except BaseException:
            self.slots.release()
            raise
        future.add_done_callback(lambda _: self._give_back(loop))
        self.offloaded += 1
        try:
            return await asyncio.wrap_future(future)
        except BrokenProcessPool:
            self._renew(pool)
            raise

    def _give_back(self, loop: asyncio.AbstractEventLoop) -> None:
        if not loop.is_closed():
            loop.call_soon_threadsafe(self.slots.release)

    def _renew(self, broken: ProcessPoolExecutor) -> None:
        """A worker died (killed for memory, say): the pool is unusable, so start a new one."""
        if self.pool is broken:
            self.pool = self._pool()
            broken.shutdown(wait=False, cancel_futures=True)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)
