"""Kernel and network parameters from the kernel controls' own table.

Three steps, all idempotent:

1. /etc/sysctl.d/60-citadel.conf is written from ``hardening.controls.kernel.SETTINGS``
   (the boot-time configuration, on every host, containers included).
2. Assignments of the same keys in other files under /etc (/etc/sysctl.conf, which Debian
   reads last, and /etc/sysctl.d/*.conf) that would set a different value at boot are
   commented out. Package files under /usr/lib are never edited.
3. Running values that differ are set, in table order. In a container only network
   parameters (per network namespace) can be set; kernel ones are the parent's, so they are
   reported as written but not applied, never silently skipped and never an error.
"""

from __future__ import annotations

import io
import logging
import shlex

from pyinfra import host
from pyinfra.facts.server import Command
from pyinfra.operations import files, server

from hardening.controls.kernel import (
    SETTINGS,
    SYSCTL_CONF,
    SYSCTL_FILE,
    SysctlSetting,
    key_regex,
    parse_assignment,
    proc_path,
    sysctl_conf,
)

logger = logging.getLogger(__name__)

ALL_KEYS = [key for s in SETTINGS for key in s.keys]
ACCEPTED = {key: s.ok_values for s in SETTINGS for key in s.keys}


def in_container() -> str | None:
    """The container technology this host runs in, or None on a VM or bare metal."""
    kind = (host.get_fact(Command, command="systemd-detect-virt --container 2>/dev/null || true") or "").strip()
    return None if kind in ("", "none") else kind


def running_values() -> dict[str, str | None]:
    """Every managed key's running value (None: the key does not exist on this kernel)."""
    script = "; ".join(
        f"if [ -r {proc_path(k)} ]; then echo \"{k}=$(cat {proc_path(k)})\"; else echo '{k}?'; fi" for k in ALL_KEYS
    )
    output = host.get_fact(Command, command=script, _sudo=True) or ""
    values: dict[str, str | None] = {}
    for line in output.splitlines():
        if "=" in line:
            key, value = line.split("=", 1)
            values[key] = " ".join(value.split())
        else:
            values[line.rstrip("?")] = None
    return values


def conflicting_assignments(listing: str) -> dict[str, list[str]]:
    """From `path:line` grep output, the keys each file sets to a value the table rejects."""
    conflicts: dict[str, list[str]] = {}
    for line in listing.splitlines():
        path, _, text = line.partition(":")
        parsed = parse_assignment(text)
        if not parsed or parsed[0] not in ACCEPTED or path == SYSCTL_FILE:
            continue
        key, value = parsed
        if value not in ACCEPTED[key] and key not in conflicts.setdefault(path, []):
            conflicts[path].append(key)
    return {path: keys for path, keys in conflicts.items() if keys}


def comment_out_command(path: str, keys: list[str]) -> str:
    """sed that comments out every assignment of `keys` in `path` (following a symlink)."""
    pattern = "^(" + key_regex(keys)[1:] + ".*)$"
    script = "s," + pattern + ",# disabled by Citadel (see " + SYSCTL_FILE + "): \\1,"
    return f"sed -i --follow-symlinks -E {shlex.quote(script)} {shlex.quote(path)}"


def apply_command(settings: list[SysctlSetting], running: dict[str, str | None]) -> str:
    """One shell command setting, in table order, each existing key not at an accepted value.

    Each key is re-read just before it is written, because writing one can change another
    (turning IPv4 forwarding off resets conf.all.accept_redirects to 1).
    """
    steps = []
    for s in settings:
        accepted = "|".join(s.ok_values)
        for key in s.keys:
            if running.get(key) is None:
                continue
            steps.append(
                f"case \"$(cat {proc_path(key)})\" in {accepted}) ;; *) sysctl -q -w {key}={shlex.quote(s.value)} ;; esac"
            )
    return " && ".join(steps) if steps else "true"


def apply(site, entry) -> None:
    container = in_container()

    files.put(
        name=f"Kernel and network parameters at boot ({SYSCTL_FILE})",
        src=io.StringIO(sysctl_conf()),
        dest=SYSCTL_FILE,
        user="root",
        group="root",
        mode="0644",
    )

    # Later files (and /etc/sysctl.conf, read last) would undo Citadel's values at boot.
    regex = shlex.quote(key_regex(ALL_KEYS))
    listing = host.get_fact(
        Command,
        command=(
            f"for f in {SYSCTL_CONF} /etc/sysctl.d/*.conf; do [ -f \"$f\" ] || continue; r=$(readlink -f \"$f\"); "
            f"grep -E {regex} \"$r\" | sed \"s|^|$r:|\"; done | sort -u; true"
        ),
        _sudo=True,
    ) or ""
    for path, keys in sorted(conflicting_assignments(listing).items()):
        server.shell(
            name=f"Comment out {', '.join(keys)} in {path} (conflicts with {SYSCTL_FILE})",
            commands=[comment_out_command(path, keys)],
        )

    running = running_values()
    live = [s for s in SETTINGS if not (container and s.scope == "kernel")]
    unapplied = [s for s in SETTINGS if container and s.scope == "kernel"]
    wrong = [k for s in live for k in s.keys if running.get(k) is not None and running[k] not in s.ok_values]
    if wrong:
        server.shell(name=f"Set running kernel parameters ({', '.join(wrong)})", commands=[apply_command(live, running)])
    else:
        host.noop(f"running network{'' if container else ' and kernel'} parameters already hardened")
    if unapplied:
        differing = [
            f"{k}={running.get(k)}" for s in unapplied for k in s.keys
            if running.get(k) is not None and running[k] not in s.ok_values
        ]
        message = (
            f"kernel parameters written to {SYSCTL_FILE} but not applied: this host is a {container} container "
            f"and shares its parent's kernel ({len(unapplied)} settings"
            + (f"; the parent currently has {', '.join(differing)}" if differing else "")
            + ")"
        )
        host.noop(message)
        logger.warning("%s: %s", host.name, message)
