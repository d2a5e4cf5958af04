"""Instance: Nova's server over a KubeVirt VirtualMachine and a CDI DataVolume, through its whole life.

`reconcile` is level-based and reads only what the watches already delivered (kova.informer, `Caches`):
the Instance, its Flavor and Image, its DataVolume, claim, VirtualMachine and VirtualMachineInstance.
kova.compute.lifecycle decides the next step (pure); this module carries it out: the VirtualMachine
applied when its desired spec is not already there (a hand-edit is put back), the DataVolume created once
(deleted for a rebuild), the claim grown for a resize, at most one KubeVirt action through virt-api, and the
status written when a user would see a change (kova.writes). A reconcile of an Instance whose world did not
change makes no API call at all. It runs on the Instance's changes, on every change of a child, when a
snapshot of it starts or ends, and, for an Instance that waits, when its Flavor or Image changes.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from kova import builders
from kova.compute import lifecycle
from kova.conditions import Progress
from kova.handlers.common import publish
from kova.kube import DATA_VOLUMES, VIRTUAL_MACHINE_INSTANCES, VIRTUAL_MACHINES, Refused
from kova.models import (
    Address,
    Fault,
    FlavorSpec,
    GlanceStatus,
    ImageSpec,
    ImageStatus,
    InstanceSpec,
    InstanceStatus,
    NovaStatus,
)
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
    pvcs: Cache
    # Instance snapshots under way: (namespace, instance) → names of the Images being made from it.
    snapshots: dict[tuple[str, str], set[str]] = field(default_factory=dict)
    wake: Callable[[tuple[str, str], float], None] | None = None  # reconcile an Instance after some seconds
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


MAX_STEPS = 8  # steps of one action carried out in a row (each writes its task before it acts)


async def reconcile(rt: Runtime, caches: Caches, namespace: str, name: str) -> None:
    async with rt.lock("instance", namespace, name):
        for _ in range(MAX_STEPS):
            inst = caches.instances.get((namespace, name))
            if inst is None or inst["metadata"].get("deletionTimestamp"):
                return
            if not await _step(rt, caches, inst):
                return


async def _step(rt: Runtime, caches: Caches, inst: dict[str, Any]) -> bool:
    """One step of the life cycle (kova.compute.lifecycle): carry it out, write the status. True: decide
    again at once."""
    md = inst["metadata"]
    namespace, name = md["namespace"], md["name"]
    try:
        spec = InstanceSpec.model_validate(inst.get("spec") or {})
        status = InstanceStatus.model_validate(rt.writes.last_status(inst))
    except ValidationError as e:
        await publish(rt, INSTANCES, inst, word=NovaStatus.error.value, progress=Progress.STALLED,
                      reason="InvalidSpec", message=str(e), fields={"fault": Fault(code=400, message=str(e)).dump()})
        return False
    dv_name = builders.data_volume_name(name)
    dv = caches.datavolumes.get((namespace, dv_name))
    if dv is not None and builders.image_link_expired(dv, rt.settings.presign_ttl, dt.datetime.now(dt.UTC)):
        # CDI could not read the image because the link expired: a new DataVolume gets a new link.
        rt.writes.forget(DATA_VOLUMES, namespace, dv_name)
        await rt.kube.delete(DATA_VOLUMES, dv_name, namespace, uid=dv["metadata"]["uid"])
        dv = None
    children = lifecycle.Children(dv=dv, pvc=caches.pvcs.get((namespace, dv_name)),
                                  vm=caches.vms.get((namespace, name)), vmi=caches.vmis.get((namespace, name)))
    snapshots = caches.snapshots.get((namespace, name), set())
    step = lifecycle.decide(lifecycle.Inputs(
        spec=spec, status=status, generation=int(md.get("generation") or 0), children=children,
        flavor=_flavor(caches, spec.flavor_ref, namespace), image=_image(caches, spec.image_ref, namespace),
        disk_image=_image(caches, status.image_ref, namespace)
        if status.image_ref and status.image_ref != spec.image_ref else None,
        snapshots=sorted(snapshots), snapshot_uploading=any(
            (caches.images.get((namespace, s)) or {}).get("status", {}).get("status") == GlanceStatus.importing
            for s in snapshots),
        confirm_window=rt.settings.resize_confirm_window))
    if step.wait_on:
        caches.wait_for(step.wait_on, namespace, name)
    if step.wake_after is not None and caches.wake is not None:
        caches.wake((namespace, name), step.wake_after)
    if step.delete_disk and dv is not None:
        rt.writes.forget(DATA_VOLUMES, namespace, dv_name)
        await rt.kube.delete(DATA_VOLUMES, dv_name, namespace, uid=dv["metadata"]["uid"])
        dv = None
    if step.flavor is not None:
        # The VirtualMachine first: it is what a user waits for, and KubeVirt holds it until its DataVolume is.
        await rt.writes.ensure(VIRTUAL_MACHINES, builders.build_virtual_machine(
            inst, spec, lifecycle.flavor_spec(step.flavor), step.running), children.vm)
    if step.disk is not None and dv is None and not step.delete_disk and \
            not rt.writes.created(DATA_VOLUMES, namespace, dv_name):
        # Signing is local work (the signer's region is fixed, so minio asks the store nothing).
        url = rt.store.presigned_get(step.disk.uid, rt.settings.presign_ttl)
        await rt.writes.create(DATA_VOLUMES, builders.build_data_volume(
            inst, url, step.disk.sha512, step.disk_gib, step.disk.uid))
    if step.grow_disk and children.pvc is not None and lifecycle.gib(
            children.pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "0")) < step.grow_disk:
        await rt.kube.resize_claim(dv_name, namespace, step.grow_disk)
    if step.call is not None:
        step = await _call(rt, inst, children, step)
    await publish(rt, INSTANCES, inst, word=step.word.value, progress=step.progress, reason=step.reason,
                  message=step.message, fields={
                      **step.fields(), "virtualMachine": name, "dataVolume": dv_name,
                      "addresses": _addresses(children) if step.word in RUNNING else [],
                      "node": (children.vmi or {}).get("status", {}).get("nodeName") if step.word in RUNNING else None})
    if step.warning:
        rt.event(inst, type="Warning", reason=step.warning[0], message=step.warning[1])
    return step.again


RUNNING = {NovaStatus.active, NovaStatus.paused, NovaStatus.reboot, NovaStatus.hard_reboot, NovaStatus.resize,
           NovaStatus.verify_resize, NovaStatus.revert_resize}


async def _call(rt: Runtime, inst: dict[str, Any], children: lifecycle.Children,
                step: lifecycle.Step) -> lifecycle.Step:
    """One KubeVirt action through virt-api. pause/unpause are asked once per VMI until the VMI shows it (the
    watch lags behind the answer); a refusal ends the action it served, with virt-api's reason."""
    assert step.call is not None
    kind, action = step.call
    md = inst["metadata"]
    res, target = (VIRTUAL_MACHINE_INSTANCES, md["name"]) if kind == "vmi" else (VIRTUAL_MACHINES, md["name"])
    once = (md["namespace"], md["name"])
    if action in ("pause", "unpause") and rt.writes.last_call.get(once) == (action, children.vmi_uid):
        return step
    try:
        await rt.kube.put_subresource(res, target, md["namespace"], action)
    except Refused as e:
        if action in ("pause", "unpause") and e.status == 409:
            return step  # already so: the VMI's next event shows it
        return lifecycle.call_refused(step, f"KubeVirt refused {action} (HTTP {e.status}): {e}")
    if action in ("pause", "unpause"):
        rt.writes.last_call[once] = (action, children.vmi_uid)
    if step.called is not None:
        step.status = step.called
    return step


