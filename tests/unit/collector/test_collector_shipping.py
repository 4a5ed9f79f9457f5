"""Small rules of shipping: Retry-After, interval counters, stable source event ids."""

from __future__ import annotations

from collections import Counter
from email.utils import format_datetime
from datetime import datetime, timedelta, timezone

from anysentry.collector.node import source_event_id
from anysentry.collector.shipper import MAX_RETRY_AFTER, backoff, retry_after
from anysentry.collector.stats import CollectorStats


def test_retry_after_in_seconds_or_as_a_date_capped():
    assert retry_after("5") == 5.0
    assert retry_after("100000") == MAX_RETRY_AFTER
    soon = format_datetime(datetime.now(timezone.utc) + timedelta(seconds=120), usegmt=True)
    assert 100 < retry_after(soon) <= 120
    assert retry_after(format_datetime(datetime(2000, 1, 1, tzinfo=timezone.utc), usegmt=True)) == 0.0
    assert retry_after("soon") is None and retry_after(None) is None


def test_backoff_grows_and_stops_at_the_cap():
    assert all(0.25 <= backoff(1, 60) <= 0.5 for _ in range(50))
    assert all(30 <= backoff(30, 60) <= 60 for _ in range(50))


def test_a_heartbeat_takes_only_what_it_carried_off_the_interval_counters():
    stats = CollectorStats()
    stats.observed("ToolExec", 3)
    stats.count("dropped", 2)
    carried = Counter(stats.kinds)
    stats.observed("ToolExec")  # arrives while the heartbeat is in flight
    stats.observed("Egress")
    stats.heartbeat_sent(carried, 2, 0)
    assert stats.kinds == Counter({"ToolExec": 1, "Egress": 1}) and stats.dropped == 0
    assert stats.totals["observed"] == 5 and stats.totals["dropped"] == 2


def test_source_event_ids_are_stable_per_logical_event():
    first = source_event_id("node-a", "2049:1234", "0", '{"a":1}')
    assert first == source_event_id("node-a", "2049:1234", "0", '{"a":1}') and first.startswith("ose_")
    assert len(first) == 28
    assert first != source_event_id("node-a", "2049:1234", "8", '{"a":1}')  # the same text later in the file
    assert first != source_event_id("node-b", "2049:1234", "0", '{"a":1}')
