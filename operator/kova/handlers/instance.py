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
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from kova import builders
from kova.compute import guest, lifecycle
from kova.conditions import Progress
from kova.handlers import access
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
    ServerGroupPolicy,
)
from kova.runtime import INSTANCES, Runtime


class Cache(Protocol):
    def get(self, key: tuple[str, ...]) -> dict[str, Any] | None: ...


class Zones(Cache, Protocol):
    def objects(self) -> Iterator[dict[str, Any]]: ...


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
    keypairs: Cache
    servergroups: Cache
    zones: Zones
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
    image = _image(caches, spec.image_ref, namespace)
    disk_image = _image(caches, status.image_ref, namespace) \
        if status.image_ref and status.image_ref != spec.image_ref else None
    booted = status.flavor is not None
    g = _guest(caches, spec, status, namespace, disk_image or image, booted)
    step = lifecycle.decide(lifecycle.Inputs(
        spec=spec, status=status, children=children,
        flavor=_flavor(caches, spec.flavor_ref, namespace), image=image, disk_image=disk_image, guest=g,
        snapshots=sorted(snapshots), snapshot_uploading=any(
            (caches.images.get((namespace, s)) or {}).get("status", {}).get("status") == GlanceStatus.importing
            for s in snapshots),
        confirm_window=rt.settings.resize_confirm_window))
    if step.wait_on:
        caches.wait_for(step.wait_on, namespace, name)
    if step.wake_after is not None and caches.wake is not None:
        caches.wake((namespace, name), step.wake_after)
    iso_name = builders.iso_volume_name(name)
    iso = caches.datavolumes.get((namespace, iso_name))
    if step.delete_disk:
        for obj, child in ((dv, dv_name), (iso, iso_name)):
            if obj is not None:
                rt.writes.forget(DATA_VOLUMES, namespace, child)
                await rt.kube.delete(DATA_VOLUMES, child, namespace, uid=obj["metadata"]["uid"])
        dv = iso = None
    if not booted and isinstance(g, builders.Guest) and step.flavor is not None and (
            not spec.security_groups or guest.DEFAULT_GROUP in spec.security_groups):
        await access.ensure_default_group(rt, namespace)
    if step.flavor is not None and isinstance(g, builders.Guest):
        # The VirtualMachine first: it is what a user waits for, and KubeVirt holds it until its DataVolume is.
        await rt.writes.ensure(VIRTUAL_MACHINES, builders.build_virtual_machine(
            inst, spec, lifecycle.flavor_spec(step.flavor), step.running, g), children.vm)
    if step.disk is not None and not step.delete_disk:
        await _disks(rt, inst, step.disk, step.disk_gib, dv, iso)
    if step.grow_disk and children.pvc is not None and lifecycle.gib(
            children.pvc.get("spec", {}).get("resources", {}).get("requests", {}).get("storage", "0")) < step.grow_disk:
        await rt.kube.resize_claim(dv_name, namespace, step.grow_disk)
    if step.call is not None:
        step = await _call(rt, inst, children, step)
    node = (children.vmi or {}).get("status", {}).get("nodeName") if step.word in RUNNING else None
    networks = {n.interface: n.network for n in g.nics} if isinstance(g, builders.Guest) else {}
    await publish(rt, INSTANCES, inst, word=step.word.value, progress=step.progress, reason=step.reason,
                  message=step.message, fields={
                      **step.fields(), "virtualMachine": name, "dataVolume": dv_name,
                      "addresses": _addresses(children, networks) if step.word in RUNNING else [],
                      "node": node, "availabilityZone": _zone_of(caches, node)})
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


