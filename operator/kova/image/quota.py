"""Glance's per-project quotas (its unified limits), as pure functions: what a namespace's Images use, and
whether more data or one more upload fits, with Glance's words.

Glance's names and units: image_count_total (Images), image_size_total (MiB of data stored),
image_stage_total (MiB staged for an interoperable import, not yet imported: images `uploading`),
image_count_uploading (uploads, stages and imports under way). Glance checks image_size_total only before an
upload starts, so a project may end one upload over its limit; Kova is stricter: the announced size is
checked first, and the bytes as they stream, so the store never holds more than the limit. The count of
Images is refused by the API server itself (a ResourceQuota), so it is not checked here.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

Body = dict[str, Any]
MiB = 1 << 20
UNLIMITED = -1
GLANCE_NAMES = ("image_count_total", "image_size_total", "image_stage_total", "image_count_uploading")
HOLDS_DATA = ("active", "deactivated")  # Glance counts the data of images that have it
UPLOADING = ("saving", "uploading", "importing")
STAGED = "uploading"  # staged (or being staged) for an interoperable import


@dataclass(frozen=True)
class Usage:
    images: int = 0
    bytes: int = 0
    uploading: int = 0
    staged: int = 0  # bytes

    def counts(self) -> dict[str, int]:
        """Glance's usage by name (/v2/info/usage): sizes in whole MiB, rounded down as Glance does."""
        return {"image_count_total": self.images, "image_size_total": self.bytes // MiB,
                "image_stage_total": self.staged // MiB, "image_count_uploading": self.uploading}


def usage(images: Iterable[Body], leave_out: str | None = None) -> Usage:
    """What a namespace's Images use; `leave_out`: the uid of the Image whose upload is being decided."""
    count = size = uploading = staged = 0
    for obj in images:
        if obj["metadata"].get("deletionTimestamp"):
            continue
        count += 1
        if obj["metadata"].get("uid") == leave_out:
            continue
        st = obj.get("status") or {}
        if st.get("status") in HOLDS_DATA:
            size += int(st.get("size") or 0)
        elif st.get("status") in UPLOADING:
            uploading += 1
            if st.get("status") == STAGED:
                staged += int(st.get("size") or 0)
    return Usage(count, size, uploading, staged)


class OverLimit(Exception):
    """Glance's LimitExceeded: HTTP 413, its text wrapping oslo.limit's ProjectOverLimit."""

    code = 413

    def __init__(self, project: str, name: str, limit: int, current: int, delta: int) -> None:
        self.name = name
        super().__init__(
            "The request returned a 413 Request Entity Too Large. This generally means that rate limiting or a "
            "quota threshold was breached.\n\nThe response body:\n"
            f"Project {project} is over a limit for [Resource {name} is over limit of {limit} due to current "
            f"usage {current} and delta {delta}]")


def room(used: Usage, limit_mib: int, staging: bool = False) -> int | None:
    """Bytes the namespace may still store under image_size_total (or stage under image_stage_total, with
    `staging`); None: unlimited."""
    return None if limit_mib == UNLIMITED else max(0, limit_mib * MiB - (used.staged if staging else used.bytes))


def check_upload(project: str, used: Usage, limits: dict[str, int], announced: int | None,
                 staging: bool = False) -> None:
    """Before an upload (or a stage): one more upload under way, and the announced size (if any), must fit
    image_size_total (image_stage_total). Raises OverLimit (413) with Glance's text, naming the quota."""
    uploading = limits.get("image_count_uploading", UNLIMITED)
    if uploading != UNLIMITED and used.uploading + 1 > uploading:
        raise OverLimit(project, "image_count_uploading", uploading, used.uploading, 1)
    total = limits.get("image_stage_total" if staging else "image_size_total", UNLIMITED)
    left = room(used, total, staging)
    if left is not None and (left == 0 or (announced is not None and announced > left)):
        raise size_exceeded(project, used, total, announced or 0, staging)


def size_exceeded(project: str, used: Usage, limit_mib: int, size: int, staging: bool = False) -> OverLimit:
    """image_size_total (image_stage_total) exceeded by `size` more bytes (the delta in whole MiB, rounded up:
    it did not fit)."""
    return OverLimit(project, "image_stage_total" if staging else "image_size_total", limit_mib,
                     (used.staged if staging else used.bytes) // MiB, max(1, -(-size // MiB)))


@dataclass(frozen=True)
class Gate:
    """What a namespace's quotas say to a web-download (or snapshot) about to start: wait while too many
    uploads are under way (image_count_uploading), and no more bytes than image_size_total leaves."""

    project: str
    used: Usage
    limit_mib: int  # image_size_total
    wait: str | None = None  # why it waits in queued, if it must

    def size_cap(self, cap: int) -> int:
        left = room(self.used, self.limit_mib)
        return cap if left is None else min(cap, left)

    def exceeded(self, cap: int, reason: str) -> OverLimit | None:
        """The import's SizeExceeded as Glance's quota refusal, when the quota set the cap."""
        left = room(self.used, self.limit_mib)
        if reason != "SizeExceeded" or left is None or left >= cap:
            return None
        return size_exceeded(self.project, self.used, self.limit_mib, left + 1)


def gate(project: str, images: Iterable[Body], uid: str, limits: dict[str, int]) -> Gate:
    used = usage(images, leave_out=uid)
    uploading = limits.get("image_count_uploading", UNLIMITED)
    wait = None
    if uploading != UNLIMITED and used.uploading + 1 > uploading:
        wait = (f"waiting: {used.uploading} uploads and imports are under way in this project, its quota "
                f"image_count_uploading is {uploading}")
    return Gate(project, used, limits.get("image_size_total", UNLIMITED), wait)
