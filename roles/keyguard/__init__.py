"""The ``keyguard`` role: the model server's TLS door on GPU hosts (``citadel_runtime.keyguard``).

Installs the runtime code (standard library only, run by Debian's python3) under
``/usr/local/lib/citadel/runtime`` and the sandboxed unit ``citadel-keyguard.service``
(its own system user, no capabilities, read-only file system). Its certificate and key
hashes come from ``citadel-agent@gpu`` (role vault-agent, applied before this one), which
also reloads it when they change; the unit does not start until both files exist. Stopping
it drains (``--drain-seconds``, under its ``TimeoutStopSec=``), and its runtime directory
``/run/citadel-keyguard`` holds the models' drain markers (``citadel_runtime.drain``).

Threats: inference attacks and privacy breaches through direct access to the model
server; insecure deployment environments (plaintext on the wire).

Example::

    citadel deploy -i inventory/lab.yaml --role vault-agent --role keyguard
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.api import deploy
from pyinfra.operations import files, systemd

from roles import Role
from roles.model_store.user import ensure_model_user
from roles.ops.pyinfra_private import will_change
from roles.ops.runtime import install_runtime

UNIT = "citadel-keyguard.service"  # listens on citadel_runtime.layout.KEYGUARD_PORT
# The keyguard speaks HTTP through the gateway's own parser, deadlines and upstream pool (one HTTP code to review).
MODULES = ("__init__.py", "keydoc.py", "sdnotify.py", "keyguard.py", "drain.py", "layout.py", "uds.py", "upstream_key.py",
           *(f"gateway/{m}" for m in (
    "__init__.py", "connections.py", "errors.py", "http1.py", "routes.py", "upstream.py")))


@deploy("Citadel keyguard")
def apply() -> None:
    ensure_model_user()  # the unit joins its group, to reach vLLM's socket
    code = install_runtime(MODULES)
    # Its command line names the files holding keys, never a key; stopping drains within TimeoutStopSec=.
    unit = files.put(name=f"vllm-api-key-not-on-cmdline, keyguard-drains-on-stop: unit {UNIT}", src=str(Path(__file__).parent / "files" / UNIT),
                     dest=f"/etc/systemd/system/{UNIT}", user="root", group="root", mode="0644")
    changed = any(will_change(op) for op in [*code, unit])
    systemd.service(name="citadel-keyguard running and enabled", service=UNIT, running=True, enabled=True,
                    restarted=changed, daemon_reload=will_change(unit))


ROLE = Role(name="keyguard", summary="TLS and internal-key door of the model server", groups=("gpu",), apply=apply)
