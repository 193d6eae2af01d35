"""The model server on GPU hosts: sandboxed, reachable by nothing but its socket, reaching nothing.

Every check reads what runs (``/proc``, the service cgroups, systemd's view of the loaded
unit) through ``citadel_runtime.vllm_inspect`` and the isolation probe, both installed by
the vllm role (roles/vllm); the paths both sides share are in citadel_runtime.layout. A
host that serves no model passes. Each control's ``break_with`` is a real misconfiguration
of the running server (a unit drop-in and a restart), as the lab tests apply it.
"""

from __future__ import annotations

from citadel_runtime.layout import (
    ISOLATION_PROBE_CONFIG,
    MODEL_CONFIG_DIR,
    MODEL_MOUNT_ROOT,
    RUN_MODULE,
    RUNTIME_DIR,
    VLLM_CONF_DIR,
    VLLM_CURRENT,
    VLLM_UNIT,
)
from hardening.checks import Command
from hardening.model import Control, References

# Hosts without the vllm role (gateways, GPU hosts serving nothing) pass, unless a model is
# set up to be unsealed there: then its server is missing.
INSTALLED = (
    f"[ -e {RUNTIME_DIR}/citadel_runtime/vllm_inspect.py ] || {{ "
    f"ls {MODEL_CONFIG_DIR}/*.json >/dev/null 2>&1 && {{ echo 'models are unsealed here but no model server is "
    "installed (role vllm)'; exit 1; }; echo 'no model server on this host'; exit 0; }; "
)
INSPECT = f"{INSTALLED}{RUN_MODULE} citadel_runtime.vllm_inspect"
MAX_EXPOSURE = 2.0
DROP_IN = f"/etc/systemd/system/{VLLM_UNIT}.d/zz-citadel-audit-break.conf"
SERVE = (f"{VLLM_CURRENT}/bin/python -m vllm.entrypoints.openai.api_server --model "
         f"{MODEL_MOUNT_ROOT}/%%i --served-model-name %%i")
EACH_MODEL = f'bad=0; for c in {VLLM_CONF_DIR}/*.conf; do [ -e "$c" ] || continue; m=$(basename "$c" .conf); '
ISOLATION = ["164.312(a)(1)", "164.312(e)(1)"]


def drop_in(*lines: str, wait_for: str | None = None) -> str:
    """A break: a drop-in for every citadel-vllm@ unit, then a restart (and a wait for `wait_for`)."""
    body = "\\n".join(["[Service]", *lines]) + "\\n"
    command = (f"mkdir -p {DROP_IN.rsplit('/', 1)[0]} && printf '{body}' > {DROP_IN} && systemctl daemon-reload "
               "&& systemctl restart 'citadel-vllm@*.service'")
    if wait_for:
        command += f"; for i in $(seq 180); do {wait_for} && break; sleep 1; done"
    return command


def serving_with(flag: str) -> str:
    """A break: the server restarted on its usual socket with one more (unwanted) flag."""
    return drop_in("ExecStart=", f"ExecStart={SERVE} --uds /run/citadel-vllm/%%i/vllm.sock {flag} $CITADEL_VLLM_ARGS")


UNIT_EXPOSURE = Control(
    id="vllm-unit-exposure",
    title=f"The model server's unit is sandboxed: systemd-analyze exposure at most {MAX_EXPOSURE}",
    rationale="A compromised model server (a poisoned model, a serving-stack bug) must not be able to harm the "
    "host: no privileges or capabilities, read-only system, private network, devices, /tmp and IPC, kernel and "
    "cgroups protected, system calls and address families restricted.",
    severity="high",
    refs=References(hipaa=["164.312(a)(1)"], nist=["CM-7", "SC-39", "AC-6", "SI-16"], owasp_llm=["LLM03", "LLM05"],
                    threats=["T6", "T9"]),
    check=Command(
        command=INSTALLED + EACH_MODEL + (
            'line=$(systemd-analyze security --no-pager "citadel-vllm@$m.service" 2>&1 | grep -o "Overall exposure'
            ' level.*"); score=$(echo "${line##*: }" | cut -d" " -f1); echo "$m: ${line:-no score}"; '
            f'awk -v s="$score" \'BEGIN {{ exit !(s ~ /^[0-9.]+$/ && s + 0 <= {MAX_EXPOSURE}) }}\' || bad=1; done; exit $bad'
        ),
        describe=f"systemd-analyze security of each citadel-vllm@ unit at most {MAX_EXPOSURE}",
    ),
    remediation="vllm",
    break_with=(f"mkdir -p {DROP_IN.rsplit('/', 1)[0]} && printf '[Service]\\nUser=root\\nPrivateNetwork=no\\n"
                "ProtectSystem=no\\nProtectHome=no\\nPrivateUsers=no\\nCapabilityBoundingSet=~\\n' > "
                f"{DROP_IN} && systemctl daemon-reload"),
)

