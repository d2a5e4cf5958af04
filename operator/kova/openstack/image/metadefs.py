"""Glance's metadata definitions (metadefs) over MetadefNamespace objects: pure functions.

A metadef namespace is one cluster-scoped object whose spec holds the whole namespace as Glance's catalog
files write it: its properties, objects, tags and resource-type associations. Glance's documents, schemas,
refusals and words come from here; kova.openstack.image.metadef_handlers reads and writes the objects.
Glance's default catalog and its schemas are vendored under `vendor/glance` (Apache-2.0, the Glance release in
`vendor/glance/VERSION`); `kova_namespace()` adds OS::Kova::KubeVirt, what Kova turns into virtual hardware.
"""

from __future__ import annotations

import functools
import hashlib
import json
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from pydantic import ValidationError

from kova.api.models import MetadefNamespaceSpec, MetadefVisibility
from kova.compute.guest import CDROM_BUSES, DISK_BUSES, VIDEO_MODELS, VIF_MODELS
from kova.openstack.image.glance import GlanceError, updated_at

VENDOR = Path(__file__).parent / "vendor" / "glance"
KOVA_CATALOG = "kova"
# What Glance's database starts with (its migrations seed them); others appear when a namespace names one.
SEEDED_RESOURCE_TYPES = ("OS::Cinder::Volume", "OS::Glance::Image", "OS::Nova::Aggregate", "OS::Nova::Flavor",
                         "OS::Nova::Server")
PROPERTY_TYPES = ("array", "boolean", "integer", "number", "object", "string")
READ_ONLY = ("self", "schema", "created_at", "updated_at")
NAMESPACE_KEYS = {"namespace", "display_name", "description", "visibility", "protected", "owner",
                  "resource_type_associations", "properties", "objects", "tags"}
SORT_KEYS = ("created_at", "updated_at", "namespace")
MAX_LIMIT = 1000


def glance_version() -> str:
    return (VENDOR / "VERSION").read_text().strip()


@functools.cache
def _schemas() -> dict[str, Any]:
    """Glance's own documents, printed by its get_schema() functions (vendor/glance/metadef-schemas.json)."""
    return dict(json.loads((VENDOR / "metadef-schemas.json").read_text()))


def schema(name: str) -> dict[str, Any] | None:
    """GET /v2/schemas/metadefs/{name}."""
    found = _schemas().get(name)
    return json.loads(json.dumps(found)) if found is not None else None  # a copy: callers may not share it


def object_name(namespace: str) -> str:
    """The MetadefNamespace's Kubernetes name for a Glance namespace name: a slug and a hash of the name, so
    that OS::Compute::Watchdog and os-compute-watchdog never collide and the same name always maps alike."""
    slug = re.sub(r"[^a-z0-9]+", "-", namespace.lower()).strip("-")[:40].strip("-") or "namespace"
    return f"{slug}-{hashlib.sha256(namespace.encode()).hexdigest()[:10]}"


def _time(value: str | None) -> str | None:
    return value.split(".")[0].rstrip("Z") + "Z" if value else None


def visible(spec: Mapping[str, Any], project: str, admin: bool) -> bool:
    """Glance's get_metadef_namespace: a public one to everyone, a private one to its owner and admins."""
    return admin or spec.get("visibility") == MetadefVisibility.public.value or spec.get("owner") == project


