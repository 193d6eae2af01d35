"""The interaction record: one JSON line per request, each chained to the one before by HMAC.

Each line is a JSON object with ``seq`` (1, 2, ...), ``prev`` (the previous line's ``mac``;
64 zeros for the first) and ``mac`` = HMAC-SHA256(key, the line without ``mac``, as
canonical JSON). The key lives in Vault (``gateway/audit-hmac-key``); the gateway reads the
copy its agent renders and the auditor's ``citadel audit-log verify`` reads Vault. So
editing a line breaks its MAC, deleting or reordering lines breaks the chain and the
sequence, and cutting lines off the end shows as a sequence that stops short of the
gateway's own count (its metrics, and the journal's copy of every line).

The record holds digests of request and response bodies, never the bodies (content is
recorded only where the inventory turns it on for a client, and then encrypted: see
``content``). Every field is cut to a bound before it is sealed (``bounded``): a client
that sends a 16 KB method gets a record of the usual size, with the cut marked.

Durable before served: ``await Writer.commit(record)`` returns only once the line is on
disk (``fdatasync``). Concurrent commits share one write and one sync, done in the
writer's own thread, so the event loop never waits on the disk and throughput under
concurrency stays high. If a line cannot be written (a full disk), ``commit`` raises
``AuditWriteError``, the writer marks itself unhealthy and the gateway refuses new requests
(503) until a write works again, unless ``fail_open`` is configured. A failed write leaves
the file as it was (partial bytes are cut off), so the chain continues from what is on disk.

The chain survives restarts: ``tail_state`` finds the last complete line however long it
is. A line torn by a crash (no newline at the end of the file) is skipped: the next writer
starts on a new line, and ``verify_lines`` names the torn line as such (a note, not a
problem) when the chain continues across it.

Example::

    >>> import io
    >>> out = io.StringIO(); log = Chain(b"k" * 32)
    >>> for n in range(3): _ = out.write(log.seal({"status": 200}) + "\\n")
    >>> verify_lines(out.getvalue().splitlines(), b"k" * 32).ok
    True
    >>> bounded({"method": "G" * 1000})["method"][-12:]
    'GG…[cut 755]'
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

GENESIS = "0" * 64

# -- bounded fields -----------------------------------------------------------------

FIELD_CHARS = 256  # any string field not named below: method, route, model, client, source, ...
FIELD_CHARS_BY_NAME = {"refusal": 1024, "user_agent": 512}
UNCUT = frozenset({"content"})  # sealed bodies: bounded by content.LIMIT; a cut would break the seal
KEY_CHARS = 64  # the names of fields, at every level
FIELDS = 128  # the fields of a record (the gateway's have about 20)
ITEMS = 32  # the entries of a list or an object inside a record
DEPTH = 4  # objects and lists inside a record, at most this deep
RECORD_BYTES = 16 * 1024  # the whole record as canonical JSON, not counting UNCUT fields
CUT = "…[cut {}]"


class AuditWriteError(OSError):
    """A record could not be made durable. An OSError, so a caller that does not catch it
    still ends the connection without an answer rather than serving unrecorded."""


def _cut(text: str, limit: int) -> str:
    """The text in at most ``limit`` characters, the cut marked with how many were dropped."""
    if len(text) <= limit:
        return text
    keep = max(0, limit - len(CUT.format(len(text))))
    return text[:keep] + CUT.format(len(text) - keep)


def _bounded_value(value, limit: int, depth: int):
    if value is None or isinstance(value, bool | float):
        return value
    if isinstance(value, str):
        return _cut(value, limit)
    if isinstance(value, int):
        # Python ints are unbounded; JSON readers elsewhere are not.
        return value if -(1 << 63) <= value < (1 << 64) else CUT.format(f"an integer of {value.bit_length()} bits")
    if isinstance(value, dict | list | tuple) and depth >= DEPTH:
        return CUT.format(f"nested deeper than {DEPTH}")
    if isinstance(value, dict):
        items = list(value.items())
        out = {_cut(str(k), KEY_CHARS): _bounded_value(v, FIELD_CHARS, depth + 1) for k, v in items[:ITEMS]}
        if len(items) > ITEMS:
            out["…"] = CUT.format(f"{len(items) - ITEMS} entries")
        return out
    if isinstance(value, list | tuple):
        out = [_bounded_value(v, FIELD_CHARS, depth + 1) for v in value[:ITEMS]]
        if len(value) > ITEMS:
            out.append(CUT.format(f"{len(value) - ITEMS} entries"))
        return out
    return _cut(repr(value), limit)  # not JSON: recorded as text rather than failing the record


def bounded(record: dict) -> dict:
    """A copy of the record with every field within its bound and the whole within RECORD_BYTES.

    Strings are cut to FIELD_CHARS (FIELD_CHARS_BY_NAME for some fields) and marked
    ``…[cut N]``; lists and objects inside keep ITEMS entries and DEPTH levels. If the
    record is still over RECORD_BYTES (many fields), its largest fields are replaced by a
    marker, largest first. ``content`` (sealed, bounded by its own limit) is kept whole.
    """
    # The usual record has nothing to cut: checked cheaply, as the gateway writes one per request.
    return dict(record) if _plain(record) else _walk(record)


def _walk(record: dict) -> dict:
    out, uncut = {}, {}
    size = 32  # at least the canonical size of `out`, cheaply: the usual record is not serialised here
    for index, (name, value) in enumerate(record.items()):
        if name in UNCUT:
            uncut[name] = value
        elif index < FIELDS:
            key = _cut(str(name), KEY_CHARS)
            out[key] = value = _bounded_value(value, FIELD_CHARS_BY_NAME.get(name, FIELD_CHARS), 1)
            size += _size_bound(key) + _size_bound(value)
    if len(record) > FIELDS:
        out["…"] = CUT.format(f"{len(record) - FIELDS} fields")
    if size > RECORD_BYTES and len(canonical(out)) > RECORD_BYTES:
        _shrink(out)
    return {**out, **uncut}


def _plain_scalar(value, limit: int) -> bool:
    if isinstance(value, str):
        return len(value) <= limit
    if value is None or isinstance(value, bool | float):
        return True
    return isinstance(value, int) and -(1 << 63) <= value < (1 << 64)


def _plain(record: dict) -> bool:
    """Whether ``bounded`` would return the record unchanged, decided cheaply and conservatively:
    few fields with short names, each a scalar within its bound or a short flat list or object
    of them, and at most RECORD_BYTES in all (counted at the worst case, 12 bytes a character)."""
    if len(record) > FIELDS:
        return False
    size = 32
    for name, value in record.items():
        if name in UNCUT:
            continue
        if not isinstance(name, str) or len(name) > KEY_CHARS:
            return False
        limit = FIELD_CHARS_BY_NAME.get(name, FIELD_CHARS)
        if isinstance(value, dict | list):
            keys = list(value) if isinstance(value, dict) else []
            values = list(value.values()) if isinstance(value, dict) else value
            if (len(value) > ITEMS or not all(isinstance(k, str) and len(k) <= KEY_CHARS for k in keys)
                    or not all(_plain_scalar(v, FIELD_CHARS) for v in values)):
                return False
            size += sum(_size_bound(k) + 1 for k in keys) + sum(_size_bound(v) + 1 for v in values) + 2
        elif not _plain_scalar(value, limit):
            return False
        else:
            size += _size_bound(value)
        size += 12 * len(name) + 3
    return size <= RECORD_BYTES


def _size_bound(value) -> int:
    """At least the size of a bounded value in canonical JSON, cheaply for the usual ones."""
    if isinstance(value, str):
        return 12 * len(value) + 3  # ensure_ascii: 12 bytes for a character outside the BMP, at most
    if isinstance(value, dict | list):
        return len(canonical([value]))
    return 24  # a bounded number, true, false or null


def _shrink(out: dict) -> None:
    """Replace the largest fields by a marker until the record is within RECORD_BYTES."""
    size = len(canonical(out))
    for name in sorted(out, key=lambda n: -len(canonical({n: out[n]}))):
        before = len(canonical({name: out[name]}))
        out[name] = CUT.format(f"record over {RECORD_BYTES} bytes")
        size -= before - len(canonical({name: out[name]}))
        if size <= RECORD_BYTES:
            return


# -- the chain -----------------------------------------------------------------------


def canonical(record: dict) -> bytes:
    return json.dumps(record, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode()


def mac(key: bytes, record: dict) -> str:
    return hmac.new(key, canonical({k: v for k, v in record.items() if k != "mac"}), hashlib.sha256).hexdigest()


class Chain:
    """The chain's state: the next sequence number and the last MAC."""

    def __init__(self, key: bytes, seq: int = 0, last: str = GENESIS):
        self.key = key
        self.seq = seq
        self.last = last

    def seal(self, record: dict) -> str:
        """The record as its line (without the newline), chained; advances the chain.

        Raises TypeError or ValueError (and leaves the chain as it was) for a record that
        is not JSON; ``bounded`` records always are.
        """
        record = {**{k: v for k, v in record.items() if k != "mac"}, "seq": self.seq + 1, "prev": self.last}
        body = canonical(record)
        sealed = hmac.new(self.key, body, hashlib.sha256).hexdigest()
        self.seq, self.last = record["seq"], sealed
        # One serialisation: the canonical form with the MAC appended as the last field.
        return body[:-1].decode() + f',"mac":"{sealed}"}}'


