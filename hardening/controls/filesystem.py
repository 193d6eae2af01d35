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
from dataclasses import dataclass, field

from hardening.checks import Command, FileContent, FileMode, ServiceState
from hardening.model import Control, References

ACCESS = ["164.312(a)(1)"]
INTEGRITY = ["164.312(c)(1)"]
AT_REST = ["164.312(a)(2)(iv)"]


def _q(value: str) -> str:
    return shlex.quote(value)


# ----------------------------------------------------------------------------------------
# Paths: mode (the most the check accepts and exactly what the role sets), owner, group.
# ----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class PathPolicy:
    id: str
    path: str
    mode: str
    owner: str
    group: str
    title: str
    rationale: str
    severity: str
    cis: list[str]
    nist: list[str]
    break_with: str
    hipaa: list[str] = field(default_factory=lambda: list(ACCESS))
    threats: list[str] = field(default_factory=lambda: ["T9", "T10"])
    devsec: list[str] = field(default_factory=list)
    owasp_llm: list[str] = field(default_factory=list)
    directory: bool = False
    # The check also accepts these groups (the role always sets `group`).
    groups: tuple[str, ...] = ()
    # Only fixed where it exists (the check passes when it is missing); else the role creates it.
    if_present: bool = False
    # Content the role writes when it creates the file (None: an existing file is only chmod-ed).
    content: str | None = None


_ACCOUNTS_WHY = "Whoever can write the account databases can make themselves root; whoever can read the hashes can crack them offline."

