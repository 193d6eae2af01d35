"""Wait at boot for what is not there yet, with one journal line per wait, and unwind on SIGTERM.

A host that boots while Vault is away (or before its network, or before its Vault agent has
logged in) must not fail its boot units: it waits, says in the journal what it waits for,
and carries on by itself once that is back. :func:`wait_for` retries one attempt with
exponential backoff (2, 4, 8, 16, 30, 30... seconds by default); each failed try that
will be tried again logs exactly one line::

    waiting for Vault at https://10.80.0.1:8200 (transit decrypt): connection refused; 40 s so far, next try in 16 s

Only the exception types the caller names as ``transient`` are waited out; anything else
(a refusal that retrying will not fix) propagates at once. A transient exception's message
is the reason in that line, so it must be one line with no secret in it; it may carry a
``what`` attribute naming what is awaited when that differs from the caller's ``what``
(:class:`NotYet` does). No deadline by default: at boot, systemd's ``TimeoutStartSec=``
and a stop bound the wait; tests and checks pass ``deadline`` and get :class:`WaitExpired`.

:func:`raise_on_sigterm` turns systemd's SIGTERM into :class:`Terminated`, an exception that
unwinds through ``finally`` and ``except BaseException`` like ``KeyboardInterrupt``, so a
unit stopped while it waits (or while it writes plaintext) still runs its cleanup.

Standard library only (runs under Debian's ``/usr/bin/python3`` on hosts).

Example::

    >>> from citadel_runtime.waits import NotYet, wait_for
    >>> answers = iter([NotYet("connection refused"), "ready"])
    >>> def attempt():
    ...     answer = next(answers)
    ...     if isinstance(answer, Exception):
    ...         raise answer
    ...     return answer
    >>> wait_for("Vault at https://vault:8200", attempt, transient=(NotYet,), sleep=lambda s: None,
    ...          log=print, clock=lambda: 0.0)
    waiting for Vault at https://vault:8200: connection refused; 0 s so far, next try in 2 s
    'ready'
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


class NotYet(Exception):
    """A transient failure: `reason` (one line, no secret) says what is missing now.

    ``what``, when given, names what is awaited (``"citadel-agent@gpu's token in /run/..."``)
    and replaces the ``what`` of the :func:`wait_for` call in its journal line.
    """

    def __init__(self, reason: str, what: str | None = None):
        super().__init__(reason)
        self.what = what


class WaitExpired(Exception):
    """The wait's deadline passed; the message names what was awaited, for how long, and the last reason."""


class Terminated(BaseException):
    """SIGTERM arrived (systemd stops the unit): unwinds like ``KeyboardInterrupt`` so cleanups run."""


def _seconds(value: float) -> str:
    """A pause as the journal shows it: whole seconds, tenths under one (a deadline's last bit)."""
    return f"{value:.1f}" if 0 < value < 1 else f"{value:.0f}"


def journal(line: str) -> None:
    """One line to stderr, flushed now: systemd puts it in the unit's journal."""
    print(line, file=sys.stderr, flush=True)


def wait_for(what: str, attempt: Callable[[], T], *, transient: tuple[type[BaseException], ...], first: float = 2.0,
             cap: float = 30.0, deadline: float | None = None, log: Callable[[str], None] = journal,
             sleep: Callable[[float], object] = time.sleep, clock: Callable[[], float] = time.monotonic) -> T:
    """`attempt()`'s result, retried after each `transient` failure; anything else propagates at once.

    The pauses start at `first` seconds and double up to `cap`; one line goes to `log` before
    each pause (what, the reason, how long so far, the next pause). `deadline` (seconds from
    the first try; None: wait for ever) bounds the wait: once it has passed, the last
    transient failure becomes :class:`WaitExpired` (``deadline=0``: a single try, no line).
    """
    start, pause = clock(), first
    while True:
        try:
            return attempt()
        except transient as exc:
            awaited = getattr(exc, "what", None) or what
            reason = " ".join(str(exc).split()) or type(exc).__name__  # one journal line
            waited = clock() - start
            if deadline is not None and waited >= deadline:
                raise WaitExpired(f"gave up waiting for {awaited} after {waited:.0f} s: {reason}") from None
            next_pause = min(pause, cap) if deadline is None else min(pause, cap, deadline - waited)
            log(f"waiting for {awaited}: {reason}; {waited:.0f} s so far, next try in {_seconds(next_pause)} s")
        sleep(next_pause)
        pause = min(pause * 2, cap)


def wait_seconds_option(args: list[str]) -> tuple[list[str], float | None]:
    """`args` without ``--wait-seconds N``, and N (None when absent); ValueError unless N is 0 or more."""
    if "--wait-seconds" not in args:
        return args, None
    at = args.index("--wait-seconds")
    try:
        seconds = float(args[at + 1])
    except (IndexError, ValueError):
        seconds = -1.0
    if not seconds >= 0:  # NaN too
        raise ValueError("--wait-seconds needs a number of seconds, 0 or more")
    return args[:at] + args[at + 2:], seconds


def raise_on_sigterm() -> None:
    """From now on SIGTERM raises :class:`Terminated` in this process (call from the main thread).

    A process forked later (a worker of a process pool) inherits the handler; there it
    exits at once instead, as SIGTERM's default would, and its parent does the cleanup.
    """
    parent = os.getpid()

    def terminate(signum: int, frame) -> None:
        if os.getpid() != parent:
            os._exit(128 + signum)
        raise Terminated(f"stopped by {signal.Signals(signum).name}")

    signal.signal(signal.SIGTERM, terminate)
