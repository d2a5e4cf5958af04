"""A Cinder volume as a pure decision: from the Volume, its DataVolume and claim, and what its source names, to
the DataVolume to make, the claim's growth and Cinder's status word. The controller (kova.controllers.volume)
gathers and carries out; nothing here talks to a server.

A volume is a PersistentVolumeClaim filled by a CDI DataVolume `volume-<name>`: blank, cloned from the image
cache's entry of an image (imported directly on a class the cache does not serve), cloned from another
Volume of the namespace, or restored from a VolumeSnapshot. It grows (extend) through its claim and never
shrinks (the CRD refuses it)."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from kova.api.conditions import Progress
from kova.api.errors import one_line
from kova.api.models import GROUP_COMPUTE, VolumeSpec, VolumeWord
from kova.api.quantity import GiB, parse_size
from kova.api.resources import MANAGED_BY, owner_reference
from kova.compute import attachments, lifecycle, server
from kova.compute.attachments import claim_name as claim_name
from kova.compute.children import image_link_expired
from kova.image import cache

VOLUME_LABEL = f"{GROUP_COMPUTE}/volume"
CDI_API = "cdi.kubevirt.io/v1beta1"


@dataclass
class World:
    volume: dict[str, Any]
    datavolumes: server.Lookup
    pvcs: server.Lookup
    images: server.Lookup
    volumes: server.Lookup
    storage_class: str | None  # the cluster's default class
    instances: list[dict[str, Any]] = field(default_factory=list)  # the namespace's Instances: who attaches it
    quota: Refusal | None = None  # over the namespace's gigabytes, to be made or to grow (`gigabytes`)
    cache: cache.Settings = field(default_factory=lambda: cache.Settings(namespace=""))
    presign_ttl: dt.timedelta = dt.timedelta(hours=1)
    now: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))


@dataclass
class Plan:
    word: VolumeWord
    progress: Progress
    reason: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)
    create: dict[str, Any] | None = None  # the DataVolume, if missing
    url_for: lifecycle.ImageInfo | None = None  # sign a link to this image's data into `create` (direct import)
    entry: server.Entry | None = None  # the image cache's entry it clones, made first if missing
    grow: int | None = None  # GiB the claim must grow to
    wait_on: tuple[str, ...] | None = None
    owners: list[dict[str, Any]] | None = None  # its ownerReferences, when deleteOnTermination changes them


def plan(w: World) -> Plan:
    vol = w.volume
    md = vol["metadata"]
    namespace, name = md["namespace"], md["name"]
    try:
        spec = VolumeSpec.model_validate(vol.get("spec") or {})
    except ValidationError as e:
        return Plan(VolumeWord.error, Progress.STALLED, "InvalidSpec", one_line(e, "spec"))
    sc = spec.volume_type or w.storage_class
    claim = claim_name(name)
    dv, pvc = w.datavolumes.get((namespace, claim)), w.pvcs.get((namespace, claim))
    fields: dict[str, Any] = {"claim": claim, "storageClass": sc, "size": _capacity(pvc)}
    allocated = (vol.get("status") or {}).get("allocated")
    if dv is None and pvc is None:
        if w.quota is not None and w.quota.new:
            return Plan(VolumeWord.error, Progress.STALLED, QUOTA_REASON, w.quota.message, fields)
        made = _make(w, spec, sc, fields)
        if made.create is not None:
            made.fields["allocated"] = spec.size
        return made
    fields["allocated"] = allocated if allocated is not None else spec.size  # made before it was counted
    if spec.source is not None and spec.source.snapshot:
        # CDI restores at the snapshot's size, which may be more than the size asked: what the volume holds
        # counts, or a small volume from a big snapshot would escape `gigabytes`. (Its capacity counts CDI's file
        # system overhead: a restore may be counted a GiB over, never under.)
        fields["allocated"] = max(fields["allocated"], fields["size"] or 0)
    out = _observe(spec, dv, pvc, fields)
    if out.grow is not None and w.quota is not None:  # an extend over quota: Cinder answers 413, nothing grows
        out = Plan(VolumeWord.available, Progress.STALLED, QUOTA_REASON, w.quota.message, fields)
    elif out.grow is not None:
        out.fields["allocated"] = max(spec.size, fields["allocated"])
    if out.word in (VolumeWord.available, VolumeWord.extending):
        held = attachments.holders(vol, w.instances, w.now.strftime("%Y-%m-%dT%H:%M:%SZ"))
        out.fields["attachments"] = [h.model_dump(by_alias=True, mode="json", exclude_none=True) for h in held]
        said = attachments.word(held)
        if said is not None and out.word is VolumeWord.available:
            servers = ", ".join(h.server for h in held)
            out.word, out.reason, out.message = said, said.value.title().replace("-", ""), {
                VolumeWord.in_use: f"attached to {servers}", VolumeWord.attaching: f"attaching to {servers}",
                VolumeWord.detaching: f"detaching from {servers}"}[said]
            out.progress = Progress.READY if said is VolumeWord.in_use else Progress.RECONCILING
        owners = attachments.owners(vol, held, w.instances)
        if owners != (md.get("ownerReferences") or []):
            out.owners = owners
    return out


QUOTA_REASON = "QuotaExceeded"


@dataclass(frozen=True)
class Refusal:
    """Cinder's VolumeSizeExceedsAvailableQuota (413): for a new volume (final, as Cinder's answer is) or an
    extend (the volume stays as it is until its size or the quota changes)."""

    message: str
    new: bool


def gigabytes(volumes: list[dict[str, Any]], made: set[str], limit: int) -> dict[str, Refusal]:
    """Cinder's `gigabytes` quota for a namespace's Volumes, decided for all at once in a fixed order, so that
    two volumes created together never both fit where one does: each made volume holds what was allocated to
    it (`status.allocated`; its size if it was made before that was counted); then, oldest first (then by
    name), a volume not made yet is admitted while its size fits and refused for good when it does not, and an
    extend is admitted while its growth fits."""
    live = sorted((v for v in volumes if not v["metadata"].get("deletionTimestamp")),
                  key=lambda v: (v["metadata"].get("creationTimestamp") or "", v["metadata"]["name"]))

    def held(v: dict[str, Any]) -> int | None:
        allocated = (v.get("status") or {}).get("allocated")
        if allocated is not None:
            return int(allocated)
        return int((v.get("spec") or {}).get("size") or 0) if v["metadata"]["name"] in made else None
    used = sum(h for v in live if (h := held(v)) is not None)
    refused: dict[str, Refusal] = {}
    for v in live:
        name, size, have = v["metadata"]["name"], int((v.get("spec") or {}).get("size") or 0), held(v)
        st = v.get("status") or {}
        ready: dict[str, Any] = next((c for c in st.get("conditions") or [] if c.get("type") == "Ready"), {})
        if have is None and ready.get("reason") == QUOTA_REASON:  # refused before: for good, as Cinder's 413
            refused[name] = Refusal(str(ready.get("message") or "quota exceeded"), True)
            continue
        need = size - (have or 0)
        if need <= 0:
            continue
        if limit != -1 and used + need > limit:
            refused[name] = Refusal(
                "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. "
                f"Requested {need}G, quota is {limit}G and {used}G has been consumed.", have is None)
            continue
        used += need
    return refused


def gigabytes_used(volumes: list[dict[str, Any]]) -> int:
    """What a namespace's Volumes hold of `gigabytes`, as its Quota shows it."""
    return sum(int((v.get("status") or {}).get("allocated") or 0) for v in volumes
               if not v["metadata"].get("deletionTimestamp"))