# -- reading the end of a log --------------------------------------------------------

BLOCK = 65536
LINE_LIMIT = 64 << 20  # a line longer than this is not one the writer made: skipped unread


def _lines_backwards(fd: int):
    """The file's newline-ended lines, last first, without their newline (None for a line
    over LINE_LIMIT). Bytes after the last newline (a line torn by a crash) are skipped."""
    pos = os.fstat(fd).st_size
    pieces: list[bytes] = []
    length, ended = 0, False  # ended: a newline has been seen, so `pieces` is a whole line's tail
    while pos > 0:
        start = max(0, pos - BLOCK)
        chunk = os.pread(fd, pos - start, start)
        pos, end = start, len(chunk)
        while (cut := chunk.rfind(b"\n", 0, end)) >= 0:
            if ended:
                pieces.append(chunk[cut + 1:end])
                yield b"".join(reversed(pieces)) if length + end - cut - 1 <= LINE_LIMIT else None
            pieces, length, ended, end = [], 0, True, cut
        if ended:
            length += end
            if length <= LINE_LIMIT:
                pieces.append(chunk[:end])
    if ended:
        yield b"".join(reversed(pieces)) if length <= LINE_LIMIT else None


def _tail_of(fd: int) -> tuple[int, str]:
    """(seq, mac) of the last complete, valid record in the open file; (0, GENESIS) if none."""
    if not stat.S_ISREG(os.fstat(fd).st_mode):
        return 0, GENESIS  # not a file a chain can continue in
    for line in _lines_backwards(fd):
        try:
            record = json.loads(line)
            return int(record["seq"]), str(record["mac"])
        except (ValueError, KeyError, TypeError):
            continue  # a torn or foreign line: the chain continues from the record before it
    return 0, GENESIS


