"""Tell systemd a ``Type=notify`` service is ready: ``ready()`` once its signal handlers are set
(and ``stopping()`` when it begins to drain before exiting).

Why: the Vault agent reloads a service (SIGHUP) whenever it renders a file, and at boot it
renders everything within a second of the service's start. Under ``Type=simple`` the unit is
"active" at fork, so that SIGHUP can arrive before Python has installed its handler, and an
unhandled SIGHUP ends the process cleanly: the unit stays dead, with no restart. Under
``Type=notify`` systemd holds any reload until ``READY=1``.

Standard library only; a no-op outside systemd (no ``NOTIFY_SOCKET``).

Example::

    >>> ready()  # not under systemd: nothing happens
    False
"""

from __future__ import annotations

import os
import socket


def ready() -> bool:
    """Send READY=1 to systemd's notification socket; whether there was one."""
    return notify(b"READY=1")


def stopping() -> bool:
    """Send STOPPING=1: the service is draining before it exits (systemd shows it "deactivating")."""
    return notify(b"STOPPING=1")


def notify(state: bytes) -> bool:
    """Send one state line to systemd's notification socket; whether there was one."""
    path = os.environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    if path.startswith("@"):  # an abstract socket
        path = "\0" + path[1:]
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.sendto(state, path)
    return True
