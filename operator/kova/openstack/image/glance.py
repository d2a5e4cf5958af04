"""Glance v2 over Image objects: pure functions from Image objects to Glance's documents and back.

No HTTP and no Kubernetes here: kova.openstack.image.handlers turns requests into these calls, and every
rule the image API applies is one of these functions (or kova.image.rules, which the operator shares). An image's Glance
`id` is the Image's `metadata.uid`, its `owner` (project) is the namespace, its name is `spec.name` (or the
object's name when that is not set, for Images made with kubectl).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from kova.api.errors import Refusal, StatusError
from kova.api.models import (
    MAX_IMAGE_MEMBERS,
    MAX_IMAGE_PROPERTIES,
    MAX_IMAGE_TAGS,
    ContainerFormat,
    DiskFormat,
    GlanceStatus,
    ImageSpec,
    MemberStatus,
    Visibility,
)
from kova.api.resources import DNS_LABEL, object_names
from kova.image.rules import image_visible_to, protected_refusal

UUID = "^([0-9a-fA-F]){8}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){4}-([0-9a-fA-F]){12}$"
DEFAULT_LIMIT = 25
MAX_LIMIT = 1000
READ_ONLY = {"created_at", "updated_at", "status", "checksum", "size", "virtual_size", "direct_url", "self",
             "file", "schema", "id", "os_hash_algo", "os_hash_value", "stores"}
RESERVED = {"location", "locations", "deleted", "deleted_at"}
SORT_KEYS = {"name", "status", "container_format", "disk_format", "size", "id", "created_at", "updated_at"}
# Base attributes and the Image spec field each one is kept in.
BASE = {"name": "name", "disk_format": "diskFormat", "container_format": "containerFormat",
        "visibility": "visibility", "protected": "protected", "os_hidden": "hidden", "min_ram": "minRam",
        "min_disk": "minDisk", "tags": "tags"}
PATCH_TYPES = ("application/openstack-images-v2.1-json-patch", "application/openstack-images-v2.0-json-patch")


class GlanceError(StatusError):
    """An answer Glance would give instead of the document: its HTTP status and explanation."""

    def __init__(self, status: int, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(status, message)
        self.headers = dict(headers or {})


# ------------------------------------------------------------------------------------------- documents
def _null(kind: str) -> list[str]:
    return ["null", kind]


def image_schema() -> dict[str, Any]:
    """GET /v2/schemas/image: Glance's, with the formats Kova accepts (glanceclient validates against it)."""
    props: dict[str, Any] = {
        "id": {"type": "string", "description": "An identifier for the image", "pattern": UUID},
        "name": {"type": _null("string"), "description": "Descriptive name for the image", "maxLength": 255},
        "status": {"type": "string", "readOnly": True, "description": "Status of the image",
                   "enum": ["queued", "saving", "active", "killed", "deleted", "uploading", "importing",
                            "pending_delete", "deactivated"]},
        "visibility": {"type": "string", "description": "Scope of image accessibility",
                       "enum": [v.value for v in Visibility]},
        "protected": {"type": "boolean", "description": "If true, image will not be deletable."},
        "os_hidden": {"type": "boolean",
                      "description": "If true, image will not appear in default image list response."},
        "checksum": {"type": _null("string"), "readOnly": True, "description": "md5 hash of image contents.",
                     "maxLength": 32},
        "os_hash_algo": {"type": _null("string"), "readOnly": True, "maxLength": 64,
                         "description": "Algorithm to calculate the os_hash_value"},
        "os_hash_value": {"type": _null("string"), "readOnly": True, "maxLength": 128,
                          "description": "Hexdigest of the image contents using the algorithm specified by "
                                         "the os_hash_algo"},
        "owner": {"type": _null("string"), "description": "Owner of the image", "maxLength": 255},
        "size": {"type": _null("integer"), "readOnly": True, "description": "Size of image file in bytes"},
        "virtual_size": {"type": _null("integer"), "readOnly": True,
                         "description": "Virtual size of image in bytes"},
        "container_format": {"type": _null("string"), "description": "Format of the container",
                             "enum": [None, *(c.value for c in ContainerFormat)]},
        "disk_format": {"type": _null("string"), "description": "Format of the disk",
                        "enum": [None, *(d.value for d in DiskFormat)]},
        "created_at": {"type": "string", "readOnly": True, "description": "Date and time of image registration"},
        "updated_at": {"type": "string", "readOnly": True,
                       "description": "Date and time of the last image modification"},
        "tags": {"type": "array", "description": "List of strings related to the image",
                 "items": {"type": "string", "maxLength": 255}},
        "min_ram": {"type": "integer", "description": "Amount of ram (in MB) required to boot image."},
        "min_disk": {"type": "integer", "description": "Amount of disk space (in GB) required to boot image."},
        "self": {"type": "string", "readOnly": True, "description": "An image self url"},
        "stores": {"type": "string", "readOnly": True,
                   "description": "Store in which image data resides.  Only present when the operator has enabled "
                                  "multiple stores.  May be a comma-separated list of store identifiers."},
        "file": {"type": "string", "readOnly": True, "description": "An image file url"},
        "schema": {"type": "string", "readOnly": True, "description": "An image schema url"},
    }
    return {"name": "image", "properties": props, "additionalProperties": {"type": "string"},
            "links": [{"rel": "self", "href": "{self}"}, {"rel": "enclosure", "href": "{file}"},
                      {"rel": "describedby", "href": "{schema}"}]}


def member_schema() -> dict[str, Any]:
    return {"name": "member", "properties": {
        "member_id": {"type": "string", "description": "An identifier for the image member (tenantId)"},
        "image_id": {"type": "string", "description": "An identifier for the image", "pattern": UUID},
        "created_at": {"type": "string", "description": "Date and time of image member creation"},
        "updated_at": {"type": "string", "description": "Date and time of last modification of image member"},
        "status": {"type": "string", "description": "The status of this image member",
                   "enum": [m.value for m in MemberStatus]},
        "schema": {"readOnly": True, "type": "string"}}}


