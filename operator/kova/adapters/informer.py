"""Watch-fed caches of Kubernetes objects (client-go's informer pattern): reconciles read these, not the
API server.

Each kind is listed once, in pages, then watched from the list's resourceVersion with bookmarks; a watch
that expired (410) is followed by a new list, whose differences reach the listeners as events. Kopf's own
indexes were used before, but Kopf makes every handler wait until every object listed at start-up has been
indexed, and that barrier costs a wake-up of every waiting worker per listed object: at 5,000 Instances
(~20k objects) no handler ran within 9 minutes. Here one flag per kind says that its first list is in.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Hashable, Iterator
from typing import Any

import aiohttp
from kubernetes.aio.client.exceptions import ApiException

from kova.adapters.kube import Kube
from kova.api.resources import Resource

log = logging.getLogger("kova.adapters.informer")

Body = dict[str, Any]
Listener = Callable[[Body | None, Body | None], None]  # (old, new): added, changed or deleted

PAGE = 500
WATCH_SECONDS = 300  # the server ends each watch after this long (randomised, as client-go does)
BACKOFF = (0.5, 1, 2, 5, 10, 30)
TOMBSTONES = 10_000

# Metadata that reconciles never read and that is large: the server's field-ownership records, and
# kubectl's copy of the last applied manifest (they made up most of ~120 KiB per Instance at 5,000).
_HEAVY_ANNOTATIONS = ("kubectl.kubernetes.io/last-applied-configuration",)


def trimmed(obj: Body, fields: tuple[str, ...]) -> Body:
    """The parts of an object reconciles use: its metadata and `fields`, each a top-level field ("spec") or a
    dotted path into one ("status.conditions": that, and nothing else of the status; left out when the object
    has none). Not deep-copied: each event is freshly parsed JSON."""
    out = {f: obj.get(f) or {} for f in ("apiVersion", "kind", "metadata")}
    for path in fields:
        *parents, leaf = path.split(".")
        src, dst = obj, out
        for part in parents:
            src, dst = src.get(part) or {}, dst.setdefault(part, {})
        if parents and leaf in src:
            dst[leaf] = src[leaf]
        elif not parents:
            dst[leaf] = src.get(leaf) or {}
    metadata = {k: v for k, v in out["metadata"].items() if k != "managedFields"}
    annotations = metadata.get("annotations") or {}
    if any(a in annotations for a in _HEAVY_ANNOTATIONS):
        metadata["annotations"] = {k: v for k, v in annotations.items() if k not in _HEAVY_ANNOTATIONS}
    out["metadata"] = metadata
    return out


def object_key(obj: Body) -> tuple[str, ...]:
    md = obj["metadata"]
    return (md["namespace"], md["name"]) if md.get("namespace") else (md["name"],)


def _rv(obj: Body | None) -> int:
    """resourceVersions are opaque, but etcd's are integers; used only to refuse an older copy."""
    try:
        return int((obj or {}).get("metadata", {}).get("resourceVersion", ""))
    except ValueError:
        return 0


class Gone(Exception):
    """The watch's resourceVersion is too old (410): list again."""


