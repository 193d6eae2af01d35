"""The gateway on hosts of the gateway group: the only door, well-locked, keeping its record.

Every check runs ``citadel_runtime.gateway.inspect`` (installed by role gateway) as root on
the host: it reads sockets from /proc, handshakes with and probes the gateway's own listener,
verifies the audit log's chain with the key the agent rendered, and reads the client table.
A host without the role passes (nothing to check), unless it is configured for one.
"""

from __future__ import annotations

from citadel_runtime.layout import (
    GATEWAY_ADMIN_PORT,
    GATEWAY_AUDIT_LOG,
    GATEWAY_CONFIG,
    GATEWAY_SECRETS,
    GATEWAY_UNIT,
    RUN_MODULE,
    RUNTIME_DIR,
)
from hardening.checks import Command
from hardening.model import Control, References

INSTALLED = f"[ -e {GATEWAY_CONFIG} ] || {{ echo 'no gateway on this host'; exit 0; }}; "
INSPECT = f"{INSTALLED}{RUN_MODULE} citadel_runtime.gateway.inspect"
GATEWAY_CODE = f"{RUNTIME_DIR}/citadel_runtime/gateway"  # as roles.gateway installs it
MONITORING = ["164.312(b)"]


ONLY_LISTENER = Control(
    id="gateway-only-listener",
    title="Beyond loopback only sshd and the gateway listen (and, on a GPU host, its keyguard)",
    rationale="Clinical applications must reach the model through the gateway alone, where callers are known, "
    "limited and recorded. Any other listener is a door around it. A GPU host's keyguard listens for gateways "
    "only (the firewall admits gateway hosts alone).",
    severity="critical",
    refs=References(hipaa=["164.312(a)(1)", "164.312(e)(1)"], nist=["SC-7", "CM-7", "AC-4"], cis=["2.1.22"],
                    owasp_llm=["LLM10"], threats=["T3", "T9"]),
    check=Command(command=f"{INSPECT} listeners", describe="every non-loopback TCP/UDP listener is sshd, the gateway or the keyguard"),
    remediation="gateway",
    break_with="systemd-run --unit=citadel-audit-break-listener python3 -m http.server 8081 --bind 0.0.0.0 && sleep 2",
)

TLS_SETTINGS = Control(
    id="gateway-tls-modern",
    title="The gateway speaks TLS 1.2 or later only, with forward-secret AEAD ciphers",
    rationale="Prompts and answers carry PHI: TLS 1.0/1.1 and non-forward-secret or CBC suites are refused, "
    "tested by real handshakes with the gateway's listener.",
    severity="high",
    refs=References(hipaa=["164.312(e)(1)", "164.312(e)(2)(ii)"], nist=["SC-8", "SC-8(1)", "SC-13"],
                    owasp_llm=["LLM02"], threats=["T5"]),
    check=Command(command=f"{INSPECT} tls", describe="handshakes: TLS 1.0/1.1 and weak TLS 1.2 suites refused"),
    remediation="gateway",
    break_with=("sed -i 's/^CIPHERS = .*/CIPHERS = \"ALL:@SECLEVEL=0\"/' "
                f"{GATEWAY_CODE}/server.py && systemctl restart {GATEWAY_UNIT} && sleep 2"),
)

ALLOWLIST = Control(
    id="gateway-route-allowlist",
    title="The gateway refuses every blocked vLLM route and path trick before it reaches the model",
    rationale="vLLM answers /invocations (inference), /tokenize, /metrics and /docs without a key; only the "
    "OpenAI-compatible chat, completions, models and embeddings routes, in their canonical spelling, may pass.",
    severity="critical",
    refs=References(hipaa=["164.312(a)(1)"], nist=["AC-3", "AC-4", "SC-7"], owasp_llm=["LLM10", "LLM02"],
                    threats=["T3", "T4"]),
    check=Command(command=f"{INSPECT} allowlist", describe="a probe of each blocked route and path trick gets 403/404/405"),
    remediation="gateway",
    break_with=(f"sed -i 's/\"\\/v1\\/models\": \"GET\",/\"\\/v1\\/models\": \"GET\", \"\\/invocations\": \"POST\", "
                "\"\\/tokenize\": \"POST\", \"\\/metrics\": \"GET\",/' "
                f"{GATEWAY_CODE}/routes.py && systemctl restart {GATEWAY_UNIT} && sleep 2"),
)

