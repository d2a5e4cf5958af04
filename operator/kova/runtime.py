"""What the handlers share while the operator runs: clients, settings, per-object locks, import progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from kova.image.fetch import ImportFilter
from kova.image.importer import DEFAULT_SIZE_CAP, ImportProgress, parse_size
from kova.kube import Kube, Resource
from kova.models import (
    AVAILABILITY_ZONE,
    FLAVOR,
    IMAGE,
    INSTANCE,
    KEYPAIR,
    SECURITY_GROUP,
    SERVER_GROUP,
    VERSION,
    KindInfo,
)
from kova.store import ObjectStore, StoreConfig
from kova.writes import Writes

log = logging.getLogger("kova")


def resource(info: KindInfo) -> Resource:
    return Resource(info.group, VERSION, info.plural, info.namespaced)


FLAVORS = resource(FLAVOR)
IMAGES = resource(IMAGE)
INSTANCES = resource(INSTANCE)
KEYPAIRS = resource(KEYPAIR)
SECURITY_GROUPS = resource(SECURITY_GROUP)
SERVER_GROUPS = resource(SERVER_GROUP)
AVAILABILITY_ZONES = resource(AVAILABILITY_ZONE)


@dataclass(frozen=True)
class Settings:
    store: StoreConfig
    presign_ttl: dt.timedelta = dt.timedelta(hours=1)
    import_retry_delay: float = 30.0  # seconds before an import that met a passing failure is tried again
    import_filter: ImportFilter = field(default_factory=ImportFilter)  # what web-download may reach (SSRF)
    size_cap: int = DEFAULT_SIZE_CAP  # bytes; a larger image is killed (Glance's image_size_cap)
    max_imports: int = 4  # imports running at once in this replica; the others wait in `queued`
    resize_confirm_window: float = 0.0  # seconds before VERIFY_RESIZE confirms itself; 0: never (Nova's)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(store=StoreConfig.from_env(),
                   presign_ttl=dt.timedelta(seconds=int(os.environ.get("KOVA_PRESIGN_TTL", "3600"))),
                   import_retry_delay=float(os.environ.get("KOVA_IMPORT_RETRY_DELAY", "30")),
                   import_filter=ImportFilter.from_env(),
                   size_cap=_size_cap(os.environ.get("KOVA_IMAGE_SIZE_CAP") or str(DEFAULT_SIZE_CAP)),
                   max_imports=max(1, int(os.environ.get("KOVA_MAX_CONCURRENT_IMPORTS", "4"))),
                   resize_confirm_window=float(os.environ.get("KOVA_RESIZE_CONFIRM_WINDOW", "0")))


def _size_cap(text: str) -> int:
    try:
        return parse_size(text)
    except ValueError:
        raise RuntimeError(f"KOVA_IMAGE_SIZE_CAP={text!r} is not a size: bytes, or a quantity such as 100Gi") from None


@dataclass
class ImportState:
    progress: ImportProgress = field(default_factory=ImportProgress)
    error: str | None = None  # the last passing failure, while it retries


@dataclass
class Runtime:
    settings: Settings
    kube: Kube
    store: ObjectStore
    imports: dict[str, ImportState] = field(default_factory=dict)
    default_groups: set[str] = field(default_factory=set)  # namespaces whose default SecurityGroup is made
    import_slots: asyncio.Semaphore = field(init=False)
    writes: Writes = field(init=False)
    _events: set[asyncio.Task[None]] = field(default_factory=set)
    _locks: defaultdict[tuple[str, ...], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def __post_init__(self) -> None:
        # Each import holds up to ~3 parts of memory and two hashing threads: bound them per replica.
        self.import_slots = asyncio.Semaphore(self.settings.max_imports)
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
