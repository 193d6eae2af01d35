"""Where the vllm role puts things on a GPU host (shared with its audit checks; no pyinfra)."""

VENV_ROOT = "/opt/citadel/vllm"  # KEY/: one virtualenv per wheelhouse; current -> the one in use
CURRENT = f"{VENV_ROOT}/current"
INSTALLED_MARK = ".citadel-installed"  # written last: a venv without it is half-made and rebuilt
WHEELHOUSE_DIR = "/var/lib/citadel/wheelhouse"  # KEY/: pushed, installed from, removed after
CONF_DIR = "/etc/citadel/vllm"  # MODEL.conf: the unit's non-secret settings and opt-ins
KEY_FILE = "/etc/citadel/secrets/keyguard/vllm.env"  # rendered by citadel-agent@gpu
UNIT = "citadel-vllm@.service"
PROBE_UNIT = "citadel-isolation-probe.service"
PROBE_TIMER = "citadel-isolation-probe.timer"
PROBE_CONFIG = "/etc/citadel/isolation-probe.json"
# The directory Debian's prometheus-node-exporter reads text files from (its textfile collector).
METRICS = "/var/lib/prometheus/node-exporter/citadel_isolation.prom"
