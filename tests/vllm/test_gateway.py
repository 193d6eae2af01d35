"""The gateway in front of a real vLLM, on the vllm tier's lab host (tests/vllm/conftest.py).

Clients are issued in Vault before the deploy; the gateway serves HTTPS on the host's
address, forwards through the keyguard to vLLM's socket, and records every interaction.
From this machine, over real TLS: chats (streamed and not) with a valid key; 401s for no,
wrong and revoked keys; blocked routes and path tricks refused and absent from the
keyguard's and vLLM's logs; limits; the PHI guard; `citadel audit-log verify` on the real
log and on tampered copies; 10,000 requests across two vLLM restarts; the gateway controls.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from collections import Counter

from citadel_runtime.gateway.auditlog import verify_lines
from citadel_runtime.layout import GATEWAY_CONFIG
from deploy.secrets import audit_key, client_keys
from hardening.controls import gateway as gateway_controls
from hardening.engine import run_audit
from tests.lab.vaultutil import run_citadel
from tests.vllm.conftest import MODEL, UNIT, on_host
from tests.vllm.gateway_client import load, request

LOG = "/var/log/citadel-gateway/audit.jsonl"
AGENT = "citadel-agent@gateway.service"
CHAT = {"model": MODEL, "messages": [{"role": "user", "content": "hello"}], "max_tokens": 4, "temperature": 0}
BLOCKED = ["/invocations", "/tokenize", "/detokenize", "/metrics", "/docs", "/openapi.json", "/health", "/version",
           "/ping", "/v1/load_lora_adapter"]
TRICKS = ["/v1/%2e%2e/invocations", "/v1/..%2Finvocations", "//invocations", "/v1//chat/completions",
          "/V1/chat/completions", "/v1/Chat/Completions", "/v1/chat/completions/", "/v1/./chat/completions",
          "/v1/chat/../../invocations", "/v1/chat%2Fcompletions", "/%69nvocations", "/v1/models;/invocations"]


def call(gw, method, path, key=None, body=None, raw_body=None):
    return request(gw["address"], gw["ca"], method, path, key, body, raw_body)


def records(env) -> list[dict]:
    return [json.loads(line) for line in on_host(env, f"sudo cat {LOG}").stdout.splitlines() if line.strip()]


def test_a_chat_through_the_gateway_streamed_and_not_with_a_valid_key(env, gw):
    key = gw["keys"]["ward"]
    status, headers, body = call(gw, "POST", "/v1/chat/completions", key, CHAT)
    assert status == 200, body
    reply = json.loads(body)
    assert reply["model"] == MODEL and reply["choices"][0]["message"]["content"] is not None
    request_id = headers["x-request-id"]
    status, headers, body = call(gw, "POST", "/v1/chat/completions", key, {**CHAT, "stream": True})
    assert status == 200 and headers["content-type"].startswith("text/event-stream"), body
    events = [line for line in body.decode().splitlines() if line.startswith("data: ")]
    assert len(events) >= 2 and events[-1] == "data: [DONE]"
    assert call(gw, "GET", "/v1/models", key)[0] == 200
    record = next(r for r in records(env) if r["request_id"] == request_id)
    assert record["client"] == "ward" and record["status"] == 200 and record["model"] == MODEL
    assert record["completion_tokens"] and record["prompt_tokens"] and record["request_sha256"]
    assert "hello" not in json.dumps(record)  # digests, never the content
    # The same line in the journal, for the SIEM.
    assert request_id in on_host(env, "sudo journalctl -u citadel-gateway -o cat --no-pager").stdout


def test_no_key_a_wrong_key_and_a_revoked_key_get_401(env, gw):
    assert call(gw, "POST", "/v1/chat/completions", None, CHAT)[0] == 401
    assert call(gw, "POST", "/v1/chat/completions", "ck_" + "x" * 43, CHAT)[0] == 401
    assert call(gw, "POST", "/v1/chat/completions", gw["keys"]["no-models"], CHAT)[0] == 403  # no model granted
    leaver = gw["keys"]["leaver"]
    assert call(gw, "POST", "/v1/chat/completions", leaver, CHAT)[0] == 200
    pid = on_host(env, "systemctl show -p MainPID --value citadel-gateway").stdout.strip()
    client_keys.revoke(env["store"], "leaver")
    deadline = time.monotonic() + 120  # the agent's render interval (30 s), then the gateway's file watch
    while call(gw, "POST", "/v1/chat/completions", leaver, CHAT)[0] != 401:
        assert time.monotonic() < deadline, "the revoked key still works after 120 s"
        time.sleep(2)
    assert on_host(env, "systemctl show -p MainPID --value citadel-gateway").stdout.strip() == pid  # no restart
    assert call(gw, "POST", "/v1/chat/completions", gw["keys"]["ward"], CHAT)[0] == 200


def test_blocked_routes_and_path_tricks_are_refused_and_never_reach_vllm(env, gw):
    key = gw["keys"]["ward"]
    since = on_host(env, "date +%s").stdout.strip()
    for path in BLOCKED + TRICKS:
        for method in ("GET", "POST"):
            status, _, body = call(gw, method, path, key, {"model": MODEL, "prompt": "x"})
            assert status in (403, 404, 405), (method, path, status, body)
    # A real request in the same window shows the logs do record what does reach vLLM.
    assert call(gw, "POST", "/v1/completions", key, {"model": MODEL, "prompt": "hi", "max_tokens": 2})[0] == 200
    time.sleep(1)
    keyguard = on_host(env, f"sudo journalctl -u citadel-keyguard --since @{since} -o cat --no-pager").stdout
    vllm = on_host(env, f"sudo journalctl -u {UNIT} --since @{since} -o cat --no-pager").stdout
    assert "/v1/completions" in keyguard, keyguard[-2000:]
    for path in ["/invocations", "/tokenize", "/detokenize", "/metrics", "/docs", "/openapi.json", "/version",
                 "/ping", "lora", "%2", "//", "/V1", "Chat"]:
        assert path not in keyguard and path not in vllm, path


def test_limits_phi_guard_and_clear_errors(env, gw):
    ward, triage = gw["keys"]["ward"], gw["keys"]["triage"]
    status, _, body = call(gw, "POST", "/v1/chat/completions", ward, raw_body=b"{" + b" " * 70_000 + b"}")
    assert status == 413 and "larger than" in json.loads(body)["error"]["message"]
    assert call(gw, "POST", "/v1/chat/completions", ward, {**CHAT, "max_tokens": 1000})[0] == 400
    assert call(gw, "POST", "/v1/chat/completions", ward, {**CHAT, "model": "other"})[0] == 403
    assert call(gw, "POST", "/v1/chat/completions", ward, raw_body=b"not json")[0] == 400
    phi_chat = {**CHAT, "messages": [{"role": "user", "content": "MRN 00123456, call 555-123-4567"}]}
    status, headers, _ = call(gw, "POST", "/v1/chat/completions", ward, phi_chat)  # redact
    assert status == 200
    record = next(r for r in records(env) if r["request_id"] == headers["x-request-id"])
    assert record["phi"] == {"mrn": 1, "phone": 1}
    status, _, body = call(gw, "POST", "/v1/chat/completions", triage, phi_chat)  # block
    assert status == 422 and "mrn" in json.loads(body)["error"]["message"]
    # triage: 5 requests a minute; one was used above.
    answers = [call(gw, "POST", "/v1/chat/completions", triage, {**CHAT, "max_tokens": 2})[0] for _ in range(5)]
    assert answers[:4] == [200] * 4 and answers[4] == 429, answers
    metrics = on_host(env, "python3 -c \"import urllib.request as u; "
                           "print(u.urlopen('http://127.0.0.1:9464/metrics').read().decode())\"").stdout
    assert 'citadel_gateway_refusals_total{reason="rate_limit"} 1' in metrics
    assert 'citadel_gateway_phi_detections_total{kind="mrn",action="redact"} 1' in metrics
    assert "citadel_gateway_audit_log_healthy 1" in metrics
    # The admin listener is on loopback only.
    assert on_host(env, "ss -Hltn 'sport = :9464'").stdout.split()[3].startswith("127.0.0.1:")


def test_content_is_recorded_only_for_clients_that_opt_in_and_only_encrypted(env, gw, tmp_path):
    said = {**CHAT, "messages": [{"role": "user", "content": "Patient Jane Roe, MRN 00424242, asks about her dose"}]}
    status, headers, _ = call(gw, "POST", "/v1/chat/completions", gw["keys"]["scribe"], said)
    assert status == 200
    request_id = headers["x-request-id"]
    lines = on_host(env, f"sudo cat {LOG}").stdout.splitlines()
    record = next(json.loads(line) for line in lines if request_id in line)
    assert record["content"]["alg"] == "AES-256-GCM" and "00424242" not in json.dumps(record)
    assert all("content" not in json.loads(line) for line in lines if '"client":"ward"' in line)  # not opted in
    copy = tmp_path / "audit.jsonl"
    copy.write_text("\n".join(lines) + "\n")
    code, out, err, _ = run_citadel("audit-log", "show", str(copy), "-i", str(env["inventory"]), "--request-id",
                                    request_id, "--decrypt", token=env["token"])
    assert code == 0, err
    opened = json.loads(out.strip().splitlines()[-1])["content"]
    assert "00424242" in opened["request"] and json.loads(opened["response"])["model"] == MODEL
    # A sealed body that was edited does not open: exit 1, and the record says so.
    record["content"]["data"] = ("A" if record["content"]["data"][0] != "A" else "B") + record["content"]["data"][1:]
    edited = tmp_path / "edited.jsonl"
    edited.write_text(json.dumps(record) + "\n")
    code, out, _, _ = run_citadel("audit-log", "show", str(edited), "-i", str(env["inventory"]), "--decrypt",
                                  token=env["token"])
    assert code == 1 and "cannot be opened" in out and "00424242" not in out
    # Without --decrypt it stays sealed.
    code, out, _, _ = run_citadel("audit-log", "show", str(copy), "-i", str(env["inventory"]), "--request-id",
                                  request_id, token=env["token"])
    assert code == 0 and "00424242" not in out


def verify(env, tmp_path, lines: list[str]) -> tuple[int, str]:
    copy = tmp_path / f"audit-{len(list(tmp_path.iterdir()))}.jsonl"
    copy.write_text("".join(line + "\n" for line in lines))
    code, out, err, _ = run_citadel("audit-log", "verify", str(copy), "-i", str(env["inventory"]), token=env["token"])
    return code, out + err


def test_audit_log_verify_passes_on_the_real_log_and_fails_on_tampered_copies(env, gw, tmp_path):
    lines = on_host(env, f"sudo cat {LOG}").stdout.splitlines()
    assert len(lines) > 20
    code, text = verify(env, tmp_path, lines)
    assert code == 0 and "the chain verifies" in text, text
    edited = list(lines)
    edited[5] = edited[5].replace('"status":200', '"status":201') if '"status":200' in edited[5] else \
        edited[5].replace('"source":"', '"source":"1')
    deleted = lines[:7] + lines[8:]
    swapped = lines[:9] + [lines[10], lines[9]] + lines[11:]
    for name, copy, expect in (("edited", edited, "line 6: MAC does not match"),
                               ("deleted", deleted, "line 8: seq 9 where 8 was expected"),
                               ("swapped", swapped, "line 10: seq 11 where 10 was expected")):
        code, text = verify(env, tmp_path, copy)
        assert code == 1 and expect in text, (name, text)
    # Lines cut off the end keep a valid chain: only the gateway's own count shows them.
    copy = tmp_path / "cut.jsonl"
    copy.write_text("".join(line + "\n" for line in lines[:-3]))
    code, out, err, _ = run_citadel("audit-log", "verify", str(copy), "-i", str(env["inventory"]), "--expect-records",
                                    str(len(lines)), token=env["token"])
    assert code == 1 and "lines missing at the end" in out + err, out + err
    key = audit_key.read(env["store"]).reveal()
    assert key not in text and all(key not in line for line in lines)


def test_ten_thousand_requests_across_two_vllm_restarts_each_answered_and_recorded_once(env, gw):
    total, restarts = 10_000, []

    def restart(at):
        start = time.monotonic()
        result = on_host(env, f"sudo systemctl restart {UNIT}", check=False)
        restarts.append((at, result.returncode, round(time.monotonic() - start, 1)))

    triggers = {2_000: None, 6_000: None}

    def progress(n):
        for at in triggers:
            if n >= at and triggers[at] is None:
                triggers[at] = threading.Thread(target=restart, args=(at,))
                triggers[at].start()

    def bodies(i):
        if i % 4 == 0:
            return "POST", "/v1/completions", {"model": MODEL, "prompt": f"n{i}", "max_tokens": 1}
        return "GET", "/v1/models", None

    before = len(on_host(env, f"sudo cat {LOG}").stdout.splitlines())
    result = load(gw["address"], gw["ca"], gw["keys"]["ward"], total, 16, bodies, progress, rate=90)
    for thread in triggers.values():
        if thread:
            thread.join()
    print(f"statuses {result['statuses']}, restarts {restarts}")
    assert result["broken"] == [], result["broken"][:5]
    assert sum(result["statuses"].values()) == total
    assert set(result["statuses"]) <= {200, 502, 503}, result["statuses"]
    assert sorted(r[1] for r in restarts) == [0, 0], restarts
    # Exactly one chained record per request.
    lines = on_host(env, f"sudo cat {LOG}").stdout.splitlines()
    new = [json.loads(line) for line in lines[before:]]
    ids = result["ids"]
    assert len(set(ids)) == total
    by_id = {}
    for record in new:
        by_id[record["request_id"]] = by_id.get(record["request_id"], 0) + 1
    answered = set(ids)
    odd = Counter((r.get("type", "request"), r.get("status"), r.get("refusal")) for r in new
                  if r["request_id"] not in answered or by_id[r["request_id"]] != 1)
    assert all(by_id.get(i) == 1 for i in ids) and len(new) == total, (len(new), total, odd.most_common(8))
    verdict = verify_lines(lines, audit_key.read(env["store"]).reveal().encode())
    assert verdict.ok, verdict.problems


BACKUP = ("tar -C / -cpf /root/gateway-backup.tar usr/local/lib/citadel/runtime/citadel_runtime/gateway "
          "etc/citadel/secrets/gateway/client-keys.json var/log/citadel-gateway/audit.jsonl "
          f"{GATEWAY_CONFIG.lstrip('/')}")  # gateway-replicas-in-rotation's break edits the configuration
RESTORE = ("systemctl stop citadel-audit-break-listener 2>/dev/null; systemctl reset-failed "
           "citadel-audit-break-listener 2>/dev/null; tar -C / -xpf /root/gateway-backup.tar && "
           "systemctl restart citadel-gateway && sleep 2")


def test_every_gateway_control_passes_and_each_fails_when_broken(env, gw):
    def audit():
        return {r.control: r for r in run_audit(env["site"], gateway_controls.CONTROLS)}

    results = audit()
    assert all(r.status == "pass" for r in results.values()), {k: r.evidence for k, r in results.items()}
    for control in gateway_controls.CONTROLS:
        on_host(env, f"sudo sh -c {shlex.quote(BACKUP)}")
        # The gateway's agent re-renders its files every 30 s, which would mend a broken client
        # table before the check saw it: it is paused while a control is broken (paused, not
        # stopped: SIGCONT resumes it exactly where it was, with no new login or render).
        on_host(env, f"sudo systemctl kill --signal=SIGSTOP {AGENT}")
        on_host(env, f"sudo sh -c {shlex.quote(control.break_with)}")
        try:
            result = {r.control: r for r in run_audit(env["site"], [control])}[control.id]
            assert result.status == "fail", (control.id, result.evidence)
        finally:
            on_host(env, f"sudo sh -c {shlex.quote(RESTORE)}")
            on_host(env, f"sudo systemctl kill --signal=SIGCONT {AGENT}")
        assert audit()[control.id].status == "pass", control.id
    for key in gw["keys"].values():
        assert key not in json.dumps({k: r.evidence for k, r in audit().items()})
