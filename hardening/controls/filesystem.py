"""Files, filesystems, kernel modules, core dumps and swap (CIS Debian 12 sections 1.1, 1.5.3,
2.4, 3.2, 7.1; dev-sec linux-baseline os-02, os-03, os-06, os-10, os-13, os-14..16).

Everything here is data that two readers share: the controls below check it read-only, and
``roles/hardening/filesystem.py`` applies the very same tables (paths and modes, blocked
modules, configuration file contents, mount options), so the check and the fix cannot drift.

On a GPU inference host the stakes are specific: the model server's memory holds patient
prompts and the model weights, so core dumps and swap would copy both to disk; the model
store and Citadel's secrets must not be readable by any local account; and a host that
mounts a USB stick or an exotic filesystem image is a host where malware can arrive and
patient data can leave (threat model T9, T10).
"""

from __future__ import annotations

import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from hardening.checks import Check, Command, FileMode, ServiceState
from hardening.model import Control, References
from hardening.rows import Row, controls_of

ACCESS = ["164.312(a)(1)"]
INTEGRITY = ["164.312(c)(1)"]
AT_REST = ["164.312(a)(2)(iv)"]


def _q(value: str) -> str:
    return shlex.quote(value)


# ----------------------------------------------------------------------------------------
# Paths: mode (the most the check accepts and exactly what the role sets), owner, group.
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class PathPolicy(Row):
    """A file or directory with its owner, group and mode; the role sets exactly these."""

    path: str
    mode: str  # the most the check accepts, and exactly what the role sets
    owner: str = "root"
    group: str = "root"
    break_with: str
    hipaa: Sequence[str] = tuple(ACCESS)
    threats: Sequence[str] = ("T9", "T10")
    directory: bool = False
    # The check also accepts these groups (the role always sets `group`); "*": any group.
    groups: tuple[str, ...] = ()
    # Only fixed where it exists (the check passes when it is missing); else the role creates it.
    if_present: bool = False
    # Content the role writes when it creates the file (None: an existing file is only chmod-ed).
    content: str | None = None

    def make_check(self) -> Check:
        groups = None if "*" in self.groups else [self.group, *self.groups]
        return FileMode(path=self.path, max_mode=self.mode, owner=self.owner, group=groups, missing_ok=self.if_present)

    def make_break(self) -> str:
        return self.break_with


_ACCOUNTS_WHY = "Whoever can write the account databases can make themselves root; whoever can read the hashes can crack them offline."


def _cron_dir_why(path: str) -> str:
    return f"Every file in {path} runs as root; only root may add one or read what is scheduled."


