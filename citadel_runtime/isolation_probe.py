"""Active isolation monitoring: try to leave the model server's sandbox, and alert if it works.

Run by ``citadel-isolation-probe.timer`` (every minute by default) as root, it tries a TCP
connection to every probe target (the inventory's ``vllm.probe_targets`` and the Vault
server) in two places, each as the model server's user:

- ``host``: in the host's network namespace, so only the firewall's rule for that user
  (nftables ``meta skuid``) stands in the way;
- ``sandbox:MODEL``: inside each running ``citadel-vllm@MODEL`` service's own sandbox,
  its cgroup (systemd's IP filtering) and network namespace, as the service itself would.

A target counts as **reached** when the connection opens or the peer refuses it (a reset
came back: the packet got out). Anything else (no route, not permitted, timeout) is blocked.
Every run rewrites a Prometheus text file (``citadel_isolation_reachable``, 1 per reached
pair, and the run's time); a reached target is written to the journal at ALERT priority
and the run exits 1, so the unit fails visibly too. ``--check`` does the same attempts but
writes nothing and logs nothing: the audit's read-only check.

Threats: data exfiltration from a compromised model server; lateral movement from it.

Example::

    python3 -m citadel_runtime.isolation_probe            # the timer's run
    python3 -m citadel_runtime.isolation_probe --check    # the audit's, read-only
"""

from __future__ import annotations

import argparse
import ctypes
import errno
import glob
import json
import os
import pwd
import socket
import sys
import time

from citadel_runtime.layout import ISOLATION_PROBE_CONFIG

CLONE_NEWNET = 0x40000000
REACHED_ERRNOS = {errno.ECONNREFUSED}  # the peer answered with a reset
UNIT_GLOB = "citadel-vllm@*.service"


def _setns(path: str) -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    fd = os.open(path, os.O_RDONLY)
    try:
        if libc.setns(fd, CLONE_NEWNET) != 0:
            raise OSError(ctypes.get_errno(), f"setns {path}")
    finally:
        os.close(fd)


def attempt(target: str, timeout: float) -> str:
    """'reached: ...' or 'blocked: ...' for one TCP connection from this process."""
    host, _, port = target.rpartition(":")
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            return "reached: connected"
    except OSError as exc:
        code = exc.errno if exc.errno is not None else -1
        name = errno.errorcode.get(code, "timeout" if isinstance(exc, TimeoutError) else str(code))
        return f"{'reached' if code in REACHED_ERRNOS else 'blocked'}: {name}"


def in_child(user: str, target: str, timeout: float, pid: int | None) -> str:
    """Attempt from a forked child: into the service's cgroup and netns (if `pid`), then as `user`."""
    account = pwd.getpwnam(user)
    read, write = os.pipe()
    child = os.fork()
    if child == 0:
        os.close(read)
        try:
            if pid is not None:
                for line in open(f"/proc/{pid}/cgroup", encoding="utf-8"):
                    if line.startswith("0::"):
                        with open(f"/sys/fs/cgroup{line[3:].strip()}/cgroup.procs", "w") as procs:
                            procs.write(str(os.getpid()))
                _setns(f"/proc/{pid}/ns/net")
            os.setgroups([])
            os.setgid(account.pw_gid)
            os.setuid(account.pw_uid)
            result = attempt(target, timeout)
        except Exception as exc:  # noqa: BLE001 - any failure to get in is reported, never hidden
            result = f"error: {type(exc).__name__}: {exc}"
        os.write(write, result.encode()[:500])
        os._exit(0)
    os.close(write)
    chunks = []
    while chunk := os.read(read, 4096):
        chunks.append(chunk)
    os.close(read)
    os.waitpid(child, 0)
    return b"".join(chunks).decode(errors="replace") or "error: no answer from the probe's child"


def sandboxes() -> dict[str, int]:
    """{model: main PID} of every running citadel-vllm@ service (from systemd's cgroups)."""
    found = {}
    for path in glob.glob(f"/sys/fs/cgroup/system.slice/system-citadel\\x2dvllm.slice/{UNIT_GLOB}/cgroup.procs"):
        model = path.split("citadel-vllm@", 1)[1].split(".service", 1)[0]
        with open(path, encoding="utf-8") as handle:
            pids = [int(p) for p in handle.read().split()]
        if pids:
            found[model] = min(pids)
    return found


def run(config: dict, timeout: float) -> list[dict]:
    places: list[tuple[str, int | None]] = [("host", None)]
    places += [(f"sandbox:{model}", pid) for model, pid in sorted(sandboxes().items())]
    results = []
    for target in config["targets"]:
        for place, pid in places:
            outcome = in_child(config["user"], target, timeout, pid)
            results.append({"target": target, "place": place, "outcome": outcome})
    return results


def metrics(results: list[dict], now: float) -> str:
    lines = ["# HELP citadel_isolation_reachable 1 when the model server's user reached the target from there.",
             "# TYPE citadel_isolation_reachable gauge"]
    for r in results:
        reached = 1 if r["outcome"].startswith("reached") else 0
        lines.append(f'citadel_isolation_reachable{{target="{r["target"]}",place="{r["place"]}"}} {reached}')
    lines += ["# HELP citadel_isolation_probe_errors Attempts that could not be made.",
              "# TYPE citadel_isolation_probe_errors gauge",
              f"citadel_isolation_probe_errors {sum(r['outcome'].startswith('error') for r in results)}",
              "# HELP citadel_isolation_probe_last_run_seconds When the probe last ran (Unix time).",
              "# TYPE citadel_isolation_probe_last_run_seconds gauge",
              f"citadel_isolation_probe_last_run_seconds {now:.0f}"]
    return "\n".join(lines) + "\n"


def write_atomically(path: str, text: str) -> None:
    os.makedirs(os.path.dirname(path), mode=0o755, exist_ok=True)
    scratch = f"{path}.tmp"
    with open(scratch, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.chmod(scratch, 0o644)
    os.replace(scratch, path)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="citadel-isolation-probe", description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=ISOLATION_PROBE_CONFIG)
    parser.add_argument("--check", action="store_true", help="attempt only: no metrics, no alert (read-only)")
    parser.add_argument("--timeout", type=float, default=3.0)
    args = parser.parse_args(argv)
    with open(args.config, encoding="utf-8") as handle:
        config = json.load(handle)
    results = run(config, args.timeout)
    reached = [r for r in results if r["outcome"].startswith("reached")]
    errors = [r for r in results if r["outcome"].startswith("error")]
    if not args.check:
        write_atomically(config["metrics"], metrics(results, time.time()))
    for r in reached:
        # "<1>": the journal's ALERT priority (SyslogLevelPrefix), one line per breach.
        prefix = "" if args.check else "<1>"
        print(f"{prefix}ISOLATION BREACH: {config['user']} reached {r['target']} from {r['place']} ({r['outcome']})",
              flush=True)
    for r in errors:
        print(f"{'' if args.check else '<3>'}probe of {r['target']} from {r['place']} failed: {r['outcome']}",
              flush=True)
    places = sorted({r["place"] for r in results})
    if not reached and not errors:
        print(f"isolation holds: {len(config['targets'])} target(s) blocked from {', '.join(places)}", flush=True)
    return 1 if reached or errors else 0


if __name__ == "__main__":
    sys.exit(main())
