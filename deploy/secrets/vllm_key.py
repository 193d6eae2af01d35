"""The model server's own API key: what the keyguard presents to vLLM on the same GPU host.

vLLM checks it (``VLLM_API_KEY``) on its /v1 routes. It never leaves the GPU hosts' group:
``citadel-agent@gpu`` renders it into ``/etc/citadel/secrets/keyguard/vllm.env`` (the
keyguard's, 0400), systemd reads that file into vLLM's environment, and it is never on a
command line. Made once by ``citadel vault bootstrap``; a new value written here reaches
hosts within the agent's render interval, which restarts vLLM on it.

Threat: inference through direct access to the model server (defence in depth behind the
Unix socket's permissions and the keyguard).

Example::

    >>> seed(store)                                                 # doctest: +SKIP
    True
"""

from __future__ import annotations

import secrets

from deploy.secrets.store import Store

PATH = "gpu/vllm-api-key"
PREFIX = "vk_"


def seed(store: Store) -> bool:
    """Write a first key when there is none; False when one exists (never replaced here)."""
    if store.read(PATH)[0] is not None:
        return False
    store.write(PATH, {"value": PREFIX + secrets.token_urlsafe(32)}, 0)
    return True
