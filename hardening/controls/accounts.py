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

Check kinds of this module (ConfigValue, Lines, SudoDefault, Offenders) subclass
``hardening.checks.Command``: the catalog's check union is closed, and a subclass validates as
a Command while keeping its own script() and evaluate().
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass, field
from typing import Literal

from pydantic import Field

from hardening.checks import Command, FileContent, FileMode, Verdict
from hardening.model import Control, References

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


# --- check kinds -----------------------------------------------------------------------------


class _AccountsCheck(Command):
    """Base of this module's check kinds (a Command by type, with its own script/evaluate)."""

    command: str = ""
    describe: str = ""

    def script(self) -> str:  # pragma: no cover - abstract
        raise NotImplementedError


def _shell_paths(paths: list[str]) -> str:
    """Quote plain paths; leave glob patterns (fixed strings of this module) to the shell."""
    return " ".join(p if "*" in p else shlex.quote(p) for p in paths)


class ConfigValue(_AccountsCheck):
    """The effective value of `key` in key/value files read in order (later assignments win).

    ``style`` is ``space`` (``KEY value``, login.defs) or ``equals`` (``key = value``;
    a bare ``key`` is a flag). ``default`` is the program's value when the key is absent.
    """

    paths: list[str]
    key: str
    style: Literal["space", "equals"]
    op: Literal["eq", "range", "zero_or_min", "flag", "umask", "path"]
    values: list[str] = Field(default_factory=list)  # eq: allowed values; umask: the required mask
    low: int | None = None
    high: int | None = None
    default: str | None = None

    def script(self) -> str:
        pattern = shlex.quote(rf"^[[:space:]]*{self.key}([[:space:]]|=|$)")
        return f"for f in {_shell_paths(self.paths)}; do [ -f \"$f\" ] && grep -E {pattern} \"$f\"; done; echo @@end"

    def value_of(self, evidence: str) -> str | None:
        """The last assignment's value ('' for a bare flag), or None when the key is absent."""
        value = None
        for line in evidence.splitlines():
            line = line.strip()
            if not line or line.startswith("@@"):
                continue
            if self.style == "space":
                parts = line.split(None, 1)
                value = parts[1].strip() if len(parts) > 1 else ""
            else:
                value = line.split("=", 1)[1].strip() if "=" in line else ""
        return value

    def judge(self, value: str | None) -> bool:
        if self.op == "flag":
            return value is not None
        if value is None:
            value = self.default
        if value is None:
            return False
        value = value.strip().strip('"')
        if self.op == "eq":
            return value in self.values
        if self.op == "path":
            entries = value.removeprefix("PATH=").split(":")
            return value.startswith("PATH=") and all(e.startswith("/") for e in entries)
        if self.op == "umask":
            if not re.fullmatch(r"[0-7]{3,4}", value):
                return False
            mask = int(self.values[0], 8)
            return int(value, 8) & mask == mask
        if not re.fullmatch(r"-?\d+", value):
            return False
        number = int(value)
        if self.op == "zero_or_min":
            return number == 0 or number >= (self.low or 0)
        return (self.low is None or number >= self.low) and (self.high is None or number <= self.high)

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence:
            return Verdict("error", f"could not read {self.key}: {evidence.strip()[:200]!r}")
        value = self.value_of(evidence)
        shown = "absent" if value is None else ("set" if value == "" else value)
        if value is None and self.default is not None and self.op != "flag":
            shown = f"absent (default {self.default})"
        where = ", ".join(self.paths)
        if self.judge(value):
            return Verdict("pass", f"{self.key}: {shown} ({where})")
        return Verdict("fail", f"{self.key}: {shown}, expected {self.want()} ({where})")

    def want(self) -> str:
        if self.op == "eq":
            return " or ".join(self.values)
        if self.op == "flag":
            return "the flag set"
        if self.op == "path":
            return "only absolute directories (no '.', no empty entry)"
        if self.op == "umask":
            return f"a umask at least as strict as {self.values[0]}"
        if self.op == "zero_or_min":
            return f"0 (until an administrator unlocks) or at least {self.low}"
        if self.low is not None and self.high is not None:
            return f"between {self.low} and {self.high}"
        return f"at least {self.low}" if self.low is not None else f"at most {self.high}"


