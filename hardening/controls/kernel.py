"""Kernel and network parameter controls (sysctl): CIS Debian 12 sections 1.5 and 3.3,
dev-sec linux-baseline sysctl-01..34.

The parameters are one table. Each control checks, in one read-only snippet, both the
running value (/proc/sys) and the value the boot-time configuration leaves (every
sysctl.d file, in systemd-sysctl's order, then /etc/sysctl.conf), so a change of either
fails exactly this control. The ``hardening`` role writes the same table to
/etc/sysctl.d/60-citadel.conf, applies the running values where it can, and comments out
assignments in other /etc files that would undo them at boot. One source, two views.

Network parameters (net.ipv4.*, net.ipv6.*) belong to a network namespace: a container
with its own network has its own copy, so they are checked and applied there too. Kernel
parameters (kernel.*, fs.*, vm.*, dev.*, and net.core.bpf_jit_harden, which exists only
in the initial namespace) are the parent's in a container: scope="kernel".

Example::

    >>> check = SysctlHardened.for_keys(["net.ipv4.ip_forward"], ["0"])
    >>> check.evaluate("run net.ipv4.ip_forward=0\\n@file /etc/sysctl.d/60-citadel.conf\\nnet.ipv4.ip_forward = 0", 0).status
    'pass'
"""

from __future__ import annotations

import posixpath
import re
import shlex
from dataclasses import dataclass
from typing import Any

from pydantic import model_validator

from hardening.checks import Command, Verdict
from hardening.model import Control, References

SYSCTL_FILE = "/etc/sysctl.d/60-citadel.conf"

# systemd-sysctl's directories, highest priority first: a file in an earlier directory
# masks a file of the same name in a later one; the surviving files apply in name order.
SYSCTL_DIRS = ["/etc/sysctl.d", "/run/sysctl.d", "/usr/local/lib/sysctl.d", "/usr/lib/sysctl.d"]
# procps' `sysctl --system` reads it last (Debian also links it as /etc/sysctl.d/99-sysctl.conf).
SYSCTL_CONF = "/etc/sysctl.conf"


def proc_path(key: str) -> str:
    return "/proc/sys/" + key.replace(".", "/")


def key_regex(keys: list[str]) -> str:
    """ERE matching an assignment of one of `keys` (dots or slashes, optional '-' prefix)."""
    alternatives = "|".join("[./]".join(re.escape(part) for part in k.split(".")) for k in keys)
    return rf"^[[:space:]]*-?[[:space:]]*({alternatives})[[:space:]]*="


def parse_assignment(line: str) -> tuple[str, str] | None:
    """`key = value` (or `-key=value`, or key/with/slashes) -> (dotted key, value)."""
    text = line.strip()
    if not text or text[0] in "#;" or "=" not in text:
        return None
    key, value = text.split("=", 1)
    key = key.strip().lstrip("-").strip().replace("/", ".")
    return key, " ".join(value.split())


def boot_values(files: list[tuple[str, list[str]]]) -> dict[str, tuple[str, str]]:
    """The value each key ends up with at boot, and the file that sets it.

    `files` is (path, assignment lines) for every existing file of the sysctl.d
    directories and /etc/sysctl.conf, in any order: precedence is decided here.
    """
    chosen: dict[str, tuple[int, str, list[str]]] = {}
    conf: list[tuple[str, list[str]]] = []
    for path, lines in files:
        if path == SYSCTL_CONF:
            conf.append((path, lines))
            continue
        directory, name = posixpath.split(path)
        if directory not in SYSCTL_DIRS or not name.endswith(".conf"):
            continue
        rank = SYSCTL_DIRS.index(directory)
        if name not in chosen or rank < chosen[name][0]:
            chosen[name] = (rank, path, lines)
    ordered = [(path, lines) for _, (_, path, lines) in sorted(chosen.items())] + conf
    values: dict[str, tuple[str, str]] = {}
    for path, lines in ordered:
        for line in lines:
            parsed = parse_assignment(line)
            if parsed:
                values[parsed[0]] = (parsed[1], path)
    return values


