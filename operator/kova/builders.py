"""Pure functions from Kova objects to the children they want, and from the children back to a status.

Nothing here talks to a server: given the same inputs the same dicts come out, so every rule is
unit-tested without a cluster (tests/unit/test_builders.py).
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass, field
from typing import Any

from kova.conditions import Progress
from kova.models import (
    GROUP_COMPUTE,
    Address,
    Fault,
    FlavorSpec,
    GlanceStatus,
    ImageSpec,
    ImageStatus,
    InstanceSpec,
    NovaStatus,
    PowerState,
    Visibility,
)
from kova.store import Blob

GiB = 1024**3
MANAGED_BY = {"app.kubernetes.io/managed-by": "kova"}
INSTANCE_LABEL = f"{GROUP_COMPUTE}/instance"
SERVER_METADATA = f"{GROUP_COMPUTE}/server-metadata"


# ---------------------------------------------------------------------------------------------- rules
def parse_image_ref(ref: str, namespace: str) -> tuple[str, str]:
    """`name` → (namespace, name); `other/name` → (other, name)."""
    ns, _, name = ref.rpartition("/")
    return (ns or namespace, name)


def image_visible_to(spec: ImageSpec, image_namespace: str, namespace: str) -> bool:
    """Glance visibility across namespaces (a namespace plays the part of a Keystone project)."""
    if namespace == image_namespace or spec.visibility in (Visibility.public, Visibility.community):
        return True
    return spec.visibility is Visibility.shared and namespace in spec.members


def flavor_usable_in(spec: FlavorSpec, namespace: str) -> bool:
    return spec.public or namespace in spec.access


def root_disk_gib(flavor: FlavorSpec, image: ImageSpec, status: ImageStatus) -> int:
    """Nova's rule: the flavor's disk, or the image's own size when the flavor says 0; never below minDisk."""
    image_bytes = max(status.virtual_size or 0, status.size or 0)
    return max(flavor.disk, math.ceil(image_bytes / GiB), image.min_disk, 1)


def boot_refusal(flavor: FlavorSpec, image: ImageSpec, status: ImageStatus) -> str | None:
    """Why this image cannot boot on this flavor (Nova's FlavorDiskTooSmall / FlavorMemoryTooSmall)."""
    if flavor.ram < image.min_ram:
        return f"flavor has {flavor.ram} MiB of RAM, the image needs minRam {image.min_ram} MiB"
    if flavor.disk:
        needed = max(image.min_disk, math.ceil((status.virtual_size or 0) / GiB))
        if flavor.disk < needed:
            return f"flavor disk is {flavor.disk} GiB, the image needs {needed} GiB"
    return None


# ---------------------------------------------------------------------------------------------- children
def owner_reference(owner: dict[str, Any]) -> dict[str, Any]:
    return {"apiVersion": owner["apiVersion"], "kind": owner["kind"], "name": owner["metadata"]["name"],
            "uid": owner["metadata"]["uid"], "controller": True, "blockOwnerDeletion": True}


def child_metadata(instance: dict[str, Any], name: str) -> dict[str, Any]:
    md = instance["metadata"]
    return {"name": name, "namespace": md["namespace"],
            "labels": {**MANAGED_BY, INSTANCE_LABEL: md["name"]},
            "ownerReferences": [owner_reference(instance)]}


def data_volume_name(instance_name: str) -> str:
    return f"{instance_name}-root"


def build_data_volume(instance: dict[str, Any], url: str, sha512: str, size_gib: int) -> dict[str, Any]:
    """The root disk: CDI imports the image over HTTP from a presigned URL and checks its sha512, so the
    tenant namespace never holds store credentials, only a short-lived read link to this one object."""
    return {
        "apiVersion": "cdi.kubevirt.io/v1beta1",
        "kind": "DataVolume",
        "metadata": child_metadata(instance, data_volume_name(instance["metadata"]["name"])),
        "spec": {
            "source": {"http": {"url": url, "checksum": f"sha512:{sha512}"}},
            "storage": {"resources": {"requests": {"storage": f"{size_gib}Gi"}}},
        },
    }


