"""Kernel and network parameter controls (sysctl): CIS Debian 12 sections 1.5 and 3.3,
dev-sec linux-baseline sysctl-01..34.

The parameters are one table. Each control checks, in one read-only snippet, both the
running value (/proc/sys) and the value the boot-time configuration leaves (every
sysctl.d file, in systemd-sysctl's order, then /etc/sysctl.conf), so a change of either
fails exactly this control (the check kind ``SysctlHardened``, ``hardening/checks/kernel.py``).
The ``hardening`` role writes the same table to /etc/sysctl.d/60-citadel.conf, applies the
running values where it can, and comments out assignments in other /etc files that would
undo them at boot. One source, two views.

Network parameters (net.ipv4.*, net.ipv6.*) belong to a network namespace: a container
with its own network has its own copy, so they are checked and applied there too
(``NetSysctl`` rows). Kernel parameters (kernel.*, fs.*, vm.*, dev.*, and
net.core.bpf_jit_harden, which exists only in the initial namespace) are the parent's in a
container: ``KernelSysctl`` rows, scope="kernel".

Example::

    >>> row = SETTINGS[0]
    >>> row.id, row.make_break()
    ('kern-ipv4-forwarding', 'sysctl -q -w net.ipv4.ip_forward=1')
    >>> row.make_check().keys
    ['net.ipv4.ip_forward', 'net.ipv4.conf.all.forwarding']
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

from hardening.checks import Check
from hardening.checks.kernel import SYSCTL_CONF, SysctlHardened
from hardening.model import Control, Scope
from hardening.rows import Row, controls_of

SYSCTL_FILE = "/etc/sysctl.d/60-citadel.conf"

# Reference sets.
TRANSMISSION = ["164.312(e)(1)"]
INTEGRITY = ["164.312(c)(1)"]
ACCESS = ["164.312(a)(1)"]
AUDIT = ["164.312(b)"]


@dataclass(frozen=True, kw_only=True)
class SysctlSetting(Row):
    """Kernel parameters that must all hold one value, running and at boot."""

    keys: Sequence[str]
    value: str  # what the role writes
    bad: str  # a value that violates it, for the break test
    accepted: Sequence[str] = ()  # what the check accepts; default (value,)
    # How break_with violates it: "run" sets the running value, "file" edits Citadel's file,
    # "conf" overrides it from /etc/sysctl.conf (read after the sysctl.d files).
    breaks: Literal["run", "file", "conf"] = "run"

    @property
    def ok_values(self) -> list[str]:
        return list(self.accepted or (self.value,))

    def make_check(self) -> Check:
        return SysctlHardened(keys=list(self.keys), accepted=self.ok_values)

    def make_break(self) -> str:
        key = self.keys[0]
        if self.breaks == "file":
            return f"sed -i 's|^{key} = .*|{key} = {self.bad}|' {SYSCTL_FILE}"
        if self.breaks == "conf":
            return f"echo '{key} = {self.bad}' >> {SYSCTL_CONF}"
        return f"sysctl -q -w {key}={self.bad}"


@dataclass(frozen=True, kw_only=True)
class NetSysctl(SysctlSetting):
    """A parameter of the network namespace (net.ipv4.*, net.ipv6.*): checked and set in containers too."""

    hipaa: Sequence[str] = tuple(TRANSMISSION)


@dataclass(frozen=True, kw_only=True)
class KernelSysctl(SysctlSetting):
    """A parameter of the kernel itself: a container shares its parent's, so only a VM or bare metal can fix it."""

    hipaa: Sequence[str] = tuple(ACCESS)

    def scope(self) -> Scope:
        return "kernel"


