"""Flavor: nothing to create; the status says whether the flavor is usable and why not."""

from __future__ import annotations

from pydantic import ValidationError

from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.conditions import Progress
from kova.api.models import FlavorSpec
from kova.api.resources import FLAVORS
from kova.compute.flavors import problems


async def reconcile(rt: Runtime, name: str) -> None:
    async with rt.lock("flavor", name):
        obj = await rt.kube.get(FLAVORS, name)
        if obj is None:
            return
        try:
            spec = FlavorSpec.model_validate(obj.get("spec") or {})
            found = problems(spec)
        except ValidationError as e:
            found = [str(e)]
        if found:
            await publish(rt, FLAVORS, obj, word=None, progress=Progress.STALLED, reason="InvalidExtraSpecs",
                          message="; ".join(found))
        else:
            await publish(rt, FLAVORS, obj, word=None, progress=Progress.READY, reason="Available",
                          message=f"{spec.vcpus} vCPU, {spec.ram} MiB RAM, {spec.disk} GiB disk")
