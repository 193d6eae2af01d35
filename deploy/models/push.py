"""Copy sealed models to the hosts that serve them: rsync over the inventory's SSH.

A host gets each model its inventory entry lists, at the revision the inventory's
``models:`` section names, into ``/var/lib/citadel/models/NAME/REVISION/`` (root only).
rsync sends only files whose size or time differ (a rekey sends one manifest, not the
weights) and keeps an interrupted file in a partial directory so the next push resumes
it. Hosts are pushed in parallel (at most ``PARALLEL_HOSTS`` at once); one host's
failure does not stop the others. Only ciphertext, signatures and the manifest travel:
nothing here is secret, but hosts keep it root-only anyway. SSH is the deploy's own: the pinned host key, the
inventory's user, key and port, sudo on the host.

Threat: theft of model weights (nothing but ciphertext leaves the store).

Example::

    >>> push_models(site, Path("/srv/models"))                      # doctest: +SKIP
    {'gpu-01': ['llama-3-8b/r1: 2 file(s) sent']}
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from citadel_runtime.layout import MODEL_STORE
from deploy.models import ModelError
from deploy.models.meter import ByteCallback
from inventory.known_hosts import write_known_hosts

PARTIAL_DIR = ".citadel-partial"
PARALLEL_HOSTS = 8  # rsyncs at once: enough to fill a controller's link, few enough for its disk and CPU

HostBytes = Callable[[str, int], None]
"""Called with a host and the bytes just sent to it."""


def host_dir(name: str, revision: str) -> str:
    return f"{MODEL_STORE}/{name}/{revision}"


def assignments(site, hosts: list[str] | None = None, models: list[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """{host: [(model, revision)]} for the hosts that serve models, filtered by `hosts`/`models`."""
    wanted = {}
    for name, entry in site.hosts.items():
        if hosts and name not in hosts:
            continue
        chosen = [(m, site.models[m].revision) for m in entry.models if not models or m in models]
        if chosen:
            wanted[name] = chosen
    for model in models or ():
        if model not in site.models:
            raise ModelError(f"model {model!r} is not declared under models: in the inventory")
    return wanted


def _ssh_command(site, host: str, known_hosts: Path) -> str:
    ssh = site.ssh_for(host)
    argv = ["ssh", "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=yes",
            "-o", f"UserKnownHostsFile={ssh.known_hosts or known_hosts}",
            "-o", f"ConnectTimeout={ssh.connect_timeout}", "-p", str(ssh.port)]
    if ssh.key:
        argv += ["-i", str(ssh.key)]
    return shlex.join(argv)


def rsync_argv(site, host: str, source: Path, destination: str, known_hosts: Path) -> list[str]:
    ssh = site.ssh_for(host)
    sudo = "sudo " if ssh.sudo else ""
    remote = f"{sudo}install -d -m 0700 {shlex.quote(destination)} && {sudo}rsync"
    return [
        "rsync", "--recursive", "--times", "--delete", "--delay-updates", f"--partial-dir={PARTIAL_DIR}",
        "--chmod=D0700,F0600", "--no-owner", "--no-group", "--itemize-changes", "--out-format=%i %n",
        "--info=progress2",
        "-e", _ssh_command(site, host, known_hosts), f"--rsync-path={remote}",
        f"{source}/", f"{ssh.user}@{site.hosts[host].address}:{destination}/",
    ]


def push_totals(store: Path, plan: dict[str, list[tuple[str, str]]]) -> dict[str, int]:
    """{host: bytes of the sealed revisions it gets}, as they are in the store: the size of each host's row."""
    return {host: sum(_tree_bytes(store / model / revision) for model, revision in chosen)
            for host, chosen in plan.items()}


def _tree_bytes(directory: Path) -> int:
    return sum(path.stat().st_size for path in directory.rglob("*") if path.is_file())


