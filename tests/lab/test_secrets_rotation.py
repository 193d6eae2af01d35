"""`citadel secrets` against a real OpenBao server: overlap, retirement, failure midway, no leaks.

Hosts' side of each check is done the way hosts do it: logged in with their own identity
certificate through cert auth (gpu-01 and gw-01 are at 127.0.0.1 here) and reading the KV documents their policy allows. The
"Vault stopped midway" tests stop the real server between two steps (through the
rotation's progress callback) and start it again from its stored unseal key.
"""

from __future__ import annotations

import base64
import datetime as dt
import json

import hvac
import pytest

from deploy.secrets import client_keys, internal_key, overlap, transit
from deploy.secrets.store import Store
from deploy.vault import VaultError
from deploy.vault.server import serve, stop
from tests.lab.vaultutil import cert_login, host_client, run_citadel, start_bootstrapped

HOUR = dt.timedelta(hours=1)
TRANSIT = "citadel-transit"


@pytest.fixture(scope="module")
def s(tmp_path_factory):
    base = tmp_path_factory.mktemp("secrets-rotation")
    server = start_bootstrapped(base)
    try:
        server["store"] = Store(server["root"], "citadel")
        server["leaks"] = []  # (label, value) of every secret value seen, scanned at the end
        yield server
    finally:
        stop(server["dir"])


def cli(s, *args, **kwargs):
    return run_citadel(*args, "-i", str(s["inventory"]), token=s["token"], **kwargs)


def host_read(s, group: str, path: str) -> dict:
    """What a host of `group` reads at `path`, through its own identity's login."""
    client = host_client(s, group)
    return client.secrets.kv.v2.read_secret_version(path, mount_point="citadel", raise_on_deleted_version=True)["data"]["data"]


def restart(s) -> None:
    """Start the stopped server again (same directory and port), unsealed from its stored key."""
    serve(s["dir"], s["port"])
    s["root"].sys.read_health_status(method="GET")


def test_internal_key_old_and_new_overlap_then_old_is_rejected(s):
    store = s["store"]
    assert internal_key.read_pair(store)["current"]["version"] == 1  # made by the bootstrap
    old = host_read(s, "gpu", "gpu/internal-api-key")["current"]["value"]
    second = internal_key.rotate(store, HOUR)
    assert second.phase == "overlap" and (second.version, second.previous_version) == (2, 1)
    gpu_doc = host_read(s, "gpu", "gpu/internal-api-key")
    gateway_doc = host_read(s, "gateway", "gateway/internal-api-key")
    new = gateway_doc["current"]["value"]
    assert new != old and gpu_doc == gateway_doc
    now = dt.datetime.now(dt.UTC)
    assert overlap.match(gpu_doc, old, now)["version"] == 1  # a request with the old key still works
    assert overlap.match(gpu_doc, new, now)["version"] == 2
    with pytest.raises(VaultError, match="--finish"):  # no second rotation while one overlaps
        internal_key.rotate(store, HOUR)
    done = internal_key.finish(store)
    assert done.phase == "done"
    gpu_doc = host_read(s, "gpu", "gpu/internal-api-key")
    assert overlap.match(gpu_doc, old, now) is None and overlap.match(gpu_doc, new, now)["version"] == 2
    s["leaks"] += [("internal key v1", old), ("internal key v2", new)]


def test_client_key_issue_rotate_finish_revoke_through_the_cli(s):
    code, out, err, _ = cli(s, "secrets", "issue-client", "radiology", "--json")
    assert code == 0, err
    issued = json.loads(out)
    old = issued["key"]
    assert old.startswith("ck_") and issued["version"] == 1
    doc = host_read(s, "gateway", "gateway/client-keys")  # what the gateway sees
    assert old not in json.dumps(doc) and overlap.digest(old) in json.dumps(doc)
    assert client_keys.verify(doc, old) == "radiology"

    code, out, err, _ = cli(s, "secrets", "rotate", "client-key", "radiology", "--grace", "30m")
    assert code == 0, err
    new = out.strip().splitlines()[-1]
    assert new.startswith("ck_") and "previous key is still accepted until" in out
    doc = host_read(s, "gateway", "gateway/client-keys")
    assert client_keys.verify(doc, old) == "radiology" and client_keys.verify(doc, new) == "radiology"
    later = dt.datetime.now(dt.UTC) + dt.timedelta(minutes=31)
    assert client_keys.verify(doc, old, later) is None  # the grace expiry alone retires it

    code, out, err, _ = cli(s, "secrets", "rotate", "client-key", "radiology", "--finish")
    assert code == 0, err
    doc = host_read(s, "gateway", "gateway/client-keys")
    assert client_keys.verify(doc, old) is None and client_keys.verify(doc, new) == "radiology"

    code, out, err, _ = cli(s, "secrets", "revoke-client", "radiology")
    assert code == 0, err
    assert client_keys.verify(host_read(s, "gateway", "gateway/client-keys"), new) is None
    s["leaks"] += [("client key v1", old), ("client key v2", new)]


