"""The golden-image cache, as pure rules: each active Image is imported once per StorageClass into a DataVolume
Kova owns in its own namespace (an *entry*), exposed as a CDI DataSource of the same name; root disks are
clones of it (CDI picks CSI clone, snapshot or host-assisted copy). Nova keeps an image cache per host and
Cinder an image-volume cache for the same reason: the hundredth boot should not read the store again.

What is decided here: the entry's name (deterministic, so concurrent first boots make one entry and the
API server's AlreadyExists settles a race), the objects, the state an Instance reads from an entry, and which
entries go (least recently used, bounded by count and bytes, never one with a clone in flight or used within
the minimum age; an entry whose Image is gone goes first)."""

from __future__ import annotations

import datetime as dt
import enum
import hashlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from kova.api.models import GROUP_IMAGE
from kova.api.quantity import GiB, gib_ceil
from kova.api.resources import MANAGED_BY

IMAGE_UID_LABEL = f"{GROUP_IMAGE}/image-uid"  # an entry's Image, to find its entries when it goes
ENTRY_LABEL = f"{GROUP_IMAGE}/cache-entry"  # on a root disk cloned from an entry: which one (a clone in flight)
IMAGE_ANNOTATION = f"{GROUP_IMAGE}/image"  # namespace/name of the entry's Image, for people reading it
CLASS_ANNOTATION = f"{GROUP_IMAGE}/storage-class"
BYTES_ANNOTATION = f"{GROUP_IMAGE}/bytes"  # what the entry holds (its claim's request): the watch keeps no spec
LAST_USED_ANNOTATION = f"{GROUP_IMAGE}/last-used"
# CDI binds the claim of an entry at once: on a WaitForFirstConsumer class no pod would ever consume it.
IMMEDIATE_BIND = "cdi.kubevirt.io/storage.bind.immediate.requested"
RESTARTS_GIVE_UP = 3  # as for a root disk (kova.compute.lifecycle.IMPORT_RESTARTS_FAULT)
CDI_API = "cdi.kubevirt.io/v1beta1"


@dataclass(frozen=True)
class Settings:
    """KOVA_IMAGE_CACHE_*: the namespace of the entries ("" turns the cache off), its bounds, and the
    StorageClasses whose root disks are imported directly (storage that clones badly)."""

    namespace: str = "kova-image-cache"
    max_entries: int = 50
    max_bytes: int = 500 * GiB
    min_age: dt.timedelta = dt.timedelta(hours=24)  # Nova's remove_unused_original_minimum_age_seconds
    direct_classes: frozenset[str] = frozenset()

    def serves(self, storage_class: str | None) -> bool:
        """Whether root disks of this class are cloned from the cache (no known class: imported directly)."""
        return bool(self.namespace) and storage_class is not None and storage_class not in self.direct_classes


DEFAULT_CLASS = "storageclass.kubernetes.io/is-default-class"


def default_class(classes: Iterable[dict[str, Any]]) -> str | None:
    """The class a claim that names none gets: the one marked default (the newest if several, as the API
    server's DefaultStorageClass admission picks)."""
    marked = [c for c in classes if (c["metadata"].get("annotations") or {}).get(DEFAULT_CLASS) == "true"]
    if not marked:
        return None
    newest = max(marked, key=lambda c: (c["metadata"].get("creationTimestamp") or "", c["metadata"]["name"]))
    return str(newest["metadata"]["name"])


def entry_name(image_uid: str, storage_class: str) -> str:
    """One entry per Image and StorageClass: `img-<image uid>-<8 hex of the class>` (49 characters)."""
    return f"img-{image_uid}-{hashlib.sha256(storage_class.encode()).hexdigest()[:8]}"


def entry_gib(size: int, virtual_size: int) -> int:
    """An entry is as big as the image's disk: every root disk (kova.compute.lifecycle.root_disk_gib) is at
    least that, and CDI refuses a clone into a smaller target."""
    return max(1, gib_ceil(max(size, virtual_size)))


@dataclass(frozen=True)
class Source:
    """The Image an entry holds."""

    uid: str
    namespace: str
    name: str
    sha512: str
    gib: int
    stores: tuple[str, ...] = ()  # where its data is, best first (the link is signed for the first)


def build_entry(src: Source, storage_class: str, namespace: str, url: str, now: dt.datetime) -> list[dict[str, Any]]:
    """The entry's DataVolume (CDI imports the image from a short-lived link and checks its sha512, as for a
    root disk) and its DataSource, which root disks name in `sourceRef`."""
    name = entry_name(src.uid, storage_class)
    metadata = {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, IMAGE_UID_LABEL: src.uid},
                "annotations": {IMAGE_ANNOTATION: f"{src.namespace}/{src.name}", CLASS_ANNOTATION: storage_class,
                                BYTES_ANNOTATION: str(src.gib * GiB), LAST_USED_ANNOTATION: stamp(now),
                                IMMEDIATE_BIND: "true"}}
    volume = {"apiVersion": CDI_API, "kind": "DataVolume", "metadata": metadata,
              "spec": {"source": {"http": {"url": url, "checksum": f"sha512:{src.sha512}"}},
                       "storage": {"storageClassName": storage_class,
                                   "resources": {"requests": {"storage": f"{src.gib}Gi"}}}}}
    return [volume, data_source(namespace, name, src.uid)]


