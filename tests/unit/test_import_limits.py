"""Fair import slots between namespaces, and the deadline and minimum rate of an import (issue 17)."""

from __future__ import annotations

import asyncio

import pytest

from kova.adapters import env
from kova.adapters.runtime import ImportSlots, Settings
from kova.image.fairness import Waiter, next_import
from kova.image.pace import Limits, Pace, verdict
from kova.openstack.image.glance import GlanceError, check_upload_slots

STORE = {"KOVA_S3_ENDPOINT": "127.0.0.1:9000", "KOVA_S3_ACCESS_KEY": "a", "KOVA_S3_SECRET_KEY": "b"}


# ----------------------------------------------------------------------------------------------- fairness
def queue(*namespaces: str) -> list[Waiter]:
    return [Waiter(ns, i) for i, ns in enumerate(namespaces)]


def test_the_namespace_with_fewer_running_imports_goes_first() -> None:
    assert next_import(queue("a", "a", "b"), {"a": 3}, {"a": 9}) == 2


def test_namespaces_take_turns_when_they_run_as_many() -> None:
    """A's first import just ended (nothing running anywhere): B, never served, goes before A's second."""
    assert next_import(queue("a", "b"), {}, {"a": 0}) == 1
    assert next_import(queue("a", "b"), {}, {"a": 5, "b": 3}) == 1  # B was served longer ago


def test_first_come_first_served_within_a_namespace_and_alone() -> None:
    assert next_import(queue("a", "a", "a"), {"a": 1}, {"a": 2}) == 0
    assert next_import([Waiter("a", 7), Waiter("a", 3)], {}, {}) == 1


def test_nobody_waiting_is_a_mistake() -> None:
    with pytest.raises(ValueError):
        next_import([], {}, {})


def test_slots_in_order_with_one_slot() -> None:
    """With one slot: A holds it, A's second and then B's first wait; B's runs before A's second. A
    namespace alone may use every slot."""
    async def scenario() -> list[str]:
        slots, order = ImportSlots(1), []
        assert slots.take("a")

        async def run(ns: str, label: str) -> None:
            await slots.wait(ns)
            order.append(label)
            await asyncio.sleep(0)
            slots.release(ns)
        a2 = asyncio.ensure_future(run("a", "a2"))
        await asyncio.sleep(0)
        b1 = asyncio.ensure_future(run("b", "b1"))
        await asyncio.sleep(0)
        assert order == [] and len(slots.waiting) == 2
        slots.release("a")
        await asyncio.gather(a2, b1)
        many = ImportSlots(3)
        assert [many.take("c") for _ in range(4)] == [True, True, True, False]
        return order
    assert asyncio.run(scenario()) == ["b1", "a2"]


def test_a_waiter_that_gives_up_leaves_nothing_behind() -> None:
    async def scenario() -> None:
        slots = ImportSlots(1)
        assert slots.take("a")
        waiting = asyncio.ensure_future(slots.wait("b"))
        await asyncio.sleep(0)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        assert slots.waiting == [] and "b" not in slots.last_served
        slots.release("a")
        assert slots.busy() == 0 and slots.last_served == {} and slots.take("b")
        # Granted and cancelled before it could run: the slot goes back.
        granted = asyncio.ensure_future(slots.wait("c"))
        await asyncio.sleep(0)
        slots.release("b")
        granted.cancel()
        with pytest.raises(asyncio.CancelledError):
            await granted
        assert slots.busy() == 0
    asyncio.run(scenario())


# -------------------------------------------------------------------------------------- deadline and rate
def test_the_deadline_ends_an_import_that_moves_fast_enough() -> None:
    limits = Limits(deadline=100, min_rate=10, window=10)
    assert verdict(limits, 0, (90, 9000), (100, 10_000), 20_000) is None
    late = verdict(limits, 0, (91, 9000), (101, 10_100), 20_000)
    assert late is not None and late.reason == "ImportTimeout"
    assert "100 seconds" in late.message and "10100 of 20000 bytes" in late.message
    assert verdict(Limits(deadline=0, min_rate=0), 0, (0, 0), (10**6, 1), None) is None  # both off


