"""Accounts, authentication and login controls (CIS Debian 12 sections 5.2-5.4, 1.6, 7.2;
dev-sec linux-baseline os-01, os-03b, os-04, os-05, os-07, os-09).

Like the SSH controls, the settings are tables: each row is one control, checked read-only
here and written by ``roles/hardening/accounts.py`` from the same row, so the check and the
fix cannot drift apart. State that no file write can fix (an empty password, a second UID 0
account, a system account with a shell) is checked by an "offenders" script whose output
names what is wrong; the role runs the very same script as a fact and fixes what it names.

The operator's own account is never touched: it has no password ('*'), logs in with a key and
uses sudo without a password. That NOPASSWD rule is the one exception to acct-sudo-nopasswd:
the role records the deploy user of the inventory (``site.ssh_for(host).user``) in
/etc/citadel/deploy-user, and the check exempts sudoers rules for that user only.

The tables' row types (Setting, LoginDefsSetting, PamRule, StateRule) are ``hardening.rows.Row``
subclasses; their check kinds (ConfigValue, Lines, SudoDefault, Offenders) live in
``hardening/checks/accounts.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hardening.checks import Check, FileContent, FileMode
from hardening.checks.accounts import ConfigValue, Lines, Offenders, SudoDefault
from hardening.model import Control, References
from hardening.rows import Row, controls_of

# --- constants shared with the role ----------------------------------------------------------

LOGIN_DEFS = "/etc/login.defs"
USERADD_DEFAULTS = "/etc/default/useradd"
PWQUALITY = "/etc/security/pwquality.conf"
PWQUALITY_D = "/etc/security/pwquality.conf.d/*.conf"  # read before the main file (pwquality.conf(5))
FAILLOCK = "/etc/security/faillock.conf"
PAM_AUTH = "/etc/pam.d/common-auth"
PAM_ACCOUNT = "/etc/pam.d/common-account"
PAM_PASSWORD = "/etc/pam.d/common-password"
PAM_SU = "/etc/pam.d/su"
SU_GROUP = "citadel-su"  # empty on purpose: nobody may use su (root's own su still works)
SUDO_POLICY = "/etc/sudoers.d/citadel-policy"
SUDO_LOG = "/var/log/sudo.log"
DEPLOY_USER_RECORD = "/etc/citadel/deploy-user"
PROFILE_UMASK = "/etc/profile.d/citadel-umask.sh"
PROFILE_TMOUT = "/etc/profile.d/citadel-tmout.sh"
UMASK = "027"
TMOUT_SECONDS = 900
PWHISTORY_REMEMBER = 24
UNAME_MOTD = "/etc/update-motd.d/10-uname"
# Banner text must not say what the host runs: OS names or getty escapes for release/kernel.
OS_DETAILS = r"(debian|ubuntu|gnu/linux|\\[mrsv])"
# A syntactically valid password hash that nobody knows: used by break recipes only.
BREAK_HASH = "$6$citadelbreak$Zm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFyZm9vYmFy"

ACCESS = ["164.312(a)(1)"]
AUTHN = ["164.312(a)(1)", "164.312(d)"]
UNIQUE_ID = ["164.312(a)(1)", "164.312(a)(2)(i)"]
LOGOFF = ["164.312(a)(2)(iii)"]
AUDIT = ["164.312(b)"]
THREATS = ["T9", "T10"]

_SUDOERS_FILES = "/etc/sudoers /etc/sudoers.d/*"


# --- the area's row types share its threats ------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class AccountsRow(Row):
    """A row of this area: its controls answer stolen or guessed credentials (T9, T10)."""

    threats: Sequence[str] = tuple(THREATS)


# --- key/value settings: login.defs, useradd defaults, pwquality, faillock ------------------


@dataclass(frozen=True, kw_only=True)
class Setting(AccountsRow):
    """One key of a key/value file: the role writes `write`, the check judges the effective
    value with `op` (ConfigValue's values, low, high, default), the break writes `break_value`."""

    path: str
    key: str
    write: str  # the value the role writes ('' for a flag)
    op: Literal["eq", "range", "zero_or_min", "flag", "umask", "path"]
    values: Sequence[str] = ()  # eq: allowed values; umask: the required mask
    low: int | None = None
    high: int | None = None
    default: str | None = None  # the program's value when the key is absent
    break_value: str | None  # None: the break deletes the key (flags)

    @property
    def style(self) -> Literal["space", "equals"]:
        return "space" if self.path == LOGIN_DEFS else "equals"

    @property
    def read_paths(self) -> list[str]:
        return [PWQUALITY_D, PWQUALITY] if self.path == PWQUALITY else [self.path]

    def line(self, value: str | None = None) -> str:
        """The line the role writes (or, with `value`, the break recipe writes)."""
        value = self.write if value is None else value
        if self.path == LOGIN_DEFS:
            return f"{self.key}\t{value}"
        if self.path == USERADD_DEFAULTS:
            return f"{self.key}={value}"
        return f"{self.key} = {value}" if value != "" else self.key

    def match(self) -> str:
        """ERE matching the active lines the role replaces (comments are left alone: login.defs
        comments mention every key, and pwquality/faillock keep their commented examples)."""
        if self.path == LOGIN_DEFS:
            return rf"^[[:space:]]*{self.key}([[:space:]].*)?$"
        return rf"^[[:space:]]*{self.key}([[:space:]]*=.*|[[:space:]]*)$"

    def make_check(self) -> Check:
        return ConfigValue(
            paths=self.read_paths, key=self.key, style=self.style, describe=self.title, op=self.op,
            values=list(self.values), low=self.low, high=self.high, default=self.default,
        )

    def make_break(self) -> str:
        if self.break_value is None:
            return f"sed -i -E '/^[[:space:]]*{re.escape(self.key)}[[:space:]]*$/d' {self.path}"
        return f"sed -i -E 's#{self.match()}#{self.line(self.break_value)}#' {self.path}"


@dataclass(frozen=True, kw_only=True)
class LoginDefsSetting(Setting):
    """A key of /etc/login.defs (``KEY<tab>value``)."""

    path: str = LOGIN_DEFS


SETTINGS: list[Setting] = [
    LoginDefsSetting(
        id="acct-pass-max-days", key="PASS_MAX_DAYS", write="365", op="range", low=1, high=365, break_value="99999",
        title="New accounts' passwords expire within 365 days",
        rationale="A password that never expires stays valid for an attacker who phished it years ago; on a host "
                  "holding patient data every credential needs a bounded life. (dev-sec os-05 asks 60; CIS allows "
                  "365, which the check accepts as the upper bound.)",
        severity="medium", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.4.1.1"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-pass-min-days", key="PASS_MIN_DAYS", write="7", op="range", low=1, break_value="0",
        title="Passwords cannot be changed again the same day",
        rationale="Without a minimum age a user can cycle through the password history in minutes and reuse the "
                  "old password, defeating pam_pwhistory.",
        severity="low", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.4.1.2"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-pass-warn-age", key="PASS_WARN_AGE", write="7", op="range", low=7, break_value="1",
        title="Users are warned 7 days before their password expires",
        rationale="Warned users change their password in time instead of being locked out of a clinical service or "
                  "asking for an insecure emergency reset.",
        severity="low", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.4.1.3"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-login-defs-umask", key="UMASK", write=UMASK, op="umask", values=[UMASK], break_value="022",
        title="login.defs sets the default umask 027 (no access for others)",
        rationale="Files users create (exported reports, prompts saved for debugging, model outputs) must not be "
                  "readable by every other account on a host that processes patient data.",
        severity="medium", hipaa=ACCESS, nist=["AC-3", "AC-6"], cis=["5.4.3.3"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-encrypt-method", key="ENCRYPT_METHOD", write="YESCRYPT", op="eq", values=["YESCRYPT", "SHA512"],
        break_value="MD5",
        title="Passwords set with chpasswd/newusers are hashed with yescrypt or SHA-512",
        rationale="A stolen /etc/shadow hashed with MD5 or DES is cracked in hours; yescrypt and SHA-512 crypt make "
                  "offline guessing of administrators' passwords expensive.",
        severity="high", hipaa=AUTHN, nist=["IA-5(1)", "SC-13"], cis=["5.4.1.4"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-login-retries", key="LOGIN_RETRIES", write="5", op="range", low=1, high=5, break_value="20",
        title="Console logins allow at most 5 attempts per session",
        rationale="Bounds password guessing at the console of a host in a shared hospital machine room.",
        severity="low", hipaa=AUTHN, nist=["AC-7"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-login-timeout", key="LOGIN_TIMEOUT", write="60", op="range", low=1, high=60, break_value="600",
        title="Console logins time out after 60 seconds",
        rationale="An abandoned half-finished login must not hold a session open at an unattended console.",
        severity="low", hipaa=AUTHN, nist=["AC-7", "AC-12"], devsec=["os-05"],
    ),
    LoginDefsSetting(
        id="acct-login-defs-supath", key="ENV_SUPATH",
        write="PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin", op="path",
        break_value="PATH=.:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        title="su gives root a PATH of absolute system directories only",
        rationale="A '.' or empty entry in root's PATH runs a planted program from whatever directory root is in: a "
                  "local privilege escalation to everything on the host.",
        severity="high", hipaa=ACCESS, nist=["CM-6", "AC-6"], cis=["5.4.2.5"], devsec=["os-04", "os-05"],
    ),
    LoginDefsSetting(
        id="acct-login-defs-path", key="ENV_PATH", write="PATH=/usr/local/bin:/usr/bin:/bin", op="path",
        break_value="PATH=/usr/local/bin:/usr/bin:/bin::",
        title="Login gives users a PATH of absolute system directories only",
        rationale="A '.' or empty PATH entry lets another user's planted file run as whoever logs in, including an "
                  "administrator about to use sudo.",
        severity="medium", hipaa=ACCESS, nist=["CM-6"], devsec=["os-04", "os-05"],
    ),
    Setting(
        id="acct-inactive-lock", path=USERADD_DEFAULTS, key="INACTIVE", write="45", op="range", low=0, high=45,
        break_value="-1",
        title="New accounts lock 45 days after their password expires",
        rationale="Accounts of staff who left or rotated off the project must not stay usable indefinitely.",
        severity="low", hipaa=UNIQUE_ID, nist=["AC-2(3)"], cis=["5.4.1.5"],
    ),
    # Password quality (pam_pwquality reads pwquality.conf.d/*.conf first, then pwquality.conf).
    Setting(
        id="acct-pwquality-minlen", path=PWQUALITY, key="minlen", write="14", op="range", low=14, break_value="8",
        title="New passwords have at least 14 characters",
        rationale="Length is what makes a password resist offline cracking of a stolen shadow file.",
        severity="high", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.3.3.2.2"],
    ),
    Setting(
        id="acct-pwquality-minclass", path=PWQUALITY, key="minclass", write="3", op="range", low=3, high=4,
        break_value="1",
        title="New passwords mix at least 3 character classes",
        rationale="Single-class passwords fall to small dictionaries and masks.",
        severity="medium", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.3.3.2.3"],
    ),
    Setting(
        id="acct-pwquality-difok", path=PWQUALITY, key="difok", write="2", op="range", low=2, break_value="0",
        title="A new password differs from the old one in at least 2 characters",
        rationale="Changing one character of a leaked password does not make it a new secret.",
        severity="low", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.3.3.2.1"],
    ),
    Setting(
        id="acct-pwquality-maxrepeat", path=PWQUALITY, key="maxrepeat", write="3", op="range", low=1, high=3,
        default="0", break_value="0",
        title="New passwords repeat a character at most 3 times in a row",
        rationale="Padding like 'aaaaaaaa' satisfies length rules without adding strength.",
        severity="low", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.3.3.2.4"],
    ),
    Setting(
        id="acct-pwquality-dictcheck", path=PWQUALITY, key="dictcheck", write="1", op="eq", values=["1"],
        default="1", break_value="0",
        title="New passwords are checked against the cracklib dictionary",
        rationale="Dictionary words are the first thing any password cracker tries.",
        severity="medium", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.3.3.2.6"],
    ),
    Setting(
        id="acct-pwquality-enforce-root", path=PWQUALITY, key="enforce_for_root", write="", op="flag",
        break_value=None,
        title="Password quality rules apply to root too",
        rationale="Otherwise an administrator changing a password as root can set a weak one.",
        severity="medium", hipaa=AUTHN, nist=["IA-5(1)"], cis=["5.3.3.2.8"],
    ),
    # Lockout after failed authentication (pam_faillock).
    Setting(
        id="acct-faillock-deny", path=FAILLOCK, key="deny", write="5", op="range", low=1, high=5, break_value="20",
        title="Accounts lock after 5 failed authentication attempts",
        rationale="Online guessing of a password (console, su, sudo) stops after a handful of tries.",
        severity="high", hipaa=AUTHN, nist=["AC-7"], cis=["5.3.3.1.1"],
    ),
    Setting(
        id="acct-faillock-unlock-time", path=FAILLOCK, key="unlock_time", write="900", op="zero_or_min", low=900,
        break_value="60",
        title="A locked account stays locked for at least 15 minutes",
        rationale="A short lockout only slows guessing down; 15 minutes makes it impractical.",
        severity="medium", hipaa=AUTHN, nist=["AC-7"], cis=["5.3.3.1.2"],
    ),
    Setting(
        id="acct-faillock-root", path=FAILLOCK, key="even_deny_root", write="", op="flag", break_value=None,
        title="Failed-login lockout applies to root as well",
        rationale="root is the account attackers guess first; it must not be exempt from lockout.",
        severity="medium", hipaa=AUTHN, nist=["AC-7"], cis=["5.3.3.1.3"],
    ),
]


# --- PAM stack -------------------------------------------------------------------------------

# Citadel owns /etc/pam.d/common-{auth,account,password}: Debian 12's pam-auth-update output
# with pam_faillock, pam_pwquality and pam_pwhistory enabled and pam_unix without nullok (the
# layout of CIS Debian 12 section 5.3.2). pam-auth-update keeps local option edits (an added
# nullok, md5) when it regenerates, so it cannot restore these; the role writes them whole, and
# pam-auth-update run by later package upgrades sees local changes and leaves them alone.
_PAM_HEADER = "# Managed by Citadel (hardening/controls/accounts.py). Edits are overwritten.\n"
PAM_FILES = {
    PAM_AUTH: _PAM_HEADER + (
        "auth\trequisite\t\t\tpam_faillock.so preauth\n"
        "auth\t[success=2 default=ignore]\tpam_unix.so try_first_pass\n"
        "auth\t[default=die]\t\t\tpam_faillock.so authfail\n"
        "auth\trequisite\t\t\tpam_deny.so\n"
        "auth\trequired\t\t\tpam_permit.so\n"
    ),
    PAM_ACCOUNT: _PAM_HEADER + (
        "account\trequired\t\t\tpam_faillock.so\n"
        "account\t[success=1 new_authtok_reqd=done default=ignore]\tpam_unix.so\n"
        "account\trequisite\t\t\tpam_deny.so\n"
        "account\trequired\t\t\tpam_permit.so\n"
    ),
    PAM_PASSWORD: _PAM_HEADER + (
        "password\trequisite\t\t\tpam_pwquality.so retry=3\n"
        f"password\trequisite\t\t\tpam_pwhistory.so remember={PWHISTORY_REMEMBER} enforce_for_root try_first_pass use_authtok\n"
        "password\t[success=1 default=ignore]\tpam_unix.so obscure use_authtok try_first_pass yescrypt\n"
        "password\trequisite\t\t\tpam_deny.so\n"
        "password\trequired\t\t\tpam_permit.so\n"
    ),
}

# A PAM control field: a keyword or a bracketed [value=action ...] list.
_CONTROL = r"(\[[^\]]*\]|\S+)"

PAM_SU_WHEEL = f"auth       required   pam_wheel.so use_uid group={SU_GROUP}"


@dataclass(frozen=True, kw_only=True)
class PamRule(AccountsRow):
    """Lines the PAM files must (`required`) and must not (`forbidden`) contain, as
    (path, Python regex) pairs; the role writes those files whole (PAM_FILES, pam-su)."""

    describe: str  # what a pass means, for the evidence line
    required: Sequence[tuple[str, str]] = ()
    forbidden: Sequence[tuple[str, str]] = ()
    break_with: str
    hipaa: Sequence[str] = tuple(AUTHN)

    def make_check(self) -> Check:
        return Lines(describe=self.describe, required=list(self.required), forbidden=list(self.forbidden))

    def make_break(self) -> str:
        return self.break_with


PAM_RULES: list[PamRule] = [
    PamRule(
        id="acct-pam-faillock",
        describe="pam_faillock counts failures and locks",
        required=[
            (PAM_AUTH, r"^\s*auth\s+requisite\s+pam_faillock\.so\s+preauth\b"),
            (PAM_AUTH, r"^\s*auth\s+\[default=die\]\s+pam_faillock\.so\s+authfail\b"),
            (PAM_ACCOUNT, r"^\s*account\s+required\s+pam_faillock\.so\b"),
        ],
        break_with=f"sed -i '/pam_faillock.so authfail/d' {PAM_AUTH}",
        title="PAM locks accounts after repeated failures (pam_faillock)",
        rationale="faillock.conf has no effect unless pam_faillock is in the authentication stack of every service.",
        severity="high", nist=["AC-7"], cis=["5.3.2.2"],
    ),
    PamRule(
        id="acct-pam-pwquality",
        describe="pam_pwquality checks new passwords",
        required=[(PAM_PASSWORD, r"^\s*password\s+requisite\s+pam_pwquality\.so\b")],
        break_with=f"sed -i '/pam_pwquality.so/d' {PAM_PASSWORD}",
        title="PAM checks the quality of new passwords (libpam-pwquality installed and enabled)",
        rationale="Without pam_pwquality in the password stack nothing stops an administrator choosing 'hospital1' "
                  "on a host with patient data, and pwquality.conf has no effect.",
        severity="high", nist=["IA-5(1)"], cis=["5.3.1.3", "5.3.2.3"],
    ),
    PamRule(
        id="acct-pam-pwhistory",
        describe="pam_pwhistory refuses reused passwords",
        required=[(
            PAM_PASSWORD,
            r"^\s*password\s+requisite\s+pam_pwhistory\.so\b"
            r"(?=.*\bremember=(2[4-9]|[3-9]\d|\d{3,})\b)(?=.*\benforce_for_root\b)",
        )],
        break_with=f"sed -i 's/remember={PWHISTORY_REMEMBER}/remember=3/' {PAM_PASSWORD}",
        title=f"PAM refuses the last {PWHISTORY_REMEMBER} passwords, for root too (pam_pwhistory)",
        rationale="Users forced to change a password otherwise switch back to the one that may have leaked.",
        severity="medium", nist=["IA-5(1)"], cis=["5.3.2.4", "5.3.3.3.1", "5.3.3.3.2"],
    ),
    PamRule(
        id="acct-pam-no-nullok",
        describe="pam_unix accepts no empty passwords",
        required=[(PAM_AUTH, rf"^\s*auth\s+{_CONTROL}\s+pam_unix\.so\b")],
        forbidden=[(path, r"pam_unix\.so\b.*\bnullok\b") for path in (PAM_AUTH, PAM_ACCOUNT, PAM_PASSWORD)],
        break_with=f"sed -i 's/pam_unix.so /pam_unix.so nullok /' {PAM_AUTH}",
        title="PAM never accepts an empty password (no nullok)",
        rationale="With nullok, an account whose password field is emptied by mistake or by an intruder opens "
                  "without any secret.",
        severity="high", nist=["IA-2", "IA-5"], cis=["5.3.3.4.1"],
    ),
    PamRule(
        id="acct-pam-strong-hash",
        describe="pam_unix hashes new passwords with yescrypt or SHA-512",
        required=[(PAM_PASSWORD, rf"^\s*password\s+{_CONTROL}\s+pam_unix\.so\b.*\b(yescrypt|sha512)\b")],
        forbidden=[(PAM_PASSWORD, r"pam_unix\.so\b.*\b(md5|bigcrypt|sha256|blowfish|gost_yescrypt|remember=\d+)\b")],
        break_with=f"sed -i 's/yescrypt/md5/' {PAM_PASSWORD}",
        title="PAM hashes new passwords with yescrypt or SHA-512",
        rationale="Passwords changed through passwd(1) must get a strong hash, or a copied shadow file gives them "
                  "away.",
        severity="high", nist=["IA-5(1)", "SC-13"], cis=["5.3.3.4.2", "5.3.3.4.3"],
    ),
    PamRule(
        id="acct-su-restricted",
        describe=f"su is limited to members of the empty group {SU_GROUP}",
        required=[(PAM_SU, rf"^\s*auth\s+required\s+pam_wheel\.so\s+use_uid\s+group={SU_GROUP}\s*$")],
        break_with=f"sed -i '/pam_wheel.so use_uid/d' {PAM_SU}",
        title="su is restricted to an empty group (pam_wheel)",
        rationale="Administrators escalate with sudo, which logs who did what; su to root leaves only 'root' in the "
                  "logs and bypasses the attribution HIPAA asks for.",
        severity="medium", hipaa=UNIQUE_ID, nist=["AC-6(2)", "AU-9"], cis=["5.2.7"],
    ),
]


# --- sudo ------------------------------------------------------------------------------------

# What the role writes into SUDO_POLICY; the SudoDefault checks below read the effective values.
SUDO_DEFAULTS = ["use_pty", f'logfile="{SUDO_LOG}"', "timestamp_timeout=15"]

# Offender scripts (run as root, read-only). Each prints what to fix, one per line.
NOPASSWD_SCRIPT = (
    f"exempt=$(head -n1 {DEPLOY_USER_RECORD} 2>/dev/null | tr -cd 'a-z0-9_-'); "
    f"for f in {_SUDOERS_FILES}; do [ -f \"$f\" ] || continue; "
    "grep -nE '^[^#]*NOPASSWD[[:space:]]*:' \"$f\" | while IFS= read -r l; do "
    "who=$(printf '%s' \"${l#*:}\" | awk '{print $1}'); "
    "[ -n \"$exempt\" ] && [ \"$who\" = \"$exempt\" ] && continue; echo \"$f line ${l%%:*}: ${l#*:}\"; done; done"
)
AUTHENTICATE_SCRIPT = (
    f"for f in {_SUDOERS_FILES}; do [ -f \"$f\" ] && grep -nE '^[^#]*!authenticate' \"$f\" | sed \"s|^|$f line |\"; done; true"
)
SUDOERS_D_MODES_SCRIPT = (
    "find /etc/sudoers.d -maxdepth 1 -type f \\( -perm /0337 -o ! -user root -o ! -group root \\) "
    "-printf '%p %m %u:%g\\n'"
)

# --- accounts (passwd, shadow, group) --------------------------------------------------------

_UID_MIN = "min=$(awk '/^[[:space:]]*UID_MIN[[:space:]]/{print $2}' /etc/login.defs); min=${min:-1000}; "
_SHELLS = "FILENAME==\"/etc/shells\" { if ($0 !~ /^[[:space:]]*#/ && $0 != \"\" && $0 !~ /nologin$/) valid[$0]=1; next } "

EMPTY_PASSWORD_SCRIPT = "awk -F: '$2 == \"\" {print $1, \"has an empty password\"}' /etc/shadow"
SHADOWED_SCRIPT = "awk -F: '$2 != \"x\" {print $1, \"keeps its password field in /etc/passwd\"}' /etc/passwd"
UID0_SCRIPT = "awk -F: '$3 == 0 && $1 != \"root\" {print $1, \"has UID 0\"}' /etc/passwd"
# Later entries sharing an earlier one's ID (UID 0 aliases belong to acct-uid0-root-only).
DUP_UID_SCRIPT = "awk -F: '$3 != 0 { if ($3 in seen) print $1, \"reuses UID\", $3, \"of\", seen[$3]; else seen[$3]=$1 }' /etc/passwd"
DUP_GID_SCRIPT = "awk -F: '{ if ($3 in seen) print $1, \"reuses GID\", $3, \"of\", seen[$3]; else seen[$3]=$1 }' /etc/group"
SYSTEM_SHELL_SCRIPT = (
    _UID_MIN + "awk -F: -v min=\"$min\" '" + _SHELLS +
    "($3+0) < min && $1 !~ /^(root|sync|shutdown|halt)$/ && ($7 in valid) {print $1, \"has the login shell\", $7}' "
    "/etc/shells /etc/passwd"
)
NOLOGIN_LOCKED_SCRIPT = (
    "awk -F: '" + _SHELLS + "FILENAME==\"/etc/passwd\" { if (!($7 in valid) && $1 != \"root\") nol[$1]=1; next } "
    "($1 in nol) && $2 !~ /^[!*]/ {print $1, \"has no login shell but an unlocked password\"}' "
    "/etc/shells /etc/passwd /etc/shadow"
)
ROOT_LOCKED_SCRIPT = "awk -F: '$1 == \"root\" && $2 !~ /^[!*]/ {print \"root has a usable password\"}' /etc/shadow"
SU_GROUP_SCRIPT = (
    f"if g=$(getent group {SU_GROUP}); then "
    "printf '%s\\n' \"$g\" | cut -d: -f4 | tr ',' '\\n' | grep . | sed 's/$/ is a member/'; "
    "gid=$(printf '%s' \"$g\" | cut -d: -f3); "
    "awk -F: -v gid=\"$gid\" '$4 == gid {print \"@primary\", $1, \"has it as primary group\"}' /etc/passwd; "
    f"else echo '@missing group {SU_GROUP} does not exist'; fi"
)
DOTFILES_SCRIPT = (
    _UID_MIN + "awk -F: -v min=\"$min\" '($3 == 0 || $3 >= min) && $6 != \"\" && $6 != \"/\" {print $6}' /etc/passwd | sort -u | "
    "while IFS= read -r d; do for n in .rhosts .shosts .netrc; do [ -e \"$d/$n\" ] && echo \"$d/$n\"; done; done; true"
)


@dataclass(frozen=True, kw_only=True)
class StateRule(AccountsRow):
    """Account state no file write fixes: `script` (read-only, run as root) prints one
    offender per line; the role runs the same script and fixes what it names."""

    script: str
    describe: str  # what the offenders are, for the evidence line
    break_with: str

    def make_check(self) -> Check:
        return Offenders(script_text=self.script, describe=self.describe)

    def make_break(self) -> str:
        return self.break_with


STATE_RULES: list[StateRule] = [
    StateRule(
        id="acct-sudo-nopasswd", script=NOPASSWD_SCRIPT, describe="NOPASSWD rules for users other than the deploy user",
        break_with="printf 'nobody ALL=(ALL) NOPASSWD: /usr/bin/id\\n' > /etc/sudoers.d/zz-nopasswd "
                   "&& chmod 0440 /etc/sudoers.d/zz-nopasswd",
        title="sudo asks for a password, except for the recorded deploy user",
        rationale="A stolen session of any other sudoer must not become root without a password. The one exception "
                  "is the deploy user of the inventory (key-only, no password at all), recorded by the role in "
                  f"{DEPLOY_USER_RECORD}: it could not use sudo otherwise.",
        severity="high", hipaa=UNIQUE_ID, nist=["AC-6(2)", "IA-11"], cis=["5.2.4"],
    ),
    StateRule(
        id="acct-sudo-authenticate", script=AUTHENTICATE_SCRIPT, describe="sudoers lines disabling authentication",
        break_with="printf 'Defaults:nobody !authenticate\\n' > /etc/sudoers.d/zz-authenticate "
                   "&& chmod 0440 /etc/sudoers.d/zz-authenticate",
        title="No sudoers rule disables authentication (!authenticate)",
        rationale="'Defaults !authenticate' silently turns every sudo rule into a passwordless one.",
        severity="high", hipaa=UNIQUE_ID, nist=["AC-6(2)", "IA-11"], cis=["5.2.5"],
    ),
    StateRule(
        id="acct-sudoers-d-modes", script=SUDOERS_D_MODES_SCRIPT,
        describe="sudoers.d files more open than 0440 root:root",
        break_with="chmod 0640 /etc/sudoers.d/README",
        title="Every file in /etc/sudoers.d is 0440 root:root",
        rationale="A writable sudoers drop-in is a root shell for whoever can write it.",
        severity="high", hipaa=ACCESS, nist=["AC-6", "CM-6"],
    ),
    StateRule(
        id="acct-no-empty-passwords", script=EMPTY_PASSWORD_SCRIPT, describe="accounts with an empty password",
        break_with="passwd -d citadel",
        title="No account has an empty password",
        rationale="An empty password field lets anyone log in as that account at the console or through su.",
        severity="critical", hipaa=AUTHN, nist=["IA-5"], cis=["7.2.2"],
    ),
    StateRule(
        id="acct-shadowed-passwords", script=SHADOWED_SCRIPT, describe="accounts not using /etc/shadow",
        break_with="sed -i 's/^games:x:/games:*:/' /etc/passwd",
        title="Every account's password lives in /etc/shadow",
        rationale="/etc/passwd is world-readable: a hash kept there can be copied and cracked by any local user.",
        severity="high", hipaa=AUTHN, nist=["IA-5(1)"], cis=["7.2.1"], devsec=["os-03b"],
    ),
    StateRule(
        id="acct-uid0-root-only", script=UID0_SCRIPT, describe="accounts other than root with UID 0",
        break_with="useradd -o -u 0 -g 0 -M -d /nonexistent -s /usr/sbin/nologin toor",
        title="root is the only account with UID 0",
        rationale="A second UID 0 account is a hidden root: every action it takes is logged under another name.",
        severity="critical", hipaa=UNIQUE_ID, nist=["AC-6", "IA-2"], cis=["5.4.2.1"],
    ),
    StateRule(
        id="acct-unique-uids", script=DUP_UID_SCRIPT, describe="accounts sharing a UID",
        break_with="useradd -o -u 1000 -N -g 1000 -M -d /nonexistent -s /usr/sbin/nologin dupuser",
        title="No two accounts share a UID",
        rationale="Accounts sharing a UID are one identity to the kernel: file access and audit records cannot tell "
                  "the people apart (unique user identification).",
        severity="high", hipaa=UNIQUE_ID, nist=["IA-2", "AC-2"], cis=["7.2.5"], devsec=["os-07"],
    ),
    StateRule(
        id="acct-unique-gids", script=DUP_GID_SCRIPT, describe="groups sharing a GID",
        break_with="groupadd -o -g 1000 dupgroup",
        title="No two groups share a GID",
        rationale="A group aliasing another's GID silently grants its members that group's file access.",
        severity="medium", hipaa=ACCESS, nist=["AC-2", "AC-3"], cis=["7.2.6"], devsec=["os-07"],
    ),
    StateRule(
        id="acct-system-nologin", script=SYSTEM_SHELL_SCRIPT, describe="system accounts with a login shell",
        break_with="usermod -s /bin/bash daemon",
        title="System accounts have no login shell",
        rationale="Service accounts (the model server, the gateway, daemons) must never be usable for an "
                  "interactive session, even if their credentials leak.",
        severity="high", hipaa=ACCESS, nist=["AC-2", "AC-6"], cis=["5.4.2.7"],
    ),
    StateRule(
        id="acct-nologin-locked", script=NOLOGIN_LOCKED_SCRIPT,
        describe="accounts without a shell but with a usable password",
        break_with=f"usermod -p '{BREAK_HASH}' daemon",
        title="Accounts without a login shell have locked passwords",
        rationale="A service account with a password can still authenticate to PAM services that ignore the shell "
                  "(su -s, ftp-like daemons, screen lockers).",
        severity="medium", hipaa=ACCESS, nist=["AC-2"], cis=["5.4.2.8"],
    ),
    StateRule(
        id="acct-root-locked", script=ROOT_LOCKED_SCRIPT, describe="root password state",
        break_with=f"usermod -p '{BREAK_HASH}' root",
        title="root's password is locked or unusable",
        rationale="Administrators work through their own accounts and sudo, so every action is attributable; a "
                  "root password is a shared secret that identifies nobody.",
        severity="high", hipaa=UNIQUE_ID, nist=["AC-6(2)", "IA-2"], cis=["5.4.2.4"],
    ),
    StateRule(
        id="acct-su-group-empty", script=SU_GROUP_SCRIPT, describe=f"members of {SU_GROUP}",
        break_with=f"gpasswd -a citadel {SU_GROUP}",
        title=f"The su group {SU_GROUP} exists and has no members",
        rationale="pam_wheel lets members of this group use su; it must stay empty so that escalation goes through "
                  "sudo, which records the person.",
        severity="medium", hipaa=UNIQUE_ID, nist=["AC-6(2)"], cis=["5.2.7"],
    ),
    StateRule(
        id="acct-no-rhosts-netrc", script=DOTFILES_SCRIPT,
        describe=".rhosts, .shosts or .netrc files in home directories",
        break_with="install -m 0600 -o citadel -g citadel /dev/null /home/citadel/.netrc",
        title="No .rhosts, .shosts or .netrc files in users' and root's homes",
        rationale=".netrc holds passwords in clear text; .rhosts/.shosts grant password-less trust to other hosts.",
        severity="medium", hipaa=AUTHN, nist=["IA-5", "AC-3"], cis=["7.2.10"], devsec=["os-09"],
    ),
]


# --- login environment -----------------------------------------------------------------------

PROFILE_SCRIPTS = {
    PROFILE_UMASK: f"# Managed by Citadel (hardening/controls/accounts.py): default umask.\numask {UMASK}\n",
    PROFILE_TMOUT: (
        "# Managed by Citadel (hardening/controls/accounts.py): idle shells log out (164.312(a)(2)(iii)).\n"
        f"TMOUT={TMOUT_SECONDS}\nreadonly TMOUT\nexport TMOUT\n"
    ),
}


def _lines_of(path: str) -> list[tuple[str, str]]:
    """Every non-comment line the role writes into `path`, as exact-match requirements."""
    return [(path, rf"^\s*{re.escape(line)}\s*$") for line in PROFILE_SCRIPTS[path].splitlines() if line and not line.startswith("#")]


def _sudo_policy_content() -> str:
    lines = ["# Managed by Citadel (hardening/controls/accounts.py). Edits are overwritten."]
    lines += [f"Defaults {d}" for d in SUDO_DEFAULTS]
    return "\n".join(lines) + "\n"


SUDO_POLICY_CONTENT = _sudo_policy_content()

OTHER_CONTROLS: list[Control] = [
    Control(
        id="acct-login-defs-perms",
        title="/etc/login.defs is owned by root and writable by root only",
        rationale="Whoever can edit login.defs chooses the password hash, umask and PATH of every new login.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["CM-6", "AC-6"], threats=THREATS, devsec=["os-05"]),
        check=FileMode(path=LOGIN_DEFS, max_mode="0644", owner="root", group=["root"]),
        remediation="hardening",
        break_with=f"chmod 0666 {LOGIN_DEFS}",
    ),
    Control(
        id="acct-sudo-use-pty",
        title="sudo runs commands in their own pseudo-terminal (use_pty)",
        rationale="Without a pty a program run through sudo can push keystrokes into the administrator's "
                  "terminal after sudo exits (TIOCSTI), taking over a root session.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["AC-6"], cis=["5.2.2"], threats=THREATS),
        check=SudoDefault(option="use_pty", op="on", default="off", describe="expected use_pty"),
        remediation="hardening",
        break_with=f"echo 'Defaults !use_pty' >> {SUDO_POLICY}",
    ),
    Control(
        id="acct-sudo-logfile",
        title=f"sudo keeps its own log ({SUDO_LOG})",
        rationale="Every privileged command is recorded with the person who ran it, in a file the audit rules "
                  "watch: the audit control HIPAA requires for systems holding patient data.",
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-2", "AU-12"], cis=["5.2.3"], threats=THREATS),
        check=SudoDefault(option="logfile", op="eq", values=[SUDO_LOG], describe=f"expected logfile={SUDO_LOG}"),
        remediation="hardening",
        break_with=f"sed -i '/logfile/d' {SUDO_POLICY}",
    ),
    Control(
        id="acct-sudo-timeout",
        title="sudo asks again after at most 15 minutes",
        rationale="A cached sudo credential on an unattended terminal is an open root shell.",
        severity="low",
        refs=References(hipaa=LOGOFF, nist=["AC-12", "IA-11"], cis=["5.2.6"], threats=THREATS),
        check=SudoDefault(option="timestamp_timeout", op="range", low=0, high=15, default="15",
                          describe="expected timestamp_timeout between 0 and 15"),
        remediation="hardening",
        break_with=f"echo 'Defaults timestamp_timeout=-1' >> {SUDO_POLICY}",
    ),
    Control(
        id="acct-issue-banner",
        title="The local login banner (/etc/issue) names no OS or kernel",
        rationale="The console banner warns that access is monitored and must not tell a visitor which OS and "
                  "release to look up exploits for.",
        severity="low",
        refs=References(hipaa=ACCESS, nist=["AC-8"], cis=["1.6.2"], threats=["T9"]),
        check=FileContent(path="/etc/issue", pattern=OS_DETAILS, present=False, ignore_case=True),
        remediation="hardening",
        break_with="printf 'Debian GNU/Linux 12 \\\\n \\\\l\\n' > /etc/issue",
    ),
    Control(
        id="acct-motd-banner",
        title="The message of the day (/etc/motd) names no OS or kernel",
        rationale="Shown after every login; it should remind of the monitoring policy, not advertise the OS.",
        severity="low",
        refs=References(hipaa=ACCESS, nist=["AC-8"], cis=["1.6.1"], threats=["T9"]),
        check=FileContent(path="/etc/motd", pattern=OS_DETAILS, present=False, ignore_case=True),
        remediation="hardening",
        break_with="echo 'Debian GNU/Linux comes with ABSOLUTELY NO WARRANTY' >> /etc/motd",
    ),
    Control(
        id="acct-motd-no-uname",
        title="The dynamic message of the day does not print the kernel version",
        rationale="Debian's update-motd 10-uname prints the kernel release at every SSH login: exactly what an "
                  "intruder with a stolen key wants to know first.",
        severity="low",
        refs=References(hipaa=ACCESS, nist=["AC-8", "CM-7"], cis=["1.6.1"], threats=["T9"]),
        check=FileMode(path=UNAME_MOTD, max_mode="0644", missing_ok=True),
        remediation="hardening",
        break_with=f"chmod 0755 {UNAME_MOTD}",
    ),
    Control(
        id="acct-default-umask",
        title=f"Login shells start with umask {UMASK}",
        rationale="Files users create in their sessions (exports, notes, copies of model outputs) must not be "
                  "readable by every other account.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["AC-3", "AC-6"], cis=["5.4.3.3"], threats=THREATS),
        check=Lines(describe=f"umask {UMASK} for login shells", required=_lines_of(PROFILE_UMASK)),
        remediation="hardening",
        break_with=f"sed -i 's/^umask .*/umask 022/' {PROFILE_UMASK}",
    ),
    Control(
        id="acct-shell-timeout",
        title=f"Idle shells log out after {TMOUT_SECONDS // 60} minutes (TMOUT, read-only)",
        rationale="An administrator's shell left open on a host holding patient data is an open door; automatic "
                  "logoff is a HIPAA addressable safeguard. readonly stops a user from turning it off.",
        severity="medium",
        refs=References(hipaa=LOGOFF, nist=["AC-12", "AC-11"], cis=["5.4.3.2"], threats=THREATS),
        check=Lines(describe=f"TMOUT={TMOUT_SECONDS}, readonly, exported", required=_lines_of(PROFILE_TMOUT)),
        remediation="hardening",
        break_with=f"sed -i '/^readonly TMOUT/d' {PROFILE_TMOUT}",
    ),
    Control(
        id="acct-nologin-not-a-shell",
        title="nologin is not listed in /etc/shells",
        rationale="Programs treat shells listed in /etc/shells as valid login shells; listing nologin turns "
                  "service accounts into 'interactive' ones for them.",
        severity="low",
        refs=References(hipaa=ACCESS, nist=["CM-6"], cis=["5.4.3.1"], threats=["T9"]),
        check=FileContent(path="/etc/shells", pattern=r"/nologin\s*$", present=False),
        remediation="hardening",
        break_with="echo /usr/sbin/nologin >> /etc/shells",
    ),
    Control(
        id="acct-no-hosts-equiv",
        title="No host-wide rhosts trust (/etc/hosts.equiv absent or empty)",
        rationale="hosts.equiv lets users of other machines in the hospital network log in without a password.",
        severity="medium",
        refs=References(hipaa=AUTHN, nist=["IA-2", "AC-3"], threats=["T9"], devsec=["os-01"]),
        check=FileContent(path="/etc/hosts.equiv", pattern=r"[^[:space:]]", present=False, missing_file="pass"),
        remediation="hardening",
        break_with="echo '+ +' > /etc/hosts.equiv",
    ),
]


CONTROLS: list[Control] = controls_of(SETTINGS) + controls_of(PAM_RULES) + controls_of(STATE_RULES) + OTHER_CONTROLS

CONTROLS_BY_ID: dict[str, Control] = {c.id: c for c in CONTROLS}