PATHS: list[PathPolicy] = [
    PathPolicy("fs-passwd-permissions", "/etc/passwd", "0644", "root", "root",
               "/etc/passwd is owned by root and writable only by root",
               "A writable /etc/passwd lets any local account (the model server's included) give itself uid 0. " + _ACCOUNTS_WHY,
               "high", ["7.1.1"], ["AC-3", "AC-6"], "chmod o+w /etc/passwd", devsec=["os-03"]),
    PathPolicy("fs-passwd-backup-permissions", "/etc/passwd-", "0644", "root", "root",
               "The /etc/passwd- backup is owned by root and writable only by root",
               "The backup is restored by tools and administrators; tampering with it is tampering with the accounts.",
               "medium", ["7.1.2"], ["AC-3", "AC-6"], "chmod o+w /etc/passwd-", if_present=True),
    PathPolicy("fs-group-permissions", "/etc/group", "0644", "root", "root",
               "/etc/group is owned by root and writable only by root",
               "A writable /etc/group lets a local account join sudo or citadel-admins and take over the host.",
               "high", ["7.1.3"], ["AC-3", "AC-6"], "chmod g+w /etc/group"),
    PathPolicy("fs-group-backup-permissions", "/etc/group-", "0644", "root", "root",
               "The /etc/group- backup is owned by root and writable only by root",
               "The backup is restored by tools and administrators; tampering with it is tampering with group membership.",
               "medium", ["7.1.4"], ["AC-3", "AC-6"], "chmod o+w /etc/group-", if_present=True),
    PathPolicy("fs-shadow-permissions", "/etc/shadow", "0640", "root", "shadow",
               "/etc/shadow is readable only by root and the shadow group",
               "Password hashes read by any local account (a compromised model server) can be cracked offline. " + _ACCOUNTS_WHY,
               "high", ["7.1.5"], ["AC-3", "AC-6", "IA-5"], "chmod o+r /etc/shadow", devsec=["os-02"], groups=("root",)),
    PathPolicy("fs-shadow-backup-permissions", "/etc/shadow-", "0640", "root", "shadow",
               "The /etc/shadow- backup is readable only by root and the shadow group",
               "The backup holds the same password hashes as /etc/shadow.",
               "high", ["7.1.6"], ["AC-3", "IA-5"], "chmod o+r /etc/shadow-", groups=("root",), if_present=True),
    PathPolicy("fs-gshadow-permissions", "/etc/gshadow", "0640", "root", "shadow",
               "/etc/gshadow is readable only by root and the shadow group",
               "Group password hashes and group administrators must not be readable or editable by local accounts.",
               "high", ["7.1.7"], ["AC-3", "IA-5"], "chmod o+r /etc/gshadow", groups=("root",)),
    PathPolicy("fs-gshadow-backup-permissions", "/etc/gshadow-", "0640", "root", "shadow",
               "The /etc/gshadow- backup is readable only by root and the shadow group",
               "The backup holds the same group password hashes as /etc/gshadow.",
               "medium", ["7.1.8"], ["AC-3", "IA-5"], "chmod o+r /etc/gshadow-", groups=("root",), if_present=True),
    PathPolicy("fs-shells-permissions", "/etc/shells", "0644", "root", "root",
               "/etc/shells is owned by root and writable only by root",
               "Adding a program to /etc/shells lets chsh and FTP-style daemons treat it as a login shell.",
               "low", ["7.1.9"], ["CM-6"], "chmod g+w /etc/shells", threats=["T9"]),
    PathPolicy("fs-opasswd-permissions", "/etc/security/opasswd", "0600", "root", "root",
               "Old password hashes (/etc/security/opasswd) are readable only by root",
               "pam_pwhistory keeps previous password hashes there; they are as sensitive as /etc/shadow.",
               "medium", ["7.1.10"], ["AC-3", "IA-5"], "chmod 0644 /etc/security/opasswd", if_present=True),
    # cron and at: only root schedules jobs; a scheduled job is how an intruder stays.
    PathPolicy("fs-crontab-permissions", "/etc/crontab", "0600", "root", "root",
               "/etc/crontab is readable and writable only by root",
               "A writable system crontab runs anyone's command as root; a readable one tells an attacker what runs when.",
               "high", ["2.4.1.2"], ["AC-6", "CM-6"], "touch /etc/crontab && chmod 0644 /etc/crontab",
               threats=["T9"], devsec=["os-13"], if_present=True),
    *[
        PathPolicy(f"fs-cron-{name}-permissions", f"/etc/cron.{name}", "0700", "root", "root",
                   f"/etc/cron.{name} is accessible only by root",
                   f"Every file in /etc/cron.{name} runs as root; only root may add one or read what is scheduled.",
                   "high" if name == "d" else "medium", [cis], ["AC-6", "CM-6"],
                   f"mkdir -p /etc/cron.{name} && chmod 0755 /etc/cron.{name}",
                   threats=["T9"], devsec=["os-13"], directory=True, if_present=True)
        for name, cis in (("hourly", "2.4.1.3"), ("daily", "2.4.1.4"), ("weekly", "2.4.1.5"),
                          ("monthly", "2.4.1.6"), ("d", "2.4.1.7"))
    ],
    PathPolicy("fs-cron-allow", "/etc/cron.allow", "0640", "root", "root",
               "Only users listed in /etc/cron.allow (root) may use crontab",
               "With an allow list, a compromised service account cannot schedule itself to come back after a restart.",
               "medium", ["2.4.1.8"], ["AC-3", "CM-7"], "rm -f /etc/cron.allow", threats=["T9"],
               groups=("crontab",), content="root\n"),
    PathPolicy("fs-at-allow", "/etc/at.allow", "0640", "root", "root",
               "Only users listed in /etc/at.allow (root) may use at",
               "With an allow list, a compromised service account cannot schedule one-off commands with at.",
               "medium", ["2.4.2.1"], ["AC-3", "CM-7"], "rm -f /etc/at.allow", threats=["T9"],
               groups=("daemon",), content="root\n"),
    # sudo: the lab's and the hospital's administrators rely on it; only its permissions here.
    PathPolicy("fs-sudoers-permissions", "/etc/sudoers", "0440", "root", "root",
               "/etc/sudoers is owned by root and read-only",
               "Whoever can edit sudoers is root; whoever can read it learns which accounts to attack for root.",
               "high", ["5.2"], ["AC-6", "CM-6"], "chmod 0644 /etc/sudoers", threats=["T9"]),
    PathPolicy("fs-sudoers-dir-permissions", "/etc/sudoers.d", "0750", "root", "root",
               "/etc/sudoers.d is accessible only by root",
               "A file dropped into sudoers.d grants root; the directory must not be writable or listable by others.",
               "high", ["5.2"], ["AC-6", "CM-6"], "chmod 0755 /etc/sudoers.d", threats=["T9"], directory=True),
    PathPolicy("fs-security-dir-permissions", "/etc/security", "0755", "root", "root",
               "/etc/security (PAM limits, access, faillock) is writable only by root",
               "PAM's policy files decide who may log in and with which limits (core dumps included).",
               "medium", ["5.3"], ["AC-6", "CM-6"], "chmod o+w /etc/security", threats=["T9"], directory=True),
    # Citadel's own directories.
    PathPolicy("fs-citadel-state-dir", "/var/lib/citadel", "0750", "root", "root",
               "Citadel's state and model store (/var/lib/citadel) is root-owned and not world-accessible",
               "The model store holds the weights (an asset that can be stolen or poisoned) and state that decides "
               "firewall and service behaviour; local accounts must neither read nor alter it.",
               "high", [], ["AC-3", "AC-6", "SC-28"], "chmod 0755 /var/lib/citadel",
               hipaa=ACCESS + INTEGRITY, threats=["T1", "T9", "T10"], owasp_llm=["LLM03", "LLM04"],
               directory=True, groups=("*",)),
    PathPolicy("fs-citadel-config-dir", "/etc/citadel", "0755", "root", "root",
               "Citadel's configuration directory (/etc/citadel) is root-owned and writable only by root",
               "Citadel keeps host records, CA bundles and service secrets there; a writable directory lets a local "
               "account replace a CA or a key.",
               "high", [], ["AC-3", "AC-6", "SC-12"], "chmod o+w /etc/citadel",
               hipaa=ACCESS + INTEGRITY, threats=["T9", "T10"], directory=True),
]

