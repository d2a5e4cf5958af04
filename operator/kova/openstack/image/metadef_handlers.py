"""Glance's metadata definitions API (/v2/metadefs) over MetadefNamespace objects.

Reads come from the API's own watch of the cluster-scoped kind (a tenant's token cannot list a cluster-scoped
kind, and everyone may read a public namespace), filtered by Glance's visibility rule; writes go to
kube-apiserver with the caller's own token, so RBAC decides who writes (the kova-admin role), and each is a
PUT of the whole object at the resourceVersion it was computed from, retried when another write came first.
The documents and rules are kova.openstack.image.metadefs'. Kova loads Glance's catalog at start-up
(`load_catalog`): the namespaces missing, once per catalog version.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from aiohttp import web
from kubernetes.aio.client.exceptions import ApiException

from kova.adapters.informer import Informer
from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.api import clock
from kova.api.models import GROUP_IMAGE, METADEF_NAMESPACE
from kova.api.resources import METADEF_NAMESPACES
from kova.openstack.front import Front, read_json
from kova.openstack.image import metadefs
from kova.openstack.image.glance import GlanceError

log = logging.getLogger("kova.api")

UPDATED = f"{GROUP_IMAGE}/updated-at"  # annotation: when the API last wrote the namespace (Glance's updated_at)
CATALOG_LOADED = f"{GROUP_IMAGE}/catalog-loaded"  # on OS::Kova::KubeVirt: the catalog version loaded
WRITE_ATTEMPTS = 5
Mutation = Callable[[dict[str, Any]], dict[str, Any]]


def _now() -> str:
    return clock.now().strftime("%Y-%m-%dT%H:%M:%SZ")


def _refused(e: ApiError, what: str) -> GlanceError:
    if e.status == 403:
        return GlanceError(403, f"You are not authorized to complete {what} action. (RBAC: {e.message})")
    return GlanceError(400 if e.status == 422 else e.status, e.message)


class MetadefHandlers(Front):
    def __init__(self, apiserver: Apiserver, rt: Runtime, public_url: str | None = None) -> None:
        super().__init__(apiserver, rt, public_url)
        self.namespaces = Informer(rt.kube, METADEF_NAMESPACES, fields=("spec",))
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        self._task = asyncio.create_task(self.namespaces.run())
        await self.namespaces.synced.wait()

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()

    # ------------------------------------------------------------------------------------- lookups
    def _by_name(self, name: str) -> dict[str, Any] | None:
        return next((o for o in self.namespaces if o["spec"].get("namespace") == name), None)

    async def _visible(self, request: web.Request) -> tuple[Caller, str, bool, dict[str, Any]]:
        """The caller, its project, whether it is an administrator, and the namespace the path names: 404
        when it does not exist or the caller may not see it, as Glance answers."""
        caller, project = await self.caller(request)
        name = request.match_info["namespace"]
        obj = self._by_name(name)
        admin = await self.is_admin(caller)
        if obj is None or not metadefs.visible(obj["spec"], project, admin):
            raise GlanceError(404, f"Metadata definition namespace={name} was not found.")
        return caller, project, admin, obj

    @staticmethod
    def _doc(obj: dict[str, Any]) -> dict[str, Any]:
        updated = (obj["metadata"].get("annotations") or {}).get(UPDATED)
        return {**obj, "metadata": {**obj["metadata"], "managedFields": [{"time": updated}] if updated else []}}

    # ------------------------------------------------------------------------------------- writes
    async def _write(self, caller: Caller, obj: dict[str, Any], mutate: Mutation, what: str) -> dict[str, Any]:
        """`mutate`'s spec written with the caller's token, at the resourceVersion it was computed from; on a
        conflict, read again (as the caller) and compute again."""
        for _ in range(WRITE_ATTEMPTS):
            spec = mutate(dict(obj["spec"]))
            md = obj["metadata"]
            body = {"apiVersion": METADEF_NAMESPACES.api_version, "kind": METADEF_NAMESPACE.kind,
                    "metadata": {"name": md["name"], "uid": md["uid"], "resourceVersion": md["resourceVersion"],
                                 "labels": md.get("labels") or {},
                                 "annotations": {**(md.get("annotations") or {}), UPDATED: _now()}},
                    "spec": spec}
            try:
                written = await caller.replace(GROUP_IMAGE, METADEF_NAMESPACE.plural, "", body)
            except ApiError as e:
                if e.status != 409:
                    raise _refused(e, what) from e
                fresh = await caller.get(GROUP_IMAGE, METADEF_NAMESPACE.plural, "", md["name"])
                if fresh is None or fresh["metadata"]["uid"] != md["uid"]:
                    raise GlanceError(404, f"Metadata definition namespace={obj['spec']['namespace']} was not "
                                           "found.") from e
                obj = fresh
                continue
            self.namespaces.offer(written)
            return written
        raise GlanceError(409, "The namespace kept changing while this request was written; try again.")

    # ------------------------------------------------------------------------------------- namespaces
    async def list_namespaces(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        admin = await self.is_admin(caller)
        objs = [self._doc(o) for o in self.namespaces]
        return web.json_response(metadefs.select_namespaces(objs, project, admin, list(request.query.items())))

    async def create_namespace(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        spec = metadefs.new_namespace(await read_json(request), project, _now())
        if self._by_name(spec["namespace"]) is not None:
            raise GlanceError(409, f"The metadata definition namespace={spec['namespace']} already exists.")
        body = {"apiVersion": METADEF_NAMESPACES.api_version, "kind": METADEF_NAMESPACE.kind,
                "metadata": {"name": metadefs.object_name(spec["namespace"]), "annotations": {UPDATED: _now()}},
                "spec": spec}
        try:
            obj = await caller.create(GROUP_IMAGE, METADEF_NAMESPACE.plural, "", body)
        except ApiError as e:
            if e.status == 409:
                raise GlanceError(409, f"The metadata definition namespace={spec['namespace']} already exists.") \
                    from e
            raise _refused(e, "add_metadef_namespace") from e
        self.namespaces.offer(obj)
        doc = metadefs.namespace_doc(self._doc(obj), detail=True)
        return web.json_response(doc, status=201, headers={"Location": doc["self"]})

    async def show_namespace(self, request: web.Request) -> web.Response:
        _, _, _, obj = await self._visible(request)
        return web.json_response(metadefs.namespace_doc(self._doc(obj), detail=True,
                                                        resource_type=request.query.get("resource_type")))

    async def update_namespace(self, request: web.Request) -> web.Response:
        caller, project, _, obj = await self._visible(request)
        body = await read_json(request)
        new = metadefs.update_namespace(obj["spec"], body, project)
        other = self._by_name(new["namespace"])
        if other is not None and other["metadata"]["uid"] != obj["metadata"]["uid"]:
            raise GlanceError(409, f"The metadata definition namespace={new['namespace']} already exists.")
        written = await self._write(caller, obj, lambda spec: metadefs.update_namespace(spec, body, project),
                                    "modify_metadef_namespace")
        return web.json_response(metadefs.namespace_doc(self._doc(written)))

    async def delete_namespace(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        spec = obj["spec"]
        if spec.get("protected"):
            raise GlanceError(403, f"Metadata definition namespace {spec['namespace']} is protected and cannot "
                                   "be deleted.")
        try:
            await caller.delete(GROUP_IMAGE, METADEF_NAMESPACE.plural, "", obj["metadata"]["name"],
                                obj["metadata"]["uid"])
        except ApiError as e:
            if e.status == 404:
                raise GlanceError(404, f"Metadata definition namespace={spec['namespace']} was not found.") from e
            raise _refused(e, "delete_metadef_namespace") from e
        self.namespaces.forget(obj)
        return web.Response(status=204)

    # ------------------------------------------------------------------------------------- objects
    async def objects(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        ns = obj["spec"]["namespace"]
        if request.method == "GET":
            return web.json_response({"objects": [metadefs.object_doc(ns, o) for o in obj["spec"].get("objects") or ()],
                                      "schema": "v2/schemas/metadefs/objects"})
        if request.method == "DELETE":
            await self._write(caller, obj, lambda s: metadefs.remove_all(s, "objects", "objects"),
                              "delete_metadef_objects")
            return web.Response(status=204)
        item = metadefs.new_object(await read_json(request), _now())
        await self._write(caller, obj, lambda s: metadefs.add_item(s, "objects", item, "object"),
                          "add_metadef_object")
        return web.json_response(metadefs.object_doc(ns, item), status=201)

    async def object(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        ns, name = obj["spec"]["namespace"], request.match_info["name"]
        if request.method == "GET":
            return web.json_response(metadefs.object_doc(ns, metadefs.get_item(obj["spec"], "objects", name,
                                                                                "object")))
        if request.method == "DELETE":
            await self._write(caller, obj, lambda s: metadefs.remove_item(s, "objects", name, "object"),
                              "delete_metadef_object")
            return web.Response(status=204)
        item = metadefs.new_object(await read_json(request), _now())
        written = await self._write(caller, obj, lambda s: metadefs.replace_item(s, "objects", name, item, "object"),
                                    "modify_metadef_object")
        return web.json_response(metadefs.object_doc(ns, metadefs.get_item(written["spec"], "objects", item["name"],
                                                                            "object")))

    # ------------------------------------------------------------------------------------- properties
    async def properties(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        if request.method == "GET":
            return web.json_response({"properties": dict(obj["spec"].get("properties") or {})})
        if request.method == "DELETE":
            await self._write(caller, obj, lambda s: metadefs.remove_all(s, "properties", "properties"),
                              "remove_metadef_properties")
            return web.Response(status=204)
        name, definition = metadefs.new_property(await read_json(request))
        await self._write(caller, obj, lambda s: metadefs.put_property(s, None, name, definition),
                          "add_metadef_property")
        return web.json_response(metadefs.property_doc(name, definition), status=201)

    async def property(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        old = request.match_info["name"]
        if request.method == "GET":
            return web.json_response(metadefs.get_property(obj["spec"], old))
        if request.method == "DELETE":
            await self._write(caller, obj, lambda s: metadefs.delete_property(s, old), "remove_metadef_property")
            return web.Response(status=204)
        name, definition = metadefs.new_property(await read_json(request))
        await self._write(caller, obj, lambda s: metadefs.put_property(s, old, name, definition),
                          "modify_metadef_property")
        return web.json_response(metadefs.property_doc(name, definition))

    # ------------------------------------------------------------------------------------- tags
    async def tags(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        if request.method == "GET":
            return web.json_response({"tags": [metadefs.tag_doc(t) for t in obj["spec"].get("tags") or ()]})
        if request.method == "DELETE":
            await self._write(caller, obj, lambda s: metadefs.remove_all(s, "tags", "tags"), "delete_metadef_tags")
            return web.Response(status=204)
        body = await read_json(request)
        raw = body.get("tags") if isinstance(body, dict) else None
        if not isinstance(raw, list):
            raise GlanceError(400, "The request body needs 'tags': a list of {\"name\": ...}.")
        now = _now()
        new = [metadefs.new_tag(t.get("name") if isinstance(t, dict) else None, now) for t in raw]
        append = request.headers.get("X-Openstack-Append", "").lower() == "true"

        def put(spec: dict[str, Any]) -> dict[str, Any]:
            spec = spec if append else {**spec, "tags": []}  # Glance replaces every tag unless told to append
            for tag in new:
                spec = metadefs.add_item(spec, "tags", tag, "tag")
            return spec
        await self._write(caller, obj, put, "add_metadef_tags")
        return web.json_response({"tags": [metadefs.tag_doc(t) for t in new]}, status=201)

    async def tag(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        name = request.match_info["name"]
        if request.method == "GET":
            return web.json_response(metadefs.tag_doc(metadefs.get_item(obj["spec"], "tags", name, "tag")))
        if request.method == "DELETE":
            await self._write(caller, obj, lambda s: metadefs.remove_item(s, "tags", name, "tag"),
                              "delete_metadef_tag")
            return web.Response(status=204)
        if request.method == "POST":
            item = metadefs.new_tag(name, _now())
            await self._write(caller, obj, lambda s: metadefs.add_item(s, "tags", item, "tag"), "add_metadef_tag")
            return web.json_response(metadefs.tag_doc(item), status=201)
        body = await read_json(request)
        item = metadefs.new_tag(body.get("name") if isinstance(body, dict) else None, _now())
        written = await self._write(caller, obj, lambda s: metadefs.replace_item(s, "tags", name, item, "tag"),
                                    "modify_metadef_tag")
        return web.json_response(metadefs.tag_doc(metadefs.get_item(written["spec"], "tags", item["name"], "tag")))

    # ------------------------------------------------------------------------------------- resource types
    async def resource_types(self, request: web.Request) -> web.Response:
        await self.caller(request)
        return web.json_response(metadefs.resource_types(self.namespaces))

    async def associations(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        if request.method == "GET":
            return web.json_response({"resource_type_associations": [
                metadefs.association_doc(a) for a in obj["spec"].get("resourceTypeAssociations") or ()]})
        item = metadefs.new_association(await read_json(request), _now())
        await self._write(caller, obj, lambda s: metadefs.add_item(s, "resourceTypeAssociations", item,
                                                                   "resource type association"),
                          "add_metadef_resource_type_association")
        return web.json_response(metadefs.association_doc(item), status=201)

    async def association(self, request: web.Request) -> web.Response:
        caller, _, _, obj = await self._visible(request)
        name = request.match_info["name"]
        await self._write(caller, obj, lambda s: metadefs.remove_item(s, "resourceTypeAssociations", name,
                                                                      "resource type association"),
                          "remove_metadef_resource_type_association")
        return web.Response(status=204)

    async def schema(self, request: web.Request) -> web.Response:
        found = metadefs.schema(request.match_info["name"])
        if found is None:
            raise GlanceError(404, "The resource could not be found.")
        return web.json_response(found)

    # ------------------------------------------------------------------------------------- catalog
    async def load_catalog(self) -> int:
        """Glance's catalog and OS::Kova::KubeVirt, as `glance-manage db load_metadefs`: each namespace missing
        is created with the API's own account. OS::Kova::KubeVirt comes last and says which catalog was loaded
        (CATALOG_LOADED): once it says this one, nothing is loaded again, so a namespace an administrator
        deleted stays deleted; an interrupted load finishes at the next start. Returns how many were created."""
        now = _now()
        version = f"glance-{metadefs.glance_version()}"
        marker = self._by_name(metadefs.kova_namespace()["namespace"])
        if marker is not None and (marker["metadata"].get("annotations") or {}).get(CATALOG_LOADED) == version:
            return 0
        created = 0
        for spec in metadefs.catalog(now):
            if self._by_name(spec["namespace"]) is not None:
                continue
            annotations = {UPDATED: now, **({CATALOG_LOADED: version} if spec["catalog"] == metadefs.KOVA_CATALOG
                                            else {})}
            body = {"apiVersion": METADEF_NAMESPACES.api_version, "kind": METADEF_NAMESPACE.kind,
                    "metadata": {"name": metadefs.object_name(spec["namespace"]), "annotations": annotations},
                    "spec": spec}
            try:
                obj = await self.rt.kube.create(METADEF_NAMESPACES, body)
            except ApiException as e:  # no right to (a chart without it): the API serves what there is
                log.warning("metadefs: could not load %s: %s %s", spec["namespace"], e.status, e.reason)
                return created
            if obj is not None:  # None: another replica made it a moment ago
                self.namespaces.offer(obj)
                created += 1
        return created
