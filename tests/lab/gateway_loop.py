"""A gateway's requests to the keyguard, run on a lab host (Debian's python3, stdlib only).

It does what the gateway does: before each request it reads the internal key document
its Vault agent rendered, presents the current key, and on a 401 retries once with the
previous key (the GPU host may not have the new key yet); on a 421 (the keyguard reloaded
during the handshake) it asks once more on a new connection. Each request is a new TLS
connection verified against Citadel's PKI CA, so a rotated certificate is seen at once.

    sudo python3 gateway_loop.py loop ADDRESS STOPFILE   # until STOPFILE exists; JSON summary
    sudo python3 gateway_loop.py once ADDRESS [CERT]     # the key on stdin; prints the status

The summary holds counts, key versions and certificate serials, never a key.
"""

import http.client
import json
import os
import ssl
import sys
import time

KEYS = "/etc/citadel/secrets/gateway/internal-api-key.json"
CA = "/etc/citadel/pki-ca.pem"
CERTIFICATE = "/etc/citadel/secrets/gateway/tls.pem"  # this host's gateway certificate and key
PORT = 8443  # citadel_runtime.layout.KEYGUARD_PORT (a copy: this file runs alone on a host)


def request(address: str, key: str, certificate: str = CERTIFICATE) -> tuple[int, dict, str]:
    context = ssl.create_default_context(cafile=CA)
    context.load_cert_chain(certificate)  # mutual TLS: the keyguard only lets gateway hosts in
    connection = http.client.HTTPSConnection(address, PORT, context=context, timeout=10)
    try:
        connection.request("GET", "/citadel/whoami", headers={"Authorization": f"Bearer {key}"})
        # Before the answer: a refusal closes the connection (Connection: close), and with it the socket.
        serial = connection.sock.getpeercert()["serialNumber"]
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    return response.status, (json.loads(body) if response.status == 200 else {}), serial


def loop(address: str, stop: str) -> dict:
    stats = {"ok": 0, "failed": 0, "retried": 0, "reconnected": 0, "versions": [], "serials": [], "errors": []}
    while not os.path.exists(stop):
        with open(KEYS) as handle:
            doc = json.load(handle)
        keys = [doc["current"]["value"]] + ([doc["previous"]["value"]] if doc.get("previous") else [])
        for attempt, key in enumerate(keys):
            try:
                status, body, serial = request(address, key)
                if status == 421:  # opened before a reload of the keyguard: once more, as the gateway does
                    stats["reconnected"] += 1
                    status, body, serial = request(address, key)
            except (OSError, ssl.SSLError) as exc:
                stats["failed"] += 1
                stats["errors"].append(f"{type(exc).__name__}: {exc}"[:200])
                break
            if status == 200:
                stats["ok"] += 1
                for name, value in (("versions", body["key_version"]), ("serials", serial)):
                    if value not in stats[name]:
                        stats[name].append(value)
                break
            if status == 401 and attempt + 1 < len(keys):
                stats["retried"] += 1
                continue
            stats["failed"] += 1
            stats["errors"].append(f"HTTP {status}")
            break
        time.sleep(0.05)
    return stats


def main() -> int:
    if sys.argv[1] == "loop":
        print(json.dumps(loop(sys.argv[2], sys.argv[3])))
    else:
        print(request(sys.argv[2], sys.stdin.readline().strip(), *sys.argv[3:4])[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
