"""Status writing shared by every kind: kstatus conditions, observedGeneration and an Event on change."""

from __future__ import annotations

from typing import Any

from kova.adapters.runtime import Runtime
from kova.api.clock import utcnow
from kova.api.conditions import Progress, summarize
from kova.api.resources import Resource


async def publish(rt: Runtime, res: Resource, obj: dict[str, Any], *, word: str | None, progress: Progress,
                  reason: str, message: str, fields: dict[str, Any] | None = None,
                  precondition: bool = False) -> None:
    """Write the status of `obj` when a user would see a change, with an Event for each milestone.

    `obj` may come from a watch cache that has not caught up with Kova's last write yet: the newest of
    the two is what the change is measured against (kova.adapters.writes). With `precondition`, the write fails
    (409) when the object changed since `obj` was read: a claim only one writer may win."""
    md = obj["metadata"]
    previous = rt.writes.last_status(obj)
    generation = md.get("generation")
    status: dict[str, Any] = {
        **(fields or {}),
        "observedGeneration": generation,
        "conditions": summarize(previous.get("conditions", []), progress, reason, message, generation, utcnow()),
    }
    if word is not None:
        status["status"] = word
    unchanged = all(previous.get(k) == pruned(v) for k, v in status.items() if k != "conditions") and [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]] == [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in previous.get("conditions", [])]
    if unchanged:
        return
    rt.writes.wrote_status(obj, await rt.kube.patch_status(
        res, md["name"], md.get("namespace"), status,
        resource_version=md.get("resourceVersion") if precondition else None))
    # One Event per milestone: when the status word or the verdict's reason changes (WaitingForImage →
    # Spawning → Active), not for every status write.
    old_ready: dict[str, Any] = next(
        (c for c in previous.get("conditions", []) if c.get("type") == "Ready"), {})
    if previous.get("status") != word or old_ready.get("reason") != reason:
        kind = "Warning" if progress is Progress.STALLED else "Normal"
        text = f"{word}: {message}" if word is not None else message
        rt.event(obj, type=kind, reason=reason, message=text)


def pruned(value: Any) -> Any:
    """`value` as the API server keeps it: nulls are dropped from objects (a CRD's fields are not nullable)."""
    if isinstance(value, dict):
        return {k: pruned(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [pruned(v) for v in value]
    return value
