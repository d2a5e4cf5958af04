"""A Nova server's whole reconcile as one pure decision: from what the caches hold to the plan.

`plan` reads the Instance, its last status and, through `Lookup`s, the objects it names (Flavor, Image,
KeyPair, ServerGroup, SecurityGroup, AvailabilityZone) and its children (DataVolumes, claim, VirtualMachine, VMI). It
returns a `Plan`: the DataVolumes to delete, whether the namespace's default security group is needed, the
VirtualMachine to want, the disks to create, the claim to grow, at most one KubeVirt action, and the status
to write (kova.compute.lifecycle decides the life-cycle step). The controller (kova.controllers.instance)
only gathers the inputs and carries the plan out; `report` then says what the status is once the action
was answered. Nothing here talks to a server.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError

from kova.api import clock
from kova.api.conditions import Progress
from kova.api.errors import one_line
from kova.api.models import (
    Address,
    AttachmentState,
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
from kova.api.quantity import GiB, gib_ceil, parse_size
from kova.compute import attachments, children, guest, lifecycle
from kova.compute.flavors import flavor_usable_in
from kova.image import cache
from kova.image.rules import image_visible_to, parse_image_ref

Body = dict[str, Any]

# Nova's words while a VMI exists: the addresses and the node are shown then.
RUNNING = {NovaStatus.active, NovaStatus.paused, NovaStatus.reboot, NovaStatus.hard_reboot, NovaStatus.resize,
           NovaStatus.verify_resize, NovaStatus.revert_resize}


class Lookup(Protocol):
    def get(self, key: tuple[str, ...]) -> Body | None: ...


class Zones(Lookup, Protocol):
    def objects(self) -> Iterator[Body]: ...


@dataclass
class World:
    """What the watches delivered that one Instance's reconcile reads."""

    instance: Body
    status: Body  # its last status: the newer of the cache's and Kova's own last write (kova.adapters.writes)
    flavors: Lookup
    images: Lookup
    datavolumes: Lookup
    pvcs: Lookup
    vms: Lookup
    vmis: Lookup
    keypairs: Lookup
    servergroups: Lookup
    zones: Zones
    securitygroups: Lookup  # metadata only: whether a group exists
    snapshots: set[str] = field(default_factory=set)  # Images being made from it, by name
    shared_networks: frozenset[str] = frozenset()  # namespaces whose networks every namespace may use
    presign_ttl: dt.timedelta = dt.timedelta(hours=1)
    confirm_window: float = 0.0
    now: dt.datetime = field(default_factory=clock.now)
    quota: lifecycle.Blocked | None = None  # over its namespace's quota to boot or grow: Nova's refusal
    missing_networks: tuple[str, ...] = ()  # lifecycle.Children.missing_networks
    cache: cache.Settings = field(default_factory=lambda: cache.Settings(namespace=""))  # off unless configured
    storage_class: str | None = None  # the class of root disks (the cluster's default StorageClass)
    volumes: Lookup = field(default_factory=dict[tuple[str, ...], Body])  # the Volumes it attaches


@dataclass
class Disk:
    """A DataVolume to create if it is missing: from the image (a presigned link), or blank."""

    name: str
    image: lifecycle.ImageInfo
    gib: int
    from_image: bool
    clone: tuple[str, str] | None = None  # (namespace, entry) of the image cache to clone instead of importing


@dataclass
class Plan:
    name: str
    step: lifecycle.Step
    delete: list[tuple[str, str]] = field(default_factory=list)  # DataVolumes (name, uid) to delete first
    default_group: bool = False  # the namespace's default SecurityGroup must exist (Neutron's `default`)
    vm: Body | None = None  # the VirtualMachine to want
    disks: list[Disk] = field(default_factory=list)
    grow: int | None = None  # GiB the root claim must grow to
    nics: list[guest.Nic] = field(default_factory=list)
    children: lifecycle.Children = field(default_factory=lifecycle.Children)
    zones: Zones | None = None
    invalid: bool = False  # the spec itself is invalid: only the fault is written, the rest of the status kept
    entry: Entry | None = None  # the image cache's entry the root disk waits for or clones
    volumes: attachments.Wanted = field(default_factory=attachments.Wanted)  # spec.volumeAttachments


@dataclass
class Entry:
    """The image cache's entry of the root disk: made if missing, made again if its link expired before CDI
    read it (`expired`: its uid), cloned once ready."""

    source: cache.Source
    storage_class: str
    name: str
    namespace: str
    state: cache.Seen
    expired: str | None = None


