"""Packages, updates, time, AppArmor and GPU device controls (CIS Debian 12 sections 1.2,
1.3, 2.2, 2.3; dev-sec linux-baseline package-*).

Every value the role writes comes from the tables and constants here, so the check and the
fix cannot drift apart: the packages that must be absent, the apt settings (checked through
``apt-config``, apt's effective configuration, not one file that another could override),
the chrony configuration, the AppArmor profile policy, and the GPU udev rule.

This area's check kinds (``PackagesAbsent``, ``FileExact``, ``PackageService``,
``DeviceNodes``) live in ``hardening/checks/services.py``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from hardening.checks import Check, Command, FileContent, Package, ServiceState
from hardening.checks.services import DeviceNodes, FileExact, PackagesAbsent, PackageService
from hardening.model import Control, References
from hardening.rows import Row, controls_of

# --- the data the role applies ------------------------------------------------------------

# Automatic security updates (unattended-upgrades, run by apt's daily timers).
AUTO_UPGRADES_FILE = "/etc/apt/apt.conf.d/20auto-upgrades"
PERIODIC = {"APT::Periodic::Update-Package-Lists": "1", "APT::Periodic::Unattended-Upgrade": "1"}
ORIGINS_FILE = "/etc/apt/apt.conf.d/52citadel-unattended-upgrades"
SECURITY_ORIGIN = "origin=Debian,codename=${distro_codename}-security,label=Debian-Security"
UPDATE_TIMERS = ["apt-daily.timer", "apt-daily-upgrade.timer"]

# apt must refuse unauthenticated packages and repositories.
APT_POLICY_FILE = "/etc/apt/apt.conf.d/99citadel-authenticated"
INSECURE_APT_KEYS = {
    "APT::Get::AllowUnauthenticated": "false",
    "Acquire::AllowInsecureRepositories": "false",
    "Acquire::AllowDowngradeToInsecureRepositories": "false",
}
# The one source allowed to be [trusted=yes]: the site's local, read-only repository
# (the lab's, and an air-gapped site's if it has not signed its mirror yet).
LOCAL_REPOSITORY = "file:/srv/citadel-repo"
SOURCES = ["/etc/apt/sources.list", "/etc/apt/sources.list.d"]
TRUSTED_YES = r"(\[[^]]*trusted=yes|^[[:space:]]*Trusted:[[:space:]]*yes)"

# Time synchronisation.
CHRONY_CONF = "/etc/chrony/chrony.conf"
DEFAULT_TIME_SOURCES = ["pool 2.debian.pool.ntp.org iburst"]

# AppArmor.
APPARMOR_DIR = "/etc/apparmor.d"
COMPLAIN_FLAG = r"flags=\([^)]*complain"

# GPU device nodes: readable and writable by the model service's group only.
GPU_GROUP = "citadel-model"
GPU_RULES_FILE = "/etc/udev/rules.d/70-citadel-gpu.rules"
GPU_DEVICE_GLOBS = ["/dev/nvidia*", "/dev/nvidia-caps/*", "/dev/dri/card*", "/dev/dri/renderD*"]


def gpu_rules(group: str = GPU_GROUP) -> str:
    return "\n".join([
        "# Managed by Citadel (role hardening); see hardening/controls/services.py.",
        "# GPU device nodes: only the model service's group may open them.",
        f'KERNEL=="nvidia*", OWNER="root", GROUP="{group}", MODE="0660"',
        f'SUBSYSTEM=="drm", KERNEL=="card[0-9]*|renderD[0-9]*", OWNER="root", GROUP="{group}", MODE="0660"',
    ]) + "\n"


def chrony_conf(sources: list[str]) -> str:
    """Debian's chrony.conf with the site's time sources (Citadel owns the file)."""
    return "\n".join([
        "# Managed by Citadel (role hardening); see hardening/controls/services.py.",
        *sources,
        "sourcedir /etc/chrony/sources.d",
        "confdir /etc/chrony/conf.d",
        "keyfile /etc/chrony/chrony.keys",
        "driftfile /var/lib/chrony/chrony.drift",
        "ntsdumpdir /var/lib/chrony",
        "logdir /var/log/chrony",
        "maxupdateskew 100.0",
        "rtcsync",
        "makestep 1 3",
        "leapsectz right/UTC",
    ]) + "\n"


def apt_value(key: str, accepted: list[str], describe: str) -> Command:
    """apt's effective value of `key` (after every apt.conf.d file) is one of `accepted` ('' = unset)."""
    alternatives = "|".join(re.escape(a) for a in accepted)
    return Command(
        command=f"eval \"$(apt-config shell v {key})\"; echo \"{key}=$v\"",
        expect_output=rf"^{re.escape(key)}=({alternatives})$",
        describe=describe,
    )