def _ends_torn(fd: int) -> bool:
    """Whether a regular file's last line has no newline (a write cut short by a crash)."""
    info = os.fstat(fd)
    return stat.S_ISREG(info.st_mode) and info.st_size > 0 and os.pread(fd, 1, info.st_size - 1) != b"\n"


def tail_state(path: str) -> tuple[int, str]:
    """(seq, mac) of the last complete line of an existing log, to continue its chain."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except FileNotFoundError:
        return 0, GENESIS
    try:
        return _tail_of(fd)
    finally:
        os.close(fd)


# -- the writer ----------------------------------------------------------------------

BATCH = 512  # records in one write and sync, at most


class Writer:
    """Appends sealed lines to the log file (opened O_APPEND, 0640) and reports its health.

    ``await commit(record)``: durable, batched with concurrent commits (the gateway's way).
    ``write(record)``: synchronous, for callers without an event loop; not while commits
    are in flight (the two would interleave in the file out of chain order).
    """

    def __init__(self, path: str, key: bytes, fail_open: bool = False):
        self.path = path
        self.fail_open = fail_open
        self.fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o640)
        self.chain = Chain(key, *_tail_of(self.fd))
        self.torn = _ends_torn(self.fd)  # the next write starts on a new line
        self.regular = stat.S_ISREG(os.fstat(self.fd).st_mode)  # a pipe or a device: no sync, no undo
        self.resync = False  # a failed write could not be cut off: re-read the chain's end first
        self.healthy = True
        self.failures = 0
        self.written = 0
        self._pending: list[tuple[dict, asyncio.Future]] = []
        self._inflight: asyncio.Future | None = None  # the batch in the writer's thread, done when it is
        self._thread: ThreadPoolExecutor | None = None

    # -- both paths --------------------------------------------------------------

    def _append(self, data: bytes, durable: bool) -> None:
        """Append whole lines (and sync them if durable); on failure, undo and raise OSError."""
        if self.torn:
            data = b"\n" + data
        start = os.lseek(self.fd, 0, os.SEEK_END) if self.regular else None
        try:
            view = memoryview(data)
            while view:
                done = os.write(self.fd, view)
                if done <= 0:
                    raise OSError("short write")
                view = view[done:]
            if durable and self.regular:
                os.fdatasync(self.fd)
        except OSError:
            if start is not None:
                try:
                    os.ftruncate(self.fd, start)  # the file stays line-aligned, as the chain was
                except OSError:
                    self.torn = self.resync = True  # what was written stays: continue from it
            raise
        self.torn = False

    def _resync(self) -> None:
        self.chain.seq, self.chain.last = _tail_of(self.fd)
        self.torn = _ends_torn(self.fd)
        self.resync = False

    def _settle(self, ok: bool, count: int) -> None:
        if ok:
            self.healthy = True
            self.written += count
        else:
            self.healthy = False
            self.failures += count

    def may_serve(self) -> bool:
        return self.healthy or self.fail_open

    # -- synchronous -------------------------------------------------------------

    def write(self, record: dict, durable: bool = False) -> str | None:
        """Seal and append one record; returns its line, or None when it could not be written.

        Not synced unless ``durable`` (then one fdatasync for this record, on this thread).
        """
        if self._inflight is not None or self._pending:
            raise RuntimeError("Writer.write while commits are in flight: use commit")
        if self.resync:
            self._resync()
        state = (self.chain.seq, self.chain.last)
        line = self.chain.seal(bounded(record))
        try:
            self._append((line + "\n").encode(), durable)
        except OSError:
            if not self.resync:
                self.chain.seq, self.chain.last = state  # the chain continues from what is on disk
            self._settle(False, 1)
            return None
        self._settle(True, 1)
        return line

    # -- group commit ------------------------------------------------------------

    async def commit(self, record: dict) -> str:
        """Seal the record into the chain, append it and return its line once it is durable.

        Records are chained in the order of the calls. Raises AuditWriteError when the
        record could not be written or synced (then ``may_serve`` is False until a later
        write succeeds, unless fail_open). A caller cancelled while waiting does not take
        its record back: it is written all the same.
        """
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._pending.append((bounded(record), future))
        if self._inflight is None and len(self._pending) == 1:
            # Started at the end of this turn of the loop, so the commits made in it share a batch.
            loop.call_soon(self._next_batch, loop)
        return await future

    # Callbacks rather than a task awaiting the thread: a commit costs one wake-up of the event
    # loop after its sync (the thread's), not three; on the gateway's path of every answer.

    def _next_batch(self, loop: asyncio.AbstractEventLoop) -> None:
        """Seal the next batch here (the chain follows the order of the calls) and hand its
        write and sync to the writer's thread; `_batch_done` takes its outcome back."""
        while self._pending and self._inflight is None:
            batch, self._pending = self._pending[:BATCH], self._pending[BATCH:]
            if self.resync:
                self._resync()
            state = (self.chain.seq, self.chain.last)
            lines, waiting = [], []
            for record, future in batch:
                try:
                    lines.append(self.chain.seal(record))
                    waiting.append(future)
                except (TypeError, ValueError) as exc:
                    _resolve(future, error=AuditWriteError(f"audit record not serialisable: {exc}"))
            if not lines:
                continue
            if self._thread is None:
                self._thread = ThreadPoolExecutor(1, thread_name_prefix="audit-log")
            try:
                work = self._thread.submit(self._append, ("\n".join(lines) + "\n").encode(), True)
            except RuntimeError as exc:  # the writer was closed meanwhile
                self._batch_failed(state, waiting, exc)
                continue
            self._inflight = loop.create_future()

            def done(work, state=state, lines=lines, waiting=waiting) -> None:  # in the writer's thread
                if not loop.is_closed():
                    loop.call_soon_threadsafe(self._batch_done, loop, work, state, lines, waiting)

            work.add_done_callback(done)

    def _batch_done(self, loop, work, state: tuple, lines: list[str], waiting: list[asyncio.Future]) -> None:
        error = work.exception()
        if error is None:
            self._settle(True, len(lines))
            for future, line in zip(waiting, lines, strict=True):
                _resolve(future, line)
        else:
            self._batch_failed(state, waiting, error)
        inflight, self._inflight = self._inflight, None
        inflight.set_result(None)
        self._next_batch(loop)

    def _batch_failed(self, state: tuple, waiting: list[asyncio.Future], error: BaseException) -> None:
        if not self.resync:
            self.chain.seq, self.chain.last = state  # the chain continues from what is on disk
        self._settle(False, len(waiting))
        for future in waiting:
            _resolve(future, error=AuditWriteError(f"audit log write failed: {error}"))

    async def aclose(self) -> None:
        """Wait for the commits in flight, then close."""
        while self._inflight is not None or self._pending:
            if self._inflight is None:
                await asyncio.sleep(0)  # the batch starts at the end of this turn
            else:
                await asyncio.shield(self._inflight)
        self.close()

    def close(self) -> None:
        if self._thread is not None:
            self._thread.shutdown(wait=True)
            self._thread = None
        os.close(self.fd)


def _resolve(future: asyncio.Future, line: str | None = None, error: BaseException | None = None) -> None:
    if future.done():
        return  # its caller gave up waiting (the record is written all the same)
    if error is not None:
        future.set_exception(error)
    else:
        future.set_result(line)


# -- verification --------------------------------------------------------------------


@dataclass
class Verdict:
    ok: bool
    lines: int  # chained records read
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # torn lines the chain continues across


def verify_lines(lines, key: bytes, max_problems: int = 20) -> Verdict:
    """Check every line's MAC, sequence and link to the line before.

    A line cut short mid-write (it starts like a record but is not JSON) is a note, not a
    problem, when the next record chains to the one before it, or when it is the last
    line: nothing is missing around it. Otherwise it is ``not a chained record``.
    """
    problems: list[str] = []
    notes: list[str] = []
    expected_seq, prev = None, None
    torn = None  # the number of a line that looks torn, until the next record judges it
    count = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        chained = _chained(raw)
        if chained is None:
            if torn is not None:
                problems.append(f"line {torn}: not a chained record")
            torn = number if raw.startswith("{") and not _parses(raw) else None
            if torn is None:
                problems.append(f"line {number}: not a chained record")
            continue
        record, seq, link, given = chained
        count += 1
        if not hmac.compare_digest(str(given), mac(key, record)):
            problems.append(f"line {number}: MAC does not match: the line was edited, or the key is wrong")
        breaks = []
        if expected_seq is None:
            if seq != 1 or link != GENESIS:
                breaks.append(f"line {number}: the log starts at seq {seq}, not 1: lines before it are missing")
        else:
            if seq != expected_seq:
                breaks.append(f"line {number}: seq {seq} where {expected_seq} was expected: lines deleted or reordered")
            if link != prev:
                breaks.append(f"line {number}: does not chain to the line before it")
        if torn is not None:
            if breaks:
                problems.append(f"line {torn}: not a chained record")
            else:
                notes.append(f"line {torn}: {TORN}; the chain continues across it")
        problems.extend(breaks)
        torn, expected_seq, prev = None, seq + 1, given
        if len(problems) >= max_problems:
            problems.append(f"... (stopped after {max_problems} problems)")
            break
    if torn is not None:
        notes.append(f"line {torn}: the last line, {TORN}")
    return Verdict(not problems, count, problems, notes)


TORN = "a record cut short (a crash, or a full disk, mid-write)"


def _chained(raw: str) -> tuple[dict, int, object, object] | None:
    try:
        record = json.loads(raw)
        return record, int(record["seq"]), record["prev"], record["mac"]
    except (ValueError, KeyError, TypeError):
        return None


def _parses(raw: str) -> bool:
    try:
        json.loads(raw)
    except ValueError:
        return False
    return True


def verify_file(path: str, key: bytes) -> Verdict:
    with open(path, encoding="ascii", errors="replace") as handle:
        return verify_lines(handle, key)
