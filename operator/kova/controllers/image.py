"""Image: import the source into the store once, mirror what the store holds, remove it on delete.

`reconcile` (create/update/resume) only observes and writes status; `run_import` (a Kopf daemon, one per
Image) moves the bytes in a worker thread and stops when the Image is deleted or the operator stops.

Nova's createImage is an Image whose source is an Instance (`run_snapshot`): KubeVirt serves a stopped
VirtualMachine's volumes over HTTPS (VirtualMachineExport). Kova generates the export's token itself and
hands it over in a Secret it creates, so it never needs to read a Secret. The export link is then read
through the same verified import as a web-download (hashes, format inspection, size cap, nothing visible
before it is verified). The Instance is stopped while its disk is exported, as in Nova's cold snapshot
(kova.compute.lifecycle), and started again once the Image has its data. The export and its Secret are
owned by the Image and deleted when the copy is done (kova.compute.snapshot decides what they are).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Iterator
from typing import Any

import kopf

from kova.adapters import metrics
from kova.adapters.http import ExportFetcher, Fetcher
from kova.adapters.runtime import ImportState, Runtime
from kova.adapters.status import publish
from kova.adapters.store import Survey
from kova.adapters.worker import WorkerLost
from kova.api.errors import Refusal
from kova.api.models import GlanceStatus, ImageSpec, SnapshotOrigin
from kova.api.resources import IMAGES, INSTANCES, PODS, SERVICES, VIRTUAL_MACHINE_EXPORTS
from kova.compute import snapshot
from kova.image import importer, pace
from kova.image.blob import Blob
from kova.image.quota import Gate
from kova.image.rules import (
    DONE,
    ImageView,
    copy_plan,
    held_stores,
    killed_view,
    observe_image,
    parse_image_ref,
    protected_refusal,
)

log = logging.getLogger(__name__)

COPY_CHUNK = 1 << 20
PROGRESS_EVERY = 5.0  # seconds between progress checks while importing (a write only on a 10% step)
EXPORT_POLL = 2.0  # seconds between looks at an export that is not ready yet


async def reconcile(rt: Runtime, namespace: str, name: str,
                    queued_message: str | None = None) -> tuple[ImageView, dict[str, Any]] | None:
    """Observe the store and the importer; write the status. Returns what it wrote, and the Image it read."""
    async with rt.lock("image", namespace, name):
        obj = await rt.kube.get(IMAGES, name, namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        uid = obj["metadata"]["uid"]
        spec = obj.get("spec") or {}
        state = rt.imports.get(uid)
        queued_message = queued_message or rt.waiting.get(uid)
        status = obj.get("status") or {}
        # While this process imports, no record can exist yet: no need to ask the store every second.
        survey = Survey([], {}) if state is not None else await asyncio.to_thread(rt.store.survey, uid)
        for sid, why in survey.unread.items():
            log.warning("store %s did not answer for image %s/%s: %s", sid, namespace, name, why)
        blob = survey.records[0][1] if survey.records else None
        found = [sid for sid, _ in survey.records]
        listed = status.get("stores") or []
        held = held_stores(found, survey.unread, listed, rt.store.order)
        view = observe_image(blob, rt.store.location(uid, found or held), status, importing=state is not None,
                             done=state.progress.done if state else 0,
                             total=state.progress.total if state else None,
                             passing_error=state.error if state else None,
                             deactivated=bool(spec.get("deactivated")), queued_message=queued_message,
                             upload_id=uid if "upload" in (spec.get("source") or {}) else None,
                             unanswered=[sid for sid in listed if sid in survey.unread])
        if held:
            view.fields["stores"] = held
        plan = copy_plan(spec.get("stores"), held, status.get("failedImport") or [], rt.store.order)
        if plan is not None:
            view.fields.update({"importingToStores": plan.copy, "failedImport": plan.failed})
            if view.status is GlanceStatus.active and (plan.copy or plan.drop) and uid not in rt.copies:
                task = asyncio.get_running_loop().create_task(copy_stores(rt, namespace, name, uid))
                rt.copies[uid] = task
                task.add_done_callback(lambda _: rt.copies.pop(uid, None))
            if plan.copy and view.status is GlanceStatus.active:
                view.message = f"{view.message}; copying the data to {', '.join(plan.copy)}"
        await _write(rt, obj, view)
        return view, obj


async def copy_stores(rt: Runtime, namespace: str, name: str, uid: str) -> None:
    """Bring an active image's data to the stores its spec.stores names, one at a time in an import slot, each
    copy through the verified pipeline (it must hash as the record says); then empty the stores it should not
    be in. Level-based: started by reconcile whenever the plan has work, so it resumes after a restart."""
    stop = threading.Event()
    slot = False
    tried: set[str] = set()
    try:
        slot = rt.import_slots.take(namespace)
        if not slot:
            await rt.import_slots.wait(namespace)
            slot = True
        while True:
            obj = await rt.kube.get(IMAGES, name, namespace)
            if obj is None or obj["metadata"]["uid"] != uid or obj["metadata"].get("deletionTimestamp"):
                return
            survey = await asyncio.to_thread(rt.store.survey, uid)
            status = obj.get("status") or {}
            held = held_stores([sid for sid, _ in survey.records], survey.unread, status.get("stores") or [],
                               rt.store.order)
            plan = copy_plan((obj.get("spec") or {}).get("stores"), held, status.get("failedImport") or [],
                             rt.store.order)
            if plan is None or not survey.records:
                return
            todo = [sid for sid in plan.copy if sid not in tried]  # a failure is not retried by this task
            if not todo:
                for sid in (s for s in plan.drop if s not in survey.unread):  # a desired store holds it
                    await asyncio.to_thread(rt.store.get(sid).delete_image, uid)
                    log.info("image %s/%s: removed from store %s (not in spec.stores)", namespace, name, sid)
                return
            target, record = todo[0], survey.records[0][1]
            tried.add(target)
            copying = asyncio.ensure_future(asyncio.to_thread(_copy_to, rt, uid, record, target, stop))
            try:
                try:
                    await asyncio.shield(copying)
                except asyncio.CancelledError:  # the thread stops at its next chunk: wait for it, so a deletion
                    stop.set()                   # that cancelled this task finds no copy still being written
                    await asyncio.wait({copying}, timeout=60)
                    raise
                log.info("image %s/%s: copied %d bytes to store %s", namespace, name, record.size, target)
            except importer.Cancelled:
                return
            except Exception as e:  # the store is down, or the copy did not hash right: Glance's failed import
                log.warning("image %s/%s: copy to store %s failed: %r", namespace, name, target, e)
                rt.event(obj, type="Warning", reason="CopyFailed", message=f"copy to store {target} failed: {e}")
                written = await rt.kube.patch_status(IMAGES, name, namespace, {
                    "failedImport": [*(status.get("failedImport") or []), target]})
                rt.writes.wrote_status(obj, written)
            await reconcile(rt, namespace, name)
    except asyncio.CancelledError:
        stop.set()  # the copying thread stops at its next chunk
        raise
    finally:
        if slot:
            rt.import_slots.release(namespace)
        if not stop.is_set():
            await reconcile(rt, namespace, name)  # the last word: stores, what is left, what failed


def _copy_to(rt: Runtime, uid: str, record: Blob, target: str, stop: threading.Event) -> None:
    stream = rt.store.open_blob(uid)  # from the best store that holds it
    try:
        def chunks() -> Iterator[bytes]:
            while data := stream.read(COPY_CHUNK):
                if stop.is_set():
                    raise importer.Cancelled("the operator is stopping")
                yield data
        blob = rt.importer.import_chunks(uid, chunks(), record.disk_format, source=f"copy of image {uid}",
                                         size=record.size, size_cap=max(rt.settings.size_cap, record.size),
                                         store=target)
    finally:
        stream.close()
    if blob.sha512 != record.sha512:
        rt.store.get(target).delete_image(uid)
        raise RuntimeError(f"the copy hashes to {blob.sha512}, not {record.sha512}")


async def _write(rt: Runtime, obj: dict[str, Any], view: ImageView) -> None:
    await publish(rt, IMAGES, obj, word=view.status.value, progress=view.progress, reason=view.reason,
                  message=view.message, fields=view.fields)


Log = logging.Logger | logging.LoggerAdapter[Any]


async def run_import(rt: Runtime, namespace: str, name: str, stopped: kopf.DaemonStopped, logger: Log) -> None:
    """The import daemon: returns once the image is active or killed, or when told to stop."""
    uid = None
    try:
        while not stopped:
            seen = await reconcile(rt, namespace, name)
            source = ((seen[1].get("spec") or {}).get("source") or {}) if seen else {}
            if seen is None or seen[0].status in DONE or not (source.get("url") or source.get("instance")):
                return  # done, or its data comes through the image API (kova.openstack), not from a URL
            uid = seen[1]["metadata"]["uid"]
            if source.get("instance"):
                again = await run_snapshot(rt, seen[1], stopped, logger)
            else:
                spec = ImageSpec.model_validate(seen[1]["spec"])
                assert spec.source.url is not None and spec.disk_format is not None  # the API server's rules
                again = await import_from(rt, seen[1], stopped, logger, spec.source.url, spec.disk_format.value,
                                          spec.source.checksum, Fetcher(rt.settings.import_filter))
            if not again:
                return
            await stopped.wait(rt.settings.import_retry_delay)  # the slot is free for others meanwhile
    finally:
        if uid is not None:
            rt.waiting.pop(uid, None)


async def import_from(rt: Runtime, obj: dict[str, Any], stopped: kopf.DaemonStopped,
                      logger: logging.Logger | logging.LoggerAdapter[Any], url: str, disk_format: str,
                      checksum: str | None, fetcher: Fetcher | ExportFetcher) -> bool:
    """One import in one of the replica's slots; True when a passing failure asks for another attempt."""
    md = obj["metadata"]
    quota = rt.image_quota(md["namespace"], md["uid"]) if rt.image_quota is not None else None
    if quota is not None and quota.wait:  # image_count_uploading: it waits in queued, and says so
        rt.waiting[md["uid"]] = quota.wait
        await reconcile(rt, md["namespace"], md["name"])
        return True
    try:
        if not await _import_slot(rt, md["namespace"], md["name"], md["uid"], stopped):
            return False
    finally:
        rt.waiting.pop(md["uid"], None)
    try:
        return await _import_once(rt, obj, stopped, logger, url, disk_format, checksum, fetcher, quota)
    finally:
        rt.import_slots.release(md["namespace"])


