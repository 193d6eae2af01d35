"""Scan lab hosts for credentials that should not be there: on disk, in the journal, in processes.

On each host, over SSH and as root, one shell script looks for

- the literal ``secrets`` it is given (label -> value: the root token, an operator's token), in
  every regular file, the whole journal and every process's ``cmdline`` and ``environ``;
- anything shaped like a Vault or OpenBao token (OpenBao 2.x issues ``s.`` + 24 base62 service
  and wrapping tokens and ``b.AAAAAQ...`` batch tokens; Vault 1.10+ ``hvs.``/``hvb.``/``hvr.``)
  or a PEM private key, in the same places, except where ``allowed`` says one belongs.

The secrets travel on the script's stdin, never in an argv (where /proc and sudo's log would
show them), and the host prints only where it found something and which label, never a value.
Files over ``max_file_mib`` are not read; each is a finding ("not scanned"), so a big file
needs a reason in ``allowed`` like any other exception. Pseudo file systems (/proc, /sys,
cgroups) and the lab's read-only apt repository are not part of a host's disk.

Example::

    assert_no_stray_credentials(lab, secrets={"root token": root_token},
                                allowed={"/etc/ssh/ssh_host_*_key": "SSH host keys",
                                         "/run/citadel-agent/*/token": "the agent's token sink"})
"""

from __future__ import annotations

import fnmatch
import re
import shlex
from dataclasses import dataclass

from deploy.lab.aptrepo import MOUNT_POINT as APT_REPO_MOUNT
from tests.lab.sshutil import ssh

VAULT_TOKEN = "vault token"
PRIVATE_KEY = "private key"
NOT_SCANNED = "not scanned"

# PCRE. OpenBao service tokens are "s." and 24 base62 characters; a camelCase identifier after
# "s." or "r." (s.getAllResponseHeaders, in shipped JavaScript and libraries) is told apart by
# needing a digit or two capitals in a row as well as both cases, which a random token of 24
# misses with a chance under 1 in 1000. Batch tokens start with their version bytes, AAAAAQ.
TOKEN_PATTERN = (
    r"(?<![A-Za-z0-9_.+/-])(?:hv[sbr]\.[A-Za-z0-9_-]{20,}"
    r"|[sr]\.(?=[A-Za-z0-9]*[A-Z])(?=[A-Za-z0-9]*[a-z])(?=[A-Za-z0-9]*(?:[0-9]|[A-Z]{2}))[A-Za-z0-9]{20,}"
    r"|b\.AAAAAQ[A-Za-z0-9_-]{20,})(?![A-Za-z0-9_-])"
)
PRIVATE_KEY_PATTERN = r"-----BEGIN [A-Z0-9 ]*PRIVATE KEY-----"  # POSIX ERE

# Mounts that hold no files of the host's own: kernel views and containers' plumbing.
PSEUDO_FILE_SYSTEMS = (
    "proc sysfs cgroup cgroup2 devpts mqueue debugfs tracefs securityfs bpf fusectl configfs pstore "
    "hugetlbfs autofs binfmt_misc efivarfs"
)

