"""Volume: a Cinder volume over a CDI DataVolume and its claim. `reconcile` gathers what the watches hold,
asks kova.compute.volumes for the plan (pure) and carries it out: the image cache's entry made if the volume
clones one, the DataVolume created once (with a short-lived link when it imports an image directly), the
claim grown for an extend, the servers holding it (Cinder's attachments) and its owners after
deleteOnTermination, and the status written when a user would see a change."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.resources import DATA_VOLUMES, VOLUMES
from kova.compute import server, volumes
from kova.controllers import imagecache
from kova.image import cache


@dataclass
class Caches:
    volumes: server.Zones
    datavolumes: server.Lookup
    pvcs: server.Lookup
    images: server.Lookup
    storageclasses: server.Zones
    instances: server.Zones  # who attaches a volume (spec.volumeAttachments, status.volumeAttachments)
    # What a volume waits for (an Image, a Volume, a cache entry) → the volumes waiting.
    waiting: dict[tuple[str, ...], set[tuple[str, str]]] = field(default_factory=dict)
    wake: Callable[[tuple[str, str]], None] | None = None
    limits: Callable[[str], dict[str, int]] | None = None  # a namespace's quotas (kova.controllers.quota)

    def waiters(self, what: tuple[str, ...]) -> set[tuple[str, str]]:
        return self.waiting.pop(what, set())


async def reconcile(rt: Runtime, caches: Caches, namespace: str, name: str) -> None:
    async with rt.lock("volume", namespace, name):
        vol = caches.volumes.get((namespace, name))
        if vol is None or vol["metadata"].get("deletionTimestamp"):
            return
        # Its newest status (the cache may lag behind Kova's own last write): who holds it is decided on it.
        vol = {**vol, "status": rt.writes.last_status(vol)}
        plan = volumes.plan(volumes.World(quota=_over_quota(rt, caches, vol),
            volume=vol, datavolumes=caches.datavolumes, pvcs=caches.pvcs, images=caches.images,
            volumes=caches.volumes, storage_class=cache.default_class(caches.storageclasses.objects()),
            instances=[i for i in caches.instances.objects() if i["metadata"]["namespace"] == namespace],
            cache=rt.settings.image_cache, presign_ttl=rt.settings.presign_ttl,
            now=dt.datetime.now(dt.UTC)))
        if plan.wait_on:
            caches.waiting.setdefault(plan.wait_on, set()).add((namespace, name))
        if plan.entry is not None:
            await imagecache.ensure_entry(rt, vol, plan.entry)
        if plan.create is not None and not rt.writes.created(DATA_VOLUMES, namespace, plan.create["metadata"]["name"]):
            body: dict[str, Any] = plan.create
            if plan.url_for is not None:  # a direct import: a link to this one object, signed locally
                image = plan.url_for
                body["spec"]["source"]["http"]["url"] = rt.store.presigned_get(
                    image.uid, rt.settings.presign_ttl, image.stores)
            await rt.writes.create(DATA_VOLUMES, body)
            if plan.entry is not None:
                await imagecache.used(rt, (plan.entry.namespace, plan.entry.name))
        if plan.owners is not None:  # deleteOnTermination: the garbage collector deletes it with its server
            await rt.kube.patch(VOLUMES, name, namespace, {"metadata": {
                "ownerReferences": plan.owners, "resourceVersion": vol["metadata"]["resourceVersion"]}})
        if plan.grow is not None:
            await rt.kube.resize_claim(volumes.claim_name(name), namespace, plan.grow)
        await publish(rt, VOLUMES, vol, word=plan.word.value, progress=plan.progress, reason=plan.reason,
                      message=plan.message, fields=plan.fields)


def _over_quota(rt: Runtime, caches: Caches, vol: dict[str, Any]) -> volumes.Refusal | None:
    """Cinder's gigabytes for this volume, decided over its namespace's Volumes (kova.compute.volumes)."""
    namespace, name = vol["metadata"]["namespace"], vol["metadata"]["name"]
    limit = caches.limits(namespace).get("gigabytes", -1) if caches.limits is not None else -1
    if limit == -1:
        return None
    siblings = [vol if v["metadata"]["name"] == name else {**v, "status": rt.writes.last_status(v)}
                for v in caches.volumes.objects() if v["metadata"]["namespace"] == namespace]
    made = {v["metadata"]["name"] for v in siblings
            if caches.datavolumes.get((namespace, volumes.claim_name(v["metadata"]["name"]))) is not None
            or caches.pvcs.get((namespace, volumes.claim_name(v["metadata"]["name"]))) is not None}
    return volumes.gigabytes(siblings, made, limit).get(name)
