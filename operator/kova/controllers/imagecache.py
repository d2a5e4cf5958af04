"""The image cache's upkeep (kova.image.cache decides): entries whose Image is gone and, over the bounds,
the least recently used ones are deleted; every entry has its DataSource and no DataSource outlives its
entry (a crash between the two writes converges here). Run on every change of an entry, a root disk cloned
from one, or an Image, and once a minute for the entries that come of age."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable
from typing import Any

from kova.adapters import metrics
from kova.adapters.informer import Body, Coalescer, View
from kova.adapters.runtime import Runtime
from kova.api import clock
from kova.api.resources import DATA_SOURCES, DATA_VOLUMES, IMAGES
from kova.compute import server
from kova.image import cache

RECHECK = 60.0  # seconds: entries come of age (min_age) without any event


class Keeper:
    def __init__(self, rt: Runtime, datavolumes: View, datasources: View, images: View) -> None:
        self.rt, self.datavolumes, self.datasources, self.images = rt, datavolumes, datasources, images
        self.kicks = Coalescer(self.reconcile, "image cache upkeep")
        self.timer: asyncio.TimerHandle | None = None  # one at a time: each run replaces it

    def changed(self, old: Body | None, new: Body | None) -> None:
        """A DataVolume or DataSource event: the cache's own objects, or a clone of an entry."""
        md = (new or old or {})["metadata"]
        if md.get("namespace") == self.rt.settings.image_cache.namespace or \
                cache.ENTRY_LABEL in (md.get("labels") or {}):
            self.kicks.kick("cache")

    def image_changed(self, old: Body | None, new: Body | None) -> None:
        """An Image gone takes its entries; one made or one whose listing was changed is listed again."""
        if new is None or old is None or (old.get("status") or {}).get("cache") != (new.get("status") or {}).get(
                "cache"):
            self.kicks.kick("cache")

    async def reconcile(self, _: Hashable) -> None:
        s = self.rt.settings.image_cache
        try:
            await self._upkeep(s)
        finally:
            if self.timer is not None:
                self.timer.cancel()
            self.timer = asyncio.get_running_loop().call_later(RECHECK, self.kicks.kick, "cache")

    async def _upkeep(self, s: cache.Settings) -> None:
        volumes = list(self.datavolumes.objects())
        found = cache.entries(volumes, s.namespace, volumes)
        images = {i["metadata"]["uid"] for i in self.images.objects()}
        gone = cache.evictions(found, images, s, clock.now())
        by_name = {e.name: e for e in found}
        for name in gone:
            dv = self.datavolumes.get((s.namespace, name))
            await self.rt.kube.delete(DATA_SOURCES, name, s.namespace)
            await self.rt.kube.delete(DATA_VOLUMES, name, s.namespace, uid=dv["metadata"]["uid"] if dv else None)
            metrics.CACHE_EVICTIONS.labels("image" if by_name[name].image_uid not in images else "unused").inc()
        kept = {e.name: e for e in found if e.name not in gone}
        sources = {ds["metadata"]["name"] for ds in self.datasources.objects()
                   if ds["metadata"].get("namespace") == s.namespace}
        for name in sorted(sources - kept.keys()):
            if self.datavolumes.get((s.namespace, name)) is None:  # not an entry going away now: its own
                await self.rt.kube.delete(DATA_SOURCES, name, s.namespace)
        for name, e in sorted(kept.items()):
            if name not in sources:
                await self.rt.kube.create(DATA_SOURCES, cache.data_source(s.namespace, name, e.image_uid))
        listed = cache.listing((v for v in volumes if v["metadata"]["name"] not in gone), s.namespace)
        for image in self.images.objects():
            want = listed.get(image["metadata"]["uid"]) or None
            if (image.get("status") or {}).get("cache") != want and not image["metadata"].get("deletionTimestamp"):
                # Its own field, merged: the image controller writes the rest of the status.
                await self.rt.kube.patch_status(IMAGES, image["metadata"]["name"], image["metadata"]["namespace"],
                                                {"cache": want})


async def ensure_entry(rt: Runtime, obj: dict[str, Any], entry: server.Entry) -> None:
    """The image cache's entry a root disk or a volume waits for: made again if its link expired before CDI read it;
    made (its DataVolume, then its DataSource) if missing. Its name is the same for every Instance of the
    image, so a burst of first boots makes one: the API server answers the others AlreadyExists."""
    if entry.expired is not None:
        rt.writes.forget(DATA_VOLUMES, entry.namespace, entry.name)
        await rt.kube.delete(DATA_VOLUMES, entry.name, entry.namespace, uid=entry.expired)
    if entry.state.state is not cache.State.missing or rt.writes.created(DATA_VOLUMES, entry.namespace, entry.name):
        return
    src = entry.source
    url = rt.store.presigned_get(src.uid, rt.settings.presign_ttl, src.stores)
    volume, source = cache.build_entry(src, entry.storage_class, entry.namespace, url, clock.now())
    await rt.writes.create(DATA_VOLUMES, volume)
    await rt.kube.create(DATA_SOURCES, source)
    rt.event(obj, type="Normal", reason="CachingImage",
             message=f"Image {src.namespace}/{src.name} is imported into the image cache for storage class "
                     f"{entry.storage_class} ({entry.namespace}/{entry.name}); root disks are cloned from it")


async def used(rt: Runtime, clone: tuple[str, str]) -> None:
    """The entry's last use, which eviction reads (least recently used first)."""
    namespace, name = clone
    await rt.kube.patch(DATA_VOLUMES, name, namespace, {
        "metadata": {"annotations": {cache.LAST_USED_ANNOTATION: cache.stamp(clock.now())}}})