class Lines(_AccountsCheck):
    """Non-comment lines of files: each `required` (path, regex) matches a line of that file,
    no `forbidden` one matches any. Regexes are Python's, judged here, not on the host."""

    required: list[tuple[str, str]] = Field(default_factory=list)
    forbidden: list[tuple[str, str]] = Field(default_factory=list)

    def paths(self) -> list[str]:
        return list(dict.fromkeys(p for p, _ in self.required + self.forbidden))

    def script(self) -> str:
        parts = []
        for path in self.paths():
            q = shlex.quote(path)
            parts.append(f"echo '@@file {path}'; if [ -f {q} ]; then grep -v '^[[:space:]]*#' {q}; else echo '@@missing'; fi")
        return "; ".join(parts) + "; echo @@end"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence:
            return Verdict("error", f"could not read {', '.join(self.paths())}")
        content: dict[str, list[str]] = {}
        current = None
        for line in evidence.splitlines():
            if line.startswith("@@file "):
                current = line[len("@@file "):]
                content[current] = []
            elif line == "@@missing" and current is not None:
                content.pop(current, None)
                current = None
            elif current is not None and not line.startswith("@@"):
                content[current].append(line)
        problems = []
        for path, regex in self.required:
            if path not in content:
                problems.append(f"{path} is missing")
            elif not any(re.search(regex, line) for line in content[path]):
                problems.append(f"{path}: no line matches {regex!r}")
        for path, regex in self.forbidden:
            for line in content.get(path, []):
                if re.search(regex, line):
                    problems.append(f"{path}: unwanted line {line.strip()[:150]!r}")
                    break
        if problems:
            return Verdict("fail", "; ".join(dict.fromkeys(problems)))
        return Verdict("pass", f"{self.describe}: {', '.join(self.paths())}")


class SudoDefault(_AccountsCheck):
    """The effective value of a sudo `Defaults` option across /etc/sudoers and /etc/sudoers.d
    (read in sudo's order; the last setting wins). ``op``: ``on`` (a boolean flag), ``eq``,
    ``range`` (an integer between low and high)."""

    option: str
    op: Literal["on", "eq", "range"]
    values: list[str] = Field(default_factory=list)
    low: int | None = None
    high: int | None = None
    default: str | None = None

    def script(self) -> str:
        # sudo reads sudoers.d files in lexical order and skips names with a '.' or ending in '~'.
        return (
            "cat /etc/sudoers; for f in /etc/sudoers.d/*; do case \"${f##*/}\" in *.*|*~) continue;; esac; "
            "[ -f \"$f\" ] && cat \"$f\"; done; echo @@end"
        )

    def value_of(self, evidence: str) -> str | None:
        value = None
        for line in evidence.splitlines():
            line = line.split("#", 1)[0].strip() if not line.strip().startswith("#include") else ""
            match = re.match(r"^Defaults(?:[:@!>]\S+)?\s+(.*)$", line)
            if not match:
                continue
            # Options are comma-separated; commas inside double quotes do not split.
            for option in re.findall(r'(?:[^,"]|"[^"]*")+', match.group(1)):
                option = option.strip()
                name = re.split(r"\s*[+-]?=\s*", option, maxsplit=1)[0]
                if name == self.option:
                    value = option.split("=", 1)[1].strip().strip('"') if "=" in option else "on"
                elif name == "!" + self.option:
                    value = "off"
        return value

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence:
            return Verdict("error", f"could not read the sudoers files: {evidence.strip()[:200]!r}")
        value = self.value_of(evidence)
        effective = self.default if value is None else value
        if self.op == "on":
            ok = effective == "on"
        elif self.op == "eq":
            ok = effective in self.values
        else:
            ok = effective is not None and bool(re.fullmatch(r"-?\d+", effective)) and (
                (self.low is None or int(effective) >= self.low) and (self.high is None or int(effective) <= self.high)
            )
        shown = f"{self.option} = {effective}" + (" (default)" if value is None else "")
        return Verdict("pass" if ok else "fail", f"sudo {shown}" + ("" if ok else f"; {self.describe}"))


