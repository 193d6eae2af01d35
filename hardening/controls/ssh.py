"""SSH server controls (CIS Debian 12 section 5.1, dev-sec ssh-baseline).

The sshd settings are one table: the controls check them through ``sshd -T`` (the
effective configuration, not a file that might be overridden), and the ``hardening`` role
writes the same table at the top of sshd_config, before its Include of sshd_config.d, so
no drop-in can override them (sshd keeps the first value it reads). One source, two views.
"""

from __future__ import annotations

from dataclasses import dataclass

from hardening.checks import Command, FileContent, FileMode, SshdOption
from hardening.model import Control, References

# Modern algorithms only (OpenSSH 9.2 on Debian 12, 8.9 on Ubuntu 22.04): AEAD ciphers and
# CTR modes, curve25519/sntrup KEX, encrypt-then-MAC SHA-2 MACs.
CIPHERS = ["chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr", "aes128-ctr"]
KEX = ["sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org", "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512"]
MACS = ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com"]

ACCESS = ["164.312(a)(1)", "164.312(d)"]
TRANSMISSION = ["164.312(e)(1)", "164.312(e)(2)(ii)"]
AUDIT = ["164.312(b)"]


@dataclass(frozen=True)
class SshdSetting:
    id: str
    option: str  # lower-case, as sshd -T prints it
    value: str  # what the drop-in sets (sshd_config spelling)
    title: str
    rationale: str
    severity: str
    hipaa: list[str]
    nist: list[str]
    cis: str
    devsec: list[str]
    accepted: list[str] | None = None  # what sshd -T may print; default [value.lower()]
    match: str = "exact"


