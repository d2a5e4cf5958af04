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
    by_quota: bool  # the cap is image_size_total's

    def refusal(self, e: Refusal, size: int | None) -> GlanceError | None:
        """The import's SizeExceeded as Glance's quota answer, when the quota set the cap."""
        if e.reason != "SizeExceeded" or not self.by_quota:
            return None
        over = quota.size_exceeded(self.project, self.used, self.limit_mib, max(size or 0, self.size_cap + 1))
        return GlanceError(over.code, str(over))


async def room(rt: Runtime, images: Iterable[dict[str, Any]], project: str, uid: str,
               announced: int | None) -> Room:
    """The checks before an upload starts (413 with Glance's text when one fails), and the room it has."""
    obj = await rt.kube.get(QUOTAS, QUOTA_NAME, project)
    limits = effective_limits(rt.settings.quota_defaults, (obj or {}).get("spec"))
    used = quota.usage((i for i in images if i["metadata"]["namespace"] == project), leave_out=uid)
    try:
        quota.check_upload(project, used, limits, announced)
    except quota.OverLimit as e:
        raise GlanceError(e.code, str(e)) from None
    left = quota.room(used, limits["image_size_total"])
    cap = rt.settings.size_cap
    return Room(project, used, limits["image_size_total"], min(cap, left) if left is not None else cap,
                left is not None and left < cap)