class SysctlHardened(Command):
    """Kernel parameters whose running value AND boot-time value are among `accepted`.

    A Command to the catalog (the check union is closed), so it serialises as the shell
    snippet it runs; it judges its evidence itself, with systemd-sysctl's precedence.
    """

    keys: list[str]
    accepted: list[str]

    @model_validator(mode="before")
    @classmethod
    def _render(cls, data: Any) -> Any:
        if isinstance(data, dict) and "keys" in data and "command" not in data:
            keys = data["keys"]
            data = {**data, "command": cls.render(keys), "describe": f"{', '.join(keys)} running and at boot"}
        return data

    @classmethod
    def for_keys(cls, keys: list[str], accepted: list[str]) -> SysctlHardened:
        return cls(keys=keys, accepted=accepted)

    @staticmethod
    def render(keys: list[str]) -> str:
        running = "; ".join(
            f"if [ -r {proc_path(k)} ]; then echo \"run {k}=$(cat {proc_path(k)})\"; else echo 'run {k}?'; fi" for k in keys
        )
        globs = " ".join(f"{d}/*.conf" for d in SYSCTL_DIRS) + f" {SYSCTL_CONF}"
        regex = shlex.quote(key_regex(keys))
        files = (
            f"for f in {globs}; do [ -e \"$f\" ] || continue; echo \"@file $f\"; "
            f"[ -f \"$f\" ] && grep -E {regex} \"$f\"; done; true"
        )
        return f"{running}; {files}"

    def evaluate(self, evidence: str, exit_code: int) -> Verdict:
        running: dict[str, str | None] = {}
        files: list[tuple[str, list[str]]] = []
        for line in evidence.splitlines():
            if line.startswith("run "):
                body = line[4:]
                if "=" in body:
                    key, value = body.split("=", 1)
                    running[key] = " ".join(value.split())
                else:
                    running[body.rstrip("?")] = None
            elif line.startswith("@file "):
                files.append((line[6:].strip(), []))
            elif files:
                files[-1][1].append(line)
        missing = [k for k in self.keys if running.get(k, None) is None]
        if missing:
            return Verdict("notapplicable", f"{', '.join(missing)} does not exist on this kernel")
        boot = boot_values(files)
        want = " or ".join(self.accepted)
        problems, seen = [], []
        for key in self.keys:
            now = running[key]
            at_boot, source = boot.get(key, (None, None))
            if now not in self.accepted:
                problems.append(f"{key} = {now} now, expected {want}")
            if at_boot is None:
                problems.append(f"{key} is not set by the boot-time configuration")
            elif at_boot not in self.accepted:
                problems.append(f"{key} = {at_boot} at boot (set by {source}), expected {want}")
            seen.append(f"{key} = {now} (boot: {at_boot} from {source})")
        if problems:
            return Verdict("fail", "; ".join(problems))
        return Verdict("pass", "; ".join(seen))


# Reference sets.
TRANSMISSION = ["164.312(e)(1)"]
INTEGRITY = ["164.312(c)(1)"]
ACCESS = ["164.312(a)(1)"]
AUDIT = ["164.312(b)"]


@dataclass(frozen=True)
class SysctlSetting:
    id: str
    keys: tuple[str, ...]
    value: str  # what the role writes
    title: str
    rationale: str
    severity: str
    bad: str  # a value that violates it, for the break test
    threats: tuple[str, ...]
    nist: tuple[str, ...]
    hipaa: tuple[str, ...] = ()
    cis: tuple[str, ...] = ()
    devsec: tuple[str, ...] = ()
    owasp_llm: tuple[str, ...] = ()
    accepted: tuple[str, ...] = ()  # default (value,)
    scope: str = "any"
    # How break_with violates it: "run" sets the running value, "file" edits Citadel's file,
    # "conf" overrides it from /etc/sysctl.conf (read after the sysctl.d files).
    breaks: str = "run"

    @property
    def ok_values(self) -> list[str]:
        return list(self.accepted or (self.value,))


def _net(id, keys, value, title, rationale, severity, bad, threats, nist, hipaa=TRANSMISSION, cis=(), devsec=(), **kw):
    return SysctlSetting(id, tuple(keys), value, title, rationale, severity, bad, tuple(threats), tuple(nist),
                         tuple(hipaa), tuple(cis), tuple(devsec), **kw)


