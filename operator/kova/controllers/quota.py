"""Quota: a project's limits and use, and the ResourceQuota that lets the API server count for Kova.

Each namespace that holds an Instance, Image, KeyPair, ServerGroup or Volume gets a Quota `default` (made once; its
spec belongs to the cloud's administrator and Kova never writes it). From the Quota's spec over the Helm
defaults (kova.api.models.effective_limits), Kova keeps:

- a ResourceQuota `kova` owned by the Quota, whose object counts make the API server itself refuse the
  Instance, KeyPair, ServerGroup or Image one too many (kova.compute.quota.resource_quota);
- the Quota's status: every limit with its use (kova.compute.quota for Nova's, kova.image.quota for
  Glance's), written only when it changed.

It reads only the watch caches: a per-namespace index of the four kinds fed by the shared watches
(`Index`), and its own watches of Quotas and of the ResourceQuotas Kova made. Any event of a namespace's
objects wakes that namespace's reconcile through a coalescing scheduler. The Instance controller asks
`Keeper.check` whether an Instance that has not booted yet is over its namespace's quota.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import Callable, Hashable
from typing import cast

from kova.adapters.informer import Body, Coalescer, Listener, View
from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.conditions import Progress
from kova.api.models import QUOTA, QUOTA_NAME, effective_limits
from kova.api.resources import MANAGED_BY, MANAGED_BY_SELECTOR, QUOTAS, RESOURCE_QUOTAS
from kova.compute import quota as nova
from kova.compute import volumes
from kova.compute.lifecycle import Blocked
from kova.image import quota as glance

KINDS = ("instances", "images", "keypairs", "servergroups", "volumes")
# Seconds between two writes of a namespace's Quota status. Its use changes with every boot, and the checks
# never read it (they count from the caches): a status that lags by this much keeps a boot at 4 writes.
STATUS_EVERY = 10.0


class Index:
    """The objects of each kind per namespace, kept from the shared watches' events."""

    def __init__(self) -> None:
        self.by_namespace: dict[str, dict[str, dict[str, Body]]] = {}
        # namespace → a stamp of its last event, never reused: what a remembered verdict was computed from
        self.changes: dict[str, int] = {}
        self._stamps = itertools.count(1)

    def listener(self, kind: str) -> Listener:
        def changed(old: Body | None, new: Body | None) -> None:
            md = (new or old or {})["metadata"]
            self.changes[md["namespace"]] = next(self._stamps)
            kinds = self.by_namespace.setdefault(md["namespace"], {k: {} for k in KINDS})
            if new is None:
                kinds[kind].pop(md["name"], None)
                if not any(kinds.values()):
                    del self.by_namespace[md["namespace"]]
                    self.changes.pop(md["namespace"], None)
            else:
                kinds[kind][md["name"]] = new
        return changed

    def of(self, namespace: str, kind: str) -> list[Body]:
        return list(self.by_namespace.get(namespace, {}).get(kind, {}).values())

    def occupied(self, namespace: str) -> bool:
        return namespace in self.by_namespace


