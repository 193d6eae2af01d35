"""A live progress display for deploys: one bar per host, on stderr.

Rich refreshes only when told (no background thread): pyinfra runs its hosts in gevent
greenlets, and a refresh thread would race them for the terminal.
"""

from __future__ import annotations

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn


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

    def host_planned(self, host: str, operations: int) -> None:
        self.tasks[host] = self.progress.add_task(host, total=operations, note="")
        self.progress.refresh()

    def host_progress(self, host: str, ok: bool) -> None:
        task = self.tasks.get(host)
        if task is not None:
            self.progress.advance(task)
            if not ok:
                self.progress.update(task, note="[red]error")
            self.progress.refresh()