SETTINGS = [
    SshdSetting("ssh-permit-root-login", "permitrootlogin", "no", "SSH refuses root logins",
                "Administrative access must be attributable to a person; root logins are not, and root is every attacker's first guess.",
                "high", ACCESS + ["164.312(a)(2)(i)"], ["AC-6(2)", "IA-2"], "5.1.20", ["sshd-06"]),
    SshdSetting("ssh-password-auth", "passwordauthentication", "no", "SSH accepts keys only, no passwords",
                "Passwords can be guessed, phished and reused; keys held by named administrators cannot be brute-forced over the network.",
                "high", ACCESS, ["IA-2(1)", "IA-5"], "5.1.x", ["sshd-06", "sshd-27"]),
    SshdSetting("ssh-kbd-interactive", "kbdinteractiveauthentication", "no", "SSH keyboard-interactive authentication is off",
                "Keyboard-interactive is another path to password logins through PAM.",
                "medium", ACCESS, ["IA-2"], "5.1.x", ["sshd-06", "sshd-29"]),
    SshdSetting("ssh-empty-passwords", "permitemptypasswords", "no", "SSH refuses empty passwords",
                "An account with an empty password must never be reachable over the network.",
                "high", ACCESS, ["IA-5"], "5.1.19", ["sshd-28"]),
    SshdSetting("ssh-hostbased-auth", "hostbasedauthentication", "no", "SSH host-based authentication is off",
                "Trusting a whole client host makes every account on it an administrator of this one.",
                "medium", ACCESS, ["IA-2", "IA-3"], "5.1.10", ["sshd-25"]),
    SshdSetting("ssh-ignore-rhosts", "ignorerhosts", "yes", "SSH ignores .rhosts files",
                "rhosts trust is unauthenticated by modern standards.",
                "medium", ACCESS, ["IA-2"], "5.1.11", ["sshd-23"]),
    SshdSetting("ssh-gssapi-auth", "gssapiauthentication", "no", "SSH GSSAPI authentication is off",
                "An unused authentication method is unreviewed attack surface.",
                "low", ACCESS, ["CM-7"], "5.1.9", ["sshd-33"]),
    SshdSetting("ssh-permit-user-environment", "permituserenvironment", "no", "SSH ignores users' environment files",
                "A user-set environment (LD_PRELOAD) can subvert restricted commands.",
                "medium", ACCESS, ["CM-6"], "5.1.21", ["sshd-17"]),
    SshdSetting("ssh-disable-forwarding", "disableforwarding", "yes", "SSH forwards nothing (TCP, agent, X11, streams)",
                "A forwarded port turns the host into a tunnel around the firewall into the clinical network and to the model server.",
                "high", TRANSMISSION, ["AC-17", "SC-7"], "5.1.8", ["sshd-39", "sshd-40", "sshd-42"]),
    SshdSetting("ssh-x11-forwarding", "x11forwarding", "no", "SSH X11 forwarding is off",
                "X11 forwarding exposes the administrator's display to the host.",
                "medium", TRANSMISSION, ["CM-7"], "5.1.8", ["sshd-42"]),
    SshdSetting("ssh-allow-tcp-forwarding", "allowtcpforwarding", "no", "SSH TCP forwarding is off",
                "TCP forwarding bypasses the host firewall's allowlists.",
                "high", TRANSMISSION, ["AC-17", "SC-7"], "5.1.8", ["sshd-39"]),
    SshdSetting("ssh-allow-agent-forwarding", "allowagentforwarding", "no", "SSH agent forwarding is off",
                "A forwarded agent lets root on the host use the administrator's keys elsewhere.",
                "medium", ACCESS, ["AC-17"], "5.1.8", ["sshd-40"]),
    SshdSetting("ssh-permit-tunnel", "permittunnel", "no", "SSH tun/tap tunnelling is off",
                "Layer 2/3 tunnels bypass every network control.",
                "high", TRANSMISSION, ["SC-7"], "5.1.8", ["sshd-38"]),
    SshdSetting("ssh-log-level", "loglevel", "VERBOSE", "SSH logs key fingerprints of every login",
                "VERBOSE records which key opened each session, so every access can be traced to a person.",
                "medium", AUDIT, ["AU-2", "AU-3"], "5.1.14", ["sshd-13"]),
    SshdSetting("ssh-max-auth-tries", "maxauthtries", "3", "SSH allows at most 3 authentication attempts",
                "Limits online guessing per connection.", "medium", ACCESS, ["AC-7"], "5.1.16", ["sshd-19"],
                accepted=["3"], match="max_int"),
    SshdSetting("ssh-max-sessions", "maxsessions", "4", "SSH allows at most 4 sessions per connection",
                "Bounds resources one connection can hold.", "low", ACCESS, ["SC-5"], "5.1.17", ["sshd-20"],
                accepted=["4"], match="max_int"),
    SshdSetting("ssh-max-startups", "maxstartups", "10:30:60", "SSH throttles unauthenticated connections",
                "Rate-limits connection floods before authentication (denial of service).",
                "medium", ACCESS, ["SC-5"], "5.1.18", ["sshd-21"], accepted=["10:30:60"]),
    SshdSetting("ssh-login-grace-time", "logingracetime", "60", "SSH gives 60 s or less to log in",
                "Unauthenticated connections must not hold slots open.", "low", ACCESS, ["AC-7"], "5.1.13", ["sshd-18"],
                accepted=["60"], match="max_int"),
    SshdSetting("ssh-client-alive-interval", "clientaliveinterval", "300", "SSH probes idle sessions every 300 s",
                "Dead sessions are detected and closed (automatic logoff).", "low", ["164.312(a)(2)(iii)"], ["AC-12"],
                "5.1.7", ["sshd-36"], accepted=["300"], match="max_int"),
    SshdSetting("ssh-client-alive-count-max", "clientalivecountmax", "3", "SSH closes sessions after 3 missed probes",
                "Together with the interval, idle sessions end within 15 minutes (automatic logoff).",
                "low", ["164.312(a)(2)(iii)"], ["AC-12"], "5.1.7", ["sshd-37"], accepted=["3"], match="max_int"),
    SshdSetting("ssh-use-pam", "usepam", "yes", "SSH uses PAM (account expiry, lockout, limits)",
                "PAM applies account lockout, expiry and resource limits to SSH logins.",
                "medium", ACCESS, ["AC-7", "IA-5"], "5.1.22", []),
    SshdSetting("ssh-strict-modes", "strictmodes", "yes", "SSH refuses keys in writable home directories",
                "A world-writable authorized_keys lets any local user add their key.",
                "medium", ACCESS, ["AC-6"], "5.1.x", ["sshd-11"]),
    SshdSetting("ssh-compression", "compression", "no", "SSH compression is off",
                "Compression before encryption has enabled side channels and pre-auth bugs.",
                "low", TRANSMISSION, ["SC-8"], "5.1.x", []),
    SshdSetting("ssh-banner", "banner", "/etc/issue.net", "SSH shows the login banner",
                "Users are warned that access is restricted and monitored before they authenticate.",
                "low", ACCESS, ["AC-8"], "5.1.5", ["sshd-46"]),
    SshdSetting("ssh-print-last-log", "printlastlog", "yes", "SSH shows the last login at login",
                "A user seeing an unexpected previous login can report a compromised account.",
                "low", AUDIT, ["AC-9"], "5.1.x", ["sshd-45"]),
    SshdSetting("ssh-ciphers", "ciphers", ",".join(CIPHERS), "SSH offers modern ciphers only",
                "Weak ciphers (CBC, 3DES, arcfour) allow decryption of administrative sessions.",
                "high", TRANSMISSION, ["SC-8", "SC-13"], "5.1.6", ["sshd-01"], accepted=CIPHERS, match="subset"),
    SshdSetting("ssh-kex", "kexalgorithms", ",".join(KEX), "SSH offers modern key exchange only",
                "Weak key exchange (SHA-1, small DH groups) undermines session keys.",
                "high", TRANSMISSION, ["SC-8", "SC-13"], "5.1.12", ["sshd-02"], accepted=KEX, match="subset"),
    SshdSetting("ssh-macs", "macs", ",".join(MACS), "SSH offers encrypt-then-MAC SHA-2 MACs only",
                "MD5/SHA-1 and encrypt-and-MAC modes weaken session integrity.",
                "high", TRANSMISSION + ["164.312(e)(2)(i)"], ["SC-8", "SC-13"], "5.1.15", ["sshd-03"],
                accepted=MACS, match="subset"),
    SshdSetting("ssh-syslog-facility", "syslogfacility", "AUTH", "SSH logs to the AUTH facility",
                "Login records must reach the authentication log that is kept, rotated and forwarded to the SIEM.",
                "low", AUDIT, ["AU-2", "AU-9"], "5.1.x", ["sshd-12"]),
    SshdSetting("ssh-ignore-user-known-hosts", "ignoreuserknownhosts", "yes", "SSH ignores users' known_hosts for host-based trust",
                "Host-based trust must never be extended through files users control.",
                "low", ACCESS, ["IA-3"], "5.1.x", ["sshd-24"]),
    SshdSetting("ssh-kerberos-auth", "kerberosauthentication", "no", "SSH Kerberos password authentication is off",
                "Kerberos password checks are another password path; Citadel hosts are key-only.",
                "low", ACCESS, ["CM-7", "IA-2"], "5.1.x", ["sshd-30"]),
    SshdSetting("ssh-tcp-keepalive", "tcpkeepalive", "no", "SSH uses encrypted keepalives only",
                "TCP keepalives are spoofable; the encrypted client-alive probes detect dead sessions instead.",
                "low", TRANSMISSION, ["SC-10"], "5.1.x", ["sshd-35"]),
    SshdSetting("ssh-gateway-ports", "gatewayports", "no", "SSH never binds forwarded ports to the network",
                "Remote-forwarded ports bound to all interfaces would publish internal services on the host's address.",
                "medium", TRANSMISSION, ["SC-7"], "5.1.x", ["sshd-41"]),
    SshdSetting("ssh-x11-use-localhost", "x11uselocalhost", "yes", "SSH binds any X11 forwarding to loopback",
                "Defence in depth if X11 forwarding were ever re-enabled.", "low", TRANSMISSION, ["SC-7"], "5.1.x", ["sshd-43"]),
    SshdSetting("ssh-print-motd", "printmotd", "no", "sshd does not print the message of the day itself",
                "PAM already shows the message of the day once; keeping one path keeps what users see reviewable.",
                "low", ACCESS, ["AC-8"], "5.1.x", ["sshd-44"]),
    SshdSetting("ssh-debian-banner", "debianbanner", "no", "SSH does not announce the distribution in its version string",
                "The protocol banner otherwise tells every scanner the OS and package version to target.",
                "low", ACCESS, ["CM-7", "SI-11"], "5.1.x", ["sshd-47"]),
]


