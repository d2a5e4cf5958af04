"""What the handlers share while the operator runs: clients, settings, per-object locks, import progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from kova.adapters import env, worker
from kova.adapters.kube import Kube
from kova.adapters.store import StoreConfig, Stores, StoreSpec, parse_stores
from kova.adapters.writes import Writes
from kova.api.models import QUOTA_DEFAULTS
from kova.image import cache, pace
from kova.image.fairness import Waiter, next_import
from kova.image.filter import ImportFilter
from kova.image.importer import DEFAULT_SIZE_CAP, ImportProgress
from kova.image.quota import Gate

log = logging.getLogger("kova")


@dataclass(frozen=True)
class Settings:
    store: StoreConfig | None  # KOVA_S3_*: the primary S3 store (None when KOVA_STORES names only others)
    stores: tuple[StoreSpec, ...] = ()  # KOVA_STORES: every store (unset: the primary alone, id s3)
    link_key: bytes = b""  # KOVA_STORE_LINK_KEY: signs a file store's links, shared by the operator and kova api
    presign_ttl: dt.timedelta = dt.timedelta(hours=1)
    import_retry_delay: float = 30.0  # seconds before an import that met a passing failure is tried again
    import_filter: ImportFilter = field(default_factory=ImportFilter)  # what web-download may reach (SSRF)
    size_cap: int = DEFAULT_SIZE_CAP  # bytes; a larger image is killed (Glance's image_size_cap)
    max_imports: int = 4  # imports running at once in this replica; the others wait in `queued`
    import_limits: pace.Limits = field(default_factory=pace.Limits)  # deadline and minimum rate of an import
    upload_read_timeout: float = 60.0  # `kova api`: seconds an upload may send nothing before it is dropped
    max_uploads: int = 8  # `kova api`: uploads received at once by one replica (each holds a thread)
    max_uploads_per_project: int = 2  # `kova api`: of those, at once from one project
    resize_confirm_window: float = 0.0  # seconds before VERIFY_RESIZE confirms itself; 0: never (Nova's)
    shared_networks: frozenset[str] = frozenset()  # namespaces whose NetworkAttachmentDefinitions all may use
    worker_socket: str = ""  # the import worker's Unix socket (kova.adapters.worker); empty: import in-process
    # Per-namespace limits where a namespace's Quota says nothing (OpenStack's names; -1: unlimited).
    quota_defaults: dict[str, int] = field(default_factory=lambda: dict(QUOTA_DEFAULTS))
    image_cache: cache.Settings = field(default_factory=cache.Settings)  # KOVA_IMAGE_CACHE_*

    @classmethod
    def from_env(cls) -> Settings:
        try:
            import_filter = ImportFilter.from_env(os.environ)
        except ValueError as e:
            raise env.BadSetting(f"import filter settings (KOVA_IMPORT_*): {e}") from None
        primary = StoreConfig.from_env() if os.environ.get("KOVA_S3_ENDPOINT") else None
        stores = parse_stores(os.environ.get("KOVA_STORES", ""), primary, os.environ)
        link_key = os.environ.get("KOVA_STORE_LINK_KEY", "").encode()
        if any(s.kind == "file" for s in stores) and len(link_key) < 16:
            raise env.BadSetting("KOVA_STORE_LINK_KEY (16 characters or more) must be set with a file store: it "
                                 "signs the links importers read it through")
        return cls(store=primary, stores=stores, link_key=link_key,
                   presign_ttl=dt.timedelta(seconds=env.integer("KOVA_PRESIGN_TTL", 3600, minimum=1)),
                   import_retry_delay=env.number("KOVA_IMPORT_RETRY_DELAY", 30.0),
                   import_filter=import_filter,
                   size_cap=env.size("KOVA_IMAGE_SIZE_CAP", DEFAULT_SIZE_CAP),
                   max_imports=env.integer("KOVA_MAX_CONCURRENT_IMPORTS", 4, minimum=1),
                   import_limits=pace.Limits(
                       deadline=env.number("KOVA_IMPORT_DEADLINE", pace.Limits.deadline),
                       min_rate=env.size("KOVA_IMPORT_MIN_RATE", pace.Limits.min_rate),
                       window=env.number("KOVA_IMPORT_MIN_RATE_WINDOW", pace.Limits.window, minimum=1.0)),
                   upload_read_timeout=env.number("KOVA_UPLOAD_READ_TIMEOUT", 60.0, minimum=1.0),
                   max_uploads=env.integer("KOVA_MAX_UPLOADS", 8, minimum=1),
                   max_uploads_per_project=env.integer("KOVA_MAX_UPLOADS_PER_PROJECT", 2, minimum=1),
                   resize_confirm_window=env.number("KOVA_RESIZE_CONFIRM_WINDOW", 0.0),
                   shared_networks=env.names("KOVA_SHARED_NETWORK_NAMESPACES"),
                   worker_socket=os.environ.get("KOVA_WORKER_SOCKET", ""),
                   image_cache=cache_settings(os.environ),
                   quota_defaults=quota_defaults())


class ImportSlots:
    """KOVA_MAX_CONCURRENT_IMPORTS slots shared by every namespace; when one frees, kova.image.fairness says
    which waiting import gets it (the namespace with the fewest running, namespaces in turn)."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.running: Counter[str] = Counter()
        self.waiting: list[tuple[Waiter, asyncio.Future[None]]] = []
        self.last_served: dict[str, int] = {}  # namespace → when it last got a slot (a counter, not a clock)
        self._clock = itertools.count()

    def busy(self) -> int:
        return sum(self.running.values())

    def take(self, namespace: str) -> bool:
        """A slot at once, if one is free and nobody waits for it."""
        if self.waiting or self.busy() >= self.limit:
            return False
        self._grant(namespace)
        return True

    async def wait(self, namespace: str) -> None:
        """Until this import gets a slot; cancelling it gives up its place (or the slot, if just granted)."""
        granted: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        waiter = (Waiter(namespace, next(self._clock)), granted)
        self.waiting.append(waiter)
        self._dispatch()
        try:
            await granted
        except asyncio.CancelledError:
            if granted.done() and not granted.cancelled():
                self.release(namespace)
            elif waiter in self.waiting:
                self.waiting.remove(waiter)
                self._forget(namespace)
            raise

    def release(self, namespace: str) -> None:
        self.running[namespace] -= 1
        if self.running[namespace] <= 0:
            del self.running[namespace]
        self._forget(namespace)
        self._dispatch()

    def _grant(self, namespace: str) -> None:
        self.running[namespace] += 1
        self.last_served[namespace] = next(self._clock)

    def _dispatch(self) -> None:
        while self.waiting and self.busy() < self.limit:
            waiter, granted = self.waiting.pop(next_import([w for w, _ in self.waiting], self.running,
                                                           self.last_served))
            if not granted.done():
                self._grant(waiter.namespace)
                granted.set_result(None)

    def _forget(self, namespace: str) -> None:
        """A namespace with nothing running or waiting leaves nothing behind (its turn starts afresh)."""
        if not self.running.get(namespace) and not any(w.namespace == namespace for w, _ in self.waiting):
            self.last_served.pop(namespace, None)