def plan(w: World) -> Plan:
    inst = w.instance
    md = inst["metadata"]
    namespace, name = md["namespace"], md["name"]
    try:
        spec = InstanceSpec.model_validate(inst.get("spec") or {})
        status = InstanceStatus.model_validate(w.status)
    except ValidationError as e:
        message = one_line(e, "spec")
        return Plan(name, lifecycle.Step(NovaStatus.error, Progress.STALLED, "InvalidSpec", message, InstanceStatus(),
                                         fault=Fault(code=400, message=message)), invalid=True)
    dv_name, iso_name = children.data_volume_name(name), children.iso_volume_name(name)
    dv, iso = w.datavolumes.get((namespace, dv_name)), w.datavolumes.get((namespace, iso_name))
    delete: list[tuple[str, str]] = []
    if dv is not None and children.image_link_expired(dv, w.presign_ttl, w.now):
        # CDI could not read the image because the link expired: a new DataVolume gets a new link.
        delete.append((dv_name, dv["metadata"]["uid"]))
        dv = None
    wanted = attachments.wanted(inst, spec, status, w.volumes)
    kids = lifecycle.Children(dv=dv, pvc=w.pvcs.get((namespace, dv_name)), vm=w.vms.get((namespace, name)),
                              missing_networks=w.missing_networks,
                              vmi=w.vmis.get((namespace, name)))
    if spec.boot_volume is not None:  # its root disk is the volume's claim: no disk of its own to make or grow
        kids.dv, kids.pvc = w.datavolumes.get((namespace, attachments.claim_name(spec.boot_volume.volume))), None
        image = boot_image(wanted, spec.boot_volume.volume, namespace)
    else:
        image = image_info(w.images, spec.image_ref or "", namespace)
    disk_image = image_info(w.images, status.image_ref, namespace) \
        if status.image_ref and status.image_ref != spec.image_ref else None
    booted = status.flavor is not None
    g = guest_of(w, spec, status, disk_image or image, booted)
    flavor = flavor_info(w.flavors, spec.flavor_ref, namespace)
    if w.quota is not None:
        # Over quota: refused before anything is made, as Nova refuses it at create; or a resize refused
        # before it starts (the quota is asked only about a resize that has not started).
        flavor = w.quota
    step = lifecycle.decide(lifecycle.Inputs(
        spec=spec, status=status, children=kids, flavor=flavor,
        image=image, disk_image=disk_image, guest=g, snapshots=sorted(w.snapshots),
        snapshot_uploading=any((w.images.get((namespace, s)) or {}).get("status", {}).get("status")
                               == GlanceStatus.importing for s in w.snapshots),
        now=w.now, confirm_window=w.confirm_window))
    out = Plan(name, step, delete=delete, children=kids, zones=w.zones, volumes=wanted)
    if step.delete_disk:
        out.delete += [(n, obj["metadata"]["uid"]) for n, obj in ((dv_name, dv), (iso_name, iso)) if obj is not None]
        dv = iso = None
    if isinstance(g, children.Guest):
        out.nics = g.nics
        g.volumes = out.volumes.grants
        g.boot_claim = out.volumes.boot.claim if out.volumes.boot is not None else None
        if step.flavor is not None:
            out.default_group = not booted and (not spec.security_groups or guest.DEFAULT_GROUP in spec.security_groups)
            out.vm = children.build_virtual_machine(inst, spec, lifecycle.flavor_spec(step.flavor), step.running, g)
    if step.disk is not None and not step.delete_disk and spec.boot_volume is None:
        out.disks = disks(name, step.disk, step.disk_gib, dv, iso)
        through_cache(w, out)
    cloned = any(d.clone for d in out.disks) or bool(((dv or {}).get("metadata", {}).get("labels") or {}).get(
        cache.ENTRY_LABEL))
    if cloned and step.word is NovaStatus.build and step.reason == "Spawning" and step.disk is not None:
        step.message = (f"cloning image {step.disk.ref} from the image cache into a {step.disk_gib} GiB root disk, "
                        "then starting it")
    claim = (kids.pvc or {}).get("spec", {}).get("resources", {}).get("requests", {}).get("storage")
    # Whole GiB rounded down: CDI asked a few percent more than the disk for its filesystem overhead.
    if step.grow_disk and kids.pvc is not None and (parse_size(claim) // GiB if claim else 0) < step.grow_disk:
        out.grow = step.grow_disk
    return out


def report(p: Plan) -> tuple[lifecycle.Step, dict[str, Any]]:
    """The step as it stands after its action was answered, and the status fields to write with it."""
    step, kids = p.step, p.children
    if p.invalid:
        return step, {"fault": step.fault.dump() if step.fault else None}
    running = step.word in RUNNING
    node = (kids.vmi or {}).get("status", {}).get("nodeName") if running else None
    networks = {n.interface: n.network for n in p.nics}
    attached = attachments.observed(p.volumes, kids.vmi if running else None, step.status)
    boot = p.volumes.boot
    return step, {**step.fields(), "virtualMachine": p.name,
                  "dataVolume": boot.claim if boot is not None else children.data_volume_name(p.name),
                  "volumeAttachments": [a.model_dump(by_alias=True, mode="json", exclude_none=True) for a in attached],
                  "addresses": addresses(kids, networks) if running else [],
                  "node": node, "availabilityZone": zone_of(p.zones, node) if p.zones is not None else None}


def disks(name: str, image: lifecycle.ImageInfo, size: int, dv: Body | None, iso: Body | None) -> list[Disk]:
    """The root disk from the image; for an ISO, the image as a CD-ROM disk and a blank root disk (Nova's
    way). Only those not there yet."""
    wanted = [Disk(children.data_volume_name(name), image, size, image.disk_format != "iso")]
    if image.disk_format == "iso":
        wanted.append(Disk(children.iso_volume_name(name), image,
                           max(1, gib_ceil(max(image.size, image.virtual_size))), True))
    have = {children.data_volume_name(name): dv, children.iso_volume_name(name): iso}
    return [d for d in wanted if have[d.name] is None]


def through_cache(w: World, out: Plan) -> None:
    """A root disk from an image on a class the cache serves is cloned from the image's entry: made first if
    it is missing (the Instance waits in BUILD, saying so), cloned once CDI imported it. An entry CDI cannot
    import is not waited for: the disk is imported directly, as without the cache."""
    root = next((d for d in out.disks if d.from_image and d.name == children.data_volume_name(out.name)
                 and d.image.disk_format != "iso"), None)
    if root is None or not w.cache.serves(w.storage_class):
        return
    assert w.storage_class is not None
    image = root.image
    name = cache.entry_name(image.uid, w.storage_class)
    dv = w.datavolumes.get((w.cache.namespace, name))
    expired = dv["metadata"]["uid"] if dv is not None and children.image_link_expired(
        dv, w.presign_ttl, w.now) else None
    seen = cache.seen(None if expired else dv)
    ns, image_name = parse_image_ref(image.ref, w.instance["metadata"]["namespace"])
    out.entry = Entry(cache.Source(image.uid, ns, image_name, image.sha512,
                                   cache.entry_gib(image.size, image.virtual_size), image.stores),
                      w.storage_class, name, w.cache.namespace, seen, expired)
    if seen.state is cache.State.broken:
        return
    if seen.state is cache.State.ready:
        root.clone = (w.cache.namespace, name)
        return
    out.disks.remove(root)  # not before the entry is ready: CDI would clone a half-imported claim
    step = out.step
    if step.word is NovaStatus.build:
        step.reason = "CachingImage"
        step.message = (f"caching image {image.ref} for storage class {w.storage_class} (imported once, then "
                        f"cloned into a {root.gib} GiB root disk)")
    step.wait_on = ("DataVolume", w.cache.namespace, name)


def addresses(kids: lifecycle.Children, networks: dict[str, str]) -> list[dict[str, Any]]:
    """Nova's addresses, per network (`pod` or the NetworkAttachmentDefinition) as spec.networks names it."""
    interfaces = (kids.vmi or {}).get("status", {}).get("interfaces", [])
    return [Address(interface=networks.get(i.get("name", ""), i.get("name", "")), ip=i["ipAddress"],
                    mac=i.get("mac")).dump() for i in interfaces if i.get("ipAddress")]


def zone_of(zones: Zones, node: str | None) -> str | None:
    if not node:
        return None
    return next((z["metadata"]["name"] for z in zones.objects()
                 if node in ((z.get("status") or {}).get("hosts") or [])), None)


# ---------------------------------------------------------------------------------------------- inputs
def guest_of(w: World, spec: InstanceSpec, status: InstanceStatus, image: lifecycle.ImageInfo | lifecycle.Blocked,
             booted: bool) -> children.Guest | lifecycle.Blocked:
    """Keys, networks, groups, placement and devices; what is missing is waited for before the boot. After
    it, the key is the one copied at boot, and a ServerGroup or zone gone meanwhile changes nothing."""
    namespace = w.instance["metadata"]["namespace"]
    keys: list[str] = []
    rebuilding = bool(status.image_ref) and spec.image_ref != status.image_ref
    if spec.key_name:
        if status.public_key and not rebuilding:
            keys = [status.public_key]
        else:
            # At boot, and at a rebuild (which may name another key pair, Nova 2.54): the KeyPair's key, or the
            # one copied at boot when it is gone.
            kp = w.keypairs.get((namespace, spec.key_name)) or {}
            public = (kp.get("status") or {}).get("publicKey") or (status.public_key if rebuilding else None)
            if not public and not booted:
                return lifecycle.Blocked("WaitingForKeyPair", f"KeyPair {spec.key_name} does not exist or has no key "
                                         "yet", on=("KeyPair", namespace, spec.key_name))
            keys = [public] if public else []
    policy = None
    if spec.server_group:
        group = w.servergroups.get((namespace, spec.server_group))
        if group is None and not booted:
            return lifecycle.Blocked("WaitingForServerGroup", f"ServerGroup {spec.server_group} does not exist (yet)",
                                     on=("ServerGroup", namespace, spec.server_group))
        policy = ServerGroupPolicy((group or {}).get("spec", {}).get("policy")) if group else None
    missing = [] if booted else [g for g in dict.fromkeys(spec.security_groups)
                                 if g != guest.DEFAULT_GROUP and w.securitygroups.get((namespace, g)) is None]
    if missing:
        # Nova refuses a server whose groups Neutron does not find; here it waits for them, as for a Flavor.
        # Kova makes `default` itself. A running server whose group goes keeps running (its deletion is held).
        return lifecycle.Blocked("WaitingForSecurityGroup", f"Security group {', '.join(missing)} not found: Unable to "
                                 f"find security_group with name or id '{missing[0]}'; the Instance boots once it "
                                 "exists", on=("SecurityGroup", namespace, missing[0]))
    if spec.availability_zone and not booted and w.zones.get((spec.availability_zone,)) is None:
        return lifecycle.Blocked("WaitingForAvailabilityZone", f"no node is in availability zone "
                                 f"{spec.availability_zone} (label topology.kubernetes.io/zone) yet",
                                 on=("AvailabilityZone", spec.availability_zone))
    try:
        nics = guest.nics(spec.networks, namespace, w.shared_networks)
        devices = guest.devices(image.properties) if isinstance(image, lifecycle.ImageInfo) else guest.Devices()
    except guest.Invalid as e:
        return lifecycle.Blocked(e.reason, str(e), refused=True, code=e.code)
    return children.Guest(keys=keys, nics=nics, security_groups=spec.security_groups,
                          server_group=spec.server_group if policy else None, policy=policy,
                          zone=spec.availability_zone, devices=devices,
                          iso=isinstance(image, lifecycle.ImageInfo) and image.disk_format == "iso")


def boot_image(wanted: attachments.Wanted, volume: str, namespace: str) -> lifecycle.ImageInfo | lifecycle.Blocked:
    """What a server booted from a volume boots: the volume, once the volume holds it for this server (Nova
    boots it as it is, whatever the flavor's disk: no image to check, nothing to import); or why not yet, or
    not at all (another server holds it)."""
    if wanted.boot is not None:
        return lifecycle.ImageInfo(ref="", uid=wanted.boot.serial, sha512="", size=0, virtual_size=0, min_disk=0,
                                   min_ram=0, disk_format="raw", volume=True)
    waits = wanted.boot_waits
    message = waits.message if waits is not None and waits.message else f"waiting for Volume {volume}"
    if waits is not None and waits.state is AttachmentState.refused:
        return lifecycle.Blocked("VolumeInUse", message, refused=True, code=400)
    return lifecycle.Blocked("WaitingForVolume", message, on=("Volume", namespace, volume))


def flavor_info(flavors: Lookup, ref: str, namespace: str) -> FlavorSpec | lifecycle.Blocked:
    obj = flavors.get((ref,))
    if obj is None:
        return lifecycle.Blocked("WaitingForFlavor", f"Flavor {ref} does not exist (yet)", on=("Flavor", ref))
    flavor = FlavorSpec.model_validate(obj.get("spec") or {})  # the CRD's schema checked it
    if not flavor_usable_in(flavor, namespace):
        return lifecycle.Blocked("FlavorNotAccessible", f"Flavor {ref} is not public and namespace {namespace} is "
                                 "not in its access list", refused=True, code=403)
    return flavor


def image_info(images: Lookup, ref: str, namespace: str) -> lifecycle.ImageInfo | lifecycle.Blocked:
    """An Image the instance may boot (Glance's visibility; active, its data checked), or why not."""
    image_ns, image_name = parse_image_ref(ref, namespace)
    obj = images.get((image_ns, image_name))
    on = ("Image", image_ns, image_name)
    if obj is None:
        return lifecycle.Blocked("WaitingForImage", f"Image {image_ns}/{image_name} does not exist (yet)", on=on)
    spec = ImageSpec.model_validate(obj.get("spec") or {})
    if not image_visible_to(spec, image_ns, namespace):
        # An image one cannot see is one that does not exist, word for word: another namespace's images are
        # not to be probed through an Instance's status. It boots once the image is shared with it.
        return lifecycle.Blocked("WaitingForImage", f"Image {image_ns}/{image_name} does not exist (yet)", on=on)
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
                               properties=dict(spec.properties), stores=tuple(status.stores))