# Run as `bash -c` with $1 = the size bound in bytes, $2 = a path to leave out; stdin: the
# secrets, one a line. Prints NUL-terminated records "WHAT<TAB>WHERE", WHAT being "#N" (the Nth
# secret), "vault token", "private key" or "not scanned: N MiB"; then "done<TAB>COUNTS".
SCAN_SCRIPT = r"""
set -u
export LC_ALL=C
max_bytes=$1 leave_out=$2
token=@TOKEN@ key=@KEY@ pseudo=" @PSEUDO@ "
mapfile -t values
work=$(mktemp -d /dev/shm/credential-scan.XXXXXX) || exit 1
trap 'rm -rf "$work"' EXIT

say() {  # WHAT WHERE
    local where=$2 pid names
    if [[ $where =~ ^/proc/([0-9]+)/(cmdline|environ)$ ]]; then
        local comm=gone
        pid=${BASH_REMATCH[1]}
        read -r comm < "/proc/$pid/comm" 2>/dev/null
        where="${BASH_REMATCH[2]} of $pid ($comm)"
    elif [[ $where == "$work/journal.json" ]]; then
        names=$(journal_names "$1" "$work/journal.json")
        where="journal${names:+ ($names)}"
    elif [[ $where == "$work/journal.txt" ]]; then
        where=journal
    fi
    printf '%s\t%s\0' "$1" "$where"
}

lines_with() {  # WHAT FILE: the lines of FILE that hold WHAT
    case $1 in
        "vault token") grep -aP -- "$token" "$2" ;;
        "private key") grep -aE -- "$key" "$2" ;;
        *) grep -aF -f <(printf '%s\n' "${values[${1#\#}]}") -- "$2" ;;
    esac
}

journal_names() {  # WHAT FILE: the units and syslog identifiers of the entries holding WHAT
    lines_with "$@" | grep -ao '"\(SYSLOG_IDENTIFIER\|_SYSTEMD_UNIT\)" *: *"[^"]*"' | cut -d'"' -f4 \
        | sort -u | without_credentials | paste -sd, -
}

without_credentials() {  # drop lines that hold a secret or a token, so no name gives one away
    if ((${#values[@]})); then grep -avF -f <(printf '%s\n' "${values[@]}"); else cat; fi | grep -avP -- "$token"
}

check() {  # -a|-I FILE...: what FILE holds (-I: key blocks in text files only)
    local text=$1 f i
    shift
    if ((${#values[@]})); then
        while IFS= read -r -d '' f; do
            for i in "${!values[@]}"; do
                grep -qaF -f <(printf '%s\n' "${values[i]}") -- "$f" 2>/dev/null && say "#$i" "$f"
            done
        done < <(grep -laZsF -f <(printf '%s\n' "${values[@]}") -- "$@")
    fi
    while IFS= read -r -d '' f; do say "vault token" "$f"; done < <(grep -laZsP -- "$token" "$@")
    while IFS= read -r -d '' f; do say "private key" "$f"; done < <(grep -l "$text" -ZsE -- "$key" "$@")
}

prune=(-path "$leave_out" -o -path "/dev/shm/credential-scan.*")
while read -r fstype point; do
    [[ $pseudo == *" $fstype "* ]] && prune+=(-o -path "$(printf '%b' "$point")")
done < <(awk '{for (i = 7; i <= NF; i++) if ($i == "-") {print $(i + 1), $5; break}}' /proc/self/mountinfo)

mapfile -d '' files < <(find / \( "${prune[@]}" \) -prune -o -type f -size -$((max_bytes + 1))c -print0 2>/dev/null)
for ((i = 0; i < ${#files[@]}; i += 1000)); do check -I "${files[@]:i:1000}"; done
while IFS=' ' read -r -d '' size f; do
    say "not scanned: $((size >> 20)) MiB" "$f"
done < <(find / \( "${prune[@]}" \) -prune -o -type f -size +${max_bytes}c -printf '%s %p\0' 2>/dev/null)

journalctl --no-pager --all -o json > "$work/journal.json" 2>/dev/null
journalctl --no-pager --all -o cat > "$work/journal.txt" 2>/dev/null
check -a "$work/journal.json" "$work/journal.txt"

procs=(/proc/[0-9]*/cmdline /proc/[0-9]*/environ)
check -a "${procs[@]}"
printf 'done\t%s files, %s journal lines, %s processes\0' "${#files[@]}" "$(wc -l < "$work/journal.txt")" \
    "$((${#procs[@]} / 2))"
"""
# The script reaches bash on stdin, ahead of the secrets: sudo's log and /proc show only this.
RUN_FROM_STDIN = "sudo bash -c 'IFS= read -r -d \"\" script && eval \"$script\"' credential-scan"


@dataclass(frozen=True)
class Finding:
    """A credential on `host`: `what` (a secret's label, "vault token", "private key" or
    "not scanned: ...") at `where` (a path, "journal (UNITS)", "cmdline of PID (COMM)",
    "environ of PID (COMM)"). It never holds the credential itself."""

    host: str
    where: str
    what: str

    def __str__(self) -> str:
        return f"{self.host}: {self.what} in {self.where}"


