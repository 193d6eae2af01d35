"""The hardening role's accounts part: login.defs, password quality, lockout, PAM, su, sudo,
banners, shell environment and account state, from the tables of
``hardening/controls/accounts.py``.

Files are written idempotently (``files.line`` per table row, ``files.put`` for whole files,
the PAM stack included: pam-auth-update would keep a local nullok or md5, so Citadel owns
/etc/pam.d/common-{auth,account,password}).
Account state (shells, locked passwords, UID 0 aliases, sudoers rules) is fixed from the
controls' own offender scripts, run as one fact: the role fixes exactly what the audit would
report, and nothing when the audit would pass, so a second deploy changes nothing.
Every operation's name starts with the id of the control it fixes (or, for one file that
fixes several rows of a table, their ids or the id prefix, e.g. ``acct-pam-*``).

The operator is never locked out: the deploy user (``site.ssh_for(host).user``) keeps its
NOPASSWD sudo rule (it is recorded as the one exemption of acct-sudo-nopasswd), its password
field '*' is left alone (only empty fields are set to '*'), and nothing here touches sshd or
the deploy user's shell, groups or keys. Nothing in this area is kernel-level, so containers
get every setting applied.
"""

from __future__ import annotations

import io
import re
import shlex
from pathlib import Path

from pyinfra import host
from pyinfra.facts.files import File
from pyinfra.operations import apt, files, server

from hardening.controls.accounts import (
    DEPLOY_USER_RECORD,
    LOGIN_DEFS,
    PAM_FILES,
    PAM_SU,
    PROFILE_SCRIPTS,
    PROFILE_TMOUT,
    PROFILE_UMASK,
    SETTINGS,
    STATE_RULES,
    SU_GROUP,
    SUDO_POLICY,
    SUDO_POLICY_CONTENT,
    UNAME_MOTD,
)
from roles.facts import ControlFindings

PACKAGES = ["libpam-pwquality", "cracklib-runtime"]  # cracklib-runtime: the dictionary dictcheck needs
FILES_DIR = Path(__file__).parent / "files" / "accounts"
NAME = re.compile(r"^[a-z_][a-z0-9_.-]*\$?$")
SAFE_PATH = re.compile(r"^/[A-Za-z0-9._/+-]+$")
# The controls that SUDO_POLICY_CONTENT (one file) fixes.
SUDO_POLICY_CONTROLS = "acct-sudo-use-pty, acct-sudo-logfile, acct-sudo-timeout"
# The control each profile script of PROFILE_SCRIPTS fixes.
PROFILE_CONTROLS = {PROFILE_UMASK: "acct-default-umask", PROFILE_TMOUT: "acct-shell-timeout"}


def _names(offenders: list[str]) -> list[str]:
    """First words of offender lines that are plain account or group names."""
    return sorted({line.split()[0] for line in offenders if line.split() and NAME.match(line.split()[0])})


def _paths(offenders: list[str], whole_line: bool = False) -> list[str]:
    """Paths named by offender lines (the first word, or the whole line), if plainly spelled."""
    found = {line.strip() if whole_line else (line.split() or [""])[0] for line in offenders}
    return sorted(p for p in found if SAFE_PATH.match(p))


def apply_settings() -> None:
    """login.defs, useradd defaults, pwquality.conf, faillock.conf: one line per table row."""
    for s in SETTINGS:
        files.line(
            name=f"{s.id}: {s.path}: {s.line()}",
            path=s.path,
            line=s.match(),
            replace=s.line(),
            extended_regex=True,
        )
    files.file(name=f"acct-login-defs-perms: {LOGIN_DEFS} owned by root, 0644",
               path=LOGIN_DEFS, user="root", group="root", mode="0644")


def apply_pam() -> None:
    """Citadel's common-auth/-account/-password (faillock, pwquality, pwhistory, no nullok,
    yescrypt) and su restricted to the empty group, written whole: see PAM_FILES."""
    # One whole file per path fixes every acct-pam-* row of PAM_RULES that reads lines of it.
    for path, content in PAM_FILES.items():
        files.put(name=f"acct-pam-*: PAM stack {path} from PAM_FILES", src=io.StringIO(content), dest=path,
                  user="root", group="root", mode="0644")
    files.put(
        name="acct-su-restricted: su restricted to the empty group (pam_wheel)",
        src=str(FILES_DIR / "pam-su"), dest=PAM_SU, user="root", group="root", mode="0644",
    )


def apply_sudo(deploy_user: str, failing: dict) -> None:
    # First: visudo -c (below) refuses every sudoers file while one drop-in is too open.
    for path in _paths(failing.get("acct-sudoers-d-modes", ("", []))[1]):
        files.file(name=f"acct-sudoers-d-modes: {path}: 0440 root:root",
                   path=path, user="root", group="root", mode="0440")
    files.put(
        name="acct-sudo-nopasswd: record the deploy user, exempt from the no-NOPASSWD rule",
        src=io.StringIO(deploy_user + "\n"), dest=DEPLOY_USER_RECORD, user="root", group="root", mode="0644",
    )
    policy = files.put(
        name=f"{SUDO_POLICY_CONTROLS}: sudo policy: use_pty, log file, credential timeout",
        src=io.StringIO(SUDO_POLICY_CONTENT), dest=SUDO_POLICY, user="root", group="root", mode="0440",
    )
    server.shell(
        name=f"{SUDO_POLICY_CONTROLS}: sudoers still parse (else remove Citadel's policy file, so sudo keeps working)",
        commands=[f"visudo -c -q >/dev/null || {{ rm -f {SUDO_POLICY}; echo 'sudoers invalid: policy removed' >&2; exit 1; }}"],
        _if=policy.did_change,
    )
    exempt = deploy_user if NAME.match(deploy_user) else "^$"
    for path in _paths(failing.get("acct-sudo-nopasswd", ("", []))[1]):
        server.shell(
            name=f"acct-sudo-nopasswd: {path}: NOPASSWD becomes PASSWD (except for {deploy_user})",
            commands=[f"sed -i -E '/^[[:space:]]*{exempt}[[:space:]]/!s/NOPASSWD[[:space:]]*:/PASSWD:/g' {shlex.quote(path)}"],
        )
    for path in _paths(failing.get("acct-sudo-authenticate", ("", []))[1]):
        server.shell(
            name=f"acct-sudo-authenticate: {path}: remove rules disabling sudo authentication",
            commands=[f"sed -i -E '/^[^#]*!authenticate/d' {shlex.quote(path)}"],
        )


