"""Kopf registration: only decorators and settings here; each handler is a short call into handlers/.

Imported by `kova run` (kopf loads this module), never by library code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from collections.abc import Hashable
from typing import Any, cast

import kopf

from kova import metrics
from kova.bookkeeping import MemoryDiffBaseStorage, MemoryProgressStorage
from kova.builders import INSTANCE_LABEL, MANAGED_BY
from kova.handlers import access, flavor, image, instance, snapshot
from kova.informer import Body, Coalescer, Informer, Listener, View, object_key
from kova.kube import (
    DATA_VOLUMES,
    NODES,
    PERSISTENT_VOLUME_CLAIMS,
    VIRTUAL_MACHINE_INSTANCES,
    VIRTUAL_MACHINES,
    Kube,
    Resource,
)
from kova.models import FLAVOR, IMAGE, INSTANCE, VERSION
from kova.runtime import AVAILABILITY_ZONES as AVAILABILITY_ZONES_RES
from kova.runtime import FLAVORS as FLAVORS_RES
from kova.runtime import IMAGES as IMAGES_RES
from kova.runtime import INSTANCES as INSTANCES_RES
from kova.runtime import KEYPAIRS as KEYPAIRS_RES
from kova.runtime import SECURITY_GROUPS as SECURITY_GROUPS_RES
from kova.runtime import SERVER_GROUPS as SERVER_GROUPS_RES
from kova.runtime import Runtime, Settings
from kova.store import ObjectStore

FLAVORS = (FLAVOR.group, VERSION, FLAVOR.plural)
IMAGES = (IMAGE.group, VERSION, IMAGE.plural)
INSTANCES = (INSTANCE.group, VERSION, INSTANCE.plural)
DIFFBASE = MemoryDiffBaseStorage()
PROGRESS = MemoryProgressStorage(prefix="kova.dev")


Log = logging.Logger | logging.LoggerAdapter[Any]


def rt(memo: Any) -> Runtime:
    runtime: Runtime = memo["runtime"]
    return runtime


def ns(namespace: str | None) -> str:
    assert namespace is not None  # these kinds are namespaced
    return namespace


@kopf.on.startup()
async def startup(settings: kopf.OperatorSettings, memo: Any, logger: Log, **_: Any) -> None:
    settings.persistence.finalizer = "image.kova.dev/blob"
    # Kopf's bookkeeping stays in memory: no PATCH of every object per handling cycle (kova.bookkeeping).
    settings.persistence.progress_storage = PROGRESS
    settings.persistence.diffbase_storage = DIFFBASE
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    peering = os.environ.get("KOVA_PEERING")
    if peering:
        # Several replicas, one active. Kopf pauses a replica that sees a peer of the same or a higher
        # priority, so identical replicas each draw their own: the highest runs, the others take over
        # once its peering record expires (lifetime) or it leaves.
        settings.peering.name = peering
        settings.peering.mandatory = True
        settings.peering.priority = int(os.environ.get("KOVA_PEERING_PRIORITY") or random.randint(1, 1_000_000))
        settings.peering.lifetime = int(os.environ.get("KOVA_PEERING_LIFETIME", "60"))
    else:
        settings.peering.standalone = True
    backoff = os.environ.get("KOVA_ERROR_BACKOFFS")
    if backoff:  # tests shorten it so a dead server does not cost a minute
        settings.networking.error_backoffs = [float(x) for x in backoff.split(",")]
    config = Settings.from_env()
    store = ObjectStore(config.store)
    await asyncio.to_thread(store.ensure_bucket)  # network I/O: not on the event loop
    kube = await Kube.connect()
    memo["runtime"] = runtime = Runtime(settings=config, kube=kube, store=store)
    await start_caches(memo, kube, runtime)
    logger.info("kova started; images in %s at %s", config.store.bucket, config.store.endpoint)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    for task in memo.get("informer_tasks", ()):
        task.cancel()
    if "kicks" in memo:
        await memo["kicks"].close()
    for kicks in memo.get("other_kicks", ()):
        await kicks.close()
    if "runtime" in memo:
        await rt(memo).kube.close()


def caches(memo: Any) -> instance.Caches:
    caches: instance.Caches = memo["caches"]
    return caches


# ----- caches: what reconciles read instead of asking the API server -----
MANAGED_BY_SELECTOR = ",".join(f"{k}={v}" for k, v in MANAGED_BY.items())


async def start_caches(memo: Any, kube: Kube, runtime: Runtime) -> None:
    """One watch per kind (per served namespace), listed before Kopf starts, so that no handler ever reads a
    cache that is not filled yet. Child events reconcile their Instance; Flavor and Image events wake the
    Instances that wait for them; what this process remembers of an object goes with the object."""
    namespaces: list[str | None] = list(memo.get("namespaces") or []) or [None]

    def view(res: Resource, fields: tuple[str, ...], selector: str | None = None) -> View:
        return View([Informer(kube, res, fields=fields, namespace=n, label_selector=selector)
                     for n in (namespaces if res.namespaced else [None])])

    views = {"flavors": view(FLAVORS_RES, ("spec",)), "images": view(IMAGES_RES, ("spec", "status")),
             "instances": view(INSTANCES_RES, ("spec", "status")),
             "datavolumes": view(DATA_VOLUMES, ("status",), MANAGED_BY_SELECTOR),  # phase, progress: small
             # The desired VirtualMachine is compared with the whole of it (kova.writes).
             "vms": view(VIRTUAL_MACHINES, ("spec", "status"), MANAGED_BY_SELECTOR),
             "vmis": view(VIRTUAL_MACHINE_INSTANCES, ("status",), MANAGED_BY_SELECTOR),
             # Root disks' claims (CDI gives them the DataVolume's labels): their size, for resizes.
             "pvcs": view(PERSISTENT_VOLUME_CLAIMS, ("spec", "status"), MANAGED_BY_SELECTOR),
             "keypairs": view(KEYPAIRS_RES, ("status",)), "servergroups": view(SERVER_GROUPS_RES, ("spec",)),
             "zones": view(AVAILABILITY_ZONES_RES, ("status",)),
             "nodes": view(NODES, ("spec", "status"))}
    cache = instance.Caches(flavors=views["flavors"], images=views["images"], instances=views["instances"],
                            datavolumes=views["datavolumes"], vms=views["vms"], vmis=views["vmis"],
                            pvcs=views["pvcs"], keypairs=views["keypairs"], servergroups=views["servergroups"],
                            zones=views["zones"])

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
                forget(old)
        return changed

    def forget(old: Body | None) -> None:
        uid = ((old or {}).get("metadata") or {}).get("uid")
        if uid:
            DIFFBASE.forget(uid)
            PROGRESS.forget(uid)
            runtime.writes.forget_status(uid)

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
    views["flavors"].listen(dependency("Flavor"))
    views["images"].listen(dependency("Image"))
    views["images"].listen(snapshot)
    views["keypairs"].listen(dependency("KeyPair"))
    views["servergroups"].listen(dependency("ServerGroup"))
    views["zones"].listen(dependency("AvailabilityZone"))

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
            forget(old)
            cache.forget(old["metadata"]["namespace"], old["metadata"]["name"])
    views["instances"].listen(instance_gone)

    informers = [i for v in views.values() for i in v]
    memo["caches"], memo["kicks"] = cache, kicks
    memo["other_kicks"] = [zone_kicks, group_kicks]
    memo["informer_tasks"] = [asyncio.create_task(i.run(), name=repr(i)) for i in informers]
    await asyncio.gather(*(i.synced.wait() for i in informers))
    zone_kicks.kick("zones")  # the first list announces nothing
    for body in views["images"].objects():  # the first list announces nothing: snapshots under way are found here
        snapshot(None, body)


def snapshot_running(body: Body | None) -> bool:
    status = ((body or {}).get("status") or {}).get("status")
    return body is not None and not body["metadata"].get("deletionTimestamp") and status not in (
        "active", "killed", "deactivated", "deleted")


# ----- Flavor -----
@kopf.on.resume(*FLAVORS)
@kopf.on.create(*FLAVORS)
@kopf.on.update(*FLAVORS)
async def flavor_changed(name: str, memo: Any, **_: Any) -> None:
    with metrics.reconciling("Flavor"):
        await flavor.reconcile(rt(memo), name)


# ----- Image -----
@kopf.on.resume(*IMAGES)
@kopf.on.create(*IMAGES)
@kopf.on.update(*IMAGES)
async def image_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    with metrics.reconciling("Image"):
        await image.reconcile(rt(memo), ns(namespace), name)


@kopf.daemon(*IMAGES, cancellation_timeout=60, initial_delay=0)
async def image_import(namespace: str | None, name: str, stopped: kopf.DaemonStopped, memo: Any,
                       logger: Log, **_: Any) -> None:
    await image.run_import(rt(memo), ns(namespace), name, stopped, logger, snapshot=snapshot.run)


@kopf.on.delete(*IMAGES)
async def image_deleted(body: kopf.Body, memo: Any, logger: Log, **_: Any) -> None:
    with metrics.reconciling("Image"):
        await image.delete(rt(memo), body, logger)


# ----- Instance -----
@kopf.on.resume(*INSTANCES)
@kopf.on.create(*INSTANCES)
@kopf.on.update(*INSTANCES)
async def instance_changed(namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo["caches"].instances.offer(dict(body))  # the cache may not have this version yet
    with metrics.reconciling("Instance"):
        await instance.reconcile(rt(memo), caches(memo), ns(namespace), name)


# ----- KeyPair, SecurityGroup, ServerGroup -----
KEYPAIRS = (KEYPAIRS_RES.group, VERSION, KEYPAIRS_RES.plural)
SECURITY_GROUPS = (SECURITY_GROUPS_RES.group, VERSION, SECURITY_GROUPS_RES.plural)
SERVER_GROUPS = (SERVER_GROUPS_RES.group, VERSION, SERVER_GROUPS_RES.plural)


@kopf.on.resume(*KEYPAIRS)
@kopf.on.create(*KEYPAIRS)
async def keypair_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await access.reconcile_keypair(rt(memo), ns(namespace), name)


@kopf.on.resume(*SECURITY_GROUPS)
@kopf.on.create(*SECURITY_GROUPS)
@kopf.on.update(*SECURITY_GROUPS)
async def security_group_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await access.reconcile_security_group(rt(memo), ns(namespace), name)
