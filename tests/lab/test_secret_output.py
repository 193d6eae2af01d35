"""Secrets passed to operations never reach the output, at any verbosity.

pyinfra prints commands at -vv, their output at -vvv, file diffs with --diff, and exception
text on failure; none of those may carry a secret. The test's secret goes through Citadel's
`secret_file` operation (success and failure paths) and everything written to this
process's stdout/stderr and to pyinfra's logger is scanned for it.
"""

from __future__ import annotations

import io
import logging
import secrets as pysecrets

import pytest
from pyinfra.api import deploy
from pyinfra.operations import server

from deploy.redaction import Secret
from deploy.runner import configure_logging, run_deploy
from inventory.loader import load_inventory
from roles import Role
from roles.ops.secrets import secret_file
from tests.lab.sshutil import ssh

SECRET_PATH = "/etc/citadel/test-secret"


def make_role(value: Secret, fail: bool) -> Role:
    @deploy("Secret test role")
    def apply() -> None:
        secret_file(name="Test secret", path=SECRET_PATH, secret=value, user="root", group="root", mode="0600")
        if fail:
            # A failing command whose text and output would both carry the secret unredacted.
            server.shell(name="Fail loudly", commands=[f"echo {value.reveal()} >&2; exit 3"])

    return Role(name="secret-test", summary="test", groups=(), apply=apply)


@pytest.mark.parametrize("verbosity", [0, 1, 2, 3])
@pytest.mark.parametrize("fail", [False, True], ids=["ok", "failing"])
def test_secret_never_printed(lab, lab_inventory_file, capfd, verbosity, fail):
    value = Secret("citadel-test-" + pysecrets.token_hex(16))
    log = io.StringIO()
    configure_logging(verbosity, logging.StreamHandler(log))
    report = run_deploy(
        load_inventory(lab_inventory_file), [make_role(value, fail)], verbosity=verbosity, diff=True
    )
    captured = capfd.readouterr()
    everything = captured.out + captured.err + log.getvalue() + repr(report.as_dict())
    assert value.reveal() not in everything
    assert report.ok is (not fail)
    if verbosity >= 2:
        assert log.getvalue(), "verbose runs must still say something"

    host = lab.hosts[0]
    stat = ssh(lab, host, f"sudo stat -c '%U %G %a' {SECRET_PATH}").stdout.split()
    assert stat == ["root", "root", "600"]
    # Compare digests rather than print the value anywhere in this test's output.
    import hashlib

    remote = ssh(lab, host, f"sudo sha256sum {SECRET_PATH}").stdout.split()[0]
    assert remote == hashlib.sha256(value.reveal().encode()).hexdigest()
    assert ssh(lab, host, "ls -A ~/.citadel-upload").stdout.strip() == ""


def test_secret_file_is_idempotent(lab, lab_inventory_file):
    value = Secret("citadel-test-" + pysecrets.token_hex(16))
    site = load_inventory(lab_inventory_file)
    first = run_deploy(site, [make_role(value, False)])
    assert first.ok and all(o.changed == 1 for o in first.hosts.values())
    second = run_deploy(site, [make_role(value, False)])
    assert second.ok and all(o.changed == 0 for o in second.hosts.values())
