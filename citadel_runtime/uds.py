"""HTTP over a Unix socket (standard library only): how Citadel talks to vLLM on a GPU host.

vLLM listens on ``/run/citadel-vllm/MODEL/vllm.sock`` and on no TCP port of the host, so
the keyguard, the readiness check and the audit all speak HTTP through this connection.

Example::

    >>> connection = UnixHTTPConnection(socket_path("tiny"), timeout=5)   # doctest: +SKIP
    >>> connection.request("GET", "/v1/models", headers={"Authorization": "Bearer ..."})
"""

from __future__ import annotations

import http.client
import re
import socket

SOCKET_ROOT = "/run/citadel-vllm"  # systemd's RuntimeDirectory=citadel-vllm/%i
MODEL_NAME = re.compile(r"^[a-z0-9][a-z0-9._-]{0,62}$")  # inventory.schema.NAME_PATTERN


def socket_path(model: str) -> str:
    if not MODEL_NAME.fullmatch(model):
        raise ValueError(f"not a model name: {model!r}")
    return f"{SOCKET_ROOT}/{model}/vllm.sock"


def read_env_file(path: str) -> dict[str, str]:
    """KEY=VALUE lines (systemd's EnvironmentFile syntax, without quoting, which Citadel never writes)."""
    values = {}
    with open(path, encoding="utf-8") as handle:
        for line in handle:
            line = line.strip()
            if line and not line.startswith("#") and "=" in line:
                key, _, value = line.partition("=")
                values[key.strip()] = value.strip()
    return values


class UnixHTTPConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float = 600):
        super().__init__("localhost", timeout=timeout)
        self.unix_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(self.unix_path)
        except OSError:
            sock.close()
            raise
        self.sock = sock