def build_virtual_machine(instance: dict[str, Any], spec: InstanceSpec, flavor: FlavorSpec) -> dict[str, Any]:
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
    disks: list[dict[str, Any]] = [{"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1}]
    volumes: list[dict[str, Any]] = [{"name": "root", "dataVolume": {"name": data_volume_name(name)}}]
    if flavor.ephemeral:
        disks.append({"name": "ephemeral", "disk": {"bus": "virtio"}})
        volumes.append({"name": "ephemeral", "emptyDisk": {"capacity": f"{flavor.ephemeral}Gi"}})
    if flavor.swap:
        disks.append({"name": "swap", "disk": {"bus": "virtio"}})
        volumes.append({"name": "swap", "emptyDisk": {"capacity": f"{flavor.swap}Mi"}})
    if spec.user_data is not None:
        disks.append({"name": "cloudinit", "disk": {"bus": "virtio"}})
        volumes.append({"name": "cloudinit", "cloudInitNoCloud": {"userData": spec.user_data}})
    template_spec: dict[str, Any] = {
        "domain": {
            "cpu": cpu,
            "memory": memory,
            "resources": {"requests": {"memory": f"{flavor.ram}Mi", "cpu": str(flavor.vcpus)}},
            "devices": {"disks": disks, "interfaces": [{"name": "default", "masquerade": {}}]},
        },
        "networks": [{"name": "default", "pod": {}}],
        "volumes": volumes,
    }
    # Nova server metadata: KubeVirt's NoCloud source has no free-form meta-data, so it travels as a JSON
    # annotation on the VM and on the VMI (from the template), where guest tooling can read it.
    annotations = {SERVER_METADATA: json.dumps(spec.metadata, sort_keys=True)} if spec.metadata else {}
    selector = {k.removeprefix("kova:node_selector:"): v for k, v in specs.items()
                if k.startswith("kova:node_selector:")}
    if selector:
        template_spec["nodeSelector"] = selector
    metadata = child_metadata(instance, name)
    template_metadata: dict[str, Any] = {"labels": {**MANAGED_BY, INSTANCE_LABEL: name}}
    if annotations:
        metadata["annotations"] = annotations
        template_metadata["annotations"] = annotations
    return {
        "apiVersion": "kubevirt.io/v1",
        "kind": "VirtualMachine",
        "metadata": metadata,
        "spec": {
            "runStrategy": "Always" if spec.power_state is PowerState.running else "Halted",
            "template": {"metadata": template_metadata, "spec": template_spec},
        },
    }


def image_link_expired(dv: dict[str, Any], ttl: dt.timedelta, now: dt.datetime) -> bool:
    """CDI could not read the image (403) and the DataVolume is older than its link's lifetime: the link
    expired before the import ran. Any other failure (a wrong checksum, say) is not cured by a new link."""
    status = dv.get("status") or {}
    if status.get("phase") != "Failed":
        return False
    reasons = {c.get("reason") for c in status.get("conditions", [])}
    created = dt.datetime.fromisoformat(dv["metadata"]["creationTimestamp"].replace("Z", "+00:00"))
    return "Forbidden" in reasons and now - created >= ttl


# ---------------------------------------------------------------------------------------------- status
@dataclass
class InstanceView:
    """What the children say, folded into Nova's words."""

    status: NovaStatus
    power_state: str
    progress: Progress
    reason: str
    message: str
    fault: Fault | None = None
    addresses: list[Address] = field(default_factory=list)
    node: str | None = None


def observe_instance(spec: InstanceSpec, dv: dict[str, Any] | None, vm: dict[str, Any] | None,
                     vmi: dict[str, Any] | None, building: str = "spawning") -> InstanceView:
    """Nova's view of the children. Messages of the passing states do not follow every step of CDI and
    KubeVirt (import percentages, Provisioning, Starting): each change would be a status write, and Nova
    shows BUILD until the server is ACTIVE. `building` is what BUILD says while the server spawns."""
    dv_status = (dv or {}).get("status", {})
    vm_status = (vm or {}).get("status", {})
    vmi_status = (vmi or {}).get("status", {})
    printable = vm_status.get("printableStatus", "")
    addresses = [Address(interface=i.get("name", ""), ip=i["ipAddress"], mac=i.get("mac"))
                 for i in vmi_status.get("interfaces", []) if i.get("ipAddress")]
    node = vmi_status.get("nodeName")
    if dv_status.get("phase") == "Failed":
        ready: dict[str, Any] = next(
            (c for c in dv_status.get("conditions", []) if c.get("type") == "Running"), {})
        msg = f"root disk import failed: {ready.get('reason', 'Failed')}: {ready.get('message', '')}".rstrip(": ")
        return InstanceView(NovaStatus.error, "NOSTATE", Progress.STALLED, "DiskImportFailed", msg,
                            Fault(code=500, message=msg))
    if printable in ("ErrorUnschedulable", "ErrorPvcNotFound", "DataVolumeError", "CrashLoopBackOff",
                     "ErrorImagePull", "ImagePullBackOff"):
        conds = vm_status.get("conditions", [])
        detail = next((c.get("message") for c in conds if c.get("message")), "") or printable
        return InstanceView(NovaStatus.error, "NOSTATE", Progress.STALLED, printable, detail,
                            Fault(code=500, message=f"{printable}: {detail}"))
    want_running = spec.power_state is PowerState.running
    if want_running:
        if printable == "Running" and vm_status.get("ready"):
            return InstanceView(NovaStatus.active, "Running", Progress.READY, "Active",
                                "the instance is running", addresses=addresses, node=node)
        return InstanceView(NovaStatus.build, "NOSTATE", Progress.RECONCILING, "Spawning", building)
    if printable == "Stopped" or (vm is not None and vmi is None and printable in ("", "Stopped")):
        return InstanceView(NovaStatus.shutoff, "Shutdown", Progress.READY, "Shutoff", "the instance is stopped")
    return InstanceView(NovaStatus.active, "Running", Progress.RECONCILING, "PoweringOff",
                        "stopping the virtual machine", addresses=addresses, node=node)


# ---------------------------------------------------------------------------------------------- Image
@dataclass
class ImageView:
    status: GlanceStatus
    progress: Progress
    reason: str
    message: str
    fields: dict[str, Any] = field(default_factory=dict)


def observe_image(blob: Blob | None, location: str, previous: dict[str, Any], importing: bool,
                  done: int, total: int | None, passing_error: str | None, deactivated: bool = False,
                  queued_message: str | None = None, upload_id: str | None = None) -> ImageView:
    """Glance's status word and kstatus verdict, from what the store holds and what the importer is doing.

    The store's record is the truth for `active`; `killed` is kept from the previous status, since an
    image's source never changes and Glance does not retry a killed image. Progress moves in 10% steps
    and the message does not count bytes, so a status write happens only when a user sees a change.
    An image whose data comes through the image API (`upload_id`: its id there) waits in `queued` until it
    arrives; while the API receives it the API itself says `saving`, and the operator leaves that alone.
    """
    if blob is not None:
        word, reason = (GlanceStatus.deactivated, "Deactivated") if deactivated else (GlanceStatus.active, "Active")
        return ImageView(word, Progress.READY, reason, f"{blob.size} bytes stored", {
            "size": blob.size, "virtualSize": blob.virtual_size, "checksum": blob.md5, "osHashAlgo": "sha512",
            "osHashValue": blob.sha512, "detectedFormat": blob.disk_format, "progress": "100%",
            "location": location, "message": None})
    if previous.get("status") == GlanceStatus.killed:
        ready: dict[str, Any] = next(
            (c for c in previous.get("conditions", []) if c.get("type") == "Ready"), {})
        return ImageView(GlanceStatus.killed, Progress.STALLED, ready.get("reason", "ImportFailed"),
                         previous.get("message") or ready.get("message", "import failed"))
    if importing:
        pct = f"{min(100, 100 * done // total) // 10 * 10}%" if total else None
        message = f"importing {total} bytes from the source" if total else "importing from the source"
        if passing_error:
            message = f"import will be retried: {passing_error}"
        return ImageView(GlanceStatus.importing, Progress.RECONCILING, "Importing", message,
                         {"progress": pct, "message": passing_error})
    if upload_id is not None:
        if previous.get("status") == GlanceStatus.saving:
            return ImageView(GlanceStatus.saving, Progress.RECONCILING, "Saving",
                             "receiving the data through the image API")
        return ImageView(GlanceStatus.queued, Progress.RECONCILING, "WaitingForData",
                         previous.get("message") or "waiting for the data: upload it through the image API "
                         f"(kova image upload, or PUT /v2/images/{upload_id}/file)")
    return ImageView(GlanceStatus.queued, Progress.RECONCILING, "Queued",
                     queued_message or "waiting for the import to start")


def killed_view(reason: str, message: str) -> ImageView:
    return ImageView(GlanceStatus.killed, Progress.STALLED, reason, message,
                     {"message": message, "progress": None, "location": None})