def apply_account_state(failing: dict) -> None:
    def offenders(control_id: str) -> list[str]:
        return failing.get(control_id, ("", []))[1]

    for name in _names(offenders("acct-no-empty-passwords")):
        server.shell(name=f"acct-no-empty-passwords: {name}: empty password becomes unusable ('*')",
                     commands=[f"usermod -p '*' {name}"])
    if "acct-shadowed-passwords" in failing:
        server.shell(name="acct-shadowed-passwords: move password fields into /etc/shadow (pwconv)",
                     commands=["pwconv"])
    # Aliases (a second UID 0 account, a later account reusing a UID or GID) are removed from
    # the account files; userdel would refuse (the UID is in use) or delete a shared home.
    for control_id in ("acct-uid0-root-only", "acct-unique-uids"):
        for name in _names(offenders(control_id)):
            if name != "root":
                server.shell(name=f"{control_id}: remove account {name} (aliases another UID)",
                             commands=[f"sed -i '/^{re.escape(name)}:/d' /etc/passwd /etc/shadow"])
    for name in _names(offenders("acct-unique-gids")):
        server.shell(name=f"acct-unique-gids: remove group {name} (aliases another GID)",
                     commands=[f"sed -i '/^{re.escape(name)}:/d' /etc/group /etc/gshadow"])
    for name in _names(offenders("acct-system-nologin")):
        server.shell(name=f"acct-system-nologin: {name}: no login shell",
                     commands=[f"usermod -s /usr/sbin/nologin {name}"])
    for name in _names(offenders("acct-nologin-locked")):
        server.shell(name=f"acct-nologin-locked: {name}: lock the password (no login shell)",
                     commands=[f"usermod -L {name}"])
    if "acct-root-locked" in failing:
        server.shell(name="acct-root-locked: lock root's password (administrators use sudo)",
                     commands=["usermod -L root"])
    server.group(name=f"acct-su-group-empty: su group {SU_GROUP} (kept empty)", group=SU_GROUP, system=True)
    su_lines = offenders("acct-su-group-empty")
    if any(line.endswith("is a member") for line in su_lines):
        server.shell(name=f"acct-su-group-empty: empty the su group {SU_GROUP}", commands=[f"gpasswd -M '' {SU_GROUP}"])
    for line in su_lines:
        if line.startswith("@primary"):
            host.noop(f"acct-su-group-empty: {SU_GROUP}: {line.removeprefix('@primary ')}: "
                      "change that account's primary group by hand")
    dotfiles = offenders("acct-no-rhosts-netrc")
    for path in _paths(dotfiles, whole_line=True):
        server.shell(name=f"acct-no-rhosts-netrc: remove {path} (clear-text credentials or host trust)",
                     commands=[f"rm -f {shlex.quote(path)}"])
    for path in set(dotfiles) - set(_paths(dotfiles, whole_line=True)):
        host.noop(f"acct-no-rhosts-netrc: {path!r}: oddly named, not removed automatically; remove it by hand")


def apply_environment(banner: str) -> None:
    for control_id, path in (("acct-issue-banner", "/etc/issue"), ("acct-motd-banner", "/etc/motd")):
        files.put(name=f"{control_id}: login banner {path}",
                  src=io.StringIO(banner), dest=path, user="root", group="root", mode="0644")
    uname = host.get_fact(File, path=UNAME_MOTD)
    if uname:
        files.file(name=f"acct-motd-no-uname: {UNAME_MOTD} not run at login",
                   path=UNAME_MOTD, user="root", group="root", mode="0644")
    for path, content in PROFILE_SCRIPTS.items():
        files.put(name=f"{PROFILE_CONTROLS[path]}: login shell setting {path}",
                  src=io.StringIO(content), dest=path, user="root", group="root", mode="0644")
    files.line(name="acct-nologin-not-a-shell: nologin is not a login shell", path="/etc/shells",
               line=r"^.*/nologin[[:space:]]*$", present=False, extended_regex=True)
    files.file(name="acct-no-hosts-equiv: no /etc/hosts.equiv", path="/etc/hosts.equiv", present=False)


def apply(site, entry) -> None:
    deploy_user = site.ssh_for(host.name).user
    # The controls' own checks, run as the audit runs them: (status, offenders) of each that would not pass.
    failing = host.get_fact(ControlFindings, control_ids=[r.id for r in STATE_RULES], _sudo=True)
    apt.packages(name="acct-pam-pwquality: password quality checking and its dictionary",
                 packages=PACKAGES, no_recommends=True)
    apply_settings()
    apply_pam()
    apply_sudo(deploy_user, failing)
    apply_account_state(failing)
    apply_environment(site.settings.login_banner.strip() + "\n")