# ------------------------------------------------------------------------------------------- documents
def namespace_doc(obj: Mapping[str, Any], detail: bool = False, resource_type: str | None = None) -> dict[str, Any]:
    """A namespace as Glance shows it; `detail` (GET of one) adds its objects, properties and tags, with the
    property names prefixed as `resource_type`'s association says when one is asked."""
    spec, md = obj["spec"], obj["metadata"]
    name = spec["namespace"]
    doc: dict[str, Any] = {"namespace": name}
    for key, field in (("display_name", "displayName"), ("description", "description"), ("owner", "owner")):
        if spec.get(field) is not None:
            doc[key] = spec[field]
    doc.update({"visibility": spec.get("visibility") or MetadefVisibility.private.value,
                "protected": bool(spec.get("protected")), "created_at": _time(md.get("creationTimestamp")),
                "updated_at": updated_at(obj),
                "self": f"/v2/metadefs/namespaces/{name}", "schema": "/v2/schemas/metadefs/namespace"})
    associations = [association_doc(a) for a in spec.get("resourceTypeAssociations") or ()]
    if associations:
        doc["resource_type_associations"] = associations
    if not detail:
        return doc
    objects = [object_doc(name, o) for o in spec.get("objects") or ()]
    if objects:
        doc["objects"] = objects
    properties = dict(spec.get("properties") or {})
    prefix = next((a.get("prefix") for a in spec.get("resourceTypeAssociations") or ()
                   if resource_type and a["name"] == resource_type), None)
    if properties:
        doc["properties"] = {f"{prefix or ''}{k}": v for k, v in properties.items()}
    tags = [{"name": t["name"]} for t in spec.get("tags") or ()]
    if tags:
        doc["tags"] = tags
    return doc


def association_doc(a: Mapping[str, Any]) -> dict[str, Any]:
    doc = {"name": a["name"]}
    for key, field in (("prefix", "prefix"), ("properties_target", "propertiesTarget"),
                       ("created_at", "createdAt"), ("updated_at", "updatedAt")):
        if a.get(field) is not None:
            doc[key] = a[field]
    return doc


def object_doc(namespace: str, o: Mapping[str, Any]) -> dict[str, Any]:
    doc: dict[str, Any] = {"name": o["name"]}
    if o.get("description") is not None:
        doc["description"] = o["description"]
    if o.get("required"):
        doc["required"] = list(o["required"])
    doc.update({"properties": dict(o.get("properties") or {}), "created_at": o.get("createdAt"),
                "updated_at": o.get("updatedAt"), "self": f"/v2/metadefs/namespaces/{namespace}/objects/{o['name']}",
                "schema": "/v2/schemas/metadefs/object"})
    return doc


