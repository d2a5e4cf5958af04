"""The API: pydantic models of Kova's eight kinds (Image; Flavor, Instance, KeyPair, SecurityGroup, ServerGroup,
AvailabilityZone, Quota), the one source of the CRDs in crds/ (kova.api.crdgen).

Field names are camelCase on the wire (Kubernetes style) and snake_case in Python. Descriptions become the
text of `kubectl explain`; `x-kubernetes-validations` (CEL) rules are checked by the API server itself.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, JsonValue, StringConstraints
from pydantic.alias_generators import to_camel

GROUP_COMPUTE = "compute.kova.dev"
GROUP_IMAGE = "image.kova.dev"
VERSION = "v1alpha1"


class Model(BaseModel):
    model_config = ConfigDict(alias_generator=to_camel, populate_by_name=True, extra="ignore")

    def dump(self) -> dict[str, Any]:
        return self.model_dump(by_alias=True, exclude_none=True, mode="json")


def cel(rule: str, message: str) -> dict[str, Any]:
    return {"x-kubernetes-validations": [{"rule": rule, "message": message}]}


# OpenStack's default limits, enforced by the API server through the CRDs (maxItems, maxProperties) and answered
# as Glance answers them by the image API (413).
MAX_IMAGE_PROPERTIES = 128  # Glance's image_property_quota
MAX_IMAGE_TAGS = 128  # Glance's image_tag_quota
MAX_IMAGE_MEMBERS = 128  # Glance's image_member_quota
MAX_METADATA_ITEMS = 128  # Nova's metadata_items quota
MAX_SERVER_TAGS = 50  # Nova's instance.MAX_TAG_COUNT


# ---------------------------------------------------------------------------------------------- status
class Condition(Model):
    """A kstatus-style condition (metav1.Condition)."""

    type: str = Field(description="Ready, Reconciling or Stalled (kstatus), or a kind-specific type.")
    status: Literal["True", "False", "Unknown"]
    reason: str = Field(description="CamelCase reason, stable for tools.")
    message: str = Field(default="", description="Human-readable detail.")
    last_transition_time: str = Field(description="When status last changed (RFC 3339).")
    observed_generation: int | None = Field(default=None, description="The generation this was computed for.")


class CommonStatus(Model):
    observed_generation: int | None = Field(
        default=None, description="metadata.generation that this status describes (kstatus).")
    conditions: list[Condition] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["type"]})


# ---------------------------------------------------------------------------------------------- Flavor
class FlavorSpec(Model):
    """A Nova flavor: the size of an Instance. Sizes are immutable, as in Nova: make a new flavor to resize."""

    vcpus: int = Field(ge=1, le=1024, description="Virtual CPUs.")
    ram: int = Field(ge=64, description="Memory in MiB.")
    disk: int = Field(default=0, ge=0, description="Root disk in GiB; 0 means the image's own size.")
    ephemeral: int = Field(default=0, ge=0, description="Extra ephemeral disk in GiB (0: none).")
    swap: int = Field(default=0, ge=0, description="Swap disk in MiB (0: none).")
    extra_specs: dict[str, str] = Field(default_factory=dict, description=(
        "Nova extra_specs. Understood: `hw:cpu_policy` (dedicated), `hw:mem_page_size` (large, 2MB, 1GB), "
        "`kova:node_selector:<label>` (schedule onto nodes with that label value)."))
    public: bool = Field(default=True, description="Usable from every namespace; if false only from `access`.")
    access: list[str] = Field(default_factory=list, description="Namespaces that may use a non-public flavor.")
    description: str | None = Field(default=None, max_length=65535)


FLAVOR_SPEC_RULES = [
    {"rule": "self.vcpus == oldSelf.vcpus && self.ram == oldSelf.ram && self.disk == oldSelf.disk && "
             "self.ephemeral == oldSelf.ephemeral && self.swap == oldSelf.swap",
     "message": "vcpus, ram, disk, ephemeral and swap are immutable, as in Nova: create a new Flavor and "
                "resize the Instance to it"},
]


class FlavorStatus(CommonStatus):
    pass


# ---------------------------------------------------------------------------------------------- Image
class DiskFormat(StrEnum):
    raw = "raw"
    qcow2 = "qcow2"
    iso = "iso"
    vmdk = "vmdk"
    vhd = "vhd"
    vhdx = "vhdx"
    vdi = "vdi"


class ContainerFormat(StrEnum):
    bare = "bare"
    ovf = "ovf"
    ova = "ova"
    docker = "docker"


class Visibility(StrEnum):
    private = "private"
    shared = "shared"
    public = "public"
    community = "community"


class UploadSource(Model):
    """The bytes are sent through the image API (Glance's image-upload, `PUT /v2/images/{id}/file`, or
    `kova image upload`); the Image waits in `queued` until they arrive."""


class ImageSource(Model):
    """Where the bytes come from: a URL (Glance's web-download import) or an upload through the image API."""

    url: str | None = Field(default=None, pattern=r"^https?://", max_length=4096,
                            description="http(s) URL to download once.")
    checksum: str | None = Field(default=None, pattern=r"^(md5|sha256|sha512):[0-9a-fA-F]+$", description=(
        "Expected hash of a URL's data, `<algorithm>:<hex>` with md5, sha256 or sha512. A mismatch kills the "
        "import."))
    upload: UploadSource | None = Field(default=None, description=(
        "The data comes through the image API: `{}` (what an Image created by `kova api` has)."))
    instance: str | None = Field(default=None, min_length=1, max_length=253, description=(
        "Nova's createImage: a snapshot of the root disk of this Instance (same namespace), exported by "
        "KubeVirt (VirtualMachineExport) and imported through the same checks as a download."))


SOURCE_RULES: list[JsonValue] = [{"rule": "[has(self.url), has(self.upload), has(self.instance)]"
                                          ".filter(x, x).size() == 1",
                 "message": "source needs exactly one of url (web-download), upload (data sent through the "
                            "image API) and instance (a snapshot of an Instance)"},
                {"rule": "!has(self.checksum) || has(self.url)",
                 "message": "checksum goes with url; an upload is hashed as it arrives"}]


class ImageSpec(Model):
    """A Glance image. Its bytes are imported once into the object store and never change afterwards."""

    name: str | None = Field(default=None, max_length=255, description=(
        "The Glance name, when it is not this object's name: Glance names are free text and need not be "
        "unique, so the image API names an Image after it only when it is a valid, free Kubernetes name."))
    disk_format: DiskFormat | None = Field(default=None, description=(
        "Format of the disk image; checked against the bytes. Required for a url source; an upload may set it "
        "until the data arrives, as in Glance; a snapshot of an Instance is raw (Kova sets it)."))
    container_format: ContainerFormat = Field(default=ContainerFormat.bare)
    min_disk: int = Field(default=0, ge=0, description="GiB of root disk the image needs to boot.")
    min_ram: int = Field(default=0, ge=0, description="MiB of RAM the image needs to boot.")
    tags: list[str] = Field(default_factory=list, max_length=MAX_IMAGE_TAGS, description=(
        f"Glance tags: at most {MAX_IMAGE_TAGS} (Glance's image_tag_quota)."),
        json_schema_extra={"x-kubernetes-list-type": "set"})
    properties: dict[str, str] = Field(default_factory=dict, max_length=MAX_IMAGE_PROPERTIES, description=(
        f"Free-form Glance properties: at most {MAX_IMAGE_PROPERTIES} (Glance's image_property_quota)."))
    visibility: Visibility = Field(default=Visibility.private, description=(
        "private: this namespace; shared: this namespace and `members`; public and community: every "
        "namespace (public ones are meant to be listed, community ones only used by name)."))
    members: list[str] = Field(default_factory=list, max_length=MAX_IMAGE_MEMBERS, description=(
        f"Namespaces a shared image is shared with: at most {MAX_IMAGE_MEMBERS} (Glance's image_member_quota)."))
    protected: bool = Field(default=False, description="A protected image cannot be deleted.")
    hidden: bool = Field(default=False, description="Glance's os_hidden: left out of default image lists.")
    deactivated: bool = Field(default=False, description=(
        "Glance's deactivate: an active image's data may not be used for new instances (existing ones "
        "keep running) until this is false again."))
    stores: list[Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9_-]{0,62}$")]] | None = Field(
        default=None, min_length=1, max_length=16, description=(
            "The stores (ids of KOVA_STORES) the data should be in. The operator copies it to each that lacks it "
            "(through the verified pipeline again) and, once one of these holds it, removes it from the others. "
            "Unset: the data stays where it arrived. Glance's import `stores` and `copy-image` set it."),
        json_schema_extra={"x-kubernetes-list-type": "set"})
    source: ImageSource = Field(json_schema_extra={"x-kubernetes-validations": [
        # One way out: an Image waiting for an upload may be given a URL instead (Glance's web-download import).
        {"rule": "self == oldSelf || (has(oldSelf.upload) && has(self.url))",
         "message": "source is immutable: an image's data never changes; create a new Image (an Image waiting for "
                    "an upload may only be given a url instead)"}, *SOURCE_RULES]})


