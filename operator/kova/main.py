"""Kopf registration: only decorators and settings here; each handler is a short call into handlers/.

Imported by `kova run` (kopf loads this module), never by library code.
"""

from __future__ import annotations

import asyncio
import logging
import os
import random
from typing import Any

import kopf

from kova import metrics
from kova.bookkeeping import MemoryDiffBaseStorage, MemoryProgressStorage
from kova.builders import INSTANCE_LABEL, MANAGED_BY, parse_image_ref
from kova.handlers import flavor, image, instance
from kova.kube import DATA_VOLUMES, VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES, Kube
from kova.models import FLAVOR, IMAGE, INSTANCE, VERSION
from kova.runtime import Runtime, Settings
from kova.store import ObjectStore

FLAVORS = (FLAVOR.group, VERSION, FLAVOR.plural)
IMAGES = (IMAGE.group, VERSION, IMAGE.plural)
INSTANCES = (INSTANCE.group, VERSION, INSTANCE.plural)
CHILDREN = {r.plural: r for r in (VIRTUAL_MACHINES, VIRTUAL_MACHINE_INSTANCES, DATA_VOLUMES)}
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
    memo["runtime"] = Runtime(settings=config, kube=await Kube.connect(), store=store)
    logger.info("kova started; images in %s at %s", config.store.bucket, config.store.endpoint)


@kopf.on.login()
def login(**kwargs: Any) -> kopf.ConnectionInfo | None:
    if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG"):
        return kopf.login_with_service_account(**kwargs)
    return kopf.login_with_kubeconfig(**kwargs)


@kopf.on.cleanup()
async def cleanup(memo: Any, **_: Any) -> None:
    if "runtime" in memo:
        await rt(memo).kube.close()


def _live(event: kopf.RawEvent, **_: Any) -> bool:
    """Not the initial listing (type None): at start-up each Instance's own resume handler reconciles it,
    so its children's and its Flavor's and Image's listing events would only repeat that work."""
    return event["type"] is not None


def caches(kw: dict[str, Any]) -> instance.Caches:
    """The indexes below, as Kopf hands them to every handler."""
    return instance.Caches(flavors=kw["flavor_index"], images=kw["image_index"], datavolumes=kw["dv_index"],
                           vms=kw["vm_index"], vmis=kw["vmi_index"], instances=kw["instance_index"],
                           dependants=kw["dependant_index"])


# ----- indexes: what reconciles read instead of asking the API server -----
# Metadata that reconciles never read and that is large: the server's field-ownership records, and
# kubectl's copy of the last applied manifest (they made up most of ~120 KiB per Instance at 5,000).
_HEAVY_METADATA = ("managedFields",)
_HEAVY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def _copy(body: kopf.Body, *fields: str) -> dict[str, Any]:
    """The parts of an object reconciles use, as plain dicts. Not deep-copied: each watch event is freshly
    parsed JSON that nothing changes afterwards (a deep copy per event cost ~3% of the operator's CPU)."""
    out = {f: body.get(f) or {} for f in ("apiVersion", "kind", "metadata", *fields)}
    metadata = {k: v for k, v in out["metadata"].items() if k not in _HEAVY_METADATA}
    if any(a in (metadata.get("annotations") or {}) for a in _HEAVY_ANNOTATIONS):
        metadata["annotations"] = {k: v for k, v in metadata["annotations"].items() if k not in _HEAVY_ANNOTATIONS}
    out["metadata"] = metadata
    return out


@kopf.index(*FLAVORS)
def flavor_index(name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {name: _copy(body, "spec")}


@kopf.index(*IMAGES)
def image_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _copy(body, "spec", "status")}


@kopf.index(*INSTANCES)
def instance_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _copy(body, "spec", "status")}


@kopf.index(*INSTANCES)
def dependant_index(namespace: str | None, name: str, spec: kopf.Spec, **_: Any) -> dict[Any, Any]:
    """Which Instances need which Flavor and Image: their arrival or change wakes those Instances."""
    image_ns, image_name = parse_image_ref(str(spec.get("imageRef", "")), ns(namespace))
    return {("Image", image_ns, image_name): (namespace, name), ("Flavor", spec.get("flavorRef")): (namespace, name)}


