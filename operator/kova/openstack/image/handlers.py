"""Glance v2's handlers over the Image objects: each reads the request, asks kova.openstack.image.glance (and
kova.image) what Glance would answer, and carries it out. Reads and writes of Images go to kube-apiserver
with the caller's own token (kova.adapters.kubeapi); only three things use the API's own ServiceAccount:
reading Images of *other* namespaces that Glance's visibility lets the caller see (public, community, shared
with its project), writing an Image's status after an upload or a member's answer, and posting Events. The
bytes go to and from the object store with the store's credentials, after a SelfSubjectAccessReview of the
virtual subresource `images/file`."""

from __future__ import annotations

import asyncio
import functools
import hmac
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from kubernetes.aio.client.exceptions import ApiException

from kova.adapters.informer import Informer
from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.adapters.store import STORE_ERRORS, FileStore, sign_link
from kova.api import clock
from kova.api.conditions import Progress
from kova.api.errors import StatusError
from kova.api.models import IMAGE, VERSION, GlanceStatus
from kova.api.resources import IMAGES
from kova.image import importer
from kova.image.filter import refusal_before_resolving
from kova.image.rules import observe_image
from kova.openstack.front import Front, UidIndex, read_json
from kova.openstack.image import glance, quotas
from kova.openstack.image.glance import GlanceError

log = logging.getLogger("kova.api")

CHUNK = 1 << 20
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class UploadStalled(Exception):
    """The client sent nothing for KOVA_UPLOAD_READ_TIMEOUT seconds."""


def _error(request: web.Request, status: int, message: str, headers: dict[str, str] | None = None) -> web.Response:
    """Glance's error body, negotiated as WebOb does: JSON when asked for, plain text otherwise (glanceclient
    cannot parse WebOb's flat JSON, and never asks for it)."""
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 408: "Request Timeout",
              409: "Conflict", 413: "Request Entity Too Large", 415: "Unsupported Media Type",
              416: "Requested Range Not Satisfiable", 503: "Service Unavailable"}.get(status, "Error")
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"message": message, "code": f"{status} {reason}", "title": reason}, status=status,
                                 headers=headers)
    return web.Response(status=status, text=f"{status} {reason}\n\n{message}\n\n   ", headers=headers)



def _asks_admin(ops: Any) -> bool:
    """Whether a PATCH does what only an administrator may (publicize, owner): only then is it asked."""
    if not isinstance(ops, list):
        return False
    touched = {str(o.get("path", "")).lstrip("/").split("/")[0] for o in ops if isinstance(o, dict)}
    return "owner" in touched or ("visibility" in touched and any(
        isinstance(o, dict) and o.get("value") == "public" for o in ops))


