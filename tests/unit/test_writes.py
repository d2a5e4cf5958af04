"""kova.adapters.writes: what is written, and what is not while a watch cache catches up."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

from kova.adapters.writes import Writes, contains
from kova.api.resources import VIRTUAL_MACHINES
from kova.controllers import wiring
from kova.controllers.instance import Caches


def test_contains_tolerates_server_defaults_but_not_changes() -> None:
    desired = {"spec": {"runStrategy": "Always", "template": {"spec": {"domain": {"cpu": {"cores": 2}},
                                                                       "volumes": [{"name": "root"}]}}}}
    defaulted = {"spec": {"runStrategy": "Always", "template": {"spec": {
        "domain": {"cpu": {"cores": 2, "model": "host-model"}, "firmware": {"uuid": "x"}},
        "volumes": [{"name": "root", "dataVolume": {"name": "r"}}, {"name": "extra"}]}}}}
    assert contains(defaulted, desired)
    edited = {"spec": {**defaulted["spec"], "runStrategy": "Halted"}}
    assert not contains(edited, desired)
    assert not contains({"spec": {"template": {"spec": {"volumes": []}}}}, {"spec": {"template": {"spec": {
        "volumes": [{"name": "root"}]}}}})


class Recorder:
    """Stands in for the Kubernetes adapter and counts the writes Writes decides to make."""

    def __init__(self) -> None:
        self.applied: list[dict[str, Any]] = []
        self.generation = 0

    async def apply(self, res: Any, body: dict[str, Any]) -> dict[str, Any] | None:
        self.applied.append(body)
        self.generation += 1
        if self.generation == 1:
            return None  # what the real client answers to an apply that created the object (HTTP 201)
        return {**body, "metadata": {**body["metadata"], "uid": "u1", "generation": self.generation}}


def vm(strategy: str) -> dict[str, Any]:
    return {"metadata": {"name": "vm", "namespace": "ns"}, "spec": {"runStrategy": strategy}}


def test_apply_only_when_the_cache_lacks_it_and_not_twice_while_it_catches_up() -> None:
    kube = Recorder()
    writes = Writes(kube)  # type: ignore[arg-type]

    async def run() -> None:
        await writes.ensure(VIRTUAL_MACHINES, vm("Always"), None)  # missing: applied
        await writes.ensure(VIRTUAL_MACHINES, vm("Always"), None)  # the watch has not shown it yet
        assert len(kube.applied) == 1
        cached = {**vm("Always"), "metadata": {"name": "vm", "namespace": "ns", "uid": "u1", "generation": 1}}
        await writes.ensure(VIRTUAL_MACHINES, vm("Always"), cached)  # in the cache: nothing to do
        assert len(kube.applied) == 1
        hand_edited = {**cached, "spec": {"runStrategy": "Halted"}, "metadata": {**cached["metadata"],
                                                                                  "generation": 2}}
        await writes.ensure(VIRTUAL_MACHINES, vm("Always"), hand_edited)  # put back
        assert len(kube.applied) == 2
        stale = {**cached, "spec": {"runStrategy": "Halted"}}  # generation 1 < 2: older than the last apply
        await writes.ensure(VIRTUAL_MACHINES, vm("Always"), stale)
        assert len(kube.applied) == 2
        await writes.ensure(VIRTUAL_MACHINES, vm("Halted"), cached)  # a new desired spec is applied
        assert len(kube.applied) == 3
        writes.seen(VIRTUAL_MACHINES, "ns", "vm", deleted=True)  # deleted by hand: created again
        await writes.ensure(VIRTUAL_MACHINES, vm("Halted"), None)
        assert len(kube.applied) == 4
    asyncio.run(run())


def test_status_memory_prefers_the_newer_of_cache_and_own_write() -> None:
    writes = Writes(None)  # type: ignore[arg-type]
    cached = {"metadata": {"uid": "u", "resourceVersion": "10"}, "status": {"status": "BUILD"}}
    writes.wrote_status(cached, {"metadata": {"uid": "u", "resourceVersion": "12"}, "status": {"status": "ACTIVE"}})
    assert writes.last_status(cached) == {"status": "ACTIVE"}  # the cache lags behind the write
    caught_up = {"metadata": {"uid": "u", "resourceVersion": "12"}, "status": {"status": "ACTIVE"}}
    assert writes.last_status(caught_up) == {"status": "ACTIVE"}
    newer = {"metadata": {"uid": "u", "resourceVersion": "15"}, "status": {"status": "SHUTOFF"}}
    assert writes.last_status(newer) == {"status": "SHUTOFF"}


def test_a_deleted_instance_is_forgotten_with_its_last_kubevirt_call() -> None:
    """What kova.controllers.wiring does when an Instance's watch says it is gone: nothing of it stays in memory."""
    writes = Writes(None)  # type: ignore[arg-type]
    runtime = SimpleNamespace(writes=writes)
    caches = Caches(flavors={}, images={}, instances={}, datavolumes={}, vms={}, vmis={}, pvcs={},
                    keypairs={}, servergroups={}, zones={})  # type: ignore[arg-type]
    gone = {"metadata": {"namespace": "ns", "name": "vm", "uid": "u1", "resourceVersion": "12"}}
    writes.wrote_status(gone, {**gone, "status": {"status": "PAUSED"}})
    writes.last_call[("ns", "vm")] = ("pause", "vmi-uid")
    writes.last_call[("ns", "other")] = ("unpause", "vmi-2")
    caches.wait_for(("Flavor", "m1"), "ns", "vm")
    wiring.forget_instance(runtime, caches, gone)  # type: ignore[arg-type]
    assert writes.last_call == {("ns", "other"): ("unpause", "vmi-2")}  # only the deleted Instance's
    assert writes._status == {} and caches.waiting == {}
