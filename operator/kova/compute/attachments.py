"""Volumes attached to servers (Nova's os-volume_attachments, Cinder's attachments), as pure decisions.

One writer decides who holds a volume: the Volume's own reconcile (`holders`), which reserves a volume that
is not multiattach for one server at a time, the oldest asking first, and keeps a server until its disk is
unplugged. An Instance plugs only the volumes whose Volume lists it (`wanted`), and is refused one held by
another server. The disk is a KubeVirt hot-pluggable volume (declarative hotplug: the VM's template changes,
virt-controller plugs it into the running VMI; a stopped server gets it at start) on the SCSI bus, its serial
the volume's uid as Nova sets it; the guest's device is what virt-handler reports (`observed`)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from kova.api.models import (
    AttachedVolume,
    AttachmentState,
    InstanceSpec,
    InstanceStatus,
    VolumeHolder,
    VolumeStatus,
    VolumeWord,
)

Body = dict[str, Any]
DISK_PREFIX = "vol-"
HOLDING = (AttachmentState.attached, AttachmentState.detaching)  # an Instance's disk is plugged, or going


def disk_name(volume: str) -> str:
    """The VM's disk and volume of an attached Volume (Kova's own disks are root, cdrom, ephemeral, swap and
    cloudinit)."""
    return f"{DISK_PREFIX}{volume}"


@dataclass(frozen=True)
class Grant:
    """A volume this server holds: plugged into its VM."""

    volume: str
    claim: str
    serial: str  # the Volume's uid (Nova's serial)
    shareable: bool = False
    tag: str | None = None
    delete_on_termination: bool = False


@dataclass
class Wanted:
    boot: Grant | None = None  # the volume it boots from, once it holds it
    boot_waits: AttachedVolume | None = None  # or why it cannot boot from it yet (state refused: for good)
    grants: list[Grant] = field(default_factory=list)
    waiting: list[AttachedVolume] = field(default_factory=list)  # not held yet, or refused
    refused: list[tuple[str, str]] = field(default_factory=list)  # Events (reason, message), new refusals only
    wait_on: list[tuple[str, ...]] = field(default_factory=list)


def claim_name(volume: str) -> str:
    """A Volume's DataVolume and claim (Cinder names a volume's backing `volume-<id>`)."""
    return f"volume-{volume}"


def wanted(instance: Body, spec: InstanceSpec, previous: InstanceStatus, volumes: Any) -> Wanted:
    """The volumes of spec.volumeAttachments (and its bootVolume) this server holds (its Volume's status lists
    it), waits for, or is refused (another server holds one that is not multiattach, as Nova answers 400)."""
    md = instance["metadata"]
    namespace, uid = md["namespace"], md.get("uid", "")
    before = {a.volume: a for a in previous.volume_attachments}
    out = Wanted()
    asked = [(att.volume, att.tag, att.delete_on_termination, False) for att in spec.volume_attachments]
    if spec.boot_volume is not None:
        asked.insert(0, (spec.boot_volume.volume, None, spec.boot_volume.delete_on_termination, True))
    for name, tag, delete, boot in asked:
        vol = volumes.get((namespace, name))
        common: dict[str, Any] = {"volume": name, "tag": tag, "delete_on_termination": delete}
        waits = len(out.waiting)
        if vol is None:
            out.waiting.append(AttachedVolume(state=AttachmentState.attaching, message=(
                f"Volume {name} does not exist (yet)"), **common))
            out.wait_on.append(("Volume", namespace, name))
            if boot:
                out.boot_waits = out.waiting.pop()
            continue
        st = VolumeStatus.model_validate(vol.get("status") or {})
        multi = bool((vol.get("spec") or {}).get("multiattach"))
        if any(h.server_uid == uid for h in st.attachments):
            grant = Grant(name, claim_name(name), vol["metadata"]["uid"], multi, tag,
                          delete)
            if boot:
                out.boot = grant
            else:
                out.grants.append(grant)
            continue
        others = [h.server for h in st.attachments if h.server_uid != uid]
        if others and not multi:
            message = (f"Invalid volume: volume {name} is attached to server {others[0]} and is not "
                       "multiattach (Nova answers 400); detach it there first")
            out.waiting.append(AttachedVolume(state=AttachmentState.refused, message=message, **common))
            if not boot and (before.get(name) is None or
                             before[name].state is not AttachmentState.refused):
                out.refused.append(("VolumeAttachRefused", message))
        else:
            word = st.status.value if st.status else "creating"
            out.waiting.append(AttachedVolume(state=AttachmentState.attaching, message=(
                f"Volume {name} is {word}: attached once it is available"), **common))
            out.wait_on.append(("Volume", namespace, name))
        if boot and len(out.waiting) > waits:  # the boot volume's wait is the server's, said in its status
            out.boot_waits = out.waiting.pop()
    return out


def hotplug(template_spec: Body, grants: Iterable[Grant]) -> None:
    """The VM template's hot-pluggable disks: KubeVirt plugs them into a running VMI (declarative hotplug)."""
    devices = template_spec["domain"]["devices"]
    for g in grants:
        disk: Body = {"name": disk_name(g.volume), "disk": {"bus": "scsi"}, "serial": g.serial}
        if g.shareable:
            disk["shareable"] = True
        devices["disks"].append(disk)
        template_spec["volumes"].append({"name": disk_name(g.volume), "persistentVolumeClaim": {
            "claimName": g.claim, "hotpluggable": True}})


