"""Worst-case prompts for the PHI guard, sent back to back by a process of their own.

Used by the adversarial tier (loopback, a stand-in model server) and the vllm tier (a lab
host, the real vLLM) to show that one client's largest, slowest-to-scan bodies do not delay
another client's requests. The attacker is a separate Python process (``start``), so it
never shares an interpreter lock with the client that measures.

Example::

    attacker = start("127.0.0.1", 8443, ca_file, seconds=20, keys={"detect": "ck_d"}, model="bulk")
    ...  # measure another client meanwhile
    print(finish(attacker))  # {"sent": 31, "statuses": {"200": 31}}
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

# Shapes that make pattern matchers work hardest: the old e-mail pattern's quadratic case,
# and runs of what each pattern starts on (digits, separators, '@', titles, labels), some
# with zero-width and combining characters, which force Unicode normalisation.
SHAPES = ("a.", "a@", "1-", "1 ", "12/", "Dr. Ab ", "patient: Ab ", "5\u200b", "a\u0301", "+1 ", "MRN ")
# Seeds that, repeated, are each pattern's hardest input (what the PHI guard's linear-time
# tests and bench/phi_bench.py time): starts of matches that never complete.
ADVERSARIAL = ["a.", "a@", "a.a.a.a.a.a.a.a@", "a" * 80 + "@", "1-", "5", "5 ", "1.", "1/", "+1", "Dr. ", "Mr. Aa ",
               "a", "Aaaa ", " ", ".", "\n", "a1.@-: Dr. ", "member ", "patient :  ", "12 Oak ", "March 3, ",
               "9", "age ", "5\u200b", "５－", "\u0301\u0316", "\u0f73"]
BODY_LIMIT = 1 << 20  # the clients' max_body_bytes (the default): the largest body they may send



def repeated(seed: str, size: int) -> str:
    """`seed` over and over, cut to `size` characters: the shape of a worst-case input."""
    return (seed * (size // len(seed) + 1))[:size]


def cpu_seconds(work, *args) -> float:
    """CPU seconds of this process for `work(*args)`: its cost, whatever else the machine is doing."""
    started = time.process_time()
    work(*args)
    return time.process_time() - started


ATTACKER = r"""
import http.client, json, ssl, sys, time
host, port, ca, seconds = sys.argv[1], int(sys.argv[2]), sys.argv[3], float(sys.argv[4])
model, shapes, limit = sys.argv[5], json.loads(sys.argv[6]), int(sys.argv[7])
keys = json.loads(sys.stdin.readline())  # client keys: never in argv, where /proc/*/cmdline shows them
bodies = []
for shape in shapes:
    body = {"model": model, "messages": [{"role": "user", "content": ""}], "max_tokens": 1}
    room = limit - len(json.dumps(body).encode())
    unit = len(json.dumps(shape).encode()) - 2  # the shape's size as JSON escapes it
    body["messages"][0]["content"] = shape * (room // unit)
    bodies.append(json.dumps(body).encode())
context = ssl.create_default_context(cafile=ca)
connection = http.client.HTTPSConnection(host, port, context=context, timeout=300)
modes = sorted(keys)
end, sent, statuses = time.monotonic() + seconds, 0, {}
while time.monotonic() < end:
    mode = modes[sent % len(modes)]
    connection.request("POST", "/v1/chat/completions", body=bodies[(sent // len(modes)) % len(bodies)],
                       headers={"Authorization": "Bearer " + keys[mode], "Content-Type": "application/json"})
    response = connection.getresponse()
    response.read()
    statuses[response.status] = statuses.get(response.status, 0) + 1
    sent += 1
    if response.getheader("connection", "").lower() == "close":
        connection.close()
print(json.dumps({"sent": sent, "statuses": statuses}), flush=True)
"""


def start(host: str, port: int, ca_file: str, seconds: float, keys: dict[str, str], model: str,
          cwd: str | None = None) -> subprocess.Popen:
    """Send worst-case bodies for `seconds`, cycling through `keys` (PHI mode -> that client's key)."""
    attacker = subprocess.Popen(
        [sys.executable, "-c", ATTACKER, host, str(port), str(ca_file), str(seconds), model, json.dumps(SHAPES),
         str(BODY_LIMIT)], cwd=cwd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    attacker.stdin.write(json.dumps(keys) + "\n")
    attacker.stdin.close()
    attacker.stdin = None  # handed over: communicate() must not flush it again
    return attacker


def finish(attacker: subprocess.Popen, timeout: float = 180) -> dict:
    """What the attacker sent and got, once it is done."""
    try:
        return json.loads(attacker.communicate(timeout=timeout)[0])
    finally:
        attacker.kill()
