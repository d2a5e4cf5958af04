"""Nova's compute API 2.1 over Kova's objects, as pure functions: the documents Nova answers (versions,
servers, flavors, key pairs, server groups, zones, limits, networks) at each microversion, and the
translation of Nova's requests into Instance specs. Which actions a server may take is kova.compute's
rule (kova.compute.actions), shared with the operator; nothing here decides what Kova does.

Tempest checks every answer against a schema per microversion with `additionalProperties: false`: a key
is shown only from the microversion that adds it, and only to whom Nova shows it (no admin-only
attributes: `OS-EXT-SRV-ATTR:*`, `host_status`)."""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from kova.api.errors import StatusError
from kova.api.models import (
    MAX_METADATA_ITEMS,
    MAX_SERVER_TAGS,
    AttachmentState,
    FlavorSpec,
    InstanceSpec,
    InstanceStatus,
    NovaStatus,
)
from kova.compute import actions
from kova.compute.access import fingerprint
from kova.openstack.compute.microversion import MAX, MIN, Version

Body = dict[str, Any]

# What the API keeps of Nova's request that Kova's spec has no field for, so that it is echoed back.
ACCESS_IPV4 = "compute.kova.dev/access-ipv4"
ACCESS_IPV6 = "compute.kova.dev/access-ipv6"
DISK_CONFIG = "compute.kova.dev/disk-config"
USER_ID = "compute.kova.dev/user-id"
RESERVATION = "compute.kova.dev/reservation-id"
KEY_NAME = "compute.kova.dev/key-name"
PROGRESS_STATUSES = {"ACTIVE", "BUILD", "REBUILD", "RESIZE", "VERIFY_RESIZE", "MIGRATING"}
# nova.compute.power_state
POWER_STATES = {"Running": 1, "Paused": 3, "Shutdown": 4, "Crashed": 6, "Suspended": 7}
DEFAULT_LIMIT = 1000  # Nova's [api] max_limit
NETWORK_NAMESPACE = uuid.UUID("8b7d9d3e-2c61-5c3f-9f0c-6f7661000001")  # ids of os-networks entries
NAME_MAX = 255


class NovaError(StatusError):
    """Nova's answer instead of a document: 400, 403, 404, 409, 413..."""


FAULT_NAMES = {400: "badRequest", 401: "unauthorized", 403: "forbidden", 404: "itemNotFound", 405: "badMethod",
               409: "conflictingRequest", 413: "overLimit", 415: "badMediaType", 429: "overLimit",
               501: "notImplemented", 503: "serviceUnavailable"}


def error_body(status: int, message: str) -> Body:
    if status == 401:  # keystonemiddleware answers these, in Keystone's shape
        return {"error": {"code": 401, "title": "Unauthorized", "message": message}}
    return {FAULT_NAMES.get(status, "computeFault"): {"code": status, "message": message}}


