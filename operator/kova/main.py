"""Kopf registration: only decorators and settings here; each handler is a short call into kova.controllers.

Imported by `kova run` (kopf loads this module), never by library code.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import os
from typing import Any

import kopf

from kova.adapters import bookkeeping, env, metrics
from kova.adapters.kube import Kube
from kova.adapters.runtime import Runtime, Settings
from kova.adapters.store import Stores
from kova.api.resources import FLAVORS as FLAVOR_RES
from kova.api.resources import IMAGES as IMAGE_RES
from kova.api.resources import INSTANCES as INSTANCE_RES
from kova.api.resources import KEYPAIRS as KEYPAIR_RES
from kova.api.resources import NAMESPACES, Resource
from kova.api.resources import SECURITY_GROUPS as SECURITY_GROUP_RES
from kova.controllers import access, flavor, image, instance, wiring


def kind(res: Resource) -> tuple[str, str, str]:
    return (res.group, res.version, res.plural)


FLAVORS, IMAGES, INSTANCES = kind(FLAVOR_RES), kind(IMAGE_RES), kind(INSTANCE_RES)
KEYPAIRS, SECURITY_GROUPS = kind(KEYPAIR_RES), kind(SECURITY_GROUP_RES)


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
    # Kopf's bookkeeping stays in memory: no PATCH of every object per handling cycle (kova.adapters.bookkeeping).
    settings.persistence.progress_storage = bookkeeping.PROGRESS
    settings.persistence.diffbase_storage = bookkeeping.DIFFBASE
    settings.posting.level = logging.INFO
    settings.watching.server_timeout = 300
    # One replica runs Kopf at all: the others stand by at a Lease (kova.adapters.leader), so Kopf's own
    # peering, which would pause Kopf's handlers but not Kova's caches and schedulers, is not used.
    settings.peering.standalone = True
    backoff = env.numbers("KOVA_ERROR_BACKOFFS")
    if backoff:  # tests shorten it so a dead server does not cost a minute
        settings.networking.error_backoffs = backoff
    config = Settings.from_env()
    store = Stores(config.stores, config.link_key)
    await asyncio.to_thread(store.ensure_bucket)  # network I/O: not on the event loop
    kube = await Kube.connect()
    cache_ns = config.image_cache.namespace
    if cache_ns and await kube.get(NAMESPACES, cache_ns) is None:
        # Entries could not be made: root disks are imported directly, as before the cache, rather than wait.
        logger.warning("the image cache's namespace %s does not exist: the image cache is off (root disks are "
                       "imported directly); create it, or set KOVA_IMAGE_CACHE_NAMESPACE", cache_ns)
        config = dataclasses.replace(config, image_cache=dataclasses.replace(config.image_cache, namespace=""))
    memo["runtime"] = runtime = Runtime(settings=config, kube=kube, store=store)
    await wiring.start(memo, kube, runtime)
    logger.info("kova started; images in stores %s (default %s)", ", ".join(store.order), store.default)


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
        for task in list(rt(memo).copies.values()):  # copies resume from reconcile on the next leader
            task.cancel()
        await rt(memo).kube.close()


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


def _fetched(spec: kopf.Spec, **_: Any) -> bool:
    """Images whose data Kova fetches (a URL, an Instance). One that waits for an upload gets its daemon when
    it is given a URL (Glance's web-download import): Kopf starts a daemon once its filter matches."""
    source = spec.get("source") or {}
    return bool(source.get("url") or source.get("instance"))


@kopf.daemon(*IMAGES, cancellation_timeout=60, initial_delay=0, when=_fetched)
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
async def instance_changed(namespace: str | None, name: str, body: kopf.Body, memo: Any, **_: Any) -> None:
    memo["caches"].instances.offer(dict(body))  # the cache may not have this version yet
    with metrics.reconciling("Instance"):
        await instance.reconcile(rt(memo), memo["caches"], ns(namespace), name)


# ----- KeyPair, SecurityGroup (ServerGroups and zones: kova.controllers.wiring) -----

@kopf.on.resume(*KEYPAIRS)
@kopf.on.create(*KEYPAIRS)
async def keypair_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await access.reconcile_keypair(rt(memo), ns(namespace), name)


@kopf.on.resume(*SECURITY_GROUPS)
@kopf.on.create(*SECURITY_GROUPS)
@kopf.on.update(*SECURITY_GROUPS)
async def security_group_changed(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await access.reconcile_security_group(rt(memo), ns(namespace), name)


@kopf.on.delete(*SECURITY_GROUPS)
async def security_group_deleted(namespace: str | None, name: str, memo: Any, **_: Any) -> None:
    await access.delete_security_group(rt(memo), memo["group_deletions"], ns(namespace), name)
