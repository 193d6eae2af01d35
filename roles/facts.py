"""Citadel's pyinfra facts: what the roles read from a host before deciding what to change.

Each fact is a ``FactBase`` as pyinfra's own (``pyinfra.facts.server``, ``pyinfra.facts.files``):
``command`` takes the fact's arguments and returns the read-only shell it runs, ``process`` turns
the output lines into a typed value, and ``default`` is what an empty output means (the same
value ``process([])`` gives, so a host that prints nothing reads as it always did). Roles call
them like pyinfra's, global arguments included::

    from roles.facts import ContainerKind, UnitActive

    container = host.get_fact(ContainerKind)            # None on a VM or bare metal
    active = host.get_fact(UnitActive, unit="citadel-vllm@m.service")

Facts whose script is a catalog check's (``ControlFindings``, ``ControlVerdict``,
``ControlOutput``) take the control's id and run that check's own script: the role and the
audit read the same evidence, from one source.

Nothing here imports a role: roles import this module, and what a fact must know about a role
(paths, unit names, table rows) comes in as arguments.
"""

from __future__ import annotations

import base64
import binascii
import secrets
import shlex
from dataclasses import dataclass
from typing import NamedTuple

from pyinfra.api import FactBase

from hardening.audit_script import build_script, parse_output
from hardening.catalog import by_id, load_catalog
from hardening.checks import Verdict
from hardening.checks.kernel import SYSCTL_CONF, key_regex, proc_path
from hardening.checks.services import installed_packages
from hardening.model import Control

# ---------------------------------------------------------------------------- typed values


class Finding(NamedTuple):
    """A control that would not pass: its status and the offender lines its check printed."""

    status: str
    offenders: list[str]


class DeviceNode(NamedTuple):
    path: str
    mode: str  # octal digits, as stat prints them (660)
    user: str
    group: str


@dataclass(frozen=True)
class AgentStatus:
    active: bool  # systemctl is-active says "active"
    sink: str  # mode and owner of the token sink ("600 root:root"), or "missing"
    token_age: int | None  # seconds since the agent last wrote its token; None: no token


@dataclass(frozen=True)
class UnitMount:
    active: bool
    options: frozenset[str]  # the mount's options; empty when nothing is mounted there


@dataclass(frozen=True)
class RulesetHashes:
    live: str  # sha256 of the live ruleset (no counters); "" when nft printed nothing
    recorded: str  # the hash Citadel recorded after its last load; "" when none


@dataclass(frozen=True)
class VllmInstall:
    mark: str  # the wheelhouse key recorded in the virtualenv, "" when not installed
    current: str  # where the "current" link points, "" when absent
    python: str  # python3's version as "pythonX.Y", "" when there is no python3


def _text(output: list[str]) -> str:
    return "\n".join(output)


# ---------------------------------------------------------------------------- the catalog's checks


def _control(control_id: str) -> Control:
    return by_id(load_catalog())[control_id]


class ControlFindings(FactBase[dict[str, Finding]]):
    """
    Runs the given controls' read-only checks in one round trip, exactly as the audit does
    (``hardening.audit_script.build_script``), and returns, for each control that would not pass,
    a ``Finding`` (status, offender lines; no offenders for checks that do not name them).
    """

    def command(self, control_ids: list[str]) -> str:
        self.controls = [_control(i) for i in control_ids]
        self.nonce = secrets.token_hex(8)  # the section markers cannot be forged by what a check prints
        return build_script(self.controls, self.nonce)

    def default(self) -> dict[str, Finding]:
        return self.process([])

    def process(self, output: list[str]) -> dict[str, Finding]:
        sections = parse_output(output, self.nonce)
        findings = {}
        for control in self.controls:
            evidence, status = sections.get(control.id, ("", 1))
            verdict = control.check.evaluate(evidence, status)
            if verdict.status != "pass":
                offenders = control.check.offenders(evidence) if hasattr(control.check, "offenders") else []
                findings[control.id] = Finding(verdict.status, offenders)
        return findings


