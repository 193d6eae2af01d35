"""SSH server controls (CIS Debian 12 section 5.1, dev-sec ssh-baseline).

The sshd settings are one table: the controls check them through ``sshd -T`` (the
effective configuration, not a file that might be overridden), and the ``hardening`` role
writes the same table at the top of sshd_config, before its Include of sshd_config.d, so
no drop-in can override them (sshd keeps the first value it reads). One source, two views.

Example::

    >>> row = next(s for s in SETTINGS if s.id == "ssh-permit-root-login")
    >>> row.make_check().script()
    "sshd -T 2>/dev/null | grep -i '^permitrootlogin ' || echo 'permitrootlogin <unset>'"
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hardening.checks import Check, Command, FileContent, FileMode, SshdOption
from hardening.model import Control, References
from hardening.rows import Row, controls_of

# Modern algorithms only (OpenSSH 9.2 on Debian 12): AEAD ciphers and
# CTR modes, curve25519/sntrup KEX, encrypt-then-MAC SHA-2 MACs.
CIPHERS = [
    "chacha20-poly1305@openssh.com", "aes256-gcm@openssh.com", "aes128-gcm@openssh.com", "aes256-ctr", "aes192-ctr",
    "aes128-ctr",
]
KEX = [
    "sntrup761x25519-sha512@openssh.com", "curve25519-sha256", "curve25519-sha256@libssh.org",
    "diffie-hellman-group16-sha512", "diffie-hellman-group18-sha512",
]
MACS = ["hmac-sha2-512-etm@openssh.com", "hmac-sha2-256-etm@openssh.com", "umac-128-etm@openssh.com"]

ACCESS = ["164.312(a)(1)", "164.312(d)"]
TRANSMISSION = ["164.312(e)(1)", "164.312(e)(2)(ii)"]
AUDIT = ["164.312(b)"]

SSHD_CONFIG = "/etc/ssh/sshd_config"

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


@dataclass(frozen=True, kw_only=True)
class SshdSetting(Row):
    """One sshd option: the role writes `value`, the check reads what sshd actually uses."""

    option: str  # lower-case, as sshd -T prints it
    value: str  # what the role writes into sshd_config (sshd_config spelling)
    bad: str  # a value that violates it, for the break test
    accepted: Sequence[str] | None = None  # what sshd -T may print; default [value.lower()]
    match: Literal["exact", "subset", "max_int"] = "exact"
    threats: Sequence[str] = ("T9",)

    def make_check(self) -> Check:
        if self.option in NOT_IN_SSHD_T:
            return _config_check(self.option, self.value.lower())
        return SshdOption(option=self.option, expected=list(self.accepted or [self.value.lower()]), match=self.match)

    def make_break(self) -> str:
        return f"sed -i 's|^{self.option} .*|{self.option} {self.bad}|' {SSHD_CONFIG} && systemctl reload ssh"


SETTINGS: list[SshdSetting] = [
    SshdSetting(
        id="ssh-permit-root-login", option="permitrootlogin", value="no", bad="prohibit-password",
        title="SSH refuses root logins",
        rationale="Administrative access must be attributable to a person; root logins are not, and root is every "
                  "attacker's first guess.",
        severity="high", hipaa=ACCESS + ["164.312(a)(2)(i)"], nist=["AC-6(2)", "IA-2"], cis=["5.1.20"],
        devsec=["sshd-06"],
    ),
    SshdSetting(
        id="ssh-password-auth", option="passwordauthentication", value="no", bad="yes",
        title="SSH accepts keys only, no passwords",
        rationale="Passwords can be guessed, phished and reused; keys held by named administrators cannot be "
                  "brute-forced over the network.",
        severity="high", hipaa=ACCESS, nist=["IA-2(1)", "IA-5"], devsec=["sshd-06", "sshd-27"],
        cis=(),  # CIS Debian 12 section 5.1 has no PasswordAuthentication recommendation
    ),
    SshdSetting(
        id="ssh-kbd-interactive", option="kbdinteractiveauthentication", value="no", bad="yes",
        title="SSH keyboard-interactive authentication is off",
        rationale="Keyboard-interactive is another path to password logins through PAM.",
        severity="medium", hipaa=ACCESS, nist=["IA-2"], devsec=["sshd-06", "sshd-29"],
        cis=(),  # CIS Debian 12 section 5.1 has no KbdInteractiveAuthentication recommendation
    ),
    SshdSetting(
        id="ssh-empty-passwords", option="permitemptypasswords", value="no", bad="yes",
        title="SSH refuses empty passwords",
        rationale="An account with an empty password must never be reachable over the network.",
        severity="high", hipaa=ACCESS, nist=["IA-5"], cis=["5.1.19"], devsec=["sshd-28"],
    ),
    SshdSetting(
        id="ssh-hostbased-auth", option="hostbasedauthentication", value="no", bad="yes",
        title="SSH host-based authentication is off",
        rationale="Trusting a whole client host makes every account on it an administrator of this one.",
        severity="medium", hipaa=ACCESS, nist=["IA-2", "IA-3"], cis=["5.1.10"], devsec=["sshd-25"],
    ),
    SshdSetting(
        id="ssh-ignore-rhosts", option="ignorerhosts", value="yes", bad="no",
        title="SSH ignores .rhosts files",
        rationale="rhosts trust is unauthenticated by modern standards.",
        severity="medium", hipaa=ACCESS, nist=["IA-2"], cis=["5.1.11"], devsec=["sshd-23"],
    ),
    SshdSetting(
        id="ssh-gssapi-auth", option="gssapiauthentication", value="no", bad="yes",
        title="SSH GSSAPI authentication is off",
        rationale="An unused authentication method is unreviewed attack surface.",
        severity="low", hipaa=ACCESS, nist=["CM-7"], cis=["5.1.9"], devsec=["sshd-33"],
    ),
    SshdSetting(
        id="ssh-permit-user-environment", option="permituserenvironment", value="no", bad="yes",
        title="SSH ignores users' environment files",
        rationale="A user-set environment (LD_PRELOAD) can subvert restricted commands.",
        severity="medium", hipaa=ACCESS, nist=["CM-6"], cis=["5.1.21"], devsec=["sshd-17"],
    ),
    SshdSetting(
        id="ssh-disable-forwarding", option="disableforwarding", value="yes", bad="no",
        title="SSH forwards nothing (TCP, agent, X11, streams)",
        rationale="A forwarded port turns the host into a tunnel around the firewall into the clinical network and "
                  "to the model server.",
        severity="high", hipaa=TRANSMISSION, nist=["AC-17", "SC-7"], cis=["5.1.8"],
        devsec=["sshd-39", "sshd-40", "sshd-42"],
    ),
    SshdSetting(
        id="ssh-x11-forwarding", option="x11forwarding", value="no", bad="yes",
        title="SSH X11 forwarding is off",
        rationale="X11 forwarding exposes the administrator's display to the host.",
        severity="medium", hipaa=TRANSMISSION, nist=["CM-7"], cis=["5.1.8"], devsec=["sshd-42"],
    ),
    SshdSetting(
        id="ssh-allow-tcp-forwarding", option="allowtcpforwarding", value="no", bad="yes",
        title="SSH TCP forwarding is off",
        rationale="TCP forwarding bypasses the host firewall's allowlists.",
        severity="high", hipaa=TRANSMISSION, nist=["AC-17", "SC-7"], cis=["5.1.8"], devsec=["sshd-39"],
    ),
    SshdSetting(
        id="ssh-allow-agent-forwarding", option="allowagentforwarding", value="no", bad="yes",
        title="SSH agent forwarding is off",
        rationale="A forwarded agent lets root on the host use the administrator's keys elsewhere.",
        severity="medium", hipaa=ACCESS, nist=["AC-17"], cis=["5.1.8"], devsec=["sshd-40"],
    ),
    SshdSetting(
        id="ssh-permit-tunnel", option="permittunnel", value="no", bad="yes",
        title="SSH tun/tap tunnelling is off",
        rationale="Layer 2/3 tunnels bypass every network control.",
        # Not CIS 5.1.8: DisableForwarding does not cover tun/tap tunnels, and CIS has no PermitTunnel item.
        severity="high", hipaa=TRANSMISSION, nist=["SC-7"], devsec=["sshd-38"],
    ),
    SshdSetting(
        id="ssh-log-level", option="loglevel", value="VERBOSE", bad="INFO",
        title="SSH logs key fingerprints of every login",
        rationale="VERBOSE records which key opened each session, so every access can be traced to a person.",
        severity="medium", hipaa=AUDIT, nist=["AU-2", "AU-3"], cis=["5.1.14"], devsec=["sshd-13"],
    ),
    SshdSetting(
        id="ssh-max-auth-tries", option="maxauthtries", value="3", accepted=["3"], match="max_int", bad="6",
        title="SSH allows at most 3 authentication attempts",
        rationale="Limits online guessing per connection.",
        severity="medium", hipaa=ACCESS, nist=["AC-7"], cis=["5.1.16"], devsec=["sshd-19"],
    ),
    SshdSetting(
        id="ssh-max-sessions", option="maxsessions", value="4", accepted=["4"], match="max_int", bad="10",
        title="SSH allows at most 4 sessions per connection",
        rationale="Bounds resources one connection can hold.",
        severity="low", hipaa=ACCESS, nist=["SC-5"], cis=["5.1.17"], devsec=["sshd-20"],
    ),
    SshdSetting(
        id="ssh-max-startups", option="maxstartups", value="10:30:60", accepted=["10:30:60"], bad="100:30:200",
        title="SSH throttles unauthenticated connections",
        rationale="Rate-limits connection floods before authentication (denial of service).",
        severity="medium", hipaa=ACCESS, nist=["SC-5"], cis=["5.1.18"], devsec=["sshd-21"],
    ),
    SshdSetting(
        id="ssh-login-grace-time", option="logingracetime", value="60", accepted=["60"], match="max_int", bad="120",
        title="SSH gives 60 s or less to log in",
        rationale="Unauthenticated connections must not hold slots open.",
        severity="low", hipaa=ACCESS, nist=["AC-7"], cis=["5.1.13"], devsec=["sshd-18"],
    ),
    SshdSetting(
        id="ssh-client-alive-interval", option="clientaliveinterval", value="300", accepted=["300"], match="max_int",
        bad="900",
        title="SSH probes idle sessions every 300 s",
        rationale="Dead sessions are detected and closed (automatic logoff).",
        severity="low", hipaa=["164.312(a)(2)(iii)"], nist=["AC-12"], cis=["5.1.7"], devsec=["sshd-36"],
    ),
    SshdSetting(
        id="ssh-client-alive-count-max", option="clientalivecountmax", value="3", accepted=["3"], match="max_int",
        bad="10",
        title="SSH closes sessions after 3 missed probes",
        rationale="Together with the interval, idle sessions end within 15 minutes (automatic logoff).",
        severity="low", hipaa=["164.312(a)(2)(iii)"], nist=["AC-12"], cis=["5.1.7"], devsec=["sshd-37"],
    ),
    SshdSetting(
        id="ssh-use-pam", option="usepam", value="yes", bad="no",
        title="SSH uses PAM (account expiry, lockout, limits)",
        rationale="PAM applies account lockout, expiry and resource limits to SSH logins.",
        severity="medium", hipaa=ACCESS, nist=["AC-7", "IA-5"], cis=["5.1.22"],
    ),
    SshdSetting(
        id="ssh-strict-modes", option="strictmodes", value="yes", bad="no",
        title="SSH refuses keys in writable home directories",
        rationale="A world-writable authorized_keys lets any local user add their key.",
        severity="medium", hipaa=ACCESS, nist=["AC-6"], devsec=["sshd-11"],
        cis=(),  # CIS Debian 12 section 5.1 has no StrictModes recommendation
    ),
    SshdSetting(
        id="ssh-compression", option="compression", value="no", bad="delayed",
        title="SSH compression is off",
        rationale="Compression before encryption has enabled side channels and pre-auth bugs.",
        severity="low", hipaa=TRANSMISSION, nist=["SC-8"],
        cis=(),  # CIS Debian 12 section 5.1 has no Compression recommendation
    ),
    SshdSetting(
        id="ssh-banner", option="banner", value="/etc/issue.net", bad="none",
        title="SSH shows the login banner",
        rationale="Users are warned that access is restricted and monitored before they authenticate.",
        severity="low", hipaa=ACCESS, nist=["AC-8"], cis=["5.1.5"], devsec=["sshd-46"],
    ),
    SshdSetting(
        id="ssh-print-last-log", option="printlastlog", value="yes", bad="no",
        title="SSH shows the last login at login",
        rationale="A user seeing an unexpected previous login can report a compromised account.",
        severity="low", hipaa=AUDIT, nist=["AC-9"], devsec=["sshd-45"],
        cis=(),  # CIS Debian 12 section 5.1 has no PrintLastLog recommendation
    ),
    SshdSetting(
        id="ssh-ciphers", option="ciphers", value=",".join(CIPHERS), accepted=CIPHERS, match="subset",
        bad="aes256-cbc",
        title="SSH offers modern ciphers only",
        rationale="Weak ciphers (CBC, 3DES, arcfour) allow decryption of administrative sessions.",
        severity="high", hipaa=TRANSMISSION, nist=["SC-8", "SC-13"], cis=["5.1.6"], devsec=["sshd-01"],
    ),
    SshdSetting(
        id="ssh-kex", option="kexalgorithms", value=",".join(KEX), accepted=KEX, match="subset",
        bad="diffie-hellman-group14-sha1",
        title="SSH offers modern key exchange only",
        rationale="Weak key exchange (SHA-1, small DH groups) undermines session keys.",
        severity="high", hipaa=TRANSMISSION, nist=["SC-8", "SC-13"], cis=["5.1.12"], devsec=["sshd-02"],
    ),
    SshdSetting(
        id="ssh-macs", option="macs", value=",".join(MACS), accepted=MACS, match="subset", bad="hmac-sha1",
        title="SSH offers encrypt-then-MAC SHA-2 MACs only",
        rationale="MD5/SHA-1 and encrypt-and-MAC modes weaken session integrity.",
        severity="high", hipaa=TRANSMISSION + ["164.312(e)(2)(i)"], nist=["SC-8", "SC-13"], cis=["5.1.15"],
        devsec=["sshd-03"],
    ),
    SshdSetting(
        id="ssh-syslog-facility", option="syslogfacility", value="AUTH", bad="DAEMON",
        title="SSH logs to the AUTH facility",
        rationale="Login records must reach the authentication log that is kept, rotated and forwarded to the SIEM.",
        severity="low", hipaa=AUDIT, nist=["AU-2", "AU-9"], devsec=["sshd-12"],
        cis=(),  # CIS Debian 12 section 5.1 has no SyslogFacility recommendation
    ),
    SshdSetting(
        id="ssh-ignore-user-known-hosts", option="ignoreuserknownhosts", value="yes", bad="no",
        title="SSH ignores users' known_hosts for host-based trust",
        rationale="Host-based trust must never be extended through files users control.",
        severity="low", hipaa=ACCESS, nist=["IA-3"], devsec=["sshd-24"],
        cis=(),  # CIS Debian 12 section 5.1 has no IgnoreUserKnownHosts recommendation
    ),
    SshdSetting(
        id="ssh-kerberos-auth", option="kerberosauthentication", value="no", bad="yes",
        title="SSH Kerberos password authentication is off",
        rationale="Kerberos password checks are another password path; Citadel hosts are key-only.",
        severity="low", hipaa=ACCESS, nist=["CM-7", "IA-2"], devsec=["sshd-30"],
        cis=(),  # CIS Debian 12 section 5.1 has no KerberosAuthentication recommendation
    ),
    SshdSetting(
        id="ssh-tcp-keepalive", option="tcpkeepalive", value="no", bad="yes",
        title="SSH uses encrypted keepalives only",
        rationale="TCP keepalives are spoofable; the encrypted client-alive probes detect dead sessions instead.",
        severity="low", hipaa=TRANSMISSION, nist=["SC-10"], devsec=["sshd-35"],
        cis=(),  # CIS Debian 12 section 5.1 has no TCPKeepAlive recommendation
    ),
    SshdSetting(
        id="ssh-gateway-ports", option="gatewayports", value="no", bad="yes",
        title="SSH never binds forwarded ports to the network",
        rationale="Remote-forwarded ports bound to all interfaces would publish internal services on the host's "
                  "address.",
        severity="medium", hipaa=TRANSMISSION, nist=["SC-7"], devsec=["sshd-41"],
        cis=(),  # CIS Debian 12 section 5.1 has no GatewayPorts recommendation
    ),
    SshdSetting(
        id="ssh-x11-use-localhost", option="x11uselocalhost", value="yes", bad="no",
        title="SSH binds any X11 forwarding to loopback",
        rationale="Defence in depth if X11 forwarding were ever re-enabled.",
        severity="low", hipaa=TRANSMISSION, nist=["SC-7"], devsec=["sshd-43"],
        cis=(),  # CIS Debian 12 section 5.1 has no X11UseLocalhost recommendation
    ),
    SshdSetting(
        id="ssh-print-motd", option="printmotd", value="no", bad="yes",
        title="sshd does not print the message of the day itself",
        rationale="PAM already shows the message of the day once; keeping one path keeps what users see reviewable.",
        severity="low", hipaa=ACCESS, nist=["AC-8"], devsec=["sshd-44"],
        cis=(),  # CIS Debian 12 section 5.1 has no PrintMotd recommendation
    ),
    SshdSetting(
        id="ssh-debian-banner", option="debianbanner", value="no", bad="yes",
        title="SSH does not announce the distribution in its version string",
        rationale="The protocol banner otherwise tells every scanner the OS and package version to target.",
        severity="low", hipaa=ACCESS, nist=["CM-7", "SI-11"], devsec=["sshd-47"],
        cis=(),  # CIS Debian 12 section 5.1 has no DebianBanner recommendation
    ),

]


CONTROLS: list[Control] = controls_of(SETTINGS) + [
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
        refs=References(hipaa=ACCESS, nist=["AC-8"], cis=["1.6.3"], threats=["T9"]),
        check=FileContent(path="/etc/issue.net", pattern=r"(debian|ubuntu|\\[mrsv])", present=False, ignore_case=True),
        remediation="hardening",
        break_with="echo 'Debian GNU/Linux 12' >> /etc/issue.net",
    ),
]
