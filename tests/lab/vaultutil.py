"""Helpers for the OpenBao tests: free ports, the embedded server, a test inventory."""

from __future__ import annotations

import random
import socket
from pathlib import Path

import pytest
import yaml

HOST_KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHk1kKmvSbq3oL0tmNxMq7eE8lRk9l0nqYy4m1qVw2aa"


def free_port_pair() -> int:
    """A port P on 127.0.0.1 with P and P+1 free (the server uses P+1 for its cluster port)."""
    # Below Linux's ephemeral range (32768-60999), so no outgoing connection takes the port
    # between this probe and the server's bind.
    for _ in range(200):
        port = random.randrange(20000, 32000)
        try:
            for candidate in (port, port + 1):
                with socket.socket() as probe:
                    probe.bind(("127.0.0.1", candidate))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of ports on 127.0.0.1")


def require_bao() -> None:
    from deploy.vault import VaultError
    from deploy.vault.server import bao_binary

    try:
        bao_binary()
    except VaultError as exc:
        pytest.fail(f"{exc} (the OpenBao tests need the real server)", pytrace=False)


def bao_processes(config: Path) -> list[int]:
    """Pids of live (non-zombie) processes whose argv names `config`."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except OSError:
            continue
        if f"-config={config}".encode() in argv and state != "Z":
            found.append(int(proc.name))
    return found


def all_cmdlines() -> list[bytes]:
    lines = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                lines.append((proc / "cmdline").read_bytes())
            except OSError:
                pass
    return lines


def write_inventory(path: Path, address: str, ca_file: Path, gateway_address: str = "127.0.0.1") -> Path:
    """A small site in the style of inventory/example-hospital.yaml, pointing at the test server."""
    site = {
        "site": "vault-test",
        "vault": {"address": address, "ca_file": str(ca_file), "flavor": "openbao"},
        "hosts": {
            "gpu-01": {"address": "127.0.0.1", "groups": ["gpu"], "ssh": {"host_key": HOST_KEY}},
            "gpu-02": {"address": "10.20.1.12", "groups": ["gpu"], "ssh": {"host_key": HOST_KEY}},
            "gw-01": {"address": gateway_address, "groups": ["gateway"], "ssh": {"port": 2222, "host_key": HOST_KEY}},
        },
    }
    path.write_text(yaml.safe_dump(site, sort_keys=False))
    return path


def start_bootstrapped(base: Path, port: int | None = None) -> dict:
    """A fresh embedded server under `base`, bootstrapped for a test inventory.

    Returns the server, its root token, a root client, the site and its inventory file;
    the caller stops it with ``deploy.vault.server.stop(result["dir"])``.
    """
    from deploy.vault.bootstrap import bootstrap
    from deploy.vault.client import connect, resolve
    from deploy.vault.server import serve
    from inventory.loader import load_inventory

    require_bao()
    directory = base / "vault"
    port = port or free_port_pair()
    embedded = serve(directory, port)
    token = embedded.token_file.read_text().strip()
    inventory = write_inventory(base / "site.yaml", embedded.address, embedded.ca_file)
    site = load_inventory(inventory)
    root = connect(resolve(site.vault, env={"BAO_TOKEN": token}))
    bootstrap(root, site)
    return {"vault": embedded, "dir": directory, "port": port, "token": token, "root": root, "site": site,
            "inventory": inventory, "base": base}


def run_citadel(*args: str, token: str | None, extra_env: dict | None = None, timeout: float = 120,
                watch_argv: list[str] | None = None):
    """Run `python -m deploy.cli ARGS` with the token in the environment (never argv).

    Returns (returncode, stdout, stderr, values of `watch_argv` seen in any process's argv
    while it ran).
    """
    import os
    import subprocess
    import sys
    import time

    repo = Path(__file__).resolve().parents[2]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "BAO_"))}
    if token:
        env["BAO_TOKEN"] = token
    env.update(extra_env or {})
    process = subprocess.Popen([sys.executable, "-m", "deploy.cli", *args], stdout=subprocess.PIPE,
                               stderr=subprocess.PIPE, text=True, cwd=repo, env=env)
    seen: set[str] = set()
    deadline = time.monotonic() + timeout
    while watch_argv and process.poll() is None and time.monotonic() < deadline:
        lines = all_cmdlines()
        seen.update(v for v in watch_argv if any(v.encode() in line for line in lines))
        time.sleep(0.02)
    stdout, stderr = process.communicate(timeout=timeout)
    return process.returncode, stdout, stderr, seen


HOST_OF_GROUP = {"gpu": "gpu-01", "gateway": "gw-01"}  # the test inventory's hosts at 127.0.0.1


def host_client(s: dict, group: str, host: str | None = None):
    """A client logged in as a host's agent does: a new identity from PKI, then cert auth.

    The test inventory's `gpu-01` and `gw-01` are at 127.0.0.1, so their tokens work from here.
    """
    from deploy.vault.identity import agent_pki_role, identity_role

    host = host or HOST_OF_GROUP[group]
    issued = s["root"].write_data(f"{s['site'].vault.pki_mount}/issue/{agent_pki_role(group)}",
                                  data={"common_name": host, "ttl": "10m"})["data"]
    return cert_login(s, identity_role(group, host), issued["private_key"], issued["certificate"])


def cert_login(s: dict, role_name: str, key: str, certificate: str):
    """A client logged in through cert auth role `role_name`, presenting this key and certificate."""
    import hvac

    pem = Path(s["base"]) / f"login-{role_name}.pem"
    pem.touch(mode=0o600)
    pem.write_text(key + "\n" + certificate + "\n")
    client = hvac.Client(url=s["vault"].address, verify=str(s["vault"].ca_file), cert=(str(pem), str(pem)))
    client.token = client.write_data("auth/cert/login", data={"name": role_name})["auth"]["client_token"]
    return client


def start_for_lab(lab, base: Path, edit=None) -> dict:
    """An embedded server the lab hosts reach (on the lab's Vault address), bootstrapped for
    the lab's inventory, which `edit(data)` may amend first (models, say).

    Returns the server's directory and port, its root token and client, the site and its
    inventory file; the caller stops it with ``deploy.vault.server.stop(result["dir"])``.
    """
    from deploy.vault.bootstrap import bootstrap
    from deploy.vault.client import connect, resolve
    from deploy.vault.server import serve
    from inventory.lab import lab_inventory
    from inventory.loader import load_inventory

    require_bao()
    port = free_port_pair()
    vault = serve(base / "vault", port, (lab.vault_address,))
    data = lab_inventory(lab)
    data["vault"] = {"address": f"https://{lab.vault_address}:{port}", "ca_file": str(vault.ca_file), "flavor": "openbao"}
    if edit:
        edit(data)
    inventory = base / "site.yaml"
    inventory.write_text(yaml.safe_dump(data, sort_keys=False))
    site = load_inventory(inventory)
    token = vault.token_file.read_text().strip()
    root = connect(resolve(site.vault, env={"BAO_TOKEN": token}))
    bootstrap(root, site)
    return {"dir": base / "vault", "port": port, "token": token, "root": root, "site": site, "inventory": inventory}