def fake_package(name: str) -> str:
    """Break recipe: install a stand-in package called `name` (hosts are air-gapped, so the real
    one cannot be fetched). Its epoch keeps it clear of other packages' Breaks on old versions."""
    control = (
        f"Package: {name}\\nVersion: 99:0-citadel-break\\nArchitecture: all\\n"
        "Maintainer: Citadel tests <tests@invalid>\\nDescription: stand-in for a break test\\n"
    )
    return (
        f"d=$(mktemp -d) && mkdir -p $d/pkg/DEBIAN && printf '{control}' > $d/pkg/DEBIAN/control && "
        f"dpkg-deb -b $d/pkg $d/p.deb >/dev/null && dpkg -i $d/p.deb >/dev/null && rm -rf $d"
    )


@dataclass(frozen=True, kw_only=True)
class Unwanted(Row):
    """Packages that must not be installed; the role purges every one of them."""

    packages: Sequence[str]  # the first is the one the break test installs
    threats: Sequence[str] = ("T9",)

    def make_check(self) -> Check:
        return PackagesAbsent(names=list(self.packages), describe=self.title)

    def make_break(self) -> str:
        return fake_package(self.packages[0])


CLEARTEXT = "It speaks a cleartext protocol: credentials and patient data cross the network readable by anyone on the path."
UNWANTED: list[Unwanted] = [
    Unwanted(
        id="svc-no-inetd", packages=["openbsd-inetd", "inetutils-inetd", "rlinetd"],
        title="No inetd super-server is installed",
        rationale="inetd starts network services on demand outside systemd's view, so they escape the service "
                  "inventory and the firewall review.",
        severity="high", nist=["CM-7"], devsec=["package-01"], threats=["T9", "T6"],
    ),
    Unwanted(
        id="svc-no-xinetd", packages=["xinetd"],
        title="xinetd is not installed",
        rationale="xinetd starts network services on demand outside systemd's view, so they escape the service "
                  "inventory and the firewall review.",
        severity="high", nist=["CM-7"], cis=["2.1.19"], devsec=["package-01"], threats=["T9", "T6"],
    ),
    Unwanted(
        id="svc-no-telnetd", packages=["telnetd", "inetutils-telnetd", "telnetd-ssl"],
        title="No telnet server is installed",
        rationale="A telnet server accepts logins in cleartext. " + CLEARTEXT,
        severity="critical", nist=["CM-7", "IA-2", "SC-8"], devsec=["package-02"],
    ),
    Unwanted(
        id="svc-no-telnet-client", packages=["telnet", "inetutils-telnet"],
        title="No telnet client is installed",
        rationale="A telnet client invites administrators to type credentials over cleartext links. " + CLEARTEXT,
        severity="medium", nist=["CM-7", "SC-8"], cis=["2.2.4"],
    ),
    Unwanted(
        id="svc-no-rsh-server", packages=["rsh-server", "rsh-redone-server"],
        title="No rsh/rlogin server is installed",
        rationale="The r-commands authenticate by host name and send everything in cleartext. " + CLEARTEXT,
        severity="critical", nist=["CM-7", "IA-2"], devsec=["package-03"],
    ),
    Unwanted(
        id="svc-no-rsh-client", packages=["rsh-client", "rsh-redone-client"],
        title="No rsh/rlogin client is installed",
        rationale="The r-commands authenticate by host name and send everything in cleartext. " + CLEARTEXT,
        severity="medium", nist=["CM-7"], cis=["2.2.2"],
    ),
    Unwanted(
        id="svc-no-nis", packages=["nis", "ypserv"],
        title="NIS (ypserv, ypbind) is not installed",
        rationale="NIS hands out account and password-hash maps to anyone who asks, with no real authentication.",
        severity="high", nist=["CM-7", "IA-5"], cis=["2.1.10", "2.2.1"], devsec=["package-05"],
    ),
    Unwanted(
        id="svc-no-talk", packages=["talk", "talkd", "inetutils-talk", "inetutils-talkd"],
        title="talk is not installed",
        rationale="talk is an unauthenticated cleartext chat service: an unneeded network surface on a clinical "
                  "host.",
        severity="low", nist=["CM-7"], cis=["2.2.3"],
    ),
    Unwanted(
        id="svc-no-tftp-server", packages=["tftpd-hpa", "tftpd", "atftpd"],
        title="No TFTP server is installed",
        rationale="TFTP has no authentication at all: anyone who can reach it can read (and often write) the files "
                  "it serves.",
        severity="high", nist=["CM-7", "AC-3"], cis=["2.1.16"], devsec=["package-06"], threats=["T9", "T10"],
    ),
    Unwanted(
        id="svc-no-tftp-client", packages=["tftp-hpa", "tftp", "atftp"],
        title="No TFTP client is installed",
        rationale="A TFTP client is an unauthenticated way to move files, patient data included, off the host.",
        severity="low", nist=["CM-7"], threats=["T9", "T10"],
    ),
    Unwanted(
        id="svc-no-ftp", packages=["ftp", "inetutils-ftp", "tnftp", "vsftpd", "proftpd-core", "pure-ftpd"],
        title="No FTP client or server is installed",
        rationale="FTP sends credentials and files in cleartext. " + CLEARTEXT,
        severity="medium", nist=["CM-7", "SC-8"], cis=["2.1.6", "2.2.6"], threats=["T9", "T10"],
    ),
    Unwanted(
        id="svc-no-avahi", packages=["avahi-daemon"],
        title="avahi-daemon (mDNS/DNS-SD) is not installed",
        rationale="Avahi announces the host and its services to the whole network segment, helping an attacker map "
                  "GPU hosts in the clinical network.",
        severity="medium", nist=["CM-7"], cis=["2.1.2"],
    ),
    Unwanted(
        id="svc-no-cups", packages=["cups-daemon", "cups"],
        title="The CUPS print server is not installed",
        rationale="A print server on an inference host is unneeded network surface with a history of remote "
                  "vulnerabilities.",
        severity="medium", nist=["CM-7"], cis=["2.1.11"], threats=["T9", "T6"],
    ),
    Unwanted(
        id="svc-no-rpcbind", packages=["rpcbind"],
        title="rpcbind is not installed",
        rationale="rpcbind exposes RPC services and can be abused for traffic amplification; a GPU host serves no "
                  "NFS or NIS.",
        severity="medium", nist=["CM-7"], cis=["2.1.12"], threats=["T9", "T5"],
    ),
    Unwanted(
        id="svc-no-snmpd", packages=["snmpd"],
        title="The SNMP daemon is not installed",
        rationale="SNMP v1/v2c community strings are cleartext passwords and the agent discloses process lists and "
                  "network details.",
        severity="medium", nist=["CM-7", "SC-8"], cis=["2.1.15"],
    ),
    Unwanted(
        id="svc-no-prelink", packages=["prelink"],
        title="prelink is not installed",
        rationale="prelink rewrites binaries in place, which defeats file-integrity checking (AIDE) and weakens "
                  "address randomisation.",
        severity="medium", nist=["SI-7", "SI-16"], cis=["1.5.4"], devsec=["package-09"], threats=["T9", "T8"],
    ),
    Unwanted(
        id="svc-no-apport", packages=["apport", "whoopsie"],
        title="No crash reporter (apport, whoopsie) is installed",
        rationale="Crash reporters collect core dumps, which on an inference host hold prompts and patient data, "
                  "and may send them off the host.",
        severity="high", nist=["SI-11", "SC-28"], cis=["1.5.5"], threats=["T10", "T3"],
    ),
    Unwanted(
        id="svc-no-xserver", packages=["xserver-xorg-core", "xserver-xorg"],
        title="No X Window System server is installed",
        rationale="A graphical server adds a large, privileged code base a headless GPU host never needs.",
        severity="medium", nist=["CM-7"], cis=["2.1.20"],
    ),
    Unwanted(
        id="svc-no-ldap-server", packages=["slapd"],
        title="No LDAP server is installed",
        rationale="A directory server holds credentials; one on an inference host is an unmanaged copy of the "
                  "hospital's identities.",
        severity="medium", nist=["CM-7"], cis=["2.1.7"],
    ),
]