def run_rsync(argv: list[str], progress: ByteCallback | None = None) -> int:
    """Run rsync `argv` (itemized, ``--info=progress2``); the number of files sent.

    `progress` gets the bytes just sent as rsync reports them (its running total, a few
    times a second). Raises ModelError with rsync's last error line and exit code.
    """
    sent_files, reported = 0, 0
    with tempfile.TemporaryFile() as errors:  # a file, not a pipe: a chatty stderr cannot block rsync
        with subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=errors) as child:
            for line in _lines(child.stdout):
                if line.startswith(("<f", ">f")):  # sent to a host; received, in a local copy
                    sent_files += 1
                done = _PROGRESS.match(line)
                if done and progress is not None:
                    total = int(done.group(1).replace(",", ""))
                    if total > reported:
                        progress(total - reported)
                        reported = total
        if child.returncode != 0:
            errors.seek(0)
            last = (errors.read().decode(errors="replace").strip().splitlines() or ["rsync failed"])[-1]
            raise ModelError(f"{last} (rsync exit {child.returncode})")
    return sent_files


_PROGRESS = re.compile(r"^\s*([\d,]+)\s+\d+%")  # --info=progress2: "  35,000,000 100%  709.52MB/s ..."


def _lines(stream) -> Iterator[str]:
    """Lines of rsync's output, split on newlines and on the carriage returns of its progress."""
    pending = b""
    for block in iter(lambda: stream.read1(65536), b""):
        pending += block
        *complete, pending = re.split(rb"[\r\n]", pending)
        yield from (line.decode(errors="replace") for line in complete if line.strip())
    if pending.strip():
        yield pending.decode(errors="replace")


def sync_directory(site, host: str, source: Path, destination: str, known_hosts: Path,
                   progress: ByteCallback | None = None) -> int:
    """rsync `source` to `destination` on `host` (root only); the number of files sent."""
    return run_rsync(rsync_argv(site, host, source, destination, known_hosts), progress)


def push_models(site, store: Path, hosts: list[str] | None = None, models: list[str] | None = None,
                progress: HostBytes | None = None) -> dict[str, list[str]]:
    """Push to every host at once (at most PARALLEL_HOSTS); returns {host: [what was done]}.

    `progress(host, n)` gets the bytes just sent to `host`; once a host succeeds, its calls
    add up to its :func:`push_totals` entry (files already there count as sent). Raises
    ModelError naming every host that failed; the others are pushed all the same.
    """
    if shutil.which("rsync") is None:
        raise ModelError("model push needs rsync on this machine (apt-get install rsync)", exit_code=1)
    plan = checked_plan(site, store, hosts, models)
    totals = push_totals(store, plan)
    done: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="citadel-push-") as scratch:
        known_hosts = write_known_hosts(site, list(plan), Path(scratch))  # the deploy's pinned keys

        def push_host(host: str) -> None:
            meter = _HostMeter(host, totals[host], progress)
            for model, revision in plan[host]:
                try:
                    sent = sync_directory(site, host, store / model / revision, host_dir(model, revision),
                                          known_hosts, meter)
                except ModelError as exc:
                    failed[host] = f"{model}/{revision}: {exc}"
                    return
                done.setdefault(host, []).append(f"{model}/{revision}: {sent} file(s) sent")
            meter.finish()

        with ThreadPoolExecutor(min(PARALLEL_HOSTS, len(plan) or 1), thread_name_prefix="citadel-push") as pool:
            list(pool.map(push_host, plan))
    if failed:
        detail = "; ".join(f"{h}: {why}" for h, why in sorted(failed.items()))
        raise ModelError(f"push failed on {', '.join(sorted(failed))} ({detail}); re-run `citadel model push` "
                         "to resume (files already sent are kept)", exit_code=1)
    return {host: done[host] for host in plan if host in done}


class _HostMeter:
    """One host's byte reports, never past its total; `finish` counts the files rsync found already there."""

    def __init__(self, host: str, total: int, progress: HostBytes | None):
        self.host, self.total, self.progress, self.reported = host, total, progress, 0

    def __call__(self, sent: int) -> None:
        sent = min(sent, self.total - self.reported)
        if sent > 0 and self.progress is not None:
            self.reported += sent
            self.progress(self.host, sent)

    def finish(self) -> None:
        self(self.total - self.reported)


def checked_plan(site, store: Path, hosts: list[str] | None = None,
                 models: list[str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """:func:`assignments`, once every revision it names is sealed in `store` (else ModelError, exit 2)."""
    plan = assignments(site, hosts, models)
    for host, chosen in plan.items():
        for model, revision in chosen:
            if not (store / model / revision / "manifest.json").is_file():
                raise ModelError(f"host {host} serves {model} revision {revision}, but {store}/{model}/{revision} "
                                 f"is not sealed: run `citadel model seal DIR --name {model} --revision {revision}`")
    return plan
