"""The hardening role's logging part: auditd, audit rules, journald, rsyslog, logrotate, log files.

Everything is written from the tables in ``hardening/controls/logging.py`` (auditd.conf lines,
audit rule groups, the journald and rsyslog drop-ins), the same tables the controls check.

Inside a container (systemd-nspawn) the kernel's audit subsystem belongs to the parent: auditd
cannot run there and rules cannot be loaded. The configuration is still written, compiled and
enabled for boot, and the role says so (``host.noop`` and a warning) instead of skipping it or
failing. On a host whose loaded rules are already locked (-e 2), new rules take effect at the
next boot; the role says that too.
"""

from __future__ import annotations

import io
import logging as pylogging
import shlex

from pyinfra import host
from pyinfra.facts.files import Directory, File
from pyinfra.operations import apt, files, server, systemd

from hardening.controls.logging import (
    AUDIT_COMPILED,
    AUDIT_LOG,
    AUDIT_RULES_FILE,
    AUDITD_CONF,
    AUDITD_SETTINGS,
    AUTH_LOG,
    CLOSED_LOG_DIRS,
    JOURNALD_DROPIN,
    LOGROTATE_CONF,
    RSYSLOG_DROPIN,
    audit_rules_file,
    auditd_line,
    journald_dropin,
    rsyslog_dropin,
)
from roles.facts import AuditRulesLocked, ContainerKind, ControlOutput, ControlVerdict

logger = pylogging.getLogger("citadel.hardening.logging")

PACKAGES = ["auditd", "rsyslog", "logrotate"]


def _mode(fact: dict) -> int:
    # pyinfra's File fact gives the mode as the octal digits read as a decimal int (640).
    return int(str(fact["mode"]), 8)


def _tighten(path: str, max_mode: int, user: str, groups: list[str], name: str, directory: bool = False) -> None:
    """If `path` exists with more permission than `max_mode` or a wrong owner/group, fix just that.

    Keeps an allowed group and any stricter mode, so a second run (and a stricter site) is left alone.
    """
    fact = host.get_fact(Directory if directory else File, path=path)
    if not fact:
        return
    mode = _mode(fact) & 0o7777
    group = fact["group"] if fact["group"] in groups else groups[0]
    wanted = mode & max_mode
    if wanted == mode and fact["user"] == user and group == fact["group"]:
        return
    operation = files.directory if directory else files.file
    operation(name=name, path=path, user=user, group=group, mode=f"{wanted:04o}")


def _service(unit: str, enabled_id: str, running_id: str | None = None, container_note: str | None = None) -> None:
    """Enable first, then start: enabling a started rsyslog re-creates its syslog.service alias
    and the daemon-reload that follows loses track of the running process.

    `enabled_id` and `running_id` (the same control when not given) name the controls each step fixes.
    """
    systemd.service(name=f"{enabled_id}: {unit} starts at boot", service=unit, enabled=True, running=None)
    if container_note:
        host.noop(container_note)
    else:
        systemd.service(name=f"{running_id or enabled_id}: {unit} running", service=unit, running=True)


def _auditd(container: str | None) -> None:
    conf = [
        files.line(
            name=f"{setting.id}: auditd.conf: {auditd_line(setting)}",
            path=AUDITD_CONF,
            line=rf"^\s*{setting.key}\s*=.*$",
            replace=auditd_line(setting),
        )
        for setting in AUDITD_SETTINGS
    ]
    if not container:
        # auditd re-reads auditd.conf on SIGHUP (Debian's unit has no ExecReload). It applies every
        # AUDITD_SETTINGS row: log-auditd-keep-logs, log-auditd-space-left-action,
        # log-auditd-admin-space-left-action, log-auditd-disk-full-action, log-auditd-disk-error-action,
        # log-auditd-flush.
        server.shell(
            name="log-auditd-* (AUDITD_SETTINGS): auditd re-reads auditd.conf",
            commands=['if [ -s /run/auditd.pid ]; then kill -HUP "$(cat /run/auditd.pid)"; fi'],
            _if=lambda: any(op.did_change() for op in conf),
        )
    files.file(name="log-auditd-conf-permissions: auditd.conf private to root", path=AUDITD_CONF,
               user="root", group="root", mode="0640")

    # One file holds every AUDIT_RULE_GROUPS row's rules (log-audit-identity, log-audit-sudoers,
    # log-audit-user-emulation, log-audit-sudo-log, log-audit-time-change, log-audit-network-env,
    # log-audit-mac-policy, log-audit-perm-mod, log-audit-access-denied, log-audit-mounts, log-audit-session,
    # log-audit-logins, log-audit-delete, log-audit-modules, log-audit-privileged, log-audit-perm-commands,
    # log-audit-sshd-config, log-audit-model-store, log-audit-secrets, log-audit-audit-config), the -e 2 of
    # log-audit-immutable, and the mode of log-audit-rules-permissions.
    rules = files.put(
        name="log-audit-* (AUDIT_RULE_GROUPS), log-audit-immutable, log-audit-rules-permissions: Citadel audit rules",
        src=io.StringIO(audit_rules_file()),
        dest=AUDIT_RULES_FILE,
        user="root",
        group="root",
        mode="0640",
    )
    # Same evidence and judgement as the log-audit-rules-compiled control.
    stale = host.get_fact(ControlVerdict, control_id="log-audit-rules-compiled").status != "pass"
    locked = False
    if not container:
        locked = host.get_fact(AuditRulesLocked)
    if container:
        load = "augenrules"
        host.noop(f"audit rules written and compiled; a {container} container cannot load them (kernel-level, verify on a VM)")
    elif locked:
        load = "augenrules"
        logger.warning("%s: audit rules are locked (-e 2); the new rules take effect at the next reboot", host.name)
        host.noop("audit rules compiled; the kernel's rules are locked (-e 2) until the next reboot")
    else:
        load = "augenrules --load"
    server.shell(
        name=f"log-audit-rules-compiled, log-audit-rules-loaded: compile the audit rules into {AUDIT_COMPILED}"
        + ("" if load == "augenrules" else " and load them"),
        commands=[load],
        _if=(lambda: True) if stale else rules.did_change,
    )

    _tighten("/var/log/audit", 0o750, "root", ["adm", "root"], "log-audit-log-dir: audit log directory closed to others",
             directory=True)
    _tighten(AUDIT_LOG, 0o640, "root", ["adm", "root"], "log-audit-log-files: audit log readable by root and adm only")

    _service(
        "auditd.service", "log-auditd-enabled", "log-auditd-running",
        f"auditd enabled for boot but not started: a {container} container cannot run it (kernel-level)" if container else None,
    )