def scan_host(lab, host, *, secrets: dict[str, str], allowed: dict[str, str],
              max_file_mib: int = 64, timeout: int = 300) -> list[Finding]:
    """The credentials on `host` (a LabHost) that are not where `allowed` says they belong.

    `secrets` maps labels to literal values that must be nowhere on the host; `allowed` maps
    glob patterns over a finding's `where` (fnmatch: ``*`` crosses ``/``) to why a token, a
    private key or an unscanned big file may be there. A secret is never allowed anywhere.
    """
    command, stdin = scan_request(secrets, max_file_mib)
    result = ssh(lab, host, command, timeout=timeout, stdin=stdin)
    return scan_findings(host.name, result.stdout, result.stderr, secrets=secrets, allowed=allowed)


def scan_request(secrets: dict[str, str], max_file_mib: int = 64) -> tuple[str, str]:
    """The shell command that scans a host as root, and the stdin it reads (script, then secrets)."""
    for label, value in secrets.items():
        if label.startswith((VAULT_TOKEN, PRIVATE_KEY, NOT_SCANNED)):
            raise ValueError(f"the secret label {label!r} reads like a finding of the scan itself: rename it")
        if len(value) < 8 or "\n" in value or "\0" in value:
            raise ValueError(f"the secret {label!r} must be one line of at least 8 characters to be searched for")
    script = SCAN_SCRIPT.replace("@TOKEN@", shlex.quote(TOKEN_PATTERN)).replace(
        "@KEY@", shlex.quote(PRIVATE_KEY_PATTERN)).replace("@PSEUDO@", PSEUDO_FILE_SYSTEMS)
    stdin = script + "\0" + "".join(f"{value}\n" for value in secrets.values())
    return f"{RUN_FROM_STDIN} {max_file_mib << 20} {shlex.quote(APT_REPO_MOUNT)}", stdin


def scan_findings(host: str, stdout: str, stderr: str, *, secrets: dict[str, str],
                  allowed: dict[str, str]) -> list[Finding]:
    """The findings in the scan's output on `host`, less those that `allowed` explains."""
    labels = list(secrets)
    records = [record.split("\t", 1) for record in stdout.split("\0") if record]
    if not records or records[-1][0] != "done":
        raise AssertionError(f"the credential scan of {host} did not finish: {stderr.strip()}")
    findings = []
    for what, where in records[:-1]:
        what = labels[int(what[1:])] if what.startswith("#") else what
        finding = Finding(host, _redacted(where, secrets), what)
        if what in secrets or not any(fnmatch.fnmatchcase(finding.where, pattern) for pattern in allowed):
            findings.append(finding)
    return _without_plain_journal_duplicates(findings)


def assert_no_stray_credentials(lab, *, secrets: dict[str, str], allowed: dict[str, str],
                                max_file_mib: int = 64) -> None:
    """Scan every lab host (see scan_host); fail listing every finding."""
    findings = [finding for host in lab.hosts
                for finding in scan_host(lab, host, secrets=secrets, allowed=allowed, max_file_mib=max_file_mib)]
    if findings:
        raise AssertionError("stray credentials on the lab hosts:\n" + "\n".join(f"  {f}" for f in findings))


def _redacted(where: str, secrets: dict[str, str]) -> str:
    # A path or a process name could itself spell a credential; the host filters journal names,
    # this covers the rest.
    for label, value in secrets.items():
        where = where.replace(value, f"<{label}>")
    return re.sub(TOKEN_PATTERN, f"<{VAULT_TOKEN}>", where)


def _without_plain_journal_duplicates(findings: list[Finding]) -> list[Finding]:
    # The journal is read twice: as JSON (all fields, with the units named) and as plain
    # messages (which JSON turns into byte arrays when they hold control characters).
    named = {(f.host, f.what) for f in findings if f.where.startswith("journal (")}
    unique = dict.fromkeys(f for f in findings if not (f.where == "journal" and (f.host, f.what) in named))
    return list(unique)