PATHS: list[PathPolicy] = [
    PathPolicy(
        id="fs-passwd-permissions", path="/etc/passwd", mode="0644",
        title="/etc/passwd is owned by root and writable only by root",
        rationale="A writable /etc/passwd lets any local account (the model server's included) give itself uid 0. "
                  + _ACCOUNTS_WHY,
        severity="high", nist=["AC-3", "AC-6"], cis=["7.1.1"], devsec=["os-03"],
        break_with="chmod o+w /etc/passwd",
    ),
    PathPolicy(
        id="fs-passwd-backup-permissions", path="/etc/passwd-", mode="0644", if_present=True,
        title="The /etc/passwd- backup is owned by root and writable only by root",
        rationale="The backup is restored by tools and administrators; tampering with it is tampering with the "
                  "accounts.",
        severity="medium", nist=["AC-3", "AC-6"], cis=["7.1.2"],
        break_with="chmod o+w /etc/passwd-",
    ),
    PathPolicy(
        id="fs-group-permissions", path="/etc/group", mode="0644",
        title="/etc/group is owned by root and writable only by root",
        rationale="A writable /etc/group lets a local account join sudo or citadel-admins and take over the host.",
        severity="high", nist=["AC-3", "AC-6"], cis=["7.1.3"],
        break_with="chmod g+w /etc/group",
    ),
    PathPolicy(
        id="fs-group-backup-permissions", path="/etc/group-", mode="0644", if_present=True,
        title="The /etc/group- backup is owned by root and writable only by root",
        rationale="The backup is restored by tools and administrators; tampering with it is tampering with group "
                  "membership.",
        severity="medium", nist=["AC-3", "AC-6"], cis=["7.1.4"],
        break_with="chmod o+w /etc/group-",
    ),
    PathPolicy(
        id="fs-shadow-permissions", path="/etc/shadow", mode="0640", group="shadow", groups=("root",),
        title="/etc/shadow is readable only by root and the shadow group",
        rationale="Password hashes read by any local account (a compromised model server) can be cracked offline. "
                  + _ACCOUNTS_WHY,
        severity="high", nist=["AC-3", "AC-6", "IA-5"], cis=["7.1.5"], devsec=["os-02"],
        break_with="chmod o+r /etc/shadow",
    ),
    PathPolicy(
        id="fs-shadow-backup-permissions", path="/etc/shadow-", mode="0640", group="shadow", groups=("root",),
        if_present=True,
        title="The /etc/shadow- backup is readable only by root and the shadow group",
        rationale="The backup holds the same password hashes as /etc/shadow.",
        severity="high", nist=["AC-3", "IA-5"], cis=["7.1.6"],
        break_with="chmod o+r /etc/shadow-",
    ),
    PathPolicy(
        id="fs-gshadow-permissions", path="/etc/gshadow", mode="0640", group="shadow", groups=("root",),
        title="/etc/gshadow is readable only by root and the shadow group",
        rationale="Group password hashes and group administrators must not be readable or editable by local accounts.",
        severity="high", nist=["AC-3", "IA-5"], cis=["7.1.7"],
        break_with="chmod o+r /etc/gshadow",
    ),
    PathPolicy(
        id="fs-gshadow-backup-permissions", path="/etc/gshadow-", mode="0640", group="shadow", groups=("root",),
        if_present=True,
        title="The /etc/gshadow- backup is readable only by root and the shadow group",
        rationale="The backup holds the same group password hashes as /etc/gshadow.",
        severity="medium", nist=["AC-3", "IA-5"], cis=["7.1.8"],
        break_with="chmod o+r /etc/gshadow-",
    ),
    PathPolicy(
        id="fs-shells-permissions", path="/etc/shells", mode="0644",
        title="/etc/shells is owned by root and writable only by root",
        rationale="Adding a program to /etc/shells lets chsh and FTP-style daemons treat it as a login shell.",
        severity="low", nist=["CM-6"], cis=["7.1.9"], threats=["T9"],
        break_with="chmod g+w /etc/shells",
    ),
    PathPolicy(
        id="fs-opasswd-permissions", path="/etc/security/opasswd", mode="0600", if_present=True,
        title="Old password hashes (/etc/security/opasswd) are readable only by root",
        rationale="pam_pwhistory keeps previous password hashes there; they are as sensitive as /etc/shadow.",
        severity="medium", nist=["AC-3", "IA-5"], cis=["7.1.10"],
        break_with="chmod 0644 /etc/security/opasswd",
    ),
    # cron and at: only root schedules jobs; a scheduled job is how an intruder stays.
    PathPolicy(
        id="fs-crontab-permissions", path="/etc/crontab", mode="0600", if_present=True,
        title="/etc/crontab is readable and writable only by root",
        rationale="A writable system crontab runs anyone's command as root; a readable one tells an attacker what "
                  "runs when.",
        severity="high", nist=["AC-6", "CM-6"], cis=["2.4.1.2"], threats=["T9"], devsec=["os-13"],
        break_with="touch /etc/crontab && chmod 0644 /etc/crontab",
    ),
    PathPolicy(
        id="fs-cron-hourly-permissions", path="/etc/cron.hourly", mode="0700", directory=True, if_present=True,
        title="/etc/cron.hourly is accessible only by root", rationale=_cron_dir_why("/etc/cron.hourly"),
        severity="medium", nist=["AC-6", "CM-6"], cis=["2.4.1.3"], threats=["T9"], devsec=["os-13"],
        break_with="mkdir -p /etc/cron.hourly && chmod 0755 /etc/cron.hourly",
    ),
    PathPolicy(
        id="fs-cron-daily-permissions", path="/etc/cron.daily", mode="0700", directory=True, if_present=True,
        title="/etc/cron.daily is accessible only by root", rationale=_cron_dir_why("/etc/cron.daily"),
        severity="medium", nist=["AC-6", "CM-6"], cis=["2.4.1.4"], threats=["T9"], devsec=["os-13"],
        break_with="mkdir -p /etc/cron.daily && chmod 0755 /etc/cron.daily",
    ),
    PathPolicy(
        id="fs-cron-weekly-permissions", path="/etc/cron.weekly", mode="0700", directory=True, if_present=True,
        title="/etc/cron.weekly is accessible only by root", rationale=_cron_dir_why("/etc/cron.weekly"),
        severity="medium", nist=["AC-6", "CM-6"], cis=["2.4.1.5"], threats=["T9"], devsec=["os-13"],
        break_with="mkdir -p /etc/cron.weekly && chmod 0755 /etc/cron.weekly",
    ),
    PathPolicy(
        id="fs-cron-monthly-permissions", path="/etc/cron.monthly", mode="0700", directory=True, if_present=True,
        title="/etc/cron.monthly is accessible only by root", rationale=_cron_dir_why("/etc/cron.monthly"),
        severity="medium", nist=["AC-6", "CM-6"], cis=["2.4.1.6"], threats=["T9"], devsec=["os-13"],
        break_with="mkdir -p /etc/cron.monthly && chmod 0755 /etc/cron.monthly",
    ),
    PathPolicy(
        id="fs-cron-d-permissions", path="/etc/cron.d", mode="0700", directory=True, if_present=True,
        title="/etc/cron.d is accessible only by root", rationale=_cron_dir_why("/etc/cron.d"),
        severity="high", nist=["AC-6", "CM-6"], cis=["2.4.1.7"], threats=["T9"], devsec=["os-13"],
        break_with="mkdir -p /etc/cron.d && chmod 0755 /etc/cron.d",
    ),
    PathPolicy(
        id="fs-cron-allow", path="/etc/cron.allow", mode="0640", groups=("crontab",), content="root\n",
        title="Only users listed in /etc/cron.allow (root) may use crontab",
        rationale="With an allow list, a compromised service account cannot schedule itself to come back after a "
                  "restart.",
        severity="medium", nist=["AC-3", "CM-7"], cis=["2.4.1.8"], threats=["T9"],
        break_with="rm -f /etc/cron.allow",
    ),
    PathPolicy(
        id="fs-at-allow", path="/etc/at.allow", mode="0640", groups=("daemon",), content="root\n",
        title="Only users listed in /etc/at.allow (root) may use at",
        rationale="With an allow list, a compromised service account cannot schedule one-off commands with at.",
        severity="medium", nist=["AC-3", "CM-7"], cis=["2.4.2.1"], threats=["T9"],
        break_with="rm -f /etc/at.allow",
    ),
    # sudo: the lab's and the hospital's administrators rely on it; only its permissions here.
    PathPolicy(
        id="fs-sudoers-permissions", path="/etc/sudoers", mode="0440",
        title="/etc/sudoers is owned by root and read-only",
        rationale="Whoever can edit sudoers is root; whoever can read it learns which accounts to attack for root.",
        severity="high", nist=["AC-6", "CM-6"], threats=["T9"],  # CIS Debian 12: no such recommendation
        break_with="chmod 0644 /etc/sudoers",
    ),
    PathPolicy(
        id="fs-sudoers-dir-permissions", path="/etc/sudoers.d", mode="0750", directory=True,
        title="/etc/sudoers.d is accessible only by root",
        rationale="A file dropped into sudoers.d grants root; the directory must not be writable or listable by "
                  "others.",
        severity="high", nist=["AC-6", "CM-6"], threats=["T9"],  # CIS Debian 12: no such recommendation
        break_with="chmod 0755 /etc/sudoers.d",
    ),
    PathPolicy(
        id="fs-security-dir-permissions", path="/etc/security", mode="0755", directory=True,
        title="/etc/security (PAM limits, access, faillock) is writable only by root",
        rationale="PAM's policy files decide who may log in and with which limits (core dumps included).",
        severity="medium", nist=["AC-6", "CM-6"], threats=["T9"],  # CIS Debian 12: no such recommendation
        break_with="chmod o+w /etc/security",
    ),
    # Citadel's own directories.
    PathPolicy(
        id="fs-citadel-state-dir", path="/var/lib/citadel", mode="0750", directory=True, groups=("*",),
        title="Citadel's state and model store (/var/lib/citadel) is root-owned and not world-accessible",
        rationale="The model store holds the weights (an asset that can be stolen or poisoned) and state that decides "
                  "firewall and service behaviour; local accounts must neither read nor alter it.",
        severity="high", hipaa=ACCESS + INTEGRITY, nist=["AC-3", "AC-6", "SC-28"], owasp_llm=["LLM03", "LLM04"],
        threats=["T1", "T9", "T10"],
        break_with="chmod 0755 /var/lib/citadel",
    ),
    PathPolicy(
        id="fs-citadel-config-dir", path="/etc/citadel", mode="0755", directory=True,
        title="Citadel's configuration directory (/etc/citadel) is root-owned and writable only by root",
        rationale="Citadel keeps host records, CA bundles and service secrets there; a writable directory lets a local "
                  "account replace a CA or a key.",
        severity="high", hipaa=ACCESS + INTEGRITY, nist=["AC-3", "AC-6", "SC-12"], threats=["T9", "T10"],
        break_with="chmod o+w /etc/citadel",
    ),
]


