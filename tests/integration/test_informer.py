"""kova.adapters.informer against the local cloud's kube-apiserver: what the caches hold, what listeners hear, and
that a list after a gap reports what changed meanwhile (deletions included)."""

from __future__ import annotations

import asyncio
from typing import Any

from kova.adapters.informer import Body, Coalescer, Informer, object_key
from kova.adapters.kube import Kube
from kova.api.resources import INSTANCES
from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl


def instance(name: str, flavor: str = "no-such-flavor") -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavorRef": flavor, "imageRef": "no-such-image"}}


async def until(check: Any, seconds: float = 30) -> None:
    for _ in range(int(seconds / 0.05)):
        if check():
            return
        await asyncio.sleep(0.05)
    raise AssertionError("timed out")


def test_cache_listeners_and_relist(cloud: LocalCloud, kubectl: Kubectl, namespace: str) -> None:
    for name in ("a", "b", "c"):
        kubectl.apply(instance(name))

    async def run() -> None:
        kube = await Kube.connect(str(cloud.kubeconfig))
        informer = Informer(kube, INSTANCES, fields=("spec",), namespace=namespace)
        heard: list[tuple[Body | None, Body | None]] = []
        informer.listeners.append(lambda old, new: heard.append((old, new)))
        task = asyncio.create_task(informer.run())
        await asyncio.wait_for(informer.synced.wait(), 30)
        assert {k for k in informer.cache} == {(namespace, "a"), (namespace, "b"), (namespace, "c")}
        assert heard == []  # the first list fills the cache; each object's own resume handler covers it
        assert "managedFields" not in informer.cache[(namespace, "a")]["metadata"]
        assert "status" not in informer.cache[(namespace, "a")]  # only the fields asked for are kept

        await asyncio.to_thread(kubectl.apply, instance("d"))
        await until(lambda: any(new and new["metadata"]["name"] == "d" for _, new in heard))
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
        gate = asyncio.Event()

        async def fn(key: Any) -> None:
            runs.append(key)
            if key == "x" and len(runs) == 1:
                await gate.wait()
            if key == "bad":
                raise RuntimeError("a failed run is logged, not fatal")
        kicks = Coalescer(fn, "test")
        kicks.kick("x")
        await asyncio.sleep(0)
        for _ in range(5):  # five kicks while x runs: one more run of x, not five
            kicks.kick("x")
        kicks.kick("y")
        kicks.kick("bad")
        await asyncio.sleep(0.01)
        gate.set()
        await asyncio.sleep(0.01)
        assert sorted(runs) == ["bad", "x", "x", "y"]
        kicks.kick("bad")
        await asyncio.sleep(0.01)
        assert runs.count("bad") == 2
        await kicks.close()
    asyncio.run(run())