# A value that violates each setting, for the break tests (default: "yes").
BREAK_VALUES = {
    "ignorerhosts": "no", "loglevel": "INFO", "maxauthtries": "6", "maxsessions": "10", "maxstartups": "100:30:200",
    "logingracetime": "120", "clientaliveinterval": "900", "clientalivecountmax": "10", "usepam": "no",
    "strictmodes": "no", "banner": "none", "printlastlog": "no", "ciphers": "aes256-cbc", "kexalgorithms": "diffie-hellman-group14-sha1",
    "macs": "hmac-sha1", "permitrootlogin": "prohibit-password", "compression": "delayed", "disableforwarding": "no",
    "syslogfacility": "DAEMON", "ignoreuserknownhosts": "no", "x11uselocalhost": "no",
}


# Options that `sshd -T` does not print (Debian's DebianBanner patch leaves it out of the
# dump, seen on bookworm): read from the configuration as sshd reads it instead, includes
# expanded in place, first value wins (sshd's rule), Debian's default "yes" when unset.
NOT_IN_SSHD_T = {"debianbanner": "yes"}
_EXPANDED_CONFIG = (
    "while IFS= read -r line; do case \"$line\" in [Ii]nclude*) "
    "for f in $(echo \"$line\" | cut -d' ' -f2-); do case $f in /*) ;; *) f=/etc/ssh/$f;; esac; "
    "cat $f 2>/dev/null; done;; *) printf '%s\\n' \"$line\";; esac; done < /etc/ssh/sshd_config"
)


