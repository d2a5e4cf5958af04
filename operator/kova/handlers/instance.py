"""Instance: wait for a Flavor and an active Image, then own a DataVolume and a VirtualMachine.

`reconcile` is level-based: each call reads the Instance, its Flavor and Image and its children, makes
the children what they should be, and writes the status from what they say. It runs on the Instance's
own changes and on every change of a child, so the status follows the VM, VMI and DataVolume.
"""

from __future__ import annotations

import asyncio
import datetime as dt
from dataclasses import dataclass
from typing import Any, cast

import kopf
from pydantic import ValidationError

from kova import builders
from kova.conditions import Progress
from kova.handlers.common import publish
from kova.kube import DATA_VOLUMES, VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES
from kova.models import Fault, FlavorSpec, GlanceStatus, ImageSpec, ImageStatus, InstanceSpec, NovaStatus
from kova.runtime import FLAVORS, IMAGES, INSTANCES, Runtime


@dataclass
class Wait(Exception):
    """Something the instance needs is not there yet; it will be."""

    reason: str
    message: str


@dataclass
class Refuse(Exception):
    """The request cannot be served as written (Nova would answer 4xx): ERROR with a fault."""

    reason: str
    message: str
    code: int = 400


async def reconcile(rt: Runtime, namespace: str, name: str, *, raise_waits: bool) -> None:
    async with rt.lock("instance", namespace, name):
        inst = await rt.kube.get(INSTANCES, name, namespace)
        if inst is None or inst["metadata"].get("deletionTimestamp"):
            return
        try:
            await _converge(rt, inst)
        except Wait as w:
            await publish(rt, INSTANCES, inst, word=NovaStatus.build.value, progress=Progress.RECONCILING,
                          reason=w.reason, message=w.message, fields={"fault": None, "powerState": "NOSTATE"})
            if raise_waits:
                raise kopf.TemporaryError(w.message, delay=rt.settings.wait_delay) from None
        except Refuse as r:
            await publish(rt, INSTANCES, inst, word=NovaStatus.error.value, progress=Progress.STALLED,
                          reason=r.reason, message=r.message,
                          fields={"fault": Fault(code=r.code, message=r.message).dump(), "powerState": "NOSTATE"})


async def _converge(rt: Runtime, inst: dict[str, Any]) -> None:
    md = inst["metadata"]
    namespace, name = md["namespace"], md["name"]
    try:
        spec = InstanceSpec.model_validate(inst.get("spec") or {})
    except ValidationError as e:
        raise Refuse("InvalidSpec", str(e)) from e
    flavor = await _flavor(rt, spec, namespace)
    image_spec, image_status, image_uid = await _image(rt, spec, namespace)
    refusal = builders.boot_refusal(flavor, image_spec, image_status)
    if refusal:
        raise Refuse("FlavorTooSmall", refusal)

    dv_name = builders.data_volume_name(name)
    dv = await rt.kube.get(DATA_VOLUMES, dv_name, namespace)
    if dv is not None and builders.image_link_expired(dv, rt.settings.presign_ttl, dt.datetime.now(dt.UTC)):
        # CDI could not read the image because the link expired: a new DataVolume gets a new link.
        await rt.kube.delete(DATA_VOLUMES, dv_name, namespace, uid=dv["metadata"]["uid"])
        raise Wait("RenewingImageLink", "the image link expired before the import finished; renewing it")
    if dv is None and image_status.status is GlanceStatus.deactivated:
        # Only new boots are refused: an instance whose disk already exists keeps running.
        raise Refuse("ImageDeactivated", f"Image {spec.image_ref} is deactivated: its data may not be used "
                                         "for new instances", code=403)
    if dv is None:
        url = await asyncio.to_thread(rt.store.presigned_get, image_uid, rt.settings.presign_ttl)
        size = builders.root_disk_gib(flavor, image_spec, image_status)
        await rt.kube.create(DATA_VOLUMES, builders.build_data_volume(
            inst, url, image_status.os_hash_value or "", size))
        kopf.info(cast(kopf.Body, inst), reason="Spawning",
                  message=f"importing image {spec.image_ref} into a {size} GiB root disk")
        dv = await rt.kube.get(DATA_VOLUMES, dv_name, namespace)
    vm = await rt.kube.apply(VIRTUAL_MACHINES, builders.build_virtual_machine(inst, spec, flavor))
    vmi = await rt.kube.get(VIRTUAL_MACHINE_INSTANCES, name, namespace)
    view = builders.observe_instance(spec, dv, vm, vmi)
    await publish(rt, INSTANCES, inst, word=view.status.value, progress=view.progress, reason=view.reason,
                  message=view.message, fields={
                      "powerState": view.power_state,
                      "addresses": [a.dump() for a in view.addresses],
                      "fault": view.fault.dump() if view.fault else None,
                      "node": view.node, "virtualMachine": name, "dataVolume": dv_name,
                      "imageChecksum": image_status.os_hash_value})


async def _flavor(rt: Runtime, spec: InstanceSpec, namespace: str) -> FlavorSpec:
    obj = await rt.kube.get(FLAVORS, spec.flavor_ref)
    if obj is None:
        raise Wait("WaitingForFlavor", f"Flavor {spec.flavor_ref} does not exist (yet)")
    flavor = FlavorSpec.model_validate(obj.get("spec") or {})
    if not builders.flavor_usable_in(flavor, namespace):
        raise Refuse("FlavorNotAccessible", f"Flavor {spec.flavor_ref} is not public and namespace "
                                            f"{namespace} is not in its access list", code=403)
    return flavor


async def _image(rt: Runtime, spec: InstanceSpec, namespace: str) -> tuple[ImageSpec, ImageStatus, str]:
    image_ns, image_name = builders.parse_image_ref(spec.image_ref, namespace)
    obj = await rt.kube.get(IMAGES, image_name, image_ns)
    if obj is None:
        raise Wait("WaitingForImage", f"Image {image_ns}/{image_name} does not exist (yet)")
    image_spec = ImageSpec.model_validate(obj.get("spec") or {})
    if not builders.image_visible_to(image_spec, image_ns, namespace):
        # Said the way Glance says it: an image one cannot see is an image that is not found.
        raise Refuse("ImageNotFound", f"Image {image_ns}/{image_name} is not visible to namespace {namespace}",
                     code=404)
    status = ImageStatus.model_validate(obj.get("status") or {})
    if status.status is GlanceStatus.killed:
        raise Refuse("ImageKilled", f"Image {image_ns}/{image_name} failed to import: {status.message}")
    if status.status not in (GlanceStatus.active, GlanceStatus.deactivated) or not status.os_hash_value:
        raise Wait("WaitingForImage", f"Image {image_ns}/{image_name} is {status.status or 'queued'}, "
                                      "not active yet")
    return image_spec, status, obj["metadata"]["uid"]