def schemas() -> dict[str, dict[str, Any]]:
    image, member = image_schema(), member_schema()
    return {
        "image": image,
        "images": {"name": "images", "properties": {
            "images": {"type": "array", "items": image}, "first": {"type": "string"},
            "next": {"type": "string"}, "schema": {"type": "string"}},
            "links": [{"rel": "first", "href": "{first}"}, {"rel": "next", "href": "{next}"},
                      {"rel": "describedby", "href": "{schema}"}]},
        "member": member,
        "members": {"name": "members", "properties": {"members": {"type": "array", "items": member},
                                                      "schema": {"type": "string"}},
                    "links": [{"rel": "describedby", "href": "{schema}"}]},
    }


def versions(base_url: str) -> dict[str, Any]:
    """The version document (Glance's shape). Only what Kova serves is announced: v2.0 up to v2.9 have no
    import methods, stores or locations that clients would then try."""
    link = [{"rel": "self", "href": f"{base_url.rstrip('/')}/v2/"}]
    return {"versions": [{"id": f"v2.{n}", "status": "CURRENT" if n == 9 else "SUPPORTED", "links": link}
                         for n in (9, 7, 6, 5, 4, 3, 2, 1, 0)]}


def _time(value: str | None) -> str | None:
    return value.split(".")[0].rstrip("Z") + "Z" if value else None


def updated_at(obj: Mapping[str, Any]) -> str:
    """The last time anyone wrote the object: the newest field-manager time (metadata.managedFields)."""
    md = obj["metadata"]
    times = [m.get("time") for m in md.get("managedFields") or () if m.get("time")]
    return _time(max([md["creationTimestamp"], *times])) or ""


def glance_status(obj: Mapping[str, Any]) -> str:
    """The status word; a (re)activation shows at once, before the operator has written it: the API refuses
    a deactivated image's data from the moment the spec says so."""
    word = str((obj.get("status") or {}).get("status") or GlanceStatus.queued.value)
    deactivated = bool((obj.get("spec") or {}).get("deactivated"))
    if word == GlanceStatus.active.value and deactivated:
        return GlanceStatus.deactivated.value
    if word == GlanceStatus.deactivated.value and not deactivated:
        return GlanceStatus.active.value
    return word


def image_doc(obj: Mapping[str, Any]) -> dict[str, Any]:
    """An Image as Glance shows it: every base key present (null when unknown), extra properties on top."""
    md, spec, status = obj["metadata"], obj.get("spec") or {}, obj.get("status") or {}
    uid = md["uid"]
    doc: dict[str, Any] = {str(k): str(v) for k, v in (spec.get("properties") or {}).items()}
    doc.update({
        "name": spec.get("name") or md["name"], "disk_format": spec.get("diskFormat"),
        "container_format": spec.get("containerFormat") or ContainerFormat.bare.value,
        "visibility": spec.get("visibility") or Visibility.private.value, "size": status.get("size"),
        "virtual_size": status.get("virtualSize"), "status": glance_status(obj),
        "checksum": status.get("checksum"), "protected": bool(spec.get("protected")),
        "min_ram": int(spec.get("minRam") or 0), "min_disk": int(spec.get("minDisk") or 0),
        "owner": md["namespace"], "os_hidden": bool(spec.get("hidden")),
        "os_hash_algo": status.get("osHashAlgo"), "os_hash_value": status.get("osHashValue"), "id": uid,
        "created_at": _time(md.get("creationTimestamp")), "updated_at": updated_at(obj),
        "tags": list(spec.get("tags") or []), "self": f"/v2/images/{uid}", "file": f"/v2/images/{uid}/file",
        "schema": "/v2/schemas/image"})
    if status.get("stores"):  # Glance's multiple stores: where the data is, best first
        doc["stores"] = ",".join(status["stores"])
    if status.get("importingToStores") is not None or status.get("failedImport") is not None:
        doc["os_glance_importing_to_stores"] = ",".join(status.get("importingToStores") or [])
        doc["os_glance_failed_import"] = ",".join(status.get("failedImport") or [])
    snapshot = status.get("snapshot") or {}
    if snapshot.get("instanceUuid"):
        # What Nova writes on the images createImage makes.
        doc.update({"image_type": "snapshot", "instance_uuid": snapshot["instanceUuid"]})
        if snapshot.get("baseImageRef"):
            doc["base_image_ref"] = snapshot["baseImageRef"]
        doc["disk_format"] = doc["disk_format"] or status.get("detectedFormat") or "raw"
    return doc


# ---------------------------------------------------------------------------------------------- create
def kubernetes_name(glance_name: str | None) -> tuple[str | None, str]:
    """(name, generateName) for a new Image (front.object_names)."""
    return object_names(glance_name, "image")


def image_owner(body: Any, namespace: str, admin: bool) -> str:
    """The namespace a POST /v2/images makes its Image in: the caller's project, or, for an administrator,
    the `owner` it names (Glance lets only admins create images for another project)."""
    owner = body.get("owner") if isinstance(body, dict) else None
    if owner is None or owner == namespace:
        return namespace
    if not admin:
        raise GlanceError(403, "You are not permitted to create images owned by another project.")
    if not isinstance(owner, str) or not DNS_LABEL.match(owner):
        raise GlanceError(400, f"owner {owner!r} is not a project: a project is a Kubernetes namespace (a DNS label)")
    return owner