def test_a_source_that_trickles_is_too_slow_once_a_window_has_passed() -> None:
    limits = Limits(deadline=0, min_rate=1024, window=60)
    pace = Pace(limits, started=0)
    assert pace.verdict(30, 30, 10**9) is None  # not a whole window yet
    slow = pace.verdict(60, 60, 10**9)
    assert slow is not None and slow.reason == "ImportTooSlow"
    assert "60 bytes in the last 60 seconds (1 bytes/s)" in slow.message and "1024 bytes/s" in slow.message


def test_the_rate_is_that_of_the_last_window_only() -> None:
    """A fast start does not buy a stall later: only the last window counts."""
    pace = Pace(Limits(deadline=0, min_rate=1000, window=10), started=0)
    assert pace.verdict(5, 10**6, None) is None
    assert pace.verdict(12, 10**6 + 20_000, None) is None  # window from 0: plenty
    stalled = pace.verdict(22, 10**6 + 20_000, None)  # window from 12: nothing moved
    assert stalled is not None and stalled.reason == "ImportTooSlow" and "0 bytes in the last 10" in stalled.message
    assert len(pace.samples) <= 3


def test_settings_of_the_limits(monkeypatch: pytest.MonkeyPatch) -> None:
    for k, v in STORE.items():
        monkeypatch.setenv(k, v)
    assert Settings.from_env().import_limits == Limits(deadline=21600, min_rate=1024, window=60)
    monkeypatch.setenv("KOVA_IMPORT_DEADLINE", "3600")
    monkeypatch.setenv("KOVA_IMPORT_MIN_RATE", "64Ki")
    monkeypatch.setenv("KOVA_IMPORT_MIN_RATE_WINDOW", "30")
    assert Settings.from_env().import_limits == Limits(deadline=3600, min_rate=65536, window=30)
    monkeypatch.setenv("KOVA_IMPORT_MIN_RATE", "0")
    assert Settings.from_env().import_limits.min_rate == 0
    for name, value, said in (("KOVA_IMPORT_DEADLINE", "-1", "below its minimum"),
                              ("KOVA_IMPORT_MIN_RATE", "fast", "is not a size"),
                              ("KOVA_IMPORT_MIN_RATE_WINDOW", "0", "below its minimum of 1")):
        monkeypatch.setenv(name, value)
        with pytest.raises(env.BadSetting, match=f"{name}.*{said}"):
            Settings.from_env()
        monkeypatch.delenv(name)


def test_a_store_that_holds_the_import_back_is_not_the_sources_fault() -> None:
    """While the import waits for the store, the rate window starts again; the deadline still holds."""
    pace = Pace(Limits(deadline=100, min_rate=1000, window=10), started=0)
    assert pace.verdict(10, 50, None, store_waited=True) is None
    assert pace.verdict(15, 60, None) is None  # a window has not passed since the store let go
    slow = pace.verdict(21, 70, None)
    assert slow is not None and slow.reason == "ImportTooSlow" and "20 bytes in the last 11" in slow.message
    late = pace.verdict(101, 10**9, None, store_waited=True)
    assert late is not None and late.reason == "ImportTimeout"


# ------------------------------------------------------------------------------------- uploads (kova api)
def test_one_upload_too_many_gets_glances_answer() -> None:
    """Over the project's share: 413, the project's own quota (Glance's image_count_uploading). Over the
    API's total: 503 with Retry-After, the service is busy."""
    check_upload_slots("p", 1, 5, 2, 8)  # room on both counts
    with pytest.raises(GlanceError) as e:
        check_upload_slots("p", 2, 2, 2, 8)
    assert e.value.status == 413 and "image_count_uploading is over limit of 2" in e.value.message
    assert "KOVA_MAX_UPLOADS_PER_PROJECT" in e.value.message and not e.value.headers
    with pytest.raises(GlanceError) as e:
        check_upload_slots("p", 0, 8, 2, 8)
    assert e.value.status == 503 and e.value.headers == {"Retry-After": "10"} and "KOVA_MAX_UPLOADS" in e.value.message
