"""Fixtures of the adversarial tier: every test attacks a real gateway process on loopback.

The tier needs no root and no lab: the gateway is started as a host starts it, in front of a
recording stand-in model server (tests/gateway_harness.py). Tests are marked `adversarial`
by tests/conftest.py from this folder.
"""

from __future__ import annotations

import pytest

from tests.adversarial.harness import Gateway, RecordingUpstream


@pytest.fixture
def upstream():
    with RecordingUpstream() as server:
        yield server


@pytest.fixture
def gateway_with(tmp_path, upstream):
    """Start a gateway with given policies/config: ``gateway_with(policies={...}, config={...})``."""
    started: list[Gateway] = []

    def start(**kwargs) -> Gateway:
        kwargs.setdefault("upstream", upstream)
        workdir = tmp_path / f"gw{len(started)}"
        workdir.mkdir()
        gateway = Gateway(workdir, **kwargs).start()
        started.append(gateway)
        return gateway

    yield start
    for gateway in started:
        gateway.stop()


@pytest.fixture
def gateway(gateway_with):
    """A gateway with one client, `ward` (key ck_w), allowed model `tiny`, at most 8 tokens."""
    return gateway_with()
