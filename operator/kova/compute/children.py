"""The children an Instance wants (a CDI DataVolume per disk, a KubeVirt VirtualMachine), as pure functions
of its spec, flavor and guest: the same inputs give the same dicts, so every rule is unit-tested without a
cluster (tests/unit/test_builders.py, and test_guest.py against KubeVirt's schema)."""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

from kova.api import clock
from kova.api.models import GROUP_COMPUTE, FlavorSpec, InstanceSpec, ServerGroupPolicy
from kova.api.resources import MANAGED_BY, owner_reference
from kova.compute import attachments, guest
from kova.image import cache

INSTANCE_LABEL = f"{GROUP_COMPUTE}/instance"
SERVER_METADATA = f"{GROUP_COMPUTE}/server-metadata"
DISK_IMAGE_ANNOTATION = f"{GROUP_COMPUTE}/image-uid"


def child_metadata(instance: dict[str, Any], name: str) -> dict[str, Any]:
    md = instance["metadata"]
    return {"name": name, "namespace": md["namespace"],
            "labels": {**MANAGED_BY, INSTANCE_LABEL: md["name"]},
            "ownerReferences": [owner_reference(instance)]}


def data_volume_name(instance_name: str) -> str:
    return f"{instance_name}-root"


def iso_volume_name(instance_name: str) -> str:
    return f"{instance_name}-iso"