def _capacity(pvc: dict[str, Any] | None) -> int | None:
    cap = ((pvc or {}).get("status") or {}).get("capacity", {}).get("storage")
    # Whole GiB rounded down: CDI asks a few percent more than the volume for its filesystem overhead.
    return parse_size(cap) // GiB if cap else None


def _make(w: World, spec: VolumeSpec, sc: str | None, fields: dict[str, Any]) -> Plan:
    """What the new DataVolume reads, or why it cannot be made yet (a source that is not ready) or at all."""
    vol = w.volume
    namespace = vol["metadata"]["namespace"]
    source: dict[str, Any] = {"blank": {}}
    creating = Plan(VolumeWord.creating, Progress.RECONCILING, "Creating", f"creating a {spec.size} GiB volume",
                    fields)
    src = spec.source
    if src is not None and src.image:
        image = server.image_info(w.images, src.image, namespace)
        if isinstance(image, lifecycle.Blocked):
            return _blocked(image, fields)
        need = cache.entry_gib(image.size, image.virtual_size)
        if spec.size < need:
            return Plan(VolumeWord.error, Progress.STALLED, "VolumeTooSmall",
                        f"Image {src.image} needs {need} GiB: it does not fit in a volume of {spec.size} GiB "
                        "(Cinder answers 400)", fields)
        if w.cache.serves(sc):
            assert sc is not None
            entry_name = cache.entry_name(image.uid, sc)
            entry_dv = w.datavolumes.get((w.cache.namespace, entry_name))
            expired = entry_dv["metadata"]["uid"] if entry_dv is not None and image_link_expired(
                entry_dv, w.presign_ttl, w.now) else None
            seen = cache.seen(None if expired else entry_dv)
            image_ns, image_name = src.image.split("/", 1) if "/" in src.image else (namespace, src.image)
            entry = server.Entry(cache.Source(image.uid, image_ns, image_name, image.sha512, need, image.stores), sc,
                                 entry_name, w.cache.namespace, seen, expired)
            if seen.state is cache.State.ready:
                creating.entry = entry
                creating.create = data_volume(vol, spec, sc, {"sourceRef": {
                    "kind": "DataSource", "namespace": w.cache.namespace, "name": entry_name}})
                return creating
            if seen.state is not cache.State.broken:
                creating.entry, creating.reason = entry, "CachingImage"
                creating.message = f"caching image {src.image} for storage class {sc}, then cloning it"
                creating.wait_on = ("DataVolume", w.cache.namespace, entry_name)
                return creating
        creating.url_for = image
        source = {"http": {"url": "", "checksum": f"sha512:{image.sha512}"}}
    elif src is not None and src.volume:
        other = w.volumes.get((namespace, src.volume))
        word = ((other or {}).get("status") or {}).get("status")
        if other is None or word not in (VolumeWord.available, VolumeWord.in_use):
            return Plan(VolumeWord.creating, Progress.RECONCILING, "WaitingForVolume",
                        f"Volume {src.volume} is {word or 'missing'}, not available yet", fields,
                        wait_on=("Volume", namespace, src.volume))
        if spec.size < int((other.get("spec") or {}).get("size") or 0):
            return Plan(VolumeWord.error, Progress.STALLED, "VolumeTooSmall",
                        f"a volume cloned from {src.volume} must be at least its size "
                        f"({other['spec']['size']} GiB; Cinder answers 400)", fields)
        source = {"pvc": {"namespace": namespace, "name": claim_name(src.volume)}}
    elif src is not None and src.snapshot:
        # Restored at the snapshot's own size: CDI refuses a request below its restoreSize, which counts the file
        # system overhead CDI added to the source's claim, so the same nominal size fails. Grown after to the
        # size asked, as any extend.
        creating.create = data_volume(vol, spec, sc, {"source": {
            "snapshot": {"namespace": namespace, "name": src.snapshot}}}, sized=False)
        return creating
    creating.create = data_volume(vol, spec, sc, {"source": source})
    return creating