async def _import_slot(rt: Runtime, namespace: str, name: str, uid: str, stopped: kopf.DaemonStopped) -> bool:
    """Wait for one of KOVA_MAX_CONCURRENT_IMPORTS slots, saying so in the status; False when stopped. Slots
    are shared fairly by namespaces (kova.image.fairness)."""
    if rt.import_slots.take(namespace):  # free: taken without yielding, so no other daemon slips in between
        return True
    limit = rt.settings.max_imports
    rt.waiting[uid] = (f"waiting for an import slot: {limit} imports are running (KOVA_MAX_CONCURRENT_IMPORTS="
                       f"{limit}); a free slot goes to the namespace with the fewest running")
    await reconcile(rt, namespace, name)
    acquire = asyncio.ensure_future(rt.import_slots.wait(namespace))
    stop = asyncio.ensure_future(stopped.wait())
    await asyncio.wait({acquire, stop}, return_when=asyncio.FIRST_COMPLETED)
    stop.cancel()
    if not acquire.done():
        acquire.cancel()
        return False
    if stopped:
        rt.import_slots.release(namespace)
        return False
    return True


async def _import_once(rt: Runtime, obj: dict[str, Any], stopped: kopf.DaemonStopped,
                       logger: logging.Logger | logging.LoggerAdapter[Any], url: str, disk_format: str,
                       checksum: str | None, fetcher: Fetcher | ExportFetcher, quota: Gate | None = None) -> bool:
    """One attempt at moving the bytes; True when a passing failure asks for another."""
    namespace, name, uid = obj["metadata"]["namespace"], obj["metadata"]["name"], obj["metadata"]["uid"]
    state = rt.imports[uid] = ImportState()  # a new attempt: the last one's passing error is over
    again = False
    metrics.IMPORTS_IN_FLIGHT.inc()
    work = asyncio.create_task(asyncio.to_thread(
        rt.importer.import_url, uid, url, disk_format, checksum, fetcher=fetcher,
        size_cap=quota.size_cap(rt.settings.size_cap) if quota else rt.settings.size_cap, progress=state.progress,
        cancelled=lambda: bool(stopped)))
    limits = rt.settings.import_limits
    watch = pace.Pace(limits, time.monotonic())
    shown, store_waits = time.monotonic(), 0
    try:
        while not work.done():
            await asyncio.wait({work}, timeout=limits.tick())
            waited, store_waits = state.progress.store_waits != store_waits, state.progress.store_waits
            refusal = watch.verdict(time.monotonic(), state.progress.done, state.progress.total, waited)
            if refusal is not None and state.progress.stopped is None:
                # Hung up on from here: the import thread may be blocked reading a source that trickles.
                state.progress.stop(importer.ImportFailed(refusal.reason, refusal.message))
            if time.monotonic() - shown >= PROGRESS_EVERY:
                await reconcile(rt, namespace, name)
                shown = time.monotonic()
        blob = work.result()
        metrics.IMPORTED_BYTES.inc(blob.size)
        metrics.IMPORTS.labels("active").inc()
        logger.info("imported %d bytes from %s", blob.size, url.split("?")[0])
    except importer.Cancelled:
        return False
    except importer.ImportFailed as e:
        metrics.IMPORTS.labels("killed").inc()
        logger.warning("import failed: %s: %s", e.reason, e)
        over = quota.exceeded(rt.settings.size_cap, e.reason) if quota else None  # image_size_total set the cap
        await kill(rt, namespace, name, "QuotaExceeded" if over else e.reason, str(over or e))
        return False
    except Exception as e:
        # A failure that may pass: the source (5xx, network) or the object store (down, refusing).
        # Not swallowed: it is logged, shown in the status until the next attempt, and tried again.
        state.error = str(e) if isinstance(e, importer.SourceUnavailable | WorkerLost) else f"object store: {e}"
        logger.warning("import will be retried in %.0fs: %s", rt.settings.import_retry_delay, state.error)
        await reconcile(rt, namespace, name)
        again = True
        return True
    finally:
        metrics.IMPORTS_IN_FLIGHT.dec()
        if not work.done():
            # Cancelled from outside (shutdown): the thread sees `stopped` and aborts its upload.
            await asyncio.wait({work}, timeout=30)
        if not again:
            rt.imports.pop(uid, None)
    await reconcile(rt, namespace, name)
    return False


