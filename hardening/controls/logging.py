"""Logging and auditing controls (CIS Debian 12 section 6.1-6.2, dev-sec os-11, package-07, package-08).

One set of tables, two readers, as for SSH: the controls below check them, and
``roles/hardening/logging.py`` writes the very same tables to the host.

- ``AUDITD_SETTINGS``: lines of /etc/audit/auditd.conf (what happens when the audit disk fills).
- ``AUDIT_RULE_GROUPS``: the audit rules of /etc/audit/rules.d/50-citadel.rules, one group per
  control, each with its own key (``-k``), so deleting one group fails exactly one control.
- ``JOURNALD_SETTINGS``: the [Journal] drop-in; ``RSYSLOG_DIRECTIVES``: the rsyslog drop-in.

Audit rule content and service enablement can be checked in a container; whether the rules
are loaded in the kernel, and whether auditd runs, cannot (scope="kernel").

This area's check kinds (``AuditRules``, ``AuditRulesLoaded``, ``JournaldOption``,
``RsyslogConfig``, ``ServiceIfInstalled``) live in ``hardening/checks/logging.py``.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence
from dataclasses import dataclass

from citadel_runtime.layout import MODEL_STORE
from hardening.checks import Check, Command, FileContent, FileMode, Package, ServiceState
from hardening.checks.logging import (
    AUDIT_COMPILED,
    AUDIT_RULES_DIR,
    AuditRules,
    AuditRulesLoaded,
    JournaldOption,
    RsyslogConfig,
    ServiceIfInstalled,
)
from hardening.model import Control, References
from hardening.rows import Row, controls_of

AUDIT = ["164.312(b)"]
INTEGRITY = ["164.312(b)", "164.312(c)(1)"]
AUDIT_NIST = ["AU-2", "AU-12"]

AUDIT_RULES_FILE = f"{AUDIT_RULES_DIR}/50-citadel.rules"
AUDITD_CONF = "/etc/audit/auditd.conf"
JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/50-citadel.conf"
# Last among the drop-ins, so its directives are the ones in force for rsyslog.conf's own rules.
RSYSLOG_DROPIN = "/etc/rsyslog.d/99-citadel.conf"
LOGROTATE_CONF = "/etc/logrotate.conf"
SECRET_DIRS = ["/etc/citadel", "/run/citadel"]


# ---------------------------------------------------------------------------------------------
# auditd.conf
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AuditdSetting(Row):
    """A line of auditd.conf: the role writes `value`, the check accepts any of `accepted`."""

    key: str
    value: str  # what the role writes
    accepted: tuple[str, ...]  # what the check accepts (case-insensitive)
    break_value: str
    hipaa: Sequence[str] = tuple(AUDIT)
    nist: Sequence[str] = ("AU-4", "AU-5", "AU-11")
    threats: Sequence[str] = ("T9", "T10")

    def make_check(self) -> Check:
        accepted = "|".join(re.escape(a) for a in self.accepted)
        return FileContent(path=AUDITD_CONF, pattern=rf"^\s*{self.key}\s*=\s*({accepted})\s*$", ignore_case=True)

    def make_break(self) -> str:
        return f"sed -i 's/^{self.key} *=.*/{self.key} = {self.break_value}/' {AUDITD_CONF}"


AUDITD_SETTINGS: list[AuditdSetting] = [
    AuditdSetting(
        id="log-auditd-keep-logs", key="max_log_file_action",
        value="keep_logs", accepted=("keep_logs",),
        title="auditd keeps full audit logs instead of rotating them away",
        rationale="ROTATE deletes the oldest audit log once num_logs is reached: the record of who touched patient "
                  "data on this inference host would silently vanish. HIPAA expects audit trails to be retained.",
        severity="high", cis=["6.2.2.2"], devsec=["package-08"], break_value="ROTATE",
    ),
    AuditdSetting(
        id="log-auditd-space-left-action", key="space_left_action",
        value="syslog", accepted=("syslog", "email", "exec", "single", "halt"),
        title="auditd warns when the audit disk runs low",
        rationale="Model weights and caches fill disks on GPU hosts; administrators must be warned (through syslog, "
                  "which is forwarded) before auditing stops.",
        severity="medium", cis=["6.2.2.4"], devsec=["package-08"], break_value="ignore",
    ),
    AuditdSetting(
        id="log-auditd-admin-space-left-action", key="admin_space_left_action",
        value="suspend", accepted=("suspend", "single", "halt"),
        title="auditd stops cleanly, never ignores, a critically full audit disk",
        rationale="IGNORE lets the host keep serving patient data with auditing silently broken. SUSPEND is chosen "
                  "over SINGLE/HALT so a full disk cannot take the clinical service and the operator's SSH access "
                  "down.",
        severity="medium", cis=["6.2.2.4"], devsec=["package-08"], break_value="ignore",
    ),
    AuditdSetting(
        id="log-auditd-disk-full-action", key="disk_full_action",
        value="suspend", accepted=("suspend", "single", "halt"),
        title="auditd never ignores a full audit disk",
        rationale="With IGNORE auditd drops records while the host keeps running: events on patient data go "
                  "unrecorded.",
        severity="medium", cis=["6.2.2.3"], devsec=["package-08"], break_value="ignore",
    ),
    AuditdSetting(
        id="log-auditd-disk-error-action", key="disk_error_action",
        value="suspend", accepted=("suspend", "single", "halt"),
        title="auditd never ignores audit disk errors",
        rationale="A failing audit disk must not be ignored silently; records written to it are the evidence of "
                  "access.",
        severity="medium", cis=["6.2.2.3"], devsec=["package-08"], break_value="ignore",
    ),
    AuditdSetting(
        id="log-auditd-flush", key="flush",
        value="incremental_async", accepted=("incremental", "incremental_async", "data", "sync"),
        title="auditd flushes audit records to disk regularly",
        rationale="With flush NONE, a crash or power cut (or an attacker's reboot) loses the records of the last "
                  "minutes.",
        severity="low", devsec=["package-08"], break_value="none",
    ),
]


def auditd_line(setting: AuditdSetting) -> str:
    return f"{setting.key} = {setting.value}"


# ---------------------------------------------------------------------------------------------
# Audit rules
# ---------------------------------------------------------------------------------------------

UID_FILTER = "-F auid>=1000 -F auid!=unset"


def _syscalls(syscalls: str, key: str, extra: str = UID_FILTER, arches=("b64", "b32")) -> list[str]:
    return [f"-a always,exit -F arch={a} -S {syscalls} {extra} -k {key}".replace("  ", " ") for a in arches]


def _watch(paths: list[str], key: str, perm: str = "wa") -> list[str]:
    return [f"-w {p} -p {perm} -k {key}" for p in paths]


def _exec(paths: list[str], key: str) -> list[str]:
    return [f"-a always,exit -F path={p} -F perm=x {UID_FILTER} -k {key}" for p in paths]


@dataclass(frozen=True, kw_only=True)
class RuleGroup(Row):
    """Audit rules under one key, checked in rules.d; the role writes every group to one file."""

    key: str  # unique per group: the break recipe deletes the group by its key
    rules: Sequence[str]
    hipaa: Sequence[str] = tuple(AUDIT)

    def make_check(self) -> Check:
        return AuditRules(mode="present", rules=list(self.rules), describe=self.title)

    def make_break(self) -> str:
        # Recompile so only the rules' presence is broken, not audit.rules' freshness.
        return f"sed -i '/ -k {self.key}$/d' {AUDIT_RULES_FILE} && augenrules"


# Setuid/setgid programs every Debian 12 host has (passwd, login, util-linux, sudo, libpam).
PRIVILEGED_PROGRAMS = [
    "/usr/bin/sudo", "/usr/bin/su", "/usr/bin/passwd", "/usr/bin/chsh", "/usr/bin/chfn", "/usr/bin/gpasswd",
    "/usr/bin/newgrp", "/usr/bin/mount", "/usr/bin/umount", "/usr/bin/chage", "/usr/bin/expiry",
    "/usr/sbin/unix_chkpwd",
]

AUDIT_RULE_GROUPS: list[RuleGroup] = [
    RuleGroup(
        id="log-audit-identity", key="identity",
        rules=_watch(["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/security/opasswd",
                      "/etc/nsswitch.conf", "/etc/pam.conf", "/etc/pam.d"], "identity"),
        title="Changes to accounts, groups, passwords and PAM are audited",
        rationale="A new account or a changed PAM stack is how an intruder keeps access to a host holding patient "
                  "data.",
        severity="high", nist=["AU-2", "AU-12", "AC-2(4)"], cis=["6.2.3.8"], threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-sudoers", key="scope",
        rules=_watch(["/etc/sudoers", "/etc/sudoers.d"], "scope"),
        title="Changes to sudo rights are audited",
        rationale="Whoever edits sudoers grants themselves root on the host that holds models and patient data.",
        severity="high", nist=["AU-2", "AU-12", "AC-6(9)"], cis=["6.2.3.1"], threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-user-emulation", key="user_emulation",
        rules=[f"-a always,exit -F arch={a} -C euid!=uid -F auid!=unset -S execve -k user_emulation"
               for a in ("b64", "b32")],
        title="Commands run as another user (sudo, su) are audited",
        rationale="Privileged actions must be attributable to the administrator who ran them (unique user "
                  "identification).",
        severity="high", nist=["AU-2", "AU-12", "AC-6(9)"], cis=["6.2.3.2"], threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-sudo-log", key="sudo_log_file",
        rules=_watch(["/var/log/sudo.log"], "sudo_log_file"),
        title="Changes to the sudo log are audited",
        rationale="Editing the sudo log is how an intruder hides what was done as root.",
        severity="medium", nist=["AU-9", "AU-12"], cis=["6.2.3.3"], threats=["T9"],
    ),
    RuleGroup(
        id="log-audit-time-change", key="time-change",
        rules=_syscalls("adjtimex,settimeofday", "time-change", extra="")
              + _syscalls("clock_settime", "time-change", extra="-F a0=0x0")
              + _watch(["/etc/localtime"], "time-change"),
        title="Changes to the system clock are audited",
        rationale="Audit records are only evidence if their timestamps can be trusted; moving the clock hides "
                  "events.",
        severity="medium", nist=["AU-8", "AU-12"], cis=["6.2.3.4"], threats=["T9"],
    ),
    RuleGroup(
        id="log-audit-network-env", key="system-locale",
        rules=_syscalls("sethostname,setdomainname", "system-locale", extra="")
              + _watch(["/etc/issue", "/etc/issue.net", "/etc/hosts", "/etc/hostname", "/etc/networks", "/etc/network"],
                       "system-locale"),
        title="Changes to host name, hosts file, network configuration and banners are audited",
        rationale="Redirecting the model gateway or the vault through /etc/hosts is a quiet way to intercept "
                  "patient data.",
        severity="medium", nist=["AU-2", "AU-12", "CM-6"], cis=["6.2.3.5"], threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-mac-policy", key="MAC-policy",
        rules=_watch(["/etc/apparmor", "/etc/apparmor.d"], "MAC-policy"),
        title="Changes to AppArmor policy are audited",
        rationale="AppArmor confines the model server; loosening its profile precedes remote code execution or data "
                  "theft.",
        severity="medium", nist=["AU-2", "AU-12", "AC-3(3)"], cis=["6.2.3.14"], threats=["T6", "T9"],
    ),
    RuleGroup(
        id="log-audit-perm-mod", key="perm_mod",
        rules=_syscalls("chmod,fchmod,fchmodat", "perm_mod")
              + _syscalls("chown,fchown,lchown,fchownat", "perm_mod")
              + _syscalls("setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr", "perm_mod"),
        title="Permission, ownership and extended attribute changes by users are audited",
        rationale="Opening up a model, key or patient-data file with chmod/chown is the first step of exfiltration.",
        severity="medium", nist=["AU-2", "AU-12"], cis=["6.2.3.9"], threats=["T3", "T10"], owasp_llm=["LLM02"],
    ),
    RuleGroup(
        id="log-audit-access-denied", key="access",
        rules=_syscalls("creat,open,openat,truncate,ftruncate", "access", extra=f"-F exit=-EACCES {UID_FILTER}")
              + _syscalls("creat,open,openat,truncate,ftruncate", "access", extra=f"-F exit=-EPERM {UID_FILTER}"),
        title="Denied file accesses by users are audited",
        rationale="Repeated denied opens show someone probing for patient data, model weights or secrets.",
        severity="medium", nist=["AU-2", "AU-12"], cis=["6.2.3.7"], threats=["T3", "T10"], owasp_llm=["LLM02"],
    ),
    RuleGroup(
        id="log-audit-mounts", key="mounts",
        rules=_syscalls("mount", "mounts"),
        title="File system mounts by users are audited",
        rationale="Mounting removable or network storage is how model weights and patient data leave the host.",
        severity="medium", nist=["AU-2", "AU-12"], cis=["6.2.3.10"], threats=["T3", "T10"],
    ),
    RuleGroup(
        id="log-audit-session", key="session",
        rules=_watch(["/var/run/utmp", "/var/log/wtmp", "/var/log/btmp"], "session"),
        title="Session records (utmp, wtmp, btmp) are audited",
        rationale="Who was logged in when patient data was accessed must not be erasable without a trace.",
        severity="medium", nist=["AU-2", "AU-12", "AU-14"], cis=["6.2.3.11"], threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-logins", key="logins",
        rules=_watch(["/var/log/lastlog", "/var/run/faillock"], "logins"),
        title="Login records and failed-login counters are audited",
        rationale="Resetting failed-login counters or last-login records hides password guessing against "
                  "administrators.",
        severity="medium", nist=["AU-2", "AU-12", "AC-7"], cis=["6.2.3.12"], threats=["T9"],
    ),
    RuleGroup(
        id="log-audit-delete", key="delete",
        rules=_syscalls("unlink,unlinkat,rename,renameat", "delete"),
        title="File deletions and renames by users are audited",
        rationale="Deleting logs, model files or exported patient data must leave a record of who did it.",
        severity="medium", nist=["AU-2", "AU-12"], cis=["6.2.3.13"], threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-modules", key="kernel_modules",
        rules=_syscalls("init_module,finit_module,delete_module", "kernel_modules", extra="")
              + _exec(["/usr/bin/kmod"], "kernel_modules"),
        title="Kernel module loading and unloading is audited",
        rationale="A malicious kernel module (or a tampered GPU driver) owns the host and every patient record on "
                  "it.",
        severity="high", nist=["AU-2", "AU-12", "CM-7"], cis=["6.2.3.19"], threats=["T6", "T8", "T9"],
    ),
    RuleGroup(
        id="log-audit-privileged", key="privileged",
        rules=_exec(PRIVILEGED_PROGRAMS, "privileged"),
        title="Use of setuid and setgid programs is audited",
        rationale="Setuid programs are the local paths to root; each use must be attributable to a person.",
        severity="medium", nist=["AU-2", "AU-12", "AC-6(9)"], cis=["6.2.3.6"], threats=["T9"],
    ),
    RuleGroup(
        id="log-audit-perm-commands", key="perm_chng",
        rules=_exec(["/usr/bin/chcon", "/usr/bin/setfacl", "/usr/bin/chacl", "/usr/sbin/usermod"], "perm_chng"),
        title="Use of chcon, setfacl, chacl and usermod is audited",
        rationale="ACLs and group membership changes grant access to data without touching the usual permission "
                  "bits.",
        severity="medium", nist=["AU-2", "AU-12"], cis=["6.2.3.15", "6.2.3.16", "6.2.3.17", "6.2.3.18"],
        threats=["T9", "T10"],
    ),
    RuleGroup(
        id="log-audit-sshd-config", key="sshd_config",
        rules=_watch(["/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d"], "sshd_config"),
        title="Changes to the SSH server configuration are audited",
        rationale="Re-enabling passwords or forwarding in sshd opens the host (and the clinical network behind it) "
                  "to attackers.",
        severity="medium", nist=["AU-2", "AU-12", "CM-6"], threats=["T9"],
    ),
    RuleGroup(
        id="log-audit-model-store", key="citadel-models",
        rules=_watch([MODEL_STORE], "citadel-models"),
        title="Changes to the sealed model store are audited",
        rationale="Replacing or altering model weights plants a backdoor or a poisoned model that gives false "
                  "clinical answers; every write to the store must be attributable.",
        severity="high", nist=["AU-2", "AU-12", "SI-7"], threats=["T1", "T2", "T8"],
        owasp_llm=["LLM03", "LLM04"],
    ),
    RuleGroup(
        id="log-audit-secrets", key="citadel-secrets",
        rules=_watch(SECRET_DIRS, "citadel-secrets", perm="rwa"),
        title="Every access to Citadel's configuration and secrets is audited",
        rationale="API keys and vault tokens unlock the model and the patient data behind it; reads are recorded "
                  "too.",
        severity="high", nist=["AU-2", "AU-12", "SC-28"], threats=["T9", "T10"], owasp_llm=["LLM02"],
    ),
    RuleGroup(
        id="log-audit-audit-config", key="audit_config",
        rules=_watch(["/etc/audit", "/etc/libaudit.conf"], "audit_config")
              + _exec(["/usr/sbin/auditctl", "/usr/sbin/auditd", "/usr/sbin/augenrules"], "audit_config"),
        title="Changes to the audit configuration and use of the audit tools are audited",
        rationale="Turning auditing off or editing its rules is the first thing an intruder does; it must leave a "
                  "record.",
        severity="high", nist=["AU-9", "AU-12"], threats=["T9"],
    ),
]

# Loading goes on past a rule whose path is missing on this host (e.g. no model store yet).
RULES_HEADER = ["-c"]
IMMUTABLE = "-e 2"


def audit_rules_file() -> str:
    """/etc/audit/rules.d/50-citadel.rules, from the rule groups; -e 2 last (augenrules keeps it last)."""
    lines = ["## Managed by Citadel (role hardening). Edits are overwritten; see hardening/controls/logging.py.", *RULES_HEADER, ""]
    for group in AUDIT_RULE_GROUPS:
        lines.append(f"## {group.title}")
        lines.extend(group.rules)
        lines.append("")
    lines += ["## Lock the rules until the next boot", IMMUTABLE]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# journald and rsyslog
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class JournaldSetting(Row):
    """A [Journal] setting: the role writes `value` in the drop-in, the check accepts any of `accepted`."""

    key: str
    value: str
    accepted: tuple[str, ...]
    break_value: str
    hipaa: Sequence[str] = tuple(AUDIT)
    nist: Sequence[str] = ("AU-4", "AU-9", "AU-11")
    threats: Sequence[str] = ("T9", "T10")

    def make_check(self) -> Check:
        return JournaldOption(key=self.key, expected=list(self.accepted))

    def make_break(self) -> str:
        return f"sed -i 's/^{self.key}=.*/{self.key}={self.break_value}/' {JOURNALD_DROPIN}"


JOURNALD_SETTINGS: list[JournaldSetting] = [
    JournaldSetting(
        id="log-journald-persistent", key="Storage", value="persistent", accepted=("persistent",),
        title="The journal is kept on disk across reboots",
        rationale="With volatile storage every log of the model server, SSH and sudo is lost at reboot, including a "
                  "reboot an intruder forces to cover their tracks.",
        severity="medium", cis=["6.1.2.4"], break_value="volatile",
    ),
    JournaldSetting(
        id="log-journald-compress", key="Compress", value="yes", accepted=("yes", "true", "1", "on"),
        title="Large journal entries are compressed",
        rationale="Inference hosts log a lot; compression keeps the retained history from filling the disk (denial "
                  "of service).",
        severity="low", cis=["6.1.2.3"], threats=["T5", "T9"], break_value="no",
    ),
    JournaldSetting(
        id="log-journald-forward-syslog", key="ForwardToSyslog", value="yes", accepted=("yes", "true", "1", "on"),
        title="The journal is forwarded to rsyslog",
        rationale="rsyslog writes the classic log files (auth.log) and is where forwarding to the hospital's log "
                  "server is configured; without forwarding it sees nothing.",
        severity="medium", cis=["6.1.3.3"], break_value="no",
    ),
]


def journald_dropin() -> str:
    lines = ["# Managed by Citadel (role hardening). See hardening/controls/logging.py.", "[Journal]"]
    lines += [f"{s.key}={s.value}" for s in JOURNALD_SETTINGS]
    return "\n".join(lines) + "\n"


# Legacy directives, written in the drop-in that rsyslogd reads last before rsyslog.conf's rules.
RSYSLOG_DIRECTIVES = [
    ("$FileOwner", "root"),
    ("$FileGroup", "adm"),
    ("$FileCreateMode", "0640"),
    ("$DirCreateMode", "0750"),
    ("$Umask", "0027"),
]
# Modules that make rsyslog listen on the network.
RSYSLOG_NETWORK_INPUT = r"(imtcp|imudp|imrelp|imptcp|\$(InputTCPServerRun|UDPServerRun|InputRELPServerRun))"


def rsyslog_dropin() -> str:
    lines = ["# Managed by Citadel (role hardening). See hardening/controls/logging.py."]
    lines += [f"{directive} {value}" for directive, value in RSYSLOG_DIRECTIVES]
    return "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------
# Files
# ---------------------------------------------------------------------------------------------

# Login records stay readable for `last`/`lastlog` and writable by the utmp group.
LOG_FILES_EXEMPT = ["wtmp*", "btmp*", "lastlog*"]


# Directories whose programs recreate their logs world-readable (apt's history and planner
# logs): closed to others, so what they write inside is not reachable by other users.
CLOSED_LOG_DIRS = ["/var/log/apt"]


def log_files_open_script() -> str:
    """Files under /var/log that other users can reach and read or write, or that are
    group-writable (CIS 6.1.4.1). Directories closed to others are not descended into."""
    exempt = " ".join(f"! -name {shlex.quote(n)}" for n in LOG_FILES_EXEMPT)
    return (
        "find /var/log -xdev -mindepth 1 \\( -type d ! -perm -0001 -prune \\) -o \\( -type f "
        f"\\( -perm -0004 -o -perm -0002 -o -perm -0020 -o -perm -0001 \\) {exempt} -print \\) 2>/dev/null | head -n 200"
    )


AUDIT_LOG = "/var/log/audit/audit.log"
AUTH_LOG = "/var/log/auth.log"


CONTROLS: list[Control] = [
    # --- packages and services -------------------------------------------------------------
    Control(
        id="log-auditd-installed",
        title="The Linux audit daemon (auditd) is installed",
        rationale="auditd records who did what to patient data, models and secrets on this host, at the kernel "
        "level where a compromised service cannot skip it (HIPAA audit controls).",
        severity="high",
        refs=References(hipaa=AUDIT, nist=AUDIT_NIST + ["AU-3"], cis=["6.2.1.1"], threats=["T9", "T10"], devsec=["package-08"]),
        check=Package(name="auditd"),
        remediation="hardening",
        break_with="dpkg -r auditd",
    ),
    Control(
        id="log-auditd-enabled",
        title="auditd starts at boot",
        rationale="Auditing that is not started at boot leaves every session after the next reboot unrecorded.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=AUDIT_NIST, cis=["6.2.1.2"], threats=["T9", "T10"], devsec=["package-08"]),
        check=ServiceIfInstalled(unit="auditd.service", enabled=True, package="auditd"),
        remediation="hardening",
        break_with="systemctl disable auditd",
    ),
    Control(
        id="log-auditd-running",
        title="auditd is running",
        rationale="Only a running auditd writes audit records; a container cannot load audit rules, so this is "
        "verified on VMs and bare metal.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=AUDIT_NIST, cis=["6.2.1.2"], threats=["T9", "T10"], devsec=["package-08"]),
        check=ServiceState(unit="auditd.service", active=True),
        remediation="hardening",
        scope="kernel",
        break_with="kill $(pidof auditd)",
    ),
    Control(
        id="log-rsyslog-installed",
        title="rsyslog is installed",
        rationale="rsyslog keeps the classic text logs (auth.log) and is how logs reach the hospital's central log "
        "server, so evidence survives a compromise of this host.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-4(1)", "AU-9(2)", "AU-12"], cis=["6.1.3.1"], threats=["T9"], devsec=["package-07"]),
        check=Package(name="rsyslog"),
        remediation="hardening",
        break_with="dpkg -r rsyslog",
    ),
    Control(
        id="log-rsyslog-enabled",
        title="rsyslog is enabled and running",
        rationale="An installed but stopped rsyslog writes no auth.log and forwards nothing.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-12"], cis=["6.1.3.2"], threats=["T9"], devsec=["package-07"]),
        check=ServiceIfInstalled(unit="rsyslog.service", enabled=True, active=True, package="rsyslog"),
        remediation="hardening",
        break_with="systemctl disable --now rsyslog",
    ),
    Control(
        id="log-logrotate-installed",
        title="logrotate is installed",
        rationale="Without rotation, logs of a busy inference host grow until the disk is full, stopping auditing "
        "and the model service (denial of service).",
        severity="medium",
        refs=References(nist=["AU-4", "AU-11"], cis=["6.1.3.8"], threats=["T5", "T9"]),
        check=Package(name="logrotate"),
        remediation="hardening",
        break_with="dpkg -r logrotate",
    ),
    Control(
        id="log-logrotate-timer",
        title="logrotate runs daily (its timer is enabled and active)",
        rationale="Rotation only happens if its timer runs; otherwise log growth fills the disk.",
        severity="low",
        refs=References(nist=["AU-4"], cis=["6.1.3.8"], threats=["T5"]),
        check=ServiceIfInstalled(unit="logrotate.timer", enabled=True, active=True, package="logrotate"),
        remediation="hardening",
        break_with="systemctl disable --now logrotate.timer",
    ),
    Control(
        id="log-logrotate-includes",
        title="logrotate reads the per-package rotation rules",
        rationale="Without the include of /etc/logrotate.d, rsyslog's and the packages' logs are never rotated.",
        severity="low",
        refs=References(nist=["AU-4"], cis=["6.1.3.8"], threats=["T5"]),
        check=FileContent(path=LOGROTATE_CONF, pattern=r"^\s*include\s+/etc/logrotate\.d\s*$"),
        remediation="hardening",
        break_with=f"sed -i 's|^include /etc/logrotate.d|#&|' {LOGROTATE_CONF}",
    ),
    # --- auditd configuration --------------------------------------------------------------
    *controls_of(AUDITD_SETTINGS),
    Control(
        id="log-auditd-conf-permissions",
        title="auditd.conf is owned by root and not readable by others",
        rationale="Whoever can edit auditd's configuration can turn auditing off or have logs deleted.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9"], cis=["6.2.4.5", "6.2.4.6", "6.2.4.7"], threats=["T9"]),
        check=FileMode(path=AUDITD_CONF, max_mode="0640", owner="root", group=["root"]),
        remediation="hardening",
        break_with=f"chmod 0644 {AUDITD_CONF}",
    ),
    # --- audit rules -----------------------------------------------------------------------
    *controls_of(AUDIT_RULE_GROUPS),
    Control(
        id="log-audit-immutable",
        title="Audit rules are locked until reboot (-e 2)",
        rationale="Without -e 2 anyone who gains root can delete the audit rules, act unrecorded, and put them back.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=["AU-9", "AU-12"], cis=["6.2.3.20"], threats=["T9", "T10"]),
        check=AuditRules(mode="immutable", describe="audit rules locked"),
        remediation="hardening",
        break_with=f"sed -i 's/^-e 2$/-e 1/' {AUDIT_RULES_FILE} && augenrules",
    ),
    Control(
        id="log-audit-rules-compiled",
        title="The boot-time audit rules are up to date with rules.d",
        rationale="auditd loads /etc/audit/audit.rules at boot; if it was not regenerated, the rules checked "
        "in rules.d are not the ones the kernel enforces.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-12", "CM-6"], cis=["6.2.3.21"], threats=["T9"]),
        check=AuditRules(mode="compiled", describe="compiled audit rules"),
        remediation="hardening",
        break_with=f"echo '-w /etc/fstab -p wa -k drift' >> {AUDIT_COMPILED}",
    ),
    Control(
        id="log-audit-rules-loaded",
        title="The kernel enforces the compiled audit rules, locked",
        rationale="Rules on disk prove nothing until loaded; the kernel's rule set and lock state are what "
        "actually record access to patient data.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=["AU-12", "AU-9"], cis=["6.2.3.21", "6.2.3.20"], threats=["T9", "T10"]),
        check=AuditRulesLoaded(),
        remediation="hardening",
        scope="kernel",
        # A rule compiled but never loaded (the loaded set is locked): the redeploy rewrites rules.d.
        break_with=f"echo '-w /etc/fstab -p wa -k drift' >> {AUDIT_RULES_FILE} && augenrules",
    ),
    Control(
        id="log-audit-rules-permissions",
        title="Citadel's audit rules file is root's alone",
        rationale="Readable rules tell an intruder exactly what is not watched; writable ones can be emptied.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9"], cis=["6.2.4.5", "6.2.4.6", "6.2.4.7"], threats=["T9"]),
        check=FileMode(path=AUDIT_RULES_FILE, max_mode="0640", owner="root", group=["root"]),
        remediation="hardening",
        break_with=f"chmod 0644 {AUDIT_RULES_FILE}",
    ),
    # --- audit logs ------------------------------------------------------------------------
    Control(
        id="log-audit-log-dir",
        title="The audit log directory is closed to other users",
        rationale="Audit records name users, files and commands touching patient data; only root and the adm "
        "group may read them.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.2.4.4"], threats=["T9", "T10"]),
        check=FileMode(path="/var/log/audit", max_mode="0750", owner="root", group=["root", "adm"], missing_ok=True),
        remediation="hardening",
        break_with="chmod 0755 /var/log/audit",
    ),
    Control(
        id="log-audit-log-files",
        title="The audit log is readable by root and adm only",
        rationale="Audit records reveal which patients' data was touched and by whom; they must not be world-readable.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.2.4.1", "6.2.4.2", "6.2.4.3"], threats=["T9", "T10"]),
        check=FileMode(path=AUDIT_LOG, max_mode="0640", owner="root", group=["root", "adm"], missing_ok=True),
        remediation="hardening",
        break_with=f"touch {AUDIT_LOG} && chmod 0644 {AUDIT_LOG}",
    ),
    # --- journald --------------------------------------------------------------------------
    *controls_of(JOURNALD_SETTINGS),
    Control(
        id="log-journal-dir",
        title="The persistent journal directory exists, owned by root:systemd-journal",
        rationale="journald only keeps logs across reboots if /var/log/journal exists.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9", "AU-11"], cis=["6.1.1.2", "6.1.2.4"], threats=["T9"]),
        check=FileMode(path="/var/log/journal", max_mode="2755", owner="root", group=["systemd-journal"]),
        remediation="hardening",
        break_with="rm -rf /var/log/journal",
    ),
    # --- rsyslog configuration and files ---------------------------------------------------
    Control(
        id="log-rsyslog-file-mode",
        title="rsyslog creates log files readable by root and adm only",
        rationale="auth.log and syslog record logins, commands and service errors that can include patient "
        "identifiers; new files must not be world-readable.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.1.3.4"], threats=["T10"], owasp_llm=["LLM02"]),
        check=RsyslogConfig(directive="$FileCreateMode", expected=["0640", "0600"], describe="rsyslog file mode"),
        remediation="hardening",
        break_with=f"sed -i 's/^\\$FileCreateMode .*/$FileCreateMode 0644/' {RSYSLOG_DROPIN}",
    ),
    Control(
        id="log-rsyslog-no-network-input",
        title="rsyslog does not accept logs from the network",
        rationale="A listening syslog port is remote attack surface and lets anyone inject forged records.",
        severity="medium",
        refs=References(nist=["CM-7", "AU-9"], cis=["6.1.3.7"], threats=["T6", "T9"]),
        check=RsyslogConfig(absent=RSYSLOG_NETWORK_INPUT, describe="rsyslog network input"),
        remediation="hardening",
        break_with=f"echo 'module(load=\"imtcp\")' >> {RSYSLOG_DROPIN}",
    ),
    Control(
        id="log-auth-log-permissions",
        title="auth.log is owned by root, group adm, mode 0640 or stricter",
        rationale="auth.log records every login and sudo command; others must not read or alter it.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.1.4.1"], threats=["T9", "T10"]),
        check=FileMode(path=AUTH_LOG, max_mode="0640", owner="root", group=["adm", "root"]),
        remediation="hardening",
        break_with=f"chown daemon {AUTH_LOG}",
    ),
    Control(
        id="log-var-log-owner",
        title="/var/log belongs to root and is not writable by others",
        rationale="Whoever owns the log directory can replace log files with links and erase evidence.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9"], cis=["6.1.4.1"], threats=["T9"], devsec=["os-11"]),
        check=FileMode(path="/var/log", max_mode="0775", owner="root", group=["root", "syslog"]),
        remediation="hardening",
        break_with="chown daemon /var/log",
    ),
    Control(
        id="log-files-not-world-readable",
        title="Log files under /var/log are not readable by other users",
        rationale="Logs of an inference host can hold patient identifiers, prompts and tokens; only root and adm "
        "may read them (login records stay readable for last/lastlog).",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.1.4.1"], threats=["T3", "T10"], owasp_llm=["LLM02"]),
        check=Command(command=log_files_open_script(), expect_output=r"\A\s*\Z", describe="log files open to others"),
        remediation="hardening",
        break_with="touch /var/log/dpkg.log && chmod 0644 /var/log/dpkg.log",
    ),
]
