"""Check kinds of the kernel controls (``hardening/controls/kernel.py``), and the pure helpers
they share with the ``hardening`` role's kernel part (``roles/hardening/kernel.py``).

A kernel parameter is hardened only if both its running value (/proc/sys) and the value
the boot-time configuration leaves are accepted: the boot-time value is decided here, with
systemd-sysctl's precedence, from every sysctl.d file and /etc/sysctl.conf.

Example::

    >>> check = SysctlHardened(keys=["net.ipv4.ip_forward"], accepted=["0"])
    >>> evidence = "run net.ipv4.ip_forward=0\\n@file /etc/sysctl.d/60-citadel.conf\\nnet.ipv4.ip_forward = 0"
    >>> check.evaluate(evidence, 0).status
    'pass'
"""

from __future__ import annotations

import posixpath
import re
import shlex
from typing import Literal

from pydantic import Field

from hardening.checks.base import CheckKind, Verdict

# systemd-sysctl's directories, highest priority first: a file in an earlier directory
# masks a file of the same name in a later one; the surviving files apply in name order.
SYSCTL_DIRS = ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"]
# procps' `sysctl --system` reads it last (Debian also links it as /etc/sysctl.d/99-sysctl.conf).
SYSCTL_CONF = "/etc/sysctl.conf"


def proc_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def key_regex(keys: list[str]) -> str:
    """ERE matching an assignment of one of `keys` (dots or slashes, optional '-' prefix)."""
    alternatives = "|".join("[./]".join(re.escape(part) for part in k.split(".")) for k in keys)
    return rf"^[[:space:]]*-?[[:space:]]*({alternatives})[[:space:]]*="


def parse_assignment(line: str) -> tuple[str, str] | None:
    """`key = value` (or `-key=value`, or key/with/slashes) -> (dotted key, value)."""
    text = line.strip()
    if not text or text[0] in "#;" or "=" not in text:
        return None
    key, value = text.split("=", 1)
    key = key.strip().lstrip("-").strip().replace("/", ".")
    return key, " ".join(value.split())


def boot_values(files: list[tuple[str, list[str]]]) -> dict[str, tuple[str, str]]:
    """The value each key ends up with at boot, and the file that sets it.

    `files` is (path, assignment lines) for every existing file of the sysctl.d
    directories and /etc/sysctl.conf, in any order: precedence is decided here.
    """
    chosen: dict[str, tuple[int, str, list[str]]] = {}
    conf: list[tuple[str, list[str]]] = []
    for path, lines in files:
        if path == SYSCTL_CONF:
            conf.append((path, lines))
            continue
        directory, name = posixpath.split(path)
        if directory not in SYSCTL_DIRS or not name.endswith(".conf"):
            continue
        rank = SYSCTL_DIRS.index(directory)
        if name not in chosen or rank < chosen[name][0]:
            chosen[name] = (rank, path, lines)
    ordered = [(path, lines) for _, (_, path, lines) in sorted(chosen.items())] + conf
    values: dict[str, tuple[str, str]] = {}
    for path, lines in ordered:
        for line in lines:
            parsed = parse_assignment(line)
            if parsed:
                values[parsed[0]] = (parsed[1], path)
    return values


class SysctlHardened(CheckKind):
    """Kernel parameters whose running value AND boot-time value are among `accepted`.

    The snippet prints ``run key=value`` (or ``run key?`` for a key this kernel lacks) for
    each key, then ``@file path`` and that file's assignments of the keys for every sysctl.d
    file and /etc/sysctl.conf; precedence is judged in Python, never on the host.
    """

    kind: Literal["sysctl_hardened"] = "sysctl_hardened"
    keys: list[str] = Field(min_length=1)
    accepted: list[str] = Field(min_length=1)

    def script(self) -> str:
        running = "; ".join(
            f"if [ -r {proc_path(k)} ]; then echo \"run {k}=$(cat {proc_path(k)})\"; else echo 'run {k}?'; fi"
            for k in self.keys
        )
        globs = " ".join(f"{d}/*.conf" for d in SYSCTL_DIRS) + f" {SYSCTL_CONF}"
        regex = shlex.quote(key_regex(self.keys))
        files = (
            f"for f in {globs}; do [ -e \"$f\" ] || continue; echo \"@file $f\"; "
            f"[ -f \"$f\" ] && grep -E {regex} \"$f\"; done; true"
        )
        return f"{running}; {files}"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        running: dict[str, str | None] = {}
        files: list[tuple[str, list[str]]] = []
        for line in evidence.splitlines():
            if line.startswith("run "):
                body = line[4:]
                if "=" in body:
                    key, value = body.split("=", 1)
                    running[key] = " ".join(value.split())
                else:
                    running[body.rstrip("?")] = None
            elif line.startswith("@file "):
                files.append((line[6:].strip(), []))
            elif files:
                files[-1][1].append(line)
        missing = [k for k in self.keys if running.get(k, None) is None]
        if missing:
            return Verdict("notapplicable", f"{', '.join(missing)} does not exist on this kernel")
        boot = boot_values(files)
        want = " or ".join(self.accepted)
        problems, seen = [], []
        for key in self.keys:
            now = running[key]
            at_boot, source = boot.get(key, (None, None))
            if now not in self.accepted:
                problems.append(f"{key} = {now} now, expected {want}")
            if at_boot is None:
                problems.append(f"{key} is not set by the boot-time configuration")
            elif at_boot not in self.accepted:
                problems.append(f"{key} = {at_boot} at boot (set by {source}), expected {want}")
            seen.append(f"{key} = {now} (boot: {at_boot} from {source})")
        if problems:
            return Verdict("fail", "; ".join(problems))
        return Verdict("pass", "; ".join(seen))


KINDS = [SysctlHardened]
