"""Logging and auditing controls (CIS Debian 12 section 6.1-6.2, dev-sec os-11, package-07, package-08).

One set of tables, two readers, as for SSH: the controls below check them, and
``roles/hardening/logging.py`` writes the very same tables to the host.

- ``AUDITD_SETTINGS``: lines of /etc/audit/auditd.conf (what happens when the audit disk fills).
- ``AUDIT_RULE_GROUPS``: the audit rules of /etc/audit/rules.d/50-citadel.rules, one group per
  control, each with its own key (``-k``), so deleting one group fails exactly one control.
- ``JOURNALD_SETTINGS``: the [Journal] drop-in; ``RSYSLOG_DIRECTIVES``: the rsyslog drop-in.

Audit rule content and service enablement can be checked in a container; whether the rules
are loaded in the kernel, and whether auditd runs, cannot (scope="kernel").

New check kinds (here, not in hardening/checks.py): ``AuditRules``, ``AuditRulesLoaded``,
``JournaldOption``, ``RsyslogConfig`` (subclasses of ``Command``) and ``ServiceIfInstalled``
(a subclass of ``ServiceState``). They keep their parent's ``kind`` so the catalog's
discriminated union accepts them; each renders its own read-only script and judges it here.
"""

from __future__ import annotations

import re
import shlex
from collections import Counter
from dataclasses import dataclass

from pydantic import Field

from hardening.checks import Command, FileContent, FileMode, Package, ServiceState, Verdict
from hardening.model import Control, References

AUDIT = ["164.312(b)"]
INTEGRITY = ["164.312(b)", "164.312(c)(1)"]
AUDIT_NIST = ["AU-2", "AU-12"]

AUDIT_RULES_DIR = "/etc/audit/rules.d"
AUDIT_RULES_FILE = f"{AUDIT_RULES_DIR}/50-citadel.rules"
AUDIT_COMPILED = "/etc/audit/audit.rules"
AUDITD_CONF = "/etc/audit/auditd.conf"
JOURNALD_DROPIN = "/etc/systemd/journald.conf.d/50-citadel.conf"
RSYSLOG_CONF = "/etc/rsyslog.conf"
# Last among the drop-ins, so its directives are the ones in force for rsyslog.conf's own rules.
RSYSLOG_DROPIN = "/etc/rsyslog.d/99-citadel.conf"
LOGROTATE_CONF = "/etc/logrotate.conf"
MODEL_STORE = "/var/lib/citadel/models"
SECRET_DIRS = ["/etc/citadel", "/run/citadel"]

# A placeholder that fails loudly if a custom check were ever rebuilt as a plain Command.
_NOT_PLAIN = "echo 'this check needs its class from hardening.controls.logging' >&2; false"


# ---------------------------------------------------------------------------------------------
# Check kinds
# ---------------------------------------------------------------------------------------------


def _normalize(line: str) -> str:
    return " ".join(line.split())