class Offenders(_AccountsCheck):
    """A read-only script prints one offender per line (first word: what to fix), then
    ``@@end``. It passes when it ran to the end and named nobody. The role runs the same
    script as a fact and fixes exactly the offenders it names."""

    script_text: str

    def script(self) -> str:
        return f"{{ {self.script_text.strip()}\n}}; echo @@end"

    def offenders(self, evidence: str) -> list[str]:
        return [line.strip() for line in evidence.splitlines() if line.strip() and not line.startswith("@@")]

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        if "@@end" not in evidence.splitlines():
            return Verdict("error", f"the check did not complete: {evidence.strip()[:200]!r}")
        found = self.offenders(evidence)
        if found:
            return Verdict("fail", f"{self.describe}: " + "; ".join(found)[:300])
        return Verdict("pass", f"{self.describe}: none")


# --- key/value settings: login.defs, useradd defaults, pwquality, faillock ------------------


@dataclass(frozen=True)
class Setting:
    id: str
    path: str
    key: str
    write: str  # the value the role writes ('' for a flag)
    check: dict  # ConfigValue arguments: op, values, low, high, default
    title: str
    rationale: str
    severity: str
    hipaa: list[str]
    nist: list[str]
    cis: list[str]
    devsec: list[str]
    break_value: str | None  # None: the break deletes the key (flags)

    @property
    def style(self) -> str:
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


def _ld(id, key, write, check, title, rationale, severity, hipaa, nist, cis, devsec, break_value):
    return Setting(id, LOGIN_DEFS, key, write, check, title, rationale, severity, hipaa, nist, cis, devsec, break_value)


