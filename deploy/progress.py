"""Live progress on stderr: one bar per host for deploys, byte bars for long model work.

Deploys: rich refreshes only when told (no background thread): pyinfra runs its hosts in
gevent greenlets, and a refresh thread would race them for the terminal. Each host's row
shows the operation it is on (and what that operation says, through :mod:`deploy.steps`);
lines about the whole deploy (the wheelhouse build) are printed above the bars.

Byte bars (seal, verify, push): bytes done of the total, rate and time left; nothing at
all with ``--json`` or when stderr is not a terminal (scripts and CI get the result only).

Example::

    >>> with byte_bars(err, enabled=not as_json) as bars:               # doctest: +SKIP
    ...     row = bars.add_task("sealing llama", total=seal_total(source))
    ...     seal_model(keys, root, source, "llama", "r1", progress=lambda n: bars.advance(row, n))
"""

from __future__ import annotations

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    DownloadColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

STEP_WIDTH = 60  # a host's current step is cut to this, so a row stays on one line


def byte_bars(console: Console, enabled: bool = True) -> Progress:
    """A Progress of byte bars on `console`; shows nothing unless `enabled` and a terminal."""
    return Progress(
        TextColumn("{task.description:<24}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        TextColumn("{task.fields[note]}"),
        console=console,
        disable=not (enabled and console.is_terminal),
    )


class RichDeployListener:
    def __init__(self, console: Console):
        self.console = console
        self.progress = Progress(
            SpinnerColumn(),
            TextColumn("{task.description:<24}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[note]}"),
            console=console,
            auto_refresh=False,
            transient=False,
        )
        self.tasks: dict[str, int] = {}
        self.failed: set[str] = set()
        self.stage_task = self.progress.add_task("starting", total=None, note="")

    def __enter__(self) -> RichDeployListener:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.update(self.stage_task, visible=False)
        self.progress.refresh()
        self.progress.stop()

    def stage(self, text: str) -> None:
        self.progress.update(self.stage_task, description=text)
        self.progress.refresh()

    def note(self, text: str) -> None:
        """A line about the whole deploy, printed above the bars."""
        self.progress.console.print(f"  {text}", markup=False, highlight=False)
        self.progress.refresh()

    def host_planned(self, host: str, operations: int) -> None:
        self.tasks[host] = self.progress.add_task(host, total=operations, note="")
        self.progress.refresh()

    def host_step(self, host: str, text: str) -> None:
        """What `host` is doing now: the operation's name, or what the operation said."""
        task = self.tasks.get(host)
        if task is not None:
            short = text if len(text) <= STEP_WIDTH else text[:STEP_WIDTH - 1] + "…"
            self.progress.update(task, note=self._error_mark(host) + escape(short))
            self.progress.refresh()

    def host_progress(self, host: str, ok: bool) -> None:
        task = self.tasks.get(host)
        if task is not None:
            self.progress.advance(task)
            if not ok:
                self.failed.add(host)
            self.progress.update(task, note=self._error_mark(host).strip())
            self.progress.refresh()

    def _error_mark(self, host: str) -> str:
        return "[red]error[/] " if host in self.failed else ""
