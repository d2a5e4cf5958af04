"""Leader election's rule (kova.adapters.leader): who may write itself into the Lease, judged on this process's
own clock from when it last saw the record change."""

from __future__ import annotations

from kova.adapters.leader import Record, Timing, may_take


def test_a_held_lease_is_taken_only_after_its_duration_without_change() -> None:
    held = Record("replica-a", 15, "2026-12-02T10:00:00Z")
    assert not may_take(held, "replica-b", seen_since=100.0, now=114.9)
    assert may_take(held, "replica-b", seen_since=100.0, now=115.0)


def test_the_holder_renews_and_a_released_lease_is_free_at_once() -> None:
    assert may_take(Record("replica-a", 15, "t"), "replica-a", seen_since=100.0, now=100.0)
    assert may_take(Record("", 1, "t"), "replica-b", seen_since=100.0, now=100.0)


def test_timing_keeps_client_go_ratios() -> None:
    t = Timing(15)
    assert (t.renew_deadline, t.retry) == (10, 2)
    assert Timing(6).retry < Timing(6).renew_deadline < 6
