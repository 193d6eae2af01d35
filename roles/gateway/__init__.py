"""The ``gateway`` role: clinical applications' only door to the model (``citadel_runtime.gateway``).

Installs the gateway's code (standard library only, run by Debian's python3), its
configuration ``/etc/citadel/gateway/gateway.json`` (paths and the inventory's client
policies, never a secret) and the sandboxed unit ``citadel-gateway.service``: its own user,
only CAP_NET_BIND_SERVICE (for 443), read-only file system but its log directory. Its
certificate, client key hashes, internal keys and audit-log key come from
``citadel-agent@gateway`` (role vault-agent, applied before), which reloads it on change.

Each model is reached through the keyguard of the first GPU host that serves it
(``https://HOST:8443``, verified against Citadel's PKI CA), with the internal API key.

Threats (../shared/notes/threat-model.md): unauthorised access and inference attacks;
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

from roles import Role
from roles.ops.runtime import install_runtime
from roles.vault_agent.templates import PKI_CA, SECRETS_ROOT

UNIT = "citadel-gateway.service"
PORT = 443  # roles.hardening.firewall.GATEWAY_PORT
KEYGUARD_PORT = 8443  # roles.keyguard.PORT
CONFIG_DIR = "/etc/citadel/gateway"
CONFIG = f"{CONFIG_DIR}/gateway.json"
AUDIT_LOG = "/var/log/citadel-gateway/audit.jsonl"
CLIENT_CA = f"{CONFIG_DIR}/client-ca.pem"  # gateway.client_ca_file, for mutual TLS
SECRETS = f"{SECRETS_ROOT}/gateway"
MODULES = ("__init__.py", "keydoc.py", "uds.py", *(f"gateway/{m}" for m in (
    "__init__.py", "auditlog.py", "clients.py", "content.py", "http1.py", "inspect.py", "metrics.py", "phi.py", "routes.py",
    "server.py", "upstream.py")))


def upstreams(site) -> dict[str, str]:
    """model -> the keyguard of the first GPU host serving it."""
    found: dict[str, str] = {}
    for name in site.hosts_in("gpu"):
        entry = site.hosts[name]
        address = f"[{entry.address}]" if ":" in entry.address else entry.address
        for model in entry.models:
            found.setdefault(model, f"https://{address}:{KEYGUARD_PORT}")
    return found


def gateway_config(site) -> dict:
    """The gateway's configuration: a pure function of the inventory (reruns are no-ops)."""
    gateway = site.gateway
    return {
        "listen": f"0.0.0.0:{PORT}",
        "admin_listen": f"127.0.0.1:{gateway.admin_port}",
        "tls": f"{SECRETS}/tls.pem",
        "client_keys": f"{SECRETS}/client-keys.json",
        "audit_key": f"{SECRETS}/audit-hmac.json",
        "content_key": f"{SECRETS}/content-key.json",
        "audit_log": AUDIT_LOG,
        "audit_fail_open": gateway.audit_fail_open,
        "journal": True,
        "upstreams": upstreams(site),
        "upstream_ca": PKI_CA,
        "upstream_key": {"kind": "keydoc", "path": f"{SECRETS}/internal-api-key.json"},
        "request_timeout": gateway.request_timeout_seconds,
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
    code = install_runtime(MODULES)
    files.directory(name=f"{CONFIG_DIR}", path=CONFIG_DIR, user="root", group="citadel-gateway", mode="0750")
    client_ca = []
    if site.gateway.client_ca_file:
        client_ca.append(files.put(name="CA of client certificates (mutual TLS)", src=str(site.gateway.client_ca_file),
                                   dest=CLIENT_CA, user="root", group="citadel-gateway", mode="0644"))
    config = files.put(name=f"Configuration {CONFIG}", src=io.StringIO(json.dumps(gateway_config(site), indent=2) + "\n"),
                       dest=CONFIG, user="root", group="citadel-gateway", mode="0640")
    unit = files.put(name=f"Unit {UNIT}", src=str(Path(__file__).parent / "files" / UNIT),
                     dest=f"/etc/systemd/system/{UNIT}", user="root", group="root", mode="0644")
    changed = any(op._maybe_is_change for op in [*code, *client_ca, config, unit])  # noqa: SLF001 - pyinfra's own prediction
    systemd.service(name="citadel-gateway running and enabled", service=UNIT, running=True, enabled=True,
                    restarted=changed, daemon_reload=unit._maybe_is_change)  # noqa: SLF001


ROLE = Role(name="gateway", summary="HTTPS front door: client keys, limits, PHI guard, chained audit log",
            groups=("gateway",), apply=apply)
