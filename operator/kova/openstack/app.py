"""`kova api`: the OpenStack front door (Keystone v3 and Glance v2) over the Image objects.

Thin HTTP handlers: each reads the request, calls kova.openstack.glance / keystone (and the same status and
import functions the operator uses), and writes Glance's answer. Reads and writes of Images go to
kube-apiserver with the caller's own token (kova.adapters.kubeapi); only three things use the API's own
ServiceAccount: reading Images of *other* namespaces that Glance's visibility lets the caller see
(public, community, shared with its project), writing an Image's status after an upload or a member's
answer, and posting Events. The bytes go to and from the object store with the store's credentials,
after a SelfSubjectAccessReview of the virtual subresource `images/file`.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import hashlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

from aiohttp import web
from kubernetes.aio.client.exceptions import ApiException

from kova.adapters.informer import Body, Informer, object_key
from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.adapters.status import publish
from kova.api.conditions import Progress
from kova.api.models import IMAGE, VERSION, GlanceStatus, MemberStatus, Visibility
from kova.api.resources import IMAGES
from kova.image import importer
from kova.image.rules import observe_image
from kova.openstack import glance, keystone
from kova.openstack.glance import GlanceError

log = logging.getLogger("kova.api")

CHUNK = 1 << 20
AUTH_TTL = 30.0  # seconds a token's access to a project is remembered (one SelfSubjectAccessReview)
FORMAT_REASONS = {"InvalidDiskFormat", "UnsafeImage", "InvalidImage"}
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def _error(request: web.Request, status: int, message: str) -> web.Response:
    """Glance's error body, negotiated as WebOb does: JSON when asked for, plain text otherwise (glanceclient
    cannot parse WebOb's flat JSON, and never asks for it)."""
    reason = {400: "Bad Request", 401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 409: "Conflict",
              413: "Request Entity Too Large", 415: "Unsupported Media Type", 416: "Requested Range Not Satisfiable",
              503: "Service Unavailable"}.get(status, "Error")
    if "application/json" in request.headers.get("Accept", ""):
        return web.json_response({"message": message, "code": f"{status} {reason}", "title": reason}, status=status)
    return web.Response(status=status, text=f"{status} {reason}\n\n{message}\n\n   ")


