"""citadel_runtime.sdnotify against a real datagram socket, as systemd's NOTIFY_SOCKET is."""

from __future__ import annotations

import socket

from citadel_runtime import sdnotify


def test_ready_sends_ready_1_to_the_notify_socket(tmp_path, monkeypatch):
    path = tmp_path / "notify"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind(str(path))
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        assert sdnotify.ready()
        assert listener.recv(64) == b"READY=1"


def test_an_abstract_socket_name_is_reached_too(monkeypatch):
    name = f"citadel-test-{id(monkeypatch)}"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        listener.bind("\0" + name)
        monkeypatch.setenv("NOTIFY_SOCKET", "@" + name)
        assert sdnotify.ready()
        assert listener.recv(64) == b"READY=1"


def test_outside_systemd_it_does_nothing(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    assert sdnotify.ready() is False