LOOPBACK_ONLY = Control(
    id="vllm-listens-loopback-only",
    title="Nothing of the model server listens beyond loopback (read from the host's sockets)",
    rationale="vLLM serves unauthenticated routes (/invocations runs inference, /metrics, /tokenize): only the "
    "keyguard, through a Unix socket, may reach it. Read from every socket its user holds, in any namespace.",
    severity="critical",
    refs=References(hipaa=ISOLATION + ["164.312(d)"], nist=["SC-7", "AC-3", "CM-7"], owasp_llm=["LLM02", "LLM10"],
                    threats=["T3", "T9"]),
    check=Command(command=f"{INSPECT} listeners", describe="every listener of citadel-vllm on loopback"),
    remediation="vllm",
    break_with=drop_in("PrivateNetwork=no", "ExecStartPost=", "ExecStart=",
                       f"ExecStart={SERVE} --host 0.0.0.0 --port 8000 $CITADEL_VLLM_ARGS",
                       wait_for="ss -Hltn 'sport = :8000' | grep -q 0.0.0.0"),
)

EGRESS_BLOCKED = Control(
    id="vllm-egress-blocked",
    title="The model server's user can open no connection beyond loopback (tried, not read from rules)",
    rationale="A compromised model server must not exfiltrate prompts or weights, nor reach Vault or other hosts: "
    "a real connection attempt to each probe target, from the host and from inside each sandbox, must fail.",
    severity="critical",
    refs=References(hipaa=ISOLATION + ["164.312(e)(2)(i)"], nist=["SC-7", "SC-7(5)", "AC-4", "SI-4"],
                    owasp_llm=["LLM02"], threats=["T3", "T6", "T10"]),
    check=Command(command=f"{INSTALLED}[ -e {ISOLATION_PROBE_CONFIG} ] || {{ echo 'no probe configured'; exit 1; }}; "
                          f"{RUN_MODULE} citadel_runtime.isolation_probe --check",
                  describe="every probe target blocked for citadel-vllm, on the host and in each sandbox"),
    # The rule by user id is the hardening role's (area firewall); the sandbox and the probe are this one's.
    remediation="vllm",
    break_with="nft -a list chain inet citadel output | grep -o 'skuid .* handle [0-9]*' | grep -o '[0-9]*$' | "
    "while read h; do nft delete rule inet citadel output handle $h; done",
)

KEY_NOT_ON_CMDLINE = Control(
    id="vllm-api-key-not-on-cmdline",
    title="The model server's API key is on no process's command line",
    rationale="Every local user can read /proc/PID/cmdline: a key passed as --api-key is a key given away. It "
    "must come from the Vault agent's file through systemd's environment.",
    severity="high",
    refs=References(hipaa=["164.312(a)(1)", "164.312(d)"], nist=["IA-5(7)", "SC-28", "AC-3"], owasp_llm=["LLM02"],
                    threats=["T3", "T9"]),
    check=Command(command=f"{INSPECT} key-on-cmdline", describe="no /proc/*/cmdline holds the vLLM API key"),
    remediation="vllm",
    break_with=serving_with("--api-key ${VLLM_API_KEY}"),
)

OFFLINE = Control(
    id="vllm-offline",
    title="The model server runs offline: no model hub, no usage statistics",
    rationale="A server that tries the hub or reports usage leaks what it serves and may fetch code or weights "
    "nobody signed; the offline variables must be in every vLLM process's environment.",
    severity="medium",
    refs=References(hipaa=["164.312(e)(1)"], nist=["SC-7", "CM-7", "SR-3"], owasp_llm=["LLM03"],
                    threats=["T8", "T10"]),
    check=Command(command=f"{INSPECT} offline",
                  describe="HF_HUB_OFFLINE, TRANSFORMERS_OFFLINE, VLLM_NO_USAGE_STATS, DO_NOT_TRACK set in each"),
    remediation="vllm",
    break_with=drop_in("Environment=HF_HUB_OFFLINE=0 VLLM_NO_USAGE_STATS=0"),
)