class Api:
    def __init__(self, apiserver: Apiserver, rt: Runtime, public_url: str | None = None) -> None:
        self.apiserver, self.rt, self.public_url = apiserver, rt, public_url
        self.images = Informer(rt.kube, IMAGES, fields=("spec", "status"))
        self.by_uid: dict[str, tuple[str, ...]] = {}
        self.images.listeners.append(self._index)
        self._access: dict[tuple[str, str], tuple[float, bool]] = {}
        self._task: asyncio.Task[None] | None = None

    def _index(self, old: Body | None, new: Body | None) -> None:
        if old is not None:
            self.by_uid.pop(old["metadata"]["uid"], None)
        if new is not None:
            self.by_uid[new["metadata"]["uid"]] = object_key(new)

    async def start(self) -> None:
        self._task = asyncio.create_task(self.images.run())
        await self.images.synced.wait()
        for obj in self.images:
            self._index(None, obj)

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
        await self.apiserver.close()
        await self.rt.kube.close()

    def base(self, request: web.Request) -> str:
        return (self.public_url or f"{request.scheme}://{request.host}").rstrip("/")

    # ------------------------------------------------------------------------------------------ identity
    async def identity_versions(self, request: web.Request) -> web.Response:
        return web.json_response(keystone.versions(self.base(request)), status=300)

    async def identity_v3(self, request: web.Request) -> web.Response:
        return web.json_response({"version": keystone.version(self.base(request))})

    async def issue_token(self, request: web.Request) -> web.Response:
        try:
            cred = keystone.credential(await request.json())
        except (ValueError, keystone.AuthError) as e:
            return _keystone_error(401, str(e) or "The request you have made requires authentication.")
        return await self._token_answer(request, cred, status=201)

    async def validate_token(self, request: web.Request) -> web.Response:
        subject = request.headers.get("X-Subject-Token")
        if not request.headers.get("X-Auth-Token") or not subject:
            return _keystone_error(401, "The request you have made requires authentication.")
        cred = keystone.Credential(subject, None, ("token",))  # its project: a ServiceAccount token's own
        answer = await self._token_answer(request, cred, status=200)
        if request.method == "HEAD":
            return web.Response(status=answer.status, headers={"X-Subject-Token": subject})
        return answer

    async def _token_answer(self, request: web.Request, cred: keystone.Credential, status: int) -> web.Response:
        caller = self.apiserver.caller(cred.token)
        try:
            user = await caller.whoami()
            project = cred.project or keystone.token_namespace(cred.token)
            if not project:
                return _keystone_error(401, "say which project (namespace) the token is for: scope.project.name")
            roles = []
            if await caller.can("create", project):
                roles = ["member", "reader"]
            elif await caller.can("list", project):
                roles = ["reader"]
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        if not roles:
            return _keystone_error(401, f"the token may neither create nor list Images in namespace {project}")
        body = keystone.token_body(cred, user, project, roles, self.base(request), dt.datetime.now(dt.UTC))
        return web.json_response(body, status=status, headers={"X-Subject-Token": cred.token})

    async def projects(self, request: web.Request) -> web.Response:
        """Projects are namespaces. Clients look one up by name before sharing an image with it (`openstack
        image add project`); like Glance, Kova does not ask whether that project exists, and an authenticated
        caller learns nothing about the cluster's namespaces from the answer."""
        try:
            await self.apiserver.caller(request.headers.get("X-Auth-Token") or "").whoami()
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        name = request.match_info.get("id") or request.query.get("name")
        if name is None:
            return web.json_response({"projects": [], "links": {"self": None, "next": None, "previous": None}})
        if not glance.K8S_NAME.match(name):
            return _keystone_error(404, f"Could not find project: {name}.")
        project = keystone.project(name)
        if "id" in request.match_info:
            return web.json_response({"project": project})
        return web.json_response({"projects": [project], "links": {"self": None, "next": None, "previous": None}})

    # ------------------------------------------------------------------------------------------- callers
    async def caller(self, request: web.Request) -> tuple[Caller, str]:
        """The caller's token and project; 401 without a token that kube-apiserver takes, 403 when the
        token may not even list Images in the project's namespace."""
        token = request.headers.get("X-Auth-Token") or ""
        if not token:
            raise GlanceError(401, "This server could not verify that you are authorized to access the document "
                                   "you requested.")
        project = request.match_info["project"]
        key = (hashlib.sha256(token.encode()).hexdigest(), project)
        now = time.monotonic()
        known = self._access.get(key)
        caller = self.apiserver.caller(token)
        if known is None or known[0] < now:
            try:
                allowed = await caller.can("list", project)
            except ApiError as e:
                raise GlanceError(401 if e.status == 401 else 503, e.message) from e
            known = self._access[key] = (now + AUTH_TTL, allowed)
            if len(self._access) > 10_000:
                self._access = {k: v for k, v in self._access.items() if v[0] >= now}
        if not known[1]:
            raise GlanceError(403, f"You are not authorized to list images in project {project}.")
        return caller, project

    async def find(self, caller: Caller, project: str, image_id: str) -> dict[str, Any]:
        """The image with this id as the caller sees it: its own namespace's through its token, another
        namespace's only when Glance's visibility lets its project see it. 404 otherwise, as Glance."""
        missing = GlanceError(404, f"No image found with ID {image_id}")
        key = self.by_uid.get(image_id)
        if key is not None and key[0] != project:
            obj = self.images.get(key)
            if obj is None or obj["metadata"].get("deletionTimestamp") or not glance.visible(obj, project):
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

    async def own(self, caller: Caller, project: str, image_id: str) -> dict[str, Any]:
        obj = await self.find(caller, project, image_id)
        if obj["metadata"]["namespace"] != project:
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
        page, more = glance.select([*own, *others], project, query)
        params = [(k, v) for k, v in request.query.items() if k != "marker"]
        link = "/v2/images" + ("?" + "&".join(f"{k}={v}" for k, v in params) if params else "")
        body: dict[str, Any] = {"images": page, "first": link, "schema": "/v2/schemas/images"}
        if more and page:
            body["next"] = link + ("&" if params else "?") + f"marker={page[-1]['id']}"
        return web.json_response(body)

    async def show_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        return web.json_response(glance.image_doc(await self.find(caller, project, request.match_info["id"])))

    async def create_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        spec = glance.new_image(await _json(request), project)
        name, prefix = glance.kubernetes_name(spec.get("name"))
        manifest: dict[str, Any] = {"apiVersion": f"{IMAGE.group}/{VERSION}", "kind": "Image",
                                    "metadata": {"name": name} if name else {"generateName": prefix}, "spec": spec}
        try:
            try:
                obj = await caller.create_image(project, manifest)
            except ApiError as e:
                if e.status != 409 or not name:
                    raise
                manifest["metadata"] = {"generateName": prefix}  # Glance names need not be unique
                obj = await caller.create_image(project, manifest)
        except ApiError as e:
            raise GlanceError(400 if e.status == 422 else e.status, e.message) from e
        self._index(None, obj)
        self.images.offer(obj)  # read-your-writes: another project may ask for it before the watch says so
        doc = glance.image_doc(obj)
        return web.json_response(doc, status=201, headers={"Location": f"{self.base(request)}/projects/{project}/image"
                                                                       f"{doc['self']}"})

    async def update_image(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        if request.content_type not in glance.PATCH_TYPES:
            raise GlanceError(415, f"Image PATCH expects Content-Type one of: {', '.join(glance.PATCH_TYPES)}")
        obj = await self.own(caller, project, request.match_info["id"])
        patch = glance.apply_patch(obj, await _json(request), request.content_type)
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
        if (obj.get("spec") or {}).get("protected"):
            raise GlanceError(403, f"Image {obj['metadata']['uid']} is protected and cannot be deleted.")
        try:
            await caller.delete_image(project, obj["metadata"]["name"], obj["metadata"]["uid"])
        except ApiError as e:
            raise GlanceError(404 if e.status in (404, 409) else e.status, e.message) from e
        return web.Response(status=204)

    async def put_tag(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        tag = request.match_info["tag"]
        if len(tag) > 255:
            raise GlanceError(400, "Image tag exceeds the maximum length of 255 characters")
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
        action = request.match_info["action"]
        if action not in ("deactivate", "reactivate"):
            raise GlanceError(404, "The resource could not be found.")
        status = glance.glance_status(obj)
        if status not in (GlanceStatus.active.value, GlanceStatus.deactivated.value):
            raise GlanceError(403, f"Not allowed to {action} image in status '{status}'")
        await self._patch(caller, obj, {"spec": {"deactivated": action == "deactivate"}})
        return web.Response(status=204)

    # --------------------------------------------------------------------------------------------- data
    async def upload(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        if not await caller.can("update", project, subresource="file"):
            raise GlanceError(403, "You are not authorized to upload image data (images/file, update).")
        if request.headers.get("Content-Type") != "application/octet-stream":
            raise GlanceError(415, f"Invalid content type {request.headers.get('Content-Type')}")
        spec, status = obj.get("spec") or {}, glance.glance_status(obj)
        if "upload" not in (spec.get("source") or {}):
            raise GlanceError(409, "This image's data comes from its source URL (web-download), not an upload.")
        if status != GlanceStatus.queued.value:
            raise GlanceError(409, f"Image status transition from {status} to saving is not allowed")
        if not spec.get("diskFormat") or not spec.get("containerFormat"):
            raise GlanceError(400, "Properties disk_format, container_format must be set prior to saving data.")
        size_header = request.headers.get("x-openstack-image-size") or request.headers.get("Content-Length")
        if size_header is not None and not size_header.isdigit():
            raise GlanceError(400, f"Invalid image size {size_header}")
        await self._claim(obj)
        uid = obj["metadata"]["uid"]
        loop = asyncio.get_running_loop()

        def chunks() -> Iterator[bytes]:  # read on the event loop, one MiB at a time, for the import thread
            while data := asyncio.run_coroutine_threadsafe(_read(request, CHUNK), loop).result():
                yield data
        source = f"upload to /v2/images/{uid}/file"
        try:
            blob = await asyncio.to_thread(
                importer.import_chunks, self.rt.store, uid, chunks(), spec["diskFormat"], source=source,
                size=int(size_header) if size_header else None, size_cap=self.rt.settings.size_cap)
        except importer.ImportFailed as e:
            await self._requeue(obj, f"the last upload was refused: {e}")
            code = 413 if e.reason == "SizeExceeded" else 415 if e.reason in FORMAT_REASONS else 400
            if code == 415:
                raise GlanceError(415, f"Image disk_format {spec['diskFormat']} does not match the data: {e}") from e
            raise GlanceError(code, str(e)) from e
        except Exception as e:  # the store or the connection failed: the image waits for a new upload
            log.warning("upload of %s failed: %r", uid, e)
            await self._requeue(obj, f"the last upload did not complete: {e}")
            raise GlanceError(503, f"The upload did not complete: {e}") from e
        view = observe_image(blob, self.rt.store.location(uid), {}, importing=False, done=blob.size,
                             total=blob.size, passing_error=None, deactivated=bool(spec.get("deactivated")))
        await publish(self.rt, IMAGES, await self._fresh(obj), word=view.status.value, progress=view.progress,
                      reason=view.reason, message=view.message, fields=view.fields)
        return web.Response(status=204)

    async def _claim(self, obj: dict[str, Any]) -> None:
        """queued → saving, conditional on the resourceVersion read: of two uploads at once, one gets 409. The
        operator may have written the Image meanwhile (its finalizer, its status): read it again and retry."""
        for _ in range(5):
            status = glance.glance_status(obj)
            if status != GlanceStatus.queued.value:
                raise GlanceError(409, f"Image status transition from {status} to saving is not allowed")
            try:
                await publish(self.rt, IMAGES, obj, word=GlanceStatus.saving.value, progress=Progress.RECONCILING,
                              reason="Saving", message="receiving the data through the image API",
                              precondition=True)
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
        status, st = glance.glance_status(obj), obj.get("status") or {}
        if status == GlanceStatus.deactivated.value:
            raise GlanceError(403, "The requested image has been deactivated. Image data download is forbidden.")
        if status != GlanceStatus.active.value or not st.get("size"):
            return web.Response(status=204)
        size = int(st["size"])
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

    # ------------------------------------------------------------------------------------------ members
    async def members(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        if (obj.get("spec") or {}).get("visibility") != Visibility.shared.value:
            raise GlanceError(403, f"Not allowed to list members for image {obj['metadata']['uid']}: Only shared "
                                   "images have members.")
        docs = glance.members(obj)
        if obj["metadata"]["namespace"] != project:
            docs = [d for d in docs if d["member_id"] == project]
        return web.json_response({"members": docs, "schema": "/v2/schemas/members"})

    async def add_member(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        body = await _json(request)
        member = body.get("member") if isinstance(body, dict) else None
        if member is None:
            raise GlanceError(400, "Member to be added not specified")
        if not member:
            raise GlanceError(400, "Member can't be empty")
        spec = obj.get("spec") or {}
        if spec.get("visibility") != Visibility.shared.value:
            raise GlanceError(403, f"Not allowed to create members for image {obj['metadata']['uid']}.")
        current = list(spec.get("members") or [])
        if member in current:
            raise GlanceError(409, f"Member {member} is duplicated for image {obj['metadata']['uid']}")
        obj = await self._patch(caller, obj, {"spec": {"members": [*current, member]}})
        return web.json_response(next(d for d in glance.members(obj) if d["member_id"] == member))

    async def show_member(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        member = request.match_info["member"]
        found = [d for d in glance.members(obj) if d["member_id"] == member
                 and (obj["metadata"]["namespace"] == project or member == project)]
        if not found:
            raise GlanceError(404, f"Member {member} not found for image {obj['metadata']['uid']}")
        return web.json_response(found[0])

    async def answer_member(self, request: web.Request) -> web.Response:
        """A member project accepts or rejects a share. Only the member may answer (Glance's policy), and
        its answer is written into the owner's Image status with the API's own account."""
        caller, project = await self.caller(request)
        obj = await self.find(caller, project, request.match_info["id"])
        member = request.match_info["member"]
        if member not in ((obj.get("spec") or {}).get("members") or []):
            raise GlanceError(404, f"Member {member} not found for image {obj['metadata']['uid']}")
        if member != project:
            raise GlanceError(403, f"Not allowed to update members for image {obj['metadata']['uid']}.")
        body = await _json(request)
        status = body.get("status") if isinstance(body, dict) else None
        if status is None:
            raise GlanceError(400, "Status not specified")
        if status not in {m.value for m in MemberStatus}:
            raise GlanceError(400, 'Incorrect request: Status must be "pending", "accepted" or "rejected".')
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        answers = [m for m in (obj.get("status") or {}).get("members") or () if m.get("member") != member]
        previous: dict[str, Any] = next(
            (m for m in (obj.get("status") or {}).get("members") or () if m.get("member") == member), {})
        mine = {"member": member, "status": status, "createdAt": previous.get("createdAt") or now, "updatedAt": now}
        md = obj["metadata"]
        fresh = await self.rt.kube.patch_status(IMAGES, md["name"], md["namespace"],
                                                {"members": [*answers, mine]})
        if fresh is None:
            raise GlanceError(404, f"No image found with ID {md['uid']}")
        self.images.offer(fresh)
        return web.json_response(next(d for d in glance.members(fresh) if d["member_id"] == member))

    async def delete_member(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.own(caller, project, request.match_info["id"])
        member = request.match_info["member"]
        current = list((obj.get("spec") or {}).get("members") or [])
        if member not in current:
            raise GlanceError(404, f"Member {member} not found for image {obj['metadata']['uid']}")
        await self._patch(caller, obj, {"spec": {"members": [m for m in current if m != member]}})
        return web.Response(status=204)

    async def not_found(self, request: web.Request) -> web.Response:
        raise GlanceError(404, "The resource could not be found.")


async def _read(request: web.Request, size: int) -> bytes:
    """Up to `size` bytes of the body (less only at its end)."""
    parts: list[bytes] = []
    have = 0
    while have < size:
        data = await request.content.read(size - have)
        if not data:
            break
        parts.append(data)
        have += len(data)
    return b"".join(parts)


async def _json(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except ValueError as e:
        raise GlanceError(400, f"Malformed JSON in request body: {e}") from e


def _keystone_error(status: int, message: str) -> web.Response:
    title = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}.get(status, "Error")
    return web.json_response({"error": {"code": status, "message": message, "title": title}}, status=status)


@web.middleware
async def glance_errors(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except GlanceError as e:
        return _error(request, e.status, e.message)


def application(api: Api) -> web.Application:
    app = web.Application(middlewares=[glance_errors], client_max_size=1 << 20)
    r = app.router
    r.add_get("/identity", api.identity_versions)
    r.add_get("/identity/", api.identity_versions)
    r.add_get("/identity/v3", api.identity_v3)
    r.add_get("/identity/v3/", api.identity_v3)
    r.add_post("/identity/v3/auth/tokens", api.issue_token)
    r.add_get("/identity/v3/auth/tokens", api.validate_token, allow_head=True)
    r.add_get("/identity/v3/projects", api.projects)
    r.add_get("/identity/v3/projects/{id}", api.projects)
    # Not ending in the project id: keystoneauth would take that for a Nova-style /v2.1/{project_id}
    # endpoint and put the id back after the version.
    p = "/projects/{project}/image"
    r.add_get(p, api.image_versions)
    r.add_get(p + "/", api.image_versions)
    r.add_get(p + "/versions", api.image_versions)
    r.add_get(p + "/v2/schemas/{name}", api.schema)
    r.add_get(p + "/v2/images", api.list_images)
    r.add_post(p + "/v2/images", api.create_image)
    r.add_route("*", p + "/v2/images/", api.not_found)
    r.add_get(p + "/v2/images/{id}", api.show_image)
    r.add_patch(p + "/v2/images/{id}", api.update_image)
    r.add_delete(p + "/v2/images/{id}", api.delete_image)
    r.add_put(p + "/v2/images/{id}/file", api.upload)
    r.add_get(p + "/v2/images/{id}/file", api.download)
    r.add_put(p + "/v2/images/{id}/tags/{tag}", api.put_tag)
    r.add_delete(p + "/v2/images/{id}/tags/{tag}", api.delete_tag)
    r.add_post(p + "/v2/images/{id}/actions/{action}", api.action)
    r.add_get(p + "/v2/images/{id}/members", api.members)
    r.add_post(p + "/v2/images/{id}/members", api.add_member)
    r.add_get(p + "/v2/images/{id}/members/{member}", api.show_member)
    r.add_put(p + "/v2/images/{id}/members/{member}", api.answer_member)
    r.add_delete(p + "/v2/images/{id}/members/{member}", api.delete_member)
    r.add_route("*", p + "/v2/info/{what}", api.not_found)  # no import methods, stores or usage to tell

    async def on_startup(_: web.Application) -> None:
        await api.start()

    async def on_cleanup(_: web.Application) -> None:
        await api.stop()
    app.on_startup.append(on_startup)
    app.on_cleanup.append(on_cleanup)
    return app


async def make(public_url: str | None = None, kubeconfig: str | None = None) -> web.Application:
    """The application with its clients: the caller-token pool, and the API's own account and store."""
    from kova.adapters.kube import Kube
    from kova.adapters.kubeapi import Cluster
    from kova.adapters.runtime import Settings
    from kova.adapters.store import ObjectStore

    settings = Settings.from_env()
    kube = await Kube.connect(kubeconfig)
    rt = Runtime(settings=settings, kube=kube, store=ObjectStore(settings.store))
    return application(Api(Apiserver(Cluster.of(kube.api_client.configuration)), rt, public_url))