class Keeper:
    def __init__(self, rt: Runtime, views: dict[str, View]) -> None:
        self.rt, self.views, self.index = rt, views, Index()
        self.shown: dict[str, float] = {}  # namespace → when its status was last published (monotonic)
        # namespace → (what it was computed from, Nova's verdict): every reconcile of every not yet booted
        # Instance asks, and computing it anew each time costs the whole namespace each time (a burst of n
        # Instances in one namespace would cost n² flavor lookups).
        self.verdicts: dict[str, tuple[tuple[object, ...], nova.Verdict]] = {}
        self.flavor_changes = 0
        self.later: set[str] = set()  # namespaces with a publish scheduled for the end of their interval
        self.kicks = Coalescer(self._reconcile, "Quota reconcile")
        for kind in KINDS:
            views[kind].listen(self.index.listener(kind))
            views[kind].listen(self._kick)
        views["quotas"].listen(self._kick)
        views["resourcequotas"].listen(self._kick)
        views["flavors"].listen(self._flavor_changed)

    def _flavor_changed(self, old: Body | None, new: Body | None) -> None:
        self.flavor_changes += 1

    def verdict(self, namespace: str, limits: dict[str, int]) -> nova.Verdict:
        """Nova's verdict on the namespace's Instances as the caches hold them, remembered until they change."""
        key = (self.index.changes.get(namespace, 0), self.flavor_changes, tuple(sorted(limits.items())))
        known = self.verdicts.get(namespace)
        if known is None or known[0] != key:
            known = self.verdicts[namespace] = (key, nova.decide(self.index.of(namespace, "instances"),
                                                                 self.views["flavors"], limits))
        return known[1]

    def _trailing(self, namespace: str) -> None:
        self.later.discard(namespace)
        self.kicks.kick(namespace)

    def _kick(self, old: Body | None, new: Body | None) -> None:
        self.kicks.kick((new or old or {})["metadata"]["namespace"])

    def start(self) -> None:
        """The first lists announce nothing: every namespace with objects or a Quota is looked at once."""
        quotas = (q["metadata"]["namespace"] for q in self.views["quotas"].objects())
        for namespace in {*self.index.by_namespace, *quotas}:
            self.kicks.kick(namespace)

    def limits(self, namespace: str) -> dict[str, int]:
        obj = self.views["quotas"].get((namespace, QUOTA_NAME)) or {}
        return effective_limits(self.rt.settings.quota_defaults, obj.get("spec"))

    def check(self, inst: Body, status: Body) -> Blocked | None:
        """Whether an Instance (with its newest status) is over its namespace's quota, to boot or to grow by a
        resize: Nova's refusal."""
        namespace, name, me = inst["metadata"]["namespace"], inst["metadata"]["name"], {**inst, "status": status}
        limits = self.limits(namespace)
        cached = self.index.by_namespace.get(namespace, {}).get("instances", {}).get(name)
        if nova.booted(me) or nova.unlimited(limits):
            refusal = None
        elif cached is not None and cached.get("status") == status and \
                cached["metadata"].get("resourceVersion") == inst["metadata"].get("resourceVersion"):
            refusal = self.verdict(namespace, limits).refused.get(name)
        else:  # the caches lag behind this copy: decide with it
            refusal = nova.check_instance(me, self.index.of(namespace, "instances"), self.views["flavors"], limits)
        # Lazily: the namespace is walked only when a resize is asked for (check_resize returns before).
        others = (i for i in self.index.of(namespace, "instances") if i["metadata"]["name"] != name)
        refusal = refusal or nova.check_resize(me, itertools.chain(others, [me]), self.views["flavors"], limits)
        if refusal is None:
            return None
        return Blocked(refusal.reason, refusal.message, refused=True, code=refusal.code)

    def image_gate(self, namespace: str, uid: str) -> glance.Gate:
        """What the namespace's quotas say to an import of Image `uid` about to start."""
        return glance.gate(namespace, self.index.of(namespace, "images"), uid, self.limits(namespace))

    async def _reconcile(self, key: Hashable) -> None:
        namespace = cast(str, key)
        async with self.rt.lock("quota", namespace):
            await self.reconcile(namespace)

    async def reconcile(self, namespace: str) -> None:
        obj = self.views["quotas"].get((namespace, QUOTA_NAME))
        if obj is None:
            if not self.index.occupied(namespace):
                self.shown.pop(namespace, None)
                self.verdicts.pop(namespace, None)
                return  # a namespace without Kova's objects has no Quota to keep
            obj = await self.rt.kube.create(QUOTAS, {
                "apiVersion": QUOTAS.api_version, "kind": QUOTA.kind,
                "metadata": {"name": QUOTA_NAME, "namespace": namespace, "labels": dict(MANAGED_BY)},
                "spec": {}}) or await self.rt.kube.get(QUOTAS, QUOTA_NAME, namespace)
            if obj is None:
                return
        if obj["metadata"].get("deletionTimestamp"):
            return
        limits = effective_limits(self.rt.settings.quota_defaults, obj.get("spec"))
        desired = nova.resource_quota(obj, limits, MANAGED_BY)
        cached = self.views["resourcequotas"].get((namespace, nova.RESOURCE_QUOTA))
        if cached is not None and set((cached.get("spec") or {}).get("hard") or {}) != set(desired["spec"]["hard"]):
            cached = None  # a limit became unlimited: its entry must go, which "contains" cannot see
        await self.rt.writes.ensure(RESOURCE_QUOTAS, desired, cached)
        # The use is counted (the whole namespace) only when it may be shown: not on every event of a burst.
        wait = self.shown.get(namespace, -STATUS_EVERY) + STATUS_EVERY - time.monotonic()
        if wait > 0:
            if namespace not in self.later:  # one trailing publish carries the newest use
                self.later.add(namespace)
                asyncio.get_running_loop().call_later(wait, self._trailing, namespace)
            return
        self.shown[namespace] = time.monotonic()
        instances = self.index.of(namespace, "instances")
        verdict = self.verdict(namespace, limits)
        used = {**nova.counts(instances, len(self.index.of(namespace, "keypairs")),
                              len(self.index.of(namespace, "servergroups")), verdict.usage),
                **glance.usage(self.index.of(namespace, "images")).counts(),
                "volumes": len(self.index.of(namespace, "volumes")),
                "gigabytes": volumes.gigabytes_used(self.index.of(namespace, "volumes"))}
        over, message = nova.summary(limits, used)
        await publish(self.rt, QUOTAS, obj, word=None, progress=Progress.STALLED if over else Progress.READY,
                      reason="OverQuota" if over else "Enforced", message=message,
                      fields={"quotas": nova.items(limits, used), "resourceQuota": nova.RESOURCE_QUOTA})


def views(view: Callable[..., View]) -> dict[str, View]:
    """The Keeper's own watches, made with wiring's `view(resource, fields, selector)`."""
    return {"quotas": view(QUOTAS, ("spec", "status")),
            "resourcequotas": view(RESOURCE_QUOTAS, ("spec",), MANAGED_BY_SELECTOR)}