class ControlVerdict(FactBase[Verdict]):
    """
    Runs one control's check script (its exit status must be 0, as for any fact) and returns
    the check's verdict on what it printed.
    """

    def command(self, control_id: str) -> str:
        self.check = _control(control_id).check
        return self.check.script()

    def default(self) -> Verdict:
        return self.process([])

    def process(self, output: list[str]) -> Verdict:
        return self.check.evaluate(_text(output), 0)


class ControlOutput(FactBase[list[str]]):
    """
    Runs one control's check script and returns the lines it printed, blank ones left out:
    for checks that print one offender per line (a path, a name).
    """

    def command(self, control_id: str) -> str:
        return _control(control_id).check.script()

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return [line for line in output if line]


# ---------------------------------------------------------------------------- the host


class ContainerKind(FactBase[str | None]):
    """
    Returns the container technology the host runs in (``systemd-detect-virt --container``:
    "systemd-nspawn", "docker", ...), or ``None`` on a VM or bare metal.
    """

    def command(self) -> str:
        return "systemd-detect-virt --container 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        kind = _text(output).strip()
        return None if kind in ("", "none") else kind


class SshConnection(FactBase[str]):
    """
    Returns ``$SSH_CONNECTION`` of this deploy's own session ("client port server port"), or
    "" when the connector is not SSH. Read as the SSH user (``_sudo=False``): sudo drops it.
    """

    def command(self) -> str:
        return "echo ${SSH_CONNECTION:-}"

    @staticmethod
    def default() -> str:
        return ""

    def process(self, output: list[str]) -> str:
        return _text(output)


class AuthorizedKeysPresent(FactBase[bool]):
    """Returns whether ``user`` has a non-empty ``~/.ssh/authorized_keys`` (read with sudo)."""

    def command(self, user: str) -> str:
        return f"test -s ~{user}/.ssh/authorized_keys && echo yes || echo no"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return _text(output) == "yes"


# ---------------------------------------------------------------------------- files and packages


class GrepLines(FactBase[list[tuple[str, str]]]):
    """
    Returns the lines matching the extended regex ``pattern`` in the files and directories
    ``paths`` (recursively, ``grep -rsHnE``), as (path, line) pairs; lines containing the fixed
    string ``exclude`` are left out.
    """

    def command(self, pattern: str, paths: list[str], ignore_case: bool = False, exclude: str = "") -> str:
        flags = "-rsHnEi" if ignore_case else "-rsHnE"
        command = f"grep {flags} '{pattern}' {' '.join(paths)}"
        if exclude:
            command += f" | grep -vF '{exclude}'"
        return command + " || true"

    @staticmethod
    def default() -> list[tuple[str, str]]:
        return []

    def process(self, output: list[str]) -> list[tuple[str, str]]:
        return parse_grep_hits(_text(output))


def parse_grep_hits(output: str | None) -> list[tuple[str, str]]:
    """`grep -Hn` output as (path, line) pairs; other lines are ignored."""
    hits = []
    for raw in (output or "").splitlines():
        parts = raw.split(":", 2)
        if len(parts) == 3 and parts[1].isdigit():
            hits.append((parts[0], parts[2]))
    return hits


class FilesMatching(FactBase[list[str]]):
    """Returns the files among ``paths`` (a shell glob is expanded) that contain a line matching ``pattern``."""

    def command(self, pattern: str, paths: str) -> str:
        return f"grep -lsE '{pattern}' {paths} || true"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return _text(output).split()


class DirectoryEntries(FactBase[list[str]]):
    """Returns the names in directory ``path`` (``ls``; ``ls -A`` with hidden ones), empty when it does not exist."""

    def command(self, path: str, hidden: bool = False) -> str:
        return f"ls {'-A ' if hidden else ''}{path} 2>/dev/null || true"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return _text(output).split()


class InstalledPackages(FactBase[list[str]]):
    """
    Returns which of ``packages`` dpkg has even partly installed (half-installed and unpacked
    count, unlike pyinfra's ``DebPackages``: "ii" only); one ``dpkg-query`` for all of them.
    """

    def command(self, packages: list[str]) -> str:
        return f"dpkg-query -W -f='${{Package}} ${{Status}}\\n' {' '.join(packages)} 2>/dev/null; true"

    @staticmethod
    def default() -> list[str]:
        return []

    def process(self, output: list[str]) -> list[str]:
        return installed_packages(_text(output))


