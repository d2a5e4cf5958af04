"""What the handlers share while the operator runs: clients, settings, per-object locks, import progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import os
from collections import defaultdict
from dataclasses import dataclass, field

from kova.image.fetch import ImportFilter
from kova.image.importer import DEFAULT_SIZE_CAP, ImportProgress, parse_size
from kova.kube import Kube, Resource
from kova.models import FLAVOR, IMAGE, INSTANCE, VERSION, KindInfo
from kova.store import ObjectStore, StoreConfig


def resource(info: KindInfo) -> Resource:
    return Resource(info.group, VERSION, info.plural, info.namespaced)


FLAVORS = resource(FLAVOR)
IMAGES = resource(IMAGE)
INSTANCES = resource(INSTANCE)


@dataclass(frozen=True)
class Settings:
    store: StoreConfig
    presign_ttl: dt.timedelta = dt.timedelta(hours=1)
    wait_delay: float = 5.0  # seconds between checks while an Instance waits for its Flavor or Image
    import_retry_delay: float = 30.0  # seconds before an import that met a passing failure is tried again
    import_filter: ImportFilter = field(default_factory=ImportFilter)  # what web-download may reach (SSRF)
    size_cap: int = DEFAULT_SIZE_CAP  # bytes; a larger image is killed (Glance's image_size_cap)

    @classmethod
    def from_env(cls) -> Settings:
        return cls(store=StoreConfig.from_env(),
                   presign_ttl=dt.timedelta(seconds=int(os.environ.get("KOVA_PRESIGN_TTL", "3600"))),
                   wait_delay=float(os.environ.get("KOVA_WAIT_DELAY", "5")),
                   import_retry_delay=float(os.environ.get("KOVA_IMPORT_RETRY_DELAY", "30")),
                   import_filter=ImportFilter.from_env(),
                   size_cap=parse_size(os.environ.get("KOVA_IMAGE_SIZE_CAP") or str(DEFAULT_SIZE_CAP)))


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
    _locks: defaultdict[tuple[str, ...], asyncio.Lock] = field(default_factory=lambda: defaultdict(asyncio.Lock))

    def lock(self, *key: str) -> asyncio.Lock:
        """Status of one object is written by one coroutine at a time (handlers, daemons, child events)."""
        return self._locks[key]
