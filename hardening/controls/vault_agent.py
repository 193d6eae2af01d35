"""Secrets on the host: the Vault agents run, and what they render stays with its service.

Each host runs one agent per group it is in (``citadel-agent@gpu``, ``citadel-agent@gateway``;
the groups come from ``/etc/citadel/host.json``, written by the base role). Fixed by the
vault-agent role (roles/vault_agent); the directories both sides share, and which service each
group's secrets are for, are in citadel_runtime.layout.
"""

from __future__ import annotations

from citadel_runtime.layout import AGENT_RUN_ROOT, AGENT_SECRETS, KEYGUARD_SECRETS
from hardening.checks import Command
from hardening.model import Control, References

ACCESS = ["164.312(a)(1)", "164.312(d)"]
GROUPS_OF_HOST = (
    "groups=$(python3 -c 'import json; print(\" \".join(json.load(open(\"/etc/citadel/host.json\"))[\"groups\"]))' "
    "2>/dev/null) || { echo 'no /etc/citadel/host.json (role base)'; exit 1; }; "
)


def _per_group(body: str) -> str:
    """A script running `body` for each of the host's groups with an agent; exit 1 on any problem."""
    with_agents = "|".join(AGENT_SECRETS)
    return GROUPS_OF_HOST + f"bad=0; for g in $groups; do case $g in {with_agents}) {body};; esac; done; exit $bad"


def _service_dirs() -> str:
    return " ;; ".join(f"{g}) d={s['secrets_dir']}; u={s['user']}" for g, s in AGENT_SECRETS.items())


AGENT_RUNNING = Control(
    id="secrets-agent-running",
    title="Each host group's Vault agent is enabled, running and logged in",
    rationale="The agent renews the host's short-lived certificate and picks up rotated keys; a stopped agent "
    "leaves a host serving with secrets that expire or were retired, or breaks it at the next rotation.",
    severity="high",
    refs=References(hipaa=ACCESS, nist=["IA-5", "SC-12"], owasp_llm=["LLM02"], threats=["T9", "T10"]),
    check=Command(
        command=_per_group(
            'a=$(systemctl is-active citadel-agent@$g); e=$(systemctl is-enabled citadel-agent@$g 2>/dev/null); '
            # Running is not enough: an agent whose identity expired or was revoked runs
            # without a login until a deploy (or readmit-host and a deploy) gives it one.
            f't=$([ -s {AGENT_RUN_ROOT}/$g/token ] && echo logged-in || echo no-token); '
            'echo "citadel-agent@$g $a $e $t"; [ "$a $e $t" = "active enabled logged-in" ] || bad=1'
        ),
        describe="every group's agent active, enabled and logged in",
    ),
    remediation="vault-agent",
    break_with="systemctl stop citadel-agent@gpu",
)

AGENT_SINK_PRIVATE = Control(
    id="secrets-agent-sink-private",
    title="The Vault agents' token sinks are root's alone (0600)",
    rationale="The sink holds the agent's Vault token: anyone who reads it can fetch every secret of the host's "
    "group until the token expires.",
    severity="high",
    refs=References(hipaa=ACCESS, nist=["AC-3", "IA-5(7)"], threats=["T10"]),
    check=Command(
        command=_per_group(
            # No sink (a stopped agent's run directory is gone) is no token on disk: nothing to leak;
            # a stopped agent is secrets-agent-running's finding, not this one's.
            f'f={AGENT_RUN_ROOT}/$g/token; s=$(stat -c "%a %U:%G" $f 2>/dev/null || echo absent); echo "$f $s"; '
            'case "$s" in "600 root:root"|absent) ;; *) bad=1;; esac'
        ),
        describe="every sink absent or mode 600, owned by root",
    ),
    remediation="vault-agent",
    break_with=f"chmod 0644 {AGENT_RUN_ROOT}/gpu/token",
)

RENDERED_FILES_PRIVATE = Control(
    id="secrets-files-private",
    title="Rendered secrets are readable only by the service they are for",
    rationale="TLS keys and API keys rendered by the agents must be readable by their own service's user only "
    "(mode 0400 in a root-owned 0750 directory of that user's group), never by other services or users.",
    severity="high",
    refs=References(hipaa=ACCESS, nist=["AC-3", "AC-6", "SC-28"], owasp_llm=["LLM02"], threats=["T9", "T10"]),
    check=Command(
        command=_per_group(
            f"case $g in {_service_dirs()};; esac; "
            's=$(stat -c "%a %U:%G" $d 2>/dev/null || echo missing); echo "$d $s"; [ "$s" = "750 root:$u" ] || bad=1; '
            'n=0; for f in $d/*; do [ -e "$f" ] || continue; n=$((n+1)); s=$(stat -c "%a %U:%G" "$f"); echo "$f $s"; '
            '[ "$s" = "400 $u:$u" ] || bad=1; done; [ $n -gt 0 ] || { echo "$d is empty"; bad=1; }'
        ),
        describe="every rendered file 0400 and owned by its service's user",
    ),
    remediation="vault-agent",
    break_with=f"chmod 0644 {KEYGUARD_SECRETS}/tls.pem",
)

CONTROLS = [AGENT_RUNNING, AGENT_SINK_PRIVATE, RENDERED_FILES_PRIVATE]
