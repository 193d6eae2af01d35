"""The chained audit log: sealing, verification, restarts, torn lines, group commit, bounds."""

from __future__ import annotations

import asyncio
import errno
import json
import os
import random

import pytest

from citadel_runtime.gateway import auditlog
from citadel_runtime.gateway.auditlog import (
    BLOCK,
    GENESIS,
    RECORD_BYTES,
    AuditWriteError,
    Chain,
    Writer,
    bounded,
    canonical,
    tail_state,
    verify_file,
    verify_lines,
)

KEY = b"k" * 64


def chain_lines(n: int) -> list[str]:
    chain = Chain(KEY)
    return [chain.seal({"status": 200, "n": i}) for i in range(n)]


def lines_of(path) -> list[str]:
    return path.read_text().splitlines()


# -- the chain and its verification ------------------------------------------------------


def test_the_chain_verifies_and_each_kind_of_tampering_is_named():
    lines = chain_lines(6)
    assert verify_lines(lines, KEY).ok
    edited = list(lines)
    edited[2] = edited[2].replace('"status":200', '"status":500')
    assert "line 3: MAC does not match" in verify_lines(edited, KEY).problems[0]
    deleted = lines[:3] + lines[4:]
    assert any("seq 5 where 4" in p for p in verify_lines(deleted, KEY).problems)
    swapped = lines[:1] + [lines[2], lines[1]] + lines[3:]
    assert not verify_lines(swapped, KEY).ok
    assert "starts at seq 2" in verify_lines(lines[1:], KEY).problems[0]
    assert not verify_lines(lines, b"x" * 64).ok  # another key
    assert "not a chained record" in verify_lines(lines[:2] + ["garbage"], KEY).problems[0]


def test_a_record_replaced_by_garbage_is_named_and_so_is_the_gap_it_leaves():
    lines = chain_lines(5)
    for garbage in ("garbage", '{"seq": 3, "status": 200'):  # the second looks like a torn write
        verdict = verify_lines(lines[:2] + [garbage] + lines[3:], KEY)
        assert verdict.problems == ["line 3: not a chained record",
                                    "line 4: seq 4 where 3 was expected: lines deleted or reordered",
                                    "line 4: does not chain to the line before it"], garbage
        assert not verdict.notes


def test_a_torn_line_that_hides_nothing_is_a_note_not_tampering():
    lines = chain_lines(4)
    torn = lines[2][:40]
    middle = verify_lines(lines[:2] + [torn] + lines[2:], KEY)  # a crash mid-write, then a restart
    assert middle.ok and middle.lines == 4
    assert middle.notes == [f"line 3: {auditlog.TORN}; the chain continues across it"]
    last = verify_lines(lines + [torn], KEY)  # the crash, before the restart
    assert last.ok and last.notes == [f"line 5: the last line, {auditlog.TORN}"]
    first = verify_lines([torn] + lines, KEY)  # torn before the first record: nothing before it
    assert first.ok and len(first.notes) == 1


def test_a_line_with_a_mac_field_is_sealed_with_one_mac():
    line = Chain(KEY).seal({"status": 200, "mac": "forged"})
    assert line.count('"mac"') == 1 and verify_lines([line], KEY).ok


# -- restarts: the end of the log, however long its last line ---------------------------


