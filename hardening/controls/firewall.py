"""Host firewall controls (CIS Debian 12 section 4.3, nftables).

Checks read the live ruleset (``nft -s list ...``), not the file, because the live rules
are what packets meet. An isolation-first deployment (the radiology pilot in the threat
model) relies on host-enforced egress filtering: the output chain matters as much as input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hardening.checks import Check, Command, FileContent, FileMode, ServiceState
from hardening.model import Control, References
from hardening.rows import Row, controls_of

ACCESS = ["164.312(a)(1)", "164.312(e)(1)"]
CHAIN = "nft -s list chain inet citadel {chain} 2>&1"
# Deletes the first rule of a chain that matches a pattern, by its handle (for break tests).
DELETE_RULE = "nft delete rule inet citadel {chain} handle $(nft -a list chain inet citadel {chain} | grep -F '{match}' | head -1 | awk '{{print $NF}}')"


@dataclass(frozen=True, kw_only=True)
class DefaultDeny(Row):
    """A chain of the citadel table whose policy drops whatever no rule accepts."""

    chain: str
    hipaa: Sequence[str] = tuple(ACCESS)

    def make_check(self) -> Check:
        return Command(command=CHAIN.format(chain=self.chain), expect_output=r"hook \w+ priority \S+; policy drop;",
                       describe=f"{self.chain} chain")

    def make_break(self) -> str:
        return f"nft 'chain inet citadel {self.chain} {{ policy accept ; }}'"


DEFAULT_DENY: list[DefaultDeny] = [
    DefaultDeny(
        id="fw-input-default-deny", chain="input",
        title="Inbound traffic is denied unless allowed",
        rationale="Only SSH from the administrators' networks and the gateway from clinical networks may reach the "
                  "host; nothing of the model server is ever exposed.",
        severity="high", nist=["SC-7", "SC-7(5)"], cis=["4.3.8"], threats=["T9", "T6"],
    ),
    DefaultDeny(
        id="fw-forward-default-deny", chain="forward",
        title="The host forwards no traffic",
        rationale="A GPU host is not a router: forwarding would bridge the clinical network to wherever it is "
                  "connected.",
        severity="high", nist=["SC-7"], cis=["4.3.8"], threats=["T9"],
    ),
    DefaultDeny(
        id="fw-output-default-deny", chain="output",
        title="Outbound traffic is denied unless allowed",
        rationale="Host-enforced egress filtering stops a compromised model server from sending patient prompts or "
                  "weights anywhere, and stops malware from calling home.",
        severity="high", nist=["SC-7", "SC-7(5)", "SI-4"], cis=["4.3.8"], owasp_llm=["LLM02"],
        threats=["T3", "T6", "T10"],
    ),
]


CONTROLS: list[Control] = [
    Control(
        id="fw-nftables-enabled",
        title="nftables is installed and loads the firewall at every boot",
        rationale="A firewall that is only loaded by hand is gone after the next reboot.",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["SC-7", "CM-6"], cis=["4.3.1", "4.3.9"], threats=["T9"]),
        check=ServiceState(unit="nftables", enabled=True),
        remediation="hardening",
        break_with="systemctl disable nftables 2>/dev/null",
    ),
    Control(
        id="fw-boot-config-managed",
        title="The boot-time ruleset is Citadel's",
        rationale="/etc/nftables.conf is what the host loads at boot; if it is not Citadel's default-deny ruleset, a reboot opens the host.",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["SC-7", "CM-6"], cis=["4.3.10"], threats=["T9"]),
        check=FileContent(path="/etc/nftables.conf", pattern=r"^table inet citadel \{"),
        remediation="hardening",
        break_with="printf 'flush ruleset\\n' > /etc/nftables.conf",
    ),
    Control(
        id="fw-config-permissions",
        title="The firewall configuration is private to root",
        rationale="The ruleset lists which networks may reach the host; it is only for administrators, and only root may change it.",
        severity="low",
        refs=References(hipaa=ACCESS, nist=["AC-6", "CM-6"], threats=["T9"]),  # no CIS Debian 12 recommendation
        check=FileMode(path="/etc/nftables.conf", max_mode="0700", owner="root", group=["root"]),
        remediation="hardening",
        break_with="chmod 0755 /etc/nftables.conf",
    ),
    *controls_of(DEFAULT_DENY),
    Control(
        id="fw-inbound-sources-restricted",
        title="Every inbound service is allowed from listed networks only",
        rationale="An accept rule for a port without a source restriction opens that service to every network that can route to the host.",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["SC-7", "AC-17"], cis=["4.3.7"], threats=["T9"]),
        check=Command(
            command=CHAIN.format(chain="input") + " | grep -E 'dport .* accept' | grep -v 'saddr' ; test $? -eq 1",
            describe="accept rules for ports without a source restriction (none expected)",
        ),
        remediation="hardening",
        break_with="nft add rule inet citadel input tcp dport 2222 accept",
    ),
    Control(
        id="fw-outbound-destinations-restricted",
        title="Every outbound allowance names its destination",
        rationale="An outbound accept without a destination undoes egress filtering for that port (HTTPS to anywhere is how data leaves).",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["SC-7", "SC-7(5)"], cis=["4.3.7"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
        check=Command(
            command=CHAIN.format(chain="output") + " | grep -E ' accept' | grep -vE 'policy |daddr|ct state established|oif \"lo\"|icmpv6 type' ; test $? -eq 1",
            describe="outbound accept rules without a destination (none expected)",
        ),
        remediation="hardening",
        break_with="nft add rule inet citadel output tcp dport 443 accept",
    ),
    Control(
        id="fw-invalid-dropped",
        title="Packets in an invalid connection state are dropped",
        rationale="Invalid packets are used to probe and evade stateful rules.",
        severity="medium",
        refs=References(hipaa=ACCESS, nist=["SC-7"], cis=["4.3.6"], threats=["T9"]),
        check=Command(command=CHAIN.format(chain="input"), expect_output=r"ct state invalid drop", describe="input chain"),
        remediation="hardening",
        break_with=DELETE_RULE.format(chain="input", match="ct state invalid drop"),
    ),
    Control(
        id="fw-loopback-spoofing-dropped",
        title="Loopback addresses arriving on a network interface are dropped",
        rationale="Services bound to loopback (vLLM, the metrics listener) trust 127.0.0.1; spoofed loopback packets from the network must never reach them.",
        severity="high",
        refs=References(hipaa=ACCESS, nist=["SC-7", "SC-5"], cis=["4.3.5"], threats=["T9", "T6"]),
        check=Command(command=CHAIN.format(chain="input"), expect_output=r'iif != "lo" ip saddr 127\.0\.0\.0/8 drop', describe="input chain"),
        remediation="hardening",
        break_with=DELETE_RULE.format(chain="input", match="ip saddr 127.0.0.0/8 drop"),
    ),
    Control(
        id="fw-inbound-drops-logged",
        title="Dropped inbound packets are logged (rate-limited)",
        rationale="Blocked connection attempts are evidence of scanning or misuse that the security team must be able to see.",
        severity="medium",
        refs=References(hipaa=["164.312(b)"], nist=["AU-2", "AU-12", "SI-4"], threats=["T9"]),  # no CIS recommendation
        check=Command(command=CHAIN.format(chain="input"), expect_output=r'log prefix "citadel-drop-in: "', describe="input chain"),
        remediation="hardening",
        break_with=DELETE_RULE.format(chain="input", match="citadel-drop-in"),
    ),
    Control(
        id="fw-outbound-drops-logged",
        title="Dropped outbound packets are logged (rate-limited)",
        rationale="An outbound attempt the firewall stopped is the first sign of a compromised model server or malware trying to exfiltrate.",
        severity="medium",
        refs=References(hipaa=["164.312(b)"], nist=["AU-2", "AU-12", "SI-4"], owasp_llm=["LLM02"], threats=["T3", "T10"]),
        check=Command(command=CHAIN.format(chain="output"), expect_output=r'log prefix "citadel-drop-out: "', describe="output chain"),
        remediation="hardening",
        break_with=DELETE_RULE.format(chain="output", match="citadel-drop-out"),
    ),
]
