"""The audit budget for refusals of unauthenticated requests, per source (issue 15, item 7)."""

from __future__ import annotations

import pytest

from citadel_runtime.gateway.budget import OTHER, SourceBudget, source_key, summary_record


def test_each_source_has_a_burst_then_a_rate():
    budget = SourceBudget(records_per_second=2, burst=3, max_sources=100)
    assert [budget.allow("a", now=0.0) for _ in range(5)] == [True, True, True, False, False]
    assert budget.allow("b", now=0.0)  # another source: its own bucket
    assert budget.allow("a", now=0.5) and not budget.allow("a", now=0.5)  # 2/s: one token in 0.5 s
    assert [budget.allow("a", now=100.0) for _ in range(4)] == [True, True, True, False]  # refilled to the burst
    assert budget.take_suppressed() == {"a": 4}
    assert budget.take_suppressed() == {}  # taken: counted again from zero


def test_the_clock_going_backwards_adds_nothing():
    budget = SourceBudget(records_per_second=1, burst=1, max_sources=10)
    assert budget.allow("a", now=10.0)
    assert not budget.allow("a", now=5.0) and not budget.allow("a", now=10.5)
    assert budget.allow("a", now=11.0)


def test_memory_is_bounded_by_max_sources_and_the_least_recent_source_goes_first():
    budget = SourceBudget(records_per_second=1, burst=1, max_sources=2, overall_per_second=1e9, overall_burst=10**9)
    assert budget.allow("a", now=0) and budget.allow("b", now=0)
    assert not budget.allow("a", now=0)  # a is now the most recent
    assert budget.allow("c", now=0)  # b is forgotten
    assert list(budget.buckets) == ["a", "c"]
    assert budget.allow("b", now=0)  # comes back with a full bucket
    flood = SourceBudget(records_per_second=1, burst=1, max_sources=1000, overall_per_second=1e9, overall_burst=10**9)
    for n in range(20_000):
        source = f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"
        flood.allow(source, now=0)
        flood.allow(source, now=0)  # over its budget: counted
    assert len(flood.buckets) == 1000
    suppressed = flood.take_suppressed()
    assert len(suppressed) == 1001 and suppressed[OTHER] == 19_000 and sum(suppressed.values()) == 20_000


def test_many_sources_together_cannot_exceed_the_overall_budget():
    budget = SourceBudget(records_per_second=10, burst=10, max_sources=100_000, overall_per_second=100,
                          overall_burst=50)
    allowed = sum(budget.allow(f"192.0.2.{n % 250}:{n}", now=0.0) for n in range(10_000))
    assert allowed == 50
    allowed = sum(budget.allow(f"198.51.100.{n % 250}", now=1.0) for n in range(10_000))
    assert allowed == 50  # 100 tokens earned in a second, capped at the overall burst
    default = SourceBudget(records_per_second=1, burst=2, max_sources=10_000)
    assert sum(default.allow(f"s{n}", now=0.0) for n in range(10_000)) == 64  # by default: 32 sources' bursts


def test_a_budget_needs_positive_limits():
    for args in ((0, 1, 1), (1, 0, 1), (1, 1, 0)):
        with pytest.raises(ValueError):
            SourceBudget(*args)


@pytest.mark.parametrize("address,key", [
    ("192.0.2.7", "192.0.2.7"),
    ("2001:db8:1:2:3:4:5:6", "2001:db8:1:2::/64"),
    ("2001:db8:1:2:ffff::1", "2001:db8:1:2::/64"),  # the same host's other address: the same budget
    ("::ffff:192.0.2.7", "192.0.2.7"),
    ("fe80::1%eth0", "fe80::/64"),
    ("-", "-"),
    ("x" * 100, "x" * 64),
])
def test_sources_are_keyed_by_address_and_ipv6_by_its_64(address, key):
    assert source_key(address) == key


def test_the_summary_record_says_what_was_not_recorded():
    record = summary_record("192.0.2.7", 1234)
    assert record["suppressed"] == 1234 and record["source"] == "192.0.2.7"
    assert record["refusal"] == "1234 refusals from 192.0.2.7 not recorded individually (over its audit budget)"
