"""Install modules of ``citadel_runtime`` (the code hosts run) under one read-only directory.

The keyguard, model-store and vllm roles each need some of it; each asks for its modules
and gets the same files, so whichever runs first installs and the others are no-ops.

Example::

    changed = any(op._maybe_is_change for op in install_runtime(("__init__.py", "uds.py")))
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import files

import citadel_runtime

RUNTIME_DIR = "/usr/local/lib/citadel/runtime"
# How a check runs one of those modules on a host: `f"{RUN_MODULE} citadel_runtime.NAME"`.
RUN_MODULE = f"PYTHONPATH={RUNTIME_DIR} PYTHONDONTWRITEBYTECODE=1 python3 -m"


def install_runtime(modules: tuple[str, ...]) -> list:
    """One ``files.put`` per module (root-owned, 0644), in ``RUNTIME_DIR/citadel_runtime``."""
    source = Path(citadel_runtime.__file__).parent
    files.directory(name="Citadel's runtime code", path=f"{RUNTIME_DIR}/citadel_runtime", user="root", group="root",
                    mode="0755")
    for package in sorted({m.rpartition("/")[0] for m in modules if "/" in m}):
        files.directory(name=f"citadel_runtime/{package}", path=f"{RUNTIME_DIR}/citadel_runtime/{package}",
                        user="root", group="root", mode="0755")
    return [files.put(name=f"citadel_runtime/{module}", src=str(source / module),
                      dest=f"{RUNTIME_DIR}/citadel_runtime/{module}", user="root", group="root", mode="0644")
            for module in modules]