def _journald() -> None:
    # The drop-in holds every JOURNALD_SETTINGS row: log-journald-persistent, log-journald-compress,
    # log-journald-forward-syslog.
    files.directory(name="log-journald-* (JOURNALD_SETTINGS): journald drop-in directory",
                    path="/etc/systemd/journald.conf.d", user="root", group="root", mode="0755")
    dropin = files.put(
        name="log-journald-* (JOURNALD_SETTINGS): journald: persistent, compressed, forwarded to rsyslog",
        src=io.StringIO(journald_dropin()),
        dest=JOURNALD_DROPIN,
        user="root",
        group="root",
        mode="0644",
    )
    journal = files.directory(
        name="log-journal-dir: persistent journal directory", path="/var/log/journal",
        user="root", group="systemd-journal", mode="2755",
    )
    server.shell(
        name="log-journald-* (JOURNALD_SETTINGS), log-journal-dir: restart journald to apply its settings",
        commands=["systemctl restart systemd-journald"],
        _if=lambda: dropin.did_change() or journal.did_change(),
    )


def _rsyslog() -> None:
    # The drop-in holds RSYSLOG_DIRECTIVES (log-rsyslog-file-mode); rewriting it also drops a network
    # input added there (log-rsyslog-no-network-input).
    dropin = files.put(
        name="log-rsyslog-file-mode, log-rsyslog-no-network-input: rsyslog: private log files, no network input",
        src=io.StringIO(rsyslog_dropin()),
        dest=RSYSLOG_DROPIN,
        user="root",
        group="root",
        mode="0644",
    )
    _service("rsyslog.service", "log-rsyslog-enabled")
    systemd.service(
        name="log-rsyslog-file-mode, log-rsyslog-no-network-input: restart rsyslog for its new settings",
        service="rsyslog.service", running=True, restarted=True,
        _if=dropin.did_change,
    )
    files.file(name="log-auth-log-permissions: auth.log owned by root:adm, 0640", path=AUTH_LOG,
               user="root", group="adm", mode="0640")


def _logrotate() -> None:
    _service("logrotate.timer", "log-logrotate-timer")
    files.line(
        name="log-logrotate-includes: logrotate reads /etc/logrotate.d",
        path=LOGROTATE_CONF,
        line=r"^\s*include\s+/etc/logrotate\.d\s*$",
        replace="include /etc/logrotate.d",
    )


def _log_files() -> None:
    fact = host.get_fact(File, path="/var/log")
    group = fact["group"] if fact and fact["group"] in ("root", "syslog") else "root"
    current = _mode(fact) & 0o7777 if fact else 0o755
    files.directory(name="log-var-log-owner: /var/log owned by root", path="/var/log",
                    user="root", group=group, mode=f"{current & 0o775:04o}")
    for path in CLOSED_LOG_DIRS:
        files.directory(name=f"log-files-not-world-readable: {path} closed to others", path=path,
                        user="root", group="adm", mode="0750")
    # The same listing as the log-files-not-world-readable control: only offenders are changed.
    open_files = host.get_fact(ControlOutput, control_id="log-files-not-world-readable")
    if open_files:
        server.shell(
            name=f"log-files-not-world-readable: close {len(open_files)} log file(s) to other users",
            commands=["chmod g-wx,o-rwx -- " + " ".join(shlex.quote(p) for p in open_files)],
        )


def apply(site, entry) -> None:
    container = host.get_fact(ContainerKind)
    apt.packages(
        name="log-auditd-installed, log-rsyslog-installed, log-logrotate-installed: audit, syslog and log rotation "
        "packages",
        packages=PACKAGES,
        no_recommends=True,
        update=True,
        cache_time=86400,
    )
    _auditd(container)
    _journald()
    _rsyslog()
    _logrotate()
    _log_files()