IMAGE_SPEC_RULES = [{"rule": "has(self.diskFormat) || !has(self.source.url)",
                     "message": "diskFormat is required to import from a url"},
                    # CDI converts every import to raw on the claim, so KubeVirt's export serves raw, always.
                    {"rule": "!has(self.source.instance) || !has(self.diskFormat) || self.diskFormat == 'raw'",
                     "message": "a snapshot of an Instance is a raw disk (what KubeVirt's export serves): leave "
                                "diskFormat out, or set it to raw"}]


class GlanceStatus(StrEnum):
    queued = "queued"
    saving = "saving"
    uploading = "uploading"  # staged (Glance's stage), waiting for its import
    importing = "importing"
    active = "active"
    killed = "killed"
    deactivated = "deactivated"
    deleted = "deleted"


class MemberStatus(StrEnum):
    pending = "pending"
    accepted = "accepted"
    rejected = "rejected"


class Member(Model):
    """A namespace's answer to an image shared with it (Glance's image member)."""

    member: str = Field(description="The member namespace (Glance's member_id, a project).")
    status: MemberStatus = Field(default=MemberStatus.pending)
    created_at: str | None = None
    updated_at: str | None = None


class SnapshotOrigin(Model):
    """Where a snapshot came from, as Nova records it in the image's properties."""

    instance_uuid: str = Field(description="uid of the Instance (Nova's instance_uuid).")
    base_image_ref: str | None = Field(default=None, description="uid of the Image the Instance was booted "
                                                                 "from (Nova's base_image_ref).")
    export: str | None = Field(default=None, description="The VirtualMachineExport the data is read from.")


class CacheEntry(Model):
    """One of the image's entries in the golden-image cache (README: "Image cache")."""

    storage_class: str = Field(description="The StorageClass whose root disks clone it.")
    entry: str = Field(description="The DataVolume and DataSource holding it, in the image cache's namespace.")
    state: str = Field(description="filling (CDI imports it), ready (root disks clone it) or broken (not used: "
                                   "root disks are imported directly).")
    last_used: str | None = Field(default=None, description="When a root disk was last cloned from it.")


class ImageStatus(CommonStatus):
    status: GlanceStatus | None = Field(default=None, description="Glance status word.")
    size: int | None = Field(default=None, description="Bytes stored.")
    virtual_size: int | None = Field(default=None, description="Bytes of the disk the image unpacks to.")
    checksum: str | None = Field(default=None, description="MD5 of the data (Glance `checksum`).")
    os_hash_algo: str | None = Field(default=None, description="Algorithm of os_hash_value (sha512).")
    os_hash_value: str | None = Field(default=None, description="Secure hash of the data.")
    detected_format: str | None = Field(default=None, description="Format found by inspecting the bytes.")
    progress: str | None = Field(default=None, description="Import progress, e.g. `42%`.")
    location: str | None = Field(default=None, description="Where the data is stored (s3://bucket/key).")
    message: str | None = Field(default=None, description="Why the image is not active, if it is not.")
    members: list[Member] = Field(default_factory=list, description=(
        "Each member's answer (pending, accepted, rejected), given through the image API by that namespace."),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["member"]})
    snapshot: SnapshotOrigin | None = Field(default=None, description="For an Instance snapshot: its origin.")
    stores: list[str] = Field(default_factory=list, description=(
        "The stores (KOVA_STORES) that hold the data, best first (weight, then id): Glance's `stores`."))
    importing_to_stores: list[str] | None = Field(default=None, description=(
        "Stores an import or copy is still bringing the data to (Glance's os_glance_importing_to_stores)."))
    failed_import: list[str] | None = Field(default=None, description=(
        "Stores the last import or copy could not bring the data to (Glance's os_glance_failed_import)."))
    cache: list[CacheEntry] | None = Field(default=None, description=(
        "Its entries in the golden-image cache, one per StorageClass."),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["storageClass"]})


