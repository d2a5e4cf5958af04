"""Status writing shared by every kind: kstatus conditions, observedGeneration and an Event on change."""

from __future__ import annotations

from typing import Any, cast

import kopf

from kova.conditions import Progress, summarize, utcnow
from kova.kube import Resource
from kova.runtime import Runtime


async def publish(rt: Runtime, res: Resource, obj: dict[str, Any], *, word: str | None, progress: Progress,
                  reason: str, message: str, fields: dict[str, Any] | None = None,
                  word_field: str = "status") -> None:
    """Write the status of `obj` (a fresh read) and post an Event when its status word changes."""
    md = obj["metadata"]
    previous = obj.get("status") or {}
    generation = md.get("generation")
    status: dict[str, Any] = {
        **(fields or {}),
        "observedGeneration": generation,
        "conditions": summarize(previous.get("conditions", []), progress, reason, message, generation, utcnow()),
    }
    if word is not None:
        status[word_field] = word
    unchanged = all(previous.get(k) == v for k, v in status.items() if k != "conditions") and [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in status["conditions"]] == [
        {k: v for k, v in c.items() if k != "lastTransitionTime"} for c in previous.get("conditions", [])]
    if unchanged:
        return
    await rt.kube.patch_status(res, md["name"], md.get("namespace"), status)
    if word is not None and previous.get(word_field) != word:
        kind = "Warning" if progress is Progress.STALLED else "Normal"
        kopf.event(cast(kopf.Body, obj), type=kind, reason=reason, message=f"{word}: {message}")
