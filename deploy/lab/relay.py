"""Relay one TCP connection from the lab VM to a port on this machine's loopback; qemu runs it.

qemu's restricted user network lets the VM reach nothing but what a ``guestfwd`` rule names.
For ``guestfwd=tcp:ADDRESS:PORT-cmd:COMMAND`` qemu runs COMMAND once per connection the
guest opens to ADDRESS:PORT, with that connection as its stdin, stdout and stderr (one
socket). This is that command: it connects to 127.0.0.1:PORT and copies bytes both ways
until both sides are done; one side's end of data is passed on as a half-close, so TLS's
close_notify and FIN reach the other end as they were sent.

The lab VM reaches the lab's Vault so (``deploy.lab.vm``). Vault sees the connection come
from 127.0.0.1, which is the VM's address in the lab's inventory: the VM's Vault tokens are
bound to it. When nothing listens on the port, the guest's connection is closed at once and
its client tries again later, as it would for a Vault that is down.

Standard library only, and silent: stderr is the guest's connection too, so nothing may be
written to it. Run with ``-I``, so nothing next to this file shadows the standard library.

Example (the command qemu runs, with the guest's connection on fds 0-2)::

    python3 -I deploy/lab/relay.py 8200
"""

from __future__ import annotations

import os
import selectors
import socket
import sys

CHUNK = 65536
CONNECT_TIMEOUT_S = 10.0


def pump(first: socket.socket, second: socket.socket) -> None:
    """Copy bytes both ways until both sides have ended their data; a reset ends it at once."""
    peer = {first: second, second: first}
    reading = {first, second}
    with selectors.DefaultSelector() as selector:
        for side in reading:
            selector.register(side, selectors.EVENT_READ)
        while reading:
            for key, _ in selector.select():
                source = key.fileobj
                data = source.recv(CHUNK)
                if data:
                    peer[source].sendall(data)
                    continue
                selector.unregister(source)
                reading.discard(source)
                try:
                    peer[source].shutdown(socket.SHUT_WR)
                except OSError:  # the other side is gone already
                    pass


def main(argv: list[str]) -> int:
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 2)  # an error text on stderr would land in the guest's byte stream
    try:
        port = int(argv[1])
        guest = socket.socket(fileno=0)
        with socket.create_connection(("127.0.0.1", port), timeout=CONNECT_TIMEOUT_S) as upstream:
            upstream.settimeout(None)
            pump(guest, upstream)
    except (IndexError, ValueError, OSError):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
