"""The keyguard's choice of vLLM's key during a rotation (citadel_runtime.upstream_key), on loopback.

A stand-in model server on a Unix socket accepts exactly one key, as vLLM does (its
environment's VLLM_API_KEY, read at start), and answers 401 to any other, keeping the
connection as uvicorn does. "Restarting" it makes a new socket with the new key, as systemd's RuntimeDirectory
and vLLM do. The keyguard's real connection pool carries the requests.
"""

from __future__ import annotations

import asyncio
import json
import os
import socketserver
import tempfile
import threading
from http.server import BaseHTTPRequestHandler

import pytest

from citadel_runtime.gateway.upstream import Address, Pool
from citadel_runtime.upstream_key import RETIRE_SECONDS, UpstreamKeys

OLD, NEW = "vk_old", "vk_new"
BODY = json.dumps({"model": "tiny", "prompt": "hi"}).encode()


class OneKeyHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:
        pass

    def _answer(self) -> None:
        server = self.server
        presented = self.headers.get("Authorization", "")
        with server.lock:
            server.seen.append((self.command, self.path, presented))
        # uvicorn takes the body off the socket as it comes; vLLM's middleware refuses before the app.
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if presented != f"Bearer {server.key}":
            payload, status = b'{"error": "Unauthorized"}', 401
        else:
            payload, status = b'{"ok": true}', 200
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    do_GET = do_POST = _answer  # noqa: N815 - http.server's naming


class OneKeyServer(socketserver.ThreadingUnixStreamServer):
    daemon_threads = True
    request_queue_size = 128  # the concurrent requests below all connect at once

    def handle_error(self, request, client_address) -> None:
        pass  # a pooled connection closed when a test's event loop ends: not the test's concern

    def __init__(self, path: str, key: str):
        super().__init__(path, OneKeyHandler)
        self.key, self.seen, self.lock = key, [], threading.Lock()
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.shutdown()
        self.server_close()
        os.unlink(self.server_address)


@pytest.fixture
def socket_dir():
    with tempfile.TemporaryDirectory(prefix="uk", dir="/tmp") as path:  # socket paths are short
        yield path


def serve(socket_dir: str, key: str) -> OneKeyServer:
    return OneKeyServer(f"{socket_dir}/vllm.sock", key)


def pool_for(socket_dir: str) -> Pool:
    return Pool(Address("unix", path=f"{socket_dir}/vllm.sock"))


async def send(keys: UpstreamKeys, pool: Pool, in_force: str) -> int:
    response = await keys.request(pool, in_force, "POST", "/v1/completions", [("Content-Type", "application/json")],
                                  BODY, 10)
    await response.read_all(1 << 20, 10)
    return response.status


def presented(server: OneKeyServer, path: str = "/v1/completions") -> list[str]:
    return [auth.removeprefix("Bearer ") for _, p, auth in server.seen if p == path]


def test_with_one_key_it_goes_as_it_always_did_no_question_asked(socket_dir):
    server, keys = serve(socket_dir, OLD), UpstreamKeys()
    try:
        assert asyncio.run(send(keys, pool_for(socket_dir), OLD)) == 200
        assert [p for _, p, _ in server.seen] == ["/v1/completions"]
    finally:
        server.stop()


def test_the_new_key_is_presented_only_once_the_restarted_server_accepts_it(socket_dir):
    server, keys = serve(socket_dir, OLD), UpstreamKeys()

    async def rotation():
        pool = pool_for(socket_dir)
        statuses = [await send(keys, pool, OLD)]
        # The agent rendered the new key and reloaded the keyguard; vLLM has not restarted yet.
        statuses += [await send(keys, pool, NEW) for _ in range(5)]
        return statuses

    try:
        assert asyncio.run(rotation()) == [200] * 6
        assert presented(server) == [OLD] * 6  # the old server only ever got the key it accepts
        assert presented(server, "/v1/models") == [NEW]  # asked once, with the new key
    finally:
        server.stop()
    server = serve(socket_dir, NEW)  # vLLM restarted on the new key: a new socket

    async def after_restart():
        pool = pool_for(socket_dir)
        return [await send(keys, pool, NEW) for _ in range(5)]

    try:
        assert asyncio.run(after_restart()) == [200] * 5
        assert presented(server) == [NEW] * 5 and presented(server, "/v1/models") == [NEW]
    finally:
        server.stop()


def test_a_server_that_switched_keys_after_the_question_gets_the_request_again_with_the_other(socket_dir):
    server, keys = serve(socket_dir, OLD), UpstreamKeys()

    async def switch_under_load():
        pool = pool_for(socket_dir)
        assert await send(keys, pool, OLD) == 200
        first = await asyncio.gather(*(send(keys, pool, NEW) for _ in range(20)))
        server.key = NEW  # same socket, new key: the worst case for a remembered answer
        second = await asyncio.gather(*(send(keys, pool, NEW) for _ in range(20)))
        return first + second

    try:
        assert asyncio.run(switch_under_load()) == [200] * 40
        accepted = [a for _, p, a in server.seen if p == "/v1/completions"]
        assert accepted.count(f"Bearer {NEW}") >= 20  # every request after the switch went with the new key
    finally:
        server.stop()


def test_a_missing_key_file_on_reload_keeps_the_key_held(socket_dir):
    server, keys = serve(socket_dir, OLD), UpstreamKeys()
    try:
        pool = pool_for(socket_dir)
        assert asyncio.run(send(keys, pool, OLD)) == 200
        assert asyncio.run(send(keys, pool_for(socket_dir), None)) == 200
        assert presented(server) == [OLD, OLD] and not keys.rotating
    finally:
        server.stop()


def test_the_old_key_is_dropped_after_the_retirement_period():
    clock = [0.0]
    keys = UpstreamKeys(clock=lambda: clock[0])
    keys.hold(OLD)
    keys.hold(NEW)
    assert keys.rotating and keys.order(("s",)) == [NEW, OLD]
    keys.accepted[("s",)] = OLD
    assert keys.order(("s",)) == [OLD, NEW]
    clock[0] = RETIRE_SECONDS + 1
    keys.hold(NEW)
    assert not keys.rotating and keys.order(("s",)) == [NEW]