@dataclass(frozen=True, kw_only=True)
class AbsentPath(Row):
    """A file that must not exist."""

    path: str

    def make_check(self) -> Check:
        path = self.path
        return Command(command=f"if [ -e {_q(path)} ]; then ls -l {_q(path)}; exit 1; fi; echo '{path} is absent'",
                       describe=f"{path} does not exist")

    def make_break(self) -> str:
        return f"touch {self.path}"


# Files that must not exist: with cron.allow/at.allow present, a deny list only confuses.
ABSENT: list[AbsentPath] = [
    AbsentPath(
        id="fs-cron-deny-absent", path="/etc/cron.deny",
        title="No /etc/cron.deny: cron access is an allow list",
        rationale="A deny list lets every account not named schedule jobs; Citadel keeps an allow list only.",
        severity="low", hipaa=ACCESS, nist=["AC-3"], cis=["2.4.1.8"], threats=["T9"],
    ),
    AbsentPath(
        id="fs-at-deny-absent", path="/etc/at.deny",
        title="No /etc/at.deny: at access is an allow list",
        rationale="A deny list lets every account not named schedule at jobs; Citadel keeps an allow list only.",
        severity="low", hipaa=ACCESS, nist=["AC-3"], cis=["2.4.2.1"], threats=["T9"],
    ),
]

# Nothing under Citadel's configuration may be writable by group or others.
CITADEL_CONFIG = "/etc/citadel"

