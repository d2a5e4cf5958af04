"""kova.adapters.informer against the local cloud's kube-apiserver: what the caches hold, what listeners hear, and
that a list after a gap reports what changed meanwhile (deletions included)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from kova.adapters.informer import Body, Coalescer, Informer, object_key
from kova.adapters.kube import Kube
from kova.api.resources import INSTANCES
from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl


def instance(name: str, flavor: str = "no-such-flavor") -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavorRef": flavor, "imageRef": "no-such-image"}}


async def until(check: Callable[[], bool], changed: asyncio.Event, what: str, seconds: float = 30) -> None:
    """Wait for `check` to hold, looking again each time `changed` is set (by whatever `check` reads)."""
    try:
        async with asyncio.timeout(seconds):
            while not check():
                changed.clear()  # no await between the check and this: nothing can slip in unseen
                await changed.wait()
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for {what}") from None


async def idle(what: str, seconds: float = 10) -> None:
    """Wait for every other task to be done: the Coalescer runs each key in a task of its own, so once none
    is left it has run everything it was kicked for, and nothing more will run."""
    me = asyncio.current_task()
    try:
        async with asyncio.timeout(seconds):
            while others := asyncio.all_tasks() - {me}:
                await asyncio.wait(others)
    except TimeoutError:
        raise AssertionError(f"timed out after {seconds}s waiting for {what}") from None


def test_cache_listeners_and_relist(cloud: LocalCloud, kubectl: Kubectl, namespace: str) -> None:
    for name in ("a", "b", "c"):
        kubectl.apply(instance(name))

    async def run() -> None:
        kube = await Kube.connect(str(cloud.kubeconfig))
        informer = Informer(kube, INSTANCES, fields=("spec",), namespace=namespace)
        heard: list[tuple[Body | None, Body | None]] = []
        arrived = asyncio.Event()

        def listener(old: Body | None, new: Body | None) -> None:
            heard.append((old, new))
            arrived.set()
        informer.listeners.append(listener)
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert {k for k in informer.cache} == {(namespace, "a"), (namespace, "b"), (namespace, "c")}
        assert heard == []  # the first list fills the cache; each object's own resume handler covers it
        assert "managedFields" not in informer.cache[(namespace, "a")]["metadata"]
        assert "status" not in informer.cache[(namespace, "a")]  # only the fields asked for are kept

        await asyncio.to_thread(kubectl.apply, instance("d"))
        await until(lambda: any(new and new["metadata"]["name"] == "d" for _, new in heard), arrived,
                    "the listener to hear of d")
        assert informer.get((namespace, "d")) is not None

        # A gap in watching (a restart of the watch after 410): the new list says what happened meanwhile.
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        before = dict(informer.cache)
        old_a, old_b = before[(namespace, "a")], before[(namespace, "b")]
        heard.clear()
        await asyncio.to_thread(kubectl, "delete", "instance", "a")
        await asyncio.to_thread(kubectl.apply, instance("b", flavor="other"))
        await informer._list()
        assert (old_a, None) in heard
        changed = [new for old, new in heard if old is old_b and new is not None]
        assert changed and changed[0]["spec"]["flavorRef"] == "other"
        # Exactly what changed is reported (the operator under test may also have written a status meanwhile).
        reported = {object_key(new or old or {}) for old, new in heard}
        for key, obj in informer.cache.items():
            moved = obj["metadata"]["resourceVersion"] != before[key]["metadata"]["resourceVersion"]
            assert moved == (key in reported), key

        # Kopf may hand a handler an older copy than the cache has, or one of an object deleted since.
        assert old_a is not None and old_b is not None
        informer.offer(old_a)
        informer.offer(old_b)
        assert informer.get((namespace, "a")) is None
        assert informer.get((namespace, "b"))["spec"]["flavorRef"] == "other"  # type: ignore[index]
        await kube.close()
    asyncio.run(run())


def test_coalescer_runs_each_key_once_at_a_time_and_once_more_after_kicks() -> None:
    async def run() -> None:
        runs: list[str] = []
        gate, ran = asyncio.Event(), asyncio.Event()

        async def fn(key: Any) -> None:
            runs.append(key)
            ran.set()
            if key == "x" and len(runs) == 1:
                await gate.wait()
            if key == "bad" and runs.count("bad") == 1:
                raise RuntimeError("a failed run is logged and retried after a back-off, not fatal")
        kicks = Coalescer(fn, "test", base=0.01)
        kicks.kick("x")
        await until(lambda: runs == ["x"], ran, "the first run of x to start")
        for _ in range(5):  # five kicks while x runs: one more run of x, not five
            kicks.kick("x")
        kicks.kick("y")
        kicks.kick("bad")
        # y and bad do not wait for x; x is not run again while its first run holds.
        await until(lambda: {"y", "bad"} <= set(runs), ran, "y and bad to run while x waits")
        assert runs.count("x") == 1, runs
        gate.set()
        await idle("the kicked runs to finish")
        assert sorted(runs) == ["bad", "bad", "x", "x", "y"]  # bad: retried by itself, once, and it went through
        kicks.kick("bad")
        await idle("the run of bad to finish")
        assert runs.count("bad") == 3
        await kicks.close()
    asyncio.run(run())