def _rule_lines(text: str) -> list[str]:
    return [_normalize(line) for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")]


def compile_rules(rules_d_text: str) -> list[str]:
    """What augenrules makes of rules.d (concatenated in `ls -1v` order), as normalised lines.

    The last bare -D first, then the last -b, the last -f, the other lines in order, the last -e
    at the end (augenrules' own awk program).
    """
    minus = {"D": "", "b": "", "f": "", "e": ""}
    rest: list[str] = []
    for raw in rules_d_text.splitlines():
        if not raw or re.match(r"^\s*#", raw):
            continue
        if re.match(r"^\s*-e", raw):
            minus["e"] = raw
        elif re.match(r"^\s*-D\s*$", raw):
            minus["D"] = raw
        elif re.match(r"^\s*-f", raw):
            minus["f"] = raw
        elif re.match(r"^\s*-b", raw):
            minus["b"] = raw
        else:
            rest.append(raw)
    return [minus["D"], minus["b"], minus["f"], *rest, minus["e"]]


_SPLIT = "@@citadel-compiled@@"


def _trim(lines: list[str]) -> list[str]:
    while lines and not lines[-1]:
        lines = lines[:-1]
    return lines


class AuditRules(Command):
    """The audit rules in rules.d: `rules` all present, or the last -e is `-e 2`, or compiled.

    - mode "present": every line of `rules` is in some /etc/audit/rules.d/*.rules (whitespace
      normalised), which is what augenrules compiles and auditd loads at boot.
    - mode "immutable": the last -e directive of rules.d is "-e 2".
    - mode "compiled": /etc/audit/audit.rules is what augenrules would make of rules.d now.
    """

    command: str = _NOT_PLAIN
    describe: str = "audit rules"
    mode: str = Field("present", pattern=r"^(present|immutable|compiled)$")
    rules: list[str] = Field(default_factory=list)

    def script(self) -> str:
        d = shlex.quote(AUDIT_RULES_DIR)
        return (
            f"[ -d {d} ] || {{ echo MISSING; exit 0; }}; "
            f"for f in $(ls -1v {d} | grep '\\.rules$'); do cat {d}/\"$f\"; done; "
            f"echo '{_SPLIT}'; cat {shlex.quote(AUDIT_COMPILED)} 2>/dev/null; true"
        )

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if evidence.strip() == "MISSING":
            return Verdict("fail", f"{AUDIT_RULES_DIR} does not exist")
        source, _, compiled = evidence.partition(_SPLIT)
        compiled = compiled[1:] if compiled.startswith("\n") else compiled
        lines = _rule_lines(source)
        if self.mode == "present":
            have = set(lines)
            missing = [rule for rule in self.rules if _normalize(rule) not in have]
            if missing:
                return Verdict("fail", f"{len(missing)} of {len(self.rules)} rules missing from {AUDIT_RULES_DIR}, e.g. {missing[0]!r}")
            return Verdict("pass", f"{len(self.rules)} rules present in {AUDIT_RULES_DIR}")
        if self.mode == "immutable":
            last = [line for line in lines if line.startswith("-e")]
            if last and last[-1] == "-e 2":
                return Verdict("pass", "rules.d ends in -e 2: loaded rules cannot be changed until reboot")
            return Verdict("fail", f"last -e directive in {AUDIT_RULES_DIR} is {last[-1] if last else 'absent'!r}, expected '-e 2'")
        wanted = _trim([_normalize(x) for x in compile_rules(source)])
        actual = _trim([_normalize(x) for x in compiled.splitlines() if not x.startswith("## This file is automatically generated")])
        if wanted == actual:
            return Verdict("pass", f"{AUDIT_COMPILED} matches {AUDIT_RULES_DIR} ({len(actual)} lines)")
        return Verdict("fail", f"{AUDIT_COMPILED} is out of date with {AUDIT_RULES_DIR}: run augenrules")


def _rule_keys(text: str) -> Counter:
    keys: Counter = Counter()
    for line in text.splitlines():
        if not re.match(r"^\s*-[aw]\s", line):
            continue
        match = re.search(r"(?:-k\s+|-F\s+key=)(\S+)", line)
        keys[match.group(1) if match else "(no key)"] += 1
    return keys


class AuditRulesLoaded(Command):
    """The kernel runs the compiled rules, locked (`auditctl -s`: enabled 2), rule for rule by key."""

    command: str = _NOT_PLAIN
    describe: str = "loaded audit rules"

    def script(self) -> str:
        return f"auditctl -s; echo '{_SPLIT}'; auditctl -l; echo '{_SPLIT}'; cat {shlex.quote(AUDIT_COMPILED)}"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        parts = evidence.split(_SPLIT)
        if len(parts) != 3:
            return Verdict("fail", f"could not read the audit status: {evidence[:200]!r}")
        status, loaded, compiled = parts
        enabled = re.search(r"^enabled (\d)", status, re.MULTILINE)
        problems = []
        if not enabled or enabled.group(1) != "2":
            problems.append(f"audit is not locked (enabled {enabled.group(1) if enabled else '?'}, expected 2)")
        want, have = _rule_keys(compiled), _rule_keys(loaded)
        if want != have:
            diff = sorted(set(want) ^ set(have) | {k for k in want if want[k] != have.get(k)})
            problems.append(f"loaded rules differ from {AUDIT_COMPILED} for keys {', '.join(diff[:6])}")
        if problems:
            return Verdict("fail", "; ".join(problems))
        return Verdict("pass", f"{sum(have.values())} rules loaded and locked (enabled 2)")


class JournaldOption(Command):
    """journald's effective setting (systemd-analyze cat-config: last assignment in [Journal] wins)."""

    command: str = _NOT_PLAIN
    describe: str = "journald option"
    key: str = Field(pattern=r"^[A-Za-z]+$")
    expected: list[str] = Field(min_length=1)

    def script(self) -> str:
        return "systemd-analyze cat-config systemd/journald.conf 2>/dev/null"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        section, value = None, None
        for raw in evidence.splitlines():
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
            elif section == "[Journal]" and "=" in line:
                key, _, val = line.partition("=")
                if key.strip() == self.key:
                    value = val.strip()
        if value is None:
            return Verdict("fail", f"journald {self.key} is not set (compiled-in default applies), expected {self.expected[0]}")
        if value.lower() in [e.lower() for e in self.expected]:
            return Verdict("pass", f"journald {self.key}={value}")
        return Verdict("fail", f"journald {self.key}={value}, expected {' or '.join(self.expected)}")


# rsyslog.conf with its $IncludeConfig lines replaced by the files they include, in order.
_RSYSLOG_EXPANDED = (
    f"[ -f {RSYSLOG_CONF} ] || {{ echo MISSING; exit 0; }}; "
    "while IFS= read -r l; do case \"$l\" in "
    "'$IncludeConfig '*) for i in ${l#\\$IncludeConfig }; do [ -f \"$i\" ] && cat \"$i\"; done;; "
    "*) printf '%s\\n' \"$l\";; esac; "
    f"done < {RSYSLOG_CONF}"
)


class RsyslogConfig(Command):
    """rsyslog's configuration in the order rsyslogd reads it: a legacy directive's last value,
    or (with `absent`) no line matching a pattern."""

    command: str = _NOT_PLAIN
    describe: str = "rsyslog configuration"
    directive: str | None = Field(None, pattern=r"^\$[A-Za-z]+$")
    expected: list[str] = Field(default_factory=list)
    absent: str | None = None

    def script(self) -> str:
        return _RSYSLOG_EXPANDED

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if evidence.strip() == "MISSING":
            return Verdict("fail", f"{RSYSLOG_CONF} does not exist")
        lines = [line.strip() for line in evidence.splitlines() if line.strip() and not line.strip().startswith("#")]
        if self.absent is not None:
            found = [line for line in lines if re.search(self.absent, line)]
            if found:
                return Verdict("fail", f"rsyslog configuration has {found[0][:200]!r}")
            return Verdict("pass", "rsyslog configuration loads no network input module")
        value = None
        for line in lines:
            parts = line.split()
            if parts[0].lower() == (self.directive or "").lower() and len(parts) > 1:
                value = parts[1]
        if value in self.expected:
            return Verdict("pass", f"rsyslog {self.directive} {value}")
        return Verdict("fail", f"rsyslog {self.directive} is {value or 'unset'}, expected {' or '.join(self.expected)}")


class ServiceIfInstalled(ServiceState):
    """A unit's state, judged only while its package is installed (else not applicable: the
    package's own control fails instead, so one removal fails one control)."""

    package: str = Field(pattern=r"^[a-z0-9][a-z0-9+.-]+$")

    def script(self) -> str:
        p = shlex.quote(self.package)
        return (
            f"dpkg-query -W -f='${{Status}}' {p} 2>/dev/null | grep -q ' ok installed$' || echo NOTINSTALLED; "
            + super().script()
        )

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "NOTINSTALLED" in evidence.splitlines():
            return Verdict("notapplicable", f"{self.package} is not installed (its package control fails instead)")
        return super().evaluate(evidence, exit_code)


# ---------------------------------------------------------------------------------------------
# auditd.conf
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class AuditdSetting:
    id: str
    key: str
    value: str  # what the role writes
    accepted: tuple[str, ...]  # what the check accepts (case-insensitive)
    title: str
    rationale: str
    severity: str
    cis: list[str]
    devsec: list[str]
    break_value: str


AUDITD_SETTINGS = [
    AuditdSetting(
        "log-auditd-keep-logs", "max_log_file_action", "keep_logs", ("keep_logs",),
        "auditd keeps full audit logs instead of rotating them away",
        "ROTATE deletes the oldest audit log once num_logs is reached: the record of who touched patient "
        "data on this inference host would silently vanish. HIPAA expects audit trails to be retained.",
        "high", ["6.2.2.2"], ["package-08"], "ROTATE",
    ),
    AuditdSetting(
        "log-auditd-space-left-action", "space_left_action", "syslog", ("syslog", "email", "exec", "single", "halt"),
        "auditd warns when the audit disk runs low",
        "Model weights and caches fill disks on GPU hosts; administrators must be warned (through syslog, "
        "which is forwarded) before auditing stops.",
        "medium", ["6.2.2.4"], ["package-08"], "ignore",
    ),
    AuditdSetting(
        "log-auditd-admin-space-left-action", "admin_space_left_action", "suspend", ("suspend", "single", "halt"),
        "auditd stops cleanly, never ignores, a critically full audit disk",
        "IGNORE lets the host keep serving patient data with auditing silently broken. SUSPEND is chosen "
        "over SINGLE/HALT so a full disk cannot take the clinical service and the operator's SSH access down.",
        "medium", ["6.2.2.4"], ["package-08"], "ignore",
    ),
    AuditdSetting(
        "log-auditd-disk-full-action", "disk_full_action", "suspend", ("suspend", "single", "halt"),
        "auditd never ignores a full audit disk",
        "With IGNORE auditd drops records while the host keeps running: events on patient data go unrecorded.",
        "medium", ["6.2.2.3"], ["package-08"], "ignore",
    ),
    AuditdSetting(
        "log-auditd-disk-error-action", "disk_error_action", "suspend", ("suspend", "single", "halt"),
        "auditd never ignores audit disk errors",
        "A failing audit disk must not be ignored silently; records written to it are the evidence of access.",
        "medium", ["6.2.2.3"], ["package-08"], "ignore",
    ),
    AuditdSetting(
        "log-auditd-flush", "flush", "incremental_async", ("incremental", "incremental_async", "data", "sync"),
        "auditd flushes audit records to disk regularly",
        "With flush NONE, a crash or power cut (or an attacker's reboot) loses the records of the last minutes.",
        "low", ["6.2.2"], ["package-08"], "none",
    ),
]


def auditd_line(setting: AuditdSetting) -> str:
    return f"{setting.key} = {setting.value}"


def _auditd_control(s: AuditdSetting) -> Control:
    accepted = "|".join(re.escape(a) for a in s.accepted)
    return Control(
        id=s.id,
        title=s.title,
        rationale=s.rationale,
        severity=s.severity,
        refs=References(hipaa=AUDIT, nist=["AU-4", "AU-5", "AU-11"], cis=s.cis, threats=["T9", "T10"], devsec=s.devsec),
        check=FileContent(path=AUDITD_CONF, pattern=rf"^\s*{s.key}\s*=\s*({accepted})\s*$", ignore_case=True),
        remediation="hardening",
        break_with=f"sed -i 's/^{s.key} *=.*/{s.key} = {s.break_value}/' {AUDITD_CONF}",
    )


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


@dataclass(frozen=True)
class RuleGroup:
    id: str
    key: str  # unique per group: the break recipe deletes the group by its key
    rules: list[str]
    title: str
    rationale: str
    severity: str
    cis: list[str]
    nist: list[str]
    threats: list[str]
    owasp_llm: list[str] | None = None


# Setuid/setgid programs every Debian 12 host has (passwd, login, util-linux, sudo, libpam).
PRIVILEGED_PROGRAMS = [
    "/usr/bin/sudo", "/usr/bin/su", "/usr/bin/passwd", "/usr/bin/chsh", "/usr/bin/chfn", "/usr/bin/gpasswd",
    "/usr/bin/newgrp", "/usr/bin/mount", "/usr/bin/umount", "/usr/bin/chage", "/usr/bin/expiry",
    "/usr/sbin/unix_chkpwd",
]

AUDIT_RULE_GROUPS = [
    RuleGroup(
        "log-audit-identity", "identity",
        _watch(["/etc/passwd", "/etc/group", "/etc/shadow", "/etc/gshadow", "/etc/security/opasswd",
                "/etc/nsswitch.conf", "/etc/pam.conf", "/etc/pam.d"], "identity"),
        "Changes to accounts, groups, passwords and PAM are audited",
        "A new account or a changed PAM stack is how an intruder keeps access to a host holding patient data.",
        "high", ["6.2.3.8"], ["AU-2", "AU-12", "AC-2(4)"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-sudoers", "scope",
        _watch(["/etc/sudoers", "/etc/sudoers.d"], "scope"),
        "Changes to sudo rights are audited",
        "Whoever edits sudoers grants themselves root on the host that holds models and patient data.",
        "high", ["6.2.3.1"], ["AU-2", "AU-12", "AC-6(9)"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-user-emulation", "user_emulation",
        [f"-a always,exit -F arch={a} -C euid!=uid -F auid!=unset -S execve -k user_emulation" for a in ("b64", "b32")],
        "Commands run as another user (sudo, su) are audited",
        "Privileged actions must be attributable to the administrator who ran them (unique user identification).",
        "high", ["6.2.3.2"], ["AU-2", "AU-12", "AC-6(9)"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-sudo-log", "sudo_log_file",
        _watch(["/var/log/sudo.log"], "sudo_log_file"),
        "Changes to the sudo log are audited",
        "Editing the sudo log is how an intruder hides what was done as root.",
        "medium", ["6.2.3.3"], ["AU-9", "AU-12"], ["T9"],
    ),
    RuleGroup(
        "log-audit-time-change", "time-change",
        _syscalls("adjtimex,settimeofday", "time-change", extra="")
        + _syscalls("clock_settime", "time-change", extra="-F a0=0x0")
        + _watch(["/etc/localtime"], "time-change"),
        "Changes to the system clock are audited",
        "Audit records are only evidence if their timestamps can be trusted; moving the clock hides events.",
        "medium", ["6.2.3.4"], ["AU-8", "AU-12"], ["T9"],
    ),
    RuleGroup(
        "log-audit-network-env", "system-locale",
        _syscalls("sethostname,setdomainname", "system-locale", extra="")
        + _watch(["/etc/issue", "/etc/issue.net", "/etc/hosts", "/etc/hostname", "/etc/networks", "/etc/network"],
                 "system-locale"),
        "Changes to host name, hosts file, network configuration and banners are audited",
        "Redirecting the model gateway or the vault through /etc/hosts is a quiet way to intercept patient data.",
        "medium", ["6.2.3.5"], ["AU-2", "AU-12", "CM-6"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-mac-policy", "MAC-policy",
        _watch(["/etc/apparmor", "/etc/apparmor.d"], "MAC-policy"),
        "Changes to AppArmor policy are audited",
        "AppArmor confines the model server; loosening its profile precedes remote code execution or data theft.",
        "medium", ["6.2.3.14"], ["AU-2", "AU-12", "AC-3(3)"], ["T6", "T9"],
    ),
    RuleGroup(
        "log-audit-perm-mod", "perm_mod",
        _syscalls("chmod,fchmod,fchmodat", "perm_mod")
        + _syscalls("chown,fchown,lchown,fchownat", "perm_mod")
        + _syscalls("setxattr,lsetxattr,fsetxattr,removexattr,lremovexattr,fremovexattr", "perm_mod"),
        "Permission, ownership and extended attribute changes by users are audited",
        "Opening up a model, key or patient-data file with chmod/chown is the first step of exfiltration.",
        "medium", ["6.2.3.9"], ["AU-2", "AU-12"], ["T3", "T10"], ["LLM02"],
    ),
    RuleGroup(
        "log-audit-access-denied", "access",
        _syscalls("creat,open,openat,truncate,ftruncate", "access", extra=f"-F exit=-EACCES {UID_FILTER}")
        + _syscalls("creat,open,openat,truncate,ftruncate", "access", extra=f"-F exit=-EPERM {UID_FILTER}"),
        "Denied file accesses by users are audited",
        "Repeated denied opens show someone probing for patient data, model weights or secrets.",
        "medium", ["6.2.3.7"], ["AU-2", "AU-12"], ["T3", "T10"], ["LLM02"],
    ),
    RuleGroup(
        "log-audit-mounts", "mounts",
        _syscalls("mount", "mounts"),
        "File system mounts by users are audited",
        "Mounting removable or network storage is how model weights and patient data leave the host.",
        "medium", ["6.2.3.10"], ["AU-2", "AU-12"], ["T3", "T10"],
    ),
    RuleGroup(
        "log-audit-session", "session",
        _watch(["/var/run/utmp", "/var/log/wtmp", "/var/log/btmp"], "session"),
        "Session records (utmp, wtmp, btmp) are audited",
        "Who was logged in when patient data was accessed must not be erasable without a trace.",
        "medium", ["6.2.3.11"], ["AU-2", "AU-12", "AU-14"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-logins", "logins",
        _watch(["/var/log/lastlog", "/var/run/faillock"], "logins"),
        "Login records and failed-login counters are audited",
        "Resetting failed-login counters or last-login records hides password guessing against administrators.",
        "medium", ["6.2.3.12"], ["AU-2", "AU-12", "AC-7"], ["T9"],
    ),
    RuleGroup(
        "log-audit-delete", "delete",
        _syscalls("unlink,unlinkat,rename,renameat", "delete"),
        "File deletions and renames by users are audited",
        "Deleting logs, model files or exported patient data must leave a record of who did it.",
        "medium", ["6.2.3.13"], ["AU-2", "AU-12"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-modules", "kernel_modules",
        _syscalls("init_module,finit_module,delete_module", "kernel_modules", extra="")
        + _exec(["/usr/bin/kmod"], "kernel_modules"),
        "Kernel module loading and unloading is audited",
        "A malicious kernel module (or a tampered GPU driver) owns the host and every patient record on it.",
        "high", ["6.2.3.19"], ["AU-2", "AU-12", "CM-7"], ["T6", "T8", "T9"],
    ),
    RuleGroup(
        "log-audit-privileged", "privileged",
        _exec(PRIVILEGED_PROGRAMS, "privileged"),
        "Use of setuid and setgid programs is audited",
        "Setuid programs are the local paths to root; each use must be attributable to a person.",
        "medium", ["6.2.3.6"], ["AU-2", "AU-12", "AC-6(9)"], ["T9"],
    ),
    RuleGroup(
        "log-audit-perm-commands", "perm_chng",
        _exec(["/usr/bin/chcon", "/usr/bin/setfacl", "/usr/bin/chacl", "/usr/sbin/usermod"], "perm_chng"),
        "Use of chcon, setfacl, chacl and usermod is audited",
        "ACLs and group membership changes grant access to data without touching the usual permission bits.",
        "medium", ["6.2.3.15", "6.2.3.16", "6.2.3.17", "6.2.3.18"], ["AU-2", "AU-12"], ["T9", "T10"],
    ),
    RuleGroup(
        "log-audit-sshd-config", "sshd_config",
        _watch(["/etc/ssh/sshd_config", "/etc/ssh/sshd_config.d"], "sshd_config"),
        "Changes to the SSH server configuration are audited",
        "Re-enabling passwords or forwarding in sshd opens the host (and the clinical network behind it) to attackers.",
        "medium", ["6.2.3"], ["AU-2", "AU-12", "CM-6"], ["T9"],
    ),
    RuleGroup(
        "log-audit-model-store", "citadel-models",
        _watch([MODEL_STORE], "citadel-models"),
        "Changes to the sealed model store are audited",
        "Replacing or altering model weights plants a backdoor or a poisoned model that gives false clinical "
        "answers; every write to the store must be attributable.",
        "high", ["6.2.3"], ["AU-2", "AU-12", "SI-7"], ["T1", "T2", "T8"], ["LLM03", "LLM04"],
    ),
    RuleGroup(
        "log-audit-secrets", "citadel-secrets",
        _watch(SECRET_DIRS, "citadel-secrets", perm="rwa"),
        "Every access to Citadel's configuration and secrets is audited",
        "API keys and vault tokens unlock the model and the patient data behind it; reads are recorded too.",
        "high", ["6.2.3"], ["AU-2", "AU-12", "SC-28"], ["T9", "T10"], ["LLM02"],
    ),
    RuleGroup(
        "log-audit-audit-config", "audit_config",
        _watch(["/etc/audit", "/etc/libaudit.conf"], "audit_config")
        + _exec(["/usr/sbin/auditctl", "/usr/sbin/auditd", "/usr/sbin/augenrules"], "audit_config"),
        "Changes to the audit configuration and use of the audit tools are audited",
        "Turning auditing off or editing its rules is the first thing an intruder does; it must leave a record.",
        "high", ["6.2.4"], ["AU-9", "AU-12"], ["T9"],
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


def _rule_control(g: RuleGroup) -> Control:
    return Control(
        id=g.id,
        title=g.title,
        rationale=g.rationale,
        severity=g.severity,
        refs=References(hipaa=AUDIT, nist=g.nist, cis=g.cis, threats=g.threats, owasp_llm=g.owasp_llm or []),
        check=AuditRules(mode="present", rules=g.rules, describe=g.title),
        remediation="hardening",
        # Recompile so only the rules' presence is broken, not audit.rules' freshness.
        break_with=f"sed -i '/ -k {g.key}$/d' {AUDIT_RULES_FILE} && augenrules",
    )


# ---------------------------------------------------------------------------------------------
# journald and rsyslog
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class JournaldSetting:
    id: str
    key: str
    value: str
    accepted: tuple[str, ...]
    title: str
    rationale: str
    severity: str
    cis: list[str]
    break_value: str


JOURNALD_SETTINGS = [
    JournaldSetting(
        "log-journald-persistent", "Storage", "persistent", ("persistent",),
        "The journal is kept on disk across reboots",
        "With volatile storage every log of the model server, SSH and sudo is lost at reboot, including a reboot "
        "an intruder forces to cover their tracks.",
        "medium", ["6.1.2.4"], "volatile",
    ),
    JournaldSetting(
        "log-journald-compress", "Compress", "yes", ("yes", "true", "1", "on"),
        "Large journal entries are compressed",
        "Inference hosts log a lot; compression keeps the retained history from filling the disk (denial of service).",
        "low", ["6.1.2.3"], "no",
    ),
    JournaldSetting(
        "log-journald-forward-syslog", "ForwardToSyslog", "yes", ("yes", "true", "1", "on"),
        "The journal is forwarded to rsyslog",
        "rsyslog writes the classic log files (auth.log) and is where forwarding to the hospital's log server is "
        "configured; without forwarding it sees nothing.",
        "medium", ["6.1.3.3"], "no",
    ),
]


def journald_dropin() -> str:
    lines = ["# Managed by Citadel (role hardening). See hardening/controls/logging.py.", "[Journal]"]
    lines += [f"{s.key}={s.value}" for s in JOURNALD_SETTINGS]
    return "\n".join(lines) + "\n"


def _journald_control(s: JournaldSetting) -> Control:
    return Control(
        id=s.id,
        title=s.title,
        rationale=s.rationale,
        severity=s.severity,
        refs=References(hipaa=AUDIT, nist=["AU-4", "AU-9", "AU-11"], cis=s.cis,
                        threats=["T5", "T9"] if s.key == "Compress" else ["T9", "T10"]),
        check=JournaldOption(key=s.key, expected=list(s.accepted)),
        remediation="hardening",
        break_with=f"sed -i 's/^{s.key}=.*/{s.key}={s.break_value}/' {JOURNALD_DROPIN}",
    )


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


def _c(**kwargs) -> Control:
    return Control(remediation="hardening", **kwargs)


CONTROLS: list[Control] = [
    # --- packages and services -------------------------------------------------------------
    _c(
        id="log-auditd-installed",
        title="The Linux audit daemon (auditd) is installed",
        rationale="auditd records who did what to patient data, models and secrets on this host, at the kernel "
        "level where a compromised service cannot skip it (HIPAA audit controls).",
        severity="high",
        refs=References(hipaa=AUDIT, nist=AUDIT_NIST + ["AU-3"], cis=["6.2.1.1"], threats=["T9", "T10"], devsec=["package-08"]),
        check=Package(name="auditd"),
        break_with="dpkg -r auditd",
    ),
    _c(
        id="log-auditd-enabled",
        title="auditd starts at boot",
        rationale="Auditing that is not started at boot leaves every session after the next reboot unrecorded.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=AUDIT_NIST, cis=["6.2.1.2"], threats=["T9", "T10"], devsec=["package-08"]),
        check=ServiceIfInstalled(unit="auditd.service", enabled=True, package="auditd"),
        break_with="systemctl disable auditd",
    ),
    _c(
        id="log-auditd-running",
        title="auditd is running",
        rationale="Only a running auditd writes audit records; a container cannot load audit rules, so this is "
        "verified on VMs and bare metal.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=AUDIT_NIST, cis=["6.2.1.2"], threats=["T9", "T10"], devsec=["package-08"]),
        check=ServiceState(unit="auditd.service", active=True),
        scope="kernel",
        break_with="kill $(pidof auditd)",
    ),
    _c(
        id="log-rsyslog-installed",
        title="rsyslog is installed",
        rationale="rsyslog keeps the classic text logs (auth.log) and is how logs reach the hospital's central log "
        "server, so evidence survives a compromise of this host.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-4(1)", "AU-9(2)", "AU-12"], cis=["6.1.3.1"], threats=["T9"], devsec=["package-07"]),
        check=Package(name="rsyslog"),
        break_with="dpkg -r rsyslog",
    ),
    _c(
        id="log-rsyslog-enabled",
        title="rsyslog is enabled and running",
        rationale="An installed but stopped rsyslog writes no auth.log and forwards nothing.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-12"], cis=["6.1.3.2"], threats=["T9"], devsec=["package-07"]),
        check=ServiceIfInstalled(unit="rsyslog.service", enabled=True, active=True, package="rsyslog"),
        break_with="systemctl disable --now rsyslog",
    ),
    _c(
        id="log-logrotate-installed",
        title="logrotate is installed",
        rationale="Without rotation, logs of a busy inference host grow until the disk is full, stopping auditing "
        "and the model service (denial of service).",
        severity="medium",
        refs=References(nist=["AU-4", "AU-11"], cis=["6.1.3.8"], threats=["T5", "T9"]),
        check=Package(name="logrotate"),
        break_with="dpkg -r logrotate",
    ),
    _c(
        id="log-logrotate-timer",
        title="logrotate runs daily (its timer is enabled and active)",
        rationale="Rotation only happens if its timer runs; otherwise log growth fills the disk.",
        severity="low",
        refs=References(nist=["AU-4"], cis=["6.1.3.8"], threats=["T5"]),
        check=ServiceIfInstalled(unit="logrotate.timer", enabled=True, active=True, package="logrotate"),
        break_with="systemctl disable --now logrotate.timer",
    ),
    _c(
        id="log-logrotate-includes",
        title="logrotate reads the per-package rotation rules",
        rationale="Without the include of /etc/logrotate.d, rsyslog's and the packages' logs are never rotated.",
        severity="low",
        refs=References(nist=["AU-4"], cis=["6.1.3.8"], threats=["T5"]),
        check=FileContent(path=LOGROTATE_CONF, pattern=r"^\s*include\s+/etc/logrotate\.d\s*$"),
        break_with=f"sed -i 's|^include /etc/logrotate.d|#&|' {LOGROTATE_CONF}",
    ),
    # --- auditd configuration --------------------------------------------------------------
    *[_auditd_control(s) for s in AUDITD_SETTINGS],
    _c(
        id="log-auditd-conf-permissions",
        title="auditd.conf is owned by root and not readable by others",
        rationale="Whoever can edit auditd's configuration can turn auditing off or have logs deleted.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9"], cis=["6.2.4.5", "6.2.4.6", "6.2.4.7"], threats=["T9"]),
        check=FileMode(path=AUDITD_CONF, max_mode="0640", owner="root", group=["root"]),
        break_with=f"chmod 0644 {AUDITD_CONF}",
    ),
    # --- audit rules -----------------------------------------------------------------------
    *[_rule_control(g) for g in AUDIT_RULE_GROUPS],
    _c(
        id="log-audit-immutable",
        title="Audit rules are locked until reboot (-e 2)",
        rationale="Without -e 2 anyone who gains root can delete the audit rules, act unrecorded, and put them back.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=["AU-9", "AU-12"], cis=["6.2.3.20"], threats=["T9", "T10"]),
        check=AuditRules(mode="immutable", describe="audit rules locked"),
        break_with=f"sed -i 's/^-e 2$/-e 1/' {AUDIT_RULES_FILE} && augenrules",
    ),
    _c(
        id="log-audit-rules-compiled",
        title="The boot-time audit rules are up to date with rules.d",
        rationale="auditd loads /etc/audit/audit.rules at boot; if it was not regenerated, the rules checked "
        "in rules.d are not the ones the kernel enforces.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-12", "CM-6"], cis=["6.2.3.21"], threats=["T9"]),
        check=AuditRules(mode="compiled", describe="compiled audit rules"),
        break_with=f"echo '-w /etc/fstab -p wa -k drift' >> {AUDIT_COMPILED}",
    ),
    _c(
        id="log-audit-rules-loaded",
        title="The kernel enforces the compiled audit rules, locked",
        rationale="Rules on disk prove nothing until loaded; the kernel's rule set and lock state are what "
        "actually record access to patient data.",
        severity="high",
        refs=References(hipaa=AUDIT, nist=["AU-12", "AU-9"], cis=["6.2.3.21", "6.2.3.20"], threats=["T9", "T10"]),
        check=AuditRulesLoaded(),
        scope="kernel",
        # A rule compiled but never loaded (the loaded set is locked): the redeploy rewrites rules.d.
        break_with=f"echo '-w /etc/fstab -p wa -k drift' >> {AUDIT_RULES_FILE} && augenrules",
    ),
    _c(
        id="log-audit-rules-permissions",
        title="Citadel's audit rules file is root's alone",
        rationale="Readable rules tell an intruder exactly what is not watched; writable ones can be emptied.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9"], cis=["6.2.4.5", "6.2.4.6", "6.2.4.7"], threats=["T9"]),
        check=FileMode(path=AUDIT_RULES_FILE, max_mode="0640", owner="root", group=["root"]),
        break_with=f"chmod 0644 {AUDIT_RULES_FILE}",
    ),
    # --- audit logs ------------------------------------------------------------------------
    _c(
        id="log-audit-log-dir",
        title="The audit log directory is closed to other users",
        rationale="Audit records name users, files and commands touching patient data; only root and the adm "
        "group may read them.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.2.4.4"], threats=["T9", "T10"]),
        check=FileMode(path="/var/log/audit", max_mode="0750", owner="root", group=["root", "adm"], missing_ok=True),
        break_with="chmod 0755 /var/log/audit",
    ),
    _c(
        id="log-audit-log-files",
        title="The audit log is readable by root and adm only",
        rationale="Audit records reveal which patients' data was touched and by whom; they must not be world-readable.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.2.4.1", "6.2.4.2", "6.2.4.3"], threats=["T9", "T10"]),
        check=FileMode(path=AUDIT_LOG, max_mode="0640", owner="root", group=["root", "adm"], missing_ok=True),
        break_with=f"touch {AUDIT_LOG} && chmod 0644 {AUDIT_LOG}",
    ),
    # --- journald --------------------------------------------------------------------------
    *[_journald_control(s) for s in JOURNALD_SETTINGS],
    _c(
        id="log-journal-dir",
        title="The persistent journal directory exists, owned by root:systemd-journal",
        rationale="journald only keeps logs across reboots if /var/log/journal exists.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9", "AU-11"], cis=["6.1.1.2", "6.1.2.4"], threats=["T9"]),
        check=FileMode(path="/var/log/journal", max_mode="2755", owner="root", group=["systemd-journal"]),
        break_with="rm -rf /var/log/journal",
    ),
    # --- rsyslog configuration and files ---------------------------------------------------
    _c(
        id="log-rsyslog-file-mode",
        title="rsyslog creates log files readable by root and adm only",
        rationale="auth.log and syslog record logins, commands and service errors that can include patient "
        "identifiers; new files must not be world-readable.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.1.3.4"], threats=["T10"], owasp_llm=["LLM02"]),
        check=RsyslogConfig(directive="$FileCreateMode", expected=["0640", "0600"], describe="rsyslog file mode"),
        break_with=f"sed -i 's/^\\$FileCreateMode .*/$FileCreateMode 0644/' {RSYSLOG_DROPIN}",
    ),
    _c(
        id="log-rsyslog-no-network-input",
        title="rsyslog does not accept logs from the network",
        rationale="A listening syslog port is remote attack surface and lets anyone inject forged records.",
        severity="medium",
        refs=References(nist=["CM-7", "AU-9"], cis=["6.1.3.7"], threats=["T6", "T9"]),
        check=RsyslogConfig(absent=RSYSLOG_NETWORK_INPUT, describe="rsyslog network input"),
        break_with=f"echo 'module(load=\"imtcp\")' >> {RSYSLOG_DROPIN}",
    ),
    _c(
        id="log-auth-log-permissions",
        title="auth.log is owned by root, group adm, mode 0640 or stricter",
        rationale="auth.log records every login and sudo command; others must not read or alter it.",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.1.4.1"], threats=["T9", "T10"]),
        check=FileMode(path=AUTH_LOG, max_mode="0640", owner="root", group=["adm", "root"]),
        break_with=f"chown daemon {AUTH_LOG}",
    ),
    _c(
        id="log-var-log-owner",
        title="/var/log belongs to root and is not writable by others",
        rationale="Whoever owns the log directory can replace log files with links and erase evidence.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-9"], cis=["6.1.4.1"], threats=["T9"], devsec=["os-11"]),
        check=FileMode(path="/var/log", max_mode="0775", owner="root", group=["root", "syslog"]),
        break_with="chown daemon /var/log",
    ),
    _c(
        id="log-files-not-world-readable",
        title="Log files under /var/log are not readable by other users",
        rationale="Logs of an inference host can hold patient identifiers, prompts and tokens; only root and adm "
        "may read them (login records stay readable for last/lastlog).",
        severity="medium",
        refs=References(hipaa=AUDIT + ["164.312(a)(1)"], nist=["AU-9"], cis=["6.1.4.1"], threats=["T3", "T10"], owasp_llm=["LLM02"]),
        check=Command(command=log_files_open_script(), expect_output=r"\A\s*\Z", describe="log files open to others"),
        break_with="touch /var/log/dpkg.log && chmod 0644 /var/log/dpkg.log",
    ),
]