def _kern(id, keys, value, title, rationale, severity, bad, threats, nist, hipaa=ACCESS, cis=(), devsec=(), **kw):
    return SysctlSetting(id, tuple(keys), value, title, rationale, severity, bad, tuple(threats), tuple(nist),
                         tuple(hipaa), tuple(cis), tuple(devsec), scope="kernel", **kw)


# Order matters to the role: turning IPv4 forwarding off resets conf.all.accept_redirects
# to 1 in the kernel, so forwarding comes before the redirect settings.
SETTINGS: list[SysctlSetting] = [
    # --- IPv4 (per network namespace) ---------------------------------------------------
    _net("kern-ipv4-forwarding", ["net.ipv4.ip_forward", "net.ipv4.conf.all.forwarding"], "0",
         "IPv4 forwarding is off",
         "An inference host is an endpoint, not a router: with forwarding on, a compromised neighbour can route "
         "through it around the firewall into the clinical network or to the model server's isolated segment.",
         "high", "1", ["T9", "T10"], ["SC-7", "CM-7"], cis=["3.3.1"], devsec=["sysctl-01"]),
    _net("kern-ipv4-rp-filter", ["net.ipv4.conf.all.rp_filter", "net.ipv4.conf.default.rp_filter"], "1",
         "IPv4 strict reverse-path filtering is on",
         "Drops packets whose source address could not be routed back through the interface they came in on, "
         "so spoofed addresses cannot pass the host firewall's source allowlists for SSH and the inference API.",
         "medium", "0", ["T9"], ["SC-7", "SC-5"], cis=["3.3.7"], devsec=["sysctl-02"]),
    _net("kern-icmp-bogus-errors", ["net.ipv4.icmp_ignore_bogus_error_responses"], "1",
         "Bogus ICMP error responses are ignored",
         "Malformed ICMP errors (RFC 1122 violations) are dropped instead of logged, so they cannot flood the "
         "host's logs and bury the audit trail of access to patient data.",
         "low", "0", ["T5"], ["SC-5", "SI-4"], hipaa=AUDIT, cis=["3.3.3"], devsec=["sysctl-03"]),
    _net("kern-icmp-echo-broadcasts", ["net.ipv4.icmp_echo_ignore_broadcasts"], "1",
         "Broadcast and multicast pings are ignored",
         "Answering broadcast pings makes the host an amplifier in smurf attacks against the hospital network, "
         "and lets anyone on the segment enumerate GPU hosts.",
         "medium", "0", ["T5", "T9"], ["SC-5"], cis=["3.3.4"], devsec=["sysctl-04"]),
    _net("kern-icmp-ratelimit", ["net.ipv4.icmp_ratelimit"], "100",
         "ICMP replies are rate-limited (100 ms)",
         "Bounds how fast the host emits the rate-limited ICMP types, so it cannot be used to reflect floods and "
         "its own network stack keeps serving inference requests under a probe storm.",
         "low", "0", ["T5"], ["SC-5"], hipaa=(), devsec=["sysctl-05"]),
    _net("kern-icmp-ratemask", ["net.ipv4.icmp_ratemask"], "88089",
         "ICMP rate limit covers all error and echo-reply types",
         "The rate limit above only applies to the ICMP types in this mask; 88089 covers echo reply, destination "
         "unreachable, source quench, time exceeded and parameter problem, the types used in reflection floods.",
         "low", "0", ["T5"], ["SC-5"], hipaa=(), devsec=["sysctl-06"]),
    _net("kern-tcp-timestamps", ["net.ipv4.tcp_timestamps"], "0",
         "TCP timestamps are off",
         "TCP timestamps let a remote observer estimate uptime (and so missed reboots for kernel patches) and "
         "fingerprint hosts; an inference host on a hospital LAN does not need them.",
         "low", "1", ["T9", "T7"], ["SC-7", "SI-2"], hipaa=(), devsec=["sysctl-07"], breaks="file"),
    _net("kern-arp-ignore", ["net.ipv4.conf.all.arp_ignore"], "1",
         "ARP replies only for addresses of the receiving interface",
         "A GPU host on several networks (clinical, management, storage) must not reveal on one network the "
         "addresses it holds on another, which would map the isolated model-serving segment.",
         "low", "0", ["T9"], ["SC-7"], devsec=["sysctl-08"], accepted=("1", "2")),
    _net("kern-arp-announce", ["net.ipv4.conf.all.arp_announce"], "2",
         "ARP requests use the best local source address",
         "ARP requests never carry an address of another interface, so they do not leak the segmentation of the "
         "host's networks.",
         "low", "0", ["T9"], ["SC-7"], devsec=["sysctl-09"]),
    _net("kern-tcp-rfc1337", ["net.ipv4.tcp_rfc1337"], "1",
         "TCP TIME-WAIT assassination protection is on",
         "RST packets for sockets in TIME-WAIT are dropped (RFC 1337), so forged resets cannot disturb the "
         "connection reuse of a busy inference gateway.",
         "low", "0", ["T5"], ["SC-5"], hipaa=(), devsec=["sysctl-10"]),
    _net("kern-tcp-syncookies", ["net.ipv4.tcp_syncookies"], "1",
         "TCP SYN cookies are on",
         "SYN cookies keep the inference API and SSH reachable during a SYN flood instead of letting a half-open "
         "backlog deny clinicians the service.",
         "medium", "0", ["T5"], ["SC-5"], hipaa=(), cis=["3.3.10"], devsec=["sysctl-11"], breaks="conf",
         owasp_llm=("LLM10",)),
    _net("kern-ipv4-shared-media", ["net.ipv4.conf.all.shared_media", "net.ipv4.conf.default.shared_media"], "1",
         "IPv4 shared-media handling stays at the kernel default",
         "dev-sec's baseline expects the kernel's default (RFC 1620 shared media on); with redirects refused "
         "(below) it cannot be used to reroute traffic, and a changed value signals a tampered network stack.",
         "low", "0", ["T9"], ["CM-6"], hipaa=(), devsec=["sysctl-12"]),
    _net("kern-ipv4-source-route", ["net.ipv4.conf.all.accept_source_route", "net.ipv4.conf.default.accept_source_route"], "0",
         "IPv4 source-routed packets are refused",
         "Source routing lets a sender choose the path of replies, so an outsider could make traffic look like it "
         "comes from inside the clinical network and receive the answers, patient data included.",
         "high", "1", ["T9", "T10"], ["SC-7", "CM-7"], cis=["3.3.8"], devsec=["sysctl-13"]),
    _net("kern-ipv4-accept-redirects", ["net.ipv4.conf.all.accept_redirects", "net.ipv4.conf.default.accept_redirects"], "0",
         "IPv4 ICMP redirects are refused",
         "A forged redirect reroutes the host's traffic (to Vault, to the model store, to clinicians) through an "
         "attacker: a man in the middle on patient data.",
         "high", "1", ["T9", "T10"], ["SC-7", "SC-8"], hipaa=TRANSMISSION + INTEGRITY, cis=["3.3.5"], devsec=["sysctl-14"]),
    _net("kern-ipv4-secure-redirects", ["net.ipv4.conf.all.secure_redirects", "net.ipv4.conf.default.secure_redirects"], "0",
         "IPv4 'secure' ICMP redirects are refused",
         "Redirects claiming to come from a listed gateway are forged as easily as any other; refusing them closes "
         "the same man-in-the-middle path.",
         "medium", "1", ["T9", "T10"], ["SC-7", "SC-8"], hipaa=TRANSMISSION + INTEGRITY, cis=["3.3.6"], devsec=["sysctl-15"],
         breaks="file"),
    _net("kern-ipv4-send-redirects", ["net.ipv4.conf.all.send_redirects", "net.ipv4.conf.default.send_redirects"], "0",
         "IPv4 ICMP redirects are never sent",
         "Only routers send redirects; a host that sends them can be abused to misdirect its neighbours' traffic.",
         "medium", "1", ["T9"], ["SC-7", "CM-7"], cis=["3.3.2"], devsec=["sysctl-16"]),
    _net("kern-log-martians", ["net.ipv4.conf.all.log_martians", "net.ipv4.conf.default.log_martians"], "1",
         "Packets with impossible addresses are logged",
         "Spoofed or misrouted packets reaching a host that holds patient data are evidence of an attack in "
         "progress and must appear in the audit trail.",
         "medium", "0", ["T9"], ["AU-12", "SI-4"], hipaa=AUDIT, cis=["3.3.9"], devsec=["sysctl-17"], breaks="conf"),
    _net("kern-ipv4-proxy-arp", ["net.ipv4.conf.all.proxy_arp", "net.ipv4.conf.default.proxy_arp"], "0",
         "Proxy ARP is off",
         "With proxy ARP the host answers for addresses behind it and bridges segments that the network design "
         "keeps apart (model serving versus clinical LAN).",
         "medium", "1", ["T9"], ["SC-7"]),
    # --- IPv6 (per network namespace) ---------------------------------------------------
    _net("kern-ipv6-forwarding", ["net.ipv6.conf.all.forwarding", "net.ipv6.conf.default.forwarding"], "0",
         "IPv6 forwarding is off",
         "As for IPv4: an inference host must never route, or IPv6 becomes the way around an IPv4-only policy.",
         "high", "1", ["T9", "T10"], ["SC-7", "CM-7"], cis=["3.3.1"], devsec=["sysctl-19"]),
    _net("kern-ipv6-source-route", ["net.ipv6.conf.all.accept_source_route", "net.ipv6.conf.default.accept_source_route"], "0",
         "IPv6 source-routed packets are refused",
         "IPv6 routing headers allow the same reply-path hijack as IPv4 source routing.",
         "high", "1", ["T9", "T10"], ["SC-7"], cis=["3.3.8"], devsec=["sysctl-13"]),
    _net("kern-ipv6-accept-redirects", ["net.ipv6.conf.all.accept_redirects", "net.ipv6.conf.default.accept_redirects"], "0",
         "IPv6 ICMP redirects are refused",
         "A forged IPv6 redirect reroutes traffic through an attacker exactly as an IPv4 one does.",
         "high", "1", ["T9", "T10"], ["SC-7", "SC-8"], hipaa=TRANSMISSION + INTEGRITY, cis=["3.3.5"], devsec=["sysctl-20"]),
    _net("kern-ipv6-accept-ra", ["net.ipv6.conf.all.accept_ra", "net.ipv6.conf.default.accept_ra"], "0",
         "IPv6 router advertisements are refused",
         "Any machine on the segment can send router advertisements and become the host's default gateway: a "
         "man in the middle for every connection. Citadel hosts have static addresses from the inventory.",
         "high", "1", ["T9", "T10"], ["SC-7", "CM-7"], cis=["3.3.11"], devsec=["sysctl-25"]),
    _net("kern-ipv6-accept-ra-defrtr", ["net.ipv6.conf.default.accept_ra_defrtr"], "0",
         "IPv6 default routes are not learnt from advertisements",
         "Even where advertisements are accepted on a new interface, they must not install a default route.",
         "medium", "1", ["T9"], ["SC-7"], devsec=["sysctl-24"]),
    _net("kern-ipv6-accept-ra-pinfo", ["net.ipv6.conf.default.accept_ra_pinfo"], "0",
         "IPv6 prefixes are not learnt from advertisements",
         "A rogue advertisement must not give the host new addresses that the firewall policy does not know.",
         "medium", "1", ["T9"], ["SC-7"], devsec=["sysctl-23"]),
    _net("kern-ipv6-accept-ra-rtr-pref", ["net.ipv6.conf.default.accept_ra_rtr_pref"], "0",
         "IPv6 router preferences are not learnt from advertisements",
         "A rogue router must not be able to rank itself above the legitimate one.",
         "low", "1", ["T9"], ["SC-7"], devsec=["sysctl-22"], breaks="file"),
    _net("kern-ipv6-router-solicitations", ["net.ipv6.conf.default.router_solicitations"], "0",
         "No IPv6 router solicitations are sent",
         "A statically addressed host has no reason to ask for routers, which only invites rogue answers.",
         "low", "3", ["T9"], ["CM-7"], hipaa=(), devsec=["sysctl-21"]),
    _net("kern-ipv6-autoconf", ["net.ipv6.conf.default.autoconf"], "0",
         "IPv6 address autoconfiguration is off",
         "Addresses assigned by advertisements are not in the inventory, so no firewall rule or audit expects them.",
         "medium", "1", ["T9"], ["CM-7", "SC-7"], devsec=["sysctl-26"]),
    _net("kern-ipv6-dad-transmits", ["net.ipv6.conf.default.dad_transmits"], "0",
         "No IPv6 duplicate-address probes are sent",
         "dev-sec's baseline for statically addressed hosts: addresses come from the inventory, and probes only "
         "announce them to the segment.",
         "low", "1", ["T9"], ["CM-7"], hipaa=(), devsec=["sysctl-27"]),
    _net("kern-ipv6-max-addresses", ["net.ipv6.conf.default.max_addresses"], "1",
         "One global IPv6 address per interface",
         "Bounds the addresses a rogue advertisement or a privacy-extension flood could add to an interface.",
         "low", "16", ["T9", "T5"], ["CM-7"], hipaa=(), devsec=["sysctl-28"]),
    # --- Kernel (the parent's in a container) -------------------------------------------
    _kern("kern-randomize-va-space", ["kernel.randomize_va_space"], "2",
          "Full address-space layout randomisation",
          "ASLR makes memory-corruption exploits in the serving stack (tokenisers, pickle loaders, CUDA "
          "libraries) unreliable, protecting the prompts and weights held in its memory.",
          "high", "0", ["T6", "T10"], ["SI-16"], cis=["1.5.1"], devsec=["sysctl-32"]),
    _kern("kern-kptr-restrict", ["kernel.kptr_restrict"], "2",
          "Kernel pointers are hidden from every user",
          "Kernel addresses in /proc defeat kernel ASLR; an attacker with code execution in the model server would "
          "use them to escalate to root and read every patient's data.",
          "medium", "0", ["T6", "T10"], ["SI-16", "SC-39"]),
    _kern("kern-dmesg-restrict", ["kernel.dmesg_restrict"], "1",
          "The kernel log is readable by root only",
          "The kernel log holds addresses, driver (GPU) state and device details that help exploitation; service "
          "accounts have no reason to read it.",
          "medium", "0", ["T6", "T10"], ["SI-11", "AC-6"]),
    _kern("kern-ptrace-scope", ["kernel.yama.ptrace_scope"], "2",
          "Only administrators can trace other processes",
          "ptrace reads another process's memory: a compromised service account could lift decrypted prompts, "
          "patient records and model weights straight out of the inference server.",
          "high", "0", ["T3", "T10", "T6"], ["AC-6", "SC-39"], cis=["1.5.2"], accepted=("2", "3"),
          owasp_llm=("LLM02",)),
    _kern("kern-kexec-disabled", ["kernel.kexec_load_disabled"], "1",
          "Loading a new kernel with kexec is disabled",
          "kexec replaces the running kernel without a reboot through firmware, bypassing Secure Boot and every "
          "control of the running one. Once set it stays until reboot.",
          "medium", "0", ["T6", "T8"], ["CM-5", "SI-7"], hipaa=INTEGRITY, breaks="file"),
    _kern("kern-unprivileged-bpf", ["kernel.unprivileged_bpf_disabled"], "1",
          "Unprivileged eBPF is disabled",
          "Unprivileged BPF programs have been a recurring kernel privilege-escalation and Spectre path; the "
          "model server needs none.",
          "high", "0", ["T6", "T7"], ["AC-6", "SC-39"], accepted=("1", "2"), breaks="file"),
    _kern("kern-bpf-jit-harden", ["net.core.bpf_jit_harden"], "2",
          "The BPF JIT is hardened for every user",
          "Constant blinding in the BPF JIT blocks JIT-spraying attacks; it exists in the initial network "
          "namespace only, so it is a kernel-wide setting.",
          "medium", "0", ["T6", "T7"], ["SI-16"]),
    _kern("kern-sysrq", ["kernel.sysrq"], "0",
          "The magic SysRq key is disabled",
          "SysRq lets anyone at a console (or a serial/IPMI console) reboot, kill processes or dump memory without "
          "logging in, interrupting clinical service and bypassing access control.",
          "medium", "1", ["T5", "T9"], ["AC-3", "CM-7"], devsec=["sysctl-30"]),
    _kern("kern-protected-hardlinks", ["fs.protected_hardlinks"], "1",
          "Hard links to others' files are restricted",
          "Stops hard-link attacks in shared directories that trick root into overwriting or exposing files "
          "(keys, model files, logs of prompts).",
          "medium", "0", ["T6", "T10"], ["AC-6"], devsec=["sysctl-34"]),
    _kern("kern-protected-symlinks", ["fs.protected_symlinks"], "1",
          "Symlinks in sticky directories are followed only for their owner",
          "Stops /tmp symlink races that make a privileged process write where an attacker chooses.",
          "medium", "0", ["T6", "T10"], ["AC-6"], devsec=["sysctl-34"]),
    _kern("kern-protected-fifos", ["fs.protected_fifos"], "1",
          "FIFOs in sticky directories are opened only by their owner",
          "Stops spoofed named pipes in /tmp from feeding data to (or reading it from) privileged processes. "
          "Debian's 99-protect-links.conf sets 1, which is kept.",
          "low", "0", ["T6"], ["AC-6"], devsec=["sysctl-34"], accepted=("1", "2")),
    _kern("kern-protected-regular", ["fs.protected_regular"], "2",
          "Regular files in sticky directories are opened only by their owner",
          "Stops pre-created files in /tmp from capturing data written by privileged processes, such as "
          "decrypted secrets or exported reports.",
          "low", "0", ["T6", "T10"], ["AC-6"], devsec=["sysctl-34"]),
    _kern("kern-suid-dumpable", ["fs.suid_dumpable"], "0",
          "Privileged processes never dump core",
          "A core dump of a privileged process holds its memory: secrets, and on this host prompts, patient data "
          "and model weights, written to disk. This stays 0 even when the site allows core dumps for "
          "ordinary processes.",
          "high", "2", ["T10", "T3"], ["SC-28", "AC-6"], hipaa=ACCESS + ["164.312(a)(2)(iv)"], cis=["1.5.3"],
          devsec=["sysctl-31a", "sysctl-31b"], owasp_llm=("LLM02",)),
    _kern("kern-perf-event-paranoid", ["kernel.perf_event_paranoid"], "3",
          "Performance events are restricted to administrators",
          "perf events expose timing and cache behaviour of other processes (side channels on the inference "
          "server) and have been a source of kernel exploits. Debian's kernel honours 3 (no unprivileged use).",
          "medium", "1", ["T7", "T6"], ["SC-39", "AC-6"], accepted=("2", "3")),
    _kern("kern-ldisc-autoload", ["dev.tty.ldisc_autoload"], "0",
          "TTY line disciplines are not loaded on demand",
          "Unprivileged users could otherwise load rarely used, historically vulnerable line-discipline modules.",
          "low", "1", ["T6"], ["CM-7"]),
    _kern("kern-unprivileged-userfaultfd", ["vm.unprivileged_userfaultfd"], "0",
          "userfaultfd is for administrators only",
          "userfaultfd lets an attacker pause the kernel mid-copy, a standard step in exploiting kernel races.",
          "medium", "1", ["T6"], ["SC-39"]),
    _kern("kern-mmap-min-addr", ["vm.mmap_min_addr"], "65536",
          "The lowest 64 KiB of memory cannot be mapped",
          "Keeps kernel NULL-pointer bugs from becoming code execution.",
          "medium", "0", ["T6"], ["SI-16"]),
]


def _break(s: SysctlSetting) -> str:
    key = s.keys[0]
    if s.breaks == "file":
        return f"sed -i 's|^{key} = .*|{key} = {s.bad}|' {SYSCTL_FILE}"
    if s.breaks == "conf":
        return f"echo '{key} = {s.bad}' >> {SYSCTL_CONF}"
    return f"sysctl -q -w {key}={s.bad}"


def _control(s: SysctlSetting) -> Control:
    return Control(
        id=s.id,
        title=s.title,
        rationale=s.rationale,
        severity=s.severity,
        refs=References(hipaa=list(s.hipaa), nist=list(s.nist), cis=list(s.cis), owasp_llm=list(s.owasp_llm),
                        threats=list(s.threats), devsec=list(s.devsec)),
        check=SysctlHardened.for_keys(list(s.keys), s.ok_values),
        remediation="hardening",
        scope=s.scope,
        break_with=_break(s),
    )


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


CONTROLS: list[Control] = [_control(s) for s in SETTINGS]
