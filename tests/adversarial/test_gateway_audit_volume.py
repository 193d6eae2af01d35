"""Issue 15, item 7: refused requests cannot fill the audit disk.

On the baseline a 16 KB method was copied twice into a 32 KB record, and tiny
unauthenticated requests added 1 to 2 MB/s of records with no per-source limit (and a full
disk then meant a 503 for everyone). Now every field of a record is bounded, and refusals
of requests that carry no valid key are recorded within a per-source budget; those over it
are answered all the same and counted, per source, in a periodic ``suppressed`` record, so
the log still accounts for every one of them.
"""

from __future__ import annotations

import time

BUDGET = {"audit_refusals_per_second": 5, "audit_refusals_burst": 20, "audit_summary_seconds": 1}


def test_a_huge_method_is_not_copied_into_the_record(gateway):
    answer = gateway.send_raw(b"X" * 16_000 + b" /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n")
    assert answer.startswith(b"HTTP/1.1 ") and not answer.startswith(b"HTTP/1.1 200")
    records = gateway.wait_for_records(1)
    assert len(records) == 1
    assert len(gateway.audit_log.read_bytes()) < 2048


def test_unauthenticated_refusals_are_recorded_within_a_per_source_budget_and_summarised(gateway_with, upstream):
    gateway = gateway_with(config=BUDGET)
    sent = 600
    started = time.monotonic()
    with gateway.tls_socket() as sock:  # pipelined: 600 refusals as fast as the gateway answers
        sock.sendall(b"GET /v1/models HTTP/1.1\r\nHost: gw\r\n\r\n" * sent)
        answered, data = 0, b""
        while answered < sent:
            piece = sock.recv(65536)
            assert piece, f"closed after {answered} answers"
            data += piece
            answered = data.count(b"HTTP/1.1 401")
    elapsed = time.monotonic() - started
    time.sleep(2.5)  # a summary period and then some
    records = gateway.records()
    refusals = [r for r in records if r.get("type", "request") == "request"]
    summaries = [r for r in records if r.get("type") == "suppressed"]
    assert len(refusals) <= BUDGET["audit_refusals_burst"] + BUDGET["audit_refusals_per_second"] * (elapsed + 3)
    assert all(r["status"] == 401 and r["source"] == "127.0.0.1" for r in refusals)
    suppressed = sum(s["suppressed"] for s in summaries if s["source"] == "127.0.0.1")
    assert len(refusals) + suppressed == sent  # every refusal is accounted for
    assert gateway.chain_ok()
    assert upstream.requests == []
