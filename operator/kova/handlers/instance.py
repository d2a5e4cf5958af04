"""Instance: wait for a Flavor and an active Image, then own a DataVolume and a VirtualMachine.

`reconcile` is level-based and reads only what the watches already delivered (kova.informer, `Caches`):
the Instance, its Flavor and Image, its DataVolume, VirtualMachine and VirtualMachineInstance. It writes
only what differs from what it wants (kova.writes): the DataVolume once, the VirtualMachine when
its desired spec is not already there (a hand-edit is put back), the status when a user would see a
change. So a reconcile of an Instance whose world did not change makes no API call at all. It runs on
the Instance's changes, on every change of a child, and, for an Instance that waits, when its Flavor or
Image changes (an Instance that waits says what for, `Caches.wait_for`).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from kova import builders
from kova.conditions import Progress
from kova.handlers.common import publish
from kova.kube import DATA_VOLUMES, VIRTUAL_MACHINES
from kova.models import Fault, FlavorSpec, GlanceStatus, ImageSpec, ImageStatus, InstanceSpec, NovaStatus
from kova.runtime import INSTANCES, Runtime


class Cache(Protocol):
    def get(self, key: tuple[str, ...]) -> dict[str, Any] | None: ...


@dataclass
class Caches:
    """What the watches delivered, keyed (namespace, name), or (name,) for Flavors."""

    flavors: Cache
    images: Cache
    instances: Cache
    datavolumes: Cache
    vms: Cache
    vmis: Cache
    # Which Instances wait for which Flavor or Image: that object's next event wakes them.
    waiting: dict[tuple[str, ...], set[tuple[str, str]]] = field(default_factory=dict)

    def wait_for(self, what: tuple[str, ...], namespace: str, name: str) -> None:
        self.waiting.setdefault(what, set()).add((namespace, name))

    def forget(self, namespace: str, name: str) -> None:
        """A deleted Instance waits for nothing."""
        for key in [k for k, v in self.waiting.items() if (namespace, name) in v]:
            self.waiting[key].discard((namespace, name))
            if not self.waiting[key]:
                del self.waiting[key]

    def waiters(self, what: tuple[str, ...]) -> set[tuple[str, str]]:
        """The Instances that wait for `what`, forgotten here: a reconcile that still waits says so again."""
        return self.waiting.pop(what, set())


@dataclass
class Wait(Exception):
    """Something the instance needs is not there yet; it will be (and its arrival wakes the instance)."""

    reason: str
    message: str
    on: tuple[str, ...] | None = None  # ("Flavor", name) or ("Image", namespace, name): wake on its events


@dataclass
class Refuse(Exception):
    """The request cannot be served as written (Nova would answer 4xx): ERROR with a fault."""

    reason: str
    message: str
    code: int = 400


async def reconcile(rt: Runtime, caches: Caches, namespace: str, name: str) -> None:
    async with rt.lock("instance", namespace, name):
        inst = caches.instances.get((namespace, name))
        if inst is None or inst["metadata"].get("deletionTimestamp"):
            return
        try:
            await _converge(rt, caches, inst)
        except Wait as w:
            if w.on:
                caches.wait_for(w.on, namespace, name)
            await publish(rt, INSTANCES, inst, word=NovaStatus.build.value, progress=Progress.RECONCILING,
                          reason=w.reason, message=w.message, fields={"fault": None, "powerState": "NOSTATE"})
        except Refuse as r:
            await publish(rt, INSTANCES, inst, word=NovaStatus.error.value, progress=Progress.STALLED,
                          reason=r.reason, message=r.message,
                          fields={"fault": Fault(code=r.code, message=r.message).dump(), "powerState": "NOSTATE"})


async def _converge(rt: Runtime, caches: Caches, inst: dict[str, Any]) -> None:
    md = inst["metadata"]
    namespace, name = md["namespace"], md["name"]
    try:
        spec = InstanceSpec.model_validate(inst.get("spec") or {})
    except ValidationError as e:
        raise Refuse("InvalidSpec", str(e)) from e
    flavor = _flavor(caches, spec, namespace)
    image_spec, image_status, image_uid = _image(caches, spec, namespace)
    refusal = builders.boot_refusal(flavor, image_spec, image_status)
    if refusal:
        raise Refuse("FlavorTooSmall", refusal)

    dv_name = builders.data_volume_name(name)
    dv = caches.datavolumes.get((namespace, dv_name))
    if dv is not None and builders.image_link_expired(dv, rt.settings.presign_ttl, dt.datetime.now(dt.UTC)):
        # CDI could not read the image because the link expired: a new DataVolume gets a new link.
        rt.writes.forget(DATA_VOLUMES, namespace, dv_name)
        await rt.kube.delete(DATA_VOLUMES, dv_name, namespace, uid=dv["metadata"]["uid"])
        raise Wait("RenewingImageLink", "the image link expired before the import finished; renewing it")
    if dv is None and image_status.status is GlanceStatus.deactivated:
        # Only new boots are refused: an instance whose disk already exists keeps running.
        raise Refuse("ImageDeactivated", f"Image {spec.image_ref} is deactivated: its data may not be used "
                                         "for new instances", code=403)
    size = builders.root_disk_gib(flavor, image_spec, image_status)
    # The VirtualMachine first: it is what a user waits for, and KubeVirt holds it until its DataVolume is.
    vm = caches.vms.get((namespace, name))
    await rt.writes.ensure(VIRTUAL_MACHINES, builders.build_virtual_machine(inst, spec, flavor), vm)
    if dv is None and not rt.writes.created(DATA_VOLUMES, namespace, dv_name):
        # Signing is local work (the signer's region is fixed, so minio asks the store nothing).
        url = rt.store.presigned_get(image_uid, rt.settings.presign_ttl)
        await rt.writes.create(DATA_VOLUMES, builders.build_data_volume(
            inst, url, image_status.os_hash_value or "", size))
    vmi = caches.vmis.get((namespace, name))
    view = builders.observe_instance(spec, dv, vm, vmi, building=f"importing image {spec.image_ref} into a "
                                                                f"{size} GiB root disk, then starting it")
    await publish(rt, INSTANCES, inst, word=view.status.value, progress=view.progress, reason=view.reason,
                  message=view.message, fields={
                      "powerState": view.power_state,
                      "addresses": [a.dump() for a in view.addresses],
                      "fault": view.fault.dump() if view.fault else None,
                      "node": view.node, "virtualMachine": name, "dataVolume": dv_name,
                      "imageChecksum": image_status.os_hash_value})


def _flavor(caches: Caches, spec: InstanceSpec, namespace: str) -> FlavorSpec:
    obj = caches.flavors.get((spec.flavor_ref,))
    if obj is None:
        raise Wait("WaitingForFlavor", f"Flavor {spec.flavor_ref} does not exist (yet)", ("Flavor", spec.flavor_ref))
    flavor = FlavorSpec.model_validate(obj.get("spec") or {})
    if not builders.flavor_usable_in(flavor, namespace):
        raise Refuse("FlavorNotAccessible", f"Flavor {spec.flavor_ref} is not public and namespace "
                                            f"{namespace} is not in its access list", code=403)
    return flavor


def _image(caches: Caches, spec: InstanceSpec, namespace: str) -> tuple[ImageSpec, ImageStatus, str]:
    image_ns, image_name = builders.parse_image_ref(spec.image_ref, namespace)
    obj = caches.images.get((image_ns, image_name))
    if obj is None:
        raise Wait("WaitingForImage", f"Image {image_ns}/{image_name} does not exist (yet)",
                   ("Image", image_ns, image_name))
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
                                      "not active yet", ("Image", image_ns, image_name))
    return image_spec, status, obj["metadata"]["uid"]