def new_image(body: Any, namespace: str, admin: bool = False) -> dict[str, Any]:
    """The spec of an Image made by POST /v2/images in `namespace` (its data comes through the API). Glance's
    defaults: visibility `shared`, container `bare` once a disk format is given. Only an administrator makes
    an image public (publicize_image)."""
    if not isinstance(body, dict):
        raise GlanceError(400, "Request body must be a JSON object.")
    if "id" in body:
        raise GlanceError(400, "Kova chooses image ids (an Image's uid); leave id out.")
    for key in body:
        _check_writable(key)
    if image_owner(body, namespace, admin) != namespace:
        raise GlanceError(403, "You are not permitted to create images owned by another project.")
    doc = {"visibility": Visibility.shared.value, "protected": False, "os_hidden": False, "min_ram": 0,
           "min_disk": 0, "tags": [], **{k: v for k, v in body.items() if k != "owner"}}
    if doc.get("visibility") == Visibility.public.value and not admin:
        raise GlanceError(403, "You are not authorized to complete publicize_image action.")
    spec = spec_from_doc(doc)
    check_limits(spec)
    spec["source"] = {"upload": {}}
    return spec


# ---------------------------------------------------------------------------------------------- limits
# Glance's quotas (image_tag_quota, image_property_quota, image_member_quota), the same numbers the CRD gives the
# API server: the image API answers as Glance does (413) before it writes, so the API server's refusal (422)
# is never the first line.
def _limit_text(what: str, attempted: int, maximum: int) -> str:
    return f"The limit has been exceeded on the number of allowed {what}. Attempted: {attempted}, Maximum: {maximum}"


def check_limits(spec: Mapping[str, Any], before: Mapping[str, Any] | None = None) -> None:
    """A new image (or, with `before`, a patched one) within Glance's tag and property quotas: 413 with
    Glance's ImageTagLimitExceeded / ImagePropertyLimitExceeded text otherwise. Tags are counted whenever they
    change, properties only when one is added (Glance's ImageRepoProxy.save), so either may still shrink."""
    tags, properties = list(spec.get("tags") or []), dict(spec.get("properties") or {})
    old_tags, old_properties = (list(before.get("tags") or []), dict(before.get("properties") or {})) \
        if before is not None else (None, {})
    if len(tags) > MAX_IMAGE_TAGS and tags != old_tags:
        raise GlanceError(413, _limit_text("image tags", len(tags), MAX_IMAGE_TAGS))
    if len(properties) > MAX_IMAGE_PROPERTIES and (before is None or set(properties) - set(old_properties)):
        raise GlanceError(413, _limit_text("image properties", len(properties), MAX_IMAGE_PROPERTIES))


def check_new_tag(obj: Mapping[str, Any], tag: str) -> None:
    """PUT /v2/images/{id}/tags/{tag}: a tag already there changes nothing; a new one past image_tag_quota is
    Glance's 413 (its message, trailing colon included)."""
    check_tag(tag)
    tags = set((obj.get("spec") or {}).get("tags") or [])
    if tag not in tags and len(tags) + 1 > MAX_IMAGE_TAGS:
        raise GlanceError(413, f"Image tag limit exceeded for image {obj['metadata']['uid']}: "
                               f"{_limit_text('image tags', len(tags) + 1, MAX_IMAGE_TAGS)}:")


# ----------------------------------------------------------------------------------------------- patch
def _check_writable(key: str) -> None:
    if key in READ_ONLY:
        raise GlanceError(403, f"Attribute '{key}' is read-only.")
    if key in RESERVED or key.startswith("os_glance"):
        raise GlanceError(403, f"Attribute '{key}' is reserved.")