class CharacterDevices(FactBase[list[DeviceNode]]):
    """Returns the character devices matching the shell globs ``globs``, each with its mode, owner and group."""

    def command(self, globs: list[str]) -> str:
        return f"for f in {' '.join(globs)}; do [ -c \"$f\" ] && stat -c '%n %a %U %G' \"$f\"; done; true"

    @staticmethod
    def default() -> list[DeviceNode]:
        return []

    def process(self, output: list[str]) -> list[DeviceNode]:
        return [DeviceNode(*line.split()) for line in _text(output).splitlines() if len(line.split()) == 4]


class FilesystemState(FactBase[dict]):
    """
    Returns what the filesystem controls look at, in one round trip, as a dict: ``virt`` (the
    container, "none" on a VM), ``exists`` (which of ``optional_paths`` exist), ``setid`` (which of
    ``setid_paths`` have a set-id bit), ``fstab`` (its text; ``None`` when not decodable),
    ``loaded`` (which kernel ``modules`` are loaded), ``swaps`` (active swap areas), ``mount``
    (each of ``mountpoints`` with its current options, "" when not a mount), ``writable``
    (entries under ``config_dir`` that group or others may write) and ``initramfs``
    (``update-initramfs`` is installed).
    """

    def command(self, optional_paths: list[str], setid_paths: list[str], modules: list[str],
                mountpoints: list[str], config_dir: str) -> str:
        optional = " ".join(shlex.quote(p) for p in optional_paths)
        setid = " ".join(shlex.quote(p) for p in setid_paths)
        loaded = "|".join(m.replace("-", "_") for m in modules)  # /proc/modules spells them with "_"
        return "; ".join([
            'v=$(systemd-detect-virt --container 2>/dev/null); echo "virt ${v:-none}"',
            f'for p in {optional}; do [ -e "$p" ] && echo "exists $p"; done',
            f'for p in {setid}; do [ -e "$p" ] && [ -n "$(find "$p" -maxdepth 0 -perm /6000 2>/dev/null)" ] '
            '&& echo "setid $p"; done',
            'echo "fstab $(base64 -w0 /etc/fstab 2>/dev/null)"',
            f"grep -oE '^({loaded}) ' /proc/modules 2>/dev/null | sed 's/^/loaded /'",
            'echo "swaps $(tail -n +2 /proc/swaps 2>/dev/null | wc -l)"',
            f'for m in {" ".join(mountpoints)}; do '
            'echo "mount $m $(findmnt -n -o OPTIONS --mountpoint $m 2>/dev/null)"; done',
            f"find {config_dir} -xdev -mindepth 1 -maxdepth 4 ! -type l -perm /0022 "
            "-printf 'writable %p\\n' 2>/dev/null",
            'command -v update-initramfs >/dev/null 2>&1 && echo "initramfs yes"',
            "true",
        ])

    @staticmethod
    def default() -> dict:
        return {"virt": "none", "exists": set(), "setid": [], "fstab": "", "loaded": [], "swaps": 0,
                "mount": {}, "writable": [], "initramfs": False}

    def process(self, output: list[str]) -> dict:
        state = self.default()
        for line in _text(output).splitlines():
            key, _, value = line.partition(" ")
            if key == "virt":
                state["virt"] = value.strip() or "none"
            elif key == "exists":
                state["exists"].add(value)
            elif key in ("setid", "writable"):
                state[key].append(value)
            elif key == "loaded":
                state["loaded"].append(value.strip())
            elif key == "fstab":
                try:
                    state["fstab"] = base64.b64decode(value.strip()).decode()
                except (binascii.Error, UnicodeDecodeError):
                    state["fstab"] = None  # unreadable: leave the file alone
            elif key == "swaps":
                state["swaps"] = int(value.strip() or 0)
            elif key == "mount":
                mountpoint, _, options = value.partition(" ")
                state["mount"][mountpoint] = options.strip()
            elif key == "initramfs":
                state["initramfs"] = True
        return state


# ---------------------------------------------------------------------------- the kernel


