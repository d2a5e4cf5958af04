"""Glance's metadata definitions over MetadefNamespace specs (kova.openstack.image.metadefs): documents,
refusals, lists and the catalog, without a cluster."""

from __future__ import annotations

from typing import Any

import pytest

from kova.compute.guest import DISK_BUSES
from kova.openstack.image import metadefs
from kova.openstack.image.glance import GlanceError

NOW = "2026-12-03T10:00:00Z"


def obj(spec: dict[str, Any], created: str = "2026-12-01T00:00:00Z") -> dict[str, Any]:
    return {"metadata": {"name": metadefs.object_name(spec["namespace"]), "creationTimestamp": created},
            "spec": spec}


def refusal(fn: Any, *args: Any) -> tuple[int, str]:
    with pytest.raises(GlanceError) as e:
        fn(*args)
    return e.value.status, e.value.message


def test_a_new_namespace_takes_glances_defaults_and_its_creators_project() -> None:
    spec = metadefs.new_namespace({"namespace": "OS::Test::A"}, "proj", NOW)
    assert spec["visibility"] == "private" and spec["protected"] is False and spec["owner"] == "proj"
    doc = metadefs.namespace_doc(obj(spec))
    assert doc["self"] == "/v2/metadefs/namespaces/OS::Test::A" and doc["schema"] == "/v2/schemas/metadefs/namespace"
    assert "properties" not in doc and "objects" not in doc  # only a GET of one shows them


def test_bad_namespaces_are_refused_in_glances_words() -> None:
    assert refusal(metadefs.new_namespace, {}, "p", NOW)[0] == 400
    assert refusal(metadefs.new_namespace, {"namespace": "x", "self": "/y"}, "p", NOW) == (
        403, "Attribute 'self' is read-only.")
    assert refusal(metadefs.new_namespace, {"namespace": "x", "color": "red"}, "p", NOW)[0] == 400
    assert refusal(metadefs.new_namespace, {"namespace": "x" * 81}, "p", NOW)[0] == 400
    assert refusal(metadefs.new_namespace, {"namespace": "x", "visibility": "shared"}, "p", NOW)[0] == 400
    status, message = refusal(metadefs.new_namespace, {"namespace": "x", "properties": {"p": {"type": "string"}}},
                              "p", NOW)
    assert status == 400 and "'title' and 'type'" in message
    status, message = refusal(metadefs.new_namespace, {"namespace": "x", "tags": [{"name": "A"}, {"name": "a"}]},
                              "p", NOW)
    assert status == 409 and "case insensitive" in message


def test_object_names_are_stable_distinct_kubernetes_names() -> None:
    a, b = metadefs.object_name("OS::Compute::Watchdog"), metadefs.object_name("os-compute-watchdog")
    assert a != b and a == metadefs.object_name("OS::Compute::Watchdog")
    assert a.startswith("os-compute-watchdog-") and len(a) <= 63


def test_objects_tags_properties_and_associations() -> None:
    spec = metadefs.new_namespace({"namespace": "N", "protected": True}, "p", NOW)
    item = metadefs.new_object({"name": "Disk", "properties": {"bus": {"title": "Bus", "type": "string"}}}, NOW)
    spec = metadefs.add_item(spec, "objects", item, "object")
    assert refusal(metadefs.add_item, spec, "objects", item, "object")[0] == 409
    renamed = metadefs.new_object({"name": "Volume"}, "2026-12-04T00:00:00Z")
    spec = metadefs.replace_item(spec, "objects", "Disk", renamed, "object")
    assert [o["name"] for o in spec["objects"]] == ["Volume"] and spec["objects"][0]["createdAt"] == NOW
    assert refusal(metadefs.get_item, spec, "objects", "Disk", "object")[0] == 404
    # A protected namespace keeps its parts: Glance refuses to delete them (403).
    status, message = refusal(metadefs.remove_item, spec, "objects", "Volume", "object")
    assert status == 403 and "protected" in message
    spec = {**spec, "protected": False}
    assert metadefs.remove_item(spec, "objects", "Volume", "object")["objects"] == []

    spec = metadefs.put_property(spec, None, "speed", metadefs.check_property("speed", {"title": "S",
                                                                                       "type": "integer"}))
    assert refusal(metadefs.put_property, spec, None, "speed", {"title": "S", "type": "integer"})[0] == 409
    spec = metadefs.put_property(spec, "speed", "rate", {"title": "R", "type": "number"})
    assert spec["properties"] == {"rate": {"title": "R", "type": "number"}}
    assocs = metadefs.add_item(spec, "resourceTypeAssociations",
                               metadefs.new_association({"name": "OS::Glance::Image", "prefix": "hw_"}, NOW),
                               "resource type association")
    # A property asked for with the resource type's prefix is found, and shown with it.
    assert metadefs.get_property(assocs, "hw_rate")["name"] == "hw_rate"
    shown = metadefs.namespace_doc(obj(assocs), detail=True, resource_type="OS::Glance::Image")
    assert set(shown["properties"]) == {"hw_rate"}
    assert "OS::Glance::Image" in {t["name"] for t in metadefs.resource_types([obj(assocs)])["resource_types"]}


