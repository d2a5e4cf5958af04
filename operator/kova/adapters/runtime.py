"""What the handlers share while the operator runs: clients, settings, per-object locks, import progress."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import os
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from kova.adapters import env
from kova.adapters.kube import Kube
from kova.adapters.store import ObjectStore, StoreConfig
from kova.adapters.writes import Writes
from kova.api.models import QUOTA_DEFAULTS
from kova.image.filter import ImportFilter
from kova.image.importer import DEFAULT_SIZE_CAP, ImportProgress
from kova.image.quota import Gate

log = logging.getLogger("kova")


@dataclass(frozen=True)
class Settings:
    store: StoreConfig
    presign_ttl: dt.timedelta = dt.timedelta(hours=1)
    import_retry_delay: float = 30.0  # seconds before an import that met a passing failure is tried again
    import_filter: ImportFilter = field(default_factory=ImportFilter)  # what web-download may reach (SSRF)
    size_cap: int = DEFAULT_SIZE_CAP  # bytes; a larger image is killed (Glance's image_size_cap)
    max_imports: int = 4  # imports running at once in this replica; the others wait in `queued`
    resize_confirm_window: float = 0.0  # seconds before VERIFY_RESIZE confirms itself; 0: never (Nova's)
    shared_networks: frozenset[str] = frozenset()  # namespaces whose NetworkAttachmentDefinitions all may use
    # Per-namespace limits where a namespace's Quota says nothing (OpenStack's names; -1: unlimited).
    quota_defaults: dict[str, int] = field(default_factory=lambda: dict(QUOTA_DEFAULTS))

    @classmethod
    def from_env(cls) -> Settings:
        try:
            import_filter = ImportFilter.from_env(os.environ)
        except ValueError as e:
            raise env.BadSetting(f"import filter settings (KOVA_IMPORT_*): {e}") from None
        return cls(store=StoreConfig.from_env(),
                   presign_ttl=dt.timedelta(seconds=env.integer("KOVA_PRESIGN_TTL", 3600, minimum=1)),
                   import_retry_delay=env.number("KOVA_IMPORT_RETRY_DELAY", 30.0),
                   import_filter=import_filter,
                   size_cap=env.size("KOVA_IMAGE_SIZE_CAP", DEFAULT_SIZE_CAP),
                   max_imports=env.integer("KOVA_MAX_CONCURRENT_IMPORTS", 4, minimum=1),
                   resize_confirm_window=env.number("KOVA_RESIZE_CONFIRM_WINDOW", 0.0),
                   shared_networks=env.names("KOVA_SHARED_NETWORK_NAMESPACES"),
                   quota_defaults=quota_defaults())


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
    store: ObjectStore
    imports: dict[str, ImportState] = field(default_factory=dict)
    default_groups: set[str] = field(default_factory=set)  # namespaces whose default SecurityGroup is made
    # (namespace, uid) → what the namespace's quotas say to an import about to start (kova.controllers.quota).
    image_quota: Callable[[str, str], Gate] | None = None
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
