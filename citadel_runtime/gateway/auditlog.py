"""The interaction record: one JSON line per request, each chained to the one before by HMAC.

Each line is a JSON object with ``seq`` (1, 2, ...), ``prev`` (the previous line's ``mac``;
64 zeros for the first) and ``mac`` = HMAC-SHA256(key, the line without ``mac``, as
canonical JSON). The key lives in Vault (``gateway/audit-hmac-key``); the gateway reads the
copy its agent renders and the auditor's ``citadel audit-log verify`` reads Vault. So
editing a line breaks its MAC, deleting or reordering lines breaks the chain and the
sequence, and cutting lines off the end shows as a sequence that stops short of the
gateway's own count (its metrics, and the journal's copy of every line).

The record holds digests of request and response bodies, never the bodies (content is
recorded only where the inventory turns it on for a client, and then encrypted: not in this
version, see the role's README).

If a line cannot be written (a full disk), the writer marks itself unhealthy and the gateway
refuses new requests (503) until a write works again, unless ``fail_open`` is configured.

Example::

    >>> import io
    >>> out = io.StringIO(); log = Chain(b"k" * 32)
    >>> for n in range(3): _ = out.write(log.seal({"status": 200}) + "\\n")
    >>> verify_lines(out.getvalue().splitlines(), b"k" * 32).ok
    True
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import stat
from dataclasses import dataclass, field

GENESIS = "0" * 64


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
        """The record as its line (without the newline), chained; advances the chain."""
        record = {**record, "seq": self.seq + 1, "prev": self.last}
        body = canonical(record)
        sealed = hmac.new(self.key, body, hashlib.sha256).hexdigest()
        self.seq, self.last = record["seq"], sealed
        # One serialisation: the canonical form with the MAC appended as the last field.
        return body[:-1].decode() + f',"mac":"{sealed}"}}'


def tail_state(path: str) -> tuple[int, str]:
    """(seq, mac) of the last complete line of an existing log, to continue its chain."""
    try:
        with open(path, "rb") as handle:
            if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
                return 0, GENESIS  # not a file a chain can continue in
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - 65536))
            lines = handle.read(65536).splitlines()
    except FileNotFoundError:
        return 0, GENESIS
    for line in reversed(lines):
        try:
            record = json.loads(line)
            return int(record["seq"]), str(record["mac"])
        except (ValueError, KeyError, TypeError):
            continue
    return 0, GENESIS


class Writer:
    """Appends sealed lines to the log file (opened O_APPEND, 0640) and reports its health."""

    def __init__(self, path: str, key: bytes, fail_open: bool = False):
        self.path = path
        self.fail_open = fail_open
        seq, last = tail_state(path)
        self.chain = Chain(key, seq, last)
        self.fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        self.healthy = True
        self.failures = 0
        self.written = 0

    def write(self, record: dict) -> str | None:
        """Seal and append one record; returns its line, or None when it could not be written."""
        state = (self.chain.seq, self.chain.last)
        line = self.chain.seal(record)
        data = (line + "\n").encode()
        try:
            done = os.write(self.fd, data)
            if done != len(data):
                # A short write (disk full mid-line): cut it off so the file stays line-aligned.
                os.ftruncate(self.fd, os.lseek(self.fd, 0, os.SEEK_END) - done)
                raise OSError("short write")
        except OSError:
            self.chain.seq, self.chain.last = state  # the chain continues from what is on disk
            self.healthy = False
            self.failures += 1
            return None
        self.healthy = True
        self.written += 1
        return line

    def may_serve(self) -> bool:
        return self.healthy or self.fail_open

    def close(self) -> None:
        os.close(self.fd)


@dataclass
class Verdict:
    ok: bool
    lines: int
    problems: list[str] = field(default_factory=list)


def verify_lines(lines, key: bytes, max_problems: int = 20) -> Verdict:
    """Check every line's MAC, sequence and link to the line before."""
    problems: list[str] = []
    expected_seq, prev = None, None
    count = 0
    for number, raw in enumerate(lines, start=1):
        if not raw.strip():
            continue
        count += 1
        try:
            record = json.loads(raw)
            seq, link, given = int(record["seq"]), record["prev"], record["mac"]
        except (ValueError, KeyError, TypeError):
            problems.append(f"line {number}: not a chained record")
            expected_seq, prev = None, None
            continue
        if not hmac.compare_digest(str(given), mac(key, record)):
            problems.append(f"line {number}: MAC does not match: the line was edited, or the key is wrong")
        if expected_seq is None:
            if count == 1 and (seq != 1 or link != GENESIS):
                problems.append(f"line {number}: the log starts at seq {seq}, not 1: lines before it are missing")
        else:
            if seq != expected_seq:
                problems.append(f"line {number}: seq {seq} where {expected_seq} was expected: lines deleted or reordered")
            if link != prev:
                problems.append(f"line {number}: does not chain to the line before it")
        expected_seq, prev = seq + 1, given
        if len(problems) >= max_problems:
            problems.append("... (stopped after 20 problems)")
            break
    return Verdict(not problems, count, problems)


def verify_file(path: str, key: bytes) -> Verdict:
    with open(path, encoding="ascii", errors="replace") as handle:
        return verify_lines(handle, key)