@kopf.index("cdi.kubevirt.io", "v1beta1", "datavolumes", labels=MANAGED_BY)
def dv_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _copy(body, "status")}  # phase, progress, conditions: small


@kopf.index("kubevirt.io", "v1", "virtualmachines", labels=MANAGED_BY)
def vm_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    # The desired VirtualMachine is compared with the whole of it (kova.writes).
    return {(namespace, name): _copy(body, "spec", "status")}


@kopf.index("kubevirt.io", "v1", "virtualmachineinstances", labels=MANAGED_BY)
def vmi_index(namespace: str | None, name: str, body: kopf.Body, **_: Any) -> dict[Any, Any]:
    return {(namespace, name): _copy(body, "status")}


# ----- Flavor -----
@kopf.on.resume(*FLAVORS)
@kopf.on.create(*FLAVORS)
@kopf.on.update(*FLAVORS)
async def flavor_changed(name: str, memo: Any, **_: Any) -> None:
    with metrics.reconciling("Flavor"):
        await flavor.reconcile(rt(memo), name)


@kopf.on.event(*FLAVORS, when=_live)
async def flavor_event(name: str, memo: Any, **kw: Any) -> None:
    await instance.wake_dependants(rt(memo), caches(kw), ("Flavor", name))


# ----- Image -----
@kopf.on.resume(*IMAGES)
@kopf.on.create(*IMAGES)
@kopf.on.update(*IMAGES)
async def image_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    with metrics.reconciling("Image"):
        await image.reconcile(rt(memo), ns(namespace), name)


@kopf.on.event(*IMAGES, when=_live)
async def image_event(namespace: str | None, name: str, memo: Any, **kw: Any) -> None:
    await instance.wake_dependants(rt(memo), caches(kw), ("Image", ns(namespace), name))


@kopf.daemon(*IMAGES, cancellation_timeout=60, initial_delay=0)
async def image_import(namespace: str | None, name: str, stopped: kopf.DaemonStopped, memo: Any,
                       logger: Log, **_: Any) -> None:
    await image.run_import(rt(memo), ns(namespace), name, stopped, logger)


@kopf.on.delete(*IMAGES)
async def image_deleted(body: kopf.Body, memo: Any, logger: Log, **_: Any) -> None:
    with metrics.reconciling("Image"):
        await image.delete(rt(memo), body, logger)


# ----- Instance -----
@kopf.on.resume(*INSTANCES)
@kopf.on.create(*INSTANCES)
@kopf.on.update(*INSTANCES)
async def instance_changed(namespace: str | None, name: str, memo: Any, **kw: Any) -> None:
    with metrics.reconciling("Instance"):
        await instance.reconcile(rt(memo), caches(kw), ns(namespace), name)


@kopf.on.event("kubevirt.io", "v1", "virtualmachines", labels=MANAGED_BY, when=_live)
@kopf.on.event("kubevirt.io", "v1", "virtualmachineinstances", labels=MANAGED_BY, when=_live)
@kopf.on.event("cdi.kubevirt.io", "v1beta1", "datavolumes", labels=MANAGED_BY, when=_live)
async def child_changed(event: kopf.RawEvent, resource: kopf.Resource, namespace: str | None, name: str,
                        labels: kopf.Labels, memo: Any, **kw: Any) -> None:
    rt(memo).writes.seen(CHILDREN[resource.plural], ns(namespace), name, deleted=event["type"] == "DELETED")
    owner = labels.get(INSTANCE_LABEL)
    if owner:
        with metrics.reconciling("Instance"):
            await instance.reconcile(rt(memo), caches(kw), ns(namespace), owner)


def _deleted(event: kopf.RawEvent, **_: Any) -> bool:
    return event["type"] == "DELETED"


@kopf.on.event(*FLAVORS, when=_deleted)
@kopf.on.event(*IMAGES, when=_deleted)
@kopf.on.event(*INSTANCES, when=_deleted)
async def forget_deleted(event: kopf.RawEvent, uid: str, memo: Any, **_: Any) -> None:
    """What this process remembers of an object goes with the object."""
    DIFFBASE.forget(uid)
    PROGRESS.forget(uid)
    rt(memo).writes.forget_status(uid)