NO_REMOTE_CODE = Control(
    id="vllm-no-remote-code",
    title="No remote code, development routes or runtime LoRA, unless the inventory opts a model in by name",
    rationale="--trust-remote-code runs Python shipped with a model; development routes and runtime LoRA let a "
    "caller change what the server runs. None is on unless settings.vllm_trust_remote_code / "
    "vllm_runtime_lora name the model (development routes: never).",
    severity="critical",
    refs=References(hipaa=["164.312(c)(1)"], nist=["CM-7", "SI-7", "CM-11"], owasp_llm=["LLM03", "LLM05"],
                    threats=["T6", "T8"]),
    check=Command(command=f"{INSPECT} flags", describe="each vLLM without remote code, dev mode or runtime LoRA"),
    remediation="vllm",
    break_with=serving_with("--trust-remote-code"),
)

SERVES_SIGNED_MODEL = Control(
    id="vllm-serves-signed-model",
    title="Each model server runs, on its unseal mount, and that mount matches the signed manifest",
    rationale="What clinicians are told comes from the model the hospital signed: the running server must read "
    "the unsealed copy, and that copy must verify against the manifest signed by Vault's model-signing key.",
    severity="critical",
    refs=References(hipaa=["164.312(c)(1)", "164.312(c)(2)"], nist=["SI-7", "SI-7(6)", "SR-4"],
                    owasp_llm=["LLM03", "LLM04"], threats=["T1", "T2", "T8"]),
    check=Command(
        command=(f"{INSPECT} served; s=$?; " + EACH_MODEL
                 + f'if ! {RUN_MODULE} citadel_runtime.unseal --check "$m"; then bad=1; '
                 'echo "unseal: $(journalctl -u citadel-unseal@$m -n 1 -o cat --no-pager 2>/dev/null)"; fi; '
                 'done; [ $s -eq 0 ] && [ $bad -eq 0 ]'),
        describe="citadel-vllm@ serves its unseal mount and the mount verifies",
    ),
    remediation="model-store",
    break_with=f"f=$(find {MODEL_MOUNT_ROOT} -type f | head -1) && chmod u+w $f && echo poisoned >> $f",
)

DRAINS_BEFORE_STOP = Control(
    id="vllm-drains-before-stop",
    title="Each model server drains at the keyguard before it stops, and is served again when it starts",
    rationale="A vLLM stopped with requests in flight cuts their answers (in the 10,000-request test, two "
    "restarts failed 3,230). Its ExecStop= must ask the keyguard to send the model no new request (the gateway "
    "takes them to another replica) and wait for those in flight, within TimeoutStopSec=; its ExecStartPre= "
    "must release the model again.",
    severity="medium",
    refs=References(nist=["SC-5", "SC-24", "SI-17"], threats=["T5"]),
    check=Command(command=f"{INSTALLED}{RUN_MODULE} citadel_runtime.drain audit vllm",
                  describe="each citadel-vllm@ unit runs 'drain wait' at stop, 'drain release' at start, in time"),
    remediation="vllm",
    # The unit file itself (not a drop-in): the role's redeploy writes it back.
    break_with=f"sed -i '/citadel_runtime.drain/d' /etc/systemd/system/{VLLM_UNIT} && systemctl daemon-reload",
)

CONTROLS = [UNIT_EXPOSURE, LOOPBACK_ONLY, EGRESS_BLOCKED, KEY_NOT_ON_CMDLINE, OFFLINE, NO_REMOTE_CODE,
            SERVES_SIGNED_MODEL, DRAINS_BEFORE_STOP]
# How a test puts the host back after a break (removing the drop-in restarts a clean server).
RESTORE = (f"rm -f {DROP_IN} && systemctl daemon-reload && nft -f /etc/nftables.conf && "
           f"for c in {VLLM_CONF_DIR}/*.conf; do m=$(basename $c .conf); "
           "systemctl restart citadel-unseal@$m citadel-vllm@$m; done")