SETTINGS: list[Setting] = [
    _ld("acct-pass-max-days", "PASS_MAX_DAYS", "365", {"op": "range", "low": 1, "high": 365},
        "New accounts' passwords expire within 365 days",
        "A password that never expires stays valid for an attacker who phished it years ago; on a host holding "
        "patient data every credential needs a bounded life. (dev-sec os-05 asks 60; CIS allows 365, which the "
        "check accepts as the upper bound.)", "medium", AUTHN, ["IA-5(1)"], ["5.4.1.1"], ["os-05"], "99999"),
    _ld("acct-pass-min-days", "PASS_MIN_DAYS", "7", {"op": "range", "low": 1},
        "Passwords cannot be changed again the same day",
        "Without a minimum age a user can cycle through the password history in minutes and reuse the old "
        "password, defeating pam_pwhistory.", "low", AUTHN, ["IA-5(1)"], ["5.4.1.2"], ["os-05"], "0"),
    _ld("acct-pass-warn-age", "PASS_WARN_AGE", "7", {"op": "range", "low": 7},
        "Users are warned 7 days before their password expires",
        "Warned users change their password in time instead of being locked out of a clinical service or "
        "asking for an insecure emergency reset.", "low", AUTHN, ["IA-5(1)"], ["5.4.1.3"], ["os-05"], "1"),
    _ld("acct-login-defs-umask", "UMASK", UMASK, {"op": "umask", "values": [UMASK]},
        "login.defs sets the default umask 027 (no access for others)",
        "Files users create (exported reports, prompts saved for debugging, model outputs) must not be readable "
        "by every other account on a host that processes patient data.", "medium", ACCESS, ["AC-3", "AC-6"],
        ["5.4.3.3"], ["os-05"], "022"),
    _ld("acct-encrypt-method", "ENCRYPT_METHOD", "YESCRYPT", {"op": "eq", "values": ["YESCRYPT", "SHA512"]},
        "Passwords set with chpasswd/newusers are hashed with yescrypt or SHA-512",
        "A stolen /etc/shadow hashed with MD5 or DES is cracked in hours; yescrypt and SHA-512 crypt make "
        "offline guessing of administrators' passwords expensive.", "high", AUTHN, ["IA-5(1)", "SC-13"],
        ["5.4.1.4"], ["os-05"], "MD5"),
    _ld("acct-login-retries", "LOGIN_RETRIES", "5", {"op": "range", "low": 1, "high": 5},
        "Console logins allow at most 5 attempts per session",
        "Bounds password guessing at the console of a host in a shared hospital machine room.", "low", AUTHN,
        ["AC-7"], [], ["os-05"], "20"),
    _ld("acct-login-timeout", "LOGIN_TIMEOUT", "60", {"op": "range", "low": 1, "high": 60},
        "Console logins time out after 60 seconds",
        "An abandoned half-finished login must not hold a session open at an unattended console.", "low", AUTHN,
        ["AC-7", "AC-12"], [], ["os-05"], "600"),
    _ld("acct-login-defs-supath", "ENV_SUPATH", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
        {"op": "path"}, "su gives root a PATH of absolute system directories only",
        "A '.' or empty entry in root's PATH runs a planted program from whatever directory root is in: a "
        "local privilege escalation to everything on the host.", "high", ACCESS, ["CM-6", "AC-6"], ["5.4.2.5"],
        ["os-04", "os-05"], "PATH=.:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"),
    _ld("acct-login-defs-path", "ENV_PATH", "PATH=/usr/local/bin:/usr/bin:/bin", {"op": "path"},
        "Login gives users a PATH of absolute system directories only",
        "A '.' or empty PATH entry lets another user's planted file run as whoever logs in, including an "
        "administrator about to use sudo.", "medium", ACCESS, ["CM-6"], [], ["os-04", "os-05"],
        "PATH=/usr/local/bin:/usr/bin:/bin::"),
    Setting("acct-inactive-lock", USERADD_DEFAULTS, "INACTIVE", "45", {"op": "range", "low": 0, "high": 45},
            "New accounts lock 45 days after their password expires",
            "Accounts of staff who left or rotated off the project must not stay usable indefinitely.", "low",
            UNIQUE_ID, ["AC-2(3)"], ["5.4.1.5"], [], "-1"),
    # Password quality (pam_pwquality reads pwquality.conf.d/*.conf first, then pwquality.conf).
    Setting("acct-pwquality-minlen", PWQUALITY, "minlen", "14", {"op": "range", "low": 14},
            "New passwords have at least 14 characters",
            "Length is what makes a password resist offline cracking of a stolen shadow file.", "high", AUTHN,
            ["IA-5(1)"], ["5.3.3.2.2"], [], "8"),
    Setting("acct-pwquality-minclass", PWQUALITY, "minclass", "3", {"op": "range", "low": 3, "high": 4},
            "New passwords mix at least 3 character classes",
            "Single-class passwords fall to small dictionaries and masks.", "medium", AUTHN, ["IA-5(1)"],
            ["5.3.3.2.3"], [], "1"),
    Setting("acct-pwquality-difok", PWQUALITY, "difok", "2", {"op": "range", "low": 2},
            "A new password differs from the old one in at least 2 characters",
            "Changing one character of a leaked password does not make it a new secret.", "low", AUTHN,
            ["IA-5(1)"], ["5.3.3.2.1"], [], "0"),
    Setting("acct-pwquality-maxrepeat", PWQUALITY, "maxrepeat", "3", {"op": "range", "low": 1, "high": 3, "default": "0"},
            "New passwords repeat a character at most 3 times in a row",
            "Padding like 'aaaaaaaa' satisfies length rules without adding strength.", "low", AUTHN, ["IA-5(1)"],
            ["5.3.3.2.4"], [], "0"),
    Setting("acct-pwquality-dictcheck", PWQUALITY, "dictcheck", "1", {"op": "eq", "values": ["1"], "default": "1"},
            "New passwords are checked against the cracklib dictionary",
            "Dictionary words are the first thing any password cracker tries.", "medium", AUTHN, ["IA-5(1)"],
            ["5.3.3.2.6"], [], "0"),
    Setting("acct-pwquality-enforce-root", PWQUALITY, "enforce_for_root", "", {"op": "flag"},
            "Password quality rules apply to root too",
            "Otherwise an administrator changing a password as root can set a weak one.", "medium", AUTHN,
            ["IA-5(1)"], ["5.3.3.2.8"], [], None),
    # Lockout after failed authentication (pam_faillock).
    Setting("acct-faillock-deny", FAILLOCK, "deny", "5", {"op": "range", "low": 1, "high": 5},
            "Accounts lock after 5 failed authentication attempts",
            "Online guessing of a password (console, su, sudo) stops after a handful of tries.", "high", AUTHN,
            ["AC-7"], ["5.3.3.1.1"], [], "20"),
    Setting("acct-faillock-unlock-time", FAILLOCK, "unlock_time", "900", {"op": "zero_or_min", "low": 900},
            "A locked account stays locked for at least 15 minutes",
            "A short lockout only slows guessing down; 15 minutes makes it impractical.", "medium", AUTHN,
            ["AC-7"], ["5.3.3.1.2"], [], "60"),
    Setting("acct-faillock-root", FAILLOCK, "even_deny_root", "", {"op": "flag"},
            "Failed-login lockout applies to root as well",
            "root is the account attackers guess first; it must not be exempt from lockout.", "medium", AUTHN,
            ["AC-7"], ["5.3.3.1.3"], [], None),
]