def test_lists_follow_visibility_filters_sorting_and_markers() -> None:
    specs = [metadefs.new_namespace({"namespace": f"NS{i}", "visibility": "public" if i % 2 else "private"},
                                    "owner", NOW) for i in range(5)]
    objs = [obj(s, created=f"2026-12-0{i + 1}T00:00:00Z") for i, s in enumerate(specs)]

    def names(project: str, admin: bool, *query: tuple[str, str]) -> list[str]:
        return [d["namespace"] for d in metadefs.select_namespaces(objs, project, admin, list(query))["namespaces"]]
    assert names("someone", False) == ["NS3", "NS1"]  # public only; newest first
    assert names("owner", False) == ["NS4", "NS3", "NS2", "NS1", "NS0"]
    assert names("someone", True, ("visibility", "private"), ("sort_dir", "asc")) == ["NS0", "NS2", "NS4"]
    page = metadefs.select_namespaces(objs, "owner", False, [("limit", "2")])
    assert [d["namespace"] for d in page["namespaces"]] == ["NS4", "NS3"] and "marker=NS3" in page["next"]
    assert names("owner", False, ("limit", "2"), ("marker", "NS3")) == ["NS2", "NS1"]
    last = metadefs.select_namespaces(objs, "owner", False, [("limit", "2"), ("marker", "NS1")])
    assert [d["namespace"] for d in last["namespaces"]] == ["NS0"] and "next" not in last
    assert refusal(metadefs.select_namespaces, objs, "owner", False, [("sort_key", "color")])[0] == 400
    assert refusal(metadefs.select_namespaces, objs, "someone", False, [("marker", "NS2")])[0] == 404


def test_update_replaces_the_namespace_fields_and_keeps_its_parts() -> None:
    spec = metadefs.new_namespace({"namespace": "N", "visibility": "public", "protected": True,
                                   "tags": [{"name": "t"}]}, "p", NOW)
    updated = metadefs.update_namespace(spec, {"namespace": "N2", "description": "d"}, "p")
    assert updated["visibility"] == "private" and updated["protected"] is False  # Glance's create defaults
    assert updated["namespace"] == "N2" and [t["name"] for t in updated["tags"]] == ["t"]


def test_the_catalog_is_glances_and_kovas_and_says_what_kova_accepts() -> None:
    catalog = metadefs.catalog(NOW)
    names = {s["namespace"] for s in catalog}
    assert {"OS::Compute::Watchdog", "OS::Compute::Libvirt", "OS::Glance::CommonImageProperties",
            "OS::Kova::KubeVirt"} <= names and len(catalog) == 33
    assert all("owner" not in s for s in catalog)  # an administrator's, as Glance's loader leaves them
    kova = next(s for s in catalog if s["namespace"] == "OS::Kova::KubeVirt")
    assert kova["properties"]["disk_bus"]["enum"] == list(DISK_BUSES) and kova["catalog"] == "kova"
    assert catalog[-1] is kova  # loaded last: its presence says the whole catalog was loaded
    watchdog = next(s for s in catalog if s["namespace"] == "OS::Compute::Watchdog")
    assert watchdog["catalog"] == f"glance-{metadefs.glance_version()}" and watchdog["visibility"] == "public"


def test_schemas_are_glances() -> None:
    assert metadefs.schema("namespace")["name"] == "namespace"  # type: ignore[index]
    assert metadefs.schema("resource_type")["name"] == "resource_type_association"  # type: ignore[index]
    assert metadefs.schema("tags")["name"] == "tags"  # type: ignore[index]
    assert metadefs.schema("image") is None