class SysctlValues(FactBase[dict[str, str | None]]):
    """
    Returns the running value of each of the sysctl ``keys`` (read from /proc/sys, whitespace
    collapsed), or ``None`` for a key this kernel does not have.
    """

    def command(self, keys: list[str]) -> str:
        return "; ".join(
            f"if [ -r {proc_path(k)} ]; then echo \"{k}=$(cat {proc_path(k)})\"; else echo '{k}?'; fi" for k in keys
        )

    @staticmethod
    def default() -> dict[str, str | None]:
        return {}

    def process(self, output: list[str]) -> dict[str, str | None]:
        values: dict[str, str | None] = {}
        for line in _text(output).splitlines():
            if "=" in line:
                key, value = line.split("=", 1)
                values[key] = " ".join(value.split())
            else:
                values[line.rstrip("?")] = None
        return values


class SysctlAssignments(FactBase[list[tuple[str, str]]]):
    """
    Returns every line of /etc/sysctl.conf and /etc/sysctl.d/*.conf that assigns one of the
    sysctl ``keys``, as (real path of its file, line) pairs: symlinks resolved, sorted, each once.
    """

    def command(self, keys: list[str]) -> str:
        regex = shlex.quote(key_regex(keys))
        return (
            f"for f in {SYSCTL_CONF} /etc/sysctl.d/*.conf; do [ -f \"$f\" ] || continue; r=$(readlink -f \"$f\"); "
            f"grep -E {regex} \"$r\" | sed \"s|^|$r:|\"; done | sort -u; true"
        )

    @staticmethod
    def default() -> list[tuple[str, str]]:
        return []

    def process(self, output: list[str]) -> list[tuple[str, str]]:
        pairs = []
        for line in _text(output).splitlines():
            path, _, text = line.partition(":")
            pairs.append((path, text))
        return pairs


class AuditRulesLocked(FactBase[bool]):
    """Returns whether the kernel's audit rules are locked until reboot (``auditctl -s``: enabled 2)."""

    def requires_command(self) -> str:
        return "auditctl"

    def command(self) -> str:
        return "auditctl -s 2>/dev/null || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return "enabled 2" in _text(output)


class AppArmorComplaining(FactBase[str]):
    """
    Returns how many loaded AppArmor profiles complain instead of enforcing, as
    ``aa-status --complaining`` prints it ("0" when aa-status cannot tell, "" when it printed nothing).
    """

    def requires_command(self) -> str:
        return "aa-status"

    def command(self) -> str:
        return "aa-status --complaining 2>/dev/null || echo 0"

    @staticmethod
    def default() -> str:
        return ""

    def process(self, output: list[str]) -> str:
        return _text(output).strip()


# ---------------------------------------------------------------------------- services and mounts


class UnitActive(FactBase[bool]):
    """Returns whether systemd ``unit`` is active (``systemctl is-active``)."""

    def command(self, unit: str) -> str:
        return f"systemctl is-active {unit} || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return _text(output).strip() == "active"


class UnitMasked(FactBase[bool]):
    """Returns whether systemd ``unit`` is masked (``systemctl is-enabled``), so it cannot be enabled."""

    def command(self, unit: str) -> str:
        return f"systemctl is-enabled {unit} 2>/dev/null || true"

    @staticmethod
    def default() -> bool:
        return False

    def process(self, output: list[str]) -> bool:
        return _text(output).strip() == "masked"


class UnitAndMount(FactBase[UnitMount]):
    """Returns whether ``unit`` is active and the options of what is mounted at ``mountpoint``."""

    def command(self, unit: str, mountpoint: str) -> str:
        return f"systemctl is-active {unit} || true; findmnt -n -o OPTIONS --mountpoint {mountpoint} || echo unmounted"

    @staticmethod
    def default() -> UnitMount:
        return UnitMount(active=False, options=frozenset({""}))

    def process(self, output: list[str]) -> UnitMount:
        words = _text(output).split()
        return UnitMount(active=words[:1] == ["active"],
                         options=frozenset((words[1] if len(words) > 1 else "").split(",")))


