"""Issue 15, the must-show at loopback scale: 10,000 requests, each with exactly one record.

The mix: valid requests, refused ones (no key, a model not allowed, over the output cap),
malformed ones (bad JSON, wrong types, and heads that never parse), and abandoned ones
(streams dropped after their first bytes, bodies cut off midway). Afterwards:

- exactly one ``request`` record per request sent, and every request id a client was told
  (X-Request-Id) is among them;
- joined by request id with what reached the stand-in model server: every request it
  received has a record that let it through, every request recorded as served reached it
  exactly once, and nothing refused reached it;
- each dropped stream has its ``stream_end`` record, linked by request id, cut by the client;
- the chain verifies.

Eight client threads on keep-alive connections carry the requests that can share one; the
malformed heads and the abandoned requests each take a new connection, as they would.
"""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter

from tests.adversarial.harness import CHAT

TOTAL = 10_000
THREADS = 8
STREAM = json.dumps({**CHAT, "stream": True}).encode()
POLICY = {"models": ["tiny"], "max_tokens": 8, "requests_per_minute": 10_000_000, "concurrent_requests": 64}
# Every refusal recorded on its own here (the budget's summaries are tested elsewhere).
CONFIG = {"audit_refusals_per_second": 1_000_000, "audit_refusals_burst": 1_000_000}


def kind_of(index: int) -> str:
    return ("valid", "valid", "valid", "valid", "no key", "model not allowed", "over the cap", "bad JSON",
            "wrong type", "valid", "malformed head", "dropped stream", "cut body", "valid", "valid", "valid")[index % 16]


KEEP_ALIVE = {  # kind -> (route, key, body): sent on a thread's keep-alive connection
    "valid": ("/v1/chat/completions", "ck_w", json.dumps(CHAT).encode()),
    "no key": ("/v1/chat/completions", None, json.dumps(CHAT).encode()),
    "model not allowed": ("/v1/chat/completions", "ck_w", json.dumps({**CHAT, "model": "other"}).encode()),
    "over the cap": ("/v1/chat/completions", "ck_w", json.dumps({**CHAT, "n": 9}).encode()),
    "bad JSON": ("/v1/chat/completions", "ck_w", b'{"model": "tiny", "messages": [}'),
    "wrong type": ("/v1/chat/completions", "ck_w", json.dumps({"model": "tiny", "messages": 1}).encode()),
}
EXPECTED = {"valid": 200, "no key": 401, "model not allowed": 403, "over the cap": 400, "bad JSON": 400,
            "wrong type": 400, "malformed head": 400, "dropped stream": 200, "cut body": 400}


class Client(threading.Thread):
    def __init__(self, gateway, indices: list[int]):
        super().__init__(daemon=True)
        self.gateway, self.indices = gateway, indices
        self.seen: list[tuple[str, int | None, str | None]] = []  # (kind, status, request id told)
        self.error: BaseException | None = None

    def run(self) -> None:
        connection = self.gateway.connection(timeout=30)
        try:
            for index in self.indices:
                kind = kind_of(index)
                if kind in KEEP_ALIVE:
                    self.seen.append((kind, *self.keep_alive(connection, kind)))
                else:
                    self.seen.append((kind, *getattr(self, kind.replace(" ", "_"))()))
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.error = exc
        finally:
            connection.close()

    @staticmethod
    def keep_alive(connection: http.client.HTTPSConnection, kind: str) -> tuple[int, str]:
        route, key, body = KEEP_ALIVE[kind]
        headers = {"Content-Type": "application/json", **({"Authorization": f"Bearer {key}"} if key else {})}
        connection.request("POST", route, body=body, headers=headers)
        response = connection.getresponse()
        response.read()
        return response.status, response.getheader("X-Request-Id")

    def malformed_head(self) -> tuple[int, str]:
        answer = self.gateway.send_raw(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nBad header\r\n\r\n")
        return int(answer[9:12]), _request_id(answer)

    def dropped_stream(self) -> tuple[int, str]:
        with self.gateway.tls_socket() as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n"
                         b"Content-Length: %d\r\n\r\n%s" % (len(STREAM), STREAM))
            first = sock.recv(65536)
        return int(first[9:12]), _request_id(first)

    def cut_body(self) -> tuple[None, None]:
        with self.gateway.tls_socket() as sock:
            sock.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: gw\r\nAuthorization: Bearer ck_w\r\n"
                         b"Content-Length: 100\r\n\r\n" + b'{"model": "tiny"')
        return None, None  # gone before any answer: its record is all there is


def _request_id(answer: bytes) -> str | None:
    for line in answer.split(b"\r\n\r\n")[0].split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.lower() == b"x-request-id":
            return value.strip().decode()
    return None


def test_ten_thousand_mixed_requests_each_have_exactly_one_record(gateway_with, upstream):
    gateway = gateway_with(policies={"ward": POLICY}, config=CONFIG)
    upstream.behaviour.chunks, upstream.behaviour.chunk_delay = 5, 0.05
    started = time.monotonic()
    clients = [Client(gateway, list(range(n, TOTAL, THREADS))) for n in range(THREADS)]
    for client in clients:
        client.start()
    for client in clients:
        client.join(timeout=900)
    elapsed = time.monotonic() - started
    assert all(client.error is None and not client.is_alive() for client in clients), [c.error for c in clients]
    seen = [entry for client in clients for entry in client.seen]
    assert len(seen) == TOTAL
    wrong = [(kind, status) for kind, status, _ in seen if status is not None and status != EXPECTED[kind]]
    assert not wrong, Counter(wrong).most_common(5)

    # Every request's record is on disk before its answer, but a dropped stream's end and a
    # cut body's record come after the client has gone: wait for them.
    deadline = time.monotonic() + 60
    while True:
        records = gateway.records()
        requests = [r for r in records if r["type"] == "request"]
        ends = [r for r in records if r["type"] == "stream_end"]
        if (len(requests) >= TOTAL and len(ends) >= TOTAL // 16) or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    by_id = {r["request_id"]: r for r in requests}
    print(f"\n{TOTAL} requests in {elapsed:.1f} s ({TOTAL / elapsed:.0f}/s); {len(requests)} request records, "
          f"{len(ends)} stream ends; statuses {sorted(Counter(r['status'] for r in requests).items())}")
    assert len(requests) == TOTAL and len(by_id) == TOTAL  # exactly one record each
    told = [request_id for _, _, request_id in seen if request_id]
    assert len(told) == len(set(told)) and set(told) <= set(by_id)

    reached = Counter(seen.request_id for seen in upstream.requests)
    served = {request_id for request_id, r in by_id.items() if r["status"] == 200 and r["route"] != "/v1/models"}
    assert set(reached) == served and all(n == 1 for n in reached.values())  # nothing refused reached it
    assert len(served) == sum(1 for kind, _, _ in seen if EXPECTED[kind] == 200)

    dropped = {request_id for kind, _, request_id in seen if kind == "dropped stream"}
    assert {e["request_id"] for e in ends if e["outcome"] == "cut by client"} == dropped
    assert all(by_id[e["request_id"]]["stream"] == "started" for e in ends)
    assert gateway.chain_ok()