class Informer:
    def __init__(self, kube: Kube, res: Resource, *, fields: tuple[str, ...], namespace: str | None = None,
                 label_selector: str | None = None) -> None:
        self.kube, self.res, self.fields = kube, res, fields
        self.namespace, self.label_selector = namespace, label_selector
        self.cache: dict[tuple[str, ...], Body] = {}
        self.synced = asyncio.Event()
        self.listeners: list[Listener] = []
        self._rv: str | None = None
        # Deleted keys with their last resourceVersion, so that a late copy handed over by Kopf does not bring
        # a deleted object back (`offer`).
        self._tombstones: OrderedDict[tuple[str, ...], int] = OrderedDict()

    def __repr__(self) -> str:
        return f"Informer({self.res.plural}, namespace={self.namespace})"

    def get(self, key: tuple[str, ...]) -> Body | None:
        return self.cache.get(key)

    def __iter__(self) -> Iterator[Body]:
        return iter(list(self.cache.values()))

    def offer(self, obj: Body) -> None:
        """A copy of an object seen elsewhere (Kopf hands its handlers one): kept if it is newer, so a
        reconcile never reads an older Instance than the one its handler was called for."""
        key, rv = object_key(obj), _rv(obj)
        if rv <= self._tombstones.get(key, 0) or rv <= _rv(self.cache.get(key)):
            return
        self._store(key, trimmed(obj, self.fields))

    def forget(self, obj: Body) -> None:
        """An object this process just deleted: gone from the cache now (read-your-writes), and kept out
        until the watch's own DELETED event, even if an older copy is offered meanwhile."""
        key = object_key(obj)
        before = self.cache.pop(key, None)
        self._tombstones[key] = max(_rv(obj), self._tombstones.get(key, 0))
        if before is not None:
            self._emit(before, None)

    async def run(self) -> None:
        failures = 0
        while True:
            try:
                if self._rv is None:
                    await self._list()
                await self._watch()
                failures = 0
            except Gone:
                self._rv = None
            except ApiException as e:
                if e.status == 404 and not self.synced.is_set():
                    # The kind is not installed (e.g. no KubeVirt yet): nothing of it to cache; look again.
                    log.warning("%s: the API server does not serve %s; looking again in 30 s", self, self.res.plural)
                    self.synced.set()
                    await asyncio.sleep(30)
                    continue
                failures += 1
                log.warning("%s: %s; retrying", self, e.reason or e)
                await asyncio.sleep(BACKOFF[min(failures, len(BACKOFF)) - 1])
            except (TimeoutError, aiohttp.ClientError, OSError, ValueError) as e:
                failures += 1
                log.warning("%s: %r; retrying", self, e)
                await asyncio.sleep(BACKOFF[min(failures, len(BACKOFF)) - 1])

    def _call(self, **kw: Any) -> Awaitable[Any]:
        custom, res = self.kube.custom, self.res
        if self.label_selector:
            kw["label_selector"] = self.label_selector
        if not res.group:  # the core group (PersistentVolumeClaims) has no custom-object calls
            return self.kube.list_core(res, self.namespace, **kw)
        if self.namespace:
            return custom.list_namespaced_custom_object_without_preload_content(
                res.group, res.version, self.namespace, res.plural, **kw) if kw.get("watch") else \
                custom.list_namespaced_custom_object(res.group, res.version, self.namespace, res.plural, **kw)
        return custom.list_cluster_custom_object_without_preload_content(
            res.group, res.version, res.plural, **kw) if kw.get("watch") else \
            custom.list_cluster_custom_object(res.group, res.version, res.plural, **kw)

    async def _list(self) -> None:
        fresh: dict[tuple[str, ...], Body] = {}
        token: str | None = None
        while True:
            try:
                page: Body = await self._call(limit=PAGE, _continue=token)
            except ApiException as e:
                if e.status == 410 and token:  # the snapshot expired mid-way: start over
                    fresh, token = {}, None
                    continue
                raise
            for obj in page.get("items") or ():
                obj.setdefault("apiVersion", page.get("apiVersion"))
                obj.setdefault("kind", (page.get("kind") or "").removesuffix("List"))
                fresh[object_key(obj)] = trimmed(obj, self.fields)
            token = (page.get("metadata") or {}).get("continue")
            if not token:
                break
        old, self.cache = self.cache, {}
        announce = self.synced.is_set()  # the first list only fills the cache (Kopf's resume covers it)
        for key, obj in fresh.items():
            before = old.pop(key, None)
            self.cache[key] = obj
            if announce and _rv(before) != _rv(obj):
                self._emit(before, obj)
        for key, gone in old.items():
            self._tombstones[key] = _rv(gone)
            if announce:
                self._emit(gone, None)
        self._rv = (page.get("metadata") or {}).get("resourceVersion")
        self.synced.set()

    async def _watch(self) -> None:
        seconds = random.randint(WATCH_SECONDS, 2 * WATCH_SECONDS)
        resp: aiohttp.ClientResponse = await self._call(
            watch=True, resource_version=self._rv, allow_watch_bookmarks=True, timeout_seconds=seconds,
            _request_timeout=float(seconds + 30))
        try:
            if resp.status == 410:
                raise Gone()
            if resp.status >= 400:
                raise ApiException(status=resp.status, reason=resp.reason)
            buffer = b""
            async for chunk in resp.content.iter_any():
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                for line in lines:
                    if line.strip():
                        self._event(json.loads(line))
        finally:
            resp.release()

    def _event(self, event: Body) -> None:
        kind, obj = event.get("type"), event.get("object") or {}
        if kind == "ERROR":
            if obj.get("code") == 410:
                raise Gone()
            raise ApiException(status=obj.get("code") or 500, reason=obj.get("message"))
        self._rv = obj["metadata"]["resourceVersion"]
        if kind == "BOOKMARK":
            return
        key = object_key(obj)
        before = self.cache.get(key)
        if kind == "DELETED":
            self.cache.pop(key, None)
            self._tombstones[key] = _rv(obj)
            while len(self._tombstones) > TOMBSTONES:
                self._tombstones.popitem(last=False)
            self._emit(before, None)
        else:
            self._store(key, trimmed(obj, self.fields))
            self._emit(before, self.cache[key])

    def _store(self, key: tuple[str, ...], obj: Body) -> None:
        self.cache[key] = obj
        self._tombstones.pop(key, None)

    def _emit(self, old: Body | None, new: Body | None) -> None:
        for listener in self.listeners:
            try:
                listener(old, new)
            except Exception:  # one listener's bug must not stop the cache
                log.exception("%s: a listener failed", self)