def data_source(namespace: str, name: str, image_uid: str) -> dict[str, Any]:
    """An entry's DataSource: what root disks name (`sourceRef`), and what CDI's clone authorization is about."""
    return {"apiVersion": CDI_API, "kind": "DataSource",
            "metadata": {"name": name, "namespace": namespace, "labels": {**MANAGED_BY, IMAGE_UID_LABEL: image_uid}},
            "spec": {"source": {"pvc": {"namespace": namespace, "name": name}}}}


def stamp(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_stamp(text: str | None) -> dt.datetime | None:
    try:
        return dt.datetime.strptime(text or "", "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=dt.UTC)
    except ValueError:
        return None


class State(enum.Enum):
    missing = "missing"  # to be made
    filling = "filling"  # CDI imports it: root disks wait
    ready = "ready"  # root disks clone it
    broken = "broken"  # CDI cannot import it (a checksum that does not match, or retried in vain): not used


@dataclass(frozen=True)
class Seen:
    state: State
    progress: str = ""
    why: str = ""


def seen(dv: dict[str, Any] | None) -> Seen:
    """What an Instance reads from an entry's DataVolume. A broken entry is not waited for: the root disk is
    imported directly, as without the cache, and shows its own error if there is one."""
    if dv is None or dv["metadata"].get("deletionTimestamp"):
        return Seen(State.missing)
    status = dv.get("status") or {}
    phase = status.get("phase") or ""
    if phase == "Succeeded":
        return Seen(State.ready)
    if phase == "Failed" or int(status.get("restartCount") or 0) >= RESTARTS_GIVE_UP:
        running: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Running"), {})
        return Seen(State.broken, why=running.get("message") or phase or "the import keeps failing")
    return Seen(State.filling, progress=status.get("progress") or "")


@dataclass(frozen=True)
class Entry:
    """An entry as the eviction reads it."""

    name: str
    image_uid: str
    bytes: int
    last_used: dt.datetime
    ready: bool
    clones: int  # root disks cloned from it that CDI has not finished


def entries(volumes: Iterable[dict[str, Any]], namespace: str, disks: Iterable[dict[str, Any]]) -> list[Entry]:
    """The entries among the DataVolumes Kova manages, each with its clones in flight (root disks that name it
    and have not Succeeded)."""
    clones: dict[str, int] = {}
    for dv in disks:
        used = (dv["metadata"].get("labels") or {}).get(ENTRY_LABEL)
        if used and (dv.get("status") or {}).get("phase") != "Succeeded":
            clones[used] = clones.get(used, 0) + 1
    out = []
    for dv, uid, notes in _entries(volumes, namespace):
        md = dv["metadata"]
        last = parse_stamp(notes.get(LAST_USED_ANNOTATION)) or parse_stamp(md.get("creationTimestamp")) or \
            dt.datetime.min.replace(tzinfo=dt.UTC)
        out.append(Entry(md["name"], uid, int(notes.get(BYTES_ANNOTATION) or 0), last,
                         (dv.get("status") or {}).get("phase") == "Succeeded", clones.get(md["name"], 0)))
    return out


def _entries(volumes: Iterable[dict[str, Any]], namespace: str) -> Iterator[tuple[dict[str, Any], str, dict[str, str]]]:
    """The entries (not being deleted) among DataVolumes: each with its Image's uid and its annotations."""
    for dv in volumes:
        md = dv["metadata"]
        uid = (md.get("labels") or {}).get(IMAGE_UID_LABEL)
        if md.get("namespace") == namespace and uid and not md.get("deletionTimestamp"):
            yield dv, uid, md.get("annotations") or {}


def evictions(found: list[Entry], images: set[str], s: Settings, now: dt.datetime) -> list[str]:
    """Which entries to delete: those whose Image is gone, then the least recently used while there are more
    than `max_entries` or more than `max_bytes`. Never one a clone reads, one still filling (an Instance
    waits for it) or one used within `min_age`: the cache may then stay over its bounds for a while."""
    gone = [e for e in found if e.image_uid not in images and not e.clones]
    kept = sorted((e for e in found if e not in gone), key=lambda e: (e.last_used, e.name))
    count, size = len(kept), sum(e.bytes for e in kept)
    out = [e.name for e in gone]
    for e in kept:
        if count <= s.max_entries and size <= s.max_bytes:
            break
        if e.clones or not e.ready or now - e.last_used < s.min_age:
            continue
        out.append(e.name)
        count, size = count - 1, size - e.bytes
    return out


def listing(volumes: Iterable[dict[str, Any]], namespace: str) -> dict[str, list[dict[str, Any]]]:
    """Image uid → its entries as `Image.status.cache` lists them, by StorageClass."""
    out: dict[str, list[dict[str, Any]]] = {}
    for dv, uid, notes in _entries(volumes, namespace):
        item = {"storageClass": notes.get(CLASS_ANNOTATION, ""), "entry": dv["metadata"]["name"],
                "state": seen(dv).state.value}
        if notes.get(LAST_USED_ANNOTATION):
            item["lastUsed"] = notes[LAST_USED_ANNOTATION]
        out.setdefault(uid, []).append(item)
    return {uid: sorted(items, key=lambda i: i["storageClass"]) for uid, items in out.items()}