def cache_settings(environ: Mapping[str, str]) -> cache.Settings:
    """KOVA_IMAGE_CACHE_NAMESPACE ("" or "off": no cache), _MAX_ENTRIES, _MAX_SIZE, _MIN_AGE (seconds) and
    _DIRECT_CLASSES (StorageClasses whose root disks are imported directly)."""
    namespace = environ.get("KOVA_IMAGE_CACHE_NAMESPACE", cache.Settings.namespace)
    return cache.Settings(
        namespace="" if namespace == "off" else namespace,
        max_entries=env.integer("KOVA_IMAGE_CACHE_MAX_ENTRIES", cache.Settings.max_entries, minimum=1, env=environ),
        max_bytes=env.size("KOVA_IMAGE_CACHE_MAX_SIZE", cache.Settings.max_bytes, env=environ),
        min_age=dt.timedelta(seconds=env.number("KOVA_IMAGE_CACHE_MIN_AGE", cache.Settings.min_age.total_seconds(),
                                                env=environ)),
        direct_classes=env.get("KOVA_IMAGE_CACHE_DIRECT_CLASSES",
                               lambda text: frozenset(c.strip() for c in text.split(",") if c.strip()),
                               frozenset(), "a comma-separated list of StorageClass names", environ))


def quota_defaults(environ: dict[str, str] | None = None) -> dict[str, int]:
    """KOVA_QUOTA_<NAME> (KOVA_QUOTA_CORES, KOVA_QUOTA_IMAGE_SIZE_TOTAL, ...) over OpenStack's defaults."""
    return {name: env.integer(f"KOVA_QUOTA_{name.upper()}", default, minimum=-1, env=environ)
            for name, default in QUOTA_DEFAULTS.items()}


@dataclass
class ImportState:
    progress: ImportProgress = field(default_factory=ImportProgress)
    error: str | None = None  # the last passing failure, while it retries


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    store: Stores
    imports: dict[str, ImportState] = field(default_factory=dict)
    # uid → why its import waits (a slot, a quota): every reconcile says it until the import starts, not only
    # the one that found it waiting (another reconcile of the Image would otherwise write the plain word over it)
    waiting: dict[str, str] = field(default_factory=dict)
    # uid → the task bringing an image's data to its spec.stores (kova.controllers.image.copy_stores)
    copies: dict[str, asyncio.Task[None]] = field(default_factory=dict)
    default_groups: set[str] = field(default_factory=set)  # namespaces whose default SecurityGroup is made
    # (namespace, uid) → what the namespace's quotas say to an import about to start (kova.controllers.quota).
    image_quota: Callable[[str, str], Gate] | None = None
    import_slots: ImportSlots = field(init=False)
    importer: worker.Local | worker.Remote = field(init=False)
    writes: Writes = field(init=False)
    _events: set[asyncio.Task[None]] = field(default_factory=set)
    _locks: defaultdict[tuple[str, ...], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def __post_init__(self) -> None:
        # Each import holds a few MiB, a connection and two hashing threads: bound them per replica.
        self.import_slots = ImportSlots(self.settings.max_imports)
        # Tenant bytes are read and parsed in a worker without Kubernetes credentials (kova.adapters.worker).
        self.importer = worker.Remote(self.settings.worker_socket) if self.settings.worker_socket \
            else worker.Local(self.store)
        self.writes = Writes(self.kube)

    def event(self, obj: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        """Post an Event in the background: reconciles do not wait for it, and a lost Event (the API server
        busy) loses no state. Not kopf.event: reconciles also run outside Kopf's handlers (child events)."""
        task = asyncio.get_running_loop().create_task(self._post(obj, type, reason, message))
        self._events.add(task)
        task.add_done_callback(self._events.discard)

    async def _post(self, obj: dict[str, Any], type: str, reason: str, message: str) -> None:
        try:
            await self.kube.post_event(obj, type=type, reason=reason, message=message)
        except Exception as e:  # best effort, as Kopf's own poster
            log.warning("could not post the Event %s about %s: %r", reason, obj["metadata"].get("name"), e)

    def lock(self, *key: str) -> asyncio.Lock:
        """Status of one object is written by one coroutine at a time (handlers, daemons, child events)."""
        return self._locks[key]
