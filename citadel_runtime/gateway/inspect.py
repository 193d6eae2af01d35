"""Read-only checks of the gateway on its host, for ``citadel audit`` (run as root).

    python3 -m citadel_runtime.gateway.inspect listeners   # only sshd, the gateway (and a GPU host's keyguard) beyond loopback
    python3 -m citadel_runtime.gateway.inspect tls         # TLS 1.0/1.1 refused; 1.2 only with forward-secret AEAD ciphers
    python3 -m citadel_runtime.gateway.inspect allowlist   # a probe of each blocked route and path trick is refused
    python3 -m citadel_runtime.gateway.inspect chain       # the audit log's HMAC chain verifies
    python3 -m citadel_runtime.gateway.inspect client-table  # the client table holds hashes only

Each prints its evidence and exits 0 (pass) or 1 (fail). Probes carry no key: what is
checked is that the gateway refuses them before authentication, so nothing reaches vLLM.
"""

from __future__ import annotations

import json
import os
import pwd
import re
import socket
import ssl
import sys
import warnings

from citadel_runtime.gateway.auditlog import verify_file
from citadel_runtime.gateway.server import read_audit_key
from citadel_runtime.layout import GATEWAY_CONFIG

# Suites a TLS 1.2 server must refuse: CBC (no AEAD) with either certificate type, and static
# RSA key exchange (no forward secrecy).
WEAK_TLS12 = ("ECDHE-ECDSA-AES128-SHA:ECDHE-ECDSA-AES256-SHA:ECDHE-ECDSA-AES128-SHA256:ECDHE-RSA-AES128-SHA:"
              "ECDHE-RSA-AES256-SHA:AES128-SHA:AES256-SHA:AES128-GCM-SHA256:AES256-GCM-SHA384:DHE-RSA-AES128-SHA")
warnings.filterwarnings("ignore", category=DeprecationWarning)  # probing TLS 1.0/1.1 is the point
BLOCKED = ["/invocations", "/tokenize", "/detokenize", "/metrics", "/docs", "/openapi.json", "/health", "/version",
           "/v1/load_lora_adapter", "/reset_prefix_cache", "/sleep", "/collective_rpc"]
TRICKS = ["/v1/%2e%2e/invocations", "/v1/..%2finvocations", "//invocations", "/V1/chat/completions",
          "/v1/chat/completions/", "/v1/./models", "/v1/models%2f..%2f..%2fmetrics", "/./invocations"]


def config() -> dict:
    with open(GATEWAY_CONFIG, encoding="utf-8") as handle:
        return json.load(handle)


def listen_address() -> tuple[str, int]:
    host, _, port = config()["listen"].rpartition(":")
    return ("127.0.0.1" if host in ("0.0.0.0", "::", "") else host), int(port)


def socket_owners() -> dict[str, tuple[str, str]]:
    """socket inode -> (user, command name) of the process holding it."""
    owners = {}
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            user = pwd.getpwuid(os.stat(f"/proc/{pid}").st_uid).pw_name
            with open(f"/proc/{pid}/comm", encoding="utf-8") as handle:
                comm = handle.read().strip()
            for fd in os.listdir(f"/proc/{pid}/fd"):
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
                if target.startswith("socket:["):
                    owners[target[8:-1]] = (user, comm)
        except (OSError, KeyError):
            continue
    return owners


def allowed(user: str, comm: str) -> str | None:
    if comm == "sshd" and user == "root":
        return "sshd"
    return {"citadel-gateway": "the gateway", "citadel-keyguard": "the keyguard of a GPU host"}.get(user)


def listeners() -> int:
    owners = socket_owners()
    bad = 0
    for table, state in (("tcp", "0A"), ("tcp6", "0A"), ("udp", "07"), ("udp6", "07")):
        try:
            with open(f"/proc/net/{table}", encoding="ascii") as handle:
                rows = handle.read().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            fields = row.split()
            if fields[3] != state:
                continue
            address, port = fields[1].split(":")
            if address.endswith("7F") or address == "00000000000000000000000001000000":
                continue  # 127.0.0.0/8 and ::1
            user, comm = owners.get(fields[9], ("?", "?"))
            why = allowed(user, comm)
            print(f"{table} port {int(port, 16)}: {comm} as {user}: {'allowed, ' + why if why else 'NOT ALLOWED'}")
            bad |= why is None
    return bad