def _blocked(b: lifecycle.Blocked, fields: dict[str, Any]) -> Plan:
    if b.refused:
        return Plan(VolumeWord.error, Progress.STALLED, b.reason, b.message, fields)
    return Plan(VolumeWord.creating, Progress.RECONCILING, b.reason, b.message, fields, wait_on=b.on)


def data_volume(vol: dict[str, Any], spec: VolumeSpec, sc: str | None, source: dict[str, Any],
                sized: bool = True) -> dict[str, Any]:
    md = vol["metadata"]
    storage: dict[str, Any] = {"resources": {"requests": {"storage": f"{spec.size}Gi"}}} if sized else {}
    if sc:
        storage["storageClassName"] = sc
    if spec.multiattach:
        storage["accessModes"] = ["ReadWriteMany"]
    return {"apiVersion": CDI_API, "kind": "DataVolume",
            "metadata": {"name": claim_name(md["name"]), "namespace": md["namespace"],
                         "labels": {**MANAGED_BY, VOLUME_LABEL: md["name"],
                                    **({cache.ENTRY_LABEL: source["sourceRef"]["name"]}
                                       if "sourceRef" in source else {})},
                         "ownerReferences": [owner_reference(vol)]},
            "spec": {**source, "storage": storage}}


def _observe(spec: VolumeSpec, dv: dict[str, Any] | None, pvc: dict[str, Any] | None,
             fields: dict[str, Any]) -> Plan:
    status = (dv or {}).get("status") or {}
    phase = status.get("phase") or ""
    if phase == "Failed" or int(status.get("restartCount") or 0) >= lifecycle.IMPORT_RESTARTS_FAULT:
        running: dict[str, Any] = next(
            (c for c in status.get("conditions") or [] if c.get("type") == "Running"), {})
        return Plan(VolumeWord.error, Progress.STALLED, "FillFailed",
                    f"CDI could not fill the volume: {running.get('message') or phase}", fields)
    if dv is not None and phase != "Succeeded":
        return Plan(VolumeWord.creating, Progress.RECONCILING, "Creating",
                    f"creating a {spec.size} GiB volume", {**fields, "progress": status.get("progress")})
    requested = ((pvc or {}).get("spec") or {}).get("resources", {}).get("requests", {}).get("storage")
    asked = parse_size(requested) // GiB if requested else 0
    size = fields.get("size") or 0
    if pvc is not None and asked < spec.size:
        return Plan(VolumeWord.extending, Progress.RECONCILING, "Extending",
                    f"extending the volume from {size} to {spec.size} GiB", fields, grow=spec.size)
    if pvc is not None and size < spec.size:
        return Plan(VolumeWord.extending, Progress.RECONCILING, "Extending",
                    f"extending the volume from {size} to {spec.size} GiB", fields)
    if pvc is None:
        return Plan(VolumeWord.creating, Progress.RECONCILING, "Creating", f"creating a {spec.size} GiB volume",
                    fields)
    return Plan(VolumeWord.available, Progress.READY, "Available",
                f"the {max(fields['allocated'] or 0, spec.size)} GiB volume is available", {**fields, "progress": None})