def _addresses(children: lifecycle.Children) -> list[dict[str, Any]]:
    interfaces = (children.vmi or {}).get("status", {}).get("interfaces", [])
    return [Address(interface=i.get("name", ""), ip=i["ipAddress"], mac=i.get("mac")).dump()
            for i in interfaces if i.get("ipAddress")]


def _flavor(caches: Caches, ref: str, namespace: str) -> FlavorSpec | lifecycle.Blocked:
    obj = caches.flavors.get((ref,))
    if obj is None:
        return lifecycle.Blocked("WaitingForFlavor", f"Flavor {ref} does not exist (yet)", on=("Flavor", ref))
    flavor = FlavorSpec.model_validate(obj.get("spec") or {})
    if not builders.flavor_usable_in(flavor, namespace):
        return lifecycle.Blocked("FlavorNotAccessible", f"Flavor {ref} is not public and namespace {namespace} is "
                                 "not in its access list", refused=True, code=403)
    return flavor


def _image(caches: Caches, ref: str, namespace: str) -> lifecycle.ImageInfo | lifecycle.Blocked:
    image_ns, image_name = builders.parse_image_ref(ref, namespace)
    obj = caches.images.get((image_ns, image_name))
    on = ("Image", image_ns, image_name)
    if obj is None:
        return lifecycle.Blocked("WaitingForImage", f"Image {image_ns}/{image_name} does not exist (yet)", on=on)
    spec = ImageSpec.model_validate(obj.get("spec") or {})
    if not builders.image_visible_to(spec, image_ns, namespace):
        # Said the way Glance says it: an image one cannot see is an image that is not found.
        return lifecycle.Blocked("ImageNotFound", f"Image {image_ns}/{image_name} is not visible to namespace "
                                 f"{namespace}", refused=True, code=404)
    status = ImageStatus.model_validate(obj.get("status") or {})
    if status.status is GlanceStatus.killed:
        return lifecycle.Blocked("ImageKilled", f"Image {image_ns}/{image_name} failed to import: {status.message}",
                                 refused=True)
    if status.status not in (GlanceStatus.active, GlanceStatus.deactivated) or not status.os_hash_value:
        return lifecycle.Blocked("WaitingForImage", f"Image {image_ns}/{image_name} is {status.status or 'queued'}, "
                                 "not active yet", on=on)
    return lifecycle.ImageInfo(ref=ref, uid=obj["metadata"]["uid"], sha512=status.os_hash_value,
                               size=status.size or 0, virtual_size=status.virtual_size or 0,
                               min_disk=spec.min_disk, min_ram=spec.min_ram,
                               deactivated=status.status is GlanceStatus.deactivated)
