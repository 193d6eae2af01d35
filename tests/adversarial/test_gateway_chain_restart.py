"""Issue 15, item 8: the audit chain continues across a restart, whatever the size of the last record.

The baseline read back only the last 64 KiB of the log to find where the chain stood; when
the last record was longer (a client whose content is recorded, sealed, sent a long
prompt), it found no complete line, started again at seq 1, and verification reported
tampering. A record-content client's long prompt makes such a record through the real
service here; after a restart the next record continues the sequence.
"""

from __future__ import annotations

import json


def test_the_chain_continues_after_a_restart_when_the_last_record_is_over_64_kib(gateway_with, tmp_path):
    (tmp_path / "content.json").write_text(json.dumps({"value": "c" * 64}))
    policies = {"ward": {"models": ["tiny"], "max_tokens": 8, "record_content": True}}
    config = {"content_key": str(tmp_path / "content.json")}
    gateway = gateway_with(policies=policies, config=config)
    long_prompt = {"model": "tiny", "messages": [{"role": "user", "content": "a rather long note. " * 10_000}]}
    assert gateway.request("POST", "/v1/chat/completions", key="ck_w", body=long_prompt)[0] == 200
    records = gateway.wait_for_records(1)
    assert len(gateway.audit_log.read_bytes().splitlines()[-1]) > 64 * 1024
    gateway.stop()

    gateway.start()  # the same log, key and configuration
    status, _, headers = gateway.request("POST", "/v1/chat/completions", key="ck_w",
                                         body={"model": "tiny", "messages": [{"role": "user", "content": "hi"}]})
    assert status == 200
    after = gateway.wait_for_records(len(records) + 1)
    assert after[-1]["request_id"] == headers["x-request-id"]
    assert after[-1]["seq"] == records[-1]["seq"] + 1
    assert gateway.chain_ok()
