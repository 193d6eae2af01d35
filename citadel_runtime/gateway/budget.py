"""How many refusals of unauthenticated requests each source may add to the audit log.

Every request gets a record, but a flood of tiny unauthenticated requests (a scanner, or
someone filling the disk on purpose) would otherwise add megabytes a second to the log, and
a full log disk stops the gateway for everyone. So refusals of *unauthenticated* requests
are budgeted per source address: a token bucket of ``records_per_second`` with ``burst``,
and one bucket over all sources together, so that many addresses cannot add up to a flood.
A refusal within budget is recorded one by one as usual; one over it is only counted, and
the gateway writes one summary record per source and interval ("N refusals from SOURCE not
recorded individually", from ``take_suppressed``).

The trade-off: for a flood of refused unauthenticated requests the log keeps a count per
source, not each request, so a flood cannot fill the disk. Every authenticated request, and
so every request that reached a model, is still recorded one by one; the gateway does not
ask this budget about them.

Memory is bounded: at most ``max_sources`` buckets (the least recently seen source is
forgotten first; it comes back with a full bucket) and as many suppressed counts (beyond
that, counts go to the source ``OTHER``). IPv6 clients are budgeted per /64
(``source_key``), the block one host usually holds.

Example::

    >>> budget = SourceBudget(records_per_second=1, burst=2, max_sources=1000)
    >>> [budget.allow("192.0.2.7", now=0.0) for _ in range(4)]
    [True, True, False, False]
    >>> budget.allow("192.0.2.7", now=1.0)  # a second later: one more token
    True
    >>> budget.take_suppressed()
    {'192.0.2.7': 2}
    >>> summary_record("192.0.2.7", 2)["refusal"]
    '2 refusals from 192.0.2.7 not recorded individually (over its audit budget)'
"""

from __future__ import annotations

import ipaddress
import time
from collections import OrderedDict

OTHER = "other sources"  # where counts go once max_sources sources have suppressed counts
OVERALL_FACTOR = 32  # the overall bucket, by default: as many as 32 sources at their full rate


class SourceBudget:
    """Token buckets per source (LRU-bounded) plus one overall; counts what they refuse."""

    def __init__(self, records_per_second: float, burst: int, max_sources: int, *,
                 overall_per_second: float | None = None, overall_burst: int | None = None):
        if records_per_second <= 0 or burst < 1 or max_sources < 1:
            raise ValueError("records_per_second > 0, burst >= 1 and max_sources >= 1 are required")
        self.rate = float(records_per_second)
        self.burst = float(burst)
        self.max_sources = max_sources
        self.overall_rate = float(overall_per_second or records_per_second * OVERALL_FACTOR)
        self.overall_burst = float(overall_burst or burst * OVERALL_FACTOR)
        self.overall = [self.overall_burst, None]  # tokens, when last filled
        self.buckets: OrderedDict[str, list] = OrderedDict()
        self.suppressed: dict[str, int] = {}

    def allow(self, source: str, now: float | None = None) -> bool:
        """Whether this source's refusal may be recorded on its own; if not, it is counted."""
        now = time.monotonic() if now is None else now
        bucket = self.buckets.get(source)
        if bucket is None:
            bucket = self.buckets[source] = [self.burst, now]
            if len(self.buckets) > self.max_sources:
                self.buckets.popitem(last=False)
        else:
            self.buckets.move_to_end(source)
        _fill(bucket, now, self.rate, self.burst)
        _fill(self.overall, now, self.overall_rate, self.overall_burst)
        if bucket[0] >= 1 and self.overall[0] >= 1:
            bucket[0] -= 1
            self.overall[0] -= 1
            return True
        key = source if source in self.suppressed or len(self.suppressed) < self.max_sources else OTHER
        self.suppressed[key] = self.suppressed.get(key, 0) + 1
        return False

    def take_suppressed(self) -> dict[str, int]:
        """The refusals not recorded individually since the last call, per source; resets them."""
        taken, self.suppressed = self.suppressed, {}
        return taken


def _fill(bucket: list, now: float, rate: float, burst: float) -> None:
    """Add the tokens earned since the bucket was last filled ([tokens, when])."""
    tokens, last = bucket
    if last is None or now > last:
        bucket[0] = tokens if last is None else min(burst, tokens + (now - last) * rate)
        bucket[1] = now


def source_key(address: str) -> str:
    """The budget's key for a peer address: IPv4 as is, IPv6 by its /64 (IPv4-mapped: the IPv4)."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return address[:64]
    if ip.version == 6:
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def summary_record(source: str, count: int) -> dict:
    """The fields of the record that stands for ``count`` refusals from one source."""
    return {"source": source, "status": None, "suppressed": count,
            "refusal": f"{count} refusals from {source} not recorded individually (over its audit budget)"}