def test_transit_rotation_rewraps_and_retires_the_old_version(s):
    store = s["store"]
    wrapped = {m: transit.seal_data_key(store, TRANSIT, m) for m in ("llama-3-8b", "mistral-7b", "medgemma")}
    gpu = host_client(s, "gpu")

    def unwrap(ciphertext):
        return gpu.secrets.transit.decrypt_data("model-data", ciphertext, mount_point=TRANSIT)["data"]["plaintext"]

    plaintexts = {m: unwrap(c) for m, c in wrapped.items()}
    result = transit.rotate(store, TRANSIT, "model-data")
    assert result.phase == "overlap" and result.version == 2
    stored = {m: store.read(f"gpu/models/{m}")[0]["wrapped_key"] for m in wrapped}
    assert all(transit.ciphertext_version(c) == 2 for c in stored.values())
    for model, old in wrapped.items():  # during the overlap, old and new both decrypt
        assert unwrap(old) == plaintexts[model] == unwrap(stored[model])
    assert transit.finish(store, TRANSIT, "model-data").phase == "done"
    assert s["root"].secrets.transit.read_key("model-data", mount_point=TRANSIT)["data"]["min_decryption_version"] == 2
    for model, old in wrapped.items():
        with pytest.raises(hvac.exceptions.InvalidRequest):
            unwrap(old)  # the old version is now refused
        assert unwrap(stored[model]) == plaintexts[model]
    s["leaks"] += [(f"data key {m}", base64.b64decode(p).hex()) for m, p in plaintexts.items()]
    s["leaks"] += [(f"data key {m} b64", p) for m, p in plaintexts.items()]


def issue(s, role: str, host: str) -> tuple[str, str]:
    """(key, certificate) PEMs of a new certificate from PKI role `role` for `host`."""
    data = s["root"].write_data(f"citadel-pki/issue/{role}", data={"common_name": host, "ttl": "5m"})["data"]
    return data["private_key"], data["certificate"]


def test_a_host_logs_in_only_with_its_own_identity_and_revocation_cuts_it_off(s):
    gpu = host_client(s, "gpu")  # gpu-01's agent, as it logs in after any reboot
    assert gpu.auth.token.lookup_self()["data"]["policies"] == ["citadel-gpu", "default"]
    # Nobody else's certificate opens gpu-01's role: not gpu-02's identity, not gpu-01's own
    # service certificate (readable by its keyguard), not a gateway identity.
    for role, host in (("agent-gpu", "gpu-02"), ("host", "gpu-01")):
        with pytest.raises(hvac.exceptions.VaultError):
            cert_login(s, "gpu-gpu-01", *issue(s, role, host))
    with pytest.raises(hvac.exceptions.VaultError):
        cert_login(s, "gateway-gpu-01", *issue(s, "agent-gpu", "gpu-01"))  # no such role: gpu-01 is no gateway
    # gpu-02's own identity, used from here (not its address), is refused too.
    with pytest.raises(hvac.exceptions.VaultError):
        cert_login(s, "gpu-gpu-02", *issue(s, "agent-gpu", "gpu-02"))

    code, out, err, _ = cli(s, "secrets", "revoke-host", "gpu-01", "--json")
    assert code == 0, err
    revoked = json.loads(out)
    assert revoked["roles_deleted"] == ["gpu-gpu-01"] and revoked["tokens_revoked"] >= 1
    assert revoked["certificates_revoked"] >= 2  # the identities issued above (and the service one)
    with pytest.raises(hvac.exceptions.Forbidden):
        gpu.auth.token.lookup_self()  # its live token is gone at once
    with pytest.raises(hvac.exceptions.VaultError):
        host_client(s, "gpu")  # and it cannot log in again, with a fresh certificate or any other
    crl = s["root"].read("citadel-pki/cert/crl")["data"]["certificate"]
    assert "BEGIN X509 CRL" in crl
    # A bootstrap (say, the next deploy's) does not bring it back; status names it.
    code, out, err, _ = cli(s, "vault", "bootstrap", "--json")
    assert code == 0 and "host gpu-01 is revoked" in out, err
    assert s["root"].read("auth/cert/certs/gpu-gpu-01") is None
    code, out, err, _ = cli(s, "secrets", "status", "--json")
    row = {(r["kind"], r["name"]): r for r in json.loads(out)["secrets"]}[("host-identity", "gpu")]
    assert row["phase"] == "revoked" and "revoked: gpu-01" in row["detail"]
    again = json.loads(cli(s, "secrets", "revoke-host", "gpu-01", "--json")[1])
    assert again["already_revoked"] and again["roles_deleted"] == []  # safe to repeat

    code, out, err, _ = cli(s, "secrets", "readmit-host", "gpu-01")
    assert code == 0 and "readmitted" in out, err
    host_client(s, "gpu").auth.token.lookup_self()  # a new identity logs in again
    code, _, err, _ = cli(s, "secrets", "revoke-host", "nobody")
    assert code == 2 and "host 'nobody' is not in the inventory" in err


