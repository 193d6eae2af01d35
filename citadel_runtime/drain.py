"""Draining a model before its server stops: the marker, the keyguard's answer, the wait.

A model server about to stop (``citadel-vllm@MODEL``'s ``ExecStop=``) asks the keyguard to
send that model no new request, then waits until the keyguard reports none in flight for it,
so that vLLM stops with nothing half-answered. The protocol is two kinds of file in the
keyguard's runtime directory (``STATE_DIR``, its ``RuntimeDirectory=``):

- ``draining/MODEL``: the marker, written by this helper (as root) with a nonce. While it
  exists the keyguard answers the model's new requests with a 503 saying "draining" (the
  gateway then asks another replica) and leaves it out of ``GET /v1/models`` (the gateway's
  health check takes it out of rotation). ``release`` removes it at the server's next start.
- ``inflight.json``: the keyguard's report, rewritten within ``POLL_SECONDS`` of a change:
  its pid, the nonce of each marker it has seen, and the requests still in flight for each.

The wait ends once the keyguard has seen this marker's nonce (from then on it starts no
request for the model) and reports none in flight; or at once when no keyguard runs (no
directory, no report, a dead pid: nothing can be in flight through it). At its deadline it
fails, naming the model and what is still in flight, and systemd stops the server anyway.

The same module audits the units' settings (``audit keyguard|vllm``, for the catalog's
``keyguard-drains-on-stop`` and ``vllm-drains-before-stop``). Standard library only.

Example (as the vllm unit runs it; ``release`` at its start)::

    python3 -m citadel_runtime.drain wait tiny --deadline 60
    python3 -m citadel_runtime.drain release tiny

    >>> settled({"pid": 1, "draining": {"tiny": "n1"}, "inflight": {"tiny": 0}}, "tiny", "n1")
    >>> settled({"pid": 1, "draining": {"tiny": "n1"}, "inflight": {"tiny": 2}}, "tiny", "n1")
    '2 requests in flight'
"""

from __future__ import annotations

import argparse
import json
import os
import re
import secrets
import stat
import subprocess
import sys
import time

from citadel_runtime.layout import VLLM_CONF_DIR
from citadel_runtime.uds import MODEL_NAME

STATE_DIR = "/run/citadel-keyguard"  # the keyguard unit's RuntimeDirectory=
MARKERS = "draining"  # STATE_DIR/draining/MODEL
REPORT = "inflight.json"  # STATE_DIR/inflight.json
POLL_SECONDS = 0.2  # how often the keyguard looks for markers and this helper for the report
KEYGUARD_DRAIN_SECONDS = 60  # the keyguard's own drain on SIGTERM (--drain-seconds), under its TimeoutStopSec
MODEL_DRAIN_SECONDS = 60  # a model's drain before vLLM stops (wait --deadline), under vLLM's TimeoutStopSec
SYSTEMD_DEFAULT_STOP_SECONDS = 90  # DefaultTimeoutStopSec=, for a unit that sets none
MAX_REPORT = 64 << 10
KEYGUARD_UNIT = "citadel-keyguard.service"


# -- the keyguard's side -------------------------------------------------------------

def markers(state_dir: str) -> dict[str, str]:
    """The models asked to drain, each with its marker's nonce (empty when none or no directory)."""
    try:
        names = os.listdir(os.path.join(state_dir, MARKERS))
    except OSError:
        return {}
    found = {}
    for name in names:
        if not MODEL_NAME.fullmatch(name):
            continue  # a temporary file of `request`, or anything else: not a marker
        try:
            with open(os.path.join(state_dir, MARKERS, name), encoding="utf-8", errors="replace") as handle:
                found[name] = handle.read(128).strip()
        except OSError:
            continue  # removed meanwhile (released)
    return found


def prepare(state_dir: str) -> None:
    """Create the markers' directory (the keyguard, at start: it owns it)."""
    os.makedirs(os.path.join(state_dir, MARKERS), mode=0o755, exist_ok=True)


def write_report(state_dir: str, report: dict) -> None:
    """Replace the report whole (a reader never sees half of one)."""
    path = os.path.join(state_dir, REPORT)
    temporary = f"{path}.{os.getpid()}.tmp"
    with open(temporary, "w", encoding="utf-8") as handle:
        json.dump(report, handle)
    os.replace(temporary, path)


def remove_report(state_dir: str) -> None:
    try:
        os.unlink(os.path.join(state_dir, REPORT))
    except OSError:
        pass


# -- the model server's side ---------------------------------------------------------

def markers_directory(state_dir: str) -> int:
    """The markers' directory, opened without following a link: this side runs as root, and the
    keyguard's user could put a link to anywhere in its place."""
    return os.open(os.path.join(state_dir, MARKERS), os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW)