class View:
    """One kind's cache over the informers of the namespaces the operator serves (or of the whole cluster)."""

    def __init__(self, informers: list[Informer]) -> None:
        self.informers = {i.namespace: i for i in informers}

    def _for(self, namespace: str | None) -> Informer | None:
        return self.informers.get(namespace) or self.informers.get(None)

    def get(self, key: tuple[str, ...]) -> Body | None:
        informer = self._for(key[0] if len(key) > 1 else None)
        return informer.get(key) if informer else None

    def offer(self, obj: Body) -> None:
        informer = self._for(obj["metadata"].get("namespace"))
        if informer:
            informer.offer(obj)

    def listen(self, listener: Listener) -> None:
        for informer in self.informers.values():
            informer.listeners.append(listener)

    def __iter__(self) -> Iterator[Informer]:
        return iter(self.informers.values())

    def objects(self) -> Iterator[Body]:
        """Every cached object, of every namespace."""
        for informer in self.informers.values():
            yield from informer


def backoff(n: int, base: float, cap: float) -> float:
    """Seconds of a key's n-th wait to retry in a row: doubling from `base` up to `cap`, less up to a tenth at
    random, so that keys that failed together (an API server outage) do not all come back in the same instant."""
    # The exponent is bounded: 2.0 ** 1024 overflows, and a key may fail once a minute for days.
    return min(cap, base * 2.0 ** min(n - 1, 32)) * (1 - random.random() / 10)


def worth_retrying(error: Exception) -> bool:
    """Whether a failed run should be tried again. Not when the namespace is being deleted: the API server
    refuses every new object there, and the object itself is on its way out (Kubernetes' own controllers
    drop such errors too, by their NamespaceTerminating cause)."""
    if isinstance(error, ApiException) and error.status == 403 and error.body:
        try:
            causes = (json.loads(error.body).get("details") or {}).get("causes") or []
        except (ValueError, AttributeError):
            return True
        # A StatusCause's type is `reason` on the wire.
        return not any("NamespaceTerminating" in (c.get("reason"), c.get("type")) for c in causes)
    return True


class Coalescer:
    """Runs `fn(key)` for each kicked key, one run per key at a time; kicks that arrive during a run make
    exactly one more run (a burst of child events costs one or two reconciles, not one each).

    A run that raises is run again by itself, as client-go's workqueue retries a failed key: the write it
    could not make (an API server 5xx, a 409, a refusal by an admission policy) is often the very change that
    no further event would come to ask for again. Each key has its own back-off (`backoff`), reset by a
    success; a kick during the wait runs the key at once; close() ends the waits."""

    def __init__(self, fn: Callable[[Hashable], Awaitable[None]], what: str, *, base: float = 0.5,
                 cap: float = 60.0, sleep: Callable[[float], Awaitable[None]] = asyncio.sleep) -> None:
        self.fn, self.what = fn, what
        self.base, self.cap, self.sleep = base, cap, sleep  # sleep: tests pass a fake clock
        self._running: dict[Hashable, asyncio.Task[None]] = {}
        self._again: set[Hashable] = set()
        self._kicked: dict[Hashable, asyncio.Event] = {}  # keys waiting to retry: a kick ends the wait
        self._closed = False

    def kick(self, key: Hashable) -> None:
        if self._closed:  # a timer (`wake`) may still fire during shutdown: nothing runs after close()
            return
        if key in self._running:
            self._again.add(key)
            if key in self._kicked:
                self._kicked[key].set()
        else:
            self._running[key] = asyncio.get_running_loop().create_task(self._run(key))

    async def _run(self, key: Hashable) -> None:
        # The task lives until the key succeeds, so it can count: failures in a row (for the log), and retries,
        # the runs the back-off's timer started. Only these lengthen the back-off: runs that kicks start come
        # as fast as events do, back-off or not, and a boot's burst of child events (a dozen in a second) would
        # otherwise push the next retry to the cap at once.
        failures = retries = 0
        try:
            while True:
                self._again.discard(key)
                try:
                    await self.fn(key)
                    failures = retries = 0
                except Exception as e:
                    if not worth_retrying(e):
                        log.info("%s %s: not retried (%s)", self.what, key, e)
                        if key not in self._again:
                            return
                        continue
                    failures += 1
                    # Kicked during the run: it runs again now, with the news (as without a failure).
                    delay = 0.0 if key in self._again else backoff(retries + 1, self.base, self.cap)
                    log.exception("%s %s failed (%d in a row); retrying in %.1f s", self.what, key, failures, delay)
                    if delay and await self._wait(key, delay):
                        retries += 1
                    continue
                if key not in self._again:
                    return
        finally:
            del self._running[key]

    async def _wait(self, key: Hashable, seconds: float) -> bool:
        """`seconds`, or less if the key is kicked meanwhile; whether they all went by."""
        kicked = self._kicked[key] = asyncio.Event()
        waits = [asyncio.ensure_future(self.sleep(seconds)), asyncio.ensure_future(kicked.wait())]
        try:
            done, _ = await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
            return waits[0] in done
        finally:
            for w in waits:
                w.cancel()
            del self._kicked[key]

    async def close(self) -> None:
        self._closed = True
        tasks = list(self._running.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