def tag_doc(t: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": t["name"], "created_at": t.get("createdAt"), "updated_at": t.get("updatedAt")}


def property_doc(name: str, definition: Mapping[str, Any]) -> dict[str, Any]:
    return {"name": name, **definition}


def resource_types(objs: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """GET /v2/metadefs/resource_types: the seeded ones and every one a namespace is associated with."""
    first: dict[str, str | None] = dict.fromkeys(SEEDED_RESOURCE_TYPES)
    for obj in objs:
        for a in obj["spec"].get("resourceTypeAssociations") or ():
            times = [t for t in (first.get(a["name"]), a.get("createdAt")) if t]
            first[a["name"]] = min(times) if times else None
    return {"resource_types": [{"name": n, "created_at": t, "updated_at": t} for n, t in sorted(first.items())]}


# ------------------------------------------------------------------------------------------- lists
def select_namespaces(objs: Iterable[Mapping[str, Any]], project: str, admin: bool,
                      query: list[tuple[str, str]]) -> dict[str, Any]:
    """GET /v2/metadefs/namespaces: those the caller may see, filtered by `visibility` and `resource_types`
    (any of a comma-separated list), sorted (`sort_key` created_at, updated_at or namespace; `sort_dir`),
    and paged by `limit` and `marker` (a namespace name), with Glance's `first` and `next` links."""
    params = dict(query)
    sort_key = params.get("sort_key", "created_at")
    sort_dir = params.get("sort_dir", "desc")
    if sort_key not in SORT_KEYS:
        raise GlanceError(400, f"Invalid sort key: {sort_key}. It must be one of the following: "
                               f"{', '.join(SORT_KEYS)}.")
    if sort_dir not in ("asc", "desc"):
        raise GlanceError(400, f"Invalid sort direction: {sort_dir}")
    limit = _limit(params.get("limit"))
    wanted_types = {t for t in (params.get("resource_types") or "").split(",") if t}
    vis = params.get("visibility")
    docs = []
    for obj in objs:
        spec = obj["spec"]
        if not visible(spec, project, admin) or (vis and spec.get("visibility", "private") != vis):
            continue
        if wanted_types and not wanted_types & {a["name"] for a in spec.get("resourceTypeAssociations") or ()}:
            continue
        docs.append(namespace_doc(obj))
    docs.sort(key=lambda d: (d.get(sort_key) or "", d["namespace"]), reverse=sort_dir == "desc")
    marker = params.get("marker")
    if marker is not None:
        names = [d["namespace"] for d in docs]
        if marker not in names:
            raise GlanceError(404, f"Metadata definition namespace={marker} was not found.")
        docs = docs[names.index(marker) + 1:]
    page = docs[:limit]
    rest = [(k, v) for k, v in query if k != "marker"]
    body: dict[str, Any] = {"namespaces": page, "schema": "/v2/schemas/metadefs/namespaces",
                            "first": "/v2/metadefs/namespaces" + (f"?{urlencode(rest)}" if rest else "")}
    if page and len(page) == limit and len(docs) > limit:
        body["next"] = "/v2/metadefs/namespaces?" + urlencode([*rest, ("marker", page[-1]["namespace"])])
    return body


def _limit(text: str | None) -> int:
    if text is None:
        return MAX_LIMIT
    try:
        value = int(text)
    except ValueError:
        raise GlanceError(400, "limit param must be an integer") from None
    if value < 0:
        raise GlanceError(400, "limit param must be positive")
    return min(value, MAX_LIMIT)


# ------------------------------------------------------------------------------------------- writes
def _read_only(body: Mapping[str, Any]) -> None:
    for key in READ_ONLY:
        if key in body:
            raise GlanceError(403, f"Attribute '{key}' is read-only.")


def _object_body(body: Any, what: str) -> dict[str, Any]:
    if not isinstance(body, dict):
        raise GlanceError(400, f"The {what} must be a JSON object.")
    return body


def check_property(name: str, definition: Any) -> dict[str, Any]:
    """A property definition as Glance's schema asks: a JSON object with `title` and a known `type`."""
    if not isinstance(definition, dict):
        raise GlanceError(400, f"Property {name}: a definition is a JSON object.")
    if not re.fullmatch(r".{1,80}", name, re.DOTALL):
        raise GlanceError(400, f"Property name {name!r}: 1 to 80 characters.")
    if not isinstance(definition.get("title"), str) or "type" not in definition:
        raise GlanceError(400, f"Property {name}: 'title' and 'type' are required properties.")
    if definition["type"] not in PROPERTY_TYPES:
        raise GlanceError(400, f"Property {name}: type {definition['type']!r} is not one of "
                               f"{', '.join(PROPERTY_TYPES)}.")
    return {k: v for k, v in definition.items() if k != "name"}


def _check_properties(props: Any) -> dict[str, dict[str, Any]]:
    if props is None:
        return {}
    if not isinstance(props, dict):
        raise GlanceError(400, "properties must be a JSON object of property definitions.")
    return {str(k): check_property(str(k), v) for k, v in props.items()}


def new_object(body: Any, now: str) -> dict[str, Any]:
    """An object of a create (POST .../objects) or of a namespace's create: name, description, required,
    properties."""
    body = _object_body(body, "object")
    _read_only(body)
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 80:
        raise GlanceError(400, "An object needs a name of 1 to 80 characters.")
    extra = set(body) - {"name", "description", "required", "properties"}
    if extra:
        raise GlanceError(400, f"Additional properties are not allowed ({', '.join(sorted(extra))} were unexpected)")
    required = body.get("required") or []
    if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
        raise GlanceError(400, "required must be a list of property names.")
    out: dict[str, Any] = {"name": name, "required": required, "properties": _check_properties(body.get("properties")),
                           "createdAt": now, "updatedAt": now}
    if body.get("description") is not None:
        out["description"] = str(body["description"])
    return out


def new_association(body: Any, now: str) -> dict[str, Any]:
    body = _object_body(body, "resource type association")
    _read_only(body)
    name = body.get("name")
    if not isinstance(name, str) or not 0 < len(name) <= 80:
        raise GlanceError(400, "A resource type association needs a name of 1 to 80 characters.")
    out: dict[str, Any] = {"name": name, "createdAt": now, "updatedAt": now}
    for key, field in (("prefix", "prefix"), ("properties_target", "propertiesTarget")):
        if body.get(key) is not None:
            out[field] = str(body[key])
    return out


def new_tag(name: Any, now: str) -> dict[str, Any]:
    if not isinstance(name, str) or not 0 < len(name) <= 255:
        raise GlanceError(400, "A tag needs a name of 1 to 255 characters.")
    return {"name": name, "createdAt": now, "updatedAt": now}


def new_namespace(body: Any, project: str, now: str) -> dict[str, Any]:
    """The spec of a MetadefNamespace made by POST /v2/metadefs/namespaces (Glance's defaults: private,
    unprotected, owned by the caller's project), its objects, properties, tags and associations included."""
    body = _namespace_body(body)
    spec: dict[str, Any] = {"namespace": body["namespace"], "owner": body.get("owner") or project,
                            **_namespace_fields(body)}
    spec["properties"] = _check_properties(body.get("properties"))
    spec["objects"] = _unique([new_object(o, now) for o in _list(body.get("objects"), "objects")], "object",
                              body["namespace"])
    spec["tags"] = _unique([new_tag(_object_body(t, "tag").get("name"), now) for t in _list(body.get("tags"), "tags")],
                           "tag", body["namespace"])
    spec["resourceTypeAssociations"] = _unique(
        [new_association(a, now) for a in _list(body.get("resource_type_associations"), "resource_type_associations")],
        "resource type association", body["namespace"])
    return validated(spec)


def _namespace_body(body: Any) -> dict[str, Any]:
    """A namespace's create or update body as Glance's schema takes it: known keys, a name, nothing read-only."""
    body = _object_body(body, "namespace")
    _read_only(body)
    extra = set(body) - NAMESPACE_KEYS
    if extra:
        raise GlanceError(400, f"Additional properties are not allowed ({', '.join(sorted(extra))} were unexpected)")
    if not isinstance(body.get("namespace"), str):
        raise GlanceError(400, "'namespace' is a required property")
    return dict(body)


def _namespace_fields(body: Mapping[str, Any]) -> dict[str, Any]:
    """The namespace-level fields of a create or an update; absent ones take Glance's create defaults."""
    out: dict[str, Any] = {"visibility": body.get("visibility") or MetadefVisibility.private.value,
                           "protected": bool(body.get("protected") or False)}
    if not isinstance(body.get("protected", False), bool):
        raise GlanceError(400, "protected must be true or false.")
    for key, field in (("display_name", "displayName"), ("description", "description")):
        if body.get(key) is not None:
            out[field] = body[key]
    return out


def _list(value: Any, what: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise GlanceError(400, f"{what} must be a list.")
    return value


def _unique(items: list[dict[str, Any]], what: str, namespace: str) -> list[dict[str, Any]]:
    seen: set[str] = set()
    for item in items:
        key = item["name"].lower() if what == "tag" else item["name"]
        if key in seen:
            raise GlanceError(409, _duplicate(what, item["name"], namespace))
        seen.add(key)
    return items


def validated(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec as the CRD will take it (lengths, enums), or Glance's 400 with what is wrong."""
    try:
        return MetadefNamespaceSpec.model_validate(spec).dump()
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise GlanceError(400, f"Invalid metadata definition namespace: {problems}") from None


def update_namespace(spec: Mapping[str, Any], body: Any, project: str) -> dict[str, Any]:
    """PUT /v2/metadefs/namespaces/{ns}: the namespace-level fields replaced (absent ones back to Glance's
    create defaults, as Glance does); objects, properties, tags and associations kept."""
    body = _namespace_body(body)
    kept = {k: v for k, v in spec.items() if k in ("properties", "objects", "tags", "resourceTypeAssociations",
                                                    "catalog")}
    return validated({**kept, "namespace": body["namespace"], "owner": body.get("owner") or project,
                      **_namespace_fields(body)})


def _find(items: Iterable[Mapping[str, Any]], name: str, case: bool = True) -> Mapping[str, Any] | None:
    return next((i for i in items if (i["name"] == name if case else i["name"].lower() == name.lower())), None)


def add_item(spec: Mapping[str, Any], field: str, item: dict[str, Any], what: str) -> dict[str, Any]:
    """A new object, tag or association in the namespace; 409 for one of that name (tags: in any case)."""
    items = list(spec.get(field) or [])
    if _find(items, item["name"], case=field != "tags") is not None:
        raise GlanceError(409, _duplicate(what, item["name"], spec["namespace"]))
    return validated({**spec, field: [*items, item]})


def _duplicate(what: str, name: str, namespace: str) -> str:
    if what == "tag":
        return (f"A metadata tag with name={name} already exists in namespace={namespace}. (Please note that "
                "metadata tag names are case insensitive).")
    if what == "resource type association":
        return (f"The metadata definition resource-type association of resource-type={name} to "
                f"namespace={namespace} already exists.")
    return f"A metadata definition {what} with name={name} already exists in namespace={namespace}."


def not_found(what: str, name: str, namespace: str) -> GlanceError:
    if what == "resource type association":
        return GlanceError(404, f"The metadata definition resource-type association of resource-type={name} to "
                                f"namespace={namespace}, was not found.")
    return GlanceError(404, f"The metadata definition {what} with name={name} was not found in "
                            f"namespace={namespace}.")


def get_item(spec: Mapping[str, Any], field: str, name: str, what: str) -> Mapping[str, Any]:
    found = _find(spec.get(field) or (), name, case=field != "tags")
    if found is None:
        raise not_found(what, name, spec["namespace"])
    return found


def replace_item(spec: Mapping[str, Any], field: str, name: str, item: dict[str, Any], what: str) -> dict[str, Any]:
    """An object or tag updated (it may be renamed: 409 when the new name is another's); it keeps its
    created_at."""
    old = get_item(spec, field, name, what)
    others = [i for i in spec.get(field) or () if i is not old]
    if _find(others, item["name"], case=field != "tags") is not None:
        raise GlanceError(409, _duplicate(what, item["name"], spec["namespace"]))
    item = {**item, "createdAt": old.get("createdAt") or item.get("createdAt")}
    items = [item if i is old else i for i in spec.get(field) or ()]
    return validated({**spec, field: items})


def remove_item(spec: Mapping[str, Any], field: str, name: str, what: str) -> dict[str, Any]:
    """An object, tag or association removed; 403 in a protected namespace, as Glance."""
    old = get_item(spec, field, name, what)
    if spec.get("protected"):
        word = "resource-type-association" if what == "resource type association" else what
        raise GlanceError(403, f"Metadata definition {word} {name} is protected and cannot be deleted.")
    return validated({**spec, field: [i for i in spec.get(field) or () if i is not old]})


def remove_all(spec: Mapping[str, Any], field: str, what: str) -> dict[str, Any]:
    """DELETE .../objects, .../properties or .../tags: all of them; 403 in a protected namespace."""
    if spec.get("protected"):
        raise GlanceError(403, f"Metadata definition namespace {spec['namespace']} is protected and its {what} "
                               "cannot be deleted.")
    return validated({**spec, field: {} if field == "properties" else []})


def new_property(body: Any) -> tuple[str, dict[str, Any]]:
    body = _object_body(body, "property")
    _read_only(body)
    name = body.get("name")
    if not isinstance(name, str):
        raise GlanceError(400, "'name' is a required property")
    return name, check_property(name, body)


def get_property(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    """A property by name, with or without a resource type's prefix (Glance strips a known prefix)."""
    props = spec.get("properties") or {}
    if name in props:
        return property_doc(name, props[name])
    for a in spec.get("resourceTypeAssociations") or ():
        prefix = a.get("prefix") or ""
        if prefix and name.startswith(prefix) and name[len(prefix):] in props:
            return property_doc(name, props[name[len(prefix):]])
    raise not_found("property", name, spec["namespace"])


def put_property(spec: Mapping[str, Any], old_name: str | None, name: str,
                 definition: dict[str, Any]) -> dict[str, Any]:
    """A property created (`old_name` None: 409 if taken) or updated (renamed, 409 if the new name is taken)."""
    props = dict(spec.get("properties") or {})
    if old_name is not None and old_name not in props:
        raise not_found("property", old_name, spec["namespace"])
    if name in props and name != old_name:
        raise GlanceError(409, _duplicate("property", name, spec["namespace"]))
    if old_name is not None:
        props = {(name if k == old_name else k): (definition if k == old_name else v) for k, v in props.items()}
    else:
        props[name] = definition
    return validated({**spec, "properties": props})


def delete_property(spec: Mapping[str, Any], name: str) -> dict[str, Any]:
    props = dict(spec.get("properties") or {})
    if name not in props:
        raise not_found("property", name, spec["namespace"])
    if spec.get("protected"):
        raise GlanceError(403, f"Metadata definition property {name} is protected and cannot be deleted.")
    del props[name]
    return validated({**spec, "properties": props})


# ------------------------------------------------------------------------------------------- catalog
def catalog(now: str) -> list[dict[str, Any]]:
    """The specs Kova loads on install (`now`: when): Glance's default catalog (vendor/glance/metadefs) and
    OS::Kova::KubeVirt, owned by no project (an administrator's, as `glance-manage db load_metadefs` leaves
    them)."""
    source = f"glance-{glance_version()}"
    docs = [(json.loads(p.read_text()), source) for p in sorted((VENDOR / "metadefs").glob("*.json"))]
    docs.append((kova_namespace(), KOVA_CATALOG))
    return [{**{k: v for k, v in new_namespace(doc, "", now).items() if k != "owner"}, "catalog": src}
            for doc, src in docs]


def kova_namespace() -> dict[str, Any]:
    """OS::Kova::KubeVirt: the image properties Kova turns into KubeVirt devices (kova.compute.guest), with the
    values it accepts, so Horizon's "Update Metadata" and `openstack image set --property` offer them."""
    def choice(title: str, values: tuple[str, ...], description: str) -> dict[str, Any]:
        return {"title": title, "type": "string", "enum": list(values), "description": description}
    return {
        "namespace": "OS::Kova::KubeVirt", "display_name": "Kova: KubeVirt virtual hardware",
        "description": "Image properties that Kova turns into the KubeVirt VirtualMachine's devices. A value "
                       "outside these makes the server fail to build with InvalidImageProperty.",
        "visibility": "public", "protected": True,
        "resource_type_associations": [{"name": "OS::Glance::Image", "prefix": "hw_"},
                                       {"name": "OS::Cinder::Volume", "prefix": "hw_", "properties_target": "image"}],
        "properties": {
            "disk_bus": choice("Disk Bus", DISK_BUSES, "The root disk's bus (KubeVirt has no IDE or Xen bus)."),
            "cdrom_bus": choice("CD-ROM Bus", CDROM_BUSES, "The bus of an ISO image's CD-ROM."),
            "vif_model": choice("Virtual Network Interface", VIF_MODELS, "The NIC model of every interface."),
            "firmware_type": choice("Firmware Type", ("bios", "uefi"), "BIOS or UEFI (os_secure_boot=required "
                                                                       "asks for UEFI secure boot)."),
            "machine_type": {"title": "Machine Type", "type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,62}$",
                             "description": "KubeVirt's machine type, e.g. q35 or pc-q35-rhel9.6.0."},
            "qemu_guest_agent": choice("QEMU Guest Agent", ("yes", "no"),
                                       "Accepted for compatibility: KubeVirt always offers the agent's channel."),
            "rng_model": choice("Random Number Generator", ("virtio",), "Adds a virtio RNG device."),
            "video_model": choice("Video Model", VIDEO_MODELS, "none: no graphics device at all."),
        },
    }