def request(state_dir: str, model: str) -> str:
    """Write `model`'s marker; its nonce. The file is made new (never through a link) and renamed
    into place, readable by the keyguard."""
    nonce = secrets.token_hex(8)
    temporary = f".{model}.{nonce}"
    directory = markers_directory(state_dir)
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644,
                             dir_fd=directory)
        try:
            os.fchmod(descriptor, 0o644)  # the unit's UMask= would take the keyguard's read away
            os.write(descriptor, nonce.encode())
        finally:
            os.close(descriptor)
        os.replace(temporary, model, src_dir_fd=directory, dst_dir_fd=directory)
    finally:
        os.close(directory)
    return nonce


def release(state_dir: str, model: str) -> bool:
    """Remove `model`'s marker (the server is starting again); whether there was one."""
    try:
        directory = markers_directory(state_dir)
    except FileNotFoundError:
        return False
    try:
        os.unlink(model, dir_fd=directory)
    except FileNotFoundError:
        return False
    finally:
        os.close(directory)
    return True


def read_report(state_dir: str) -> dict | None:
    """The keyguard's report, or None when there is none to read."""
    try:  # never through a link, never blocked on a FIFO: a file the keyguard's user could replace
        descriptor = os.open(os.path.join(state_dir, REPORT), os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(descriptor, "rb") as handle:
        if not stat.S_ISREG(os.fstat(descriptor).st_mode):
            return None
        data = handle.read(MAX_REPORT + 1)
    try:
        report = json.loads(data) if len(data) <= MAX_REPORT else None
    except ValueError:
        return None  # caught half-written (never: it is renamed into place), or not the keyguard's
    return report if isinstance(report, dict) else None


def alive(pid) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def settled(report: dict | None, model: str, nonce: str) -> str | None:
    """None when `model` is drained as far as this report says; else what is still awaited."""
    if report is None or not alive(report.get("pid")):
        return None  # no keyguard running: nothing is in flight through it
    if (report.get("draining") or {}).get(model) != nonce:
        return "the keyguard has not yet seen the marker"
    count = (report.get("inflight") or {}).get(model, 0)
    if isinstance(count, int) and count > 0:
        return f"{count} request{'s' if count != 1 else ''} in flight"
    return None


def wait(state_dir: str, model: str, deadline: float, poll: float = POLL_SECONDS) -> str | None:
    """Mark `model` draining and wait for it; None once drained, else why not at the deadline."""
    if not os.path.isdir(state_dir):
        return None  # no keyguard on this host, or never started: nothing to drain
    prepare(state_dir)  # a keyguard that has not yet made it (it will find the marker when it does)
    nonce = request(state_dir, model)
    end = time.monotonic() + deadline
    while True:
        waiting = settled(read_report(state_dir), model, nonce)
        if waiting is None or time.monotonic() >= end:
            return waiting
        time.sleep(poll)


# -- the audit of the units ----------------------------------------------------------

def seconds(value: str) -> float | None:
    """A systemd time span ("90", "90s", "1min 30s", "infinity") in seconds; None when unreadable."""
    value = value.strip()
    if value == "infinity":
        return float("inf")
    units = {"": 1, "s": 1, "sec": 1, "m": 60, "min": 60, "h": 3600, "hr": 3600, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)\s*([a-z]*)", value)
    if not parts or "".join(f"{n}{u}" for n, u in parts) != value.replace(" ", "") or any(u not in units for _, u in parts):
        return None
    return sum(float(n) * units[u] for n, u in parts)


def settings(unit_text: str) -> dict[str, list[str]]:
    """Each [Service] setting's values in effect, from `systemctl cat` (the unit, then its drop-ins):
    an empty assignment resets a list, a later one replaces a single value (the caller takes the last)."""
    found: dict[str, list[str]] = {}
    section = None
    for raw in unit_text.splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            section = line
        elif section == "[Service]" and "=" in line and not line.startswith(("#", ";")):
            key, _, value = line.partition("=")
            key, value = key.strip(), value.strip()
            found[key] = [] if not value else [*found.get(key, []), value]
    return found


def stop_seconds(found: dict[str, list[str]]) -> float | None:
    values = found.get("TimeoutStopSec") or found.get("TimeoutSec")
    return seconds(values[-1]) if values else SYSTEMD_DEFAULT_STOP_SECONDS


def option(command: str, name: str, default: float) -> float | None:
    match = re.search(rf"{name}[ =](\S+)", command)
    if not match:
        return default
    try:
        return float(match.group(1))
    except ValueError:
        return None


def audit_keyguard(unit_text: str) -> str | None:
    """None when the keyguard unit drains on stop within its stop timeout; else what is wrong."""
    found = settings(unit_text)
    start = " ".join(found.get("ExecStart") or [])
    if "citadel_runtime.keyguard" not in start:
        return "its ExecStart= does not run citadel_runtime.keyguard"
    drain, stop = option(start, "--drain-seconds", KEYGUARD_DRAIN_SECONDS), stop_seconds(found)
    if drain is None or stop is None:
        return f"unreadable --drain-seconds or TimeoutStopSec= (ExecStart={start[:120]}...)"
    if drain <= 0:
        return f"--drain-seconds {drain:g}: it stops without draining"
    if stop <= drain:
        return f"TimeoutStopSec= {stop:g} s is not above its drain deadline of {drain:g} s: systemd kills it mid-drain"
    return None


def audit_vllm(unit_text: str) -> str | None:
    """None when the vllm unit drains its model at the keyguard before stopping, and releases it at start."""
    found = settings(unit_text)
    stops = [c for c in found.get("ExecStop") or [] if "citadel_runtime.drain wait" in c]
    if not stops:
        return "no ExecStop= runs 'citadel_runtime.drain wait': the keyguard keeps sending it requests as it stops"
    if not any("citadel_runtime.drain release" in c for c in found.get("ExecStartPre") or []):
        return "no ExecStartPre= runs 'citadel_runtime.drain release': the model stays drained after a restart"
    drain, stop = option(stops[0], "--deadline", MODEL_DRAIN_SECONDS), stop_seconds(found)
    if drain is None or stop is None:
        return "unreadable --deadline or TimeoutStopSec="
    if stop <= drain:
        return f"TimeoutStopSec= {stop:g} s is not above its drain deadline of {drain:g} s"
    return None


def unit_text(unit: str) -> str:
    return subprocess.run(["systemctl", "cat", "--no-pager", unit], capture_output=True, text=True,
                          check=True, timeout=30).stdout


def audit(which: str) -> int:
    """Print each unit's verdict; 0 when all drain, 1 otherwise."""
    if which == "keyguard":
        units = [KEYGUARD_UNIT]
    else:
        names = os.listdir(VLLM_CONF_DIR) if os.path.isdir(VLLM_CONF_DIR) else []  # one MODEL.conf per model served
        units = sorted(f"citadel-vllm@{n[:-len('.conf')]}.service" for n in names if n.endswith(".conf"))
        if not units:
            print("no model server on this host")
    bad = 0
    for unit in units:
        try:
            problem = (audit_keyguard if which == "keyguard" else audit_vllm)(unit_text(unit))
        except (OSError, subprocess.SubprocessError) as exc:
            problem = f"cannot read it: {type(exc).__name__}"
        print(f"{unit}: {problem or 'drains before it stops'}")
        bad |= problem is not None
    return 1 if bad else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python3 -m citadel_runtime.drain", description=__doc__.split("\n\n")[0],
        epilog="Exit status: 0 drained (or no keyguard running), released, or audit passed; 1 the deadline "
               "passed with requests in flight (named), or the audit failed; 2 a usage error.")
    commands = parser.add_subparsers(dest="command", required=True)
    waiting = commands.add_parser("wait", help="mark MODEL draining and wait until the keyguard has none in flight")
    waiting.add_argument("model")
    waiting.add_argument("--deadline", type=float, default=MODEL_DRAIN_SECONDS,
                         help=f"give up after this many seconds (default {MODEL_DRAIN_SECONDS}; keep it under the "
                              "unit's TimeoutStopSec=)")
    releasing = commands.add_parser("release", help="remove MODEL's marker: the keyguard serves it again")
    releasing.add_argument("model")
    for sub in (waiting, releasing):
        sub.add_argument("--state-dir", default=STATE_DIR, help=f"the keyguard's runtime directory (default {STATE_DIR})")
    auditing = commands.add_parser("audit", help="check that the unit drains before it stops (for the catalog)")
    auditing.add_argument("unit", choices=("keyguard", "vllm"))
    args = parser.parse_args(argv)
    if getattr(args, "model", None) is not None and not MODEL_NAME.fullmatch(args.model):
        parser.error(f"model {args.model!r}: not a model name")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    if args.command == "audit":
        return audit(args.unit)
    if args.command == "release":
        released = release(args.state_dir, args.model)
        print(f"model {args.model}: {'released' if released else 'was not draining'}; the keyguard serves it once up")
        return 0
    started = time.monotonic()
    try:
        waiting = wait(args.state_dir, args.model, args.deadline)
    except OSError as exc:
        print(f"model {args.model}: cannot ask the keyguard to drain it ({type(exc).__name__}: {exc})", file=sys.stderr)
        return 1
    if waiting is not None:
        print(f"model {args.model}: not drained after {args.deadline:g} s: {waiting}; stopping it anyway",
              file=sys.stderr)
        return 1
    print(f"model {args.model}: drained in {time.monotonic() - started:.1f} s (no request in flight at the keyguard)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
