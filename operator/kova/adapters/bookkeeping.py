"""Kopf's bookkeeping kept in the operator's memory instead of in annotations on every object.

By default Kopf writes, per object and per handling cycle, the last handled spec (diff base) and each
handler's progress into annotations: one or two PATCHes of every Instance on top of Kova's own writes, on
the API server the whole cluster shares. Kova's handlers are level-based and idempotent, so after a
restart it is enough to treat every object as new and reconcile it once more; nothing needs to survive
the process. What does stay a write is `touch`: after a handler asked to be retried later (a
kopf.TemporaryError), Kopf patches a dummy annotation to wake itself, and only then.
"""

from __future__ import annotations

from typing import Any

import kopf


class MemoryDiffBaseStorage(kopf.DiffBaseStorage):
    """The last handled essence of each object, by uid."""

    def __init__(self) -> None:
        super().__init__()
        self.essences: dict[str, Any] = {}

    def fetch(self, *, body: kopf.Body) -> kopf.BodyEssence | None:
        return self.essences.get(body.metadata.uid)

    def store(self, *, body: kopf.Body, patch: kopf.Patch, essence: kopf.BodyEssence) -> None:
        self.essences[body.metadata.uid] = essence

    def forget(self, uid: str) -> None:
        self.essences.pop(uid, None)


class MemoryProgressStorage(kopf.AnnotationsProgressStorage):
    """Handler progress (retries, successes) by uid and handler; `touch` is inherited (an annotation)."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix=prefix)
        self.records: dict[str, dict[str, Any]] = {}

    def fetch(self, *, key: str, body: kopf.Body) -> Any:
        return self.records.get(body.metadata.uid, {}).get(key)

    def store(self, *, key: str, record: Any, body: kopf.Body, patch: kopf.Patch) -> None:
        self.records.setdefault(body.metadata.uid, {})[key] = dict(record)

    def purge(self, *, key: str, body: kopf.Body, patch: kopf.Patch) -> None:
        handlers = self.records.get(body.metadata.uid)
        if handlers is not None:
            handlers.pop(key, None)
            if not handlers:
                del self.records[body.metadata.uid]

    def forget(self, uid: str) -> None:
        self.records.pop(uid, None)


# One of each per process: Kopf's settings point at them, and a deleted object's records go with it.
DIFFBASE = MemoryDiffBaseStorage()
PROGRESS = MemoryProgressStorage(prefix="kova.dev")


def forget(uid: str) -> None:
    DIFFBASE.forget(uid)
    PROGRESS.forget(uid)