CHAIN = Control(
    id="gateway-audit-log-chain",
    title="The gateway's audit log is whole: every record's HMAC and its link to the one before verify",
    rationale="HIPAA requires recording activity in systems with ePHI; a record that can be edited, reordered or "
    "thinned without trace proves nothing. The chain's key is in Vault, not beside the log.",
    severity="high",
    refs=References(hipaa=MONITORING + ["164.312(c)(1)"], nist=["AU-9", "AU-10", "AU-12", "AU-3"],
                    owasp_llm=["LLM10"], threats=["T7"]),
    check=Command(command=f"{INSPECT} chain", describe=f"{GATEWAY_AUDIT_LOG} verifies with the key from Vault"),
    remediation="gateway",
    break_with=f"sed -i '1s/\"status\":[0-9]*/\"status\":200/; 1s/\"client\":[^,]*/\"client\":\"nobody\"/' {GATEWAY_AUDIT_LOG}",
)

CLIENT_TABLE = Control(
    id="gateway-client-keys-hashed",
    title="The gateway's client table holds no plaintext key, only SHA-256 hashes",
    rationale="A copy of the host's files must not give anyone a working client key: Vault and the host keep "
    "hashes only; the key itself is shown once, to whoever issued it.",
    severity="high",
    refs=References(hipaa=["164.312(d)", "164.312(a)(2)(iv)"], nist=["IA-5(1)", "SC-28"], owasp_llm=["LLM02"],
                    threats=["T3"]),
    check=Command(command=f"{INSPECT} client-table", describe="every client slot is a 64-hex sha256, none has a value"),
    remediation="gateway",
    break_with=(f"f={GATEWAY_SECRETS}/client-keys.json; python3 -c \"import json; p='$f'; d=json.load(open(p)); "
                "d.setdefault('clients', {})['leaky'] = {'current': {'version': 1, 'value': 'ck_plaintext'}}; "
                "json.dump(d, open(p, 'w'))\""),
)

def in_rotation(config: str = GATEWAY_CONFIG) -> str:
    """The check's script: the gateway's own gauge on its loopback admin listener (gateway.metrics),
    one line per replica of each model, 1 in rotation and 0 out (failed health checks, ejected)."""
    return (
        'python3 -c "import json, urllib.request\n'
        f"admin = json.load(open('{config}')).get('admin_listen', '127.0.0.1:{GATEWAY_ADMIN_PORT}')\n"
        "opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))\n"
        "text = opener.open('http://' + admin + '/metrics', timeout=5).read().decode()\n"
        "rows = [line.split('{', 1)[1].rsplit(' ', 1) for line in text.splitlines()\n"
        "        if line.startswith('citadel_gateway_replica_in_rotation{')]\n"
        "out = [labels.rstrip('}') for labels, value in rows if float(value) != 1]\n"
        "print('out of rotation: ' + '; '.join(out) if out else str(len(rows)) + ' replicas, all in rotation')\n"
        'raise SystemExit(1 if out else 0)"'
    )


def add_unserved_replica(config: str = GATEWAY_CONFIG) -> str:
    """The break's edit: a replica nobody serves, added to the first model of the configuration."""
    return (f"python3 -c \"import json; p='{config}'; c=json.load(open(p)); u=c['upstreams']; m=sorted(u)[0]; "
            "r=u[m] if isinstance(u[m], list) else [{'name': 'first', 'url': u[m]}]; "
            "u[m]=r+[{'name': 'audit-break', 'url': 'https://127.0.0.1:9'}]; json.dump(c, open(p, 'w'))\"")


REPLICAS_IN_ROTATION = Control(
    id="gateway-replicas-in-rotation",
    title="Every replica of every model is in the gateway's rotation (its own metrics, read on loopback)",
    rationale="A model served by several GPU hosts survives a restart or a lost host only while the others are "
    "healthy: a replica out of rotation (failed health checks, ejected) is redundancy the site believes it has "
    "and does not. Read from the running gateway's gauge, not from its configuration.",
    severity="medium",
    refs=References(nist=["SC-5", "SC-36", "CP-10"], threats=["T5"]),
    check=Command(command=INSTALLED + in_rotation(), not_applicable_output=r"^no gateway on this host",
                  describe="citadel_gateway_replica_in_rotation is 1 for every model and replica"),
    remediation="gateway",
    # The first health check (at the gateway's start) takes the added replica out of rotation.
    break_with=f"{add_unserved_replica()} && systemctl restart {GATEWAY_UNIT} && sleep 4",
)

CONTROLS = [ONLY_LISTENER, TLS_SETTINGS, ALLOWLIST, CHAIN, CLIENT_TABLE, REPLICAS_IN_ROTATION]