class VaultAgentStatus(FactBase[AgentStatus]):
    """
    Returns the state of a Vault agent ``instance``: running, its token ``sink``'s mode and
    owner, and how long ago it last wrote a token there.
    """

    def command(self, instance: str, sink: str) -> str:
        return (
            f"systemctl is-active {instance} 2>/dev/null || true; "
            f"stat -c '%a %U:%G' {sink} 2>/dev/null || echo missing; "
            f"if [ -s {sink} ]; then echo $(( $(date +%s) - $(stat -c %Y {sink}) )); else echo none; fi"
        )

    @staticmethod
    def default() -> AgentStatus:
        return AgentStatus(active=False, sink="", token_age=None)

    def process(self, output: list[str]) -> AgentStatus:
        lines = [line.strip() for line in (_text(output).splitlines() + ["", "", ""])[:3]]
        return AgentStatus(active=lines[0] == "active", sink=lines[1],
                           token_age=int(lines[2]) if lines[2].isdigit() else None)


class StoreVolumeState(FactBase[dict[str, str]]):
    """
    Returns what the store volume's ``backing`` device or image holds and how it is used, as
    ``key=value`` pairs: ``backing`` (present/absent), blkid's ``TYPE``/``VERSION``/``PTTYPE``,
    ``open=yes`` when ``/dev/mapper/<mapper>`` exists, ``mount`` (source and options at
    ``mountpoint``), ``mode`` (of ``mountpoint``: "700 root") and ``wrapped=yes`` when the
    ``wrapped_key`` file is not empty. Values may be empty.
    """

    def command(self, backing: str, mapper: str, mountpoint: str, wrapped_key: str) -> str:
        q = shlex.quote(backing)
        return (
            f"if [ -e {q} ]; then echo backing=present; blkid -p -o export {q} 2>/dev/null | "
            "grep -E '^(TYPE|VERSION|PTTYPE)='; "
            "else echo backing=absent; fi; "
            f"[ -b /dev/mapper/{mapper} ] && echo open=yes; "
            f"echo mount=$(findmnt -n -o SOURCE,OPTIONS --mountpoint {mountpoint} 2>/dev/null); "
            f"echo mode=$(stat -c '%a %U' {mountpoint} 2>/dev/null); "
            f"[ -s {wrapped_key} ] && echo wrapped=yes; true"
        )

    @staticmethod
    def default() -> dict[str, str]:
        return {}

    def process(self, output: list[str]) -> dict[str, str]:
        return dict(line.split("=", 1) for line in _text(output).splitlines() if "=" in line)


# ---------------------------------------------------------------------------- Citadel's own state


# The live ruleset's hash: `-s` leaves counters out, which change with every packet.
LIVE_RULESET_HASH = "nft -s list ruleset | sha256sum | cut -d' ' -f1"


class NftablesHashes(FactBase[RulesetHashes]):
    """Returns the hash of the live nftables ruleset and the one recorded in file ``record`` after the last load."""

    def command(self, record: str) -> str:
        return f"{LIVE_RULESET_HASH}; cat {record} 2>/dev/null || true"

    @staticmethod
    def default() -> RulesetHashes:
        return RulesetHashes(live="", recorded="")

    def process(self, output: list[str]) -> RulesetHashes:
        live, _, recorded = _text(output).partition("\n")
        return RulesetHashes(live=live.strip(), recorded=recorded.strip())


class VllmInstalled(FactBase[VllmInstall]):
    """
    Returns the vLLM install on the host: the wheelhouse key recorded in file ``mark``, where
    the link ``current`` points, and python3's version ("python3.11").
    """

    def command(self, mark: str, current: str) -> str:
        return (
            f'echo "mark=$(cat {mark} 2>/dev/null)"; echo "current=$(readlink {current})"; '
            # Inside "$(...)" the quotes start afresh (POSIX), so python's own quotes need no escaping.
            "echo \"python=$(python3 -c 'import sys; print(\"python%d.%d\" % sys.version_info[:2])')\""
        )

    @staticmethod
    def default() -> VllmInstall:
        return VllmInstall(mark="", current="", python="")

    def process(self, output: list[str]) -> VllmInstall:
        values = dict(line.split("=", 1) for line in output if "=" in line)
        return VllmInstall(mark=values.get("mark", "").strip(), current=values.get("current", "").strip(),
                           python=values.get("python", "").strip())
