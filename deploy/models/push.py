"""Copy sealed models to the hosts that serve them: rsync over the inventory's SSH.

A host gets each model its inventory entry lists, at the revision the inventory's
``models:`` section names, into ``/var/lib/citadel/models/NAME/REVISION/`` (root only).
rsync sends only files whose size or time differ (a rekey sends one manifest, not the
weights) and keeps an interrupted file in a partial directory so the next push resumes
it. Only ciphertext, signatures and the manifest travel: nothing here is secret, but
hosts keep it root-only anyway. SSH is the deploy's own: the pinned host key, the
inventory's user, key and port, sudo on the host.

Threat: theft of model weights (nothing but ciphertext leaves the store).

Example::

    >>> push_models(site, Path("/srv/models"))                      # doctest: +SKIP
    {'gpu-01': ['llama-3-8b/r1: 2 file(s) sent']}
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import tempfile
from pathlib import Path

from citadel_runtime.layout import MODEL_STORE
from deploy.models import ModelError
from inventory.known_hosts import write_known_hosts

PARTIAL_DIR = ".citadel-partial"


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
        "-e", _ssh_command(site, host, known_hosts), f"--rsync-path={remote}",
        f"{source}/", f"{ssh.user}@{site.hosts[host].address}:{destination}/",
    ]


def sync_directory(site, host: str, source: Path, destination: str, known_hosts: Path) -> int:
    """rsync `source` to `destination` on `host` (root only); the number of files sent."""
    result = subprocess.run(rsync_argv(site, host, source, destination, known_hosts), capture_output=True, text=True)
    if result.returncode != 0:
        last = (result.stderr.strip().splitlines() or ["rsync failed"])[-1]
        raise ModelError(f"{last} (rsync exit {result.returncode})")
    return sum(1 for line in result.stdout.splitlines() if line.startswith("<f"))


def push_models(site, store: Path, hosts: list[str] | None = None, models: list[str] | None = None,
                progress=None) -> dict[str, list[str]]:
    """Push; returns {host: [what was done]}. Raises ModelError naming every host that failed."""
    if shutil.which("rsync") is None:
        raise ModelError("model push needs rsync on this machine (apt-get install rsync)", exit_code=1)
    progress = progress or (lambda text: None)
    plan = assignments(site, hosts, models)
    for host, chosen in plan.items():
        for model, revision in chosen:
            if not (store / model / revision / "manifest.json").is_file():
                raise ModelError(f"host {host} serves {model} revision {revision}, but {store}/{model}/{revision} "
                                 f"is not sealed: run `citadel model seal DIR --name {model} --revision {revision}`")
    done: dict[str, list[str]] = {}
    failed: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="citadel-push-") as scratch:
        known_hosts = write_known_hosts(site, list(plan), Path(scratch))  # the deploy's pinned keys
        for host, chosen in plan.items():
            for model, revision in chosen:
                progress(f"{host}: {model}/{revision}")
                try:
                    sent = sync_directory(site, host, store / model / revision, host_dir(model, revision), known_hosts)
                except ModelError as exc:
                    failed[host] = f"{model}/{revision}: {exc}"
                    break
                done.setdefault(host, []).append(f"{model}/{revision}: {sent} file(s) sent")
    if failed:
        detail = "; ".join(f"{h}: {why}" for h, why in sorted(failed.items()))
        raise ModelError(f"push failed on {', '.join(sorted(failed))} ({detail}); re-run `citadel model push` "
                         "to resume (files already sent are kept)", exit_code=1)
    return done
