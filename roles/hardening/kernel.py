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
from pyinfra.operations import files, server

from hardening.checks.kernel import key_regex, parse_assignment, proc_path
from hardening.controls.kernel import SETTINGS, SYSCTL_FILE, SysctlSetting, sysctl_conf
from roles.facts import ContainerKind, SysctlAssignments, SysctlValues

logger = logging.getLogger(__name__)

ALL_KEYS = [key for s in SETTINGS for key in s.keys]
ACCEPTED = {key: s.ok_values for s in SETTINGS for key in s.keys}
CONTROL_OF = {key: s.id for s in SETTINGS for key in s.keys}


def control_ids(keys: list[str]) -> str:
    """The ids of the controls that `keys` belong to, for an operation's name (each once, in order)."""
    return ", ".join(dict.fromkeys(CONTROL_OF[key] for key in keys))


def conflicting_assignments(assignments: list[tuple[str, str]]) -> dict[str, list[str]]:
    """From (path, line) pairs (the SysctlAssignments fact), the keys each file sets to a value the table rejects."""
    conflicts: dict[str, list[str]] = {}
    for path, text in assignments:
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
    container = host.get_fact(ContainerKind)

    # One file for the whole table (hardening.controls.kernel.SETTINGS): it fixes the boot-time half of every
    # kern-* control, so its name gives the id prefix and the table.
    files.put(
        name=f"kern-* (the sysctl table): kernel and network parameters at boot ({SYSCTL_FILE})",
        src=io.StringIO(sysctl_conf()),
        dest=SYSCTL_FILE,
        user="root",
        group="root",
        mode="0644",
    )

    # Later files (and /etc/sysctl.conf, read last) would undo Citadel's values at boot.
    assignments = host.get_fact(SysctlAssignments, keys=ALL_KEYS, _sudo=True)
    for path, keys in sorted(conflicting_assignments(assignments).items()):
        server.shell(
            name=f"{control_ids(keys)}: comment out {', '.join(keys)} in {path} (conflicts with {SYSCTL_FILE})",
            commands=[comment_out_command(path, keys)],
        )

    running = host.get_fact(SysctlValues, keys=ALL_KEYS, _sudo=True)
    live = [s for s in SETTINGS if not (container and s.scope() == "kernel")]
    unapplied = [s for s in SETTINGS if container and s.scope() == "kernel"]
    wrong = [k for s in live for k in s.keys if running.get(k) is not None and running[k] not in s.ok_values]
    if wrong:
        server.shell(name=f"{control_ids(wrong)}: set running kernel parameters ({', '.join(wrong)})",
                     commands=[apply_command(live, running)])
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
