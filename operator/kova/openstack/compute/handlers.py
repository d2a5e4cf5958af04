"""Nova's compute API handlers over the Instance, Flavor, KeyPair, ServerGroup, SecurityGroup, AvailabilityZone
and Quota objects. Each reads the request, asks kova.openstack.compute.nova what Nova would answer (and
kova.compute what Kova allows: the same rules the operator applies), and carries it out. Every read and write
of a namespace's objects goes to kube-apiserver with the caller's own token; the API's own account only
watches what a tenant cannot list itself (cluster-scoped Flavors and AvailabilityZones, and the Instances'
uids, to find one by id)."""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import secrets
import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Protocol

from aiohttp import web

from kova.adapters.informer import Body, Informer
from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.api import clock
from kova.api.errors import StatusError
from kova.api.models import (
    GROUP_COMPUTE,
    GROUP_IMAGE,
    QUOTA_NAME,
    VERSION,
    FlavorSpec,
    GlanceStatus,
    effective_limits,
)
from kova.api.resources import AVAILABILITY_ZONES, FLAVORS, INSTANCES, object_names
from kova.compute import actions, lifecycle, quota
from kova.compute.access import fingerprint, generate, generate_x509
from kova.compute.flavors import flavor_usable_in
from kova.openstack.compute import microversion, nova
from kova.openstack.compute.console_proxy import ConsoleProxy
from kova.openstack.compute.microversion import Version
from kova.openstack.compute.nova import NovaError, Related
from kova.openstack.front import Front, UidIndex, read_json

log = logging.getLogger("kova.api")
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
NAD_GROUP = "k8s.cni.cncf.io"


class Images(Protocol):
    """What the compute API needs of the image API (one OpenStack service does not import another)."""

    async def find(self, caller: Caller, project: str, image_id: str) -> dict[str, Any]: ...

    def by_key(self, key: tuple[str, ...]) -> dict[str, Any] | None: ...


def version_of(request: web.Request) -> Version:
    return request.get("nova_version", microversion.MIN)  # type: ignore[no-any-return]


def _nova(e: ApiError, what: str = "") -> NovaError:
    """kube-apiserver's refusal of the caller's write, as Nova says it."""
    if e.status == 403 and "exceeded quota" in e.message:
        return NovaError(403, f"Quota exceeded{' for ' + what if what else ''}: {e.message}")
    if e.status in (400, 422):
        return NovaError(400, e.message)
    if e.status == 403:
        return NovaError(403, f"Policy doesn't allow this to be performed: {e.message}")
    return NovaError(e.status if e.status in (401, 404, 409) else 503, e.message)