# dev-sec's default SUID/SGID blacklist (os-06): programs that must not carry set-id bits.
SUID_BLACKLIST = [
    "/usr/bin/rcp", "/usr/bin/rlogin", "/usr/bin/rsh", "/usr/libexec/openssh/ssh-keysign",
    "/usr/lib/openssh/ssh-keysign", "/sbin/netreport", "/usr/sbin/usernetctl", "/usr/sbin/userisdnctl",
    "/usr/sbin/pppd", "/usr/bin/lockfile", "/usr/bin/mail-lock", "/usr/bin/mail-unlock", "/usr/bin/mail-touchlock",
    "/usr/bin/dotlockfile", "/usr/bin/arping", "/usr/sbin/arping", "/usr/sbin/uuidd", "/usr/bin/mtr",
    "/usr/lib/evolution/camel-lock-helper-1.2", "/usr/lib/pt_chown", "/usr/lib/eject/dmcrypt-get-device",
    "/usr/lib/mc/cons.saver",
]

# ----------------------------------------------------------------------------------------
# Kernel modules that modprobe must refuse: `install X /bin/false` and `blacklist X`.
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class BlockedModule(Row):
    """A kernel module the host never needs; the role writes it into its group's modprobe file."""

    module: str
    group: str  # which /etc/modprobe.d/citadel-<group>.conf holds it
    setting: str | None = None  # the site.settings flag that, when True, allows it
    hipaa: Sequence[str] = tuple(ACCESS)

    def make_check(self) -> Check:
        return _module_config_check(self.module)

    def make_break(self) -> str:
        return f"sed -i -E '/^(install|blacklist) {self.module}( |$)/d' {modprobe_file(self.group)}"


def _unneeded(what: str) -> str:
    return (f"{what}: kernel code the inference host never needs is attack surface an attacker can make the kernel "
            "load on demand (by mounting an image, plugging a device or opening a socket).")


_DMA_WHY = "whose DMA can read all memory (model weights, prompts)"
_PROTOCOL_BUGS = "a history of remotely reachable kernel bugs"

