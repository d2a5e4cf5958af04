"""Flavor: nothing to create; the status says whether the flavor is usable and why not."""

from __future__ import annotations

from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.conditions import Progress
from kova.api.resources import FLAVORS
from kova.compute import flavors


async def reconcile(rt: Runtime, name: str) -> None:
    async with rt.lock("flavor", name):
        obj = await rt.kube.get(FLAVORS, name)
        if obj is None:
            return
        spec, found = flavors.verdict(obj.get("spec") or {})
        if found or spec is None:
            await publish(rt, FLAVORS, obj, word=None, progress=Progress.STALLED, reason="InvalidExtraSpecs",
                          message="; ".join(found))
        else:
            await publish(rt, FLAVORS, obj, word=None, progress=Progress.READY, reason="Available",
                          message=f"{spec.vcpus} vCPU, {spec.ram} MiB RAM, {spec.disk} GiB disk")
