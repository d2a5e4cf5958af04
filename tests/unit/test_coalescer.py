"""kova.adapters.informer.Coalescer: a failed key is retried by itself, with a back-off of its own.

The Coalescer's sleep is a fake here: it records the delay asked and returns when the test lets it (or at
once), so nothing waits on the wall clock; every wait on a condition has a timeout.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Hashable
from typing import Any

import pytest

from kova.adapters.informer import Coalescer, backoff

SECONDS = 5  # the longest any condition here may take; none takes more than a few loop turns


def run(test: Callable[[], Awaitable[None]]) -> None:
    async def bounded() -> None:  # in the test's own task: the only one left once the Coalescer is done
        async with asyncio.timeout(SECONDS):
            await test()
    asyncio.run(bounded())


class Clock:
    """A fake asyncio.sleep: each call records its delay; with `hold`, it returns only when released."""

    def __init__(self, hold: bool = False) -> None:
        self.delays: list[float] = []
        self.hold = hold
        self.asked = asyncio.Event()
        self._release = asyncio.Event()

    async def sleep(self, seconds: float) -> None:
        self.delays.append(seconds)
        self.asked.set()
        if self.hold:
            await self._release.wait()
            self._release.clear()

    def release(self) -> None:
        self._release.set()


class Flaky:
    """fn(key): fails the first `failures[key]` runs of each key, then succeeds; sets `done` on each success."""

    def __init__(self, **failures: int) -> None:
        self.failures = dict(failures)
        self.runs: dict[Hashable, int] = {}
        self.done: dict[Hashable, asyncio.Event] = {k: asyncio.Event() for k in failures}
        self.ran = asyncio.Event()
        self.running: set[Hashable] = set()
        self.overlapped = False

    async def __call__(self, key: Hashable) -> None:
        self.overlapped |= key in self.running
        self.running.add(key)
        try:
            await asyncio.sleep(0)  # a real reconcile awaits; another kick could arrive here
            self.runs[key] = self.runs.get(key, 0) + 1
            self.ran.set()
            if self.runs[key] <= self.failures.get(str(key), 0):
                raise RuntimeError(f"refused ({key}, run {self.runs[key]})")
            self.done.setdefault(key, asyncio.Event()).set()
        finally:
            self.running.discard(key)


async def idle(coalescer: Coalescer) -> None:
    """Until the Coalescer has nothing running or waiting."""
    while coalescer._running:
        await asyncio.wait(list(coalescer._running.values()))


def test_backoff_doubles_up_to_its_cap_with_a_little_jitter() -> None:
    delays = [backoff(n, 0.5, 60) for n in range(1, 12)]
    for n, delay in enumerate(delays, start=1):
        assert 0.9 * min(60, 0.5 * 2 ** (n - 1)) <= delay <= min(60, 0.5 * 2 ** (n - 1))
    assert backoff(10_000, 0.5, 60) <= 60  # no overflow after days of failures


def test_a_failing_key_is_retried_with_growing_delays_until_it_succeeds(caplog: pytest.LogCaptureFixture) -> None:
    async def test() -> None:
        clock, fn = Clock(), Flaky(a=5)
        coalescer = Coalescer(fn, "test", base=1, cap=8, sleep=clock.sleep)
        coalescer.kick("a")
        await fn.done["a"].wait()
        await idle(coalescer)
        assert fn.runs["a"] == 6 and not fn.overlapped
        assert len(clock.delays) == 5  # one wait per failure, none after the success
        for before, after in zip(clock.delays, clock.delays[1:], strict=False):
            assert after > before or after >= 0.9 * 8  # doubling (less a tenth at most) until the cap
        assert 0.9 * 8 <= clock.delays[-1] <= 8
    run(test)
    failed = [r for r in caplog.records if "failed" in r.getMessage()]
    assert len(failed) == 5 and failed[-1].getMessage().startswith("test a failed (5 in a row); retrying in")


def test_success_resets_the_backoff() -> None:
    async def test() -> None:
        clock, fn = Clock(), Flaky(a=3)
        coalescer = Coalescer(fn, "test", base=1, cap=60, sleep=clock.sleep)
        coalescer.kick("a")
        await fn.done["a"].wait()
        await idle(coalescer)
        first = list(clock.delays)
        fn.failures["a"] = fn.runs["a"] + 1  # fails once more, on its next run
        fn.done["a"].clear()
        coalescer.kick("a")
        await fn.done["a"].wait()
        await idle(coalescer)
        assert len(first) == 3 and first[-1] >= 0.9 * 4
        assert clock.delays[3:] == [pytest.approx(1, rel=0.1)]  # the first delay again, not the fourth
    run(test)


def test_a_kick_during_the_wait_runs_the_key_at_once_never_twice_at_a_time() -> None:
    async def test() -> None:
        clock, fn = Clock(hold=True), Flaky(a=2)
        coalescer = Coalescer(fn, "test", base=1, cap=60, sleep=clock.sleep)
        coalescer.kick("a")
        await clock.asked.wait()  # failed once; waiting (the clock never lets it go by itself)
        assert fn.runs["a"] == 1
        fn.ran.clear()
        clock.asked.clear()
        coalescer.kick("a")
        coalescer.kick("a")  # coalesced with the one before
        await fn.ran.wait()
        assert fn.runs["a"] == 2  # ran without the clock, and failed again
        await clock.asked.wait()
        # A kicked run comes when an event does, not when the timer says: its failure does not lengthen the wait.
        assert clock.delays == [pytest.approx(1, rel=0.1)] * 2
        clock.release()
        await fn.done["a"].wait()
        await idle(coalescer)
        assert fn.runs["a"] == 3 and not fn.overlapped
    run(test)


def test_close_stops_the_retries() -> None:
    async def test() -> None:
        clock, fn = Clock(hold=True), Flaky(a=100)
        coalescer = Coalescer(fn, "test", base=1, cap=60, sleep=clock.sleep)
        coalescer.kick("a")
        await clock.asked.wait()
        await coalescer.close()
        assert coalescer._running == {} and coalescer._kicked == {}
        clock.release()
        coalescer.kick("a")  # after close: ignored (a wake-up timer that fires during shutdown)
        for _ in range(10):
            await asyncio.sleep(0)
        assert fn.runs["a"] == 1 and asyncio.all_tasks() == {asyncio.current_task()}
    run(test)


def test_one_keys_failures_do_not_delay_another_key() -> None:
    async def test() -> None:
        clock, fn = Clock(hold=True), Flaky(a=100, b=0)
        coalescer = Coalescer(fn, "test", base=1, cap=60, sleep=clock.sleep)
        coalescer.kick("a")
        await clock.asked.wait()  # a waits to retry, and would wait for ever
        coalescer.kick("b")
        await fn.done["b"].wait()
        assert fn.runs == {"a": 1, "b": 1} and len(clock.delays) == 1
        await coalescer.close()
    run(test)


def test_a_kick_during_a_failing_run_retries_at_once() -> None:
    """The kick carries news the failed run did not see: no reason to wait before running it."""
    async def test() -> None:
        clock = Clock(hold=True)
        calls: list[Any] = []
        ok = asyncio.Event()

        async def fn(key: Hashable) -> None:
            calls.append(key)
            if len(calls) == 1:
                coalescer.kick(key)  # an event arrives while the run is under way
                raise RuntimeError("conflict")
            ok.set()
        coalescer = Coalescer(fn, "test", base=1, cap=60, sleep=clock.sleep)
        coalescer.kick("a")
        await ok.wait()
        await idle(coalescer)
        assert calls == ["a", "a"] and clock.delays == []
    run(test)


def test_a_namespace_being_deleted_is_not_retried() -> None:
    """The API server refuses every new object in a terminating namespace, and its objects are on their way
    out: as Kubernetes' own controllers do, Kova drops that error instead of retrying it for a minute."""
    import json

    from kubernetes.aio.client.exceptions import ApiException

    from kova.adapters.informer import worth_retrying

    def refused(cause: str) -> ApiException:
        e = ApiException(status=403, reason="Forbidden")
        # As kube-apiserver sends it (a StatusCause's type is `reason` on the wire).
        e.body = json.dumps({"kind": "Status", "reason": "Forbidden", "details": {"causes": [
            {"reason": cause, "message": "namespace t-x is being terminated", "field": "metadata.namespace"}]}})
        return e

    assert not worth_retrying(refused("NamespaceTerminating"))
    assert worth_retrying(refused("FieldValueForbidden")) and worth_retrying(ApiException(status=500))
    assert worth_retrying(RuntimeError("boom"))

    async def test() -> None:
        clock, runs = Clock(), []

        async def fn(key: Hashable) -> None:
            runs.append(key)
            raise refused("NamespaceTerminating")
        kicks = Coalescer(fn, "test", sleep=clock.sleep)
        kicks.kick("gone")
        await asyncio.gather(*kicks._running.values())  # the run ends by itself: nothing is scheduled again
        assert runs == ["gone"] and clock.delays == [] and not kicks._running
        await kicks.close()
    run(test)
