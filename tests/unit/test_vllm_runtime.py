"""Host-side helpers of the model server: the keyguard's routing, the audit's socket facts,
the probe's metrics, and the wheelhouse's refusal when pip fails."""

from __future__ import annotations

import socket
import threading
from types import SimpleNamespace

import pytest

from citadel_runtime.isolation_probe import attempt, metrics
from citadel_runtime.keyguard import requested_model
from citadel_runtime.uds import UnixHTTPConnection, read_env_file, socket_path
from citadel_runtime.vllm_inspect import _address
from deploy.vllm import VllmError
from deploy.vllm.wheelhouse import ensure


def test_the_keyguard_takes_the_model_from_the_body_and_refuses_names_that_are_not_names():
    assert requested_model(b'{"model": "tiny-clinical", "prompt": "x"}') == "tiny-clinical"
    for body in (b'{"model": "../../etc/x"}', b'{"model": 5}', b"not json", b"[1]", None, b""):
        assert requested_model(body) is None
    with pytest.raises(ValueError):
        socket_path("../x")


def test_http_over_a_unix_socket_reaches_a_real_server(tmp_path):
    path = str(tmp_path / "s.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen(1)

    def answer():
        connection, _ = server.accept()
        connection.recv(65536)
        connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
        connection.close()

    thread = threading.Thread(target=answer)
    thread.start()
    client = UnixHTTPConnection(path, timeout=5)
    client.request("GET", "/v1/models")
    assert client.getresponse().read() == b"ok"
    thread.join()
    server.close()


def test_env_files_are_read_without_comments(tmp_path):
    (tmp_path / "e").write_text("# note\nVLLM_API_KEY=vk_abc=def\n\nOTHER = 1\n")
    assert read_env_file(str(tmp_path / "e")) == {"VLLM_API_KEY": "vk_abc=def", "OTHER": "1"}


def test_proc_net_addresses_decode_for_both_families():
    assert _address("0100007F") == "127.0.0.1"
    assert _address("00000000") == "0.0.0.0"
    assert _address("00000000000000000000000001000000") == "::1"


def test_a_refused_connection_counts_as_reached_and_metrics_say_so():
    probe = socket.socket()
    probe.bind(("127.0.0.1", 0))
    port = probe.getsockname()[1]
    probe.close()  # nothing listens: the kernel answers with a reset
    assert attempt(f"127.0.0.1:{port}", 1).startswith("reached")
    text = metrics([{"target": "10.0.0.1:22", "place": "host", "outcome": "reached: connected"},
                    {"target": "10.0.0.1:22", "place": "sandbox:m", "outcome": "blocked: ENETUNREACH"}], 1.0)
    assert 'citadel_isolation_reachable{target="10.0.0.1:22",place="host"} 1' in text
    assert 'citadel_isolation_reachable{target="10.0.0.1:22",place="sandbox:m"} 0' in text


def test_a_failed_pip_wheel_is_named_and_leaves_no_wheelhouse(tmp_path):
    index = tmp_path / "empty-index"
    index.mkdir()
    settings = SimpleNamespace(package="no-such-dist-citadel==1.0", requirements=[], exclude=[],
                               index_url=index.as_uri())
    with pytest.raises(VllmError, match="pip wheel no-such-dist-citadel==1.0 failed"):
        ensure(settings, cache=tmp_path / "cache")
    assert list((tmp_path / "cache").iterdir()) == []
