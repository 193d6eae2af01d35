"""Where Citadel puts things on a host, and the ports it serves on: each defined once.

A leaf module: it imports nothing, so anything may read it. The code that runs on hosts
(``citadel_runtime``), the roles that put it and its settings there (``roles``) and the audit
catalog that checks them (``hardening/controls``) all take their paths and ports from here,
so the side that writes a file and the side that checks it cannot disagree on where it is.
Roles install this module with the rest of the runtime code (each role's ``MODULES``).

Example::

    >>> from citadel_runtime.layout import GATEWAY_PORT, KEYGUARD_PORT, MODEL_CONFIG_DIR
    >>> GATEWAY_PORT, KEYGUARD_PORT, MODEL_CONFIG_DIR
    (443, 8443, '/etc/citadel/models')
"""

# --- Ports --------------------------------------------------------------------------------
# Clients' HTTPS on gateway hosts. Read by roles.gateway (listen), roles.hardening.firewall
# (inbound from networks.gateway_allowed) and citadel_runtime.gateway.server (default listen).
GATEWAY_PORT = 443
# The gateway's Prometheus metrics, loopback only. Read by inventory.schema (the default of
# gateway.admin_port) and citadel_runtime.gateway.server (default admin_listen).
GATEWAY_ADMIN_PORT = 9464
# A GPU host's keyguard, reached by gateways only. Read by roles.gateway (upstreams),
# roles.hardening.firewall (inbound from gateways, outbound to GPU hosts) and
# citadel_runtime.keyguard (default --listen).
KEYGUARD_PORT = 8443

# --- Citadel's runtime code ----------------------------------------------------------------
# roles.ops.runtime installs citadel_runtime/ here, read-only.
RUNTIME_DIR = "/usr/local/lib/citadel/runtime"
# How a check or a role runs one of those modules on a host: f"{RUN_MODULE} citadel_runtime.NAME".
# Read by roles.store_volume and the catalog (gateway, model_store, vllm areas).
RUN_MODULE = f"PYTHONPATH={RUNTIME_DIR} PYTHONDONTWRITEBYTECODE=1 python3 -m"

# --- Vault agents (roles.vault_agent) ------------------------------------------------------
# systemd's RuntimeDirectory of citadel-agent@GROUP: GROUP/token (the agent's sink) and its
# pid file. Read by roles.vault_agent.templates and the catalog (vault_agent area).
AGENT_RUN_ROOT = "/run/citadel-agent"
# SERVICE/: what the agents render for each service. Read by roles.vault_agent.templates.
SECRETS_ROOT = "/etc/citadel/secrets"
KEYGUARD_SECRETS = f"{SECRETS_ROOT}/keyguard"  # citadel-agent@gpu renders for the keyguard
GATEWAY_SECRETS = f"{SECRETS_ROOT}/gateway"  # citadel-agent@gateway renders for the gateway (roles.gateway)
# Host group -> the service user its agent renders secrets for, and their directory (root:user
# 0750; the files user:user 0400). roles.vault_agent.templates.SPECS is built on it, and the
# catalog (vault_agent area) checks each group's directory against it.
AGENT_SECRETS = {
    "gpu": {"user": "citadel-keyguard", "secrets_dir": KEYGUARD_SECRETS},
    "gateway": {"user": "citadel-gateway", "secrets_dir": GATEWAY_SECRETS},
}

# --- The gateway (roles.gateway) -----------------------------------------------------------
GATEWAY_UNIT = "citadel-gateway.service"  # roles.gateway; the catalog restarts it in break recipes
GATEWAY_CONFIG_DIR = "/etc/citadel/gateway"
# Written by roles.gateway; read by citadel_runtime.gateway.inspect and the catalog (is a gateway installed?).
GATEWAY_CONFIG = f"{GATEWAY_CONFIG_DIR}/gateway.json"
# The chained audit log: roles.gateway puts it in the configuration; the catalog breaks it.
GATEWAY_AUDIT_LOG = "/var/log/citadel-gateway/audit.jsonl"

# --- Sealed models (roles.model_store) -----------------------------------------------------
# NAME.json: each model's unseal settings (roles.model_store writes them, citadel_runtime.unseal
# and vllm_inspect read them, the catalog checks every model listed there); signing-keys.pem.
MODEL_CONFIG_DIR = "/etc/citadel/models"
MODEL_PUBLIC_KEYS = f"{MODEL_CONFIG_DIR}/signing-keys.pem"  # transit model-signing's public keys, pinned
# NAME/REVISION/: sealed copies, root only. roles.model_store, deploy.models.push, the catalog.
MODEL_STORE = "/var/lib/citadel/models"
# NAME/: the tmpfs each model is unsealed into. roles.model_store, vllm_inspect, the catalog.
MODEL_MOUNT_ROOT = "/run/citadel/models"
# The model server's user (it alone reads the unsealed files). roles.model_store.user makes it;
# roles.hardening.firewall, roles.vllm, vllm_inspect and the catalog read it.
MODEL_USER = "citadel-vllm"

# --- The store's optional LUKS2 volume (roles.store_volume, citadel_runtime.store_unlock) --
# Not *.json: every MODEL_CONFIG_DIR/*.json is a model's unseal settings.
STORE_VOLUME_SETTINGS = f"{MODEL_CONFIG_DIR}/store-volume.settings"  # JSON: backing, mapper, Vault
STORE_VOLUME_WRAPPED = f"{MODEL_CONFIG_DIR}/store-volume.wrapped"  # the volume key, wrapped by transit (vault:vN:...)
STORE_VOLUME_MAPPER = "citadel-store"  # /dev/mapper/citadel-store
STORE_VOLUME_IMAGE = "/var/lib/citadel/store-volume.img"  # the file-backed volume (model_store.luks.image_size)
STORE_VOLUME_TRANSIT_KEY = "store-volume"  # the transit key wrapping it (deploy.vault.bootstrap.TRANSIT_KEYS)

# --- The model server (roles.vllm) ---------------------------------------------------------
VLLM_VENV_ROOT = "/opt/citadel/vllm"  # KEY/: one virtualenv per wheelhouse
VLLM_CURRENT = f"{VLLM_VENV_ROOT}/current"  # -> the virtualenv in use
VLLM_INSTALLED_MARK = ".citadel-installed"  # written last: a virtualenv without it is half-made and rebuilt
VLLM_WHEELHOUSE_DIR = "/var/lib/citadel/wheelhouse"  # KEY/: pushed, installed from, removed after
# MODEL.conf: the unit's non-secret settings and opt-ins. roles.vllm, vllm_inspect, the catalog.
VLLM_CONF_DIR = "/etc/citadel/vllm"
VLLM_KEY_FILE = f"{KEYGUARD_SECRETS}/vllm.env"  # vLLM's API key, rendered by citadel-agent@gpu
VLLM_UNIT = "citadel-vllm@.service"  # roles.vllm; the catalog's break recipes add drop-ins to it
ISOLATION_PROBE_UNIT = "citadel-isolation-probe.service"
ISOLATION_PROBE_TIMER = "citadel-isolation-probe.timer"
# Written by roles.vllm; read by citadel_runtime.isolation_probe and the catalog (is a probe configured?).
ISOLATION_PROBE_CONFIG = "/etc/citadel/isolation-probe.json"
# The directory Debian's prometheus-node-exporter reads text files from (its textfile collector).
ISOLATION_PROBE_METRICS = "/var/lib/prometheus/node-exporter/citadel_isolation.prom"