def _setting_control(s: Setting) -> Control:
    key = re.escape(s.key)
    if s.break_value is None:
        breaker = f"sed -i -E '/^[[:space:]]*{key}[[:space:]]*$/d' {s.path}"
    else:
        breaker = f"sed -i -E 's#{s.match()}#{s.line(s.break_value)}#' {s.path}"
    return Control(
        id=s.id,
        title=s.title,
        rationale=s.rationale,
        severity=s.severity,
        refs=References(hipaa=s.hipaa, nist=s.nist, cis=s.cis, threats=THREATS, devsec=s.devsec),
        check=ConfigValue(paths=s.read_paths, key=s.key, style=s.style, describe=s.title, **s.check),
        remediation="hardening",
        break_with=breaker,
    )


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


@dataclass(frozen=True)
class PamRule:
    id: str
    check: Lines
    title: str
    rationale: str
    severity: str
    nist: list[str]
    cis: list[str]
    break_with: str
    hipaa: list[str] = field(default_factory=lambda: AUTHN)


PAM_RULES: list[PamRule] = [
    PamRule("acct-pam-faillock",
            Lines(describe="pam_faillock counts failures and locks", required=[
                (PAM_AUTH, r"^\s*auth\s+requisite\s+pam_faillock\.so\s+preauth\b"),
                (PAM_AUTH, r"^\s*auth\s+\[default=die\]\s+pam_faillock\.so\s+authfail\b"),
                (PAM_ACCOUNT, r"^\s*account\s+required\s+pam_faillock\.so\b")]),
            "PAM locks accounts after repeated failures (pam_faillock)",
            "faillock.conf has no effect unless pam_faillock is in the authentication stack of every service.",
            "high", ["AC-7"], ["5.3.2.2"], f"sed -i '/pam_faillock.so authfail/d' {PAM_AUTH}"),
    PamRule("acct-pam-pwquality",
            Lines(describe="pam_pwquality checks new passwords", required=[
                (PAM_PASSWORD, r"^\s*password\s+requisite\s+pam_pwquality\.so\b")]),
            "PAM checks the quality of new passwords (libpam-pwquality installed and enabled)",
            "Without pam_pwquality in the password stack nothing stops an administrator choosing 'hospital1' on a "
            "host with patient data, and pwquality.conf has no effect.",
            "high", ["IA-5(1)"], ["5.3.1.3", "5.3.2.3"], f"sed -i '/pam_pwquality.so/d' {PAM_PASSWORD}"),
    PamRule("acct-pam-pwhistory",
            Lines(describe="pam_pwhistory refuses reused passwords", required=[
                (PAM_PASSWORD, r"^\s*password\s+requisite\s+pam_pwhistory\.so\b(?=.*\bremember=(2[4-9]|[3-9]\d|\d{3,})\b)(?=.*\benforce_for_root\b)")]),
            f"PAM refuses the last {PWHISTORY_REMEMBER} passwords, for root too (pam_pwhistory)",
            "Users forced to change a password otherwise switch back to the one that may have leaked.",
            "medium", ["IA-5(1)"], ["5.3.2.4", "5.3.3.3.1", "5.3.3.3.2"],
            f"sed -i 's/remember={PWHISTORY_REMEMBER}/remember=3/' {PAM_PASSWORD}"),
    PamRule("acct-pam-no-nullok",
            Lines(describe="pam_unix accepts no empty passwords", required=[
                (PAM_AUTH, rf"^\s*auth\s+{_CONTROL}\s+pam_unix\.so\b")], forbidden=[
                (p, r"pam_unix\.so\b.*\bnullok\b") for p in (PAM_AUTH, PAM_ACCOUNT, PAM_PASSWORD)]),
            "PAM never accepts an empty password (no nullok)",
            "With nullok, an account whose password field is emptied by mistake or by an intruder opens "
            "without any secret.", "high", ["IA-2", "IA-5"], ["5.3.3.4.1"],
            f"sed -i 's/pam_unix.so /pam_unix.so nullok /' {PAM_AUTH}"),
    PamRule("acct-pam-strong-hash",
            Lines(describe="pam_unix hashes new passwords with yescrypt or SHA-512", required=[
                (PAM_PASSWORD, rf"^\s*password\s+{_CONTROL}\s+pam_unix\.so\b.*\b(yescrypt|sha512)\b")], forbidden=[
                (PAM_PASSWORD, r"pam_unix\.so\b.*\b(md5|bigcrypt|sha256|blowfish|gost_yescrypt|remember=\d+)\b")]),
            "PAM hashes new passwords with yescrypt or SHA-512",
            "Passwords changed through passwd(1) must get a strong hash, or a copied shadow file gives them away.",
            "high", ["IA-5(1)", "SC-13"], ["5.3.3.4.2", "5.3.3.4.3"], f"sed -i 's/yescrypt/md5/' {PAM_PASSWORD}"),
    PamRule("acct-su-restricted",
            Lines(describe=f"su is limited to members of the empty group {SU_GROUP}", required=[
                (PAM_SU, rf"^\s*auth\s+required\s+pam_wheel\.so\s+use_uid\s+group={SU_GROUP}\s*$")]),
            "su is restricted to an empty group (pam_wheel)",
            "Administrators escalate with sudo, which logs who did what; su to root leaves only 'root' in the logs "
            "and bypasses the attribution HIPAA asks for.", "medium", ["AC-6(2)", "AU-9"], ["5.2.7"],
            f"sed -i '/pam_wheel.so use_uid/d' {PAM_SU}", hipaa=UNIQUE_ID),
]


