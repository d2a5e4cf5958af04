"""Flavor: nothing to create; the status says whether the flavor is usable and why not."""

from __future__ import annotations

from pydantic import ValidationError

from kova.conditions import Progress
from kova.handlers.common import publish
from kova.models import FlavorSpec
from kova.runtime import FLAVORS, Runtime

KNOWN_CPU_POLICIES = {"shared", "dedicated"}
KNOWN_PAGE_SIZES = {"small", "any", "large", "2MB", "2048", "1GB", "1048576"}


def problems(spec: FlavorSpec) -> list[str]:
    """extra_specs Kova would otherwise ignore silently."""
    out = []
    policy = spec.extra_specs.get("hw:cpu_policy")
    if policy is not None and policy not in KNOWN_CPU_POLICIES:
        out.append(f"hw:cpu_policy must be one of {sorted(KNOWN_CPU_POLICIES)}, not {policy!r}")
    page = spec.extra_specs.get("hw:mem_page_size")
    if page is not None and page not in KNOWN_PAGE_SIZES:
        out.append(f"hw:mem_page_size must be one of {sorted(KNOWN_PAGE_SIZES)}, not {page!r}")
    return out


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