async def _disks(rt: Runtime, inst: dict[str, Any], image: lifecycle.ImageInfo, size: int,
                 dv: dict[str, Any] | None, iso: dict[str, Any] | None) -> None:
    """The root disk from the image; for an ISO, the image as a CD-ROM disk and a blank root disk (Nova's
    way), each created once."""
    namespace, name = inst["metadata"]["namespace"], inst["metadata"]["name"]
    wanted: list[tuple[str, dict[str, Any] | None, bool]] = [
        (builders.data_volume_name(name), dv, image.disk_format != "iso")]
    if image.disk_format == "iso":
        wanted.append((builders.iso_volume_name(name), iso, True))
    for child, cached, from_image in wanted:
        if cached is not None or rt.writes.created(DATA_VOLUMES, namespace, child):
            continue
        # Signing is local work (the signer's region is fixed, so minio asks the store nothing).
        url = rt.store.presigned_get(image.uid, rt.settings.presign_ttl) if from_image else None
        gib = size if child.endswith("-root") else max(1, -(-max(image.size, image.virtual_size) // (1 << 30)))
        await rt.writes.create(DATA_VOLUMES, builders.build_data_volume(
            inst, url, image.sha512, gib, image.uid, name=child))


def _addresses(children: lifecycle.Children, networks: dict[str, str]) -> list[dict[str, Any]]:
    """Nova's addresses, per network (`pod` or the NetworkAttachmentDefinition) as spec.networks names it."""
    interfaces = (children.vmi or {}).get("status", {}).get("interfaces", [])
    return [Address(interface=networks.get(i.get("name", ""), i.get("name", "")), ip=i["ipAddress"],
                    mac=i.get("mac")).dump() for i in interfaces if i.get("ipAddress")]


def _guest(caches: Caches, spec: InstanceSpec, status: InstanceStatus, namespace: str,
           image: lifecycle.ImageInfo | lifecycle.Blocked, booted: bool) -> builders.Guest | lifecycle.Blocked:
    """Keys, networks, groups, placement and devices; what is missing is waited for before the boot. After
    it, the key is the one copied at boot, and a ServerGroup or zone gone meanwhile changes nothing."""
    keys: list[str] = []
    if spec.key_name:
        if status.public_key:
            keys = [status.public_key]
        else:
            kp = caches.keypairs.get((namespace, spec.key_name)) or {}
            public = (kp.get("status") or {}).get("publicKey")
            if not public and not booted:
                return lifecycle.Blocked("WaitingForKeyPair", f"KeyPair {spec.key_name} does not exist or has no key "
                                         "yet", on=("KeyPair", namespace, spec.key_name))
            keys = [public] if public else []
    policy = None
    if spec.server_group:
        group = caches.servergroups.get((namespace, spec.server_group))
        if group is None and not booted:
            return lifecycle.Blocked("WaitingForServerGroup", f"ServerGroup {spec.server_group} does not exist (yet)",
                                     on=("ServerGroup", namespace, spec.server_group))
        policy = ServerGroupPolicy((group or {}).get("spec", {}).get("policy")) if group else None
    if spec.availability_zone and not booted and caches.zones.get((spec.availability_zone,)) is None:
        return lifecycle.Blocked("WaitingForAvailabilityZone", f"no node is in availability zone "
                                 f"{spec.availability_zone} (label topology.kubernetes.io/zone) yet",
                                 on=("AvailabilityZone", spec.availability_zone))
    try:
        nics = guest.nics(spec.networks)
        devices = guest.devices(image.properties) if isinstance(image, lifecycle.ImageInfo) else guest.Devices()
    except guest.Invalid as e:
        return lifecycle.Blocked(e.reason, str(e), refused=True)
    return builders.Guest(keys=keys, nics=nics, security_groups=spec.security_groups,
                          server_group=spec.server_group if policy else None, policy=policy,
                          zone=spec.availability_zone, devices=devices,
                          iso=isinstance(image, lifecycle.ImageInfo) and image.disk_format == "iso")


def _zone_of(caches: Caches, node: str | None) -> str | None:
    if not node:
        return None
    return next((z["metadata"]["name"] for z in caches.zones.objects()
                 if node in ((z.get("status") or {}).get("hosts") or [])), None)


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
                               deactivated=status.status is GlanceStatus.deactivated,
                               disk_format=spec.disk_format.value if spec.disk_format else status.detected_format,
                               properties=dict(spec.properties))