def test_vault_stopped_midway_through_a_transit_rotation(s):
    """The server stops after the key rotated, before any rewrap: clear error, old works, re-run completes."""
    store = s["store"]
    before = {m: store.read(f"gpu/models/{m}")[0]["wrapped_key"] for m in transit.wrapped_keys(store)}

    def stop_after_rotate(step: str) -> None:
        if step.startswith("rotated"):
            stop(s["dir"])

    with pytest.raises(VaultError) as failed:
        transit.rotate(store, TRANSIT, "model-data", progress=stop_after_rotate)
    message = str(failed.value)
    assert failed.value.exit_code == 1
    assert "transit key citadel-transit/model-data" in message and "old secret still works" in message
    assert "re-run `citadel secrets rotate transit-key model-data`" in message
    restart(s)
    assert store.state("transit-key", "model-data")[0]["phase"] == "rotating"
    gpu = host_client(s, "gpu")
    for ciphertext in before.values():  # not rewrapped yet, and still decrypts
        gpu.secrets.transit.decrypt_data("model-data", ciphertext, mount_point=TRANSIT)
    code, out, err, _ = cli(s, "secrets", "rotate", "transit-key", "model-data", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["phase"] == "overlap" and result["version"] == 3
    assert not any(step.startswith("rotated") for step in result["steps"])  # resumed: not rotated twice
    assert s["root"].secrets.transit.read_key("model-data", mount_point=TRANSIT)["data"]["latest_version"] == 3
    assert all(transit.ciphertext_version(store.read(f"gpu/models/{m}")[0]["wrapped_key"]) == 3 for m in before)
    code, out, err, _ = cli(s, "secrets", "rotate", "transit-key", "model-data", "--finish")
    assert code == 0, err


def test_vault_stopped_midway_through_an_internal_key_rotation(s):
    """Stopped after the GPU side got the new key, before the gateway did: both old pairs still match."""
    store = s["store"]
    old = host_read(s, "gateway", "gateway/internal-api-key")["current"]["value"]

    def stop_after_gpu(step: str) -> None:
        if "gpu/internal-api-key" in step:
            stop(s["dir"])

    code_path = "citadel secrets rotate internal-api-key"
    with pytest.raises(VaultError, match=f"re-run `{code_path}`"):
        internal_key.rotate(store, HOUR, progress=stop_after_gpu)
    # Vault down: the CLI says so, names the secret, exits 1, nothing half-applied is claimed.
    code, out, err, _ = cli(s, "secrets", "rotate", "internal-api-key")
    assert code == 1 and "cannot reach Vault" in err and "Traceback" not in err
    restart(s)
    now = dt.datetime.now(dt.UTC)
    assert host_read(s, "gateway", "gateway/internal-api-key")["current"]["value"] == old
    assert overlap.match(host_read(s, "gpu", "gpu/internal-api-key"), old, now) is not None
    code, out, err, _ = cli(s, "secrets", "rotate", "internal-api-key", "--json")
    assert code == 0, err
    assert json.loads(out)["version"] == 3
    gpu_doc, gateway_doc = host_read(s, "gpu", "gpu/internal-api-key"), host_read(s, "gateway", "gateway/internal-api-key")
    assert gpu_doc == gateway_doc and gateway_doc["current"]["version"] == 3
    assert overlap.match(gpu_doc, old, now)["version"] == 2
    s["leaks"] += [("internal key v3", gateway_doc["current"]["value"])]


def test_status_shows_every_secret_and_the_last_rotation(s):
    code, out, err, _ = cli(s, "secrets", "status", "--json")
    report = json.loads(out)
    rows = {(r["kind"], r["name"]): r for r in report["secrets"]}
    assert rows[("internal-api-key", "vllm")]["phase"] == "overlap"
    assert rows[("internal-api-key", "vllm")]["hosts"] == ["gpu-01", "gpu-02", "gw-01"]
    assert rows[("transit-key", "model-data")]["version"] == 3
    assert rows[("transit-key", "model-data")]["last_rotation"]["action"] == "finish"
    assert rows[("transit-key", "model-data")]["last_rotation"]["by"] == "root"
    # Identities: every host got one above (host_client logs in as its agent does).
    assert rows[("host-identity", "gpu")]["expires"] and rows[("host-identity", "gateway")]["phase"] == "current"
    assert rows[("tls-ca", "citadel-root")]["expires"]
    # No host runs an agent here: only the certificate the identity test issued by hand exists.
    assert rows[("tls-cert", "gpu")]["phase"] == "missing" and "for gpu-02" in rows[("tls-cert", "gpu")]["detail"]
    assert rows[("tls-cert", "gateway")]["version"] == 1  # the counter the bootstrap made
    # Both groups miss host certificates.
    assert code == 1 and report["attention"] == 2
    trail = s["store"].trail()
    assert {"rotate", "finish", "issue", "revoke"} <= {t["action"] for t in trail}
    assert all(t["by"]["display_name"] == "root" and t["at"] for t in trail)
    code, out, err, _ = cli(s, "secrets", "status")
    assert "internal-api-key" in out and "model-data" in out


def test_bad_input_is_named_and_changes_nothing(s):
    cases = [
        (("secrets", "rotate", "client-key"), "needs a NAME"),
        (("secrets", "rotate", "internal-api-key", "extra"), "takes no NAME"),
        (("secrets", "rotate", "transit-key", "nope"), "Citadel's keys are model-data"),
        (("secrets", "revoke-host", "db"), "host 'db' is not in the inventory"),
        (("secrets", "rotate", "tls-cert", "db"), "Citadel's groups are gpu, gateway"),
        (("secrets", "rotate", "tls-cert"), "needs a NAME"),
        (("secrets", "revoke-client", "nobody"), "no client named nobody"),
        (("secrets", "issue-client", "Bad Name!"), "client name 'Bad Name!'"),
        (("secrets", "rotate", "internal-api-key"), "still accepted until"),  # overlap open
        (("secrets", "rotate", "client-key", "x", "--grace", "soon"), "--grace 'soon'"),
    ]
    trail = len(s["store"].trail())
    for args, expected in cases:
        code, out, err, _ = cli(s, *args)
        assert code == 2 and expected in err and "Traceback" not in err, (args, err)
    assert len(s["store"].trail()) == trail


def test_no_secret_value_in_output_logs_or_argv(s):
    """Every CLI command, success and failure: no known secret in stdout/stderr/argv/server logs."""
    store = s["store"]
    gateway = host_client(s, "gateway")
    secrets = list(s["leaks"]) + [("root token", s["token"]), ("gateway host token", gateway.token)]
    values = [v for _, v in secrets]
    runs = [
        ("secrets", "status"), ("secrets", "status", "--json"),
        ("secrets", "issue-client", "scan"),
        ("secrets", "rotate", "client-key", "scan", "--json"),
        ("secrets", "revoke-host", "gpu-02"),
        ("secrets", "readmit-host", "gpu-02"),
        ("secrets", "rotate", "internal-api-key", "--finish"),
        ("secrets", "rotate", "internal-api-key"),
        ("secrets", "rotate", "transit-key", "audit-chain", "--json"),
        ("vault", "audit", "--json"),
    ]
    outputs = []
    for args in runs:
        code, out, err, in_argv = cli(s, *args, watch_argv=values)
        assert code in (0, 1), (args, err)
        assert not in_argv, args
        for label, value in secrets:
            assert value not in out + err, f"{label} appeared in the output of {args}"
        outputs.append((args, out, err))
    # The new client keys are printed exactly once (stdout), by the command that made them.
    issued = outputs[2][1].strip().splitlines()[-1]
    rotated = json.loads(outputs[3][1])["key"]
    for key in (issued, rotated):
        assert key.startswith("ck_")
        assert sum(key in out + err for _, out, err in outputs) == 1
        assert key not in json.dumps(store.read("gateway/client-keys")[0])
    values += [issued, rotated,
               store.read("gpu/internal-api-key")[0]["current"]["value"]]
    # Vault down: the error paths must not echo anything either.
    stop(s["dir"])
    try:
        for args in (("secrets", "status"), ("secrets", "rotate", "internal-api-key", "--finish")):
            code, out, err, in_argv = cli(s, *args, watch_argv=values)
            assert code == 1 and "cannot reach Vault" in err and not in_argv
            assert not any(v in out + err for v in values)
    finally:
        restart(s)
    # The server's own audit log and log HMAC what they record: no plaintext secret there.
    logs = s["vault"].audit_log.read_text() + (s["dir"] / "server.log").read_text()
    assert not [v for v in values if v in logs]