MODULES: list[BlockedModule] = [
    # Filesystems: mounting a crafted image makes the kernel parse it.
    BlockedModule(
        id="fs-module-cramfs-blocked", module="cramfs", group="filesystems",
        title="The cramfs kernel module cannot be loaded",
        rationale=_unneeded("A compressed read-only filesystem of embedded devices"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.1"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    BlockedModule(
        id="fs-module-freevxfs-blocked", module="freevxfs", group="filesystems",
        title="The freevxfs kernel module cannot be loaded",
        rationale=_unneeded("The Veritas filesystem, never used on these hosts"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.2"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    BlockedModule(
        id="fs-module-hfs-blocked", module="hfs", group="filesystems",
        title="The hfs kernel module cannot be loaded",
        rationale=_unneeded("Apple's legacy filesystem"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.3"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    BlockedModule(
        id="fs-module-hfsplus-blocked", module="hfsplus", group="filesystems",
        title="The hfsplus kernel module cannot be loaded",
        rationale=_unneeded("Apple's HFS+ filesystem"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.4"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    BlockedModule(
        id="fs-module-jffs2-blocked", module="jffs2", group="filesystems",
        title="The jffs2 kernel module cannot be loaded",
        rationale=_unneeded("A flash filesystem of embedded devices"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.5"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    BlockedModule(
        id="fs-module-squashfs-blocked", module="squashfs", group="filesystems",
        title="The squashfs kernel module cannot be loaded",
        rationale=_unneeded("Compressed images (snaps, live media); Citadel ships models as plain files"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.7"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    BlockedModule(
        id="fs-module-udf-blocked", module="udf", group="filesystems",
        title="The udf kernel module cannot be loaded",
        rationale=_unneeded("The optical-disc filesystem"),
        severity="medium", nist=["CM-7"], cis=["1.1.1.8"], threats=["T6", "T9"], devsec=["os-10"],
    ),
    # Devices: plugged in by whoever stands at the machine.
    BlockedModule(
        id="fs-module-usb-storage-blocked", module="usb-storage", group="devices", setting="usb_storage",
        title="The usb-storage kernel module cannot be loaded",
        rationale=_unneeded("USB mass storage: the easiest way to carry malware in and patient data out"),
        severity="high", nist=["CM-7", "MP-7", "SC-41"], cis=["1.1.1.9"], threats=["T9", "T10"],
    ),
    BlockedModule(
        id="fs-module-firewire-core-blocked", module="firewire-core", group="devices",
        title="The firewire-core kernel module cannot be loaded",
        rationale=_unneeded(f"FireWire, {_DMA_WHY}"),
        severity="high", nist=["CM-7", "MP-7", "SC-41"], threats=["T9", "T10"],
    ),
    BlockedModule(
        id="fs-module-thunderbolt-blocked", module="thunderbolt", group="devices",
        title="The thunderbolt kernel module cannot be loaded",
        rationale=_unneeded(f"Thunderbolt, {_DMA_WHY}"),
        severity="high", nist=["CM-7", "MP-7", "SC-41"], threats=["T9", "T10"],
    ),
    # Protocols: opening a socket of the family loads the module.
    BlockedModule(
        id="fs-module-dccp-blocked", module="dccp", group="protocols",
        title="The dccp kernel module cannot be loaded",
        rationale=_unneeded(f"The DCCP protocol, {_PROTOCOL_BUGS}"),
        severity="medium", nist=["CM-7", "SC-7"], cis=["3.2.1"], threats=["T6", "T9"],
    ),
    BlockedModule(
        id="fs-module-tipc-blocked", module="tipc", group="protocols",
        title="The tipc kernel module cannot be loaded",
        rationale=_unneeded(f"The TIPC cluster protocol, {_PROTOCOL_BUGS}"),
        severity="medium", nist=["CM-7", "SC-7"], cis=["3.2.2"], threats=["T6", "T9"],
    ),
    BlockedModule(
        id="fs-module-rds-blocked", module="rds", group="protocols",
        title="The rds kernel module cannot be loaded",
        rationale=_unneeded("The RDS protocol, a history of local privilege escalations"),
        severity="medium", nist=["CM-7", "SC-7"], cis=["3.2.3"], threats=["T6", "T9"],
    ),
    BlockedModule(
        id="fs-module-sctp-blocked", module="sctp", group="protocols",
        title="The sctp kernel module cannot be loaded",
        rationale=_unneeded("The SCTP protocol, unused by the serving stack"),
        severity="medium", nist=["CM-7", "SC-7"], cis=["3.2.4"], threats=["T6", "T9"],
    ),
]

MODPROBE_DIR = "/etc/modprobe.d"


def modprobe_file(group: str) -> str:
    return f"{MODPROBE_DIR}/citadel-{group}.conf"


def _module_regex(module: str) -> str:
    # modprobe treats '-' and '_' in module names alike.
    return "".join("[-_]" if ch in "-_" else ch for ch in module)


def _module_config_check(module: str) -> Command:
    m = _module_regex(module)
    lines = f"cat {MODPROBE_DIR}/*.conf /run/modprobe.d/*.conf /lib/modprobe.d/*.conf 2>/dev/null | grep -E '^[[:space:]]*(install|blacklist)[[:space:]]+{m}([[:space:]]|$)'"
    return Command(
        command=(
            f"c=$({lines}); printf '%s\\n' \"$c\"; "
            f"printf '%s\\n' \"$c\" | grep -qE '^[[:space:]]*install[[:space:]]+{m}[[:space:]]+/bin/(false|true)[[:space:]]*$' && "
            f"printf '%s\\n' \"$c\" | grep -qE '^[[:space:]]*blacklist[[:space:]]+{m}[[:space:]]*$'"
        ),
        describe=f"modprobe refuses {module} (install /bin/false and blacklist)",
    )


# ----------------------------------------------------------------------------------------
# Core dumps: off for every account (root included) and for systemd-coredump.
# ----------------------------------------------------------------------------------------

LIMITS_FILE = "/etc/security/limits.d/citadel-coredump.conf"
# pam_limits never applies '*' to root: root needs its own line.
LIMITS_CONTENT = "# Managed by Citadel: no core dumps (they would hold prompts and model weights).\n*    hard core 0\n*    soft core 0\nroot hard core 0\nroot soft core 0\n"
COREDUMP_FILE = "/etc/systemd/coredump.conf.d/citadel.conf"


@dataclass(frozen=True, kw_only=True)
class CoredumpSetting(Row):
    """A key of Citadel's systemd-coredump drop-in (COREDUMP_FILE), read back as systemd merges its files."""

    key: str
    value: str
    broken: str  # a value that keeps dumps again: the break test writes it into the drop-in
    hipaa: Sequence[str] = tuple(AT_REST)

    def make_check(self) -> Check:
        return _systemd_setting_check("systemd/coredump.conf", self.key, self.value)

    def make_break(self) -> str:
        return f"sed -i 's/^{self.key}=.*/{self.key}={self.broken}/' {COREDUMP_FILE}"


_COREDUMP_WHY = ("systemd-coredump would otherwise store compressed dumps of crashed services (the model server's "
                 "prompts and weights) under /var/lib/systemd/coredump.")

COREDUMP: list[CoredumpSetting] = [
    CoredumpSetting(
        id="fs-coredump-storage", key="Storage", value="none", broken="external",
        title="systemd-coredump keeps nothing (Storage=none)", rationale=_COREDUMP_WHY,
        severity="high", nist=["SC-28", "SC-4"], cis=["1.5.3"], owasp_llm=["LLM02"], threats=["T3", "T10"],
    ),
    CoredumpSetting(
        id="fs-coredump-processsizemax", key="ProcessSizeMax", value="0", broken="2G",
        title="systemd-coredump keeps nothing (ProcessSizeMax=0)", rationale=_COREDUMP_WHY,
        severity="high", nist=["SC-28", "SC-4"], cis=["1.5.3"], owasp_llm=["LLM02"], threats=["T3", "T10"],
    ),
]
# The drop-in the role writes holds exactly the rows' settings.
COREDUMP_SETTINGS = {row.key: row.value for row in COREDUMP}
SYSTEM_FILE = "/etc/systemd/system.conf.d/citadel-coredump.conf"
SYSTEM_SETTINGS = {"DefaultLimitCORE": "0"}


def systemd_dropin(section: str, settings: dict[str, str]) -> str:
    body = "".join(f"{key}={value}\n" for key, value in settings.items())
    return f"# Managed by Citadel (hardening/controls/filesystem.py).\n[{section}]\n{body}"


COREDUMP_CONTENT = systemd_dropin("Coredump", COREDUMP_SETTINGS)
SYSTEM_CONTENT = systemd_dropin("Manager", SYSTEM_SETTINGS)


def _systemd_setting_check(config: str, key: str, value: str, runtime: bool = False) -> Command:
    # systemd-analyze cat-config prints the main file and every drop-in in the order systemd
    # reads them: the last assignment wins.
    command = f"v=$(systemd-analyze cat-config {config} 2>/dev/null | grep -E '^[[:space:]]*{key}=' | tail -n 1); echo \"config: ${{v:-<unset>}}\"; [ \"$v\" = '{key}={value}' ]"
    if runtime:
        command += f" && r=$(systemctl show -p {key} --value); echo \"running manager: {key}=$r\"; [ \"$r\" = '{value}' ]"
    return Command(command=command, describe=f"{config}: {key}={value}")


_LIMITS_CHECK = (
    "c=$(cat /etc/security/limits.conf /etc/security/limits.d/*.conf 2>/dev/null "
    "| grep -E '^[[:space:]]*[^#[:space:]]+[[:space:]]+(hard|-)[[:space:]]+core[[:space:]]'); printf '%s\\n' \"$c\"; "
    "printf '%s\\n' \"$c\" | grep -qE '^[[:space:]]*\\*[[:space:]]+(hard|-)[[:space:]]+core[[:space:]]+0[[:space:]]*$' && "
    "printf '%s\\n' \"$c\" | grep -qE '^[[:space:]]*root[[:space:]]+(hard|-)[[:space:]]+core[[:space:]]+0[[:space:]]*$' && "
    "! printf '%s\\n' \"$c\" | grep -vqE '[[:space:]]0[[:space:]]*$'"
)

# ----------------------------------------------------------------------------------------
# Mounts: /tmp and /dev/shm with nodev,nosuid,noexec (fstab for boot, remount for now).
# ----------------------------------------------------------------------------------------

MOUNT_OPTIONS = ["nodev", "nosuid", "noexec"]
_OPTION_WHY = {
    "nodev": "device files created there would bypass /dev's permissions (raw disk or GPU memory access)",
    "nosuid": "a set-uid binary dropped there would run as its owner",
    "noexec": "a payload downloaded there by an exploited service could be run directly",
}


@dataclass(frozen=True, kw_only=True)
class FstabOption(Row):
    """A mount option that /etc/fstab gives a mount point, so that every boot mounts it so."""

    mountpoint: str
    option: str  # one of MOUNT_OPTIONS
    hipaa: Sequence[str] = tuple(ACCESS)

    def make_check(self) -> Check:
        return _fstab_option_check(self.mountpoint, self.option)

    def make_break(self) -> str:
        # sed's address is a regex delimited by '/': escape the mount point's slashes.
        escaped = self.mountpoint.replace("/", "\\/")
        return f"sed -i -E '/^[^#][^[:space:]]*[[:space:]]+{escaped}[[:space:]]/ s/,{self.option}//' /etc/fstab"


def _writable_by_all(mountpoint: str, option: str) -> str:
    return (f"{mountpoint} is writable by every account, the model server's included; with {option}, "
            f"{_OPTION_WHY[option]}.")


FSTAB_OPTIONS: list[FstabOption] = [
    FstabOption(
        id="fs-tmp-nodev", mountpoint="/tmp", option="nodev",
        title="/tmp is mounted nodev at boot (fstab)", rationale=_writable_by_all("/tmp", "nodev"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.1.2"], threats=["T6", "T9"], devsec=["os-16"],
    ),
    FstabOption(
        id="fs-tmp-nosuid", mountpoint="/tmp", option="nosuid",
        title="/tmp is mounted nosuid at boot (fstab)", rationale=_writable_by_all("/tmp", "nosuid"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.1.3"], threats=["T6", "T9"], devsec=["os-15"],
    ),
    FstabOption(
        id="fs-tmp-noexec", mountpoint="/tmp", option="noexec",
        title="/tmp is mounted noexec at boot (fstab)", rationale=_writable_by_all("/tmp", "noexec"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.1.4"], threats=["T6", "T9"], devsec=["os-14"],
    ),
    FstabOption(
        id="fs-shm-nodev", mountpoint="/dev/shm", option="nodev",
        title="/dev/shm is mounted nodev at boot (fstab)", rationale=_writable_by_all("/dev/shm", "nodev"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.2.2"], threats=["T6", "T9"], devsec=["os-16"],
    ),
    FstabOption(
        id="fs-shm-nosuid", mountpoint="/dev/shm", option="nosuid",
        title="/dev/shm is mounted nosuid at boot (fstab)", rationale=_writable_by_all("/dev/shm", "nosuid"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.2.3"], threats=["T6", "T9"], devsec=["os-15"],
    ),
    FstabOption(
        id="fs-shm-noexec", mountpoint="/dev/shm", option="noexec",
        title="/dev/shm is mounted noexec at boot (fstab)", rationale=_writable_by_all("/dev/shm", "noexec"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.2.4"], threats=["T6", "T9"], devsec=["os-14"],
    ),
]


@dataclass(frozen=True, kw_only=True)
class MountPolicy(Row):
    """A mount point that must be mounted now with all of MOUNT_OPTIONS (the fstab rows above cover boot)."""

    mountpoint: str
    # The fstab line the role adds when the mount point has none (else it amends the options).
    default_line: str
    hipaa: Sequence[str] = tuple(ACCESS)

    def make_check(self) -> Check:
        return _mounted_check(self.mountpoint)

    def make_break(self) -> str:
        return f"mount -o remount,exec {self.mountpoint}"


def _mounted_why(mountpoint: str) -> str:
    return (f"The boot-time entry only takes effect at the next mount; the running {mountpoint} must already refuse "
            "device files, set-uid programs and direct execution.")


MOUNTS: list[MountPolicy] = [
    MountPolicy(
        id="fs-tmp-mounted-options", mountpoint="/tmp",
        default_line="tmpfs /tmp tmpfs rw,nodev,nosuid,noexec,size=2G,mode=1777 0 0",
        title="/tmp is mounted now with nodev,nosuid,noexec", rationale=_mounted_why("/tmp"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.1.1", "1.1.2.1.2", "1.1.2.1.3", "1.1.2.1.4"],
        threats=["T6", "T9"], devsec=["os-14", "os-15", "os-16"],
    ),
    MountPolicy(
        id="fs-shm-mounted-options", mountpoint="/dev/shm",
        default_line="tmpfs /dev/shm tmpfs rw,nodev,nosuid,noexec,mode=1777 0 0",
        title="/dev/shm is mounted now with nodev,nosuid,noexec", rationale=_mounted_why("/dev/shm"),
        severity="medium", nist=["CM-6", "AC-6"], cis=["1.1.2.2.1", "1.1.2.2.2", "1.1.2.2.3", "1.1.2.2.4"],
        threats=["T6", "T9"], devsec=["os-14", "os-15", "os-16"],
    ),
]


def _fstab_option_check(mountpoint: str, option: str) -> Command:
    # The last non-comment fstab entry for the mount point must list the option.
    awk = f"awk '$1 !~ /^#/ && $2 == \"{mountpoint}\" {{ l = $0; o = $4 }} END {{ print (l == \"\" ? \"no fstab entry for {mountpoint}\" : l); n = split(o, a, \",\"); for (i = 1; i <= n; i++) if (a[i] == \"{option}\") exit 0; exit 1 }}' /etc/fstab"
    return Command(command=awk, describe=f"fstab mounts {mountpoint} with {option}")


def _mounted_check(mountpoint: str) -> Command:
    need = " ".join(MOUNT_OPTIONS)
    command = (
        f"o=$(findmnt -n -o OPTIONS --mountpoint {mountpoint} 2>/dev/null); "
        f"if [ -z \"$o\" ]; then echo '{mountpoint} is not a separate mount'; exit 1; fi; echo \"$o\"; "
        f"for w in {need}; do case \",$o,\" in *,$w,*) ;; *) exit 1;; esac; done"
    )
    return Command(command=command, describe=f"{mountpoint} is mounted with {','.join(MOUNT_OPTIONS)}")


# ----------------------------------------------------------------------------------------
# Swap: none active, none configured in fstab, swap.target masked (no generator can add one).
# ----------------------------------------------------------------------------------------

SWAP_TARGET_LINK = "/etc/systemd/system/swap.target"


# ----------------------------------------------------------------------------------------
# The controls.
# ----------------------------------------------------------------------------------------


def _loaded_modules_check() -> Command:
    names = "|".join(m.module.replace("-", "_") for m in MODULES)
    return Command(
        command=f"l=$(grep -oE '^({names}) ' /proc/modules); if [ -n \"$l\" ]; then echo loaded: $l; exit 1; fi; echo 'none loaded'",
        describe="no blocked kernel module is loaded",
    )


CONTROLS: list[Control] = [
    *controls_of(PATHS),
    *controls_of(ABSENT),
    Control(
        id="fs-citadel-config-not-writable",
        title="Nothing under /etc/citadel is writable by group or others",
        rationale="Service secrets, CA bundles and host records under /etc/citadel decide whom the host trusts; "
                  "a group- or world-writable file there lets a local account substitute its own.",
        severity="high",
        refs=References(hipaa=ACCESS + INTEGRITY, nist=["AC-3", "SC-12"], threats=["T9", "T10"], owasp_llm=["LLM02"]),
        check=Command(
            command=f"b=$(find {CITADEL_CONFIG} -xdev -mindepth 1 -maxdepth 4 ! -type l -perm /0022 -printf '%m %u:%g %p\\n' 2>/dev/null); "
                    f"if [ -n \"$b\" ]; then echo \"$b\"; exit 1; fi; echo 'nothing group- or world-writable'",
            describe=f"{CITADEL_CONFIG} has no group- or world-writable entry",
        ),
        remediation="hardening",
        break_with=f"chmod o+w {CITADEL_CONFIG}/host.json",
    ),
    Control(
        id="fs-suid-blacklist",
        title="No blacklisted program carries a set-uid or set-gid bit",
        rationale="Legacy set-id helpers (rsh, ssh-keysign, arping, lockfile tools) are unneeded paths to root "
                  "for an attacker who already runs code as the model server.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["AC-6", "CM-7"], cis=["7.1.13"], threats=["T6", "T9"], devsec=["os-06"]),
        check=Command(
            command="r=0; for p in " + " ".join(SUID_BLACKLIST) + "; do "
                    "if [ -e \"$p\" ] && [ -n \"$(find \"$p\" -maxdepth 0 -perm /6000 2>/dev/null)\" ]; then ls -l \"$p\"; r=1; fi; done; "
                    "[ $r = 0 ] && echo 'no set-id bit on any blacklisted program'; exit $r",
            describe="no blacklisted set-uid/set-gid program",
        ),
        remediation="hardening",
        break_with="chmod u+s /usr/lib/openssh/ssh-keysign",
    ),
    *controls_of(MODULES),
    Control(
        id="fs-modules-not-loaded",
        title="None of the blocked kernel modules is loaded",
        rationale="The modprobe configuration only stops future loads; a module loaded before hardening stays "
                  "reachable until it is removed.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["CM-7"], cis=["1.1.1.10"], threats=["T6", "T9"], devsec=["os-10"]),
        check=_loaded_modules_check(),
        remediation="hardening",
        scope="kernel",
        # hfs, not cramfs: Debian 12's kernel ships no cramfs module to load.
        break_with="modprobe --ignore-install hfs",
    ),
    Control(
        id="fs-core-dump-limits",
        title="Core dumps are limited to 0 bytes for every account, root included",
        rationale="A core dump of the model server holds patients' prompts, generated answers and the model weights, "
                  "written to disk where backups and other accounts can reach them.",
        severity="high",
        refs=References(hipaa=AT_REST + ACCESS, nist=["SC-28", "SC-4", "CM-6"], cis=["1.5.3"], owasp_llm=["LLM02"],
                        threats=["T3", "T10"]),
        check=Command(command=_LIMITS_CHECK, describe="pam_limits: hard core 0 for * and root, nothing higher"),
        remediation="hardening",
        break_with=f"sed -i 's/^\\* *hard core 0$/* hard core unlimited/' {LIMITS_FILE}",
    ),
    *controls_of(COREDUMP),
    Control(
        id="fs-core-default-limit",
        title="systemd starts every service with a core size limit of 0 (DefaultLimitCORE=0)",
        rationale="Services do not pass through PAM: without the manager's default, the model server could still dump core.",
        severity="high",
        refs=References(hipaa=AT_REST, nist=["SC-28", "SC-4"], cis=["1.5.3"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
        check=_systemd_setting_check("systemd/system.conf", "DefaultLimitCORE", "0", runtime=True),
        remediation="hardening",
        break_with=f"rm {SYSTEM_FILE}",
    ),
    Control(
        id="fs-swap-fstab",
        title="No swap is configured in /etc/fstab",
        rationale="Swapped-out pages of the model server (prompts, answers, weights) persist on disk after the "
                  "process ends and survive a reboot.",
        severity="high",
        refs=References(hipaa=AT_REST, nist=["SC-28", "SC-4"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
        check=Command(
            command="s=$(awk '$1 !~ /^#/ && $3 == \"swap\"' /etc/fstab); if [ -n \"$s\" ]; then echo \"$s\"; exit 1; fi; echo 'no swap entry'",
            describe="fstab has no swap entry",
        ),
        remediation="hardening",
        break_with="echo '/swapfile none swap sw 0 0' >> /etc/fstab",
    ),
    Control(
        id="fs-swap-target-masked",
        title="swap.target is masked, so no generator (GPT auto, zram) can activate swap at boot",
        rationale="systemd activates swap partitions it discovers even without an fstab entry; masking swap.target "
                  "keeps the model server's memory off disk on every boot.",
        severity="medium",
        refs=References(hipaa=AT_REST, nist=["SC-28", "SC-4"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
        check=ServiceState(unit="swap.target", enabled=False),
        remediation="hardening",
        break_with="systemctl unmask swap.target",
    ),
    Control(
        id="fs-swap-inactive",
        title="No swap space is active",
        rationale="Active swap can write the model server's memory (prompts, answers, weights) to disk at any moment.",
        severity="high",
        refs=References(hipaa=AT_REST, nist=["SC-28", "SC-4"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
        check=Command(
            command="s=$(tail -n +2 /proc/swaps); if [ -n \"$s\" ]; then echo \"$s\"; exit 1; fi; echo 'no active swap'",
            describe="/proc/swaps lists no swap",
        ),
        remediation="hardening",
        scope="kernel",
        break_with="dd if=/dev/zero of=/swap-break bs=1M count=64 status=none && chmod 600 /swap-break && mkswap -q /swap-break && swapon /swap-break",
    ),
    *controls_of(FSTAB_OPTIONS),
    *controls_of(MOUNTS),
]