# Order matters to the role: turning IPv4 forwarding off resets conf.all.accept_redirects
# to 1 in the kernel, so forwarding comes before the redirect settings.
SETTINGS: list[SysctlSetting] = [
    # --- IPv4 (per network namespace) ---------------------------------------------------
    NetSysctl(
        id="kern-ipv4-forwarding", keys=["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"], value="0", bad="1",
        title="IPv4 forwarding is off",
        rationale="An inference host is an endpoint, not a router: with forwarding on, a compromised neighbour can "
                  "route through it around the firewall into the clinical network or to the model server's isolated "
                  "segment.",
        severity="high", nist=["SC-7", "CM-7"], cis=["3.3.1"], devsec=["sysctl-01"], threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv4-rp-filter", keys=["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"],
        value="1", bad="0",
        title="IPv4 strict reverse-path filtering is on",
        rationale="Drops packets whose source address could not be routed back through the interface they came in "
                  "on, so spoofed addresses cannot pass the host firewall's source allowlists for SSH and the "
                  "inference API.",
        severity="medium", nist=["SC-7", "SC-5"], cis=["3.3.7"], devsec=["sysctl-02"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-icmp-bogus-errors", keys=["net.ipv4.icmp_ignore_bogus_error_responses"], value="1", bad="0",
        title="Bogus ICMP error responses are ignored",
        rationale="Malformed ICMP errors (RFC 1122 violations) are dropped instead of logged, so they cannot flood "
                  "the host's logs and bury the audit trail of access to patient data.",
        severity="low", hipaa=AUDIT, nist=["SC-5", "SI-4"], cis=["3.3.3"], devsec=["sysctl-03"], threats=["T5"],
    ),
    NetSysctl(
        id="kern-icmp-echo-broadcasts", keys=["net.ipv4.icmp_echo_ignore_broadcasts"], value="1", bad="0",
        title="Broadcast and multicast pings are ignored",
        rationale="Answering broadcast pings makes the host an amplifier in smurf attacks against the hospital "
                  "network, and lets anyone on the segment enumerate GPU hosts.",
        severity="medium", nist=["SC-5"], cis=["3.3.4"], devsec=["sysctl-04"], threats=["T5", "T9"],
    ),
    NetSysctl(
        id="kern-icmp-ratelimit", keys=["net.ipv4.icmp_ratelimit"], value="100", bad="0",
        title="ICMP replies are rate-limited (100 ms)",
        rationale="Bounds how fast the host emits the rate-limited ICMP types, so it cannot be used to reflect "
                  "floods and its own network stack keeps serving inference requests under a probe storm.",
        severity="low", hipaa=[], nist=["SC-5"], devsec=["sysctl-05"], threats=["T5"],
    ),
    NetSysctl(
        id="kern-icmp-ratemask", keys=["net.ipv4.icmp_ratemask"], value="88089", bad="0",
        title="ICMP rate limit covers all error and echo-reply types",
        rationale="The rate limit above only applies to the ICMP types in this mask; 88089 covers echo reply, "
                  "destination unreachable, source quench, time exceeded and parameter problem, the types used in "
                  "reflection floods.",
        severity="low", hipaa=[], nist=["SC-5"], devsec=["sysctl-06"], threats=["T5"],
    ),
    NetSysctl(
        id="kern-tcp-timestamps", keys=["net.ipv4.tcp_timestamps"], value="0", bad="1", breaks="file",
        title="TCP timestamps are off",
        rationale="TCP timestamps let a remote observer estimate uptime (and so missed reboots for kernel patches) "
                  "and fingerprint hosts; an inference host on a hospital LAN does not need them.",
        severity="low", hipaa=[], nist=["SC-7", "SI-2"], devsec=["sysctl-07"], threats=["T9", "T7"],
    ),
    NetSysctl(
        id="kern-arp-ignore", keys=["net.ipv4.conf.all.arp_ignore"], value="1", accepted=["1", "2"], bad="0",
        title="ARP replies only for addresses of the receiving interface",
        rationale="A GPU host on several networks (clinical, management, storage) must not reveal on one network "
                  "the addresses it holds on another, which would map the isolated model-serving segment.",
        severity="low", nist=["SC-7"], devsec=["sysctl-08"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-arp-announce", keys=["net.ipv4.conf.all.arp_announce"], value="2", bad="0",
        title="ARP requests use the best local source address",
        rationale="ARP requests never carry an address of another interface, so they do not leak the segmentation "
                  "of the host's networks.",
        severity="low", nist=["SC-7"], devsec=["sysctl-09"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-tcp-rfc1337", keys=["net.ipv4.tcp_rfc1337"], value="1", bad="0",
        title="TCP TIME-WAIT assassination protection is on",
        rationale="RST packets for sockets in TIME-WAIT are dropped (RFC 1337), so forged resets cannot disturb the "
                  "connection reuse of a busy inference gateway.",
        severity="low", hipaa=[], nist=["SC-5"], devsec=["sysctl-10"], threats=["T5"],
    ),
    NetSysctl(
        id="kern-tcp-syncookies", keys=["net.ipv4.tcp_syncookies"], value="1", bad="0", breaks="conf",
        title="TCP SYN cookies are on",
        rationale="SYN cookies keep the inference API and SSH reachable during a SYN flood instead of letting a "
                  "half-open backlog deny clinicians the service.",
        severity="medium", hipaa=[], nist=["SC-5"], cis=["3.3.10"], owasp_llm=["LLM10"], devsec=["sysctl-11"],
        threats=["T5"],
    ),
    NetSysctl(
        id="kern-ipv4-shared-media", keys=["net.ipv4.conf.all.shared_media", "net.ipv4.conf.default.shared_media"],
        value="1", bad="0",
        title="IPv4 shared-media handling stays at the kernel default",
        rationale="dev-sec's baseline expects the kernel's default (RFC 1620 shared media on); with redirects "
                  "refused (below) it cannot be used to reroute traffic, and a changed value signals a tampered "
                  "network stack.",
        severity="low", hipaa=[], nist=["CM-6"], devsec=["sysctl-12"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv4-source-route",
        keys=["net.ipv4.conf.all.accept_source_route", "net.ipv4.conf.default.accept_source_route"],
        value="0", bad="1",
        title="IPv4 source-routed packets are refused",
        rationale="Source routing lets a sender choose the path of replies, so an outsider could make traffic look "
                  "like it comes from inside the clinical network and receive the answers, patient data included.",
        severity="high", nist=["SC-7", "CM-7"], cis=["3.3.8"], devsec=["sysctl-13"], threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv4-accept-redirects",
        keys=["net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects"],
        value="0", bad="1",
        title="IPv4 ICMP redirects are refused",
        rationale="A forged redirect reroutes the host's traffic (to Vault, to the model store, to clinicians) "
                  "through an attacker: a man in the middle on patient data.",
        severity="high", hipaa=TRANSMISSION + INTEGRITY, nist=["SC-7", "SC-8"], cis=["3.3.5"], devsec=["sysctl-14"],
        threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv4-secure-redirects",
        keys=["net.ipv4.conf.all.secure_redirects", "net.ipv4.conf.default.secure_redirects"],
        value="0", bad="1", breaks="file",
        title="IPv4 'secure' ICMP redirects are refused",
        rationale="Redirects claiming to come from a listed gateway are forged as easily as any other; refusing "
                  "them closes the same man-in-the-middle path.",
        severity="medium", hipaa=TRANSMISSION + INTEGRITY, nist=["SC-7", "SC-8"], cis=["3.3.6"], devsec=["sysctl-15"],
        threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv4-send-redirects",
        keys=["net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.send_redirects"],
        value="0", bad="1",
        title="IPv4 ICMP redirects are never sent",
        rationale="Only routers send redirects; a host that sends them can be abused to misdirect its neighbours' "
                  "traffic.",
        severity="medium", nist=["SC-7", "CM-7"], cis=["3.3.2"], devsec=["sysctl-16"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-log-martians", keys=["net.ipv4.conf.all.log_martians", "net.ipv4.conf.default.log_martians"],
        value="1", bad="0", breaks="conf",
        title="Packets with impossible addresses are logged",
        rationale="Spoofed or misrouted packets reaching a host that holds patient data are evidence of an attack "
                  "in progress and must appear in the audit trail.",
        severity="medium", hipaa=AUDIT, nist=["AU-12", "SI-4"], cis=["3.3.9"], devsec=["sysctl-17"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv4-proxy-arp", keys=["net.ipv4.conf.all.proxy_arp", "net.ipv4.conf.default.proxy_arp"],
        value="0", bad="1",
        title="Proxy ARP is off",
        rationale="With proxy ARP the host answers for addresses behind it and bridges segments that the network "
                  "design keeps apart (model serving versus clinical LAN).",
        severity="medium", nist=["SC-7"], threats=["T9"],
    ),
    # --- IPv6 (per network namespace) ---------------------------------------------------
    NetSysctl(
        id="kern-ipv6-forwarding", keys=["net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding"],
        value="0", bad="1",
        title="IPv6 forwarding is off",
        rationale="As for IPv4: an inference host must never route, or IPv6 becomes the way around an IPv4-only "
                  "policy.",
        severity="high", nist=["SC-7", "CM-7"], cis=["3.3.1"], devsec=["sysctl-19"], threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv6-source-route",
        keys=["net.ipv6.conf.all.accept_source_route", "net.ipv6.conf.default.accept_source_route"],
        value="0", bad="1",
        title="IPv6 source-routed packets are refused",
        rationale="IPv6 routing headers allow the same reply-path hijack as IPv4 source routing.",
        severity="high", nist=["SC-7"], cis=["3.3.8"], devsec=["sysctl-13"], threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv6-accept-redirects",
        keys=["net.ipv6.conf.all.accept_redirects", "net.ipv6.conf.default.accept_redirects"],
        value="0", bad="1",
        title="IPv6 ICMP redirects are refused",
        rationale="A forged IPv6 redirect reroutes traffic through an attacker exactly as an IPv4 one does.",
        severity="high", hipaa=TRANSMISSION + INTEGRITY, nist=["SC-7", "SC-8"], cis=["3.3.5"], devsec=["sysctl-20"],
        threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv6-accept-ra", keys=["net.ipv6.conf.all.accept_ra", "net.ipv6.conf.default.accept_ra"],
        value="0", bad="1",
        title="IPv6 router advertisements are refused",
        rationale="Any machine on the segment can send router advertisements and become the host's default gateway: "
                  "a man in the middle for every connection. Citadel hosts have static addresses from the "
                  "inventory.",
        severity="high", nist=["SC-7", "CM-7"], cis=["3.3.11"], devsec=["sysctl-25"], threats=["T9", "T10"],
    ),
    NetSysctl(
        id="kern-ipv6-accept-ra-defrtr", keys=["net.ipv6.conf.default.accept_ra_defrtr"], value="0", bad="1",
        title="IPv6 default routes are not learnt from advertisements",
        rationale="Even where advertisements are accepted on a new interface, they must not install a default route.",
        severity="medium", nist=["SC-7"], devsec=["sysctl-24"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv6-accept-ra-pinfo", keys=["net.ipv6.conf.default.accept_ra_pinfo"], value="0", bad="1",
        title="IPv6 prefixes are not learnt from advertisements",
        rationale="A rogue advertisement must not give the host new addresses that the firewall policy does not "
                  "know.",
        severity="medium", nist=["SC-7"], devsec=["sysctl-23"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv6-accept-ra-rtr-pref", keys=["net.ipv6.conf.default.accept_ra_rtr_pref"],
        value="0", bad="1", breaks="file",
        title="IPv6 router preferences are not learnt from advertisements",
        rationale="A rogue router must not be able to rank itself above the legitimate one.",
        severity="low", nist=["SC-7"], devsec=["sysctl-22"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv6-router-solicitations", keys=["net.ipv6.conf.default.router_solicitations"], value="0", bad="3",
        title="No IPv6 router solicitations are sent",
        rationale="A statically addressed host has no reason to ask for routers, which only invites rogue answers.",
        severity="low", hipaa=[], nist=["CM-7"], devsec=["sysctl-21"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv6-autoconf", keys=["net.ipv6.conf.default.autoconf"], value="0", bad="1",
        title="IPv6 address autoconfiguration is off",
        rationale="Addresses assigned by advertisements are not in the inventory, so no firewall rule or audit "
                  "expects them.",
        severity="medium", nist=["CM-7", "SC-7"], devsec=["sysctl-26"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv6-dad-transmits", keys=["net.ipv6.conf.default.dad_transmits"], value="0", bad="1",
        title="No IPv6 duplicate-address probes are sent",
        rationale="dev-sec's baseline for statically addressed hosts: addresses come from the inventory, and probes "
                  "only announce them to the segment.",
        severity="low", hipaa=[], nist=["CM-7"], devsec=["sysctl-27"], threats=["T9"],
    ),
    NetSysctl(
        id="kern-ipv6-max-addresses", keys=["net.ipv6.conf.default.max_addresses"], value="1", bad="16",
        title="One global IPv6 address per interface",
        rationale="Bounds the addresses a rogue advertisement or a privacy-extension flood could add to an "
                  "interface.",
        severity="low", hipaa=[], nist=["CM-7"], devsec=["sysctl-28"], threats=["T9", "T5"],
    ),
    # --- Kernel (the parent's in a container) -------------------------------------------
    KernelSysctl(
        id="kern-randomize-va-space", keys=["kernel.randomize_va_space"], value="2", bad="0",
        title="Full address-space layout randomisation",
        rationale="ASLR makes memory-corruption exploits in the serving stack (tokenisers, pickle loaders, CUDA "
                  "libraries) unreliable, protecting the prompts and weights held in its memory.",
        severity="high", nist=["SI-16"], cis=["1.5.1"], devsec=["sysctl-32"], threats=["T6", "T10"],
    ),
    KernelSysctl(
        id="kern-kptr-restrict", keys=["kernel.kptr_restrict"], value="2", bad="0",
        title="Kernel pointers are hidden from every user",
        rationale="Kernel addresses in /proc defeat kernel ASLR; an attacker with code execution in the model "
                  "server would use them to escalate to root and read every patient's data.",
        severity="medium", nist=["SI-16", "SC-39"], threats=["T6", "T10"],
    ),
    KernelSysctl(
        id="kern-dmesg-restrict", keys=["kernel.dmesg_restrict"], value="1", bad="0",
        title="The kernel log is readable by root only",
        rationale="The kernel log holds addresses, driver (GPU) state and device details that help exploitation; "
                  "service accounts have no reason to read it.",
        severity="medium", nist=["SI-11", "AC-6"], threats=["T6", "T10"],
    ),
    KernelSysctl(
        id="kern-ptrace-scope", keys=["kernel.yama.ptrace_scope"], value="2", accepted=["2", "3"], bad="0",
        title="Only administrators can trace other processes",
        rationale="ptrace reads another process's memory: a compromised service account could lift decrypted "
                  "prompts, patient records and model weights straight out of the inference server.",
        severity="high", nist=["AC-6", "SC-39"], cis=["1.5.2"], owasp_llm=["LLM02"], threats=["T3", "T10", "T6"],
    ),
    KernelSysctl(
        id="kern-kexec-disabled", keys=["kernel.kexec_load_disabled"], value="1", bad="0", breaks="file",
        title="Loading a new kernel with kexec is disabled",
        rationale="kexec replaces the running kernel without a reboot through firmware, bypassing Secure Boot and "
                  "every control of the running one. Once set it stays until reboot.",
        severity="medium", hipaa=INTEGRITY, nist=["CM-5", "SI-7"], threats=["T6", "T8"],
    ),
    KernelSysctl(
        id="kern-unprivileged-bpf", keys=["kernel.unprivileged_bpf_disabled"],
        value="1", accepted=["1", "2"], bad="0", breaks="file",
        title="Unprivileged eBPF is disabled",
        rationale="Unprivileged BPF programs have been a recurring kernel privilege-escalation and Spectre path; "
                  "the model server needs none.",
        severity="high", nist=["AC-6", "SC-39"], threats=["T6", "T7"],
    ),
    KernelSysctl(
        id="kern-bpf-jit-harden", keys=["net.core.bpf_jit_harden"], value="2", bad="0",
        title="The BPF JIT is hardened for every user",
        rationale="Constant blinding in the BPF JIT blocks JIT-spraying attacks; it exists in the initial network "
                  "namespace only, so it is a kernel-wide setting.",
        severity="medium", nist=["SI-16"], threats=["T6", "T7"],
    ),
    KernelSysctl(
        id="kern-sysrq", keys=["kernel.sysrq"], value="0", bad="1",
        title="The magic SysRq key is disabled",
        rationale="SysRq lets anyone at a console (or a serial/IPMI console) reboot, kill processes or dump memory "
                  "without logging in, interrupting clinical service and bypassing access control.",
        severity="medium", nist=["AC-3", "CM-7"], devsec=["sysctl-30"], threats=["T5", "T9"],
    ),
    KernelSysctl(
        id="kern-protected-hardlinks", keys=["fs.protected_hardlinks"], value="1", bad="0",
        title="Hard links to others' files are restricted",
        rationale="Stops hard-link attacks in shared directories that trick root into overwriting or exposing files "
                  "(keys, model files, logs of prompts).",
        severity="medium", nist=["AC-6"], devsec=["sysctl-34"], threats=["T6", "T10"],
    ),
    KernelSysctl(
        id="kern-protected-symlinks", keys=["fs.protected_symlinks"], value="1", bad="0",
        title="Symlinks in sticky directories are followed only for their owner",
        rationale="Stops /tmp symlink races that make a privileged process write where an attacker chooses.",
        severity="medium", nist=["AC-6"], devsec=["sysctl-34"], threats=["T6", "T10"],
    ),
    KernelSysctl(
        id="kern-protected-fifos", keys=["fs.protected_fifos"], value="1", accepted=["1", "2"], bad="0",
        title="FIFOs in sticky directories are opened only by their owner",
        rationale="Stops spoofed named pipes in /tmp from feeding data to (or reading it from) privileged "
                  "processes. Debian's 99-protect-links.conf sets 1, which is kept.",
        severity="low", nist=["AC-6"], devsec=["sysctl-34"], threats=["T6"],
    ),
    KernelSysctl(
        id="kern-protected-regular", keys=["fs.protected_regular"], value="2", bad="0",
        title="Regular files in sticky directories are opened only by their owner",
        rationale="Stops pre-created files in /tmp from capturing data written by privileged processes, such as "
                  "decrypted secrets or exported reports.",
        severity="low", nist=["AC-6"], devsec=["sysctl-34"], threats=["T6", "T10"],
    ),
    KernelSysctl(
        id="kern-suid-dumpable", keys=["fs.suid_dumpable"], value="0", bad="2",
        title="Privileged processes never dump core",
        rationale="A core dump of a privileged process holds its memory: secrets, and on this host prompts, patient "
                  "data and model weights, written to disk. This stays 0 even when the site allows core dumps for "
                  "ordinary processes.",
        severity="high", hipaa=ACCESS + ["164.312(a)(2)(iv)"], nist=["SC-28", "AC-6"], cis=["1.5.3"],
        owasp_llm=["LLM02"], devsec=["sysctl-31a", "sysctl-31b"], threats=["T10", "T3"],
    ),
    KernelSysctl(
        id="kern-perf-event-paranoid", keys=["kernel.perf_event_paranoid"], value="3", accepted=["2", "3"], bad="1",
        title="Performance events are restricted to administrators",
        rationale="perf events expose timing and cache behaviour of other processes (side channels on the inference "
                  "server) and have been a source of kernel exploits. Debian's kernel honours 3 (no unprivileged "
                  "use).",
        severity="medium", nist=["SC-39", "AC-6"], threats=["T7", "T6"],
    ),
    KernelSysctl(
        id="kern-ldisc-autoload", keys=["dev.tty.ldisc_autoload"], value="0", bad="1",
        title="TTY line disciplines are not loaded on demand",
        rationale="Unprivileged users could otherwise load rarely used, historically vulnerable line-discipline "
                  "modules.",
        severity="low", nist=["CM-7"], threats=["T6"],
    ),
    KernelSysctl(
        id="kern-unprivileged-userfaultfd", keys=["vm.unprivileged_userfaultfd"], value="0", bad="1",
        title="userfaultfd is for administrators only",
        rationale="userfaultfd lets an attacker pause the kernel mid-copy, a standard step in exploiting kernel "
                  "races.",
        severity="medium", nist=["SC-39"], threats=["T6"],
    ),
    KernelSysctl(
        id="kern-mmap-min-addr", keys=["vm.mmap_min_addr"], value="65536", bad="0",
        title="The lowest 64 KiB of memory cannot be mapped",
        rationale="Keeps kernel NULL-pointer bugs from becoming code execution.",
        severity="medium", nist=["SI-16"], threats=["T6"],
    ),
]


def sysctl_conf() -> str:
    """The content of /etc/sysctl.d/60-citadel.conf."""
    lines = [
        "# Managed by Citadel (role hardening, area kernel). Edits are overwritten; see hardening/controls/kernel.py.",
        "# Net parameters apply per network namespace; kernel ones are the host kernel's.",
    ]
    for s in SETTINGS:
        lines.append(f"# {s.id}: {s.title}")
        lines += [f"{key} = {s.value}" for key in s.keys]
    return "\n".join(lines) + "\n"


CONTROLS: list[Control] = controls_of(SETTINGS)