def editable_doc(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The writable part of an image, Glance's way (base attributes and string properties)."""
    doc: dict[str, Any] = dict(spec.get("properties") or {})
    for attr, field in BASE.items():
        doc[attr] = spec.get(field)
    doc["visibility"] = doc["visibility"] or Visibility.private.value
    doc["protected"], doc["os_hidden"] = bool(doc["protected"]), bool(doc["os_hidden"])
    doc["min_ram"], doc["min_disk"] = int(doc["min_ram"] or 0), int(doc["min_disk"] or 0)
    doc["tags"] = list(doc["tags"] or [])
    return doc


def spec_from_doc(doc: Mapping[str, Any]) -> dict[str, Any]:
    """Image spec fields from a Glance document, validated the way Glance validates (400 with its words)."""
    spec: dict[str, Any] = {"properties": {}}
    for key, value in doc.items():
        if key in BASE:
            spec[BASE[key]] = value
        elif not isinstance(value, str):
            raise GlanceError(400, f"Provided object does not match schema 'image': {value!r} is not of type "
                                   f"'string' (property {key})")
        else:
            spec["properties"][key] = value
    for key in ("min_ram", "min_disk"):
        value = doc.get(key, 0)
        if not isinstance(value, int) or isinstance(value, bool):
            raise GlanceError(400, f"Provided object does not match schema 'image': {value!r} is not of type "
                                   f"'integer' ({key})")
        if value < 0:
            raise GlanceError(400, f"Invalid value '{value}' for parameter '{key}': Cannot be a negative value")
    for key in ("protected", "os_hidden"):
        if not isinstance(doc.get(key, False), bool):
            raise GlanceError(400, f"Provided object does not match schema 'image': {doc[key]!r} is not of "
                                   f"type 'boolean' ({key})")
    tags = doc.get("tags") or []
    if not isinstance(tags, list) or not all(isinstance(t, str) and len(t) <= 255 for t in tags):
        raise GlanceError(400, "Provided object does not match schema 'image': tags must be strings of at most "
                               "255 characters")
    spec["tags"] = sorted(set(tags))
    name = doc.get("name")
    if name is not None and (not isinstance(name, str) or len(name) > 255):
        raise GlanceError(400, "Provided object does not match schema 'image': name is a string of at most 255 "
                               "characters")
    enums = {"disk_format": DiskFormat, "container_format": ContainerFormat, "visibility": Visibility}
    for key, enum in enums.items():
        value = doc.get(key)
        if value is not None and value not in {e.value for e in enum}:
            raise GlanceError(400, f"Provided object does not match schema 'image': {value!r} is not one of "
                                   f"{sorted(e.value for e in enum)} ({key})")
    return {k: v for k, v in spec.items() if v is not None}


def apply_patch(obj: Mapping[str, Any], ops: Any, media_type: str, admin: bool = False) -> dict[str, Any]:
    """Glance's PATCH (both JSON-patch dialects) on an Image: the spec fields to merge-patch (None: remove).

    v2.1 `add` replaces a present attribute; v2.0 `add` of a present one is a 409; a path is one level
    deep, except that `/tags/<n>` and `/tags/-` are taken as list edits (openstackclient sends them). Only an
    administrator makes an image public; nobody moves one to another owner (its owner is its namespace)."""
    if not isinstance(ops, list) or not all(isinstance(o, dict) for o in ops):
        raise GlanceError(400, "Request body must be a JSON array of operation objects.")
    spec = obj.get("spec") or {}
    status = glance_status(obj)
    doc = editable_doc(spec)
    for raw in ops:
        op, path, value = _operation(raw, media_type)
        parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
        key = parts[0]
        _check_writable(key)
        if key == "owner":
            if (value != obj["metadata"]["namespace"] or op == "remove") and not admin:
                raise GlanceError(403, "Owner can't be updated by non admin.")
            if value != obj["metadata"]["namespace"] or op == "remove":
                raise GlanceError(409, "Kova cannot give an image another owner: its owner is the namespace the "
                                       "Image lives in, and Kubernetes moves no object between namespaces. Create it "
                                       "again in the other project (or share it with that project).")
            continue
        if key == "tags" and len(parts) == 2:  # one element of the list, as JSON patch says
            tags = list(doc["tags"])
            index = len(tags) if parts[1] == "-" else int(parts[1]) if parts[1].isdigit() else -1
            if not 0 <= index <= len(tags) - (op != "add"):
                raise GlanceError(400, f"Invalid JSON pointer for this resource: '{path}'")
            if op == "remove":
                tags.pop(index)
            elif op == "add":
                tags.insert(index, value)
            else:
                tags[index] = value
            doc["tags"] = tags
            continue
        if len(parts) != 1 or not key:
            raise GlanceError(400, f"Invalid JSON pointer for this resource: '{path}'")
        present = key in doc and (key in BASE or doc.get(key) is not None)
        if op == "remove":
            if key in BASE:
                raise GlanceError(403, "Property name may not be removed.")
            if key not in doc:
                raise GlanceError(409, f"Property {key} does not exist.")
            del doc[key]
        elif op == "replace" and not present and key not in BASE:
            raise GlanceError(409, f"Property {key} does not exist.")
        elif op == "add" and media_type == PATCH_TYPES[1] and key not in BASE and key in doc:
            raise GlanceError(409, f"Property {key} already present.")
        else:
            if key in ("disk_format", "container_format") and status != GlanceStatus.queued.value \
                    and value != doc.get(key):
                raise GlanceError(403, f"Attribute {key} can be only replaced for a queued image.")
            if key == "visibility" and value == Visibility.public.value and doc["visibility"] != value \
                    and not admin:
                raise GlanceError(403, "You are not authorized to complete publicize_image action.")
            doc[key] = value
    # Compared with the spec read the same way, so defaults the spec leaves out are not written.
    before, after = spec_from_doc(editable_doc(spec)), spec_from_doc(doc)
    check_limits(after, before)
    patch: dict[str, Any] = {f: after.get(f) for f in BASE.values() if after.get(f) != before.get(f)}
    if after["properties"] != before["properties"]:
        # A merge patch removes a key by giving it null.
        patch["properties"] = {**{k: None for k in before["properties"]}, **after["properties"]}
    return patch


def _operation(raw: Mapping[str, Any], media_type: str) -> tuple[str, str, Any]:
    op: Any
    path: Any
    if media_type == PATCH_TYPES[1]:  # draft-04: {"replace": "/name", "value": ...}
        found = [o for o in ("add", "replace", "remove") if o in raw]
        if len(found) != 1:
            raise GlanceError(400, "Operation objects must contain exactly one member named \"add\", \"remove\", "
                                   "or \"replace\".")
        op, path = found[0], raw[found[0]]
    else:
        op, path = raw.get("op"), raw.get("path")
        if op not in ("add", "replace", "remove"):
            raise GlanceError(400, f"Invalid operation: `{op}`. It must be one of the following: add, remove, "
                                   "replace.")
    if not isinstance(path, str) or not path.startswith("/"):
        raise GlanceError(400, f"Pointer `{path}` does not start with \"/\".")
    if op != "remove" and "value" not in raw:
        raise GlanceError(400, f"Operation \"{op}\" requires a member named \"value\".")
    return str(op), path, raw.get("value")


# ------------------------------------------------------------------------------------------------ list
def member_status(obj: Mapping[str, Any], project: str) -> str | None:
    """The project's membership of a shared image: pending, accepted, rejected; None if not a member."""
    if project not in ((obj.get("spec") or {}).get("members") or []):
        return None
    for m in (obj.get("status") or {}).get("members") or ():
        if m.get("member") == project:
            return str(m.get("status") or MemberStatus.pending.value)
    return MemberStatus.pending.value


def visible(obj: Mapping[str, Any], project: str) -> bool:
    """May `project` see (GET, use) this image at all: Kova's visibility rule, the one Instances obey."""
    spec = ImageSpec.model_construct(**_spec_fields(obj))
    return image_visible_to(spec, obj["metadata"]["namespace"], project)


def _spec_fields(obj: Mapping[str, Any]) -> dict[str, Any]:
    spec = obj.get("spec") or {}
    return {"visibility": Visibility(spec.get("visibility") or "private"), "members": spec.get("members") or []}


def listed(obj: Mapping[str, Any], project: str, visibility: str | None, want_member: str,
           admin: bool = False) -> bool:
    """Glance's default list: public ones, the project's own, shared ones it accepted (or the member status
    asked for), community ones only its own; `visibility=` narrows it, `all` includes community. An
    administrator's list has every project's private and shared images too, as Glance's."""
    spec = obj.get("spec") or {}
    vis = spec.get("visibility") or Visibility.private.value
    own = obj["metadata"]["namespace"] == project
    if glance_status(obj) in (GlanceStatus.killed.value, GlanceStatus.deleted.value) \
            or obj["metadata"].get("deletionTimestamp"):
        return False
    if visibility not in (None, "all") and vis != visibility:
        return False
    if vis == Visibility.public.value:
        return True
    if vis == Visibility.community.value:
        return own or visibility in ("community", "all")
    if own or admin:
        return True
    if vis == Visibility.shared.value:
        status = member_status(obj, project)
        return status is not None and (want_member == "all" or status == want_member)
    return False


@dataclass(frozen=True)
class Query:
    limit: int
    marker: str | None
    sort: list[tuple[str, str]]
    visibility: str | None
    member_status: str
    hidden: bool
    filters: list[tuple[str, str]]  # remaining (key, value) pairs: tag (repeatable), name, id, ...


def parse_query(params: Sequence[tuple[str, str]]) -> Query:
    """GET /v2/images parameters, refused with Glance's 400s."""
    rest: list[tuple[str, str]] = []
    limit, marker, visibility, member, hidden = DEFAULT_LIMIT, None, None, "accepted", False
    sort_keys: list[str] = []
    sort_dirs: list[str] = []
    sort: list[tuple[str, str]] = []
    for key, value in params:
        if key == "limit":
            if not value.lstrip("-").isdigit():
                raise GlanceError(400, "limit param must be an integer")
            if int(value) < 0:
                raise GlanceError(400, "limit param must be positive")
            limit = min(int(value), MAX_LIMIT)
        elif key == "marker":
            marker = value
        elif key == "visibility":
            if value not in {*(v.value for v in Visibility), "all"}:
                raise GlanceError(400, f"Invalid visibility value: {value}")
            visibility = value
        elif key == "member_status":
            if value not in {*(m.value for m in MemberStatus), "all"}:
                raise GlanceError(400, f"Invalid status value: {value}")
            member = value
        elif key == "os_hidden":
            if value.lower() not in ("true", "false"):
                raise GlanceError(400, f"Invalid value for os_hidden: {value}")
            hidden = value.lower() == "true"
        elif key == "sort_key":
            sort_keys.append(value)
        elif key == "sort_dir":
            sort_dirs.append(value)
        elif key == "sort":
            for part in value.split(","):
                name, _, direction = part.partition(":")
                sort.append((name.strip(), direction.strip() or "desc"))
        else:
            rest.append((key, value))
    if sort and (sort_keys or sort_dirs):
        raise GlanceError(400, "The sort param may not be combined with sort_key or sort_dir.")
    if sort_keys or sort_dirs:
        if len(sort_dirs) > 1 and len(sort_dirs) != len(sort_keys):
            raise GlanceError(400, "Number of sort dirs does not match the number of sort keys")
        keys = sort_keys or ["created_at"]
        sort = [(k, sort_dirs[i] if len(sort_dirs) > 1 else (sort_dirs or ["desc"])[0]) for i, k in enumerate(keys)]
    for key, direction in sort:
        if key not in SORT_KEYS:
            raise GlanceError(400, f"Invalid sort key: {key}. It must be one of the following: "
                                   f"{', '.join(sorted(SORT_KEYS))}.")
        if direction not in ("asc", "desc"):
            raise GlanceError(400, f"Invalid sort direction: {direction}")
    for key, value in rest:
        if key in ("size_min", "size_max", "size") and not value.isdigit():
            raise GlanceError(400, f"Invalid value for {key}: {value}")
        if key == "protected" and value.lower() not in ("true", "false"):
            raise GlanceError(400, f"Invalid value for protected: {value}")
    return Query(limit, marker, sort or [("created_at", "desc")], visibility, member, hidden, rest)


def _matches(doc: Mapping[str, Any], filters: Sequence[tuple[str, str]]) -> bool:
    for key, value in filters:
        if key == "tag":
            if value not in doc["tags"]:
                return False
        elif key == "size_min":
            if (doc["size"] or 0) < int(value):
                return False
        elif key == "size_max":
            if (doc["size"] or 0) > int(value):
                return False
        elif key == "size":
            if doc["size"] != int(value):
                return False
        elif key == "protected":
            if doc["protected"] != (value.lower() == "true"):
                return False
        elif key in ("name", "id", "status", "container_format", "disk_format", "owner", "visibility"):
            op, _, rest = value.partition(":") if value.startswith(("in:", "eq:")) else ("eq", "", value)
            wanted = [w.strip().strip('"') for w in rest.split(",")] if op == "in" else [rest]
            if str(doc.get(key)) not in wanted:
                return False
        elif doc.get(key) != value:  # any other key: an extra property
            return False
    return True


def select(objs: Sequence[Mapping[str, Any]], project: str, query: Query,
           admin: bool = False) -> tuple[list[dict[str, Any]], bool]:
    """One page of what the project sees, sorted, after the marker; and whether a next page may exist."""
    docs = [image_doc(o) for o in objs if listed(o, project, query.visibility, query.member_status, admin)]
    docs = [d for d in docs if d["os_hidden"] == query.hidden and _matches(d, query.filters)]
    for key, direction in reversed([*query.sort, ("created_at", "desc"), ("id", "desc")]):
        docs.sort(key=lambda d: (d.get(key) is not None, d.get(key) or 0), reverse=direction == "desc")
    if query.marker is not None:
        at = next((i for i, d in enumerate(docs) if d["id"] == query.marker), None)
        if at is None:
            raise GlanceError(400, f"Invalid marker. Image {query.marker} could not be found.")
        docs = docs[at + 1:]
    page = docs[: query.limit]
    return page, len(page) == query.limit and query.limit > 0


def member_doc(image_id: str, member: Mapping[str, Any], created: str) -> dict[str, Any]:
    return {"member_id": member["member"], "image_id": image_id, "status": member.get("status") or "pending",
            "created_at": member.get("createdAt") or created, "updated_at": member.get("updatedAt") or created,
            "schema": "/v2/schemas/member"}


def members(obj: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Each member of a shared image with its answer (pending until the member says otherwise)."""
    answers = {m.get("member"): m for m in (obj.get("status") or {}).get("members") or ()}
    created = _time(obj["metadata"].get("creationTimestamp")) or ""
    return [member_doc(obj["metadata"]["uid"], answers.get(m) or {"member": m}, created)
            for m in (obj.get("spec") or {}).get("members") or ()]


def list_links(params: Sequence[tuple[str, str]], page: Sequence[Mapping[str, Any]], more: bool) -> dict[str, str]:
    """`first` and, when there is more, `next` (the marker after the last image shown); query values escaped."""
    kept = [(k, v) for k, v in params if k != "marker"]
    first = "/v2/images" + (f"?{urlencode(kept)}" if kept else "")
    links = {"first": first}
    if more and page:
        links["next"] = f"/v2/images?{urlencode([*kept, ('marker', str(page[-1]['id']))])}"
    return links


# ------------------------------------------------------------------------------------------------ rules
MAX_TAG_LENGTH = 255


def check_delete(obj: Mapping[str, Any]) -> None:
    why = protected_refusal(dict(obj.get("spec") or {}), obj["metadata"]["uid"])
    if why:
        raise GlanceError(403, why)


def check_tag(tag: str) -> None:
    if len(tag) > MAX_TAG_LENGTH:
        raise GlanceError(400, f"Image tag exceeds the maximum length of {MAX_TAG_LENGTH} characters")


def check_action(action: str, obj: Mapping[str, Any]) -> bool:
    """deactivate/reactivate: only from active or deactivated (Glance's 403). Returns the new `deactivated`."""
    if action not in ("deactivate", "reactivate"):
        raise GlanceError(404, "The resource could not be found.")
    status = glance_status(obj)
    if status not in (GlanceStatus.active.value, GlanceStatus.deactivated.value):
        raise GlanceError(403, f"Not allowed to {action} image in status '{status}'")
    return action == "deactivate"


def check_upload(obj: Mapping[str, Any], content_type: str | None, size_header: str | None,
                 target: str = GlanceStatus.saving.value) -> int | None:
    """Whether data may be uploaded (or staged: `target` uploading) now (Glance's answers, in Glance's order);
    the announced size."""
    if content_type != "application/octet-stream":
        raise GlanceError(415, f"Invalid content type {content_type}")
    spec, status = obj.get("spec") or {}, glance_status(obj)
    if "upload" not in (spec.get("source") or {}):
        raise GlanceError(409, "This image's data comes from its source URL (web-download), not an upload.")
    if status != GlanceStatus.queued.value:
        raise GlanceError(409, f"Image status transition from {status} to {target} is not allowed")
    if not spec.get("diskFormat") or not spec.get("containerFormat"):
        raise GlanceError(400, "Properties disk_format, container_format must be set prior to saving data.")
    if size_header is not None and not size_header.isdigit():
        raise GlanceError(400, f"Invalid image size {size_header}")
    return int(size_header) if size_header is not None else None


def chosen_store(header: str | None, stores: Sequence[str]) -> str | None:
    """The store an upload or stage goes to: `x-image-meta-store` when given (400 for one not configured, as
    Glance answers), else the default (None)."""
    if header is None:
        return None
    if header not in stores:
        raise GlanceError(400, f"Store for identifier {header} not found")
    return header


def check_store_delete(obj: Mapping[str, Any], store: str, stores: Sequence[str], held: Sequence[str],
                       admin: bool) -> None:
    """DELETE /v2/stores/{store}/{image}: one copy of an active image's data, never its last (Glance's rules;
    its policy delete_image_location is an administrator's)."""
    if store not in stores:
        raise GlanceError(409, f"The selected store {store} is not available on this node.")
    if not admin:
        raise GlanceError(403, "You are not authorized to complete delete_image_location action.")
    if glance_status(obj) != GlanceStatus.active.value:
        raise GlanceError(409, "It's not allowed to remove image data from store if image status is not 'active'")
    if store not in held:
        raise GlanceError(404, f"Image {obj['metadata']['uid']} is not stored in store {store}.")
    if len(held) == 1:
        raise GlanceError(403, "Cannot delete image data from the only store containing it. Consider deleting the "
                               "image instead.")


def stores_info(specs: Iterable[Any], default: str) -> dict[str, Any]:
    """GET /v2/info/stores: each store's id and description, the default one marked."""
    return {"stores": [{"id": s.id, "description": s.description or f"{s.kind} store",
                        **({"default": True} if s.id == default else {})} for s in specs]}


def stores_detail(specs: Iterable[Any], default: str) -> dict[str, Any]:
    """GET /v2/info/stores/detail: the stores again, with their type, weight and Glance's properties of that
    type (a file store's directory; an s3 store's endpoint and bucket, never its keys)."""
    specs = list(specs)
    doc = stores_info(specs, default)
    for store, spec in zip(doc["stores"], specs, strict=True):
        s3 = spec.s3
        properties = ({"data_dir": spec.path} if s3 is None else
                      {"s3_store_host": s3.endpoint, "s3_store_bucket": s3.bucket})
        store.update({"type": spec.kind, "weight": spec.weight, "properties": properties})
    return doc


_CONTENT_RANGE = re.compile(r"bytes (\d+)-(\d+)/(\d+)")


def parse_resume(content_range: str | None, kept: int) -> tuple[int, int | None]:
    """A stage's `Content-Range: bytes N-M/T` (Kova's resumable stage, beyond Glance): (N, T), where N must be
    the `kept` bytes an interrupted stage left and M the last byte; (0, None) without the header. A mismatch
    is 416 with `Content-Range: bytes */<kept>`, as an HTTP server answers a range it cannot serve."""
    if content_range is None:
        return 0, None
    match = _CONTENT_RANGE.fullmatch(content_range.strip())
    if match is None:
        raise GlanceError(400, f"Invalid Content-Range {content_range!r}: a resumed stage sends bytes N-M/TOTAL")
    first, last, total = (int(g) for g in match.groups())
    if first != kept or last != total - 1 or first > last:
        raise GlanceError(416, f"{kept} bytes of this stage are kept: send bytes {kept}-{total - 1}/{total}",
                          headers={"Content-Range": f"bytes */{kept}"})
    return first, total


def stage_doc(obj: Mapping[str, Any], kept: int | None) -> dict[str, Any]:
    """GET /v2/images/{id}/stage (Kova's, for a resumable stage): how many bytes arrived, and whether the stage
    is complete and verified (the image `uploading`, waiting for its import)."""
    status = glance_status(obj)
    staged = (obj.get("status") or {}).get("size")  # set once a stage is whole and verified (not while arriving)
    complete = status == GlanceStatus.uploading.value and staged is not None
    if status not in (GlanceStatus.queued.value, GlanceStatus.uploading.value):
        raise GlanceError(409, f"Image {obj['metadata']['uid']} is {status}: it has no stage")
    size = int(staged or 0) if complete else kept or 0
    return {"image_id": obj["metadata"]["uid"], "status": status, "size": size, "complete": complete}


# Glance's interoperable import. copy-image and glance-download need more than one store or another Glance.
IMPORT_METHODS = ("glance-direct", "web-download", "copy-image")


def import_info() -> dict[str, Any]:
    """GET /v2/info/import."""
    return {"import-methods": {"description": "Import methods available.", "type": "array",
                               "value": list(IMPORT_METHODS)}}


def import_targets(body: Any, stores: Sequence[str], held: Sequence[str]) -> list[str]:
    """The stores an import asks for beyond where the data is (`held`): `stores` (each one configured),
    `all_stores` (every one), else none; Glance's 400 for both at once or an unknown store."""
    asked, every = body.get("stores"), bool(body.get("all_stores"))
    if asked and every:
        raise GlanceError(400, "All_stores parameter can't be used with x-image-meta-store header or stores "
                               "parameter")
    if asked is not None and (not isinstance(asked, list) or not all(isinstance(s, str) for s in asked)):
        raise GlanceError(400, "stores must be a list of store identifiers")
    for sid in asked or ():
        if sid not in stores:
            raise GlanceError(400, f"Store for identifier {sid} not found")
    wanted = list(stores) if every else list(asked or ())
    return [s for s in wanted if s not in held]


def parse_import(obj: Mapping[str, Any], body: Any, admin: bool = False) -> tuple[str, str | None]:
    """POST /v2/images/{id}/import: the method and, for web-download, its URI; Glance's refusals otherwise.
    copy-image (an active image's data to more stores) is an administrator's, as in Glance."""
    found = body.get("method") if isinstance(body, dict) else None
    method: dict[str, Any] = found if isinstance(found, dict) else {}
    name = method.get("name")
    if not isinstance(name, str) or not name:
        raise GlanceError(400, "Import request requires a 'method' with a 'name'.")
    if name not in IMPORT_METHODS:
        raise GlanceError(400, f"Import method {name} is not valid: this site offers {', '.join(IMPORT_METHODS)}.")
    spec, status = obj.get("spec") or {}, glance_status(obj)
    if name == "copy-image":
        if not admin:
            raise GlanceError(403, "You are not authorized to complete copy_image action.")
        if status != GlanceStatus.active.value:
            raise GlanceError(409, "Image needs to be in 'active' state to use 'copy-image' method")
        if not body.get("stores") and not body.get("all_stores"):
            raise GlanceError(400, "copy-image needs the stores to copy to (stores, or all_stores)")
        return name, None
    if "upload" not in (spec.get("source") or {}):
        raise GlanceError(409, "This image's data comes from its source (web-download or a snapshot); it cannot "
                               "be imported again.")
    if not spec.get("diskFormat") or not spec.get("containerFormat"):
        raise GlanceError(400, "'disk_format' and 'container_format' needs to be set before import")
    if name == "glance-direct":
        if status != GlanceStatus.uploading.value:
            raise GlanceError(409, "Image needs to be staged before 'glance-direct' method can be used")
        return name, None
    if status != GlanceStatus.queued.value:
        raise GlanceError(409, f"Image needs to be in 'queued' state to use '{name}' method")
    uri = method.get("uri")
    if not isinstance(uri, str) or not re.match(r"^https?://", uri) or len(uri) > 4096:
        raise GlanceError(400, f"URI for web-download does not pass filtering: {uri!r} is not an http(s) URL")
    return name, uri


UPLOAD_RETRY_AFTER = 10  # seconds a client is asked to wait when every upload slot of the API is taken


def check_upload_slots(project: str, in_project: int, in_all: int, per_project: int, total: int) -> None:
    """One upload more, or Glance's answer: each holds a thread, a connection and a few MiB of the API for
    as long as its client takes. Over the project's share it is the project's own limit, as Glance's
    `image_count_uploading` quota: 413, "over limit" (a retry helps only once one of its own uploads ends).
    Over the API's total it is the service that is busy, through no fault of the project: 503 with
    Retry-After, which glanceclient and keystoneauth honour."""
    if in_project >= per_project:
        raise GlanceError(413, f"Resource image_count_uploading is over limit of {per_project} due to current "
                               f"usage {in_project} and delta 1: project {project} may upload {per_project} "
                               "images at once (KOVA_MAX_UPLOADS_PER_PROJECT)")
    if in_all >= total:
        raise GlanceError(503, f"The image API is receiving {in_all} uploads, its most at once "
                               f"(KOVA_MAX_UPLOADS); try again in {UPLOAD_RETRY_AFTER} seconds",
                          headers={"Retry-After": str(UPLOAD_RETRY_AFTER)})


FORMAT_REASONS = {"InvalidDiskFormat", "UnsafeImage", "InvalidImage"}


def upload_refused(e: Refusal, disk_format: str) -> GlanceError:
    """The verified pipeline's refusal as Glance answers it: 413 over the size cap, 415 for data that does
    not match its disk_format (or is unsafe), 400 for the rest."""
    if e.reason == "SizeExceeded":
        return GlanceError(413, str(e))
    if e.reason in FORMAT_REASONS:
        return GlanceError(415, f"Image disk_format {disk_format} does not match the data: {e}")
    return GlanceError(400, str(e))


def check_download(obj: Mapping[str, Any]) -> int | None:
    """The size of the data to send; None when there is none yet (Glance's 204)."""
    status, st = glance_status(obj), obj.get("status") or {}
    if status == GlanceStatus.deactivated.value:
        raise GlanceError(403, "The requested image has been deactivated. Image data download is forbidden.")
    if status != GlanceStatus.active.value or not st.get("size"):
        return None
    return int(st["size"])


# ---------------------------------------------------------------------------------------------- members
def visible_members(obj: Mapping[str, Any], project: str) -> list[dict[str, Any]]:
    """Only shared images have members; the owner sees them all, a member only itself (Glance's policy)."""
    if (obj.get("spec") or {}).get("visibility") != Visibility.shared.value:
        raise GlanceError(403, f"Not allowed to list members for image {obj['metadata']['uid']}: Only shared "
                               "images have members.")
    docs = members(obj)
    return docs if obj["metadata"]["namespace"] == project else [d for d in docs if d["member_id"] == project]


def shown_member(obj: Mapping[str, Any], member: str, project: str) -> dict[str, Any]:
    found = [d for d in members(obj) if d["member_id"] == member
             and (obj["metadata"]["namespace"] == project or member == project)]
    if not found:
        raise GlanceError(404, f"Member {member} not found for image {obj['metadata']['uid']}")
    return found[0]


def added_member(obj: Mapping[str, Any], body: Any) -> tuple[str, list[str]]:
    """The member to add and the image's new member list."""
    member = body.get("member") if isinstance(body, dict) else None
    if member is None:
        raise GlanceError(400, "Member to be added not specified")
    if not member:
        raise GlanceError(400, "Member can't be empty")
    spec = obj.get("spec") or {}
    if spec.get("visibility") != Visibility.shared.value:
        raise GlanceError(403, f"Not allowed to create members for image {obj['metadata']['uid']}.")
    current = list(spec.get("members") or [])
    if len(current) + 1 > MAX_IMAGE_MEMBERS:  # Glance counts before it looks for a duplicate
        raise GlanceError(413, f"Image member limit exceeded for image {obj['metadata']['uid']}: "
                               f"{_limit_text('image members for this image', len(current) + 1, MAX_IMAGE_MEMBERS)}:")
    if member in current:
        raise GlanceError(409, f"Member {member} is duplicated for image {obj['metadata']['uid']}")
    return str(member), [*current, str(member)]


def removed_member(obj: Mapping[str, Any], member: str) -> list[str]:
    current = list((obj.get("spec") or {}).get("members") or [])
    if member not in current:
        raise GlanceError(404, f"Member {member} not found for image {obj['metadata']['uid']}")
    return [m for m in current if m != member]


def check_member_role(member_role: bool) -> None:
    """Glance's modify_member policy: only a project `member` may accept or reject a share, a `reader` gets
    403 (in Kova the member role is the right to create Images in the project, as kova.openstack.identity
    says)."""
    if not member_role:
        raise GlanceError(403, "You are not authorized to complete modify_member action.")


def answered_members(obj: Mapping[str, Any], member: str, project: str, body: Any, now: str) -> list[dict[str, Any]]:
    """A member project accepts or rejects a share: only the member may answer (Glance's policy; its role is
    checked first, check_member_role). The image's status.members with that answer."""
    if member not in ((obj.get("spec") or {}).get("members") or []):
        raise GlanceError(404, f"Member {member} not found for image {obj['metadata']['uid']}")
    if member != project:
        raise GlanceError(403, f"Not allowed to update members for image {obj['metadata']['uid']}.")
    status = body.get("status") if isinstance(body, dict) else None
    if status is None:
        raise GlanceError(400, "Status not specified")
    if status not in {m.value for m in MemberStatus}:
        raise GlanceError(400, 'Incorrect request: Status must be "pending", "accepted" or "rejected".')
    answers = [m for m in (obj.get("status") or {}).get("members") or () if m.get("member") != member]
    previous: dict[str, Any] = next(
        (m for m in (obj.get("status") or {}).get("members") or () if m.get("member") == member), {})
    return [*answers, {"member": member, "status": status, "createdAt": previous.get("createdAt") or now,
                       "updatedAt": now}]
