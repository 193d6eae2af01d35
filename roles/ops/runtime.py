"""Install modules of ``citadel_runtime`` (the code hosts run) under one read-only directory.

The keyguard, model-store and vllm roles each need some of it; each asks for its modules
and gets the same files, so whichever runs first installs and the others are no-ops.

Example::

    from roles.ops.pyinfra_private import will_change

    changed = any(will_change(op) for op in install_runtime(("__init__.py", "uds.py")))
"""

from __future__ import annotations

from pathlib import Path

from pyinfra.operations import files

import citadel_runtime
from citadel_runtime.layout import RUNTIME_DIR


def install_runtime(modules: tuple[str, ...], fixes: dict[str, str] | None = None) -> list:
    """One ``files.put`` per module (root-owned, 0644), in ``RUNTIME_DIR/citadel_runtime``.

    ``fixes`` maps a module to the ids of the catalog controls whose behaviour it implements:
    they start that module's operation name, so a grep of an id finds the file that fixes it.
    """
    prefixes = {module: f"{ids}: " for module, ids in (fixes or {}).items()}
    if set(prefixes) - set(modules):
        raise ValueError(f"fixes names modules not installed: {sorted(set(prefixes) - set(modules))}")
    source = Path(citadel_runtime.__file__).parent
    files.directory(name="Citadel's runtime code", path=f"{RUNTIME_DIR}/citadel_runtime", user="root", group="root",
                    mode="0755")
    for package in sorted({m.rpartition("/")[0] for m in modules if "/" in m}):
        files.directory(name=f"citadel_runtime/{package}", path=f"{RUNTIME_DIR}/citadel_runtime/{package}",
                        user="root", group="root", mode="0755")
    return [files.put(name=f"{prefixes.get(module, '')}citadel_runtime/{module}", src=str(source / module),
                      dest=f"{RUNTIME_DIR}/citadel_runtime/{module}", user="root", group="root", mode="0644")
            for module in modules]
