"""Writes to the API server only when they change something, and no write twice while a watch catches up.

Reconciles read from watch caches, which lag behind Kova's own writes by a moment. Without memory, a
reconcile that runs in that moment (woken by another object's event) would create the same child again,
re-apply it, or patch the same status twice. So, like KubeVirt's controller "expectations", this keeps
what Kova itself wrote last until the cache shows it:

- a child is created once; its creation is remembered until the child's watch event arrives;
- a child is applied (server-side apply) only when the desired object is not already contained in what
  the cache holds (a hand-edit is put back), and not again while the cache is older than the last apply
  (metadata.generation, which only grows for one object);
- a status is patched only when it differs from the newest of the cached status and the last one Kova
  wrote (by resourceVersion; etcd's are increasing integers, anything else falls back to the cache).
"""

from __future__ import annotations

import hashlib
import json
import logging
from dataclasses import dataclass, field
from typing import Any

from kova.adapters.kube import Kube
from kova.api.resources import Resource

Key = tuple[str, str, str]
log = logging.getLogger(__name__)


def contains(actual: Any, desired: Any) -> bool:
    """Whether `actual` already holds everything `desired` says: dicts key by key, list items anywhere
    in the list (servers and webhooks add defaults and entries of their own), scalars equal."""
    if isinstance(desired, dict):
        return isinstance(actual, dict) and all(k in actual and contains(actual[k], v) for k, v in desired.items())
    if isinstance(desired, list):
        return isinstance(actual, list) and all(any(contains(a, d) for a in actual) for d in desired)
    return bool(actual == desired)


def difference(actual: Any, desired: Any, path: str = "") -> str | None:
    """Where `actual` first fails to contain `desired` (a dotted path), or None: for logs."""
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return path or "."
        for k, v in desired.items():
            where = difference(actual.get(k), v, f"{path}.{k}") if k in actual else f"{path}.{k} (missing)"
            if where:
                return where
        return None
    if isinstance(desired, list):
        if not isinstance(actual, list):
            return path
        for i, d in enumerate(desired):
            if not any(contains(a, d) for a in actual):
                return f"{path}[{i}]"
        return None
    return None if actual == desired else f"{path} ({actual!r} != {desired!r})"


def digest(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


def _rv(obj: dict[str, Any]) -> int | None:
    rv = str((obj.get("metadata") or {}).get("resourceVersion", ""))
    return int(rv) if rv.isdigit() else None


@dataclass(frozen=True)
class Applied:
    digest: str
    uid: str | None  # None: not told (see ensure)
    generation: int


@dataclass
class Writes:
    kube: Kube
    _created: set[Key] = field(default_factory=set)
    _applied: dict[Key, Applied] = field(default_factory=dict)
    _status: dict[str, tuple[int, dict[str, Any]]] = field(default_factory=dict)  # uid → (rv, status)
    # KubeVirt actions asked and not shown yet: (namespace, name) of an Instance → (action, VMI uid).
    last_call: dict[tuple[str, str], tuple[str, str | None]] = field(default_factory=dict)

    @staticmethod
    def key(res: Resource, namespace: str | None, name: str) -> Key:
        return (res.plural, namespace or "", name)

    # ----- children -----
    def created(self, res: Resource, namespace: str, name: str) -> bool:
        """Created by this process, and its watch event not seen yet."""
        return self.key(res, namespace, name) in self._created

    async def create(self, res: Resource, body: dict[str, Any]) -> None:
        md = body["metadata"]
        await self.kube.create(res, body)  # a 409 (it exists already) counts as created
        self._created.add(self.key(res, md["namespace"], md["name"]))

    async def ensure(self, res: Resource, desired: dict[str, Any], cached: dict[str, Any] | None,
                     stale: bool = False) -> None:
        """Server-side apply `desired` unless the cache already holds it, or holds a version older than
        the last apply of this very object (the watch has not caught up yet). `stale`: the cache holds an entry
        Kova no longer wants (a detached disk), which `contains` cannot see: the apply takes it away."""
        md = desired["metadata"]
        key = self.key(res, md["namespace"], md["name"])
        if cached is not None and contains(cached, desired) and not stale:
            return  # the common case, and the cheap one: no digest needed
        want = digest(desired)
        last = self._applied.get(key)
        if cached is None:
            if last is not None and last.digest == want:
                return
        else:
            cmd = cached["metadata"]
            if (last is not None and last.digest == want and last.uid in (None, cmd.get("uid"))
                    and int(cmd.get("generation") or 0) < last.generation):
                return
        if cached is not None:
            log.info("%s %s/%s differs from what Kova wants at %s: applying", res.plural, md["namespace"],
                     md["name"], difference(cached, desired))
        obj = await self.kube.apply(res, desired)
        # The client answers None when the apply created the object (HTTP 201): a new object is generation 1.
        md_now = (obj or {}).get("metadata") or {}
        self._applied[key] = Applied(want, md_now.get("uid"), int(md_now.get("generation") or 1))

    def seen(self, res: Resource, namespace: str, name: str, deleted: bool) -> None:
        """A child's watch event: the cache now shows (or no longer has) it."""
        key = self.key(res, namespace, name)
        self._created.discard(key)
        if deleted:
            self._applied.pop(key, None)

    def forget(self, res: Resource, namespace: str, name: str) -> None:
        self._created.discard(self.key(res, namespace, name))
        self._applied.pop(self.key(res, namespace, name), None)

    # ----- status -----
    def last_status(self, obj: dict[str, Any]) -> dict[str, Any]:
        """The newest known status of `obj`: the cached one, or the one Kova wrote after it."""
        cached = obj.get("status") or {}
        mine = self._status.get(obj["metadata"].get("uid", ""))
        rv = _rv(obj)
        if mine is not None and rv is not None and mine[0] > rv:
            return mine[1]
        return dict(cached)

    def wrote_status(self, obj: dict[str, Any], written: dict[str, Any] | None) -> None:
        """Remember the status an accepted patch left (`written`: the object the server answered)."""
        if written is None:
            return
        rv = _rv(written)
        if rv is not None:
            self._status[written["metadata"]["uid"]] = (rv, dict(written.get("status") or {}))

    def forget_status(self, uid: str) -> None:
        self._status.pop(uid, None)

    def forget_call(self, namespace: str, name: str) -> None:
        """A deleted Instance: its last KubeVirt action is no one's (the entry would stay for good otherwise)."""
        self.last_call.pop((namespace, name), None)