def unwanted(vm: Body | None, desired: Body) -> bool:
    """Whether the VM still has a volume's disk that the desired VM no longer has (a detach): a desired VM
    holds what Kova wants, and entries of others are left alone, so a removal must be looked for."""
    def plugged(obj: Body | None) -> set[str]:
        volumes = (((obj or {}).get("spec") or {}).get("template") or {}).get("spec", {}).get("volumes") or []
        return {str(v.get("name")) for v in volumes if str(v.get("name", "")).startswith(DISK_PREFIX)}
    return bool(plugged(vm) - plugged(desired))


def observed(w: Wanted, vmi: Body | None, previous: InstanceStatus) -> list[AttachedVolume]:
    """What the server has of each volume: attached once virt-handler says the disk is Ready (its target is the
    guest's device), attaching until then; a disk still in the VMI whose volume was detached is detaching. A
    stopped server has its volumes attached: they are plugged at start."""
    statuses = {s.get("name"): s for s in ((vmi or {}).get("status") or {}).get("volumeStatus") or []}
    before = {a.volume: a for a in previous.volume_attachments}
    out: list[AttachedVolume] = []
    for g in w.grants:
        common: dict[str, Any] = {"volume": g.volume, "serial": g.serial, "tag": g.tag,
                  "delete_on_termination": g.delete_on_termination}
        s = statuses.get(disk_name(g.volume))
        if vmi is None:
            was = before.get(g.volume)
            out.append(AttachedVolume(state=AttachmentState.attached, device=was.device if was else None, **common))
        elif s is not None and s.get("phase") == "Ready" and s.get("target"):
            out.append(AttachedVolume(state=AttachmentState.attached, device=f"/dev/{s['target']}", **common))
        else:
            said = (s or {}).get("message") or "waiting for KubeVirt to plug the disk in"
            out.append(AttachedVolume(state=AttachmentState.attaching, message=said, **common))
    if w.boot is not None:  # the root disk (Nova lists a server's boot volume among its attachments)
        g, root = w.boot, statuses.get("root") or {}
        was = before.get(g.volume)
        device = f"/dev/{root['target']}" if root.get("target") else (was.device if was else None)
        out.append(AttachedVolume(volume=g.volume, state=AttachmentState.attached, device=device, serial=g.serial,
                                  delete_on_termination=g.delete_on_termination))
    elif w.boot_waits is not None:
        out.append(w.boot_waits)
    out += w.waiting
    held = {a.volume for a in out}
    for name, s in statuses.items():
        volume = str(name or "").removeprefix(DISK_PREFIX)
        if str(name or "").startswith(DISK_PREFIX) and volume not in held:
            was = before.get(volume)
            device = f"/dev/{s['target']}" if s.get("target") else (was.device if was else None)
            out.append(AttachedVolume(volume=volume, state=AttachmentState.detaching, device=device,
                                      serial=was.serial if was else None, message=s.get("message")))
    return sorted(out, key=lambda a: a.volume)