# ---------------------------------------------------------------------------------------------- MetadefNamespace
class MetadefVisibility(StrEnum):
    public = "public"
    private = "private"


class MetadefResourceType(Model):
    """A resource type the namespace's properties apply to (Glance's resource type association)."""

    name: str = Field(min_length=1, max_length=80, description="e.g. OS::Glance::Image, OS::Nova::Flavor.")
    prefix: str | None = Field(default=None, max_length=80, description=(
        "Put before a property's name on that resource type (hw_ on images, hw: in flavor extra specs)."))
    properties_target: str | None = Field(default=None, max_length=80, description=(
        "Which of the resource's property sets they go to (e.g. image, for a Cinder volume's image metadata)."))
    created_at: str | None = None
    updated_at: str | None = None


class MetadefObject(Model):
    """A named group of properties (Glance's metadef object)."""

    name: str = Field(min_length=1, max_length=80)
    description: str | None = None
    required: list[str] = Field(default_factory=list)
    properties: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Property definitions as Glance keeps them: JSON Schema words (type, enum, default, ...)."))
    created_at: str | None = None
    updated_at: str | None = None


class MetadefTag(Model):
    name: str = Field(min_length=1, max_length=255)
    created_at: str | None = None
    updated_at: str | None = None


class MetadefNamespaceSpec(Model):
    """A Glance metadata definition namespace with its properties, objects, tags and the resource types it
    applies to: a catalog of the properties a cloud understands, read by Horizon and the `openstack image
    metadef` commands. Everyone may read a public one; only administrators write (the kova-admin role)."""

    namespace: str = Field(min_length=1, max_length=80, description=(
        "Glance's name for it, e.g. OS::Compute::Watchdog (the object's name is a slug of it)."))
    display_name: str | None = Field(default=None, max_length=80)
    description: str | None = Field(default=None, max_length=500)
    visibility: MetadefVisibility = Field(default=MetadefVisibility.private, description=(
        "public: every project reads it; private: only its owner (and administrators)."))
    protected: bool = Field(default=False, description="A protected namespace cannot be deleted.")
    owner: str | None = Field(default=None, max_length=255, description="The project (namespace) that made it.")
    resource_type_associations: list[MetadefResourceType] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    properties: dict[str, dict[str, Any]] = Field(default_factory=dict, description=(
        "Property definitions as Glance keeps them: JSON Schema words (title, type, enum, default, ...)."))
    objects: list[MetadefObject] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    tags: list[MetadefTag] = Field(default_factory=list, json_schema_extra={
        "x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["name"]})
    catalog: str | None = Field(default=None, description=(
        "Where it came from when Kova loaded it (e.g. glance-33.0.0, kova): absent for one made by a user."))


class MetadefNamespaceStatus(CommonStatus):
    """Nothing to reconcile: a definition is data, current once stored (kstatus)."""


# ---------------------------------------------------------------------------------------------- Instance
class PowerState(StrEnum):
    running = "Running"
    stopped = "Stopped"
    paused = "Paused"
    suspended = "Suspended"


class RebootType(StrEnum):
    soft = "SOFT"
    hard = "HARD"


class RebootRequest(Model):
    """A one-shot reboot, like `kubectl rollout restart`: a new `token` asks for a new reboot."""

    type: RebootType = Field(default=RebootType.soft, description=(
        "SOFT: the guest is asked to reboot (ACPI); HARD: the virtual machine is restarted."))
    token: str = Field(min_length=1, max_length=253, description=(
        "Any value; each new one is one reboot (a timestamp or a counter). The last one served is "
        "status.requests.reboot."))


class ResizeAction(StrEnum):
    confirm = "Confirm"
    revert = "Revert"


class ResizeRequest(Model):
    """A one-shot answer to a resize in VERIFY_RESIZE: Confirm keeps the new flavor, Revert goes back."""

    action: ResizeAction
    token: str = Field(min_length=1, max_length=253, description=(
        "Any value; each new one is one request. The last one served is status.requests.resize."))


def _same(field: str) -> str:
    return f"(has(self.{field}) ? has(oldSelf.{field}) && self.{field} == oldSelf.{field} : !has(oldSelf.{field}))"


_SAME_ACTIONS = " && ".join(["self.flavorRef == oldSelf.flavorRef", *(_same(f) for f in (
    "imageRef", "powerState", "metadata", "rebootRequest", "resizeRequest", "userData", "volumeAttachments"))])
INSTANCE_SPEC_RULES = [
    {"rule": f"{_same('keyName')} || !{_same('imageRef')}",
     "message": "keyName changes only with a rebuild (a new imageRef in the same change), as in Nova"},
    {"rule": f"!(has(oldSelf.locked) && oldSelf.locked && has(self.locked) && self.locked) || ({_SAME_ACTIONS})",
     "message": "the instance is locked (Nova answers 409): set locked to false first; only lockedReason "
                "may change while it is locked"},
    {"rule": "has(self.imageRef) != has(self.bootVolume)",
     "message": "a server boots from imageRef or from bootVolume: exactly one of them"},
]


MAX_VOLUME_ATTACHMENTS = 16
VOLUME_NAME_RULES: dict[str, Any] = {"x-kubernetes-validations": [
    {"rule": "!self.contains('/')", "message": "a volume of another namespace cannot be attached "
                                               "(Nova answers 404: volume not found)"},
    {"rule": "self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')",
     "message": "a Volume's name: lower-case letters, digits and '-'"}]}


class VolumeAttachment(Model):
    """A Volume attached to the server (Nova's os-volume_attachments): hot-plugged while it runs, a SCSI disk
    whose serial is the volume's uid, as Nova sets it."""

    volume: str = Field(min_length=1, max_length=56, description=(
        "A Volume of this namespace: a server never reaches another namespace's volumes."),
        json_schema_extra=VOLUME_NAME_RULES)
    tag: str | None = Field(default=None, max_length=60, description="Nova's device tag (2.49), for the guest.")
    delete_on_termination: bool = Field(default=False, description=(
        "Delete the Volume with the server (Nova 2.79); otherwise it stays, available, when the server goes."))


class BootVolume(Model):
    """The Volume a server boots from (Nova's boot from volume)."""

    volume: str = Field(min_length=1, max_length=56, description="A Volume of this namespace.",
                        json_schema_extra=VOLUME_NAME_RULES)
    delete_on_termination: bool = Field(default=False, description=(
        "Delete the Volume with the server; otherwise it stays, available, when the server goes."))


class InstanceSpec(Model):
    """A Nova server: boots `imageRef` on a `flavorRef`-sized KubeVirt VirtualMachine."""

    name: str | None = Field(default=None, max_length=255, description=(
        "The Nova server name, when it is not this object's name: Nova names are free text and need not be "
        "unique, so the compute API names an Instance after it only when it is a valid, free Kubernetes name."))
    description: str | None = Field(default=None, max_length=255, description="Nova's server description (2.19).")
    tags: list[str] = Field(default_factory=list, max_length=MAX_SERVER_TAGS, description=(
        f"Nova server tags: at most {MAX_SERVER_TAGS}, each at most 60 characters, no comma or slash."),
        json_schema_extra={"x-kubernetes-list-type": "set",
                           "items": {"type": "string", "minLength": 1, "maxLength": 60, "pattern": "^[^,/]*$"}})
    flavor_ref: str = Field(min_length=1, max_length=253, description=(
        "Name of a Flavor. Changing it resizes the instance (Nova resize: RESIZE, then VERIFY_RESIZE until "
        "confirmed, reverted, or the confirm window passes)."))
    image_ref: str | None = Field(
        default=None, min_length=1, max_length=507, pattern=r"^([a-z0-9-]+/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
        description="Image name in this namespace, or namespace/name of an image visible here (public, "
                    "community, or shared with this namespace). Changing it rebuilds the instance onto the new "
                    "image (Nova rebuild). Either it or bootVolume.")
    boot_volume: BootVolume | None = Field(default=None, description=(
        "Boot from a Volume of this namespace instead of an image (Nova's block_device_mapping_v2 with "
        "source_type volume, boot_index 0): its claim is the root disk. Fixed at boot."),
        json_schema_extra=cel("self == oldSelf", "bootVolume is fixed at boot"))
    power_state: PowerState = Field(default=PowerState.running, description=(
        "Desired power state: Stopped (Nova stop), Paused (pause: the guest is frozen in memory), "
        "Suspended (suspend: the resources are freed), Running (start, unpause, resume). Pause, suspend and "
        "stop act on a Running instance, and only Running follows them, as in Nova."),
        json_schema_extra=cel("self == oldSelf || oldSelf == 'Running' || self == 'Running'",
                              "Nova answers 409: Paused, Suspended and Stopped are reached from Running, "
                              "and left for Running"))
    locked: bool = Field(default=False, description=(
        "Nova lock: while true no action may change the instance, and it cannot be deleted."))
    locked_reason: str | None = Field(default=None, max_length=255, description="Why it is locked (Nova 2.73).")
    reboot_request: RebootRequest | None = Field(default=None, description="Ask for a reboot (one per token).")
    resize_request: ResizeRequest | None = Field(default=None, description=(
        "Confirm or revert a resize that waits in VERIFY_RESIZE (one per token). Setting flavorRef back to the "
        "old flavor reverts it too."))
    user_data: str | None = Field(default=None, max_length=65535,
                                  description="cloud-init user data (plain text), as Nova user_data.")
    metadata: dict[str, str] = Field(default_factory=dict, max_length=MAX_METADATA_ITEMS, description=(
        f"Nova server metadata, at most {MAX_METADATA_ITEMS} items (Nova's metadata_items quota); carried to the "
        "VM and VMI as the JSON annotation compute.kova.dev/server-metadata."))
    key_name: str | None = Field(default=None, max_length=253, description=(
        "A KeyPair in this namespace: its public key reaches the guest through cloud-init (with userData, "
        "combined as cloud-init accepts). The instance waits for it, as for its Flavor. It changes only with a "
        "rebuild (a new imageRef in the same write), as Nova 2.54 allows."))
    networks: list[str] = Field(default_factory=list, max_length=16, description=(
        "Networks, in order: `pod` (the cluster's pod network, masquerade) or the name of a Multus "
        "NetworkAttachmentDefinition (`name` or `namespace/name`, bridge). Empty: the pod network. `[none]` "
        "alone: no network at all (Nova's `networks: none`)."),
        json_schema_extra={"items": {"type": "string", "maxLength": 253,
                                     "pattern": r"^([a-z0-9-]+/)?[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
                           "x-kubernetes-validations": [
                               {"rule": "self == oldSelf", "message": "networks are fixed at boot"},
                               {"rule": "!('none' in self) || size(self) == 1",
                                "message": "none means no network: it cannot be listed with others"}]})
    security_groups: list[str] = Field(default_factory=list, max_length=16, description=(
        "SecurityGroups in this namespace; empty: the namespace's `default` group (Neutron's default)."),
        json_schema_extra={"x-kubernetes-list-type": "set"})
    server_group: str | None = Field(default=None, max_length=253, description=(
        "A ServerGroup in this namespace (Nova's scheduler hint group): its policy places this instance."),
        json_schema_extra=cel("self == oldSelf", "serverGroup is fixed at boot, as in Nova"))
    availability_zone: str | None = Field(default=None, max_length=63, description=(
        "Nodes labelled topology.kubernetes.io/zone with this value (see the AvailabilityZone objects)."),
        json_schema_extra=cel("self == oldSelf", "availabilityZone is fixed at boot"))
    volume_attachments: list[VolumeAttachment] = Field(
        default_factory=list, max_length=MAX_VOLUME_ATTACHMENTS, description=(
            "Volumes attached to the server, each at most once (Nova's os-volume_attachments): adding one "
            "attaches it (hot while it runs), removing one detaches it. A volume that is not multiattach is "
            "attached to one server at a time."),
        json_schema_extra={"x-kubernetes-list-type": "map", "x-kubernetes-list-map-keys": ["volume"]})


class NovaStatus(StrEnum):
    build = "BUILD"
    active = "ACTIVE"
    shutoff = "SHUTOFF"
    paused = "PAUSED"
    suspended = "SUSPENDED"
    reboot = "REBOOT"
    hard_reboot = "HARD_REBOOT"
    resize = "RESIZE"
    verify_resize = "VERIFY_RESIZE"
    revert_resize = "REVERT_RESIZE"
    rebuild = "REBUILD"
    error = "ERROR"
    deleted = "DELETED"


class Fault(Model):
    code: int = Field(description="HTTP-style code, as in Nova faults (400 bad request, 500 internal).")
    message: str


class Address(Model):
    interface: str = Field(description="The network: `pod`, or the NetworkAttachmentDefinition's name.")
    ip: str
    mac: str | None = None


class AppliedFlavor(Model):
    """The flavor an instance runs with, copied when it is applied (Nova embeds it in the server too)."""

    name: str
    vcpus: int
    ram: int
    disk: int
    ephemeral: int = 0
    swap: int = 0
    extra_specs: dict[str, str] = Field(default_factory=dict)


class ResizeState(Model):
    old_flavor: AppliedFlavor
    new_flavor: str
    finished_at: str | None = Field(default=None, description="When VERIFY_RESIZE began (the confirm window "
                                                              "counts from here).")


class Task(Model):
    action: str = Field(description="reboot, resize, confirmResize, revertResize, rebuild or createImage.")
    request_id: str = Field(description="The request it serves (a token, a flavor, an image).")
    replaces_vmi: str | None = Field(default=None, description="uid of the VMI a restart replaces.")
    step: str | None = None
    hard: bool = False


class ServedRequests(Model):
    reboot: str | None = None
    resize: str | None = None
    power: str | None = Field(default=None, description="The powerState last acted on.")
    locked: bool | None = None
    reverted_flavor: str | None = Field(default=None, description=(
        "A flavorRef that a Revert request undid: not applied again until flavorRef changes."))


MAX_ACTIONS = 20


class InstanceAction(Model):
    """One of Nova's instance actions: what was asked, when, and how it ended."""

    action: str = Field(description="Nova's action name: create, reboot, pause, unpause, suspend, resume, stop, "
                                    "start, lock, unlock, resize, confirmResize, revertResize, rebuild, "
                                    "createImage.")
    request_id: str
    start_time: str
    finish_time: str | None = None
    result: Literal["Success", "Error"] | None = None
    message: str | None = None


class AttachmentState(StrEnum):
    attaching = "attaching"
    attached = "attached"
    detaching = "detaching"
    refused = "refused"


class AttachedVolume(Model):
    """A volume of spec.volumeAttachments as the server has it (Nova's volumeAttachment)."""

    volume: str
    state: AttachmentState
    device: str | None = Field(default=None, description="The guest's device, e.g. /dev/sdb (Nova's device).")
    serial: str | None = Field(default=None, description="The disk's serial: the Volume's uid, as Nova sets it.")
    tag: str | None = None
    delete_on_termination: bool = False
    message: str | None = Field(default=None, description="Why it is not attached yet, or was refused.")


class InstanceStatus(CommonStatus):
    status: NovaStatus | None = Field(default=None, description="Nova status word.")
    power_state: str | None = Field(default=None, description="Observed power state (Running, Shutdown, NOSTATE).")
    addresses: list[Address] = Field(default_factory=list)
    fault: Fault | None = None
    virtual_machine: str | None = Field(default=None, description="Name of the KubeVirt VirtualMachine.")
    data_volume: str | None = Field(default=None, description="Name of the CDI DataVolume of the root disk.")
    node: str | None = Field(default=None, description="Node the instance runs on (Nova host).")
    availability_zone: str | None = Field(default=None, description="The zone of its node (Nova's "
                                                                    "OS-EXT-AZ:availability_zone).")
    public_key: str | None = Field(default=None, description=(
        "The keyName's public key as it was at boot (Nova copies it too: deleting the KeyPair changes no "
        "server)."))
    image_checksum: str | None = Field(default=None, description="sha512 of the image the disk was made from.")
    vm_state: str | None = Field(default=None, description=(
        "Nova's vm_state: building, active, stopped, paused, suspended, resized, error."))
    task_state: str | None = Field(default=None, description=(
        "Nova's task_state while an action runs (rebooting, pausing, resize_migrating, rebuilding, "
        "image_snapshot, ...); absent when none does."))
    flavor: AppliedFlavor | None = Field(default=None, description="The flavor the instance runs with.")
    image_ref: str | None = Field(default=None, description="The image the root disk was made from.")
    root_disk_gib: int | None = Field(default=None, description="Size of the root disk in GiB.")
    resize: ResizeState | None = Field(default=None, description="A resize that is not confirmed yet.")
    task: Task | None = Field(default=None, description="The action under way, with what it waits for.")
    requests: ServedRequests = Field(default_factory=lambda: ServedRequests(), description=(
        "The last one-shot requests served (tokens of spec.rebootRequest and spec.resizeRequest)."))
    actions: list[InstanceAction] = Field(default_factory=list, description=(
        f"The last {MAX_ACTIONS} actions, oldest first (Nova's os-instance-actions)."))
    volume_attachments: list[AttachedVolume] = Field(default_factory=list, description=(
        "The volumes of spec.volumeAttachments, and those still being detached."))


# ---------------------------------------------------------------------------------------------- KeyPair
class KeyPairType(StrEnum):
    ssh = "ssh"
    x509 = "x509"


class KeyPairSpec(Model):
    """A Nova key pair. With `publicKey` it is imported; without, Kova generates one and delivers the
    private key once, in a Secret the user owns (`privateKeySecret`)."""

    name: str | None = Field(default=None, max_length=255, description=(
        "The Nova key pair name, when it is not this object's name (Nova's names may hold capitals, spaces, "
        "'_' and '@'): the compute API finds a key pair by it."))
    public_key: str | None = Field(default=None, max_length=16384, description=(
        "OpenSSH public key to import (or, for type x509, a PEM certificate)."))
    type: KeyPairType = Field(default=KeyPairType.ssh)
    private_key_secret: str | None = Field(default=None, max_length=253, description=(
        "For a generated key: the Secret Kova creates with it (default `<name>-private-key`). Kova never "
        "reads it back; delete it once the key is saved elsewhere."))


KEYPAIR_SPEC_RULES = [{"rule": "self == oldSelf", "message": "a KeyPair is immutable, as in Nova: create another"}]


class KeyPairStatus(CommonStatus):
    fingerprint: str | None = Field(default=None, description="MD5 fingerprint of the public key, as Nova shows.")
    public_key: str | None = Field(default=None, description="The public key (imported or generated).")
    private_key_secret: str | None = Field(default=None, description="The Secret that received a generated "
                                                                     "private key.")


# ---------------------------------------------------------------------------------------------- SecurityGroup
class Direction(StrEnum):
    ingress = "ingress"
    egress = "egress"


class Ethertype(StrEnum):
    ipv4 = "IPv4"
    ipv6 = "IPv6"


class Protocol(StrEnum):
    tcp = "tcp"
    udp = "udp"
    sctp = "sctp"
    icmp = "icmp"


SG_RULE_RULES: list[JsonValue] = [
    {"rule": "!(has(self.remoteIpPrefix) && has(self.remoteGroup))",
     "message": "a rule takes remoteIpPrefix or remoteGroup, not both (Neutron)"},
    {"rule": "!has(self.portRangeMax) || (has(self.portRangeMin) && self.portRangeMin <= self.portRangeMax)",
     "message": "portRangeMax needs a portRangeMin not above it"},
    {"rule": "!has(self.portRangeMin) || (has(self.protocol) && self.protocol != 'icmp')",
     "message": "ports need protocol tcp, udp or sctp"},
]


class SecurityGroupRule(Model):
    """A Neutron security group rule: what may come in (ingress) or go out (egress)."""

    model_config = ConfigDict(**Model.model_config, json_schema_extra={"x-kubernetes-validations": SG_RULE_RULES})

    direction: Direction = Field(default=Direction.ingress)
    ethertype: Ethertype = Field(default=Ethertype.ipv4)
    protocol: Protocol | None = Field(default=None, description="Absent: any protocol.")
    port_range_min: int | None = Field(default=None, ge=1, le=65535)
    port_range_max: int | None = Field(default=None, ge=1, le=65535)
    remote_ip_prefix: str | None = Field(default=None, max_length=43, description="A CIDR; absent (and no "
                                                                                  "remoteGroup): anywhere.")
    remote_group: str | None = Field(default=None, max_length=63, description=(
        "Instances of this SecurityGroup (same namespace)."))


class SecurityGroupSpec(Model):
    """A Neutron security group: Instances that name it get its rules, as a NetworkPolicy."""

    description: str | None = Field(default=None, max_length=255)
    rules: list[SecurityGroupRule] = Field(default_factory=list, max_length=200)


class SecurityGroupStatus(CommonStatus):
    network_policy: str | None = Field(default=None, description="The NetworkPolicy that carries the rules.")
    notes: list[str] = Field(default_factory=list, description="Where NetworkPolicy says less than Neutron.")


# ---------------------------------------------------------------------------------------------- ServerGroup
class ServerGroupPolicy(StrEnum):
    affinity = "affinity"
    anti_affinity = "anti-affinity"
    soft_affinity = "soft-affinity"
    soft_anti_affinity = "soft-anti-affinity"


class ServerGroupSpec(Model):
    """A Nova server group: its members are placed together (affinity) or apart (anti-affinity), per node."""

    policy: ServerGroupPolicy = Field(json_schema_extra=cel("self == oldSelf", "policy is immutable, as in Nova"))


class ServerGroupStatus(CommonStatus):
    members: list[str] = Field(default_factory=list, description="Instances that name this group.")


# ---------------------------------------------------------------------------------------------- AvailabilityZone
class AvailabilityZoneSpec(Model):
    """Kept by Kova from the nodes' topology.kubernetes.io/zone labels (Nova's os-availability-zone)."""


class AvailabilityZoneStatus(CommonStatus):
    hosts: list[str] = Field(default_factory=list, description="Nodes in the zone.")
    available: bool = Field(default=False, description="At least one of its nodes is Ready and schedulable.")


# ---------------------------------------------------------------------------------------------- Quota
# OpenStack's quota names, in the order `kubectl get quota -o yaml` lists them, with their defaults: Nova's
# own (nova.conf [quota]); Glance's unified limits have no built-in defaults, so Kova picks generous ones.
# Sizes are MiB as in OpenStack (Nova's ram, Glance's image_size_total and image_stage_total). -1: unlimited.
QUOTA_DEFAULTS: dict[str, int] = {
    "instances": 10, "cores": 20, "ram": 51200, "key_pairs": 100, "server_groups": 10,
    "server_group_members": 10,
    "image_count_total": 100, "image_size_total": 1048576, "image_stage_total": 1048576,
    "image_count_uploading": 10,
    "volumes": 10, "gigabytes": 1000,  # Cinder's defaults
}
QUOTA_UNITS = {"ram": "MiB", "image_size_total": "MiB", "image_stage_total": "MiB", "gigabytes": "GiB"}
QUOTA_NAME = "default"  # the one Quota of a namespace


def _limit(name: str, what: str) -> Any:
    unit = f" ({QUOTA_UNITS[name]})" if name in QUOTA_UNITS else ""
    return Field(default=None, ge=-1, description=f"{name}{unit}: {what}; -1 is unlimited, absent the cloud's "
                                                  "default (Helm value quotas." + name + ").")


class QuotaSpec(Model):
    """A project's limits, set by the cloud's administrator; what is absent is the cloud's default."""

    instances: int | None = _limit("instances", "Instances (Nova servers)")
    cores: int | None = _limit("cores", "vCPUs of its Instances' flavors")
    ram: int | None = _limit("ram", "RAM of its Instances' flavors")
    key_pairs: int | None = _limit("key_pairs", "KeyPairs")
    server_groups: int | None = _limit("server_groups", "ServerGroups")
    server_group_members: int | None = _limit("server_group_members", "Instances per ServerGroup")
    image_count_total: int | None = _limit("image_count_total", "Images")
    image_size_total: int | None = _limit("image_size_total", "data stored by its Images")
    image_stage_total: int | None = _limit("image_stage_total", "data staged for an interoperable import "
                                                                "(Kova stages nothing yet: always 0 in use)")
    image_count_uploading: int | None = _limit("image_count_uploading", "uploads and imports under way at once")
    volumes: int | None = _limit("volumes", "Volumes (Cinder's volumes)")
    gigabytes: int | None = _limit("gigabytes", "the sizes of its Volumes (Cinder's gigabytes)")


def effective_limits(defaults: dict[str, int], spec: dict[str, Any] | None) -> dict[str, int]:
    """A namespace's limits: its Quota's spec where it says, the cloud's defaults elsewhere."""
    overrides = QuotaSpec.model_validate(spec or {}).model_dump()
    return {name: overrides[name] if overrides.get(name) is not None else defaults.get(name, QUOTA_DEFAULTS[name])
            for name in QUOTA_DEFAULTS}


class QuotaItem(Model):
    """One limit and its use (Nova's os-quota-sets detail: in_use and limit)."""

    name: str = Field(description="OpenStack's name: instances, cores, ram, key_pairs, ..., image_size_total.")
    limit: int = Field(description="The effective limit; -1 is unlimited.")
    in_use: int = Field(description="What the namespace uses now (MiB for ram and image sizes).")
    usage: str = Field(description="in use/limit, for `kubectl get quotas`.")


class QuotaStatus(CommonStatus):
    quotas: list[QuotaItem] = Field(default_factory=list, description="Every limit with its use.",
                                    json_schema_extra={"x-kubernetes-list-type": "map",
                                                       "x-kubernetes-list-map-keys": ["name"]})
    resource_quota: str | None = Field(default=None, description=(
        "The ResourceQuota Kova keeps from these limits: the API server itself refuses an Instance, KeyPair, "
        "ServerGroup or Image over its count."))


# ---------------------------------------------------------------------------------------------- kinds
# ---------------------------------------------------------------------------------------------- Volume
class VolumeSource(Model):
    """What a new volume holds (Cinder's imageRef, source_volid, snapshot_id); nothing: a blank volume."""

    image: str | None = Field(default=None, max_length=507, pattern=r"^([a-z0-9-]+/)?[a-z0-9]([-a-z0-9.]*[a-z0-9])?$",
                              description="An Image visible here (name, or namespace/name), through the image cache.")
    volume: str | None = Field(default=None, max_length=56, description="A Volume of this namespace, cloned.")
    snapshot: str | None = Field(default=None, max_length=253, description=(
        "A VolumeSnapshot (snapshot.storage.k8s.io) of this namespace."))


VOLUME_SOURCE_RULES = [{"rule": "(has(self.image) ? 1 : 0) + (has(self.volume) ? 1 : 0) + "
                                "(has(self.snapshot) ? 1 : 0) <= 1",
                        "message": "a volume has one source at most: image, volume or snapshot"}]


class VolumeSpec(Model):
    """A Cinder volume: persistent block storage as a PersistentVolumeClaim (through a CDI DataVolume)."""

    size: int = Field(ge=1, le=65536, description="GiB. It may grow (Cinder's extend), never shrink.",
                      json_schema_extra=cel("self >= oldSelf", "a volume cannot shrink (Cinder answers 400: "
                                                               "new size must be greater than the current size)"))
    volume_type: str | None = Field(default=None, max_length=253, description=(
        "Cinder's volume type: the StorageClass of its claim (none: the cluster's default)."),
        json_schema_extra=cel("self == oldSelf", "volumeType is fixed (Kova does not retype)"))
    source: VolumeSource | None = Field(default=None, description="What it is made from; fixed.",
                                        json_schema_extra={"x-kubernetes-validations": [
                                            {"rule": "self == oldSelf", "message": "source is fixed"},
                                            *VOLUME_SOURCE_RULES]})  # type: ignore[list-item]
    multiattach: bool = Field(default=False, description=(
        "Attachable to several servers at once (Cinder's multiattach): a ReadWriteMany claim, a shareable disk."),
        json_schema_extra=cel("self == oldSelf", "multiattach is fixed"))
    description: str | None = Field(default=None, max_length=255, description="Cinder's description.")


class VolumeWord(StrEnum):
    """Cinder's volume status words."""

    creating = "creating"
    available = "available"
    reserved = "reserved"
    attaching = "attaching"
    in_use = "in-use"
    detaching = "detaching"
    extending = "extending"
    error = "error"
    error_extending = "error_extending"
    deleting = "deleting"


class VolumeHolder(Model):
    """A server the volume is attached to, or reserved for (Cinder's attachments)."""

    server: str = Field(description="The Instance's name.")
    server_uid: str = Field(description="The Instance's uid: a new server of the same name is another one.")
    state: AttachmentState = Field(description="attaching (reserved), attached or detaching.")
    device: str | None = Field(default=None, description="The device the server sees, e.g. /dev/sdb.")
    attached_at: str | None = None


class VolumeStatus(CommonStatus):
    status: VolumeWord | None = Field(default=None, description="Cinder's status word.")
    size: int | None = Field(default=None, description="GiB the claim has now.")
    claim: str | None = Field(default=None, description="Its PersistentVolumeClaim (and DataVolume).")
    storage_class: str | None = Field(default=None, description="The StorageClass of its claim.")
    progress: str | None = Field(default=None, description="How far CDI is in filling it, e.g. 42.00%.")
    message: str | None = Field(default=None, description="Why it is not available, if it is not.")
    allocated: int | None = Field(default=None, description=(
        "GiB it holds of its namespace's `gigabytes` quota: its size once made, and after each extend admitted."))
    attachments: list[VolumeHolder] = Field(default_factory=list, description=(
        "The servers it is attached to or reserved for; one unless multiattach. Only Kova writes it."))


class KindInfo(BaseModel):
    group: str
    kind: str
    plural: str
    singular: str
    short_names: list[str]
    namespaced: bool
    spec: type[Model]
    status: type[Model]
    description: str
    spec_rules: list[dict[str, str]] = []
    columns: list[dict[str, Any]] = []


_READY = {"name": "Ready", "type": "string", "jsonPath": ".status.conditions[?(@.type=='Ready')].status"}
_AGE = {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"}

FLAVOR = KindInfo(
    group=GROUP_COMPUTE, kind="Flavor", plural="flavors", singular="flavor", short_names=["flv"],
    namespaced=False, spec=FlavorSpec, status=FlavorStatus, spec_rules=FLAVOR_SPEC_RULES,
    description="A Nova flavor: vCPUs, RAM and disks that an Instance gets.",
    columns=[{"name": "VCPUs", "type": "integer", "jsonPath": ".spec.vcpus"},
             {"name": "RAM", "type": "integer", "jsonPath": ".spec.ram", "description": "MiB"},
             {"name": "Disk", "type": "integer", "jsonPath": ".spec.disk", "description": "GiB"},
             {"name": "Public", "type": "boolean", "jsonPath": ".spec.public"}, _READY, _AGE])
IMAGE = KindInfo(
    group=GROUP_IMAGE, kind="Image", plural="images", singular="image", short_names=["img"],
    namespaced=True, spec=ImageSpec, status=ImageStatus, spec_rules=IMAGE_SPEC_RULES,
    description="A Glance image: disk bytes imported once into the object store.",
    columns=[{"name": "Status", "type": "string", "jsonPath": ".status.status"},
             {"name": "Format", "type": "string", "jsonPath": ".spec.diskFormat"},
             {"name": "Size", "type": "integer", "jsonPath": ".status.size"},
             {"name": "Visibility", "type": "string", "jsonPath": ".spec.visibility"},
             {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "priority": 1},
             {"name": "Checksum", "type": "string", "jsonPath": ".status.checksum", "priority": 1},
             _READY, _AGE])
INSTANCE = KindInfo(
    group=GROUP_COMPUTE, kind="Instance", plural="instances", singular="instance", short_names=["inst", "server"],
    namespaced=True, spec=InstanceSpec, status=InstanceStatus, spec_rules=INSTANCE_SPEC_RULES,
    description="A Nova server, run as a KubeVirt VirtualMachine with its root disk imported by CDI.",
    columns=[{"name": "Status", "type": "string", "jsonPath": ".status.status"},
             {"name": "Task", "type": "string", "jsonPath": ".status.taskState"},
             {"name": "Power", "type": "string", "jsonPath": ".status.powerState"},
             {"name": "Flavor", "type": "string", "jsonPath": ".spec.flavorRef"},
             {"name": "Image", "type": "string", "jsonPath": ".spec.imageRef"},
             {"name": "Locked", "type": "boolean", "jsonPath": ".spec.locked", "priority": 1},
             {"name": "IP", "type": "string", "jsonPath": ".status.addresses[0].ip"},
             {"name": "Node", "type": "string", "jsonPath": ".status.node", "priority": 1},
             _READY, _AGE])
KEYPAIR = KindInfo(
    group=GROUP_COMPUTE, kind="KeyPair", plural="keypairs", singular="keypair", short_names=["kp"],
    namespaced=True, spec=KeyPairSpec, status=KeyPairStatus, spec_rules=KEYPAIR_SPEC_RULES,
    description="A Nova key pair: an SSH public key that Instances put into their guests.",
    columns=[{"name": "Type", "type": "string", "jsonPath": ".spec.type"},
             {"name": "Fingerprint", "type": "string", "jsonPath": ".status.fingerprint"}, _READY, _AGE])
SECURITY_GROUP = KindInfo(
    group=GROUP_COMPUTE, kind="SecurityGroup", plural="securitygroups", singular="securitygroup",
    short_names=["sg"], namespaced=True, spec=SecurityGroupSpec, status=SecurityGroupStatus,
    description="A Neutron security group, enforced as a NetworkPolicy on the Instances that name it.",
    columns=[{"name": "Policy", "type": "string", "jsonPath": ".status.networkPolicy"}, _READY, _AGE])
SERVER_GROUP = KindInfo(
    group=GROUP_COMPUTE, kind="ServerGroup", plural="servergroups", singular="servergroup", short_names=["sgrp"],
    namespaced=True, spec=ServerGroupSpec, status=ServerGroupStatus,
    description="A Nova server group: (anti-)affinity of its members, as pod (anti-)affinity.",
    columns=[{"name": "Policy", "type": "string", "jsonPath": ".spec.policy"}, _READY, _AGE])
AVAILABILITY_ZONE = KindInfo(
    group=GROUP_COMPUTE, kind="AvailabilityZone", plural="availabilityzones", singular="availabilityzone",
    short_names=["az"], namespaced=False, spec=AvailabilityZoneSpec, status=AvailabilityZoneStatus,
    description="A zone of nodes (topology.kubernetes.io/zone), kept by Kova: Nova's availability zones.",
    columns=[{"name": "Available", "type": "boolean", "jsonPath": ".status.available"},
             {"name": "Hosts", "type": "string", "jsonPath": ".status.hosts"}, _READY, _AGE])


def _quota_column(title: str, name: str, priority: int = 0) -> dict[str, Any]:
    column = {"name": title, "type": "string", "jsonPath": f".status.quotas[?(@.name=='{name}')].usage"}
    return {**column, "priority": priority} if priority else column


# No short name: "quota" is ResourceQuota's.
QUOTA = KindInfo(
    group=GROUP_COMPUTE, kind="Quota", plural="quotas", singular="quota", short_names=[],
    namespaced=True, spec=QuotaSpec, status=QuotaStatus,
    description="A project's quotas (Nova's and Glance's names): one per namespace, `default`, kept by Kova; its "
                "spec overrides the cloud's defaults (administrators only), its status shows use and limits.",
    columns=[_quota_column("Instances", "instances"), _quota_column("Cores", "cores"),
             _quota_column("RAM", "ram"), _quota_column("Images", "image_count_total"),
             _quota_column("ImageMiB", "image_size_total"), _quota_column("KeyPairs", "key_pairs", 1),
             _quota_column("ServerGroups", "server_groups", 1), _quota_column("Uploading", "image_count_uploading", 1),
             _READY, _AGE])
METADEF_NAMESPACE = KindInfo(
    group=GROUP_IMAGE, kind="MetadefNamespace", plural="metadefnamespaces", singular="metadefnamespace",
    short_names=["mdns"], namespaced=False, spec=MetadefNamespaceSpec, status=MetadefNamespaceStatus,
    description="A Glance metadata definition namespace: properties, objects and tags a cloud understands.",
    columns=[{"name": "Namespace", "type": "string", "jsonPath": ".spec.namespace"},
             {"name": "Visibility", "type": "string", "jsonPath": ".spec.visibility"},
             {"name": "Protected", "type": "boolean", "jsonPath": ".spec.protected"},
             {"name": "Catalog", "type": "string", "jsonPath": ".spec.catalog", "priority": 1}, _AGE])
VOLUME = KindInfo(
    group=GROUP_COMPUTE, kind="Volume", plural="volumes", singular="volume", short_names=["vol"],
    namespaced=True, spec=VolumeSpec, status=VolumeStatus,
    description="A Cinder volume: persistent block storage, a PersistentVolumeClaim filled by CDI.",
    columns=[{"name": "Status", "type": "string", "jsonPath": ".status.status"},
             {"name": "Size", "type": "integer", "jsonPath": ".spec.size", "description": "GiB"},
             {"name": "Type", "type": "string", "jsonPath": ".status.storageClass"},
             {"name": "Attached", "type": "string", "jsonPath": ".status.attachments[*].server"},
             {"name": "Multiattach", "type": "boolean", "jsonPath": ".spec.multiattach", "priority": 1},
             {"name": "Progress", "type": "string", "jsonPath": ".status.progress", "priority": 1},
             _READY, _AGE])
KINDS = [FLAVOR, IMAGE, INSTANCE, KEYPAIR, SECURITY_GROUP, SERVER_GROUP, AVAILABILITY_ZONE, QUOTA,
         METADEF_NAMESPACE, VOLUME]
