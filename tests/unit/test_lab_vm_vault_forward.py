"""The lab VM's way to the lab's Vault without a VM: qemu's network options and the relay qemu runs per connection."""

from __future__ import annotations

import shlex
import socket
import subprocess
import sys
import threading

import pytest

from deploy.lab import vm
from deploy.lab.errors import LabError


def test_the_vm_network_holds_the_lab_vault_address_and_forwards_only_its_port():
    spec = vm._netdev(2222, ("10.89.0.1", 8300))
    options = spec.split(",guestfwd=")[0].split(",")
    assert {"restrict=on", "net=10.0.0.0/8", "host=10.0.2.2", "dhcpstart=10.0.2.15", "hostfwd=tcp:127.0.0.1:2222-:22"} <= set(options)
    rule = spec.split(",guestfwd=")[1]
    assert rule.startswith("tcp:10.89.0.1:8300-cmd:")
    assert shlex.split(rule.removeprefix("tcp:10.89.0.1:8300-cmd:")) == [sys.executable, "-I", str(vm.RELAY), "8300"]
    assert "guestfwd" not in vm._netdev(2222, None)  # no container host, no lab Vault address: nothing out


@pytest.mark.parametrize("address", ["192.168.7.1", "10.0.2.1", "10.0.2.100"])
def test_a_vault_address_qemu_cannot_forward_is_refused_naming_it(address):
    with pytest.raises(LabError, match=rf"the lab's Vault address {address} cannot be forwarded into the VM"):
        vm.check_vault_forward(address)


def test_up_refuses_before_making_anything(tmp_path, monkeypatch):
    from deploy.lab import lifecycle, state

    monkeypatch.setenv("CITADEL_LAB_DIR", str(tmp_path))
    monkeypatch.setattr(lifecycle, "_require_root", lambda *a: None)
    monkeypatch.setattr(lifecycle, "_require_tools", lambda vm: None)
    monkeypatch.setattr(lifecycle.network, "check_subnet_free", lambda subnet: None)
    with pytest.raises(LabError, match="192.168.50.1 cannot be forwarded"):
        lifecycle.up(hosts=1, vm=True, name="fw", subnet="192.168.50.0/24")
    assert state.load("fw") is None
    with pytest.raises(LabError, match="Vault port must be between 1024 and 65534"):
        lifecycle.up(hosts=1, vm=True, name="fw", vault_port=80)


def _echo_server() -> tuple[socket.socket, list[bytes]]:
    """A listener on 127.0.0.1 that answers each connection with what it got, after the client's half-close."""
    listener = socket.create_server(("127.0.0.1", 0))
    got: list[bytes] = []

    def serve():
        connection, _ = listener.accept()
        with connection:
            data = b""
            while chunk := connection.recv(4096):
                data += chunk
            got.append(data)
            connection.sendall(b"got " + data)

    threading.Thread(target=serve, daemon=True).start()
    return listener, got


def test_the_relay_carries_both_ways_and_passes_a_half_close_on():
    listener, got = _echo_server()
    guest, qemu_end = socket.socketpair()
    with listener, guest, qemu_end:
        relay = subprocess.Popen([sys.executable, "-I", str(vm.RELAY), str(listener.getsockname()[1])],
                                 stdin=qemu_end, stdout=qemu_end, stderr=qemu_end)
        qemu_end.close()
        guest.sendall(b"x" * 100_000)
        guest.shutdown(socket.SHUT_WR)  # the server answers only after this reached it
        answer = b""
        while chunk := guest.recv(65536):
            answer += chunk
        assert relay.wait(timeout=10) == 0
    assert got == [b"x" * 100_000] and answer == b"got " + b"x" * 100_000


def test_the_relay_closes_the_guest_connection_silently_when_nothing_listens():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # bound, not listening: connections are refused
        guest, qemu_end = socket.socketpair()
        with guest, qemu_end:
            relay = subprocess.Popen([sys.executable, "-I", str(vm.RELAY), str(port)],
                                     stdin=qemu_end, stdout=qemu_end, stderr=qemu_end)
            qemu_end.close()
            assert relay.wait(timeout=20) == 1
            assert guest.recv(100) == b""  # no error text in the guest's byte stream
