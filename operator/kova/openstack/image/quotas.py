"""Glance's quotas on an upload through the image API: image_count_uploading and image_size_total.

The namespace's limits are its Quota's spec over the cloud's defaults (read with the API's own account:
a member may read its Quota, but the check must not depend on the caller's rights); its use comes from
the image watch this process keeps. The announced size is checked before anything is written, and the
bytes as they stream (the import's size cap is lowered to what is left), so an upload over quota gets
Glance's 413 and stores nothing.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from kova.adapters.runtime import Runtime
from kova.api.errors import Refusal
from kova.api.models import QUOTA_NAME, effective_limits
from kova.api.resources import QUOTAS
from kova.image import quota
from kova.openstack.image.glance import GlanceError


@dataclass(frozen=True)
class Room:
    """What an upload may take: its size cap, and what to say when the cap was the quota's."""

    project: str
    used: quota.Usage
    limit_mib: int
    size_cap: int  # bytes: the image size cap, or less when image_size_total leaves less
    by_quota: bool  # the cap is image_size_total's (image_stage_total's for a stage)
    staging: bool = False

    def refusal(self, e: Refusal, size: int | None) -> GlanceError | None:
        """The import's SizeExceeded as Glance's quota answer, when the quota set the cap."""
        if e.reason != "SizeExceeded" or not self.by_quota:
            return None
        over = quota.size_exceeded(self.project, self.used, self.limit_mib, max(size or 0, self.size_cap + 1),
                                   self.staging)
        return GlanceError(over.code, str(over))


async def limits_and_usage(rt: Runtime, images: Iterable[dict[str, Any]], project: str,
                           leave_out: str | None = None) -> tuple[dict[str, int], quota.Usage]:
    """The namespace's Glance limits (its Quota over the cloud's defaults) and what its Images use."""
    obj = await rt.kube.get(QUOTAS, QUOTA_NAME, project)
    limits = effective_limits(rt.settings.quota_defaults, (obj or {}).get("spec"))
    return limits, quota.usage((i for i in images if i["metadata"]["namespace"] == project), leave_out=leave_out)


async def usage_doc(rt: Runtime, images: Iterable[dict[str, Any]], project: str) -> dict[str, Any]:
    """GET /v2/info/usage: each of Glance's quotas, its limit and what the project uses."""
    limits, used = await limits_and_usage(rt, images, project)
    counts = used.counts()
    return {"usage": {name: {"limit": limits.get(name, quota.UNLIMITED), "usage": counts[name]}
                      for name in quota.GLANCE_NAMES}}


async def room(rt: Runtime, images: Iterable[dict[str, Any]], project: str, uid: str,
               announced: int | None, staging: bool = False) -> Room:
    """The checks before an upload (or a stage) starts (413 with Glance's text when one fails), and the room
    it has."""
    limits, used = await limits_and_usage(rt, images, project, leave_out=uid)
    try:
        quota.check_upload(project, used, limits, announced, staging)
    except quota.OverLimit as e:
        raise GlanceError(e.code, str(e)) from None
    limit = limits["image_stage_total" if staging else "image_size_total"]
    left = quota.room(used, limit, staging)
    cap = rt.settings.size_cap
    return Room(project, used, limit, min(cap, left) if left is not None else cap, left is not None and left < cap,
                staging)


async def check_import(rt: Runtime, images: Iterable[dict[str, Any]], project: str, uid: str, size: int) -> None:
    """glance-direct: the staged bytes must fit image_size_total now (Glance checks it at import)."""
    limits, used = await limits_and_usage(rt, images, project, leave_out=uid)
    left = quota.room(used, limits["image_size_total"])
    if left is not None and size > left:
        over = quota.size_exceeded(project, used, limits["image_size_total"], size)
        raise GlanceError(over.code, str(over))