UNWANTED_PACKAGES = [name for u in UNWANTED for name in u.packages]

AUDIT = ["164.312(b)"]
INTEGRITY = ["164.312(c)(1)"]

UPDATES_RATIONALE = (
    "Unpatched packages are the commonest way in (threat model M3). An air-gapped GPU host gets its "
    "security fixes only from the site's mirror, and only if unattended-upgrades installs them daily "
    "without waiting for an administrator; the mirror must keep Debian's Release metadata so the "
    "security origin still matches."
)

CONTROLS: list[Control] = [
    # --- automatic security updates -----------------------------------------------------
    Control(
        id="svc-unattended-upgrades-installed",
        title="unattended-upgrades is installed",
        rationale=UPDATES_RATIONALE,
        severity="high",
        refs=References(nist=["SI-2", "SI-2(2)"], cis=["1.2.2.1"], threats=["T6", "T8", "T9"]),
        check=Package(name="unattended-upgrades"),
        remediation="hardening",
        break_with="dpkg --remove unattended-upgrades >/dev/null",
    ),
    Control(
        id="svc-apt-periodic-update-lists",
        title="apt refreshes its package lists daily",
        rationale=UPDATES_RATIONALE + " Without fresh lists, unattended-upgrades sees no new fixes.",
        severity="medium",
        refs=References(nist=["SI-2"], cis=["1.2.2.1"], threats=["T6", "T8"]),
        check=apt_value("APT::Periodic::Update-Package-Lists", ["1"], "apt's effective APT::Periodic::Update-Package-Lists"),
        remediation="hardening",
        break_with=f"sed -i 's/Update-Package-Lists \"1\"/Update-Package-Lists \"0\"/' {AUTO_UPGRADES_FILE}",
    ),
    Control(
        id="svc-apt-periodic-unattended-upgrade",
        title="apt runs unattended-upgrade daily",
        rationale=UPDATES_RATIONALE,
        severity="high",
        refs=References(nist=["SI-2", "SI-2(2)"], cis=["1.2.2.1"], threats=["T6", "T8"]),
        check=apt_value("APT::Periodic::Unattended-Upgrade", ["1"], "apt's effective APT::Periodic::Unattended-Upgrade"),
        remediation="hardening",
        break_with=f"sed -i 's/Unattended-Upgrade \"1\"/Unattended-Upgrade \"0\"/' {AUTO_UPGRADES_FILE}",
    ),
    Control(
        id="svc-unattended-upgrades-security-origin",
        title="unattended-upgrades installs from the Debian security archive",
        rationale=UPDATES_RATIONALE + " The security archive must be among its allowed origins.",
        severity="high",
        refs=References(nist=["SI-2"], cis=["1.2.2.1"], threats=["T6", "T8"]),
        check=Command(
            command="apt-config dump Unattended-Upgrade::Origins-Pattern Unattended-Upgrade::Allowed-Origins | grep -iE 'security' || true",
            expect_output=r"(codename=\$\{distro_codename\}-security|-security|Debian-Security)",
            describe="security origins allowed to unattended-upgrades",
        ),
        remediation="hardening",
        break_with=f"sed -i '/[Ss]ecurity/d' /etc/apt/apt.conf.d/50unattended-upgrades {ORIGINS_FILE}",
    ),
    Control(
        id="svc-apt-daily-upgrade-timer",
        title="apt's daily upgrade timer is enabled and active",
        rationale=UPDATES_RATIONALE + " The timer is what actually starts unattended-upgrade.",
        severity="medium",
        refs=References(nist=["SI-2(2)"], cis=["1.2.2.1"], threats=["T6", "T8"]),
        check=ServiceState(unit="apt-daily-upgrade.timer", enabled=True, active=True),
        remediation="hardening",
        break_with="systemctl disable --now apt-daily-upgrade.timer 2>/dev/null",
    ),
    # --- apt trusts only signed packages --------------------------------------------------
    Control(
        id="svc-apt-no-unauthenticated",
        title="apt refuses unauthenticated packages",
        rationale=(
            "With AllowUnauthenticated, apt installs packages whose signatures it cannot verify: anyone on the path "
            "to the mirror, or who can write to it, can run code as root on the host that holds patient data."
        ),
        severity="critical",
        refs=References(hipaa=INTEGRITY, nist=["SI-7", "CM-14", "SR-11"], cis=["1.2.1.1"], owasp_llm=["LLM03"], threats=["T8", "T6"]),
        check=apt_value("APT::Get::AllowUnauthenticated", ["", "false", "no", "0", "off"], "apt's effective APT::Get::AllowUnauthenticated"),
        remediation="hardening",
        break_with="echo 'APT::Get::AllowUnauthenticated \"true\";' > /etc/apt/apt.conf.d/99zz-break-unauthenticated",
    ),
    Control(
        id="svc-apt-no-insecure-repositories",
        title="apt refuses unsigned repositories and downgrades to them",
        rationale=(
            "AllowInsecureRepositories lets apt use repository indexes with no valid signature, so a tampered "
            "mirror can substitute any package; on a clinical GPU host that is code execution as root."
        ),
        severity="critical",
        refs=References(hipaa=INTEGRITY, nist=["SI-7", "SR-11"], cis=["1.2.1.1"], owasp_llm=["LLM03"], threats=["T8", "T6"]),
        check=Command(
            command=(
                "for k in Acquire::AllowInsecureRepositories Acquire::AllowDowngradeToInsecureRepositories; do "
                "eval \"$(apt-config shell v $k)\"; echo \"$k=${v:-unset}\"; done"
            ),
            expect_output=r"\A(?:\S+=(?:unset|false|no|0|off)\s*)+\Z",
            describe="apt's effective insecure-repository settings",
        ),
        remediation="hardening",
        break_with="echo 'Acquire::AllowInsecureRepositories \"true\";' > /etc/apt/apt.conf.d/99zz-break-insecure",
    ),
    Control(
        id="svc-apt-sources-signed",
        title="No apt source is trusted without a signature, except the site's local repository",
        rationale=(
            "[trusted=yes] turns off signature checking for a source, so whoever controls it or the path to it "
            f"controls what runs as root. The single exception is the site's declared local repository {LOCAL_REPOSITORY}: "
            "a read-only bind mount the site builds itself (the lab's air-gapped repository has no signing key). "
            "That exception trusts whoever can write the repository directory; a production site should sign its "
            "mirror and use signed-by, after which the exception matches nothing."
        ),
        severity="critical",
        refs=References(hipaa=INTEGRITY, nist=["SI-7", "CM-14", "SR-11"], cis=["1.2.1.1", "1.2.1.2"], owasp_llm=["LLM03"], threats=["T8", "T6"]),
        check=Command(
            command=(
                f"! grep -rsHnE '{TRUSTED_YES}' {' '.join(SOURCES)} | grep -vF '{LOCAL_REPOSITORY}'"
            ),
            describe="no [trusted=yes] source besides the local repository",
        ),
        remediation="hardening",
        break_with="echo 'deb [trusted=yes] http://10.255.255.1/debian bookworm main' > /etc/apt/sources.list.d/break-unsigned.list",
    ),
    # --- time synchronisation ----------------------------------------------------------
    Control(
        id="svc-chrony-enabled",
        title="chrony (time synchronisation) is installed and starts at boot",
        rationale=(
            "Audit trails are evidence only if their timestamps can be trusted and correlated across hosts "
            "(164.312(b)); TLS certificate and token validity also depend on a correct clock. A time daemon "
            "that is missing or does not start at boot leaves the clock, and every audit record, drifting."
        ),
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-8", "SC-45"], cis=["2.3.1.1", "2.3.3.3"], threats=["T9", "T10"]),
        check=PackageService(package="chrony", unit="chrony.service", describe="chrony"),
        remediation="hardening",
        break_with="systemctl disable chrony 2>/dev/null",
    ),
    Control(
        id="svc-chrony-sources",
        title="chrony has at least one time server or pool configured",
        rationale=(
            "Without a source chrony cannot correct the clock; audit records from different hosts can then not be "
            "put in order when an incident involving patient data is reconstructed."
        ),
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-8(1)", "SC-45(1)"], cis=["2.3.3.1"], threats=["T9"]),
        check=FileContent(path=CHRONY_CONF, pattern=r"^[[:space:]]*(server|pool)[[:space:]]+[^[:space:]]+"),
        remediation="hardening",
        break_with=f"sed -i -E '/^[[:space:]]*(server|pool|peer)[[:space:]]/d' {CHRONY_CONF}",
    ),
    Control(
        id="svc-chrony-synchronised",
        title="chronyd is running and keeping the clock synchronised",
        rationale=(
            "Only a running chronyd with a reachable source keeps audit timestamps correct. It needs CAP_SYS_TIME, "
            "which a container does not have: verified on a VM or bare metal only."
        ),
        severity="medium",
        refs=References(hipaa=AUDIT, nist=["AU-8", "SC-45"], cis=["2.3.3.3"], threats=["T9"]),
        check=Command(
            command="systemctl is-active chrony && chronyc -n tracking | grep -E '^(Reference ID|Leap status|System time)'",
            expect_output=r"^Leap status\s*:\s*Normal",
            describe="chronyd tracking",
        ),
        remediation="hardening",
        scope="kernel",
        break_with="systemctl stop chrony",
    ),
    # --- AppArmor -----------------------------------------------------------------------
    Control(
        id="svc-apparmor-enabled",
        title="AppArmor is installed and its service loads the profiles at boot",
        rationale=(
            "Mandatory access control confines the model server and its helpers (nvidia-modprobe, chronyd): "
            "remote code execution through the serving stack then cannot read what the profile does not allow. "
            "Profiles that are not loaded at boot confine nothing."
        ),
        severity="high",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-3(3)", "AC-6"], cis=["1.3.1.1", "1.3.1.2"], threats=["T6", "T9"]),
        check=PackageService(package="apparmor", unit="apparmor.service", describe="AppArmor"),
        remediation="hardening",
        break_with="systemctl disable apparmor 2>/dev/null",
    ),
    Control(
        id="svc-apparmor-profiles-enforce",
        title="No AppArmor profile is configured in complain mode",
        rationale=(
            "A profile in complain mode only logs what it should block, so a compromised service can still read "
            "patient data; every installed profile must be configured to enforce."
        ),
        severity="high",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-3(3)", "AC-6"], cis=["1.3.1.4"], threats=["T6", "T9"]),
        check=Command(
            command=(
                f"bad=$(grep -lsE '{COMPLAIN_FLAG}' {APPARMOR_DIR}/* ; ls -A {APPARMOR_DIR}/force-complain 2>/dev/null); "
                "echo \"complain: ${bad:-none}\"; [ -z \"$bad\" ]"
            ),
            describe="AppArmor profiles configured in complain mode",
        ),
        remediation="hardening",
        break_with=f"sed -i 's/^profile lsb_release {{/profile lsb_release flags=(complain) {{/' {APPARMOR_DIR}/lsb_release",
    ),
    Control(
        id="svc-apparmor-enforcing",
        title="AppArmor is enabled in the kernel with profiles enforced, none complaining",
        rationale=(
            "Only the kernel enforces profiles. A container shares the lab machine's kernel (which has no AppArmor): "
            "verified on a VM or bare metal only."
        ),
        severity="high",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-3(3)", "AC-6"], cis=["1.3.1.2", "1.3.1.3", "1.3.1.4"], threats=["T6", "T9"]),
        check=Command(
            command=(
                "aa-enabled && e=$(aa-status --enforced) && c=$(aa-status --complaining) && "
                "echo \"enforced=$e complaining=$c\" && [ \"$e\" -gt 0 ] && [ \"$c\" -eq 0 ]"
            ),
            describe="AppArmor in the kernel",
        ),
        remediation="hardening",
        scope="kernel",
        # In the kernel only: the profile's file still enforces (that is svc-apparmor-profiles-enforce).
        break_with="apparmor_parser -r -C /etc/apparmor.d/lsb_release",
    ),
    # --- GPU device nodes -----------------------------------------------------------------
    Control(
        id="svc-gpu-model-group",
        title=f"The model service's group {GPU_GROUP} exists as a system group",
        rationale=(
            "GPU memory holds model weights and, during inference, patient prompts and outputs; only the model "
            "service's group may open the GPU, and that group must exist for the device rule to apply."
        ),
        severity="medium",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-6", "AC-3"], threats=["T3", "T10", "T7"]),
        check=Command(
            command=f"getent group {GPU_GROUP}",
            expect_output=rf"^{GPU_GROUP}:[^:]*:[0-9]{{1,3}}:",
            describe=f"group {GPU_GROUP} with a system gid",
        ),
        remediation="hardening",
        break_with=f"groupdel {GPU_GROUP}",
    ),
    Control(
        id="svc-gpu-udev-rule",
        title="A udev rule gives GPU device nodes mode 0660 and the model service's group",
        rationale=(
            "By default GPU nodes are often world-accessible (0666): any local process could read GPU memory left by "
            "the model server, patient prompts included, or exhaust the GPU. The rule restricts /dev/nvidia* and "
            "/dev/dri/{card,renderD}* to root and the model service's group."
        ),
        severity="high",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-6", "AC-3", "SC-4"], owasp_llm=["LLM02"], threats=["T3", "T10", "T7"]),
        check=FileExact(path=GPU_RULES_FILE, content=gpu_rules(), describe="GPU udev rule"),
        remediation="hardening",
        break_with=f"sed -i 's/MODE=\"0660\"/MODE=\"0666\"/' {GPU_RULES_FILE}",
    ),
    Control(
        id="svc-gpu-device-nodes",
        title="Existing GPU device nodes are 0660 or stricter, group of the model service",
        rationale=(
            "The rule above is what udev applies; this checks what the nodes actually are (the NVIDIA driver's "
            "nvidia-modprobe can create them itself, 0666 by default). Any local process able to open them can read "
            "GPU memory holding patient data or deny service to the model. Not applicable where a host has no GPU nodes."
        ),
        severity="high",
        refs=References(hipaa=["164.312(a)(1)"], nist=["AC-6", "AC-3", "SC-4"], owasp_llm=["LLM02"], threats=["T3", "T10", "T5"]),
        check=DeviceNodes(globs=GPU_DEVICE_GLOBS, group=GPU_GROUP, describe="GPU device nodes"),
        remediation="hardening",
        break_with="for f in " + " ".join(GPU_DEVICE_GLOBS) + "; do [ -c \"$f\" ] && chmod 0666 \"$f\"; done; true",
    ),
    *controls_of(UNWANTED),
]