class ComputeHandlers(Front):
    def __init__(self, apiserver: Apiserver, rt: Runtime, images: Images, public_url: str | None = None) -> None:
        super().__init__(apiserver, rt, public_url)
        self.images = images
        self.flavors = Informer(rt.kube, FLAVORS, fields=("spec",))
        self.zones = Informer(rt.kube, AVAILABILITY_ZONES, fields=("status",))
        self.instances = Informer(rt.kube, INSTANCES, fields=())  # metadata only: uid → name
        self.by_uid = UidIndex()
        self.instances.listeners.append(self.by_uid.update_from)
        self._tasks: list[asyncio.Task[None]] = []
        self.console: ConsoleProxy | None = None  # when kova api serves remote consoles

    async def start(self) -> None:
        for informer in (self.flavors, self.zones, self.instances):
            self._tasks.append(asyncio.create_task(informer.run()))
        for informer in (self.flavors, self.zones, self.instances):
            await informer.synced.wait()
        for obj in self.instances:
            self.by_uid.update_from(None, obj)

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()

    def root(self, request: web.Request) -> str:
        return f"{self.base(request)}/projects/{request.match_info['project']}/compute"

    # ------------------------------------------------------------------------------------------- versions
    async def versions(self, request: web.Request) -> web.Response:
        return web.json_response(nova.versions(self.root(request)))

    async def version(self, request: web.Request) -> web.Response:
        which = "v2.0" if request.path.rstrip("/").endswith("/v2") else "v2.1"
        return web.json_response(nova.version(self.root(request), which))

    async def extensions(self, request: web.Request) -> web.Response:
        await self.caller(request)
        return web.json_response({"extensions": []})

    # ------------------------------------------------------------------------------------------- lookups
    async def _objects(self, caller: Caller, plural: str, project: str) -> list[Body]:
        """The project's objects of one compute kind, read with the caller's token; refusals as Nova's."""
        try:
            return await caller.objects(GROUP_COMPUTE, plural, project)
        except ApiError as e:
            raise _nova(e) from e

    async def _instances(self, caller: Caller, project: str) -> list[Body]:
        return await self._objects(caller, INSTANCES.plural, project)

    async def server(self, caller: Caller, project: str, server_id: str) -> Body:
        """The Instance with this id in the caller's project, read with its token; 404 otherwise."""
        missing = NovaError(404, f"Instance {server_id} could not be found.")
        key = self.by_uid.get(server_id)
        try:
            if key is not None:
                if key[0] != project:
                    raise missing
                obj = await caller.get(GROUP_COMPUTE, INSTANCES.plural, project, key[1])
            else:  # created a moment ago, before the watch told this process
                obj = next((o for o in await caller.objects(GROUP_COMPUTE, INSTANCES.plural, project)
                            if o["metadata"]["uid"] == server_id), None)
        except ApiError as e:
            raise _nova(e) from e
        if obj is None or obj["metadata"]["uid"] != server_id:
            raise missing
        return obj

    def image_key(self, obj: Body) -> tuple[str, str]:
        spec = obj.get("spec") or {}
        ref = str(spec.get("imageRef") or "")
        owner, _, name = ref.rpartition("/")
        return owner or obj["metadata"]["namespace"], name

    def related(self, obj: Body, groups: dict[str, str] | None = None) -> Related:
        image = self.images.by_key(self.image_key(obj))
        spec = obj.get("spec") or {}
        flavor = self.flavors.get((str(spec.get("flavorRef") or ""),))
        group = spec.get("serverGroup")
        return Related(
            image_id=image["metadata"]["uid"] if image else None,
            image_properties=dict((image.get("spec") or {}).get("properties") or {}) if image else {},
            flavor=FlavorSpec.model_validate(flavor["spec"]) if flavor and flavor.get("spec") else None,
            groups=[groups[group]] if groups and group in groups else [])

    async def group_uids(self, caller: Caller, project: str) -> dict[str, str]:
        try:
            return {g["metadata"]["name"]: g["metadata"]["uid"]
                    for g in await caller.objects(GROUP_COMPUTE, "servergroups", project)}
        except ApiError:
            return {}

    # ------------------------------------------------------------------------------------------- servers
    async def list_servers(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        detail = request.path.rstrip("/").endswith("/detail")
        params = list(request.query.items())
        query = nova.parse_server_query(params, v)
        objs = sorted(await self._instances(caller, project),
                      key=lambda o: (o["metadata"]["creationTimestamp"], o["metadata"]["uid"]), reverse=True)
        groups = await self.group_uids(caller, project) if detail and v.at_least("2.100") else None
        base = self.root(request)
        chosen = []
        for obj in objs:
            rel = self.related(obj, groups)
            if nova.server_matches(obj, query.filters, rel):
                chosen.append((obj, rel))
        docs = [nova.server_view(o, v, base, r, "detail") if detail else nova.server_brief(o, base)
                for o, r in chosen]
        page, more = nova.page(docs, query)
        body: dict[str, Any] = {"servers": page}
        if more:
            url = f"{base}/v2.1/servers" + ("/detail" if detail else "")
            body["servers_links"] = nova.next_link(url, params, page[-1]["id"])
        return web.json_response(body)

    async def show_server(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        obj = await self.server(caller, project, request.match_info["id"])
        groups = await self.group_uids(caller, project) if v.at_least("2.71") else None
        return web.json_response({"server": nova.server_view(obj, v, self.root(request),
                                                             self.related(obj, groups))})

    async def create_server(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        new = nova.parse_create(await read_json(request), v)
        spec = dict(new.spec)
        image: dict[str, Any] | None = None
        if new.boot_volume is None:
            # The image: visible to the project (Glance's rules), active.
            try:
                image = await self.images.find(caller, project, new.image_id)
            except StatusError as e:
                if e.status in (401, 403, 503):
                    raise NovaError(e.status, e.message) from e
                raise NovaError(400, f"Can not find requested image {new.image_id}") from e
            word = str((image.get("status") or {}).get("status") or "")
            if word != GlanceStatus.active.value or (image.get("spec") or {}).get("deactivated"):
                raise NovaError(400, f"Image {new.image_id} is not active.")
            owner, name = image["metadata"]["namespace"], image["metadata"]["name"]
            spec["imageRef"] = name if owner == project else f"{owner}/{name}"
        else:
            del spec["imageRef"]
        await self._block_devices(caller, project, new, spec)
        # The flavor: Nova's flavor ids are Kova's Flavor names.
        flavor = self.flavors.get((new.flavor_id,))
        if flavor is None or not flavor_usable_in(FlavorSpec.model_validate(flavor.get("spec") or {}), project):
            raise NovaError(400, f"Flavor {new.flavor_id} could not be found.")
        spec["flavorRef"] = new.flavor_id
        annotations: dict[str, str] = {}
        if spec.get("keyName"):
            keypair = await self._find_keypair(caller, project, spec["keyName"])
            if keypair is None:
                raise NovaError(400, "Invalid key_name provided.")
            annotations[nova.KEY_NAME] = spec["keyName"]
            spec["keyName"] = keypair["metadata"]["name"]
        refusal = lifecycle.boot_refusal(FlavorSpec.model_validate(flavor.get("spec") or {}),
                                         _image_info(image)) if image is not None else None
        if refusal is not None:
            raise NovaError(400, f"Flavor's {'memory' if 'RAM' in refusal else 'disk'} is too small for requested "
                                 f"image: {refusal}.")
        if new.group_id:
            groups = {uid: n for n, uid in (await self.group_uids(caller, project)).items()}
            if new.group_id not in groups:
                raise NovaError(400, f"Invalid input: server group {new.group_id} not found")
            spec["serverGroup"] = groups[new.group_id]
        spec["networks"] = await self._networks(caller, project, new.network_ids)
        groups_named = [g for g in spec.get("securityGroups") or [] if g != "default"]
        for group in groups_named:
            if await self._get(caller, "securitygroups", project, group) is None:
                raise NovaError(400, f"Security group {group} not found for project {project}.")
        if "securityGroups" in spec:
            spec["securityGroups"] = sorted(set(spec["securityGroups"]))
            if spec["securityGroups"] == ["default"]:
                del spec["securityGroups"]
        user = await self._user_id(caller)
        annotations.update({**new.annotations, nova.USER_ID: user, nova.RESERVATION: f"r-{secrets.token_hex(4)}"})
        count = await self._check_quota(caller, project, spec, new.min_count, new.max_count)
        created = []
        for display in nova.instance_names(new.name, count):
            created.append(await self._create_instance(caller, project, display, {**spec, "name": display},
                                                       annotations))
        if new.return_reservation_id:
            return web.json_response({"reservation_id": annotations[nova.RESERVATION]}, status=202)
        first = created[0]
        uid = first["metadata"]["uid"]
        doc: dict[str, Any] = {"id": uid, "links": nova.links(self.root(request), "servers", uid),
                               "OS-DCF:diskConfig": new.annotations.get(nova.DISK_CONFIG, "MANUAL"),
                               "security_groups": [{"name": g} for g in spec.get("securityGroups") or ["default"]]}
        return web.json_response({"server": doc}, status=202, headers={
            "Location": f"{self.root(request)}/v2.1/servers/{uid}"})

    async def _block_devices(self, caller: Caller, project: str, new: nova.NewServer, spec: dict[str, Any]) -> None:
        """block_device_mapping_v2's volumes, by id: the boot volume and those attached at create, each a Volume
        of the project that no other server holds (unless multiattach), as Nova checks before it boots."""
        if new.boot_volume is None and not new.volumes:
            return
        by_uid = {o["metadata"]["uid"]: o for o in await self._objects(caller, "volumes", project)}

        def usable(device: nova.BlockDevice) -> str:
            vol = by_uid.get(device.volume_id)
            if vol is None:
                raise NovaError(400, f"Block Device Mapping is Invalid: failed to get volume {device.volume_id}.")
            st = vol.get("status") or {}
            if st.get("attachments") and not (vol.get("spec") or {}).get("multiattach"):
                raise NovaError(400, f"Invalid volume: volume {device.volume_id} is attached to server "
                                     f"{st['attachments'][0].get('server')} and is not multiattach")
            if st.get("status") in ("error", "creating"):
                raise NovaError(400, f"Invalid volume: volume {device.volume_id} status must be 'available'. "
                                     f"Currently in '{st.get('status')}'")
            return str(vol["metadata"]["name"])
        if new.boot_volume is not None:
            spec["bootVolume"] = {"volume": usable(new.boot_volume),
                                  "deleteOnTermination": new.boot_volume.delete_on_termination}
        if new.volumes:
            spec["volumeAttachments"] = [{"volume": usable(d), "deleteOnTermination": d.delete_on_termination,
                                          **({"tag": d.tag} if d.tag else {})} for d in new.volumes]

    async def _create_instance(self, caller: Caller, project: str, display: str, spec: dict[str, Any],
                               annotations: dict[str, str]) -> Body:
        name, prefix = object_names(display, "server")
        if name == display:
            del spec["name"]  # the object's own name says it
        manifest: dict[str, Any] = {"apiVersion": f"{GROUP_COMPUTE}/{VERSION}", "kind": "Instance",
                                    "metadata": {"name": name, "annotations": annotations} if name else
                                    {"generateName": prefix, "annotations": annotations}, "spec": spec}
        try:
            try:
                obj = await caller.create(GROUP_COMPUTE, INSTANCES.plural, project, manifest)
            except ApiError as e:
                if e.status != 409 or not name:
                    raise
                manifest["metadata"] = {"generateName": prefix, "annotations": annotations}
                manifest["spec"] = {**spec, "name": display}  # Nova names need not be unique
                obj = await caller.create(GROUP_COMPUTE, INSTANCES.plural, project, manifest)
        except ApiError as e:
            raise _nova(e, "instances") from e
        self.by_uid.update_from(None, obj)
        return obj

    async def _check_quota(self, caller: Caller, project: str, spec: dict[str, Any], least: int, most: int) -> int:
        """How many servers of a multiple create fit the project's quota, at least `least` (else Nova's 403),
        at most `most`, decided before anything is written with the operator's own quota rule over the
        namespace's Instances, as Nova creates as many as fit between min_count and max_count."""
        limits = await self._limits(caller, project)
        if quota.unlimited(limits):
            return most
        instances = await self._instances(caller, project)
        for n in range(most):
            probe = {"metadata": {"name": f"\x00new-{n}", "namespace": project,
                                  "creationTimestamp": "9999-12-31T23:59:59Z"}, "spec": spec}
            refusal = quota.check_instance(probe, instances, self.flavors, limits)
            if refusal is not None:
                if n < least:
                    raise NovaError(403, refusal.message)
                return n
            instances.append(probe)
        return most

    async def _limits(self, caller: Caller, project: str) -> dict[str, int]:
        q = await self._get(caller, "quotas", project, QUOTA_NAME)
        return effective_limits(self.rt.settings.quota_defaults, (q or {}).get("spec"))

    async def _networks(self, caller: Caller, project: str, wanted: list[str]) -> list[str]:
        if wanted == ["pod"]:
            return []
        if not wanted:
            return ["none"]
        names = nova.resolve_networks(wanted, project, await self.network_names(caller, project))
        return [] if names == ["pod"] else names

    async def network_names(self, caller: Caller, project: str) -> list[str]:
        """`pod` and the namespace's NetworkAttachmentDefinitions the caller may read."""
        try:
            nads = await caller.objects(NAD_GROUP, "network-attachment-definitions", project, version="v1")
        except ApiError:
            nads = []  # no Multus, or no right to read them: the pod network only
        return ["pod", *sorted(n["metadata"]["name"] for n in nads)]

    async def _user_id(self, caller: Caller) -> str:
        try:
            user = await caller.whoami()
        except ApiError:
            return ""
        return str(user.get("uid") or user.get("username") or "")

    async def _get(self, caller: Caller, plural: str, project: str, name: str) -> Body | None:
        try:
            return await caller.get(GROUP_COMPUTE, plural, project, name)
        except ApiError as e:
            raise _nova(e) from e

    async def _patch(self, caller: Caller, obj: Body, patch: dict[str, Any]) -> Body:
        md = obj["metadata"]
        try:
            return await caller.patch(GROUP_COMPUTE, INSTANCES.plural, md["namespace"], md["name"], patch,
                                      uid=md["uid"])
        except ApiError as e:
            if e.status == 422 and "locked" in e.message:
                raise NovaError(409, f"Instance {md['uid']} is locked") from e
            raise _nova(e) from e

    async def update_server(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        obj = await self.server(caller, project, request.match_info["id"])
        spec_patch, ann = nova.parse_update(await read_json(request), v)
        patch: dict[str, Any] = {}
        if spec_patch:
            if "name" in spec_patch and spec_patch["name"] == obj["metadata"]["name"]:
                spec_patch["name"] = None
            patch["spec"] = spec_patch
        if ann:
            patch["metadata"] = {"annotations": ann}
        if patch:
            obj = await self._patch(caller, obj, patch)
        groups = await self.group_uids(caller, project) if v.at_least("2.71") else None
        return web.json_response({"server": nova.server_view(obj, v, self.root(request), self.related(obj, groups),
                                                             "update")})

    async def delete_server(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.server(caller, project, request.match_info["id"])
        spec, _status = actions.parse(obj)
        if spec.locked:
            raise NovaError(409, f"Instance {obj['metadata']['uid']} is locked")
        try:
            await caller.delete(GROUP_COMPUTE, INSTANCES.plural, project, obj["metadata"]["name"],
                                obj["metadata"]["uid"])
        except ApiError as e:
            if e.status == 404:
                raise NovaError(404, f"Instance {obj['metadata']['uid']} could not be found.") from e
            raise _nova(e) from e
        return web.Response(status=204)

    # ------------------------------------------------------------------------------------------- actions
    async def action(self, request: web.Request) -> web.StreamResponse:
        caller, project = await self.caller(request)
        v = version_of(request)
        obj = await self.server(caller, project, request.match_info["id"])
        spec, status = actions.parse(obj)
        uid = obj["metadata"]["uid"]
        body = await read_json(request)
        if isinstance(body, dict) and len(body) == 1 and next(iter(body)) in ("os-getVNCConsole",
                                                                                "os-getSerialConsole"):
            return await self._legacy_console(request, caller, project, obj, body)
        act = nova.parse_action(body, spec, status, f"{dt.datetime.now(dt.UTC):%Y%m%dT%H%M%S}-"
                                                    f"{secrets.token_hex(4)}", v)
        refusal = actions.refusal(act.name, uid, spec, status, hard=act.hard)
        if refusal is not None:
            raise NovaError(409, refusal)
        annotations: dict[str, str | None] = {}  # what the action changes of the Nova words kept beside the spec
        if act.name == "resize":
            assert act.flavor_id is not None
            flavor = self.flavors.get((act.flavor_id,))
            if flavor is None or not flavor_usable_in(FlavorSpec.model_validate(flavor.get("spec") or {}), project):
                raise NovaError(400, f"Flavor {act.flavor_id} could not be found.")
            # What the operator would refuse, answered now (else the server would wait in RESIZE for nothing).
            new_flavor = FlavorSpec.model_validate(flavor.get("spec") or {})
            current = max(status.root_disk_gib or 0, status.flavor.disk if status.flavor else 0)
            refused = lifecycle.shrink_refusal(act.flavor_id, new_flavor, current)
            base_image = self.images.by_key(self.image_key(obj))
            if refused is None and base_image is not None:
                refused = lifecycle.boot_refusal(new_flavor, _image_info(base_image))
            if refused is not None:
                raise NovaError(400, f"Unable to resize the server: {refused}.")
            probe = {**obj, "spec": {**(obj.get("spec") or {}), "flavorRef": act.flavor_id}}
            refusal_q = quota.check_resize(probe, await self._instances(caller, project), self.flavors,
                                           await self._limits(caller, project))
            if refusal_q is not None:
                raise NovaError(403, refusal_q.message)
        if act.name == "rebuild":
            assert act.image_id is not None
            if spec.boot_volume is not None:
                # Nova below 2.93 answers this; from 2.93 it re-images the root volume, which Kova does not (yet).
                # The CRD refuses an imageRef beside bootVolume all the same.
                raise NovaError(400, f"Image {act.image_id} is unacceptable: Unable to rebuild with a different "
                                     "image for a volume-backed server.")
            try:
                image = await self.images.find(caller, project, act.image_id)
            except StatusError as e:
                raise NovaError(400, f"Can not find requested image {act.image_id}") from e
            owner, name = image["metadata"]["namespace"], image["metadata"]["name"]
            if str((image.get("status") or {}).get("status")) != "active":
                raise NovaError(400, f"Image {act.image_id} is not active.")
            if status.flavor is not None:
                refused = lifecycle.boot_refusal(status.flavor, _image_info(image))
                if refused is not None:
                    raise NovaError(400, f"Unable to rebuild the server: {refused}.")
            act.patch["imageRef"] = name if owner == project else f"{owner}/{name}"
            if act.patch["imageRef"] == spec.image_ref:
                raise NovaError(400, "Kova rebuilds a server onto another image (its imageRef changes); a rebuild "
                                     "onto the image it runs is not served: delete and create the server instead")
            if "name" in act.patch and act.patch["name"] == obj["metadata"]["name"]:
                act.patch["name"] = None
            if act.key_name == "":
                act.patch["keyName"] = None
                annotations[nova.KEY_NAME] = None
            elif act.key_name is not None:
                keypair = await self._find_keypair(caller, project, act.key_name)
                if keypair is None:
                    raise NovaError(400, "Invalid key_name provided.")
                act.patch["keyName"] = keypair["metadata"]["name"]
                annotations[nova.KEY_NAME] = act.key_name
        if act.name == "createImage":
            return await self._create_image(request, caller, project, obj, act, v)
        if act.patch:
            obj = await self._patch(caller, obj, {"spec": act.patch, **(
                {"metadata": {"annotations": annotations}} if annotations else {})})
        if act.name == "confirmResize":
            return web.Response(status=204)
        if act.name == "rebuild":
            groups = await self.group_uids(caller, project) if v.at_least("2.71") else None
            return web.json_response({"server": nova.server_view(obj, v, self.root(request),
                                                                 self.related(obj, groups), "rebuild")},
                                     status=202)
        return web.Response(status=202)

    async def _create_image(self, request: web.Request, caller: Caller, project: str, obj: Body,
                            act: nova.Action, v: Version) -> web.Response:
        """createImage: a new Image whose source is this Instance (the operator exports its disk). It exists,
        `queued`, when the answer leaves: openstacksdk reads it at once."""
        assert act.image_name is not None
        name, prefix = object_names(act.image_name, "snapshot")
        spec: dict[str, Any] = {"source": {"instance": obj["metadata"]["name"]}, "visibility": "private"}
        base_image = self.images.by_key(self.image_key(obj))
        # Raw whatever the base image was: CDI converted it to raw on the volume, and the export serves that
        # (Nova's libvirt driver would keep qcow2; here the disk no longer is).
        spec["diskFormat"] = "raw"
        spec["containerFormat"] = ((base_image or {}).get("spec") or {}).get("containerFormat") or "bare"
        if name != act.image_name:
            spec["name"] = act.image_name
        if act.image_metadata:
            spec["properties"] = act.image_metadata
        manifest: dict[str, Any] = {"apiVersion": f"{GROUP_IMAGE}/{VERSION}", "kind": "Image",
                                    "metadata": {"name": name} if name else {"generateName": prefix}, "spec": spec}
        try:
            try:
                image = await caller.create(GROUP_IMAGE, "images", project, manifest)
            except ApiError as e:
                if e.status != 409 or not name:
                    raise
                manifest["metadata"] = {"generateName": prefix}
                manifest["spec"] = {**spec, "name": act.image_name}
                image = await caller.create(GROUP_IMAGE, "images", project, manifest)
        except ApiError as e:
            raise _nova(e, "images") from e
        image_base = f"{self.base(request)}/projects/{project}/image"
        body, headers = nova.create_image_answer(image["metadata"]["uid"], image_base, v)
        if body is None:
            return web.Response(status=202, headers=headers)
        return web.json_response(body, status=202, headers=headers)

    async def _legacy_console(self, request: web.Request, caller: Caller, project: str, obj: Body,
                              body: dict[str, Any]) -> web.Response:
        """Before 2.6: os-getVNCConsole / os-getSerialConsole actions, answered as {"console": {type, url}}."""
        key, arg = next(iter(body.items()))
        protocol = "vnc" if key == "os-getVNCConsole" else "serial"
        kind = str((arg or {}).get("type") or ("novnc" if protocol == "vnc" else "serial"))
        doc = self._console(request, caller, project, obj, {"remote_console": {"protocol": protocol, "type": kind}},
                            (2, 6))
        return web.json_response({"console": {"type": doc["remote_console"]["type"],
                                              "url": doc["remote_console"]["url"]}})

    async def remote_console(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        if not v.at_least("2.6"):
            raise NovaError(404, "The resource could not be found.")
        obj = await self.server(caller, project, request.match_info["id"])
        body = await read_json(request)
        return web.json_response(self._console(request, caller, project, obj, body, (v.major, v.minor)))

    def _console(self, request: web.Request, caller: Caller, project: str, obj: Body, body: Any,
                 version: tuple[int, int]) -> dict[str, Any]:
        if self.console is None:
            raise NovaError(501, "Remote consoles are not served by this API")
        word = nova.nova_status(obj)[0]
        if word not in ("ACTIVE", "PAUSED", "VERIFY_RESIZE"):
            raise NovaError(409, f"Instance {obj['metadata']['uid']} is not ready: its console opens once it runs "
                                 f"(status {word})")
        vmi = (obj.get("status") or {}).get("virtualMachine") or obj["metadata"]["name"]
        try:
            return self.console.issue_console(self.base(request), caller.token, project, vmi,
                                              obj["metadata"]["uid"], body, microversion=version)
        except StatusError as e:
            raise NovaError(e.status, e.message) from e

    # ------------------------------------------------------------------------------------------- sub-resources
    async def metadata(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.server(caller, project, request.match_info["id"])
        meta = dict((obj.get("spec") or {}).get("metadata") or {})
        key = request.match_info.get("key")
        if request.method == "GET":
            if key is None:
                return web.json_response({"metadata": meta})
            if key not in meta:
                raise NovaError(404, "Metadata item was not found")
            return web.json_response({"meta": {key: meta[key]}})
        refusal = actions.refusal("metadata", obj["metadata"]["uid"], *actions.parse(obj))
        if refusal is not None:
            raise NovaError(409, refusal)
        if request.method == "DELETE":
            assert key is not None
            if key not in meta:
                raise NovaError(404, "Metadata item was not found")
            await self._patch(caller, obj, {"spec": {"metadata": {key: None}}})
            return web.Response(status=204)
        body = await read_json(request)
        if key is not None:  # PUT one item
            item = body.get("meta") if isinstance(body, dict) else None
            if not isinstance(item, dict) or len(item) != 1:
                raise NovaError(400, "Request body contains too many items" if isinstance(item, dict) and item
                                else "Malformed request body: 'meta' with one item")
            if key not in item:
                raise NovaError(400, "Request body and URI mismatch")
            nova.check_metadata({**meta, **item})
            await self._patch(caller, obj, {"spec": {"metadata": item}})
            return web.json_response({"meta": item})
        items = body.get("metadata") if isinstance(body, dict) else None
        if not isinstance(items, dict):
            raise NovaError(400, "Malformed request body: 'metadata' is required")
        if request.method == "PUT":  # replace all
            nova.check_metadata(items)
            await self._patch(caller, obj, {"spec": {"metadata": {**{k: None for k in meta}, **items}}})
            return web.json_response({"metadata": items})
        merged = nova.check_metadata({**meta, **items})
        await self._patch(caller, obj, {"spec": {"metadata": items}})
        return web.json_response({"metadata": merged})

    async def tags(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.server(caller, project, request.match_info["id"])
        tags = list((obj.get("spec") or {}).get("tags") or [])
        tag = request.match_info.get("tag")
        if request.method == "GET":
            if tag is None:
                return web.json_response({"tags": tags})
            if tag not in tags:
                raise NovaError(404, f"Tag '{tag}' is not found for server {obj['metadata']['uid']}")
            return web.Response(status=204)
        if request.method == "DELETE":
            if tag is None:
                await self._patch(caller, obj, {"spec": {"tags": []}})
                return web.Response(status=204)
            if tag not in tags:
                raise NovaError(404, f"Tag '{tag}' is not found for server {obj['metadata']['uid']}")
            await self._patch(caller, obj, {"spec": {"tags": [t for t in tags if t != tag]}})
            return web.Response(status=204)
        if tag is not None:  # PUT one tag
            nova.check_tag(tag)
            if tag in tags:
                return web.Response(status=204)
            nova.check_tags([*tags, tag])
            await self._patch(caller, obj, {"spec": {"tags": sorted({*tags, tag})}})
            url = f"{self.root(request)}/v2.1/servers/{obj['metadata']['uid']}/tags/{tag}"
            return web.Response(status=201, headers={"Location": url})
        body = await read_json(request)
        new = nova.check_tags(body.get("tags") if isinstance(body, dict) else None)
        await self._patch(caller, obj, {"spec": {"tags": new}})
        return web.json_response({"tags": new})

    async def ips(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.server(caller, project, request.match_info["id"])
        found = nova.addresses(obj)
        network = request.match_info.get("network")
        if network is None:
            return web.json_response({"addresses": found})
        if network not in found:
            raise NovaError(404, "There are no instances with the network label in the server")
        return web.json_response({network: found[network]})

    async def server_security_groups(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self.server(caller, project, request.match_info["id"])
        names = list((obj.get("spec") or {}).get("securityGroups") or ["default"])
        groups = []
        for name in names:
            found = await self._get(caller, "securitygroups", project, name)
            groups.append(self._security_group(project, name, found))
        return web.json_response({"security_groups": groups})

    def _security_group(self, project: str, name: str, obj: Body | None) -> dict[str, Any]:
        spec = (obj or {}).get("spec") or {}
        uid = (obj or {}).get("metadata", {}).get("uid") or nova.network_id(project, f"sg/{name}")
        rules = []
        for i, r in enumerate(spec.get("rules") or []):
            rules.append({"id": f"{uid}-{i}", "parent_group_id": uid, "ip_protocol": r.get("protocol"),
                          "from_port": r.get("portRangeMin", -1), "to_port": r.get("portRangeMax",
                                                                                   r.get("portRangeMin", -1)),
                          "ip_range": {"cidr": r["remoteIpPrefix"]} if r.get("remoteIpPrefix") else {},
                          "group": {"name": r["remoteGroup"], "tenant_id": project} if r.get("remoteGroup") else {}})
        return {"id": uid, "name": name, "description": spec.get("description") or "", "tenant_id": project,
                "rules": rules}

    async def security_groups(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        objs = await self._objects(caller, "securitygroups", project)
        groups = [self._security_group(project, o["metadata"]["name"], o) for o in objs]
        if not any(g["name"] == "default" for g in groups):
            groups.insert(0, self._security_group(project, "default", None))
        ident = request.match_info.get("id")
        if ident is not None:
            found = next((g for g in groups if ident in (g["id"], g["name"])), None)
            if found is None:
                raise NovaError(404, f"Security group {ident} not found.")
            return web.json_response({"security_group": found})
        return web.json_response({"security_groups": groups})

    async def instance_actions(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        obj = await self.server(caller, project, request.match_info["id"])
        uid = obj["metadata"]["uid"]
        history = list((obj.get("status") or {}).get("actions") or [])
        wanted = request.match_info.get("request_id")
        if wanted is None:
            docs = [nova.instance_action_view(uid, project, a, v, False) for a in reversed(history)]
            return web.json_response({"instanceActions": docs})
        found = next((a for a in history if a.get("requestId") == wanted), None)
        if found is None:
            raise NovaError(404, f"Action for request_id {wanted} on instance {uid} not found")
        return web.json_response({"instanceAction": nova.instance_action_view(uid, project, found, v, True)})

    # ------------------------------------------------------------------------------------------- volumes
    async def volume_attachments(self, request: web.Request) -> web.Response:
        """Nova's os-volume_attachments over spec.volumeAttachments (and the boot volume, listed as Nova lists
        a server's root volume): list, show, attach (the volume by its id, a Volume's uid) and detach. The
        operator plugs and unplugs; a volume another server holds is refused here already (400), as Nova does."""
        caller, project = await self.caller(request)
        v = version_of(request)
        obj = await self.server(caller, project, request.match_info["id"])
        server_uid, spec = obj["metadata"]["uid"], obj.get("spec") or {}
        volumes = {o["metadata"]["name"]: o for o in await self._objects(caller, "volumes", project)}
        by_uid = {o["metadata"]["uid"]: o for o in volumes.values()}
        reported = {a.get("volume"): a for a in (obj.get("status") or {}).get("volumeAttachments") or []}
        boot = (spec.get("bootVolume") or {}).get("volume")
        asked = [*([{"volume": boot, "deleteOnTermination": spec["bootVolume"].get("deleteOnTermination", False)}]
                   if boot else []), *(spec.get("volumeAttachments") or [])]

        def view(entry: dict[str, Any]) -> dict[str, Any] | None:
            vol = volumes.get(entry["volume"])
            if vol is None:
                return None
            return nova.volume_attachment_view(server_uid, vol["metadata"]["uid"], {
                **entry, "device": (reported.get(entry["volume"]) or {}).get("device")}, v)
        wanted = request.match_info.get("volume_id")
        if request.method == "GET" and wanted is None:
            return web.json_response({"volumeAttachments": [d for e in asked if (d := view(e)) is not None]})
        if request.method in ("GET", "DELETE"):
            vol = by_uid.get(wanted or "")
            entry = next((e for e in asked if vol is not None and e["volume"] == vol["metadata"]["name"]), None)
            if vol is None or entry is None:
                raise NovaError(404, f"Volume {wanted} is not attached to server {server_uid}")
            if request.method == "GET":
                return web.json_response({"volumeAttachment": view(entry)})
            if entry["volume"] == boot:
                raise NovaError(400, "Cannot detach a root device volume")
            await self._patch(caller, obj, {"spec": {"volumeAttachments": [
                e for e in spec.get("volumeAttachments") or [] if e["volume"] != entry["volume"]]}})
            return web.Response(status=202)
        volume_id, entry = nova.attach_request(await read_json(request), v)
        vol = by_uid.get(volume_id)
        if vol is None:
            raise NovaError(404, f"Volume {volume_id} could not be found.")
        name = vol["metadata"]["name"]
        if any(e["volume"] == name for e in asked):
            raise NovaError(400, f"Invalid volume: volume {volume_id} is already attached to server {server_uid}")
        st = vol.get("status") or {}
        others = [h["server"] for h in st.get("attachments") or [] if h.get("serverUid") != server_uid]
        if others and not (vol.get("spec") or {}).get("multiattach"):
            raise NovaError(400, f"Invalid volume: volume {volume_id} is attached to server {others[0]} and is "
                                 "not multiattach; detach it there first")
        if st.get("status") in ("error", "creating", "extending"):
            raise NovaError(400, f"Invalid volume: volume {volume_id} status must be 'available'. Currently in "
                                 f"'{st.get('status')}'")
        entry = {"volume": name, **entry}
        await self._patch(caller, obj, {"spec": {"volumeAttachments": [*(spec.get("volumeAttachments") or []),
                                                                       entry]}})
        return web.json_response({"volumeAttachment": view(entry)})

    # ------------------------------------------------------------------------------------------- flavors
    def _flavors_for(self, project: str) -> list[Body]:
        usable = [f for f in self.flavors
                  if flavor_usable_in(FlavorSpec.model_validate(f.get("spec") or {}), project)]
        return sorted(usable, key=lambda f: (int((f.get("spec") or {}).get("ram") or 0), nova.flavor_id(f)))

    async def list_flavors(self, request: web.Request) -> web.Response:
        _caller, project = await self.caller(request)
        v = version_of(request)
        detail = request.path.rstrip("/").endswith("/detail")
        params = list(request.query.items())
        is_public, min_disk, min_ram, query = nova.flavor_query(params)
        flavors = [f for f in self._flavors_for(project) if nova.flavor_listed(f, is_public, min_disk, min_ram)]
        docs = [nova.flavor_view(f, v, self.root(request), detail) for f in flavors]
        page, more = nova.page(docs, query)
        body: dict[str, Any] = {"flavors": page}
        if more:
            url = f"{self.root(request)}/v2.1/flavors" + ("/detail" if detail else "")
            body["flavors_links"] = nova.next_link(url, params, page[-1]["id"])
        return web.json_response(body)

    def _flavor(self, project: str, flavor_id: str) -> Body:
        flavor = self.flavors.get((flavor_id,))
        if flavor is None or not flavor_usable_in(FlavorSpec.model_validate(flavor.get("spec") or {}), project):
            raise NovaError(404, f"Flavor {flavor_id} could not be found.")
        return flavor

    async def show_flavor(self, request: web.Request) -> web.Response:
        _caller, project = await self.caller(request)
        flavor = self._flavor(project, request.match_info["id"])
        return web.json_response({"flavor": nova.flavor_view(flavor, version_of(request), self.root(request), True)})

    async def flavor_extra_specs(self, request: web.Request) -> web.Response:
        _caller, project = await self.caller(request)
        flavor = self._flavor(project, request.match_info["id"])
        specs = dict((flavor.get("spec") or {}).get("extraSpecs") or {})
        key = request.match_info.get("key")
        if key is None:
            return web.json_response({"extra_specs": specs})
        if key not in specs:
            raise NovaError(404, f"Flavor {request.match_info['id']} has no extra specs with key {key}.")
        return web.json_response({key: specs[key]})

    async def flavor_access(self, request: web.Request) -> web.Response:
        _caller, project = await self.caller(request)
        flavor = self._flavor(project, request.match_info["id"])
        spec = flavor.get("spec") or {}
        if spec.get("public", True):
            raise NovaError(404, "Access list not available for public flavors.")
        return web.json_response({"flavor_access": [{"flavor_id": nova.flavor_id(flavor), "tenant_id": t}
                                                    for t in spec.get("access") or []]})

    async def admin_only(self, request: web.Request) -> web.Response:
        await self.caller(request)
        raise NovaError(403, "Policy doesn't allow this to be performed: an administrator's action (Kova's Flavors "
                             "are cluster-scoped objects: `kubectl apply` them with the cloud's rights)")

    # ------------------------------------------------------------------------------------------- key pairs
    async def list_keypairs(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        objs = await self._objects(caller, "keypairs", project)
        objs.sort(key=nova.keypair_name)
        docs = [{"keypair": nova.keypair_view(o, v, False)} for o in objs]
        params = list(request.query.items())
        if v.at_least("2.35") and ("limit" in request.query or "marker" in request.query):
            limit = int(request.query["limit"]) if request.query.get("limit", "").isdigit() else None
            query = nova.ServerQuery(limit, request.query.get("marker"), {})
            names = [{"id": d["keypair"]["name"], **d} for d in docs]
            chosen, more = nova.page(names, query)
            body: dict[str, Any] = {"keypairs": [{"keypair": c["keypair"]} for c in chosen]}
            if more:
                body["keypairs_links"] = nova.next_link(f"{self.root(request)}/v2.1/os-keypairs", params,
                                                        chosen[-1]["id"])
            return web.json_response(body)
        return web.json_response({"keypairs": docs})

    async def show_keypair(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        name = request.match_info["name"]
        obj = await self._keypair(caller, project, name)
        return web.json_response({"keypair": nova.keypair_view(obj, version_of(request), True)})

    async def _find_keypair(self, caller: Caller, project: str, name: str) -> Body | None:
        """The project's key pair of this Nova name (its object's name, or spec.name when that differs)."""
        objs = await self._objects(caller, "keypairs", project)
        return next((o for o in objs if nova.keypair_name(o) == name), None)

    async def _keypair(self, caller: Caller, project: str, name: str) -> Body:
        obj = await self._find_keypair(caller, project, name)
        if obj is None:
            raise NovaError(404, f"Keypair {name} not found for user")
        return obj

    async def create_keypair(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        name, public_key, kind = nova.parse_keypair(await read_json(request), v)
        if await self._find_keypair(caller, project, name) is not None:
            raise NovaError(409, f"Key pair '{name}' already exists.")
        key, prefix = object_names(name, "keypair")
        spec: dict[str, Any] = {"type": kind}
        if key != name:
            spec["name"] = name
        private_key: str | None = None
        if public_key is not None:
            spec["publicKey"] = public_key.strip()
        elif kind == "x509":
            spec["publicKey"], private_key = generate_x509(name, clock.now())
        else:
            # Nova returns a generated private key once; Kova makes it here so it goes to the client only.
            spec["publicKey"], private_key = generate(f"Generated-by-Nova {name}")
        user = await self._user_id(caller)
        manifest: dict[str, Any] = {"apiVersion": f"{GROUP_COMPUTE}/{VERSION}", "kind": "KeyPair",
                                    "metadata": {"name": key, "annotations": {nova.USER_ID: user}} if key else
                                    {"generateName": prefix, "annotations": {nova.USER_ID: user}}, "spec": spec}
        try:
            try:
                obj = await caller.create(GROUP_COMPUTE, "keypairs", project, manifest)
            except ApiError as e:
                if e.status != 409 or not key:
                    raise
                manifest["metadata"] = {"generateName": prefix, "annotations": {nova.USER_ID: user}}
                manifest["spec"] = {**spec, "name": name}
                obj = await caller.create(GROUP_COMPUTE, "keypairs", project, manifest)
        except ApiError as e:
            raise _nova(e, "key_pairs") from e
        obj.setdefault("status", {})["publicKey"] = spec["publicKey"]
        obj["status"]["fingerprint"] = _fingerprint(spec["publicKey"])
        doc = nova.keypair_view(obj, v, False)
        doc["user_id"] = user
        if private_key is not None:
            doc["private_key"] = private_key
        return web.json_response({"keypair": doc}, status=201 if v.at_least("2.2") else 200)

    async def delete_keypair(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self._keypair(caller, project, request.match_info["name"])
        try:
            await caller.delete(GROUP_COMPUTE, "keypairs", project, obj["metadata"]["name"], obj["metadata"]["uid"])
        except ApiError as e:
            raise _nova(e) from e
        return web.Response(status=204 if version_of(request).at_least("2.2") else 202)

    # ------------------------------------------------------------------------------------------- server groups
    async def _members(self, caller: Caller, project: str) -> dict[str, list[str]]:
        members: dict[str, list[str]] = {}
        for inst in await self._instances(caller, project):
            group = (inst.get("spec") or {}).get("serverGroup")
            if group and not inst["metadata"].get("deletionTimestamp"):
                members.setdefault(group, []).append(inst["metadata"]["uid"])
        return members

    async def list_server_groups(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        objs = await self._objects(caller, "servergroups", project)
        members = await self._members(caller, project)
        docs = [nova.server_group_view(o, v, members.get(o["metadata"]["name"], [])) for o in objs]
        return web.json_response({"server_groups": docs})

    async def _server_group(self, caller: Caller, project: str, ident: str) -> Body:
        objs = await self._objects(caller, "servergroups", project)
        found = next((o for o in objs if o["metadata"]["uid"] == ident), None)
        if found is None:
            raise NovaError(404, f"Instance group {ident} could not be found.")
        return found

    async def show_server_group(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self._server_group(caller, project, request.match_info["id"])
        members = await self._members(caller, project)
        return web.json_response({"server_group": nova.server_group_view(
            obj, version_of(request), members.get(obj["metadata"]["name"], []))})

    async def create_server_group(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        v = version_of(request)
        display, policy = nova.parse_server_group(await read_json(request), v)
        name, prefix = object_names(display, "group")
        user = await self._user_id(caller)
        metadata: dict[str, Any] = {"name": name} if name else {"generateName": prefix}
        metadata["annotations"] = {nova.USER_ID: user}
        manifest = {"apiVersion": f"{GROUP_COMPUTE}/{VERSION}", "kind": "ServerGroup", "metadata": metadata,
                    "spec": {"policy": policy}}
        try:
            try:
                obj = await caller.create(GROUP_COMPUTE, "servergroups", project, manifest)
            except ApiError as e:
                if e.status != 409 or not name:
                    raise
                manifest["metadata"] = {"generateName": prefix, "annotations": {nova.USER_ID: user}}
                obj = await caller.create(GROUP_COMPUTE, "servergroups", project, manifest)
        except ApiError as e:
            raise _nova(e, "server_groups") from e
        return web.json_response({"server_group": nova.server_group_view(obj, v, [])})

    async def delete_server_group(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        obj = await self._server_group(caller, project, request.match_info["id"])
        try:
            await caller.delete(GROUP_COMPUTE, "servergroups", project, obj["metadata"]["name"],
                                obj["metadata"]["uid"])
        except ApiError as e:
            raise _nova(e) from e
        return web.Response(status=204)

    # ------------------------------------------------------------------------------------------- zones, limits
    async def availability_zones(self, request: web.Request) -> web.Response:
        await self.caller(request)
        zones = sorted(self.zones, key=lambda z: z["metadata"]["name"])
        return web.json_response(nova.zones_view(zones, request.path.rstrip("/").endswith("/detail")))

    async def _quotas(self, caller: Caller, project: str) -> dict[str, tuple[int, int]]:
        q = await self._get(caller, "quotas", project, QUOTA_NAME)
        limits = effective_limits(self.rt.settings.quota_defaults, (q or {}).get("spec"))
        used = {i.get("name"): int(i.get("inUse") or 0) for i in ((q or {}).get("status") or {}).get("quotas") or []}
        return {name: (limit, used.get(name, 0)) for name, limit in limits.items()}

    async def limits(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        return web.json_response(nova.limits_view(await self._quotas(caller, project), version_of(request)))

    async def quota_sets(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        wanted = request.match_info["target"]
        if wanted != project:
            raise NovaError(403, f"Policy doesn't allow os_compute_api:os-quota-sets:show to be performed "
                                 f"for project {wanted}.")
        what = request.match_info.get("what")
        quotas = await self._quotas(caller, project)
        if what == "defaults":
            quotas = {k: (v, 0) for k, v in effective_limits(self.rt.settings.quota_defaults, None).items()}
        return web.json_response(nova.quota_set(project, quotas, version_of(request), detail=what == "detail"))

    async def tenant_usage(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        wanted = request.match_info.get("target")
        if wanted is None or wanted != project:
            raise NovaError(403, "Policy doesn't allow os_compute_api:os-simple-tenant-usage:list to be performed.")
        now = clock.now()
        try:
            start = _query_time(request.query.get("start")) or now - dt.timedelta(days=1)
            end = _query_time(request.query.get("end")) or now
        except ValueError as e:
            raise NovaError(400, f"Invalid input: {e}") from e
        flavors = {nova.flavor_id(f): FlavorSpec.model_validate(f.get("spec") or {}) for f in self.flavors}
        instances = await self._instances(caller, project)
        return web.json_response(nova.simple_usage(project, instances, start, min(end, now), flavors))

    # ------------------------------------------------------------------------------------------- networks
    async def networks(self, request: web.Request) -> web.Response:
        caller, project = await self.caller(request)
        names = await self.network_names(caller, project)
        tenant = "os-tenant-networks" in request.path
        view = nova.tenant_network_view if tenant else nova.network_view
        ident = request.match_info.get("id")
        docs = [view(project, n) for n in names]
        if ident is not None:
            found = next((d for d in docs if ident in (d["id"], d["label"])), None)
            if found is None:
                raise NovaError(404, f"Network {ident} could not be found.")
            return web.json_response({"network": found})
        return web.json_response({"networks": docs})


def _query_time(text: str | None) -> dt.datetime | None:
    if not text:
        return None
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _image_info(image: Body) -> lifecycle.ImageInfo:
    spec, status = image.get("spec") or {}, image.get("status") or {}
    return lifecycle.ImageInfo(ref=image["metadata"]["name"], uid=image["metadata"]["uid"],
                               sha512=str(status.get("osHashValue") or ""), size=int(status.get("size") or 0),
                               virtual_size=int(status.get("virtualSize") or status.get("size") or 0),
                               min_disk=int(spec.get("minDisk") or 0), min_ram=int(spec.get("minRam") or 0),
                               disk_format=spec.get("diskFormat"))


def _fingerprint(public_key: str) -> str:
    try:
        return fingerprint(public_key)
    except ValueError:
        return ""


@web.middleware
async def nova_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """For the compute API's paths: the microversion (negotiated before anything else, echoed on every
    answer, errors included) and Nova's error bodies."""
    if "/compute/v2.1" not in request.path:
        return await handler(request)
    headers: dict[str, str] = {"x-openstack-request-id": f"req-{uuid.uuid4()}"}
    headers["x-compute-request-id"] = headers["x-openstack-request-id"]
    try:
        version = microversion.requested(request.headers)
        request["nova_version"] = version
        headers.update(microversion.answer_headers(version))
        response = await handler(request)
    except StatusError as e:
        response = web.json_response(nova.error_body(e.status, e.message), status=e.status)
    except web.HTTPException as e:
        if e.status < 400:
            raise
        response = web.json_response(nova.error_body(e.status, e.reason), status=e.status)
    for key, value in headers.items():
        response.headers.setdefault(key, value)
    return response
