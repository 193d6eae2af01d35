"""`citadel vault audit` against a real OpenBao server, with an auditor's least-privilege token.

Each control is seen passing on a bootstrapped server (and with rotated secrets), then failing
when the server is changed to violate it, and the run exits 1; with a token that may not
read what the checks need, the results are errors (exit 2), never passes.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from deploy.secrets import internal_key
from deploy.secrets.store import Store
from deploy.vault.bootstrap import bootstrap
from deploy.vault.policies import render
from deploy.vault.server import stop
from hardening.vault.controls import CONTROLS
from tests.lab.vaultutil import run_citadel, start_bootstrapped

AUDITOR_POLICY = Path(__file__).resolve().parents[2] / "hardening" / "vault" / "auditor.hcl"
MOUNTS = {"kv_mount": "citadel", "transit_mount": "citadel-transit", "pki_mount": "citadel-pki"}


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    server = start_bootstrapped(tmp_path_factory.mktemp("secrets-audit"))
    try:
        root = server["root"]
        root.sys.create_or_update_acl_policy("citadel-auditor", render(AUDITOR_POLICY.read_text(), **MOUNTS))
        auditor = root.auth.token.create(policies=["citadel-auditor"], ttl="30m", display_name="auditor")
        server["auditor"] = auditor["auth"]["client_token"]
        nobody = root.auth.token.create(policies=["default"], ttl="30m", display_name="nobody")
        server["nobody"] = nobody["auth"]["client_token"]
        yield server
    finally:
        stop(server["dir"])


def audit(s, token: str) -> tuple[int, dict[str, dict], str]:
    code, out, err, _ = run_citadel("vault", "audit", "-i", str(s["inventory"]), "--json", token=token)
    assert "Traceback" not in err, err
    return code, {r["id"]: r for r in json.loads(out)["results"]}, out + err


def test_a_freshly_bootstrapped_server_passes_every_control(s):
    # The bootstrap issues the first internal key (a rotation on record) and every host's
    # identity role: nothing is left for an operator to do by hand.
    code, results, text = audit(s, s["auditor"])
    assert code == 0, {i: r["evidence"] for i, r in results.items() if r["status"] != "pass"}
    assert set(results) == {c.id for c in CONTROLS}
    assert s["auditor"] not in text


def test_everything_passes_once_secrets_are_rotated(s):
    store = Store(s["root"], "citadel")
    internal_key.rotate(store, __import__("datetime").timedelta(hours=1))
    code, results, _ = audit(s, s["auditor"])
    assert code == 0, {i: r["evidence"] for i, r in results.items() if r["status"] != "pass"}
    assert "file/" in results["vault-audit-device"]["evidence"]
    assert "auditor" in results["vault-no-root-token"]["evidence"]


def test_each_drift_is_caught(s):
    root = s["root"]
    wide = render((Path(__file__).resolve().parents[2] / "deploy/vault/policies/citadel-gpu.hcl").read_text(), **MOUNTS)
    root.sys.create_or_update_acl_policy("citadel-gpu", wide + '\npath "citadel-transit/*" {\n  capabilities = ["update"]\n}\n')
    root.write("auth/cert/certs/gateway-gw-01", token_ttl="12h", token_max_ttl="24h", token_bound_cidrs=[],
               allowed_common_names=["gw-01", "gpu-01"])
    root.secrets.transit.update_key_configuration("model-signing", deletion_allowed=True, mount_point="citadel-transit")
    try:
        code, results, _ = audit(s, s["auditor"])
        assert code == 1
        assert "citadel-transit/*" in results["vault-policy-no-wildcards"]["evidence"]
        assert "token_ttl = 43200" in results["vault-host-identity-ttls"]["evidence"]
        assert "not only gw-01" in results["vault-host-identity-ttls"]["evidence"]
        assert "work from anywhere" in results["vault-host-identity-cidrs"]["evidence"]
        assert "model-signing has deletion_allowed=true" in results["vault-transit-keys-stay-in-vault"]["evidence"]
    finally:
        bootstrap(root, s["site"])
    assert audit(s, s["auditor"])[0] == 0  # the bootstrap put everything back


def test_root_token_fails_and_a_powerless_token_errors(s):
    code, results, text = audit(s, s["token"])
    assert results["vault-no-root-token"]["status"] == "fail" and code == 1
    assert s["token"] not in text
    code, results, text = audit(s, s["nobody"])
    assert code == 2
    assert results["vault-audit-device"]["status"] == "error"
    assert "auditor.hcl" in results["vault-audit-device"]["evidence"]
    assert not any(r["status"] == "pass" for i, r in results.items() if i not in ("vault-tls-only", "vault-no-root-token"))