def _pam_control(r: PamRule) -> Control:
    return Control(
        id=r.id, title=r.title, rationale=r.rationale, severity=r.severity,
        refs=References(hipaa=r.hipaa, nist=r.nist, cis=r.cis, threats=THREATS),
        check=r.check, remediation="hardening", break_with=r.break_with,
    )


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


@dataclass(frozen=True)
class StateRule:
    id: str
    script: str
    describe: str
    title: str
    rationale: str
    severity: str
    hipaa: list[str]
    nist: list[str]
    cis: list[str]
    devsec: list[str]
    break_with: str


STATE_RULES: list[StateRule] = [
    StateRule("acct-sudo-nopasswd", NOPASSWD_SCRIPT, "NOPASSWD rules for users other than the deploy user",
              "sudo asks for a password, except for the recorded deploy user",
              "A stolen session of any other sudoer must not become root without a password. The one exception is "
              "the deploy user of the inventory (key-only, no password at all), recorded by the role in "
              f"{DEPLOY_USER_RECORD}: it could not use sudo otherwise.", "high", UNIQUE_ID, ["AC-6(2)", "IA-11"],
              ["5.2.4"], [],
              "printf 'nobody ALL=(ALL) NOPASSWD: /usr/bin/id\\n' > /etc/sudoers.d/zz-nopasswd && chmod 0440 /etc/sudoers.d/zz-nopasswd"),
    StateRule("acct-sudo-authenticate", AUTHENTICATE_SCRIPT, "sudoers lines disabling authentication",
              "No sudoers rule disables authentication (!authenticate)",
              "'Defaults !authenticate' silently turns every sudo rule into a passwordless one.", "high", UNIQUE_ID,
              ["AC-6(2)", "IA-11"], ["5.2.5"], [],
              "printf 'Defaults:nobody !authenticate\\n' > /etc/sudoers.d/zz-authenticate && chmod 0440 /etc/sudoers.d/zz-authenticate"),
    StateRule("acct-sudoers-d-modes", SUDOERS_D_MODES_SCRIPT, "sudoers.d files more open than 0440 root:root",
              "Every file in /etc/sudoers.d is 0440 root:root",
              "A writable sudoers drop-in is a root shell for whoever can write it.", "high", ACCESS, ["AC-6", "CM-6"],
              [], [], "chmod 0640 /etc/sudoers.d/README"),
    StateRule("acct-no-empty-passwords", EMPTY_PASSWORD_SCRIPT, "accounts with an empty password",
              "No account has an empty password",
              "An empty password field lets anyone log in as that account at the console or through su.",
              "critical", AUTHN, ["IA-5"], ["7.2.2"], [], "passwd -d citadel"),
    StateRule("acct-shadowed-passwords", SHADOWED_SCRIPT, "accounts not using /etc/shadow",
              "Every account's password lives in /etc/shadow",
              "/etc/passwd is world-readable: a hash kept there can be copied and cracked by any local user.",
              "high", AUTHN, ["IA-5(1)"], ["7.2.1"], ["os-03b"], "sed -i 's/^games:x:/games:*:/' /etc/passwd"),
    StateRule("acct-uid0-root-only", UID0_SCRIPT, "accounts other than root with UID 0",
              "root is the only account with UID 0",
              "A second UID 0 account is a hidden root: every action it takes is logged under another name.",
              "critical", UNIQUE_ID, ["AC-6", "IA-2"], ["5.4.2.1"], [],
              "useradd -o -u 0 -g 0 -M -d /nonexistent -s /usr/sbin/nologin toor"),
    StateRule("acct-unique-uids", DUP_UID_SCRIPT, "accounts sharing a UID",
              "No two accounts share a UID",
              "Accounts sharing a UID are one identity to the kernel: file access and audit records cannot tell "
              "the people apart (unique user identification).", "high", UNIQUE_ID, ["IA-2", "AC-2"], ["7.2.5"],
              ["os-07"], "useradd -o -u 1000 -N -g 1000 -M -d /nonexistent -s /usr/sbin/nologin dupuser"),
    StateRule("acct-unique-gids", DUP_GID_SCRIPT, "groups sharing a GID",
              "No two groups share a GID",
              "A group aliasing another's GID silently grants its members that group's file access.", "medium",
              ACCESS, ["AC-2", "AC-3"], ["7.2.6"], ["os-07"], "groupadd -o -g 1000 dupgroup"),
    StateRule("acct-system-nologin", SYSTEM_SHELL_SCRIPT, "system accounts with a login shell",
              "System accounts have no login shell",
              "Service accounts (the model server, the gateway, daemons) must never be usable for an interactive "
              "session, even if their credentials leak.", "high", ACCESS, ["AC-2", "AC-6"], ["5.4.2.7"], [],
              "usermod -s /bin/bash daemon"),
    StateRule("acct-nologin-locked", NOLOGIN_LOCKED_SCRIPT, "accounts without a shell but with a usable password",
              "Accounts without a login shell have locked passwords",
              "A service account with a password can still authenticate to PAM services that ignore the shell "
              "(su -s, ftp-like daemons, screen lockers).", "medium", ACCESS, ["AC-2"], ["5.4.2.8"], [],
              f"usermod -p '{BREAK_HASH}' daemon"),
    StateRule("acct-root-locked", ROOT_LOCKED_SCRIPT, "root password state",
              "root's password is locked or unusable",
              "Administrators work through their own accounts and sudo, so every action is attributable; a root "
              "password is a shared secret that identifies nobody.", "high", UNIQUE_ID, ["AC-6(2)", "IA-2"],
              ["5.4.2.4"], [], f"usermod -p '{BREAK_HASH}' root"),
    StateRule("acct-su-group-empty", SU_GROUP_SCRIPT, f"members of {SU_GROUP}",
              f"The su group {SU_GROUP} exists and has no members",
              "pam_wheel lets members of this group use su; it must stay empty so that escalation goes through "
              "sudo, which records the person.", "medium", UNIQUE_ID, ["AC-6(2)"], ["5.2.7"], [],
              f"gpasswd -a citadel {SU_GROUP}"),
    StateRule("acct-no-rhosts-netrc", DOTFILES_SCRIPT, ".rhosts, .shosts or .netrc files in home directories",
              "No .rhosts, .shosts or .netrc files in users' and root's homes",
              ".netrc holds passwords in clear text; .rhosts/.shosts grant password-less trust to other hosts.",
              "medium", AUTHN, ["IA-5", "AC-3"], ["7.2.10"], ["os-09"],
              "install -m 0600 -o citadel -g citadel /dev/null /home/citadel/.netrc"),
]


def _state_control(r: StateRule) -> Control:
    return Control(
        id=r.id, title=r.title, rationale=r.rationale, severity=r.severity,
        refs=References(hipaa=r.hipaa, nist=r.nist, cis=r.cis, threats=THREATS, devsec=r.devsec),
        check=Offenders(script_text=r.script, describe=r.describe), remediation="hardening", break_with=r.break_with,
    )


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


CONTROLS: list[Control] = (
    [_setting_control(s) for s in SETTINGS]
    + [_pam_control(r) for r in PAM_RULES]
    + [_state_control(r) for r in STATE_RULES]
    + OTHER_CONTROLS
)

CONTROLS_BY_ID: dict[str, Control] = {c.id: c for c in CONTROLS}