def build_data_volume(instance: dict[str, Any], url: str | None, sha512: str, size_gib: int,
                      image_uid: str | None = None, name: str | None = None,
                      clone: tuple[str, str] | None = None) -> dict[str, Any]:
    """A disk: CDI imports the image over HTTP from a presigned URL and checks its sha512, so the tenant
    namespace never holds store credentials, only a short-lived read link to this one object. Without a URL
    the disk is blank (the root disk of an ISO boot). With `clone` (the image cache's namespace and entry,
    kova.image.cache), CDI clones the entry's DataSource instead and grows it to the disk's size. The image's
    uid is kept on it: a rebuild knows which disk is the old one."""
    metadata = child_metadata(instance, name or data_volume_name(instance["metadata"]["name"]))
    if image_uid:
        metadata["annotations"] = {DISK_IMAGE_ANNOTATION: image_uid}
    spec: dict[str, Any] = {"storage": {"resources": {"requests": {"storage": f"{size_gib}Gi"}}}}
    if clone is not None:
        metadata["labels"][cache.ENTRY_LABEL] = clone[1]
        spec["sourceRef"] = {"kind": "DataSource", "namespace": clone[0], "name": clone[1]}
    else:
        spec["source"] = {"http": {"url": url, "checksum": f"sha512:{sha512}"}} if url else {"blank": {}}
    return {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": metadata, "spec": spec}


@dataclass
class Guest:
    """What the VM gets besides its flavor (kova.compute.guest): keys, networks, groups, placement, devices."""

    keys: list[str] = field(default_factory=list)
    nics: list[guest.Nic] = field(default_factory=lambda: guest.nics([]))
    security_groups: list[str] = field(default_factory=list)
    server_group: str | None = None
    policy: ServerGroupPolicy | None = None
    zone: str | None = None
    devices: guest.Devices = field(default_factory=guest.Devices)
    iso: bool = False
    volumes: list[attachments.Grant] = field(default_factory=list)  # Volumes it holds: hot-pluggable disks
    boot_claim: str | None = None  # booted from a Volume: its claim is the root disk


def build_virtual_machine(instance: dict[str, Any], spec: InstanceSpec, flavor: FlavorSpec,
                          running: bool, g: Guest | None = None) -> dict[str, Any]:
    g = g or Guest()
    name = instance["metadata"]["name"]
    cpu: dict[str, Any] = {"cores": flavor.vcpus, "sockets": 1, "threads": 1}
    memory: dict[str, Any] = {"guest": f"{flavor.ram}Mi"}
    specs = flavor.extra_specs
    if specs.get("hw:cpu_policy") == "dedicated":
        cpu["dedicatedCpuPlacement"] = True
    page = {"large": "2Mi", "2MB": "2Mi", "2048": "2Mi", "1GB": "1Gi", "1048576": "1Gi"}.get(
        specs.get("hw:mem_page_size", ""))
    if page:
        memory["hugepages"] = {"pageSize": page}
    bus = g.devices.disk_bus
    disks: list[dict[str, Any]] = [{"name": "root", "disk": {"bus": bus}, "bootOrder": 2 if g.iso else 1}]
    root: dict[str, Any] = {"persistentVolumeClaim": {"claimName": g.boot_claim}} if g.boot_claim else {
        "dataVolume": {"name": data_volume_name(name)}}
    volumes: list[dict[str, Any]] = [{"name": "root", **root}]
    if g.iso:  # Nova boots an ISO image as a CD-ROM, with a blank root disk of the flavor's size to install on
        disks.insert(0, {"name": "cdrom", "cdrom": {"bus": g.devices.cdrom_bus, "readonly": True}, "bootOrder": 1})
        volumes.insert(0, {"name": "cdrom", "dataVolume": {"name": iso_volume_name(name)}})
    if flavor.ephemeral:
        disks.append({"name": "ephemeral", "disk": {"bus": bus}})
        volumes.append({"name": "ephemeral", "emptyDisk": {"capacity": f"{flavor.ephemeral}Gi"}})
    if flavor.swap:
        disks.append({"name": "swap", "disk": {"bus": bus}})
        volumes.append({"name": "swap", "emptyDisk": {"capacity": f"{flavor.swap}Mi"}})
    data = guest.user_data(spec.user_data, g.keys)
    if data is not None:
        disks.append({"name": "cloudinit", "disk": {"bus": "virtio"}})
        volumes.append({"name": "cloudinit", "cloudInitNoCloud": {"userData": data}})
    interfaces, networks = guest.interfaces(g.nics, g.devices.vif_model, instance["metadata"].get("uid"))
    template_spec: dict[str, Any] = {
        "domain": {
            "cpu": cpu,
            "memory": memory,
            "resources": {"requests": {"memory": f"{flavor.ram}Mi", "cpu": str(flavor.vcpus)}},
            # No network (Nova's `none`): KubeVirt would otherwise add the pod network by itself.
            "devices": {"disks": disks, "interfaces": interfaces,
                        **({} if interfaces else {"autoattachPodInterface": False})},
        },
        "networks": networks,
        "volumes": volumes,
    }
    guest.apply_devices(template_spec["domain"], g.devices)
    attachments.hotplug(template_spec, g.volumes)
    # Nova server metadata: KubeVirt's NoCloud source has no free-form meta-data, so it travels as a JSON
    # annotation on the VM and on the VMI (from the template), where guest tooling can read it.
    annotations = {SERVER_METADATA: json.dumps(spec.metadata, sort_keys=True)} if spec.metadata else {}
    selector = {k.removeprefix("kova:node_selector:"): v for k, v in specs.items()
                if k.startswith("kova:node_selector:")}
    if g.zone:
        selector[guest.ZONE_LABEL] = g.zone
    if selector:
        template_spec["nodeSelector"] = selector
    placement = guest.affinity(g.server_group, g.policy)
    if placement:
        template_spec["affinity"] = placement
    metadata = child_metadata(instance, name)
    labels = {**MANAGED_BY, INSTANCE_LABEL: name, **guest.group_labels(g.security_groups)}
    if g.server_group:
        labels[guest.SERVER_GROUP_LABEL] = g.server_group
    template_metadata: dict[str, Any] = {"labels": labels}
    if annotations:
        metadata["annotations"] = annotations
        template_metadata["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": {
            "runStrategy": "Always" if running else "Halted",
            "template": {"metadata": template_metadata, "spec": template_spec},
        },
    }


def import_restarts(dv: dict[str, Any]) -> int:
    """How often CDI's importer pod failed and was restarted (DataVolume `status.restartCount`). CDI never
    fails an import that cannot read its source: kubelet restarts the importer (restartPolicy OnFailure)
    and the DataVolume stays ImportInProgress, its Running condition saying why (CDI PR #1099)."""
    return int((dv.get("status") or {}).get("restartCount") or 0)


def image_link_expired(dv: dict[str, Any], ttl: dt.timedelta, now: dt.datetime) -> bool:
    """CDI could not read the image (the importer failed at least once and the import is still retried) and
    the DataVolume is older than its link's lifetime: the link expired before the import ran, and CDI would
    retry it forever. A new DataVolume gets a new link. A failure CDI made final (a checksum that does not
    match: phase Failed) is not cured by a new link; neither is one while the link is still valid."""
    status = dv.get("status") or {}
    if status.get("phase") in ("Succeeded", "Failed") or import_restarts(dv) < 1:
        return False
    return now - clock.parse(dv["metadata"]["creationTimestamp"]) >= ttl