def test_the_writer_continues_an_existing_chain_and_fails_closed_when_it_cannot_write(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    writer = Writer(str(path), KEY)
    writer.write({"status": 200})
    writer.close()
    assert tail_state(str(path))[0] == 1
    writer = Writer(str(path), KEY)  # a restart carries on the chain
    writer.write({"status": 401})
    assert verify_lines(lines_of(path), KEY).ok
    assert tail_state(str(tmp_path / "none")) == (0, GENESIS)
    monkeypatch.setattr(os, "write", full_disk)
    assert writer.write({"status": 200}) is None and not writer.healthy and not writer.may_serve()
    writer.fail_open = True
    assert writer.may_serve()
    assert writer.chain.seq == 2  # the failed record did not advance the chain
    monkeypatch.undo()
    assert writer.write({"status": 200}) and writer.healthy and writer.failures == 1
    assert verify_lines(lines_of(path), KEY).ok and len(lines_of(path)) == 3
    writer.close()


def full_disk(fd, data):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("size", [BLOCK - 200, BLOCK, 3 * BLOCK + 17, 1 << 20])
def test_the_chain_survives_a_restart_whatever_the_size_of_the_last_record(tmp_path, size):
    path = tmp_path / "audit.jsonl"
    writer = Writer(str(path), KEY)
    writer.write({"status": 200})
    writer.write({"status": 200, "content": {"data": "x" * size}})  # sealed content: kept whole
    writer.close()
    assert len(lines_of(path)[-1]) > size
    writer = Writer(str(path), KEY)
    writer.write({"status": 200})
    writer.close()
    assert [json.loads(line)["seq"] for line in lines_of(path)] == [1, 2, 3]
    assert verify_file(str(path), KEY).ok


def test_lines_are_read_back_from_the_end_across_block_boundaries(tmp_path):
    random.seed(7)
    path = tmp_path / "lines"
    lines = [b"x" * random.choice([0, 1, 5, BLOCK - 1, BLOCK, BLOCK + 1, 2 * BLOCK + 3]) for _ in range(40)]
    for torn in (b"", b"torn tail"):
        path.write_bytes(b"\n".join(lines) + b"\n" + torn)
        fd = os.open(path, os.O_RDONLY)
        try:
            assert list(auditlog._lines_backwards(fd)) == lines[::-1]
        finally:
            os.close(fd)


def test_a_torn_last_line_is_skipped_and_the_next_record_starts_on_its_own_line(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = Writer(str(path), KEY)
    for status in (200, 401):
        writer.write({"status": status})
    writer.close()
    with open(path, "ab") as handle:
        handle.write(b'{"client":"ward","latency_ms":' + b"9" * (2 * BLOCK))  # a crash mid-write, long
    assert tail_state(str(path))[0] == 2
    writer = Writer(str(path), KEY)
    assert writer.torn
    writer.write({"status": 200})
    writer.close()
    lines = lines_of(path)
    assert len(lines) == 4 and json.loads(lines[3])["seq"] == 3
    verdict = verify_file(str(path), KEY)
    assert verdict.ok and verdict.lines == 3 and verdict.notes[0].startswith("line 3: a record cut short")


def test_a_log_that_is_all_torn_or_foreign_starts_a_chain(tmp_path):
    path = tmp_path / "audit.jsonl"
    path.write_bytes(b"not json\n{\"a\": 1}\n{\"seq")
    assert tail_state(str(path)) == (0, GENESIS)


# -- group commit ------------------------------------------------------------------------


def counting_syncs(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = os.fdatasync

    def fdatasync(fd):
        calls.append(fd)
        real(fd)

    monkeypatch.setattr(os, "fdatasync", fdatasync)
    return calls


def test_concurrent_commits_are_chained_in_call_order_and_share_their_syncs(tmp_path, monkeypatch):
    syncs = counting_syncs(monkeypatch)
    path = tmp_path / "audit.jsonl"

    async def main():
        writer = Writer(str(path), KEY)
        lines = await asyncio.gather(*(writer.commit({"status": 200, "n": n}) for n in range(300)))
        await writer.aclose()
        return lines

    lines = asyncio.run(main())
    assert lines == lines_of(path)
    assert [json.loads(line)["n"] for line in lines] == list(range(300))
    assert verify_file(str(path), KEY).ok
    assert 1 <= len(syncs) < 30  # batched: far fewer syncs than records


def test_a_commit_returns_only_after_its_sync(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    order: list[str] = []
    real = os.fdatasync

    def fdatasync(fd):
        real(fd)
        order.append("synced")

    monkeypatch.setattr(os, "fdatasync", fdatasync)

    async def main():
        writer = Writer(str(path), KEY)
        await writer.commit({"status": 200})
        order.append("returned")
        await writer.aclose()

    asyncio.run(main())
    assert order == ["synced", "returned"]


@pytest.mark.parametrize("failing", ["write", "fdatasync", "short write"])
def test_a_failed_commit_raises_refuses_service_and_leaves_the_file_as_it_was(tmp_path, monkeypatch, failing):
    path = tmp_path / "audit.jsonl"
    real_write = os.write

    def half_then_full(fd, data):
        if len(data) > 1:
            return real_write(fd, bytes(data[: len(data) // 2]))
        full_disk(fd, data)

    async def main():
        writer = Writer(str(path), KEY)
        await writer.commit({"status": 200})
        before = path.read_bytes()
        if failing == "write":
            monkeypatch.setattr(os, "write", full_disk)
        elif failing == "fdatasync":
            monkeypatch.setattr(os, "fdatasync", lambda fd: full_disk(fd, b""))
        else:
            monkeypatch.setattr(os, "write", half_then_full)
        results = await asyncio.gather(*(writer.commit({"status": 200}) for _ in range(5)), return_exceptions=True)
        assert all(isinstance(r, AuditWriteError) for r in results), results
        assert not writer.may_serve() and writer.failures == 5 and path.read_bytes() == before
        writer.fail_open = True
        assert writer.may_serve()  # fail_open: served unrecorded, as before
        writer.fail_open = False
        monkeypatch.undo()
        await writer.commit({"status": 200})  # space again: the chain carries on from the disk
        assert writer.may_serve() and writer.written == 2
        await writer.aclose()

    asyncio.run(main())
    assert [json.loads(line)["seq"] for line in lines_of(path)] == [1, 2]
    assert verify_file(str(path), KEY).ok


def test_a_failed_write_that_cannot_be_undone_is_read_back_before_the_next(tmp_path, monkeypatch):
    path = tmp_path / "audit.jsonl"
    real_write = os.write

    def one_line_then_full(fd, data):
        first = bytes(data).index(b"\n") + 1
        real_write(fd, bytes(data[:first + 10]))  # one whole record and a piece of the next
        full_disk(fd, data)

    async def main():
        writer = Writer(str(path), KEY)
        await writer.commit({"status": 200})
        monkeypatch.setattr(os, "write", one_line_then_full)
        monkeypatch.setattr(os, "ftruncate", lambda fd, size: full_disk(fd, b""))
        results = await asyncio.gather(*(writer.commit({"status": 200}) for _ in range(3)), return_exceptions=True)
        assert all(isinstance(r, AuditWriteError) for r in results) and writer.resync
        monkeypatch.undo()
        await writer.commit({"status": 201})
        await writer.aclose()

    asyncio.run(main())
    verdict = verify_file(str(path), KEY)
    assert verdict.ok and len(verdict.notes) == 1  # the piece: a torn line
    records = []
    for line in lines_of(path):
        try:
            records.append(json.loads(line))
        except ValueError:
            pass  # the torn piece
    # The records that were written whole stay, however the commits were batched, and the
    # chain goes on from the last of them.
    assert [r["seq"] for r in records] == list(range(1, len(records) + 1)) and records[-1]["status"] == 201


def test_a_caller_that_stops_waiting_still_gets_its_record_written(tmp_path):
    path = tmp_path / "audit.jsonl"

    async def main():
        writer = Writer(str(path), KEY)
        task = asyncio.ensure_future(writer.commit({"status": 499}))
        await asyncio.sleep(0)
        task.cancel()
        await writer.commit({"status": 200})
        await writer.aclose()
        return task

    assert asyncio.run(main()).cancelled()
    assert [json.loads(line)["status"] for line in lines_of(path)] == [499, 200]


def test_write_and_commit_do_not_interleave(tmp_path):
    async def main():
        writer = Writer(str(tmp_path / "audit.jsonl"), KEY)
        pending = asyncio.ensure_future(writer.commit({"status": 200}))
        await asyncio.sleep(0)
        with pytest.raises(RuntimeError):
            writer.write({"status": 200})
        await pending
        assert writer.write({"status": 200}, durable=True)  # none in flight: fine
        await writer.aclose()

    asyncio.run(main())
    assert verify_file(str(tmp_path / "audit.jsonl"), KEY).ok


def test_values_that_are_not_json_are_recorded_as_text(tmp_path):
    async def main():
        writer = Writer(str(tmp_path / "audit.jsonl"), KEY)
        results = await asyncio.gather(writer.commit({"status": 200}), writer.commit({1: b"x", "at": object}),
                                       writer.commit({"status": 201}), return_exceptions=True)
        await writer.aclose()
        return results

    results = asyncio.run(main())
    assert all(isinstance(r, str) for r in results), results
    assert json.loads(results[1])["1"] == "b'x'"
    assert verify_file(str(tmp_path / "audit.jsonl"), KEY).ok


def test_a_device_log_needs_no_sync(tmp_path):
    async def main():
        writer = Writer("/dev/null", KEY)
        line = await writer.commit({"status": 200})
        await writer.aclose()
        return line

    assert '"seq":1' in asyncio.run(main())


# -- bounded records -------------------------------------------------------------------------


def test_a_16_kb_method_makes_a_record_of_the_usual_size():
    record = bounded({"method": "A" * 16384, "route": None, "status": 400, "refusal": "bad request"})
    assert len(record["method"]) == 256 and record["method"].endswith("…[cut 16140]")
    assert record["method"][:244] == "A" * 244 and record["status"] == 400 and record["route"] is None
    assert len(canonical(record)) < 1024


def test_every_field_and_the_whole_record_are_bounded():
    huge = {f"field{n}": "x" * 10_000 for n in range(300)}
    huge.update(nested={"a": {"b": {"c": {"d": {"e": 1}}}}}, items=list(range(1000)), big=10**400,
                other=b"bytes", refusal="r" * 5000, content={"data": "c" * 100_000})
    record = bounded(huge)
    assert len(canonical({k: v for k, v in record.items() if k != "content"})) <= RECORD_BYTES
    assert record["content"] == huge["content"]  # sealed: kept whole (bounded by content.LIMIT)
    assert "…" in record and "fields" in record["…"]
    small = bounded({"nested": huge["nested"], "items": huge["items"], "big": huge["big"], "other": b"x",
                     "refusal": "r" * 5000, "k" * 100: 1})
    assert small["nested"]["a"]["b"]["c"].startswith("…[cut nested")
    assert len(small["items"]) == 33 and small["items"][-1] == "…[cut 968 entries]"
    assert small["big"].startswith("…[cut an integer") and small["other"] == "b'x'"
    assert len(small["refusal"]) == 1024 and len(max(small, key=len)) <= 64
    assert bounded({"status": 200, "phi": {"ssn": 1}}) == {"status": 200, "phi": {"ssn": 1}}  # nothing to cut


def test_write_and_commit_bound_what_they_seal(tmp_path):
    path = tmp_path / "audit.jsonl"
    writer = Writer(str(path), KEY)
    writer.write({"method": "M" * 20_000})

    async def main():
        await writer.commit({"model": "m" * 20_000})
        await writer.aclose()

    asyncio.run(main())
    assert all(len(line) < 2048 for line in lines_of(path))
    assert verify_file(str(path), KEY).ok


def test_the_fast_path_of_bounded_keeps_exactly_what_the_full_walk_keeps():
    import random

    from citadel_runtime.gateway import auditlog

    rng = random.Random(15)
    pieces = ["x", "é" * 300, "a" * 256, "a" * 257, 1 << 64, -(1 << 63), 3.5, None, True, {"ssn": 2},
              {"k" * 65: 1}, list(range(33)), ["a"] * 3, {"a": {"b": 1}}, "\U0001f600" * 200]
    for _ in range(3000):
        record = {rng.choice(["status", "refusal", "user_agent", "route", "f" * rng.choice((3, 65)), "content"]):
                  rng.choice(pieces) for _ in range(rng.randint(1, 6))}
        walked = auditlog._walk(record)
        if auditlog._plain(record):
            assert auditlog.bounded(record) == record == walked, record