def volumes_named(instance: Body) -> set[str]:
    """The volumes an Instance asks for (its boot volume too) or still reports."""
    boot = ((instance.get("spec") or {}).get("bootVolume") or {}).get("volume")
    return {a["volume"] for part in ("spec", "status") for a in (instance.get(part) or {}).get("volumeAttachments")
            or [] if a.get("volume")} | ({boot} if boot else set())


def _asks(spec: Body, volume: str) -> Body | None:
    """The Instance spec's request for the volume: its attachment, or its boot volume."""
    boot = spec.get("bootVolume") or {}
    if boot.get("volume") == volume:
        return dict(boot)
    return next((a for a in spec.get("volumeAttachments") or [] if a.get("volume") == volume), None)


# ----- the Volume's side -----
def _entries(instance: Body, volume: str) -> tuple[bool, AttachedVolume | None]:
    """Whether the Instance asks for the volume (and is not being deleted), and what its status says of it."""
    asks = not instance["metadata"].get("deletionTimestamp") and _asks(instance.get("spec") or {}, volume) is not None
    entry = next((a for a in (instance.get("status") or {}).get("volumeAttachments") or []
                  if a.get("volume") == volume), None)
    return asks, AttachedVolume.model_validate(entry) if entry else None


def holders(volume: Body, instances: Iterable[Body], now: str) -> list[VolumeHolder]:
    """The servers holding the volume (status.attachments), decided by the volume alone: a server keeps it while
    it asks for it or its disk is still plugged; a volume that is not multiattach goes to one server, the
    oldest that asks (then by name), only once no server holds it."""
    name = volume["metadata"]["name"]
    multi = bool((volume.get("spec") or {}).get("multiattach"))
    previous = VolumeStatus.model_validate(volume.get("status") or {}).attachments
    servers = {i["metadata"]["uid"]: i for i in instances
               if i["metadata"]["namespace"] == volume["metadata"]["namespace"]}
    kept: list[VolumeHolder] = []
    for h in previous:
        inst = servers.get(h.server_uid)
        if inst is None:
            continue
        asks, entry = _entries(inst, name)
        if asks or (entry is not None and entry.state in HOLDING):
            kept.append(h.model_copy())
    held = {h.server_uid for h in kept}
    asking = sorted((i for uid, i in servers.items() if uid not in held and _entries(i, name)[0]),
                    key=lambda i: (i["metadata"].get("creationTimestamp") or "", i["metadata"]["name"]))
    for inst in asking if multi else asking[:1] if not kept else []:
        kept.append(VolumeHolder(server=inst["metadata"]["name"], server_uid=inst["metadata"]["uid"],
                                 state=AttachmentState.attaching))
    for h in kept:
        asks, entry = _entries(servers[h.server_uid], name)
        if not asks:
            h.state = AttachmentState.detaching
        elif entry is not None and entry.state is AttachmentState.attached:
            h.state, h.device, h.attached_at = AttachmentState.attached, entry.device, h.attached_at or now
        else:
            h.state = AttachmentState.attaching
    return kept


def word(holders_: list[VolumeHolder]) -> VolumeWord | None:
    """Cinder's word for an available volume with these holders (None: available)."""
    states = {h.state for h in holders_}
    if AttachmentState.attached in states:
        return VolumeWord.in_use
    if AttachmentState.attaching in states:
        return VolumeWord.attaching
    if AttachmentState.detaching in states:
        return VolumeWord.detaching
    return None


def owners(volume: Body, holders_: list[VolumeHolder], instances: Iterable[Body]) -> list[Body]:
    """The volume's owner references after deleteOnTermination: the Instances holding it that ask for it to go
    with them (Kubernetes' garbage collector deletes it with the last of them), and any other owner it had."""
    name = volume["metadata"]["name"]
    servers = {i["metadata"]["uid"]: i for i in instances}
    # A reference to an Instance that is gone stays: the garbage collector is about to delete the volume.
    keep = [o for o in volume["metadata"].get("ownerReferences") or []
            if o.get("kind") != "Instance" or o.get("uid") not in servers]
    for h in holders_:
        inst = servers.get(h.server_uid)
        att = _asks((inst or {}).get("spec") or {}, name)
        if inst is not None and att is not None and att.get("deleteOnTermination"):
            keep.append({"apiVersion": inst["apiVersion"], "kind": "Instance", "name": inst["metadata"]["name"],
                         "uid": inst["metadata"]["uid"]})
    return keep