def _handshake(version: ssl.TLSVersion, ciphers: str | None = None) -> str | None:
    host, port = listen_address()
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # what is offered, not who: no trust needed
    context.minimum_version = context.maximum_version = version
    if ciphers:
        context.set_ciphers(ciphers)
    try:
        with socket.create_connection((host, port), timeout=5) as raw, context.wrap_socket(raw) as tls:
            return tls.cipher()[0]
    except (ssl.SSLError, OSError):
        return None


def tls() -> int:
    bad = 0
    for version in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        try:
            got = _handshake(version, "ALL:@SECLEVEL=0")
        except ssl.SSLError:
            got = None
        print(f"{version.name}: {'ACCEPTED' if got else 'refused'}")
        bad |= got is not None
    modern = _handshake(ssl.TLSVersion.TLSv1_2)
    weak = _handshake(ssl.TLSVersion.TLSv1_2, WEAK_TLS12 + ":@SECLEVEL=0")
    print(f"TLSv1_2 default: {modern or 'refused'}; without forward-secret AEAD: {weak or 'refused'}")
    bad |= modern is None or not re.search("GCM|CHACHA20", modern) or weak is not None
    v13 = _handshake(ssl.TLSVersion.TLSv1_3)
    print(f"TLSv1_3: {v13 or 'refused'}")
    return bad


def _status(method: str, path: str) -> int | None:
    host, port = listen_address()
    context = ssl._create_unverified_context()  # noqa: SLF001 - a probe of our own listener
    request = f"{method} {path} HTTP/1.1\r\nHost: gateway\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
    try:
        with socket.create_connection((host, port), timeout=10) as raw, context.wrap_socket(raw) as tls:
            tls.sendall(request.encode())
            head = tls.recv(256).split(b"\r\n")[0].split(b" ")
            return int(head[1])
    except (OSError, ValueError, IndexError, ssl.SSLError):
        return None


def allowlist() -> int:
    bad = 0
    for path in BLOCKED + TRICKS:
        for method in ("GET", "POST"):
            status = _status(method, path)
            ok = status in (403, 404, 405)
            bad |= not ok
            if not ok or method == "POST":
                print(f"{method} {path}: {status}{'' if ok else ' NOT REFUSED'}")
    return bad


def chain() -> int:
    conf = config()
    try:
        verdict = verify_file(conf["audit_log"], read_audit_key(conf["audit_key"]))
    except FileNotFoundError:
        print("no audit log yet (no request served)")
        return 0
    print(f"{verdict.lines} record(s); " + ("chain verifies" if verdict.ok else "; ".join(verdict.problems[:5])))
    return 0 if verdict.ok else 1


def client_table() -> int:
    path = config()["client_keys"]
    with open(path, encoding="utf-8") as handle:
        doc = json.load(handle)
    bad = []
    for name, keys in (doc.get("clients") or {}).items():
        for slot_name in ("current", "previous"):
            slot = keys.get(slot_name) or {}
            if slot and ("value" in slot or not re.fullmatch(r"[0-9a-f]{64}", str(slot.get("sha256", "")))):
                bad.append(f"{name}.{slot_name}")
    clients = len(doc.get("clients") or {})
    print(f"{clients} client(s); " + (f"NOT hashed: {', '.join(bad)}" if bad else "every key stored as its SHA-256 only"))
    return 1 if bad else 0


CHECKS = {"listeners": listeners, "tls": tls, "allowlist": allowlist, "chain": chain, "client-table": client_table}

if __name__ == "__main__":
    if len(sys.argv) != 2 or sys.argv[1] not in CHECKS:
        sys.exit(f"usage: inspect {{{'|'.join(CHECKS)}}}")
    sys.exit(CHECKS[sys.argv[1]]())