# Files that must not exist: with cron.allow/at.allow present, a deny list only confuses.
ABSENT = [
    ("fs-cron-deny-absent", "/etc/cron.deny", "2.4.1.8", "No /etc/cron.deny: cron access is an allow list",
     "A deny list lets every account not named schedule jobs; Citadel keeps an allow list only."),
    ("fs-at-deny-absent", "/etc/at.deny", "2.4.2.1", "No /etc/at.deny: at access is an allow list",
     "A deny list lets every account not named schedule at jobs; Citadel keeps an allow list only."),
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


@dataclass(frozen=True)
class BlockedModule:
    module: str
    group: str  # which /etc/modprobe.d/citadel-<group>.conf holds it
    cis: list[str]
    why: str
    devsec: list[str] = field(default_factory=list)
    setting: str | None = None  # the site.settings flag that, when True, allows it


MODULES: list[BlockedModule] = [
    BlockedModule("cramfs", "filesystems", ["1.1.1.1"], "a compressed read-only filesystem of embedded devices", ["os-10"]),
    BlockedModule("freevxfs", "filesystems", ["1.1.1.2"], "the Veritas filesystem, never used on these hosts", ["os-10"]),
    BlockedModule("hfs", "filesystems", ["1.1.1.3"], "Apple's legacy filesystem", ["os-10"]),
    BlockedModule("hfsplus", "filesystems", ["1.1.1.4"], "Apple's HFS+ filesystem", ["os-10"]),
    BlockedModule("jffs2", "filesystems", ["1.1.1.5"], "a flash filesystem of embedded devices", ["os-10"]),
    BlockedModule("squashfs", "filesystems", ["1.1.1.7"], "compressed images (snaps, live media); Citadel ships models as plain files", ["os-10"]),
    BlockedModule("udf", "filesystems", ["1.1.1.8"], "the optical-disc filesystem", ["os-10"]),
    BlockedModule("usb-storage", "devices", ["1.1.1.9"], "USB mass storage: the easiest way to carry malware in and patient data out",
                  setting="usb_storage"),
    BlockedModule("firewire-core", "devices", [], "FireWire, whose DMA can read all memory (model weights, prompts)"),
    BlockedModule("thunderbolt", "devices", [], "Thunderbolt, whose DMA can read all memory (model weights, prompts)"),
    BlockedModule("dccp", "protocols", ["3.2.1"], "the DCCP protocol, a history of remotely reachable kernel bugs"),
    BlockedModule("tipc", "protocols", ["3.2.2"], "the TIPC cluster protocol, a history of remotely reachable kernel bugs"),
    BlockedModule("rds", "protocols", ["3.2.3"], "the RDS protocol, a history of local privilege escalations"),
    BlockedModule("sctp", "protocols", ["3.2.4"], "the SCTP protocol, unused by the serving stack"),
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


def _module_break(mod: BlockedModule) -> str:
    return f"sed -i -E '/^(install|blacklist) {mod.module}( |$)/d' {modprobe_file(mod.group)}"


# ----------------------------------------------------------------------------------------
# Core dumps: off for every account (root included) and for systemd-coredump.
# ----------------------------------------------------------------------------------------

LIMITS_FILE = "/etc/security/limits.d/citadel-coredump.conf"
# pam_limits never applies '*' to root: root needs its own line.
LIMITS_CONTENT = "# Managed by Citadel: no core dumps (they would hold prompts and model weights).\n*    hard core 0\n*    soft core 0\nroot hard core 0\nroot soft core 0\n"
COREDUMP_FILE = "/etc/systemd/coredump.conf.d/citadel.conf"
COREDUMP_SETTINGS = {"Storage": "none", "ProcessSizeMax": "0"}
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


@dataclass(frozen=True)
class MountPolicy:
    key: str
    mountpoint: str
    # The fstab line the role adds when the mount point has none (else it amends the options).
    default_line: str
    cis: dict[str, str]  # option -> CIS section
    runtime_cis: str


MOUNTS = [
    MountPolicy("tmp", "/tmp", "tmpfs /tmp tmpfs rw,nodev,nosuid,noexec,size=2G,mode=1777 0 0",
                {"nodev": "1.1.2.1.2", "nosuid": "1.1.2.1.3", "noexec": "1.1.2.1.4"}, "1.1.2.1.1"),
    MountPolicy("shm", "/dev/shm", "tmpfs /dev/shm tmpfs rw,nodev,nosuid,noexec,mode=1777 0 0",
                {"nodev": "1.1.2.2.2", "nosuid": "1.1.2.2.3", "noexec": "1.1.2.2.4"}, "1.1.2.2.1"),
]
_MOUNT_DEVSEC = {"noexec": "os-14", "nosuid": "os-15", "nodev": "os-16"}
_OPTION_WHY = {
    "nodev": "device files created there would bypass /dev's permissions (raw disk or GPU memory access)",
    "nosuid": "a set-uid binary dropped there would run as its owner",
    "noexec": "a payload downloaded there by an exploited service could be run directly",
}


def _fstab_option_check(mount: MountPolicy, option: str) -> Command:
    # The last non-comment fstab entry for the mount point must list the option.
    awk = f"awk '$1 !~ /^#/ && $2 == \"{mount.mountpoint}\" {{ l = $0; o = $4 }} END {{ print (l == \"\" ? \"no fstab entry for {mount.mountpoint}\" : l); n = split(o, a, \",\"); for (i = 1; i <= n; i++) if (a[i] == \"{option}\") exit 0; exit 1 }}' /etc/fstab"
    return Command(command=awk, describe=f"fstab mounts {mount.mountpoint} with {option}")


def _mounted_check(mount: MountPolicy) -> Command:
    need = " ".join(MOUNT_OPTIONS)
    command = (
        f"o=$(findmnt -n -o OPTIONS --mountpoint {mount.mountpoint} 2>/dev/null); "
        f"if [ -z \"$o\" ]; then echo '{mount.mountpoint} is not a separate mount'; exit 1; fi; echo \"$o\"; "
        f"for w in {need}; do case \",$o,\" in *,$w,*) ;; *) exit 1;; esac; done"
    )
    return Command(command=command, describe=f"{mount.mountpoint} is mounted with {','.join(MOUNT_OPTIONS)}")


# ----------------------------------------------------------------------------------------
# Swap: none active, none configured in fstab, swap.target masked (no generator can add one).
# ----------------------------------------------------------------------------------------

SWAP_TARGET_LINK = "/etc/systemd/system/swap.target"


# ----------------------------------------------------------------------------------------
# The controls.
# ----------------------------------------------------------------------------------------


def _path_control(p: PathPolicy) -> Control:
    groups = None if "*" in p.groups else [p.group, *p.groups]
    return Control(
        id=p.id,
        title=p.title,
        rationale=p.rationale,
        severity=p.severity,
        refs=References(hipaa=p.hipaa, nist=p.nist, cis=p.cis, threats=p.threats, devsec=p.devsec, owasp_llm=p.owasp_llm),
        check=FileMode(path=p.path, max_mode=p.mode, owner=p.owner, group=groups, missing_ok=p.if_present),
        remediation="hardening",
        break_with=p.break_with,
    )


def _absent_control(cid: str, path: str, cis: str, title: str, rationale: str) -> Control:
    return Control(
        id=cid,
        title=title,
        rationale=rationale,
        severity="low",
        refs=References(hipaa=ACCESS, nist=["AC-3"], cis=[cis], threats=["T9"]),
        check=Command(command=f"if [ -e {_q(path)} ]; then ls -l {_q(path)}; exit 1; fi; echo '{path} is absent'",
                      describe=f"{path} does not exist"),
        remediation="hardening",
        break_with=f"touch {path}",
    )


def _module_control(mod: BlockedModule) -> Control:
    return Control(
        id=f"fs-module-{mod.module}-blocked",
        title=f"The {mod.module} kernel module cannot be loaded",
        rationale=f"{mod.why[0].upper()}{mod.why[1:]}: kernel code the inference host never needs is attack surface "
                  "an attacker can make the kernel load on demand (by mounting an image, plugging a device or opening a socket).",
        severity="high" if mod.group == "devices" else "medium",
        refs=References(
            hipaa=ACCESS,
            nist=["CM-7"] + (["MP-7", "SC-41"] if mod.group == "devices" else ["SC-7"] if mod.group == "protocols" else []),
            cis=mod.cis,
            threats=["T9", "T10"] if mod.group == "devices" else ["T6", "T9"],
            devsec=mod.devsec,
        ),
        check=_module_config_check(mod.module),
        remediation="hardening",
        break_with=_module_break(mod),
    )


def _loaded_modules_check() -> Command:
    names = "|".join(m.module.replace("-", "_") for m in MODULES)
    return Command(
        command=f"l=$(grep -oE '^({names}) ' /proc/modules); if [ -n \"$l\" ]; then echo loaded: $l; exit 1; fi; echo 'none loaded'",
        describe="no blocked kernel module is loaded",
    )


CONTROLS: list[Control] = [
    *[_path_control(p) for p in PATHS],
    *[_absent_control(*a) for a in ABSENT],
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
    *[_module_control(m) for m in MODULES],
    Control(
        id="fs-modules-not-loaded",
        title="None of the blocked kernel modules is loaded",
        rationale="The modprobe configuration only stops future loads; a module loaded before hardening stays "
                  "reachable until it is removed.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["CM-7"], cis=["1.1.1.10", "3.2"], threats=["T6", "T9"], devsec=["os-10"]),
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
    *[
        Control(
            id=f"fs-coredump-{key.lower()}",
            title=f"systemd-coredump keeps nothing ({key}={value})",
            rationale="systemd-coredump would otherwise store compressed dumps of crashed services (the model "
                      "server's prompts and weights) under /var/lib/systemd/coredump.",
            severity="high",
            refs=References(hipaa=AT_REST, nist=["SC-28", "SC-4"], cis=["1.5.3"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
            check=_systemd_setting_check("systemd/coredump.conf", key, value),
            remediation="hardening",
            break_with=f"sed -i 's/^{key}=.*/{key}={'external' if key == 'Storage' else '2G'}/' {COREDUMP_FILE}",
        )
        for key, value in COREDUMP_SETTINGS.items()
    ],
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
    *[
        Control(
            id=f"fs-{m.key}-{option}",
            title=f"{m.mountpoint} is mounted {option} at boot (fstab)",
            rationale=f"{m.mountpoint} is writable by every account, the model server's included; with {option}, "
                      f"{_OPTION_WHY[option]}.",
            severity="medium",
            refs=References(hipaa=ACCESS, nist=["CM-6", "AC-6"], cis=[m.cis[option]], threats=["T6", "T9"],
                            devsec=[_MOUNT_DEVSEC[option]]),
            check=_fstab_option_check(m, option),
            remediation="hardening",
            break_with=f"sed -i -E '/^[^#][^[:space:]]*[[:space:]]+{m.mountpoint.replace('/', chr(92) + '/')}[[:space:]]/ s/,{option}//' /etc/fstab",
        )
        for m in MOUNTS
        for option in MOUNT_OPTIONS
    ],
    *[
        Control(
            id=f"fs-{m.key}-mounted-options",
            title=f"{m.mountpoint} is mounted now with nodev,nosuid,noexec",
            rationale=f"The boot-time entry only takes effect at the next mount; the running {m.mountpoint} must "
                      "already refuse device files, set-uid programs and direct execution.",
            severity="medium",
            refs=References(hipaa=ACCESS, nist=["CM-6", "AC-6"], cis=[m.runtime_cis, *m.cis.values()], threats=["T6", "T9"],
                            devsec=["os-14", "os-15", "os-16"]),
            check=_mounted_check(m),
            remediation="hardening",
            break_with=f"mount -o remount,exec {m.mountpoint}",
        )
        for m in MOUNTS
    ],
]
