"""The operator's caches and what their events set off: one watch per kind (kova.adapters.informer), listed
before Kopf starts, so that no handler ever reads a cache that is not filled yet. Child events reconcile
their Instance; Flavor, Image, KeyPair, ServerGroup, SecurityGroup and zone events wake the Instances that wait
for them; Instance events wake the held deletions of their namespace's SecurityGroups; Node events keep the
AvailabilityZones; what this process remembers of an object goes with the object."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from typing import Any, cast

from kova.adapters import bookkeeping, metrics
from kova.adapters.informer import Body, Coalescer, Informer, Listener, View, object_key
from kova.adapters.kube import Kube
from kova.adapters.runtime import Runtime
from kova.api.resources import (
    AVAILABILITY_ZONES,
    DATA_SOURCES,
    DATA_VOLUMES,
    FLAVORS,
    IMAGES,
    INSTANCES,
    KEYPAIRS,
    MANAGED_BY_SELECTOR,
    NODES,
    PERSISTENT_VOLUME_CLAIMS,
    SECURITY_GROUPS,
    SERVER_GROUPS,
    STORAGE_CLASSES,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    VOLUMES,
    Resource,
)
from kova.compute import access as groups
from kova.compute import attachments, volumes
from kova.compute.children import INSTANCE_LABEL
from kova.compute.snapshot import snapshot_running
from kova.controllers import access, imagecache, instance, quota, volume

# What zones read of a Node (kova.compute.access.zones; its labels are in the metadata, which is kept). The rest
# of a Node's status is mostly its images, capacity and addresses: kilobytes per Node that nothing reads.
NODE_FIELDS = ("spec.unschedulable", "status.conditions")


async def start(memo: Any, kube: Kube, runtime: Runtime) -> None:
    """One watch per kind (per served namespace), each listed before this returns."""
    namespaces: list[str | None] = list(memo.get("namespaces") or []) or [None]

    def view(res: Resource, fields: tuple[str, ...], selector: str | None = None,
             only: list[str | None] | None = None) -> View:
        return View([Informer(kube, res, fields=fields, namespace=n, label_selector=selector)
                     for n in (only or namespaces if res.namespaced else [None])])

    cached = runtime.settings.image_cache.namespace  # the image cache's entries: a namespace of Kova's own
    with_cache = namespaces if namespaces == [None] or not cached or cached in namespaces else [*namespaces, cached]

    views = {"flavors": view(FLAVORS, ("spec",)), "images": view(IMAGES, ("spec", "status")),
             "instances": view(INSTANCES, ("spec", "status")),
             "datavolumes": view(DATA_VOLUMES, ("status",), MANAGED_BY_SELECTOR, with_cache),  # phase, progress
             # The desired VirtualMachine is compared with the whole of it (kova.adapters.writes).
             "vms": view(VIRTUAL_MACHINES, ("spec", "status"), MANAGED_BY_SELECTOR),
             "vmis": view(VIRTUAL_MACHINE_INSTANCES, ("status",), MANAGED_BY_SELECTOR),
             # Root disks' claims, for resizes. CDI gives them the DataVolume's labels but its own managed-by
             # (app.kubernetes.io/managed-by: cdi-controller): selected by Kova's instance label instead.
             "pvcs": view(PERSISTENT_VOLUME_CLAIMS, ("spec", "status"), INSTANCE_LABEL),
             "keypairs": view(KEYPAIRS, ("status",)), "servergroups": view(SERVER_GROUPS, ("spec",)),
             "zones": view(AVAILABILITY_ZONES, ("status",)),
             "securitygroups": view(SECURITY_GROUPS, ()),  # whether a group exists: its metadata is enough
             "nodes": view(NODES, NODE_FIELDS),
             "storageclasses": view(STORAGE_CLASSES, ())}  # which is the default: its metadata says
    if cached:
        views["datasources"] = view(DATA_SOURCES, (), MANAGED_BY_SELECTOR, [cached])
    views.update(quota.views(view))
    views["volumes"] = view(VOLUMES, ("spec", "status"))
    # Volumes' claims (CDI gives them the DataVolume's labels): selected by Kova's volume label.
    views["volume_pvcs"] = view(PERSISTENT_VOLUME_CLAIMS, ("spec", "status"), volumes.VOLUME_LABEL)
    cache = instance.Caches(flavors=views["flavors"], images=views["images"], instances=views["instances"],
                            datavolumes=views["datavolumes"], vms=views["vms"], vmis=views["vmis"],
                            pvcs=views["pvcs"], keypairs=views["keypairs"], servergroups=views["servergroups"],
                            zones=views["zones"], securitygroups=views["securitygroups"],
                            storageclasses=views["storageclasses"], volumes=views["volumes"])

    async def reconcile(key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        with metrics.reconciling("Instance"):
            await instance.reconcile(runtime, cache, namespace, name)
    kicks = Coalescer(reconcile, "Instance reconcile")

    def wake(key: tuple[str, str], seconds: float) -> None:
        asyncio.get_running_loop().call_later(seconds, kicks.kick, key)
    cache.wake = wake

    def child(res: Resource, fields: tuple[str, ...]) -> Listener:
        def changed(old: Body | None, new: Body | None) -> None:
            md = (new or old or {})["metadata"]
            runtime.writes.seen(res, md["namespace"], md["name"], deleted=new is None)
            owner = (md.get("labels") or {}).get(INSTANCE_LABEL)
            # Only a change of what reconciles read (a label KubeVirt writes on a VMI is not): one reconcile
            # less. Any change of a VM counts: Kova puts back its hand-edited labels and annotations too.
            if owner and (old is None or new is None or not fields or any(old.get(f) != new.get(f) for f in fields)):
                kicks.kick((md["namespace"], owner))
        return changed

    def dependency(kind: str) -> Listener:
        def changed(old: Body | None, new: Body | None) -> None:
            for waiter in cache.waiters((kind, *object_key(new or old or {}))):
                kicks.kick(waiter)
            if new is None:
                forget_object(runtime, old)
        return changed

    def snapshot(old: Body | None, new: Body | None) -> None:
        """An Image made from an Instance stops that Instance while it runs (kova.compute.lifecycle)."""
        for body in (old, new):
            source = ((body or {}).get("spec") or {}).get("source") or {}
            if body is not None and source.get("instance"):
                key = (body["metadata"]["namespace"], source["instance"])
                names = cache.snapshots.setdefault(key, set())
                names.discard(body["metadata"]["name"])
                if body is new and snapshot_running(new):
                    names.add(body["metadata"]["name"])
                if not names:
                    cache.snapshots.pop(key, None)
                kicks.kick(key)

    for res, name, read in ((DATA_VOLUMES, "datavolumes", ("status",)), (VIRTUAL_MACHINES, "vms", ()),
                            (VIRTUAL_MACHINE_INSTANCES, "vmis", ("status",)),
                            (PERSISTENT_VOLUME_CLAIMS, "pvcs", ("spec", "status"))):
        views[name].listen(child(res, read))
    def entry(old: Body | None, new: Body | None) -> None:
        """An image cache entry changed: the Instances waiting for it go on."""
        for waiter in cache.waiters(("DataVolume", *object_key(new or old or {}))):
            kicks.kick(waiter)
    views["datavolumes"].listen(entry)
    views["flavors"].listen(dependency("Flavor"))
    views["images"].listen(dependency("Image"))
    views["images"].listen(snapshot)
    views["keypairs"].listen(dependency("KeyPair"))
    views["servergroups"].listen(dependency("ServerGroup"))
    views["zones"].listen(dependency("AvailabilityZone"))
    views["securitygroups"].listen(dependency("SecurityGroup"))
    views["volumes"].listen(dependency("Volume"))

    def holders(old: Body | None, new: Body | None) -> None:
        """A Volume's holders changed: the servers that name it plug or unplug it, or are refused it."""
        if ((old or {}).get("status") or {}).get("attachments") == ((new or {}).get("status") or {}).get(
                "attachments") and old is not None and new is not None:
            return
        namespace, name = object_key(new or old or {})
        for i in views["instances"].objects():
            if i["metadata"]["namespace"] == namespace and name in attachments.volumes_named(i):
                kicks.kick(object_key(i))
    views["volumes"].listen(holders)

    async def zones_changed(_: Hashable) -> None:
        await access.reconcile_zones(runtime, list(views["nodes"].objects()), list(views["zones"].objects()))
    zone_kicks = Coalescer(zones_changed, "AvailabilityZone reconcile")
    views["nodes"].listen(lambda old, new: zone_kicks.kick("zones"))

    async def group_changed(key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        members = [i["metadata"]["name"] for i in views["instances"].objects()
                   if i["metadata"]["namespace"] == namespace and (i.get("spec") or {}).get("serverGroup") == name]
        await access.reconcile_server_group(runtime, namespace, name, members)
    group_kicks = Coalescer(group_changed, "ServerGroup reconcile")

    def member(old: Body | None, new: Body | None) -> None:
        for body in (old, new):
            group = ((body or {}).get("spec") or {}).get("serverGroup")
            if body is not None and group and (old is None or new is None or old.get("spec") != new.get("spec")):
                group_kicks.kick((body["metadata"]["namespace"], group))
    views["instances"].listen(member)
    views["servergroups"].listen(lambda old, new: group_kicks.kick(object_key(new or old or {})))
    def instance_gone(old: Body | None, new: Body | None) -> None:
        if new is None and old is not None:
            forget_instance(runtime, cache, old)
    views["instances"].listen(instance_gone)

    # Every event, not only a change of spec.securityGroups: Kopf may have handed the new spec to the cache
    # (offer) before its watch event came, and a held deletion is rare, its look again cheap.
    deletions = access.GroupDeletions(users=lambda namespace, group: groups.users(
        namespace, group, views["instances"].objects()))
    views["instances"].listen(lambda old, new: deletions.instance_changed((new or old or {})["metadata"]["namespace"]))
    keeper = quota.Keeper(runtime, views)  # a namespace's Quota, its ResourceQuota; Instances over quota
    cache.quota, runtime.image_quota = keeper.check, keeper.image_gate

    if cached:
        keeper_of_cache = imagecache.Keeper(runtime, views["datavolumes"], views["datasources"], views["images"])
        views["datavolumes"].listen(keeper_of_cache.changed)
        views["datasources"].listen(keeper_of_cache.changed)
        views["images"].listen(keeper_of_cache.image_changed)
    start_volumes(runtime, views, memo, keeper.limits)
    informers = [i for v in views.values() for i in v]
    memo["caches"], memo["kicks"], memo["group_deletions"] = cache, kicks, deletions
    memo["other_kicks"] = [zone_kicks, group_kicks, keeper.kicks, memo["volume_kicks"]]
    if cached:
        memo["other_kicks"].append(keeper_of_cache.kicks)
    memo["informer_tasks"] = [asyncio.create_task(i.run(), name=repr(i)) for i in informers]
    await asyncio.gather(*(i.synced.wait() for i in informers))
    zone_kicks.kick("zones")  # the first list announces nothing
    keeper.start()
    if cached:
        keeper_of_cache.kicks.kick("cache")
    for body in views["volumes"].objects():  # the first list announces nothing: every Volume is looked at once
        memo["volume_kicks"].kick(object_key(body))
    for body in views["images"].objects():  # the first list announces nothing: snapshots under way are found here
        snapshot(None, body)


def start_volumes(runtime: Runtime, views: dict[str, View], memo: Any,
                  limits: Callable[[str], dict[str, int]] | None = None) -> None:
    """Volumes: reconciled on their own changes, on their DataVolume's and claim's, and when what they wait
    for changes (an Image, another Volume, an image cache entry)."""
    caches = volume.Caches(volumes=views["volumes"], datavolumes=views["datavolumes"], pvcs=views["volume_pvcs"],
                           images=views["images"], storageclasses=views["storageclasses"],
                           instances=views["instances"], limits=limits)

    async def reconcile(key: Hashable) -> None:
        namespace, name = cast(tuple[str, str], key)
        with metrics.reconciling("Volume"):
            await volume.reconcile(runtime, caches, namespace, name)
    kicks = Coalescer(reconcile, "Volume reconcile")

    def changed(old: Body | None, new: Body | None) -> None:
        body = new or old or {}
        kicks.kick(object_key(body))
        for waiter in caches.waiters(("Volume", *object_key(body))):
            kicks.kick(waiter)
        if new is None:
            forget_object(runtime, old)
            for v in views["volumes"].objects():  # gigabytes freed: an extend refused over quota may fit now
                conditions = (v.get("status") or {}).get("conditions") or []
                if v["metadata"]["namespace"] == body["metadata"]["namespace"] and any(
                        c.get("reason") == volumes.QUOTA_REASON for c in conditions):
                    kicks.kick(object_key(v))

    def child(old: Body | None, new: Body | None) -> None:
        md = (new or old or {})["metadata"]
        owner = (md.get("labels") or {}).get(volumes.VOLUME_LABEL)
        if owner:
            kicks.kick((md["namespace"], owner))
        for waiter in caches.waiters(("DataVolume", *object_key(new or old or {}))):
            kicks.kick(waiter)

    def image(old: Body | None, new: Body | None) -> None:
        for waiter in caches.waiters(("Image", *object_key(new or old or {}))):
            kicks.kick(waiter)

    def server(old: Body | None, new: Body | None) -> None:
        """An Instance that asks for a volume, lets it go or reports its disk: the volume decides who holds it."""
        if old is not None and new is not None and old.get("spec", {}).get("volumeAttachments") == new.get(
                "spec", {}).get("volumeAttachments") and old.get("status", {}).get("volumeAttachments") == new.get(
                "status", {}).get("volumeAttachments") and bool(old["metadata"].get("deletionTimestamp")) == bool(
                new["metadata"].get("deletionTimestamp")):
            return
        for body in (old, new):
            if body is not None:
                for name in attachments.volumes_named(body):
                    kicks.kick((body["metadata"]["namespace"], name))

    views["volumes"].listen(changed)
    views["datavolumes"].listen(child)
    views["volume_pvcs"].listen(child)
    views["images"].listen(image)
    views["instances"].listen(server)
    memo["volume_kicks"] = kicks


def forget_object(runtime: Runtime, old: Body | None) -> None:
    """What this process remembers of a deleted object, by uid: Kopf's bookkeeping, the last status written."""
    uid = ((old or {}).get("metadata") or {}).get("uid")
    if uid:
        bookkeeping.forget(uid)
        runtime.writes.forget_status(uid)


def forget_instance(runtime: Runtime, cache: instance.Caches, old: Body) -> None:
    """A deleted Instance: what is kept of any object, what it waited for, and its last KubeVirt call."""
    namespace, name = old["metadata"]["namespace"], old["metadata"]["name"]
    forget_object(runtime, old)
    cache.forget(namespace, name)
    runtime.writes.forget_call(namespace, name)
