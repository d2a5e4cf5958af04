"""Image: import the source into the store once, mirror what the store holds, remove it on delete.

`reconcile` (create/update/resume) only observes and writes status; `run_import` (a Kopf daemon, one per
Image) moves the bytes in a worker thread and stops when the Image is deleted or the operator stops.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from kova import metrics
from kova.builders import ImageView, killed_view, observe_image
from kova.handlers.common import publish
from kova.image import importer
from kova.image.fetch import Fetcher
from kova.models import GlanceStatus, ImageSpec
from kova.runtime import IMAGES, ImportState, Runtime

PROGRESS_EVERY = 1.0  # seconds between progress writes while importing


async def reconcile(rt: Runtime, namespace: str, name: str) -> tuple[ImageView, dict[str, Any]] | None:
    """Observe the store and the importer; write the status. Returns what it wrote, and the Image it read."""
    async with rt.lock("image", namespace, name):
        obj = await rt.kube.get(IMAGES, name, namespace)
        if obj is None or obj["metadata"].get("deletionTimestamp"):
            return None
        uid = obj["metadata"]["uid"]
        state = rt.imports.get(uid)
        # While this process imports, no record can exist yet: no need to ask the store every second.
        blob = None if state is not None else await asyncio.to_thread(rt.store.read_record, uid)
        view = observe_image(blob, rt.store.location(uid), obj.get("status") or {}, importing=state is not None,
                             done=state.progress.done if state else 0,
                             total=state.progress.total if state else None,
                             passing_error=state.error if state else None,
                             deactivated=bool((obj.get("spec") or {}).get("deactivated")))
        await _write(rt, obj, view)
        return view, obj


async def _write(rt: Runtime, obj: dict[str, Any], view: ImageView) -> None:
    await publish(rt, IMAGES, obj, word=view.status.value, progress=view.progress, reason=view.reason,
                  message=view.message, fields=view.fields)


async def run_import(rt: Runtime, namespace: str, name: str, stopped: kopf.DaemonStopped,
                     logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """The import daemon: returns once the image is active or killed, or when told to stop."""
    while not stopped:
        seen = await reconcile(rt, namespace, name)
        if seen is None or seen[0].status in (GlanceStatus.active, GlanceStatus.killed, GlanceStatus.deactivated):
            return
        obj = seen[1]
        uid = obj["metadata"]["uid"]
        spec = ImageSpec.model_validate(obj["spec"])
        state = rt.imports.setdefault(uid, ImportState())
        state.progress = importer.ImportProgress()
        metrics.IMPORTS_IN_FLIGHT.inc()
        work = asyncio.create_task(asyncio.to_thread(
            importer.import_url, rt.store, uid, spec.source.url, spec.disk_format.value, spec.source.checksum,
            fetcher=Fetcher(rt.settings.import_filter), size_cap=rt.settings.size_cap, progress=state.progress,
            cancelled=lambda: bool(stopped)))
        try:
            while not work.done():
                await asyncio.wait({work}, timeout=PROGRESS_EVERY)
                await reconcile(rt, namespace, name)
            blob = work.result()
            metrics.IMPORTED_BYTES.inc(blob.size)
            metrics.IMPORTS.labels("active").inc()
            logger.info("imported %d bytes from %s", blob.size, spec.source.url)
        except importer.Cancelled:
            return
        except importer.ImportFailed as e:
            metrics.IMPORTS.labels("killed").inc()
            logger.warning("import failed: %s: %s", e.reason, e)
            async with rt.lock("image", namespace, name):
                fresh = await rt.kube.get(IMAGES, name, namespace)
                if fresh is not None:
                    await _write(rt, fresh, killed_view(e.reason, str(e)))
            return
        except Exception as e:
            # A failure that may pass: the source (5xx, network) or the object store (down, refusing).
            # Not swallowed: it is logged, shown in the status, and the import is tried again.
            state.error = str(e) if isinstance(e, importer.SourceUnavailable) else f"object store: {e}"
            logger.warning("import will be retried in %.0fs: %s", rt.settings.import_retry_delay, state.error)
            await reconcile(rt, namespace, name)
            await stopped.wait(rt.settings.import_retry_delay)
            continue
        finally:
            metrics.IMPORTS_IN_FLIGHT.dec()
            if work.done():
                rt.imports.pop(uid, None)
            else:
                # Cancelled from outside (shutdown): the thread sees `stopped` and aborts its upload.
                await asyncio.wait({work}, timeout=30)
                rt.imports.pop(uid, None)
        await reconcile(rt, namespace, name)
        return


async def delete(rt: Runtime, body: kopf.Body, logger: logging.Logger | logging.LoggerAdapter[Any]) -> None:
    """Remove the blob (the finalizer's job). A protected image is kept until it is unprotected."""
    spec = body.get("spec") or {}
    if spec.get("protected"):
        message = "the image is protected: set spec.protected to false to let it be deleted"
        kopf.warn(body, reason="DeletionRefused", message=message)
        raise kopf.TemporaryError(message, delay=10)
    uid = body["metadata"]["uid"]
    await asyncio.to_thread(rt.store.delete_image, uid)
    rt.imports.pop(uid, None)
    logger.info("removed the image data at %s", rt.store.location(uid))
