"""The ``gateway`` role: clinical applications' only door to the model (``citadel_runtime.gateway``).

Installs the gateway's code (standard library only, run by Debian's python3), its
configuration ``/etc/citadel/gateway/gateway.json`` (paths and the inventory's client
policies, never a secret) and the sandboxed unit ``citadel-gateway.service``: its own user,
only CAP_NET_BIND_SERVICE (for 443), read-only file system but its log directory. Its
certificate, client key hashes, internal keys and audit-log key come from
``citadel-agent@gateway`` (role vault-agent, applied before), which reloads it on change.

Each model is reached through the keyguards of the GPU hosts that serve it
(``https://HOST:8443``, verified against Citadel's PKI CA), with the internal API key: one
host, its address; several, the list of replicas (name and address) the gateway balances
across, health-checks and fails over between (``citadel_runtime.gateway.replicas``).

Threats (docs/threat-model.md): unauthorised access and inference attacks;
leakage of PHI; lack of monitoring and accountability.

Example::

    citadel deploy -i inventory/lab.yaml --role vault-agent --role gateway
"""

from __future__ import annotations

import io
import json
from pathlib import Path

from pyinfra import host, logger
from pyinfra.api import deploy
from pyinfra.operations import apt, files, systemd

from citadel_runtime.gateway.replicas import HEALTH_SECONDS, HEALTH_TIMEOUT
from citadel_runtime.layout import (
    GATEWAY_AUDIT_LOG,
    GATEWAY_CONFIG,
    GATEWAY_CONFIG_DIR,
    GATEWAY_PORT,
    GATEWAY_SECRETS,
    GATEWAY_UNIT,
    KEYGUARD_PORT,
)
from roles import Role
from roles.ops.pyinfra_private import will_change
from roles.ops.runtime import install_runtime
from roles.vault_agent.templates import PKI_CA

CLIENT_CA = f"{GATEWAY_CONFIG_DIR}/client-ca.pem"  # gateway.client_ca_file, for mutual TLS
MODULES = ("__init__.py", "keydoc.py", "sdnotify.py", "layout.py", "uds.py", *(f"gateway/{m}" for m in (
    "__init__.py", "auditlog.py", "bodycheck.py", "budget.py", "clients.py", "connections.py", "content.py", "errors.py",
    "http1.py", "inspect.py", "metrics.py", "offload.py", "phi.py", "replicas.py", "routes.py", "screen.py",
    "server.py", "upstream.py")))
# The code that makes each control true (its operation's name starts with the ids).
CODE_FIXES = {
    "gateway/server.py": "gateway-tls-modern",
    "gateway/routes.py": "gateway-route-allowlist",
    "gateway/auditlog.py": "gateway-audit-log-chain",
    "gateway/clients.py": "gateway-client-keys-hashed",
}


def upstreams(site) -> dict[str, str | list[dict[str, str]]]:
    """model -> the keyguard of the GPU host serving it, or, when several do, the list of them
    (``{"name": host, "url": keyguard}``, in the inventory's order). One host renders as before,
    so a site with one replica per model gets the same file (and no restart)."""
    found: dict[str, list[dict[str, str]]] = {}
    for name in site.hosts_in("gpu"):
        entry = site.hosts[name]
        address = f"[{entry.address}]" if ":" in entry.address else entry.address
        for model in entry.models:
            found.setdefault(model, []).append({"name": name, "url": f"https://{address}:{KEYGUARD_PORT}"})
    return {model: replicas[0]["url"] if len(replicas) == 1 else replicas for model, replicas in found.items()}


def gateway_config(site) -> dict:
    """The gateway's configuration: a pure function of the inventory (reruns are no-ops)."""
    gateway = site.gateway
    return {
        "listen": f"0.0.0.0:{GATEWAY_PORT}",
        "admin_listen": f"127.0.0.1:{gateway.admin_port}",
        "tls": f"{GATEWAY_SECRETS}/tls.pem",
        "client_keys": f"{GATEWAY_SECRETS}/client-keys.json",
        "audit_key": f"{GATEWAY_SECRETS}/audit-hmac.json",
        "content_key": f"{GATEWAY_SECRETS}/content-key.json",
        "audit_log": GATEWAY_AUDIT_LOG,
        "audit_fail_open": gateway.audit_fail_open,
        "journal": True,
        "upstreams": upstreams(site),
        # How often, and within how long, the replicas of a model served by several are checked.
        "health_seconds": HEALTH_SECONDS, "health_timeout": HEALTH_TIMEOUT,
        "upstream_ca": PKI_CA,
        # Rendered by citadel-agent@gateway: a GPU host cut off by `secrets revoke-host` is refused.
        "upstream_crl": f"{GATEWAY_SECRETS}/crl.pem",
        # The gateway's own certificate, presented to the keyguards (they refuse a revoked gateway).
        "upstream_client_certificate": True,
        "upstream_key": {"kind": "keydoc", "path": f"{GATEWAY_SECRETS}/internal-api-key.json"},
        "request_timeout": gateway.request_timeout_seconds,
        **gateway.limits.model_dump(exclude_none=True),
        "clients": {name: policy.model_dump() for name, policy in sorted(gateway.clients.items())},
        **({"client_ca": CLIENT_CA} if gateway.client_ca_file else {}),
    }


@deploy("Citadel gateway")
def apply() -> None:
    site = host.data.citadel_site
    if site.gateway.audit_fail_open:  # named, logged opt-in: requests may be served without a record
        logger.warning("%s: gateway.audit_fail_open is set: requests are served even when unrecorded", host.name)
    recorders = sorted(name for name, policy in site.gateway.clients.items() if policy.record_content)
    if recorders:
        logger.warning("%s: gateway clients %s have their content recorded (encrypted)", host.name, ", ".join(recorders))
        apt.packages(name="python3-cryptography (sealing recorded content)", packages=["python3-cryptography"])
    code = install_runtime(MODULES, fixes=CODE_FIXES)
    files.directory(name=f"{GATEWAY_CONFIG_DIR}", path=GATEWAY_CONFIG_DIR, user="root", group="citadel-gateway",
                    mode="0750")
    client_ca = []
    if site.gateway.client_ca_file:
        client_ca.append(files.put(name="CA of client certificates (mutual TLS)", src=str(site.gateway.client_ca_file),
                                   dest=CLIENT_CA, user="root", group="citadel-gateway", mode="0644"))
    # Where it listens (GATEWAY_PORT; metrics on loopback only) and where it keeps its chained log.
    config = files.put(name=f"gateway-only-listener, gateway-audit-log-chain: configuration {GATEWAY_CONFIG}",
                       src=io.StringIO(json.dumps(gateway_config(site), indent=2) + "\n"),
                       dest=GATEWAY_CONFIG, user="root", group="citadel-gateway", mode="0640")
    unit = files.put(name=f"Unit {GATEWAY_UNIT}", src=str(Path(__file__).parent / "files" / GATEWAY_UNIT),
                     dest=f"/etc/systemd/system/{GATEWAY_UNIT}", user="root", group="root", mode="0644")
    changed = any(will_change(op) for op in [*code, *client_ca, config, unit])
    # The restart puts a change of its code or settings in force.
    systemd.service(name="gateway-only-listener, gateway-tls-modern, gateway-route-allowlist, gateway-audit-log-chain: "
                    "citadel-gateway running and enabled", service=GATEWAY_UNIT, running=True, enabled=True,
                    restarted=changed, daemon_reload=will_change(unit))


ROLE = Role(name="gateway", summary="HTTPS front door: client keys, limits, PHI guard, chained audit log",
            groups=("gateway",), apply=apply)