def _config_check(option: str, expected: str) -> Command:
    default = NOT_IN_SSHD_T[option]
    return Command(
        command=f"{{ {_EXPANDED_CONFIG}; }} | grep -iE '^[[:space:]]*{option}[[:space:]]' | head -1 | "
        f"awk '{{print tolower($2)}}' | grep . || echo {default}",
        expect_output=rf"\A\s*{expected}\s*\Z",
        describe=f"sshd_config (includes expanded, first value wins) sets {option} to",
    )


def _control(s: SshdSetting) -> Control:
    return Control(
        id=s.id,
        title=s.title,
        rationale=s.rationale,
        severity=s.severity,
        refs=References(hipaa=s.hipaa, nist=s.nist, cis=[s.cis] if s.cis != "5.1.x" else ["5.1"], threats=["T9"], devsec=s.devsec),
        check=_config_check(s.option, s.value.lower())
        if s.option in NOT_IN_SSHD_T
        else SshdOption(option=s.option, expected=s.accepted or [s.value.lower()], match=s.match),
        remediation="hardening",
        break_with=f"sed -i 's|^{s.option} .*|{s.option} {BREAK_VALUES.get(s.option, 'yes')}|' /etc/ssh/sshd_config && systemctl reload ssh",
    )


CONTROLS = [_control(s) for s in SETTINGS] + [
    Control(
        id="ssh-config-permissions",
        title="sshd_config is owned by root and not writable by others",
        rationale="Whoever can edit sshd's configuration can grant themselves access.",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["CM-6", "AC-6"], cis=["5.1.1"], threats=["T9"], devsec=["sshd-05"]),
        check=FileMode(path="/etc/ssh/sshd_config", max_mode="0600", owner="root", group=["root"]),
        remediation="hardening",
        break_with="chmod 0644 /etc/ssh/sshd_config",
    ),
    Control(
        id="ssh-dir-permissions",
        title="/etc/ssh is owned by root and writable only by root",
        rationale="Whoever can write to /etc/ssh can replace host keys or configuration.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["CM-6", "AC-6"], cis=["5.1.1"], threats=["T9"], devsec=["sshd-04"]),
        check=FileMode(path="/etc/ssh", max_mode="0755", owner="root", group=["root"]),
        remediation="hardening",
        break_with="chmod 0775 /etc/ssh",
    ),
    Control(
        id="ssh-host-private-keys",
        title="SSH host private keys are readable by root only",
        rationale="A copied host key lets an attacker impersonate the host to administrators.",
        severity="high",
        refs=References(hipaa=TRANSMISSION, nist=["SC-12", "IA-3"], cis=["5.1.2"], threats=["T9"], devsec=["sshd-14"]),
        check=FileMode(path="/etc/ssh/ssh_host_ed25519_key", max_mode="0600", owner="root"),
        remediation="hardening",
        break_with="chown daemon /etc/ssh/ssh_host_ed25519_key",
    ),
    Control(
        id="ssh-allow-groups",
        title="SSH logins are limited to the Citadel administrators' group",
        rationale="Service accounts (the model server, the gateway) must never be able to log in over SSH.",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["AC-3", "AC-17"], cis=["5.1.4"], threats=["T9"]),
        check=SshdOption(option="allowgroups", expected=["citadel-admins"]),
        remediation="hardening",
        break_with="sed -i '/^allowgroups/d' /etc/ssh/sshd_config && systemctl reload ssh",
    ),
    Control(
        id="ssh-banner-text",
        title="The network login banner warns of monitoring and names no software",
        rationale="Users must be told access is restricted and recorded; naming the OS helps attackers.",
        severity="low",
        refs=References(hipaa=ACCESS, nist=["AC-8"], cis=["1.7.2"], threats=["T9"]),
        check=FileContent(path="/etc/issue.net", pattern=r"(debian|ubuntu|\\[mrsv])", present=False, ignore_case=True),
        remediation="hardening",
        break_with="echo 'Debian GNU/Linux 12' >> /etc/issue.net",
    ),
]