class ImageHandlers(Front):
    def __init__(self, apiserver: Apiserver, rt: Runtime, public_url: str | None = None) -> None:
        super().__init__(apiserver, rt, public_url)
        self.images = Informer(rt.kube, IMAGES, fields=("spec", "status"))
        self.by_uid = UidIndex()
        self.images.listeners.append(self.by_uid.update_from)
        self._task: asyncio.Task[None] | None = None
        # Uploads on threads of their own, as many as may run at once: a slow client holds one for as long as
        # it takes, and downloads and other calls (asyncio's default pool) never wait behind it.
        self.uploading: Counter[str] = Counter()  # project → uploads being received by this replica
        self.upload_pool = ThreadPoolExecutor(max_workers=rt.settings.max_uploads, thread_name_prefix="upload")

    async def start(self) -> None:
        self._task = asyncio.create_task(self.images.run())
        await self.images.synced.wait()
        for obj in self.images:
            self.by_uid.update_from(None, obj)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        self.upload_pool.shutdown(wait=False, cancel_futures=True)
        await self.apiserver.close()
        await self.rt.kube.close()

    async def find(self, caller: Caller, project: str, image_id: str) -> dict[str, Any]:
        """The image with this id as the caller sees it: its own namespace's through its token, another
        namespace's only when Glance's visibility lets its project see it. 404 otherwise, as Glance."""
        missing = GlanceError(404, f"No image found with ID {image_id}")
        key = self.by_uid.get(image_id)
        if key is not None and key[0] != project:
            obj = self.images.get(key)
            if obj is None or obj["metadata"].get("deletionTimestamp") or not (
                    glance.visible(obj, project) or await self.is_admin(caller)):
                raise missing
            return obj
        try:
            if key is not None:
                obj = await caller.image(project, key[1])
            else:  # created a moment ago, before the watch told this process
                obj = next((o for o in await caller.images(project) if o["metadata"]["uid"] == image_id), None)
        except ApiError as e:
            raise GlanceError(e.status if e.status in (401, 403) else 503, e.message) from e
        if obj is None or obj["metadata"]["uid"] != image_id or obj["metadata"].get("deletionTimestamp"):
            raise missing
        return obj

    def by_key(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        """An Image from the API's own cache, for a server's view (its uid and properties): never shown as an
        image, so Glance's visibility is not asked here."""
        return self.images.get(key)

    async def own(self, caller: Caller, project: str, image_id: str) -> dict[str, Any]:
        obj = await self.find(caller, project, image_id)
        if obj["metadata"]["namespace"] != project and not await self.is_admin(caller):
            raise GlanceError(403, f"You are not permitted to modify image {image_id}: it belongs to project "
                                   f"{obj['metadata']['namespace']}.")
        return obj

    # ------------------------------------------------------------------------------------------- images
    async def image_versions(self, request: web.Request) -> web.Response:
        base = f"{self.base(request)}/projects/{request.match_info['project']}/image"
        return web.json_response(glance.versions(base), status=200 if request.path.endswith("versions") else 300)

    async def schema(self, request: web.Request) -> web.Response:
        found = glance.schemas().get(request.match_info["name"])
        if found is None:
            raise GlanceError(404, "The resource could not be found.")
        return web.json_response(found)

    async def list_images(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        query = glance.parse_query(list(request.query.items()))
        try:
            own = await caller.images(project)
        except ApiError as e:
            raise GlanceError(e.status if e.status in (401, 403) else 503, e.message) from e
        others = [o for o in self.images if o["metadata"]["namespace"] != project]
        page, more = glance.select([*own, *others], project, query, await self.is_admin(caller))
        body: dict[str, Any] = {"images": page, **glance.list_links(list(request.query.items()), page, more),
                                "schema": "/v2/schemas/images"}
        return web.json_response(body)

    async def show_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        return web.json_response(glance.image_doc(await self.find(caller, project, request.match_info["id"])))

    async def create_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        body = await read_json(request)
        # Only what an administrator may do asks whether the caller is one.
        admin = isinstance(body, dict) and (body.get("owner") not in (None, project) or
                                            body.get("visibility") == "public") and await self.is_admin(caller)
        namespace = glance.image_owner(body, project, admin)
        spec = glance.new_image(body, namespace, admin)
        name, prefix = glance.kubernetes_name(spec.get("name"))
        manifest: dict[str, Any] = {"apiVersion": f"{IMAGE.group}/{VERSION}", "kind": "Image",
                                    "metadata": {"name": name} if name else {"generateName": prefix}, "spec": spec}
        try:
            try:
                obj = await caller.create_image(namespace, manifest)
            except ApiError as e:
                if e.status != 409 or not name:
                    raise
                manifest["metadata"] = {"generateName": prefix}  # Glance names need not be unique
                obj = await caller.create_image(namespace, manifest)
        except ApiError as e:
            if e.status == 404 and namespace != project:
                raise GlanceError(400, f"owner {namespace} is not a project: there is no namespace {namespace}") \
                    from e
            raise GlanceError(400 if e.status == 422 else e.status, e.message) from e
        self.by_uid.update_from(None, obj)
        self.images.offer(obj)  # read-your-writes: another project may ask for it before the watch says so
        doc = glance.image_doc(obj)
        # Glance tells the import methods with every create (openstacksdk's `--import` reads them here).
        return web.json_response(doc, status=201, headers={
            "Location": f"{self.base(request)}/projects/{project}/image{doc['self']}",
            "OpenStack-image-import-methods": ",".join(glance.IMPORT_METHODS)})

    async def update_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        if request.content_type not in glance.PATCH_TYPES:
            raise GlanceError(415, f"Image PATCH expects Content-Type one of: {', '.join(glance.PATCH_TYPES)}")
        obj = await self.own(caller, project, request.match_info["id"])
        ops = await read_json(request)
        admin = await self.is_admin(caller) if _asks_admin(ops) else False
        patch = glance.apply_patch(obj, ops, request.content_type, admin)
        if patch:
            obj = await self._patch(caller, obj, {"spec": patch})
        return web.json_response(glance.image_doc(obj))

    async def _patch(self, caller: Caller, obj: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
        try:
            patched = await caller.patch_image(obj["metadata"]["namespace"], obj["metadata"]["name"], patch)
        except ApiError as e:
            raise GlanceError(400 if e.status == 422 else e.status, e.message) from e
        self.images.offer(patched)  # a member added is seen by that member's next request, as in Glance
        return patched

    async def delete_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        glance.check_delete(obj)
        try:
            await caller.delete_image(obj["metadata"]["namespace"], obj["metadata"]["name"], obj["metadata"]["uid"])
        except ApiError as e:
            raise GlanceError(404 if e.status in (404, 409) else e.status, e.message) from e
        return web.Response(status=204)

    async def put_tag(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        tag = request.match_info["tag"]
        glance.check_new_tag(obj, tag)
        tags = list((obj.get("spec") or {}).get("tags") or [])
        if tag not in tags:
            await self._patch(caller, obj, {"spec": {"tags": sorted({*tags, tag})}})
        return web.Response(status=204)

    async def delete_tag(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        tag = request.match_info["tag"]
        tags = list((obj.get("spec") or {}).get("tags") or [])
        if tag not in tags:
            raise GlanceError(404, f"Tag {tag} not found.")
        await self._patch(caller, obj, {"spec": {"tags": [t for t in tags if t != tag]}})
        return web.Response(status=204)

    async def action(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        deactivated = glance.check_action(request.match_info["action"], obj)
        await self._patch(caller, obj, {"spec": {"deactivated": deactivated}})
        return web.Response(status=204)

    # --------------------------------------------------------------------------------------------- data
    async def info(self, request: web.Request) -> web.Response:
        what = request.match_info["what"]
        _, project = await self.caller(request)  # Glance answers its info documents to a known caller only
        if what == "import":
            return web.json_response(glance.import_info())
        if what == "usage":
            return web.json_response(await quotas.usage_doc(self.rt, self.images, project))
        if what == "stores":
            return web.json_response(glance.stores_info(self.rt.store.specs.values(), self.rt.store.default))
        raise GlanceError(404, "The resource could not be found.")

    async def stores_detail(self, request: web.Request) -> web.Response:
        """GET /v2/info/stores/detail: Glance's policy `stores_info_detail` is for administrators."""
        caller, _ = await self.caller(request)
        if not await self.is_admin(caller):
            raise GlanceError(403, "You are not authorized to complete stores_info_detail action.")
        return web.json_response(glance.stores_detail(self.rt.store.specs.values(), self.rt.store.default))

    async def upload(self, request: web.Request) -> web.Response:
        return await self._data(request, staged=False)

    async def stage(self, request: web.Request) -> web.Response:
        """Glance's stage: the same verified pipeline as an upload; the image waits in `uploading` for its
        import (glance-direct), which makes it active without moving a byte."""
        return await self._data(request, staged=True)

    async def delete_from_store(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        uid, sid, stores = obj["metadata"]["uid"], request.match_info["store"], self.rt.store
        held = await asyncio.to_thread(stores.holding, uid) if sid in stores.by_id else []
        glance.check_store_delete(obj, sid, stores.order, held, await self.is_admin(caller))
        desired = (obj.get("spec") or {}).get("stores")
        if desired is not None:  # first, or the operator would copy it back
            kept = [s for s in desired if s != sid] or [s for s in held if s != sid]
            obj = await self._patch(caller, obj, {"spec": {"stores": kept}})
        await asyncio.to_thread(stores.get(sid).delete_image, uid)
        left = [s for s in held if s != sid]
        await publish(self.rt, IMAGES, await self._fresh(obj), word=GlanceStatus.active.value,
                      progress=Progress.READY, reason="Active", message=f"removed from store {sid}",
                      fields={"stores": left})
        return web.Response(status=204)

    async def stage_status(self, request: web.Request) -> web.Response:
        """GET /v2/images/{id}/stage: how much of a stage arrived (Kova's; Glance has no GET on it)."""
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        kept = await asyncio.to_thread(self.rt.store.data_size, obj["metadata"]["uid"])
        return web.json_response(glance.stage_doc(obj, kept))

    async def import_image(self, request: web.Request) -> web.Response:
        caller, asker = await self.caller(request)
        obj = await self.own(caller, asker, request.match_info["id"])
        project = obj["metadata"]["namespace"]  # the image's (an administrator may act on another's)
        body = await read_json(request)
        copy = isinstance(body, dict) and isinstance(body.get("method"), dict) and \
            body["method"].get("name") == "copy-image"
        method, uri = glance.parse_import(obj, body, admin=copy and await self.is_admin(caller))
        if not await caller.can("update", project, subresource="file"):
            raise GlanceError(403, "You are not authorized to import image data (images/file, update).")
        uid, stores = obj["metadata"]["uid"], self.rt.store
        if method == "web-download":  # the operator imports it, as an Image with a source URL
            assert uri is not None
            glance.import_targets(body, stores.order, [])  # Glance's 400 for stores it does not know
            refused = refusal_before_resolving(uri, self.rt.settings.import_filter)
            if refused:
                raise GlanceError(400, f"URI for web-download does not pass filtering: {refused}")
            # Into the default store, then (the operator) to the stores asked for, if any.
            await self._patch(caller, obj, {"spec": {"source": {"upload": None, "url": uri}, **self._desired(body)}})
            return web.Response(status=202)
        if method == "copy-image":
            held = await asyncio.to_thread(stores.holding, uid)
            targets = glance.import_targets(body, stores.order, held)
            await self._ask_stores(caller, obj, targets, [*held, *targets])
            return web.Response(status=202)
        await quotas.check_import(self.rt, self.images, project, uid, int((obj.get("status") or {}).get("size") or 0))
        blob = await asyncio.to_thread(stores.promote_staged, uid)
        if blob is None:
            await self._requeue(obj, "the staged data is gone: stage it again")
            raise GlanceError(409, "Image needs to be staged before 'glance-direct' method can be used")
        held = await asyncio.to_thread(stores.holding, uid)
        targets = glance.import_targets(body, stores.order, held)
        desired = self._desired(body)
        if desired:  # before the image is active: where an import puts the data is the importer's choice
            # Glance imports into the stores asked for only: the one the stage went to goes once they have it.
            obj = await self._patch(caller, obj, {"spec": desired})
        await self._activate(obj, blob, importing=targets if desired else None)
        return web.Response(status=202)

    def _desired(self, body: dict[str, Any]) -> dict[str, Any]:
        """The spec.stores an import asks for (`stores`, `all_stores`), {} when it names none."""
        if body.get("all_stores"):
            return {"stores": list(self.rt.store.order)}
        return {"stores": list(body["stores"])} if body.get("stores") else {}

    async def _ask_stores(self, caller: Caller, obj: dict[str, Any], targets: list[str], desired: list[str]) -> None:
        """copy-image: the operator copies the data to `targets` (spec.stores), through the verified pipeline,
        after the answer (Glance's import task). A store asked for again is tried again: its last failure goes
        first, and the image shows what is left (Ready meanwhile: a copy only adds where the data is)."""
        failed = [s for s in ((obj.get("status") or {}).get("failedImport") or []) if s not in targets]
        await publish(self.rt, IMAGES, await self._fresh(obj), word=GlanceStatus.active.value,
                      progress=Progress.READY, reason="Active", message=f"copying the data to {', '.join(targets)}",
                      fields={"importingToStores": targets, "failedImport": failed})
        order = self.rt.store.order
        await self._patch(caller, obj, {"spec": {"stores": [s for s in order if s in desired]}})

    async def _data(self, request: web.Request, staged: bool) -> web.Response:
        caller, asker = await self.caller(request)
        obj = await self.own(caller, asker, request.match_info["id"])
        project = obj["metadata"]["namespace"]  # the image's (an administrator may act on another's)
        if not await caller.can("update", project, subresource="file"):
            raise GlanceError(403, "You are not authorized to upload image data (images/file, update).")
        spec = obj.get("spec") or {}
        target = GlanceStatus.uploading if staged else GlanceStatus.saving
        size = glance.check_upload(obj, request.headers.get("Content-Type"), request.headers.get(
            "x-openstack-image-size") or request.headers.get("Content-Length"), target.value)
        uid = obj["metadata"]["uid"]
        store = glance.chosen_store(request.headers.get("x-image-meta-store"), self.rt.store.order)
        resume_from = 0
        if staged and "Content-Range" in request.headers:  # a stage resumed: the whole image's size counts
            kept = await asyncio.to_thread(self.rt.store.get(store).data_size, uid)
            resume_from, size = glance.parse_resume(request.headers["Content-Range"], kept or 0)
        room = await quotas.room(self.rt, self.images, project, uid, size, staged)  # Glance's 413 over quota
        settings = self.rt.settings
        glance.check_upload_slots(project, self.uploading[project], sum(self.uploading.values()),
                                  settings.max_uploads_per_project, settings.max_uploads)
        self.uploading[project] += 1
        try:
            return await self._receive(request, obj, spec, size, room, staged, resume_from, store)
        finally:
            self.uploading[project] -= 1
            if not self.uploading[project]:
                del self.uploading[project]

    async def _receive(self, request: web.Request, obj: dict[str, Any], spec: dict[str, Any],
                       size: int | None, room: quotas.Room, staged: bool = False, resume_from: int = 0,
                       store: str | None = None) -> web.Response:
        uid = obj["metadata"]["uid"]
        await self._claim(obj, GlanceStatus.uploading if staged else GlanceStatus.saving)
        loop = asyncio.get_running_loop()
        timeout = self.rt.settings.upload_read_timeout
        expected = None if size is None else size - resume_from  # what this request's body should hold

        def chunks() -> Iterator[bytes]:  # read on the event loop, one MiB at a time, for the import thread
            got = 0
            try:
                while data := asyncio.run_coroutine_threadsafe(_read(request, CHUNK, timeout), loop).result():
                    got += len(data)
                    yield data
            except Exception as e:  # the client went away or stopped sending: a stage keeps what is whole
                if staged:
                    raise importer.Interrupted(str(e) or type(e).__name__) from e
                raise
            if staged and expected is not None and got < expected:
                raise importer.Interrupted(f"the body ended after {got} of {expected} bytes")
        source = f"upload to /v2/images/{uid}/{'stage' if staged else 'file'}"
        try:
            blob = await loop.run_in_executor(self.upload_pool, functools.partial(
                self.rt.importer.import_chunks, uid, chunks(), spec["diskFormat"], source=source,
                size=size, size_cap=room.size_cap, staged=staged, resume_from=resume_from, store=store))
        except importer.Interrupted as e:  # Kova's resumable stage: the image waits in queued for the rest
            message = (f"the stage was interrupted ({e}); {e.kept} bytes are kept: resume it with "
                       f"`kova image upload --resume` (PUT /v2/images/{uid}/stage with Content-Range bytes "
                       f"{e.kept}-...)")
            await self._requeue(obj, message)
            raise GlanceError(408, message) from e
        except UploadStalled as e:  # Glance: the image goes back to queued, nothing kept
            await self._requeue(obj, f"the last upload did not complete: {e}")
            raise GlanceError(408, f"The upload did not complete: {e}") from e
        except importer.ImportFailed as e:
            over = room.refusal(e, size)  # the size cap was image_size_total's
            await self._requeue(obj, f"the last upload was refused: {over or e}")
            raise (over or glance.upload_refused(e, spec["diskFormat"])) from e
        except Exception as e:  # the store or the connection failed: the image waits for a new upload
            log.warning("upload of %s failed: %r", uid, e)
            await self._requeue(obj, f"the last upload did not complete: {e}")
            raise GlanceError(503, f"The upload did not complete: {e}") from e
        if staged:
            message = f"{blob.size} bytes staged and verified: import them (POST /v2/images/{uid}/import, " \
                      "method glance-direct)"
            await publish(self.rt, IMAGES, await self._fresh(obj), word=GlanceStatus.uploading.value,
                          progress=Progress.RECONCILING, reason="Staged", message=message,
                          fields={"message": message, "size": blob.size})  # image_stage_total counts it
        else:
            await self._activate(obj, blob)
        return web.Response(status=204)

    async def _activate(self, obj: dict[str, Any], blob: Any, importing: list[str] | None = None) -> None:
        uid = obj["metadata"]["uid"]
        held = await asyncio.to_thread(self.rt.store.holding, uid)
        view = observe_image(blob, self.rt.store.location(uid, held), {}, importing=False,
                             done=blob.size, total=blob.size, passing_error=None,
                             deactivated=bool((obj.get("spec") or {}).get("deactivated")))
        view.fields["stores"] = held
        if importing is not None:  # an import that asked for stores: Glance says which are still to come
            view.fields.update({"importingToStores": importing, "failedImport": []})
        await publish(self.rt, IMAGES, await self._fresh(obj), word=view.status.value, progress=view.progress,
                      reason=view.reason, message=view.message, fields=view.fields)

    async def _claim(self, obj: dict[str, Any], target: GlanceStatus = GlanceStatus.saving) -> None:
        """queued → saving, conditional on the resourceVersion read: of two uploads at once, one gets 409. The
        operator may have written the Image meanwhile (its finalizer, its status): read it again and retry."""
        for _ in range(5):
            status = glance.glance_status(obj)
            if status != GlanceStatus.queued.value:
                raise GlanceError(409, f"Image status transition from {status} to {target.value} is not allowed")
            try:
                await publish(self.rt, IMAGES, obj, word=target.value, progress=Progress.RECONCILING,
                              reason="Saving" if target is GlanceStatus.saving else "Staging",
                              message="receiving the data through the image API", precondition=True)
                return
            except ApiException as e:
                if e.status != 409:
                    raise
            obj = await self._fresh(obj)
        raise GlanceError(409, "The image is being changed by other requests; try again.")

    async def _fresh(self, obj: dict[str, Any]) -> dict[str, Any]:
        md = obj["metadata"]
        return await self.rt.kube.get(IMAGES, md["name"], md["namespace"]) or obj

    async def _requeue(self, obj: dict[str, Any], message: str) -> None:
        """Back to `queued`, as Glance does after a refused upload; the image waits for a good one."""
        try:
            await publish(self.rt, IMAGES, await self._fresh(obj), word=GlanceStatus.queued.value,
                          progress=Progress.RECONCILING, reason="WaitingForData", message=message,
                          fields={"message": message})
        except ApiException as e:
            log.warning("could not put %s back to queued: %s", obj["metadata"]["name"], e.reason)

    async def download(self, request: web.Request) -> web.StreamResponse:
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        if not await caller.can("get", project, subresource="file"):
            raise GlanceError(403, "You are not authorized to download image data (images/file, get).")
        size = glance.check_download(obj)
        if size is None:
            return web.Response(status=204)
        st = obj.get("status") or {}
        start, end = 0, size - 1
        headers = {"Content-Type": "application/octet-stream"}
        answer = 200
        if request.http_range.start is not None or request.http_range.stop is not None:
            rng = request.http_range
            first = rng.start if rng.start is not None and rng.start >= 0 else None
            if first is None and rng.start is not None:  # bytes=-N: the last N
                start = max(0, size + rng.start)
            elif first is not None:
                start = first
                end = min(size - 1, (rng.stop - 1) if rng.stop is not None else size - 1)
            if start >= size or start > end:
                raise GlanceError(416, f"Requested range not satisfiable (size {size})")
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
            answer = 206
        else:
            headers["Content-MD5"] = str(st.get("checksum") or "")
        length = end - start + 1
        headers["Content-Length"] = str(length)
        resp = web.StreamResponse(status=answer, headers=headers)
        stream = await asyncio.to_thread(self.rt.store.open_blob, obj["metadata"]["uid"], start, length)
        try:
            await resp.prepare(request)
            while data := await asyncio.to_thread(stream.read, CHUNK):
                await resp.write(data)
            await resp.write_eof()
        finally:
            stream.close()
            stream.release_conn()
        return resp

    async def store_link(self, request: web.Request) -> web.StreamResponse:
        """GET /stores/{store}/images/{uid}: a file store's image, for whoever holds a link the operator signed
        (an Instance's importer): no token, no store credentials; the signature, its expiry and the store say."""
        sid, uid = request.match_info["store"], request.match_info["uid"]
        store = self.rt.store.by_id.get(sid)
        try:
            expires = int(request.query.get("expires", ""))
        except ValueError:
            expires = 0
        signature = request.query.get("signature", "")
        if not isinstance(store, FileStore) or expires < time.time() or not hmac.compare_digest(
                signature, sign_link(self.rt.settings.link_key, sid, uid, expires)):
            raise GlanceError(403, "This link is not valid (any more): ask for the image again.")
        try:
            size = await asyncio.to_thread(store.data_size, uid)
            record = await asyncio.to_thread(store.read_record, uid) if size is not None else None
        except STORE_ERRORS as e:  # the importer retries (CDI): say it is the store, not the link or the image
            raise GlanceError(503, f"Store {sid} does not answer: {e}") from e
        if size is None or record is None:
            raise GlanceError(404, f"No image {uid} in store {sid}")
        start, end = 0, size - 1
        rng = request.http_range
        status = 200
        if rng.start is not None and 0 <= rng.start < size:
            start, end, status = rng.start, min(size, rng.stop) - 1 if rng.stop is not None else size - 1, 206
        headers = {"Content-Type": "application/octet-stream", "Content-Length": str(end - start + 1),
                   "Accept-Ranges": "bytes"}
        if status == 206:
            headers["Content-Range"] = f"bytes {start}-{end}/{size}"
        resp = web.StreamResponse(status=status, headers=headers)
        await resp.prepare(request)
        if request.method == "HEAD":
            return resp
        stream = await asyncio.to_thread(store.open_blob, uid, start, end - start + 1)
        try:
            while data := await asyncio.to_thread(stream.read, CHUNK):
                await resp.write(data)
            await resp.write_eof()
        finally:
            stream.close()
        return resp

    # ------------------------------------------------------------------------------------------ members
    async def members(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        return web.json_response({"members": glance.visible_members(obj, project), "schema": "/v2/schemas/members"})

    async def add_member(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        member, wanted = glance.added_member(obj, await read_json(request))
        obj = await self._patch(caller, obj, {"spec": {"members": wanted}})
        return web.json_response(next(d for d in glance.members(obj) if d["member_id"] == member))

    async def show_member(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        return web.json_response(glance.shown_member(obj, request.match_info["member"], project))

    async def answer_member(self, request: web.Request) -> web.Response:
        """A member project accepts or rejects a share. Only the member may answer, and only with Glance's
        `member` role there (a token that may create Images in the project; a reader gets 403, Glance's
        modify_member policy); its answer is written into the owner's Image status with the API's own account."""
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        try:
            member_role = await caller.can("create", project)
        except ApiError as e:
            raise GlanceError(e.status if e.status in (401, 403) else 503, e.message) from e
        glance.check_member_role(member_role)
        member = request.match_info["member"]
        answers = glance.answered_members(obj, member, project, await read_json(request), clock.utcnow())
        md = obj["metadata"]
        fresh = await self.rt.kube.patch_status(IMAGES, md["name"], md["namespace"], {"members": answers})
        if fresh is None:
            raise GlanceError(404, f"No image found with ID {md['uid']}")
        self.images.offer(fresh)
        return web.json_response(next(d for d in glance.members(fresh) if d["member_id"] == member))

    async def delete_member(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        await self._patch(caller, obj, {"spec": {"members": glance.removed_member(obj, request.match_info["member"])}})
        return web.Response(status=204)

    async def not_found(self, request: web.Request) -> web.Response:
        raise GlanceError(404, "The resource could not be found.")


async def _read(request: web.Request, size: int, idle: float) -> bytes:
    """Up to `size` bytes of the body (less only at its end); UploadStalled after `idle` seconds without
    a byte (a client that stopped sending would hold its thread and its slot for ever)."""
    parts: list[bytes] = []
    have = 0
    while have < size:
        try:
            data = await asyncio.wait_for(request.content.read(size - have), idle)
        except TimeoutError:
            raise UploadStalled(f"the client sent nothing for {idle:g} seconds (KOVA_UPLOAD_READ_TIMEOUT)") from None
        if not data:
            break
        parts.append(data)
        have += len(data)
    return b"".join(parts)


@web.middleware
async def glance_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except StatusError as e:
        return _error(request, e.status, e.message, e.headers if isinstance(e, GlanceError) else None)