# ---------------------------------------------------------------------------------------------- versions
def _version_v21(base: str) -> Body:
    return {"id": "v2.1", "status": "CURRENT", "version": str(MAX), "min_version": str(MIN),
            "updated": "2013-07-23T11:33:21Z",
            "links": [{"rel": "self", "href": f"{base}/v2.1/"},
                      {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2.1"}]}


def _version_v20(base: str) -> Body:
    return {"id": "v2.0", "status": "DEPRECATED", "version": "", "min_version": "", "updated": "2025-07-04T12:00:00Z",
            "links": [{"rel": "self", "href": f"{base}/v2/"},
                      {"rel": "describedby", "type": "text/html", "href": "http://docs.openstack.org/"}],
            "media-types": [{"base": "application/json",
                             "type": "application/vnd.openstack.compute+json;version=2"}]}


def versions(base: str) -> Body:
    """The unversioned root: both versions, each with a self link that answers (`base` is the compute root)."""
    return {"versions": [_version_v20(base), _version_v21(base)]}


def version(base: str, which: str = "v2.1") -> Body:
    return {"version": _version_v21(base) if which == "v2.1" else _version_v20(base)}


# ---------------------------------------------------------------------------------------------- helpers
def isotime(value: str | dt.datetime | None) -> str | None:
    """Nova's timestamps: 2026-12-02T21:09:46Z."""
    if value is None:
        return None
    t = value if isinstance(value, dt.datetime) else dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def usage_time(value: str | None) -> str | None:
    """OS-SRV-USG's timestamps: microseconds and no zone (2026-12-02T21:09:46.000000)."""
    if value is None:
        return None
    t = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")


def updated_at(obj: Mapping[str, Any]) -> str:
    """The last time anyone wrote the object: the newest field-manager time."""
    md = obj["metadata"]
    times = [m.get("time") for m in md.get("managedFields") or () if m.get("time")]
    return isotime(max([md["creationTimestamp"], *times])) or ""


def links(base: str, kind: str, ident: str) -> list[Body]:
    """Nova's self and bookmark links; `base` is the project's compute root (<url>/projects/<ns>/compute)."""
    return [{"rel": "self", "href": f"{base}/v2.1/{kind}/{ident}"},
            {"rel": "bookmark", "href": f"{base}/{kind}/{ident}"}]


def ref_id(ref: str) -> str:
    """Nova takes a flavorRef or imageRef as an id or as a link ending in it."""
    return ref.rstrip("/").rsplit("/", 1)[-1]


def host_id(project: str, node: str | None) -> str:
    """Nova's hostId: a hash of the project and the host, so tenants tell hosts apart without naming them."""
    return hashlib.sha224((project + node).encode()).hexdigest() if node else ""


def network_id(namespace: str, network: str) -> str:
    return str(uuid.uuid5(NETWORK_NAMESPACE, f"{namespace}/{network}"))


@dataclass
class Related:
    """What a server's view needs from other objects (resolved by the handler from its caches)."""

    image_id: str | None = None
    image_properties: dict[str, str] = field(default_factory=dict)
    flavor: FlavorSpec | None = None  # the Flavor named, for a server that has not applied one yet
    groups: list[str] = field(default_factory=list)  # uids of its ServerGroup


# nova.api.openstack.common._STATE_MAP: the task words each vm_state shows; other tasks keep the vm_state's word.
TASK_WORDS_SHOWN: dict[str, set[str]] = {"active": set(actions.TASK_WORDS), "stopped": {"resize_prep", "rebuilding"},
                                         "error": {"rebuilding"}, "resized": {"resize_reverting"}}


def nova_status(obj: Mapping[str, Any]) -> tuple[str, str, str | None, int]:
    """(status, vm_state, task_state, power_state) as Nova shows them, the spec's pending action included."""
    spec, status = actions.parse(dict(obj))
    if obj["metadata"].get("deletionTimestamp"):
        return NovaStatus.deleted.value, status.vm_state or "deleted", "deleting", _power(status)
    word = status.status.value if status.status else NovaStatus.build.value
    task = actions.pending_task(spec, status)
    if task is not None and not status.task_state and task in TASK_WORDS_SHOWN.get(status.vm_state or "", ()):
        word = actions.TASK_WORDS.get(task, word)
    if word == NovaStatus.build.value and task is None:
        task = "spawning" if status.virtual_machine else "scheduling"
    return word, status.vm_state or "building", task, _power(status)


def _power(status: InstanceStatus) -> int:
    return POWER_STATES.get(status.power_state or "", 0)


def _addresses(status: InstanceStatus, detail: bool) -> dict[str, list[Body]]:
    out: dict[str, list[Body]] = {}
    for a in status.addresses:
        entry: Body = {"addr": a.ip, "version": 6 if ":" in a.ip else 4}
        if detail:
            entry["OS-EXT-IPS:type"] = "fixed"
            if a.mac:
                entry["OS-EXT-IPS-MAC:mac_addr"] = a.mac.lower()
        out.setdefault(a.interface, []).append(entry)
    return out


def addresses(obj: Mapping[str, Any]) -> dict[str, list[Body]]:
    return _addresses(actions.parse(dict(obj))[1], detail=False)


def _launched_at(status: InstanceStatus) -> str | None:
    for action in status.actions:
        if action.action == "create" and action.result == "Success":
            return usage_time(action.finish_time or action.start_time)
    if status.status is not None and status.status not in (NovaStatus.build, NovaStatus.error):
        ready = next((c for c in status.conditions if c.type == "Ready"), None)
        return usage_time(ready.last_transition_time) if ready else None
    return None


def _flavor(view_version: Version, base: str, spec: InstanceSpec, status: InstanceStatus, rel: Related) -> Body:
    name = status.flavor.name if status.flavor else spec.flavor_ref
    if not view_version.at_least("2.47"):
        return {"id": name, "links": [{"rel": "bookmark", "href": f"{base}/flavors/{name}"}]}
    sizes: Any = status.flavor or rel.flavor
    if sizes is None:
        return {"original_name": name, "vcpus": 0, "ram": 0, "disk": 0, "ephemeral": 0, "swap": 0,
                "extra_specs": {}}
    return {"original_name": name, "vcpus": sizes.vcpus, "ram": sizes.ram, "disk": sizes.disk,
            "ephemeral": sizes.ephemeral, "swap": sizes.swap, "extra_specs": dict(sizes.extra_specs)}


def _image(v: Version, base: str, rel: Related) -> Body | str:
    if rel.image_id is None:
        return ""
    image: Body = {"id": rel.image_id, "links": [{"rel": "bookmark", "href": f"{base}/images/{rel.image_id}"}]}
    if v.at_least("2.98"):
        image["properties"] = {k: v2[:255] for k, v2 in rel.image_properties.items()
                               if re.fullmatch(r"[a-zA-Z0-9_:. ]{1,255}", k)}
    return image


def server_brief(obj: Mapping[str, Any], base: str) -> Body:
    spec = InstanceSpec.model_validate(obj.get("spec") or {})
    uid = obj["metadata"]["uid"]
    return {"id": uid, "name": display_name(obj, spec), "links": links(base, "servers", uid)}


def key_name(obj: Mapping[str, Any], spec: InstanceSpec) -> str | None:
    """The Nova name of the server's key pair (kept at create: the KeyPair object's name may differ)."""
    if spec.key_name is None:
        return None
    return str((obj["metadata"].get("annotations") or {}).get(KEY_NAME) or spec.key_name)


def display_name(obj: Mapping[str, Any], spec: InstanceSpec | None = None) -> str:
    spec = spec or InstanceSpec.model_validate(obj.get("spec") or {})
    return spec.name if spec.name is not None else str(obj["metadata"]["name"])


def server_view(obj: Mapping[str, Any], v: Version, base: str, rel: Related, mode: str = "show") -> Body:
    """A server as Nova shows it. `mode`: show (GET one), detail (an item of /servers/detail), update (PUT),
    rebuild (the rebuild action's answer). Below 2.75 update and rebuild answer a shorter view, as Nova."""
    md = obj["metadata"]
    spec, status = actions.parse(dict(obj))
    uid, ann = md["uid"], md.get("annotations") or {}
    word, vm_state, task, power = nova_status(obj)
    full = mode in ("show", "detail") or v.at_least("2.75")
    doc: Body = {
        "id": uid, "name": display_name(obj, spec), "status": word, "tenant_id": md["namespace"],
        "user_id": ann.get(USER_ID, ""), "metadata": dict(spec.metadata),
        "hostId": host_id(md["namespace"], status.node), "image": _image(v, base, rel),
        "flavor": _flavor(v, base, spec, status, rel), "created": isotime(md["creationTimestamp"]),
        "updated": updated_at(obj), "addresses": _addresses(status, detail=full),
        "accessIPv4": ann.get(ACCESS_IPV4, ""), "accessIPv6": ann.get(ACCESS_IPV6, ""),
        "links": links(base, "servers", uid), "OS-DCF:diskConfig": ann.get(DISK_CONFIG, "MANUAL"),
    }
    if word in PROGRESS_STATUSES:
        doc["progress"] = 0
    if status.fault is not None and word in ("ERROR", "DELETED"):
        doc["fault"] = {"code": status.fault.code, "message": status.fault.message,
                        "created": updated_at(obj)}
    if full:
        doc.update({
            "key_name": key_name(obj, spec),
            "security_groups": [{"name": g} for g in spec.security_groups or ["default"]],
            "OS-SRV-USG:launched_at": _launched_at(status), "OS-SRV-USG:terminated_at": None,
            "OS-EXT-AZ:availability_zone": status.availability_zone or spec.availability_zone or "",
            "OS-EXT-STS:vm_state": vm_state, "OS-EXT-STS:task_state": task, "OS-EXT-STS:power_state": power,
            "os-extended-volumes:volumes_attached": [
                {"id": a.serial, **({"delete_on_termination": a.delete_on_termination} if v.at_least("2.3") else {})}
                for a in status.volume_attachments if a.serial and a.state is AttachmentState.attached],
            "config_drive": ""})
    if mode == "rebuild":
        if v.at_least("2.54"):
            doc["key_name"] = key_name(obj, spec)
        if v.at_least("2.57"):
            doc["user_data"] = _b64(spec.user_data)
    if v.at_least("2.9"):
        doc["locked"] = spec.locked
    if v.at_least("2.19"):
        doc["description"] = spec.description
    if v.at_least("2.26"):
        doc["tags"] = list(spec.tags)
    if v.at_least("2.63"):
        doc["trusted_image_certificates"] = None
    if v.at_least("2.71") and mode != "detail":
        doc["server_groups"] = list(rel.groups)
    if v.at_least("2.73"):
        doc["locked_reason"] = spec.locked_reason if spec.locked else None
    if v.at_least("2.90"):  # shown to every user from 2.90: the guest's hostname is the VM's name
        doc["OS-EXT-SRV-ATTR:hostname"] = str(md["name"])
    if v.at_least("2.96") and (full or mode in ("update", "rebuild")):
        doc["pinned_availability_zone"] = spec.availability_zone
    if v.at_least("2.100"):
        doc["scheduler_hints"] = {"group": rel.groups[0]} if rel.groups else {}
    if mode == "rebuild" and v.at_least("2.75"):
        doc["user_data"] = _b64(spec.user_data)
    return doc


def _b64(text: str | None) -> str | None:
    return base64.b64encode(text.encode()).decode() if text is not None else None


# ---------------------------------------------------------------------------------------------- create
@dataclass
class NewServer:
    """What POST /servers asks for, in Kova's words (the handler resolves image, flavor, group ids)."""

    name: str
    image_id: str
    flavor_id: str
    spec: Body
    annotations: dict[str, str]
    min_count: int
    max_count: int
    group_id: str | None
    network_ids: list[str]  # os-networks ids or names, resolved by the handler
    return_reservation_id: bool
    boot_volume: BlockDevice | None = None  # boot from this volume instead of an image
    volumes: list[BlockDevice] = field(default_factory=list)  # volumes attached at create


@dataclass(frozen=True)
class BlockDevice:
    """A volume of block_device_mapping_v2 (source_type and destination_type volume), by the Volume's uid."""

    volume_id: str
    delete_on_termination: bool = False
    tag: str | None = None


def _count(server: Mapping[str, Any], key: str) -> int:
    value = server.get(key, 1)
    try:
        count = int(value)
    except (TypeError, ValueError) as e:
        raise NovaError(400, f"Invalid input for field/attribute {key}. Value: {value}. "
                             f"{value!r} is not of type 'integer'") from e
    if isinstance(value, bool) or count < 1 or str(value).strip() != str(count):
        raise NovaError(400, f"Invalid input for field/attribute {key}. Value: {value}. "
                             f"{value!r} is less than the minimum of 1")
    return count


def _string(server: Mapping[str, Any], key: str, required: bool = False, maximum: int = NAME_MAX) -> str | None:
    value = server.get(key)
    if value is None:
        if required:
            raise NovaError(400, f"Invalid input for field/attribute server. Value: {dict(server)}. "
                                 f"'{key}' is a required property")
        return None
    if not isinstance(value, str) or len(value) > maximum:
        raise NovaError(400, f"Invalid input for field/attribute {key}. Value: {value}. "
                             f"{value!r} is not valid (a string of at most {maximum} characters)")
    return value


def check_name(name: str) -> str:
    if not name.strip() or name != name.strip():
        raise NovaError(400, f"Invalid input for field/attribute name. Value: {name}. {name!r} does not match "
                             "'^(?! )[^\\x00-\\x1f]*(?<! )$' (no leading or trailing spaces)")
    if any(ord(c) < 0x20 for c in name):
        raise NovaError(400, f"Invalid input for field/attribute name. Value: {name!r}. Control characters are "
                             "not allowed")
    return name


def check_metadata(metadata: Any) -> dict[str, str]:
    if not isinstance(metadata, dict):
        raise NovaError(400, f"Invalid input for field/attribute metadata. Value: {metadata}. "
                             f"{metadata!r} is not of type 'object'")
    for key, value in metadata.items():
        if not isinstance(key, str) or not 1 <= len(key) <= 255:
            raise NovaError(400, f"Invalid input for field/attribute metadata. Value: {metadata}. Metadata keys "
                                 "are 1 to 255 characters")
        if not isinstance(value, str) or len(value) > 255:
            raise NovaError(400, f"Invalid input for field/attribute metadata. Value: {metadata}. Metadata "
                                 "values are strings of at most 255 characters")
    if len(metadata) > MAX_METADATA_ITEMS:
        raise NovaError(403, f"Quota exceeded for metadata_items: Requested {len(metadata)}, but already used 0 "
                             f"of {MAX_METADATA_ITEMS} metadata_items")
    return {str(k): str(v) for k, v in metadata.items()}


def check_tags(tags: Any) -> list[str]:
    if not isinstance(tags, list) or any(not isinstance(t, str) for t in tags):
        raise NovaError(400, f"Invalid input for field/attribute tags. Value: {tags}. A list of strings")
    for tag in tags:
        check_tag(tag)
    if len(set(tags)) > MAX_SERVER_TAGS:
        raise NovaError(400, f"The number of tags exceeded the per-server limit {MAX_SERVER_TAGS}")
    return sorted(set(tags))


def check_tag(tag: str) -> str:
    if not 1 <= len(tag) <= 60 or "," in tag or "/" in tag:
        raise NovaError(400, f"Invalid input for field/attribute tag. Value: {tag}. Tags are 1 to 60 characters "
                             "without ',' or '/'")
    return tag


def _user_data(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or len(value) > 65535:
        raise NovaError(400, "Invalid input for field/attribute user_data. Value: .... Not a base64 string of at "
                             "most 65535 characters")
    try:
        raw = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise NovaError(400, f"Invalid input for field/attribute user_data. Value: {value[:40]}. "
                             f"{value[:40]!r} is not a 'base64'") from e
    try:
        return raw.decode()
    except UnicodeDecodeError as e:
        raise NovaError(400, "user_data must be text once decoded (Kova hands it to cloud-init as text; gzip "
                             "or other binary user data is not supported)") from e


def _access_ip(server: Mapping[str, Any], key: str, version: int) -> str | None:
    value = server.get(key)
    if value in (None, ""):
        return None
    try:
        address = ipaddress.ip_address(str(value))
    except ValueError as e:
        raise NovaError(400, f"Invalid input for field/attribute {key}. Value: {value}. {value!r} is not a "
                             f"'ipv{version}'") from e
    if address.version != version:
        raise NovaError(400, f"Invalid input for field/attribute {key}. Value: {value}. {value!r} is not a "
                             f"'ipv{version}'")
    return str(address)


def _networks(server: Mapping[str, Any], v: Version) -> list[str] | None:
    """The networks asked for: None for `auto` (the pod network), [] for `none`, or ids/names."""
    value = server.get("networks")
    if value is None:
        if v.at_least("2.37"):
            raise NovaError(400, "Invalid input for field/attribute server. Value: .... 'networks' is a required "
                                 "property")
        return None
    if value in ("auto", "none") and not v.at_least("2.37"):
        raise NovaError(400, f"Invalid input for field/attribute networks. Value: {value}. {value!r} is not of type "
                             "'array'")
    if value == "auto":
        return None
    if value == "none":
        return []
    if isinstance(value, str):
        raise NovaError(400, f"Invalid input for field/attribute networks. Value: {value}. {value!r} is not one "
                             "of ['none', 'auto'] or a list")
    if not isinstance(value, list):
        raise NovaError(400, f"Invalid input for field/attribute networks. Value: {value}. Not a list")
    if not value:  # as no request: the project's network (the CLI sends [] below 2.37)
        return None
    out = []
    for item in value:
        if not isinstance(item, dict):
            raise NovaError(400, f"Invalid input for field/attribute networks. Value: {value}. Items are objects")
        if item.get("port"):
            raise NovaError(400, "Ports are Neutron's: Kova has no Neutron, name a network (uuid) instead")
        if item.get("fixed_ip"):
            raise NovaError(400, "A fixed_ip cannot be chosen: addresses come from the pod network or the "
                                 "NetworkAttachmentDefinition's IPAM")
        if not item.get("uuid"):
            raise NovaError(400, f"Invalid input for field/attribute networks. Value: {value}. 'uuid' is required")
        out.append(str(item["uuid"]))
    return out


def _check_uuid(key: str, value: str) -> None:
    """Nova's imageRef is a uuid (format uuid in its create and rebuild schemas), not a link."""
    try:
        uuid.UUID(value)
    except ValueError as e:
        raise NovaError(400, f"Invalid input for field/attribute {key}. Value: {value}. {value!r} is not a "
                             "'uuid'") from e


def parse_create(body: Any, v: Version) -> NewServer:
    """POST /servers: Nova's checks of the request body, and what it asks of an Instance."""
    server = body.get("server") if isinstance(body, dict) else None
    if not isinstance(server, dict):
        raise NovaError(400, "Invalid input for field/attribute server. 'server' is a required property")
    name = check_name(_string(server, "name", required=True) or "")
    flavor = _string(server, "flavorRef", required=True) or ""
    image = _string(server, "imageRef", maximum=4096) or ""
    bdm = server.get("block_device_mapping_v2")
    boot, volumes = None, []
    if isinstance(bdm, list):
        for b in bdm:
            source = b.get("source_type") if isinstance(b, dict) else None
            target = b.get("destination_type", "local") if isinstance(b, dict) else None
            if source == "image" and target == "local":
                continue
            if source != "volume" or target != "volume":
                raise NovaError(400, "Kova boots from an image onto a local root disk or from an existing volume, "
                                     "and attaches existing volumes (block_device_mapping_v2 with source_type image "
                                     "and destination_type local, or source_type and destination_type volume): "
                                     "create the Volume first")
            assert isinstance(b, dict)
            _check_uuid("uuid", str(b.get("uuid") or ""))
            wanted = BlockDevice(str(b["uuid"]), bool(b.get("delete_on_termination", False)),
                                 check_tag(str(b["tag"])) if b.get("tag") is not None else None)
            if str(b.get("boot_index", "")) == "0":
                boot = wanted
            else:
                volumes.append(wanted)
    if not image and boot is None and isinstance(bdm, list) and bdm:
        # `openstack server create --image` sends its image as the root device's source.
        roots = [b for b in bdm if str(b.get("boot_index", "")) == "0"] or bdm
        image = str(roots[0].get("uuid") or "")
    if boot is not None and image:
        raise NovaError(400, "A server boots from imageRef or from a volume (boot_index 0), not both")
    if not image and boot is None:
        raise NovaError(400, "Missing imageRef attribute")
    if image:
        _check_uuid("imageRef", image)
    min_count = _count(server, "min_count")
    max_count = _count(server, "max_count") if "max_count" in server else min_count
    if min_count > max_count:
        raise NovaError(400, "min_count must be <= max_count")
    spec: Body = {"flavorRef": "", "imageRef": ""}
    if server.get("key_name") is not None:
        spec["keyName"] = _string(server, "key_name")
    if "metadata" in server:
        spec["metadata"] = check_metadata(server["metadata"])
    user_data = _user_data(server.get("user_data"))
    if user_data is not None:
        spec["userData"] = user_data
    if server.get("availability_zone"):
        zone = str(server["availability_zone"]).split(":", 1)[0]
        if zone and zone != "nova":
            spec["availabilityZone"] = zone
    groups = server.get("security_groups")
    if groups is not None:
        if not isinstance(groups, list) or any(not isinstance(g, dict) or not g.get("name") for g in groups):
            raise NovaError(400, "Invalid input for field/attribute security_groups. A list of {'name': ...}")
        spec["securityGroups"] = sorted({str(g["name"]) for g in groups})
    if "description" in server:
        if not v.at_least("2.19"):
            raise NovaError(400, "Invalid input for field/attribute server. Additional properties are not allowed "
                                 "('description' was unexpected)")
        spec["description"] = _string(server, "description")
    if "tags" in server:
        if not v.at_least("2.52"):
            raise NovaError(400, "Invalid input for field/attribute server. Additional properties are not allowed "
                                 "('tags' was unexpected)")
        spec["tags"] = check_tags(server["tags"])
    hints = (body.get("os:scheduler_hints") or body.get("OS-SCH-HNT:scheduler_hints") or {})
    group = hints.get("group") if isinstance(hints, dict) else None
    annotations = {}
    for key, ann, ipv in (("accessIPv4", ACCESS_IPV4, 4), ("accessIPv6", ACCESS_IPV6, 6)):
        address = _access_ip(server, key, ipv)
        if address:
            annotations[ann] = address
    disk_config = server.get("OS-DCF:diskConfig")
    if disk_config is not None:
        if disk_config not in ("AUTO", "MANUAL"):
            raise NovaError(400, f"Invalid input for field/attribute OS-DCF:diskConfig. Value: {disk_config}. "
                                 "'AUTO' or 'MANUAL'")
        annotations[DISK_CONFIG] = disk_config
    networks = _networks(server, v)
    if (boot is not None or volumes) and max_count > 1:
        raise NovaError(400, "Multiple servers cannot share the same volumes: create them one by one")
    return NewServer(name=name, image_id=ref_id(image) if image else "", flavor_id=ref_id(flavor), spec=spec,
                     annotations=annotations, min_count=min_count, max_count=max_count,
                     group_id=str(group) if group else None,
                     network_ids=["pod"] if networks is None else networks,
                     return_reservation_id=bool(server.get("return_reservation_id")),
                     boot_volume=boot, volumes=volumes)


def instance_names(name: str, count: int) -> list[str]:
    """Nova's multi_instance_display_name_template (`%(name)s-%(count)d`) when it makes several."""
    return [name] if count == 1 else [f"{name}-{n}" for n in range(1, count + 1)]


# ---------------------------------------------------------------------------------------------- update
def parse_update(body: Any, v: Version) -> tuple[Body, dict[str, str | None]]:
    """PUT /servers/{id}: (spec patch, annotation patch)."""
    server = body.get("server") if isinstance(body, dict) else None
    if not isinstance(server, dict):
        raise NovaError(400, "Invalid input for field/attribute server. 'server' is a required property")
    allowed = {"name", "accessIPv4", "accessIPv6", "OS-DCF:diskConfig"} | ({"description"} if v.at_least("2.19")
                                                                           else set())
    if v.at_least("2.90"):
        allowed.add("hostname")
    extra = sorted(set(server) - allowed)
    if extra:
        raise NovaError(400, f"Invalid input for field/attribute server. Additional properties are not allowed "
                             f"({', '.join(repr(k) for k in extra)} was unexpected)")
    spec: Body = {}
    ann: dict[str, str | None] = {}
    if "name" in server:
        spec["name"] = check_name(_string(server, "name", required=True) or "")
    if "description" in server:
        spec["description"] = _string(server, "description")
    for key, name, ipv in (("accessIPv4", ACCESS_IPV4, 4), ("accessIPv6", ACCESS_IPV6, 6)):
        if key in server:
            ann[name] = _access_ip(server, key, ipv)
    if "OS-DCF:diskConfig" in server:
        if server["OS-DCF:diskConfig"] not in ("AUTO", "MANUAL"):
            raise NovaError(400, "Invalid input for field/attribute OS-DCF:diskConfig. 'AUTO' or 'MANUAL'")
        ann[DISK_CONFIG] = server["OS-DCF:diskConfig"]
    return spec, ann


# ---------------------------------------------------------------------------------------------- actions
@dataclass
class Action:
    """A server action in Kova's words: its Nova name, the spec patch it writes, and what else it needs."""

    name: str
    patch: Body
    hard: bool = False
    flavor_id: str | None = None  # resize
    image_id: str | None = None  # rebuild
    image_name: str | None = None  # createImage
    image_metadata: dict[str, str] = field(default_factory=dict)
    key_name: str | None = None  # rebuild from 2.54: another key pair ("" to have none)


ACTION_NAMES = {"os-start": "start", "os-stop": "stop", "pause": "pause", "unpause": "unpause",
                "suspend": "suspend", "resume": "resume", "reboot": "reboot", "resize": "resize",
                "confirmResize": "confirmResize", "revertResize": "revertResize", "rebuild": "rebuild",
                "lock": "lock", "unlock": "unlock", "createImage": "createImage"}
NOT_SERVED = {
    "shelve": "Kova has no shelve: stop the server (it keeps its disk and frees its memory)",
    "shelveOffload": "Kova has no shelve", "unshelve": "Kova has no shelve",
    "rescue": "Kova has no rescue mode", "unrescue": "Kova has no rescue mode",
    "migrate": "Kubernetes schedules: Kova has no cold migration", "os-migrateLive": "Kova has no live migration "
    "through this API (KubeVirt's VirtualMachineInstanceMigration does it)",
    "os-getConsoleOutput": "the console log is served by remote consoles (serial), not as text",
    "changePassword": "Kova sets no guest password: use a key pair or user_data",
    "addFloatingIp": "Kova has no Neutron", "removeFloatingIp": "Kova has no Neutron",
    "addSecurityGroup": "security groups are named in the Instance's spec.securityGroups (kubectl edit)",
    "removeSecurityGroup": "security groups are named in the Instance's spec.securityGroups (kubectl edit)",
    "forceDelete": "Kova deletes at once", "restore": "Kova has no soft delete",
    "trigger_crash_dump": "Kova cannot inject an NMI", "os-resetState": "an administrator's action",
    "resetNetwork": "an administrator's action", "injectNetworkInfo": "an administrator's action",
    "evacuate": "Kubernetes reschedules: no evacuate",
}


def parse_action(body: Any, spec: InstanceSpec, status: InstanceStatus, token: str, v: Version) -> Action:
    """POST /servers/{id}/action: which action, and the spec patch that asks the operator for it (the same
    fields `kubectl` would set). `token` makes one-shot requests (reboot, resize answers) unique."""
    if not isinstance(body, dict) or len(body) != 1:
        raise NovaError(400, "There is either no action or more than one action in the request body")
    key, arg = next(iter(body.items()))
    if key in NOT_SERVED:
        raise NovaError(400, f"{key}: {NOT_SERVED[key]}")
    name = ACTION_NAMES.get(key)
    if name is None:
        raise NovaError(400, f"There is no such action: {key}")
    if name in actions.POWER_TARGETS:
        return Action(name, {"powerState": actions.POWER_TARGETS[name].value})
    if name == "reboot":
        kind = str((arg or {}).get("type", "")).upper() if isinstance(arg, dict) else ""
        if kind not in ("SOFT", "HARD"):
            raise NovaError(400, f"Invalid input for field/attribute type. Value: {kind}. {kind!r} is not one of "
                                 "['HARD', 'Hard', 'SOFT', 'Soft']")
        return Action(name, {"rebootRequest": {"type": kind, "token": token}}, hard=kind == "HARD")
    if name == "resize":
        flavor = (arg or {}).get("flavorRef") if isinstance(arg, dict) else None
        if not flavor:
            raise NovaError(400, "Resize requests require 'flavorRef' attribute.")
        flavor_id = ref_id(str(flavor))
        current = status.flavor.name if status.flavor else spec.flavor_ref
        if flavor_id == current:
            raise NovaError(400, "When resizing, instances must change flavor!")
        return Action(name, {"flavorRef": flavor_id}, flavor_id=flavor_id)
    if name == "revertResize" and status.resize is not None:
        # The flavor set back: the declarative revert, which also lets a later resize ask for that flavor again.
        return Action(name, {"flavorRef": status.resize.old_flavor.name})
    if name in ("confirmResize", "revertResize"):
        return Action(name, {"resizeRequest": {"action": "Confirm" if name == "confirmResize" else "Revert",
                                               "token": token}})
    if name == "lock":
        reason = (arg or {}).get("locked_reason") if isinstance(arg, dict) else None
        if not v.at_least("2.73"):
            reason = None  # Nova's lock takes any body before 2.73 and ignores a reason
        if reason is not None and (not isinstance(reason, str) or len(reason) > 255):
            raise NovaError(400, "Invalid input for field/attribute locked_reason: a string of at most 255 "
                                 "characters")
        return Action(name, {"locked": True, "lockedReason": reason})
    if name == "unlock":
        return Action(name, {"locked": False, "lockedReason": None})
    if name == "rebuild":
        if not isinstance(arg, dict) or not arg.get("imageRef"):
            raise NovaError(400, "Invalid input for field/attribute rebuild. 'imageRef' is a required property")
        _check_uuid("imageRef", str(arg["imageRef"]))
        patch: Body = {}
        if "name" in arg:
            patch["name"] = check_name(str(arg["name"]))
        if "metadata" in arg:
            patch["metadata"] = check_metadata(arg["metadata"])
        if "description" in arg and v.at_least("2.19"):
            patch["description"] = arg["description"]
        if "user_data" in arg and v.at_least("2.57"):
            patch["userData"] = _user_data(arg["user_data"])
        act = Action(name, patch, image_id=ref_id(str(arg["imageRef"])))
        if "key_name" in arg:
            if not v.at_least("2.54"):
                raise NovaError(400, "Invalid input for field/attribute rebuild. Additional properties are not "
                                     "allowed ('key_name' was unexpected)")
            act.key_name = arg["key_name"] if arg["key_name"] is not None else ""  # "": unset the key
        return act
    if name == "createImage":
        if not isinstance(arg, dict) or not isinstance(arg.get("name"), str) or not arg["name"].strip():
            raise NovaError(400, "Invalid input for field/attribute createImage. 'name' is a required property")
        metadata = check_metadata(arg.get("metadata") or {})
        return Action(name, {}, image_name=arg["name"], image_metadata=metadata)
    raise NovaError(400, f"There is no such action: {key}")


def create_image_answer(image_id: str, image_base: str, v: Version) -> tuple[Body | None, dict[str, str]]:
    """createImage's answer: the image id in the body from 2.45, a Location header before."""
    location = {"Location": f"{image_base}/v2/images/{image_id}"}
    if v.at_least("2.45"):
        return {"image_id": image_id}, location
    return None, location


# ---------------------------------------------------------------------------------------------- lists
@dataclass
class ServerQuery:
    limit: int | None
    marker: str | None
    filters: dict[str, str]


# Filters Nova lets a non-admin use (nova.api.openstack.compute.servers: schema query_params_v21 and the
# non-admin list in _get_servers), and the sort keys it accepts.
SERVER_FILTERS = {"name", "status", "image", "flavor", "changes-since", "changes-before", "locked", "tags",
                  "tags-any", "not-tags", "not-tags-any", "reservation_id", "ip", "ip6", "availability_zone",
                  "key_name", "description", "created_at", "updated_at", "launched_at", "vm_state",
                  "task_state", "power_state", "uuid", "config_drive", "access_ip_v4", "access_ip_v6",
                  "user_id", "pinned_availability_zone", "sort_key", "sort_dir", "limit", "marker",
                  "all_tenants", "project_id", "tenant_id", "deleted", "auto_disk_config", "progress",
                  "launch_index", "hostname", "terminated_at", "display_name", "display_description", "host",
                  "node", "kernel_id", "ramdisk_id", "root_device_name", "image_ref", "instance_type_id",
                  "locked_by", "soft_deleted"}
# What a non-admin's filters are (Nova's _get_server_search_options, with 2.66's changes-before, 2.73's locked
# and 2.83's additions); other known filters are dropped silently, as Nova drops them.
USER_FILTERS = {"reservation_id", "name", "status", "image", "flavor", "ip", "changes-since", "ip6", "tags",
                "tags-any", "not-tags", "not-tags-any", "changes-before", "locked", "availability_zone",
                "key_name", "vm_state", "task_state", "power_state", "description"}


# Every status word of nova.api.openstack.common._STATE_MAP: from 2.38 another one is a 400.
NOVA_STATUS_WORDS = {"ACTIVE", "BUILD", "DELETED", "ERROR", "HARD_REBOOT", "MIGRATING", "PASSWORD", "PAUSED", "REBOOT",
                     "REBUILD", "RESCUE", "RESIZE", "REVERT_RESIZE", "SHELVED", "SHELVED_OFFLOADED", "SHUTOFF",
                     "SOFT_DELETED", "SUSPENDED", "VERIFY_RESIZE"}


def parse_server_query(params: Sequence[tuple[str, str]], v: Version) -> ServerQuery:
    filters: dict[str, str] = {}
    limit: int | None = None
    marker: str | None = None
    for key, value in params:
        if key == "limit":
            try:
                limit = int(value)
            except ValueError as e:
                raise NovaError(400, f"Invalid input for query parameters limit. Value: {value}. "
                                     f"'{value}' is not a 'positive_integer_with_empty_str'") from e
            if limit < 0:
                raise NovaError(400, f"Invalid input for query parameters limit. Value: {value}. "
                                     f"'{value}' is not a 'positive_integer_with_empty_str'")
        elif key == "marker":
            marker = value
        elif key in SERVER_FILTERS:
            if key in USER_FILTERS:
                filters[key] = value
        elif v.at_least("2.75"):
            raise NovaError(400, f"Invalid input for query parameters {key}. Additional properties are not "
                                 f"allowed ('{key}' was unexpected)")
    for key in ("changes-since", "changes-before"):
        if key in filters:
            try:
                _parse_time(filters[key])
            except ValueError as e:
                raise NovaError(400, f"Invalid filter field: {key}.") from e
    if "status" in filters and filters["status"].upper() not in NOVA_STATUS_WORDS and v.at_least("2.38"):
        raise NovaError(400, "Invalid status value")
    if "locked" in filters and filters["locked"].lower() not in ("true", "false", "1", "0", "yes", "no"):
        raise NovaError(400, f"Unrecognized value '{filters['locked']}', acceptable values are: '0', '1', 'false', "
                             "'n', 'no', 'off', 'on', 't', 'true', 'y', 'yes'")
    return ServerQuery(limit, marker, filters)


def _parse_time(text: str) -> dt.datetime:
    t = dt.datetime.fromisoformat(text.replace("Z", "+00:00").replace(" ", "+"))
    return t if t.tzinfo else t.replace(tzinfo=dt.UTC)


def _truthy(text: str) -> bool:
    return text.lower() in ("true", "1", "yes", "y", "t", "on")


def server_matches(obj: Mapping[str, Any], filters: Mapping[str, str], rel: Related) -> bool:
    if not filters:  # the common list: no need to parse the Instance twice more before its view does
        return True
    spec, status = actions.parse(dict(obj))
    word, vm_state, task, power = nova_status(obj)
    for key, value in filters.items():
        if key == "name":
            try:
                if not re.search(value, display_name(obj, spec)):
                    return False
            except re.error:
                if value not in display_name(obj, spec):
                    return False
        elif key == "status":
            if word != value.upper():
                return False
        elif key == "image":
            if ref_id(value) not in (rel.image_id, spec.image_ref):
                return False
        elif key == "flavor":
            if ref_id(value) != (status.flavor.name if status.flavor else spec.flavor_ref):
                return False
        elif key in ("changes-since", "changes-before"):
            changed = _parse_time(updated_at(obj))
            if key == "changes-since" and changed < _parse_time(value):
                return False
            if key == "changes-before" and changed > _parse_time(value):
                return False
        elif key == "locked":
            if spec.locked != _truthy(value):
                return False
        elif key in ("tags", "tags-any", "not-tags", "not-tags-any"):
            wanted, have = {t for t in value.split(",") if t}, set(spec.tags)
            hit = {"tags": wanted <= have, "tags-any": bool(wanted & have), "not-tags": not wanted <= have,
                   "not-tags-any": not wanted & have}[key]
            if not hit:
                return False
        elif key == "availability_zone":
            if value != (status.availability_zone or spec.availability_zone or ""):
                return False
        elif key == "pinned_availability_zone":
            if value != (spec.availability_zone or ""):
                return False
        elif key == "reservation_id":
            if value != (obj["metadata"].get("annotations") or {}).get(RESERVATION):
                return False
        elif key in ("ip", "ip6"):
            try:
                if not any(re.search(value, a.ip) for a in status.addresses):
                    return False
            except re.error:
                return False
        elif key == "key_name":
            if value != (key_name(obj, spec) or ""):
                return False
        elif key == "description":
            if value != (spec.description or ""):
                return False
        elif key in ("vm_state", "task_state", "power_state"):
            have_value = {"vm_state": vm_state, "task_state": task or "", "power_state": str(power)}[key]
            if value != have_value:
                return False
    return True


def page(items: list[Body], query: ServerQuery, key: str = "id") -> tuple[list[Body], bool]:
    """Nova's paging: items after `marker` (404-like 400 when the marker is unknown), `limit` of them."""
    start = 0
    if query.marker is not None:
        ids = [i[key] for i in items]
        if query.marker not in ids:
            raise NovaError(400, f"marker [{query.marker}] not found")
        start = ids.index(query.marker) + 1
    limit = min(query.limit if query.limit is not None else DEFAULT_LIMIT, DEFAULT_LIMIT)
    chosen = items[start:start + limit]
    # A next link whenever more remain, with a limit or without (Nova's _get_collection_links: a page of
    # max_limit servers carries one), or a client that sent none silently gets the first 1,000 only.
    return chosen, bool(chosen) and start + limit < len(items)


def next_link(url: str, params: Sequence[tuple[str, str]], last_id: str) -> list[Body]:
    kept = [(k, v) for k, v in params if k != "marker"] + [("marker", last_id)]
    return [{"rel": "next", "href": f"{url}?{urlencode(kept)}"}]


# ---------------------------------------------------------------------------------------------- flavors
def flavor_id(obj: Mapping[str, Any]) -> str:
    return str(obj["metadata"]["name"])


def flavor_view(obj: Mapping[str, Any], v: Version, base: str, detail: bool) -> Body:
    spec = FlavorSpec.model_validate(obj.get("spec") or {})
    fid = flavor_id(obj)
    doc: Body = {"id": fid, "name": fid, "links": links(base, "flavors", fid)}
    if v.at_least("2.55"):
        doc["description"] = spec.description
    if not detail:
        return doc
    doc.update({"vcpus": spec.vcpus, "ram": spec.ram, "disk": spec.disk, "swap": spec.swap or "",
                "OS-FLV-EXT-DATA:ephemeral": spec.ephemeral, "OS-FLV-DISABLED:disabled": False,
                "os-flavor-access:is_public": spec.public, "rxtx_factor": 1.0})
    if v.at_least("2.75"):
        doc["swap"] = spec.swap
    if v.at_least("2.61"):
        doc["extra_specs"] = dict(spec.extra_specs)
    return doc


def flavor_query(params: Sequence[tuple[str, str]]) -> tuple[str | None, int, int, ServerQuery]:
    """(is_public, minDisk, minRam, paging) of GET /flavors."""
    is_public: str | None = "true"
    min_disk = min_ram = 0
    limit: int | None = None
    marker: str | None = None
    for key, value in params:
        if key == "is_public":
            is_public = value.lower() if value.lower() != "none" else None
        elif key in ("minDisk", "minRam"):
            try:
                number = int(value)
            except ValueError as e:
                raise NovaError(400, f"Invalid {key} filter [{value}]") from e
            if number < 0:
                raise NovaError(400, f"Invalid {key} filter [{value}]")
            if key == "minDisk":
                min_disk = number
            else:
                min_ram = number
        elif key == "limit":
            try:
                limit = int(value)
            except ValueError as e:
                raise NovaError(400, f"Invalid input for query parameters limit. Value: {value}.") from e
        elif key == "marker":
            marker = value
    return is_public, min_disk, min_ram, ServerQuery(limit, marker, {})


def flavor_listed(obj: Mapping[str, Any], is_public: str | None, min_disk: int, min_ram: int) -> bool:
    spec = FlavorSpec.model_validate(obj.get("spec") or {})
    if is_public is not None and _truthy(is_public) != spec.public and is_public in ("true", "false", "1", "0",
                                                                                      "yes", "no"):
        return False
    return spec.disk >= min_disk and spec.ram >= min_ram


# ---------------------------------------------------------------------------------------------- key pairs
def keypair_name(obj: Mapping[str, Any]) -> str:
    return str((obj.get("spec") or {}).get("name") or obj["metadata"]["name"])


def keypair_view(obj: Mapping[str, Any], v: Version, detail: bool) -> Body:
    spec, status = obj.get("spec") or {}, obj.get("status") or {}
    md = obj["metadata"]
    public_key = status.get("publicKey") or spec.get("publicKey") or ""
    doc: Body = {"name": keypair_name(obj), "public_key": public_key,
                 "fingerprint": status.get("fingerprint") or _fingerprint(public_key)}
    if v.at_least("2.2"):
        doc["type"] = spec.get("type") or "ssh"
    if detail:
        doc.update({"user_id": (md.get("annotations") or {}).get(USER_ID, ""), "deleted": False,
                    "created_at": isotime(md["creationTimestamp"]), "deleted_at": None, "updated_at": None,
                    "id": int(hashlib.sha1(md["uid"].encode()).hexdigest()[:7], 16)})
    return doc


KEYPAIR_NAME = re.compile(r"[a-zA-Z0-9 _-]{1,255}")  # Nova's keypair_name_special_chars
KEYPAIR_NAME_V292 = re.compile(r"[a-zA-Z0-9 _.@-]{1,255}")  # 2.92 adds '@' and '.'


def parse_keypair(body: Any, v: Version) -> tuple[str, str | None, str]:
    """POST /os-keypairs: (name, public_key or None to generate, type)."""
    keypair = body.get("keypair") if isinstance(body, dict) else None
    if not isinstance(keypair, dict):
        raise NovaError(400, "Invalid input for field/attribute keypair. 'keypair' is a required property")
    name = keypair.get("name")
    pattern = KEYPAIR_NAME_V292 if v.at_least("2.92") else KEYPAIR_NAME
    if not isinstance(name, str) or not pattern.fullmatch(name) or name != name.strip():
        raise NovaError(400, f"Invalid input for field/attribute name. Value: {name}. Keypair data is invalid: "
                             "the name is 1 to 255 letters, digits, spaces, '_', '.', '@' or '-'")
    public_key = keypair.get("public_key")
    if public_key is not None and (not isinstance(public_key, str) or not public_key.strip()):
        raise NovaError(400, "Keypair data is invalid: failed to import public key")
    if public_key is None and v.at_least("2.92"):
        raise NovaError(400, "Invalid input for field/attribute keypair. 'public_key' is a required property "
                             "(Nova 2.92 generates no key pairs)")
    kind = keypair.get("type", "ssh")
    if "type" in keypair and not v.at_least("2.2"):
        raise NovaError(400, "Invalid input for field/attribute keypair. Additional properties are not allowed "
                             "('type' was unexpected)")
    if kind not in ("ssh", "x509"):
        raise NovaError(400, f"Invalid input for field/attribute type. Value: {kind}. {kind!r} is not one of "
                             "['ssh', 'x509']")
    if public_key is not None:
        try:
            fingerprint(public_key)
        except ValueError as e:
            raise NovaError(400, f"Keypair data is invalid: failed to import public key: {e}") from e
    return name, public_key, kind


def _fingerprint(public_key: str) -> str:
    try:
        return fingerprint(public_key) if public_key else ""
    except ValueError:
        return ""


# ---------------------------------------------------------------------------------------------- server groups
def server_group_view(obj: Mapping[str, Any], v: Version, members: list[str]) -> Body:
    md, spec = obj["metadata"], obj.get("spec") or {}
    policy = spec.get("policy") or "affinity"
    doc: Body = {"id": md["uid"], "name": md["name"], "members": members, "metadata": {}}
    if v.at_least("2.64"):
        doc.pop("metadata")
        doc.update({"policy": policy, "rules": {}})
    else:
        doc["policies"] = [policy]
    if v.at_least("2.13"):
        doc.update({"project_id": md["namespace"], "user_id": (md.get("annotations") or {}).get(USER_ID, "")})
    return doc


def parse_server_group(body: Any, v: Version) -> tuple[str, str]:
    group = body.get("server_group") if isinstance(body, dict) else None
    if not isinstance(group, dict) or not isinstance(group.get("name"), str) or not group["name"].strip():
        raise NovaError(400, "Invalid input for field/attribute server_group. 'name' is a required property")
    if v.at_least("2.64"):
        policy = group.get("policy")
        if group.get("rules"):
            raise NovaError(400, "Kova's server groups take no rules (max_server_per_host): one member per node for "
                                 "anti-affinity")
    else:
        policies = group.get("policies")
        if not isinstance(policies, list) or len(policies) != 1:
            raise NovaError(400, "Invalid input for field/attribute policies. Exactly one policy")
        policy = policies[0]
    allowed = ["affinity", "anti-affinity"] + (["soft-affinity", "soft-anti-affinity"] if v.at_least("2.15") else [])
    if policy not in allowed:
        raise NovaError(400, f"Invalid input for field/attribute policy. Value: {policy}. {policy!r} is not one of "
                             f"{allowed}")
    return group["name"], str(policy)


# ---------------------------------------------------------------------------------------------- zones, limits
def zones_view(zones: Sequence[Mapping[str, Any]], detail: bool) -> Body:
    out = []
    for z in zones:
        status = z.get("status") or {}
        entry: Body = {"zoneName": z["metadata"]["name"], "zoneState": {"available": bool(status.get("available"))},
                       "hosts": None}
        if detail:
            entry["hosts"] = {h: {"nova-compute": {"available": bool(status.get("available")), "active": True,
                                                   "updated_at": None}} for h in status.get("hosts") or []}
        out.append(entry)
    return {"availabilityZoneInfo": out}


LIMIT_NAMES = {"instances": ("maxTotalInstances", "totalInstancesUsed"), "cores": ("maxTotalCores", "totalCoresUsed"),
               "ram": ("maxTotalRAMSize", "totalRAMUsed"), "key_pairs": ("maxTotalKeypairs", None),
               "server_groups": ("maxServerGroups", "totalServerGroupsUsed"),
               "server_group_members": ("maxServerGroupMembers", None)}


def limits_view(quotas: Mapping[str, tuple[int, int]], v: Version) -> Body:
    """/limits: `quotas` maps OpenStack's names to (limit, in use)."""
    absolute: Body = {}
    for name, (maximum, used_name) in LIMIT_NAMES.items():
        limit, used = quotas.get(name, (-1, 0))
        absolute[maximum] = limit
        if used_name:
            absolute[used_name] = used
    absolute["maxServerMeta"] = MAX_METADATA_ITEMS
    absolute["maxPersonality"] = 5
    absolute["maxPersonalitySize"] = 10240
    absolute["maxImageMeta"] = 128
    if v.at_least("2.39"):
        absolute.pop("maxImageMeta")
    if not v.at_least("2.36"):
        absolute.update({"maxSecurityGroups": 10, "maxSecurityGroupRules": 20, "maxTotalFloatingIps": 10,
                         "totalSecurityGroupsUsed": 0, "totalFloatingIpsUsed": 0})
    if v.at_least("2.57"):
        absolute.pop("maxPersonality", None)
        absolute.pop("maxPersonalitySize", None)
    return {"limits": {"rate": [], "absolute": absolute}}


QUOTA_SET_KEYS = ("instances", "cores", "ram", "key_pairs", "server_groups", "server_group_members",
                  "metadata_items")


def quota_set(project: str, quotas: Mapping[str, tuple[int, int]], v: Version, detail: bool) -> Body:
    doc: Body = {"id": project}
    values = dict(quotas)
    values.setdefault("metadata_items", (MAX_METADATA_ITEMS, 0))
    for key in QUOTA_SET_KEYS:
        limit, used = values.get(key, (-1, 0))
        doc[key] = {"limit": limit, "in_use": used, "reserved": 0} if detail else limit
    if not v.at_least("2.36"):
        for key in ("fixed_ips", "floating_ips", "security_groups", "security_group_rules"):
            doc[key] = {"limit": -1, "in_use": 0, "reserved": 0} if detail else -1
    if not v.at_least("2.57"):
        for key, limit in (("injected_files", 5), ("injected_file_content_bytes", 10240),
                           ("injected_file_path_bytes", 255)):
            doc[key] = {"limit": limit, "in_use": 0, "reserved": 0} if detail else limit
    return {"quota_set": doc}


# ---------------------------------------------------------------------------------------------- volumes
ATTACHMENT_NAMESPACE = uuid.UUID("6f1c3a8e-64b8-5d0e-9c1b-6b6f76610a11")  # Kova's: attachment and BDM ids


def volume_attachment_view(server_uid: str, volume_uid: str, entry: Body, v: Version) -> Body:
    """One of Nova's volumeAttachments: the volume as the server holds it (its device once plugged)."""
    doc: Body = {"id": volume_uid, "serverId": server_uid, "volumeId": volume_uid, "device": entry.get("device")}
    if v.at_least("2.70"):
        doc["tag"] = entry.get("tag")
    if v.at_least("2.79"):
        doc["delete_on_termination"] = bool(entry.get("deleteOnTermination"))
    if v.at_least("2.89"):
        del doc["id"]
        doc["attachment_id"] = str(uuid.uuid5(ATTACHMENT_NAMESPACE, f"{server_uid}/{volume_uid}/attachment"))
        doc["bdm_uuid"] = str(uuid.uuid5(ATTACHMENT_NAMESPACE, f"{server_uid}/{volume_uid}/bdm"))
    return doc


def attach_request(body: Any, v: Version) -> tuple[str, dict[str, Any]]:
    """POST os-volume_attachments: the volume's id and the spec.volumeAttachments entry it asks for."""
    req = body.get("volumeAttachment") if isinstance(body, dict) else None
    if not isinstance(req, dict) or not isinstance(req.get("volumeId"), str):
        raise NovaError(400, "Invalid input for field/attribute volumeAttachment. 'volumeId' is a required property")
    _check_uuid("volumeId", req["volumeId"])
    entry: dict[str, Any] = {}
    if "tag" in req:
        if not v.at_least("2.49"):
            raise NovaError(400, "Additional properties are not allowed ('tag' was unexpected)")
        entry["tag"] = check_tag(str(req["tag"]))
    if "delete_on_termination" in req:
        if not v.at_least("2.79"):
            raise NovaError(400, "Additional properties are not allowed ('delete_on_termination' was unexpected)")
        if not isinstance(req["delete_on_termination"], bool):
            raise NovaError(400, "Invalid input for field/attribute delete_on_termination.")
        entry["deleteOnTermination"] = req["delete_on_termination"]
    return req["volumeId"], entry


# ---------------------------------------------------------------------------------------------- networks
def network_view(namespace: str, name: str) -> Body:
    """A network as nova-network's os-networks showed it: the pod network or a NetworkAttachmentDefinition."""
    return {"id": network_id(namespace, name), "label": name, "cidr": None, "cidr_v6": None, "netmask": None,
            "gateway": None, "broadcast": None, "dns1": None, "dns2": None, "bridge": None, "vlan": None,
            "injected": False, "multi_host": False, "mtu": None, "dhcp_server": None, "enable_dhcp": True,
            "share_address": False, "project_id": namespace}


def tenant_network_view(namespace: str, name: str) -> Body:
    return {"id": network_id(namespace, name), "label": name, "cidr": "None"}


def resolve_networks(wanted: Sequence[str], namespace: str, available: Sequence[str]) -> list[str]:
    """Network ids or names from POST /servers → Instance spec.networks (names)."""
    by_id = {network_id(namespace, n): n for n in available}
    out = []
    for w in wanted:
        name = by_id.get(w) or (w if w in available else None)
        if name is None:
            raise NovaError(400, f"Network {w} could not be found.")
        out.append(name)
    return out


# ---------------------------------------------------------------------------------------------- actions log
def instance_action_view(server_id: str, project: str, action: Mapping[str, Any], v: Version,
                         with_events: bool) -> Body:
    doc: Body = {"action": action.get("action"), "request_id": action.get("requestId"),
                 "user_id": "", "project_id": project, "start_time": isotime(action.get("startTime")),
                 "message": action.get("message") if action.get("result") == "Error" else None,
                 "instance_uuid": server_id}
    if v.at_least("2.58"):
        doc["updated_at"] = isotime(action.get("finishTime") or action.get("startTime"))
    if with_events:
        event: Body = {"event": f"compute_{action.get('action')}", "start_time": isotime(action.get("startTime")),
                       "finish_time": isotime(action.get("finishTime")), "result": action.get("result")}
        if v.at_least("2.62"):
            event.update({"hostId": "", "host": None})
            event.pop("host")
        if v.at_least("2.84"):
            event["details"] = action.get("message") if action.get("result") == "Error" else None
        doc["events"] = [event]
    return doc


def simple_usage(project: str, instances: Sequence[Mapping[str, Any]], start: dt.datetime, stop: dt.datetime,
                 flavors: Mapping[str, FlavorSpec]) -> Body:
    """os-simple-tenant-usage for one project: hours each server has existed in [start, stop], and its sizes."""
    usages = []
    totals = {"total_memory_mb_usage": 0.0, "total_vcpus_usage": 0.0, "total_local_gb_usage": 0.0,
              "total_hours": 0.0}
    for obj in instances:
        spec, status = actions.parse(dict(obj))
        created = _parse_time(obj["metadata"]["creationTimestamp"])
        begin, end = max(created, start), stop
        hours = max((end - begin).total_seconds() / 3600.0, 0.0)
        if hours == 0.0:
            continue
        size = status.flavor or flavors.get(spec.flavor_ref)
        vcpus, ram, disk = (size.vcpus, size.ram, size.disk) if size else (0, 0, 0)
        word = nova_status(obj)[0]
        usages.append({"instance_id": obj["metadata"]["uid"], "name": display_name(obj, spec), "hours": hours,
                       "memory_mb": ram, "local_gb": disk, "vcpus": vcpus, "tenant_id": project,
                       "flavor": status.flavor.name if status.flavor else spec.flavor_ref,
                       "started_at": usage_time(obj["metadata"]["creationTimestamp"]), "ended_at": None,
                       "state": (status.vm_state or "building"), "uptime": int((stop - created).total_seconds())})
        if word == "DELETED":
            usages[-1]["state"] = "deleted"
        totals["total_memory_mb_usage"] += ram * hours
        totals["total_vcpus_usage"] += vcpus * hours
        totals["total_local_gb_usage"] += disk * hours
        totals["total_hours"] += hours
    return {"tenant_usage": {"tenant_id": project, "start": start.strftime("%Y-%m-%dT%H:%M:%S.%f"),
                             "stop": stop.strftime("%Y-%m-%dT%H:%M:%S.%f"), "server_usages": usages, **totals}}