async def kill(rt: Runtime, namespace: str, name: str, reason: str, message: str) -> None:
    """Glance's killed: the source cannot give a good image; not tried again."""
    async with rt.lock("image", namespace, name):
        fresh = await rt.kube.get(IMAGES, name, namespace)
        if fresh is not None:
            await _write(rt, fresh, killed_view(reason, message))


async def delete(rt: Runtime, body: kopf.Body, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Remove the blob (the finalizer's job). A protected image is kept until it is unprotected."""
    if protected_refusal(body.get("spec") or {}, body["metadata"]["uid"]):
        message = "the image is protected: set spec.protected to false to let it be deleted"
        kopf.warn(body, reason="DeletionRefused", message=message)
        raise kopf.TemporaryError(message, delay=10)
    uid = body["metadata"]["uid"]
    copy = rt.copies.get(uid)
    if copy is not None:  # no copy may still be writing once the data is removed
        copy.cancel()
        await asyncio.wait({copy}, timeout=90)
    await asyncio.to_thread(rt.store.delete_image, uid)
    rt.imports.pop(uid, None)
    logger.info("removed the image data from every store (%s)", ", ".join(rt.store.order))


# ---------------------------------------------------------------------------------------------- createImage
async def run_snapshot(rt: Runtime, obj: dict[str, Any], stopped: kopf.DaemonStopped, logger: Log) -> bool:
    """One attempt at a snapshot; True when it should be tried again later."""
    md, spec = obj["metadata"], obj.get("spec") or {}
    namespace, name = md["namespace"], md["name"]
    instance_name = spec["source"]["instance"]
    inst = await rt.kube.get(INSTANCES, instance_name, namespace)
    state = snapshot.source_state(inst, instance_name, namespace)
    if isinstance(state, Refusal):
        await kill(rt, namespace, name, state.reason, state.message)
        return False
    if state is not None or inst is None:
        await reconcile(rt, namespace, name, queued_message=state)
        return True
    ist = inst.get("status") or {}
    origin = SnapshotOrigin(instance_uuid=inst["metadata"]["uid"], base_image_ref=await _image_uid(rt, inst))
    previous = (obj.get("status") or {}).get("snapshot") or {}
    if previous.get("export"):
        # Left by an attempt that died: its token was never stored anywhere, so it cannot be read. A new one.
        await _remove(rt, namespace, previous["export"])
    suffix = secrets.token_hex(4)
    export = snapshot.export_name(name, suffix)
    origin.export = export
    written = await rt.kube.patch_status(IMAGES, name, namespace, {"snapshot": origin.dump()})
    rt.writes.wrote_status(obj, written)
    token = secrets.token_urlsafe(32)
    secret, vmexport = snapshot.export_objects(obj, export, ist["virtualMachine"], instance_name, token)
    await rt.kube.create_secret(secret)
    try:
        await rt.kube.create(VIRTUAL_MACHINE_EXPORTS, vmexport)
        link = await _ready(rt, namespace, name, export, ist.get("dataVolume") or "", instance_name, stopped)
        if link is None:
            return False
        url, ca, address = link
        logger.info("reading the export of Instance %s from %s (%s)", instance_name, url.split("?")[0],
                    f"{address[0]}:{address[1]}" if address else "by name")
        # Raw: CDI converted the disk to raw when it imported it, and the export serves it as it is.
        return await import_from(rt, obj, stopped, logger, url, "raw", None,
                                 ExportFetcher(ca_pem=ca, token=token, address=address))
    finally:
        await _remove(rt, namespace, export)


async def _ready(rt: Runtime, namespace: str, name: str, export: str, volume: str, instance: str,
                 stopped: kopf.DaemonStopped) -> tuple[str, str, tuple[str, int] | None] | None:
    """Wait for KubeVirt to serve the export (the Instance stops for it); None when told to stop."""
    said = False
    while not stopped:
        obj = await rt.kube.get(VIRTUAL_MACHINE_EXPORTS, export, namespace)
        link = snapshot.export_link(obj or {}, volume)
        if link is not None:
            # Ready, and the pod behind its Service ready too (the status may be seen before the pod's).
            address = await _exporter_address(rt, link[0])
            if address is not None or snapshot.export_service(link[0]) is None:
                return (*link, address)
        if not said:
            phase = ((obj or {}).get("status") or {}).get("phase") or "Pending"
            await reconcile(rt, namespace, name, queued_message=f"waiting for KubeVirt to export the root disk of "
                                                                f"Instance {instance} ({phase}; the instance stops "
                                                                "for the copy)")
            said = True
        await asyncio.sleep(EXPORT_POLL)
    return None


async def _exporter_address(rt: Runtime, url: str) -> tuple[str, int] | None:
    """The exporter pod's address behind an internal link's Service, None when the link is not a Service's."""
    found = snapshot.export_service(url)
    if found is None:
        return None
    namespace, name = found
    service = await rt.kube.get(SERVICES, name, namespace)
    selector = ",".join(f"{k}={v}" for k, v in sorted(((service or {}).get("spec") or {}).get("selector", {}).items()))
    pods = await rt.kube.list_objects(PODS, namespace, selector) if selector else []
    return snapshot.export_address(service, pods)


async def _remove(rt: Runtime, namespace: str, export: str) -> None:
    await rt.kube.delete(VIRTUAL_MACHINE_EXPORTS, export, namespace)
    await rt.kube.delete_secret(export, namespace)


async def _image_uid(rt: Runtime, inst: dict[str, Any]) -> str | None:
    ref = (inst.get("status") or {}).get("imageRef") or (inst.get("spec") or {}).get("imageRef")
    if not ref:
        return None
    image_ns, image_name = parse_image_ref(ref, inst["metadata"]["namespace"])
    image = await rt.kube.get(IMAGES, image_name, image_ns)
    return image["metadata"]["uid"] if image else None
