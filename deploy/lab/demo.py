"""The demo's client: a key, the CA, one chat through the gateway, and what to do next.

``./demo.sh`` ends here (``citadel lab demo-client``). The lab inventory already gives a
client named ``demo`` a policy for the lab model (``inventory/lab.py``); this makes its key,
writes it 0600 into the demo's directory with the CA that signs the gateway's certificate,
sends one chat as proof and says how to send another. Run again, it keeps a key that still
works, and replaces one that was lost (the old key then lapses after the usual overlap).

Example::

    citadel lab demo-client -i inventory/lab.yaml --dir /var/lib/citadel-demo
"""

from __future__ import annotations

import datetime as dt
import http.client
import json
import shlex
import ssl
import time
from dataclasses import dataclass
from pathlib import Path

from citadel_runtime.layout import GATEWAY_AUDIT_LOG, GATEWAY_PORT
from deploy.lab.ssh import known_hosts_line
from deploy.secrets import client_keys
from deploy.secrets.store import Store
from deploy.vault.tls import write_private
from inventory.lab import DEMO_CLIENT

KEY_FILE = "demo-client.key"
CA_FILE = "citadel-ca.pem"
KNOWN_HOSTS_FILE = "known_hosts"
PROMPT = "Say hello to the ward."
# A new key reaches the gateway when its Vault agent next reads the client list (every 30 s).
FIRST_CHAT_SECONDS = 90.0
MAX_KEY_BYTES = 256  # a key file longer than any key we write is not ours: refused, never sent


@dataclass(frozen=True)
class Chat:
    status: int
    request_id: str
    answer: str  # the completion's text, or the gateway's error message


def key_path(directory: Path) -> Path:
    return directory / KEY_FILE


def read_key(path: Path) -> str | None:
    """The key in `path`, or None when there is none (an absent, empty or foreign file)."""
    try:
        raw = path.read_bytes()[: MAX_KEY_BYTES + 1]
    except FileNotFoundError:
        return None
    text = raw.decode("ascii", "replace").strip()
    if len(raw) > MAX_KEY_BYTES or not text.startswith(client_keys.PREFIX):
        return None
    return text


def ensure_key(store: Store, directory: Path, name: str = DEMO_CLIENT) -> str:
    """Make sure `directory` holds a working key for client `name`; what was done: kept, issued or rotated."""
    path = key_path(directory)
    clients = client_keys.read(store)
    present = read_key(path)
    if present is not None and client_keys.verify(clients, present) == name:
        return "kept"
    if name in clients.get("clients", {}):
        key, _ = client_keys.rotate(store, name, dt.timedelta(hours=1))
        done = "rotated"
    else:
        key, _ = client_keys.issue(store, name)
        done = "issued"
    write_private(path, (key.reveal() + "\n").encode())  # 0600 from the first byte, in a 0700 directory
    return done


def write_ca(pem: str, directory: Path) -> Path:
    """The CA that signs the gateway's certificate, for clients to verify it with (public)."""
    path = directory / CA_FILE
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    path.write_text(pem)
    path.chmod(0o644)
    return path


def chat_body(model: str) -> str:
    return json.dumps({"model": model, "messages": [{"role": "user", "content": PROMPT}], "max_tokens": 16})


def chat(address: str, ca: Path, key: str, model: str, timeout: float = 60) -> Chat:
    """One chat completion through the gateway, as any client sends it."""
    context = ssl.create_default_context(cafile=str(ca))
    connection = http.client.HTTPSConnection(address, GATEWAY_PORT, context=context, timeout=timeout)
    try:
        connection.request("POST", "/v1/chat/completions", body=chat_body(model),
                           headers={"Authorization": f"Bearer {key}", "Content-Type": "application/json"})
        response = connection.getresponse()
        body = response.read(1 << 20)
    finally:
        connection.close()
    try:
        doc = json.loads(body)
    except ValueError:
        doc = {}
    if response.status == 200:
        text = ((doc.get("choices") or [{}])[0].get("message") or {}).get("content", "")
    else:
        error = doc.get("error")
        text = error.get("message", "") if isinstance(error, dict) else str(error or body[:200])
    return Chat(response.status, response.getheader("X-Request-Id", "-"), text)


def first_chat(address: str, ca: Path, key: str, model: str, *, seconds: float = FIRST_CHAT_SECONDS,
               progress=None) -> Chat:
    """The first chat, asked again while the gateway does not know the key yet (401) or the model starts (503)."""
    deadline = time.monotonic() + seconds
    while True:
        try:
            result = chat(address, ca, key, model)
        except (OSError, ssl.SSLError) as exc:
            result = Chat(0, "-", f"{type(exc).__name__}: {exc}")
        if result.status not in (0, 401, 503) or time.monotonic() >= deadline:
            return result
        if progress:
            progress(f"the gateway answered {result.status or result.answer}; asking again (it reads new keys every 30 s)")
        time.sleep(3)


def write_known_hosts(directory: Path, address: str, port: int, host_key: str) -> Path:
    """The inventory's pinned host key as a known_hosts file, for the printed ssh (strict checking, no prompt)."""
    path = directory / KNOWN_HOSTS_FILE
    path.write_text(known_hosts_line(address, port, host_key))
    return path


def instructions(*, address: str, directory: Path, model: str, inventory: Path, host: str, ssh: list[str],
                 request_id: str, vault_dir: Path) -> str:
    """What the demo prints at the end: another request, the record, the audit, the teardown.

    `ssh`: the argv prefix that reaches the host (`deploy.lab.ssh.ssh_command` without the remote command).
    """
    key, ca = key_path(directory), directory / CA_FILE
    q = shlex.quote
    copy = directory / "audit.jsonl"
    return "\n".join([
        "Send another request (the key is read from its file, so it stays out of your shell history):",
        "",
        f"    curl --cacert {q(str(ca))} https://{address}/v1/chat/completions \\",
        f"        -H \"Authorization: Bearer $(cat {q(str(key))})\" -H 'Content-Type: application/json' \\",
        f"        -d {q(chat_body(model))}",
        "",
        f"Its record, one HMAC-chained line per request, is in {GATEWAY_AUDIT_LOG} on {host}:",
        f"    {shlex.join(ssh)} sudo cat {GATEWAY_AUDIT_LOG} > {q(str(copy))}",
        "and check its chain and read it, with the key from the demo's Vault:",
        f"    export BAO_CACERT={q(str(vault_dir / 'ca.pem'))} VAULT_TOKEN_FILE={q(str(vault_dir / 'root.token'))}",
        f"    citadel audit-log verify {q(str(copy))} -i {q(str(inventory))}",
        f"    citadel audit-log show {q(str(copy))} -i {q(str(inventory))} --request-id {request_id}",
        "Check every control on the hosts:",
        f"    citadel audit -i {q(str(inventory))}",
        "Take everything down (the lab leaves no process, mount, namespace or link behind):",
        f"    citadel lab down -i {q(str(inventory))} && citadel vault stop --dir {q(str(vault_dir))}",
        "and to forget the demo's Vault, its client key and its sealed model too:",
        f"    rm -rf {q(str(vault_dir))} {q(str(directory))}",
    ])
