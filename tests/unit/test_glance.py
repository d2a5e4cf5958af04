"""kova.openstack.image.glance and identity.keystone: Glance's documents, rules and answers as pure functions."""

from __future__ import annotations

import base64
import datetime as dt
import json
from typing import Any

import pytest

from kova.openstack.identity import keystone
from kova.openstack.image import glance
from kova.openstack.image.glance import PATCH_TYPES, GlanceError


def image(obj_name: str, ns: str = "a", uid: str | None = None, created: str = "2026-01-01T00:00:00Z",
          **spec: Any) -> dict[str, Any]:
    status = spec.pop("status", {"status": "active", "size": 10})
    return {"metadata": {"name": obj_name, "namespace": ns, "uid": uid or f"uid-{ns}-{obj_name}",
                         "creationTimestamp": created},
            "spec": {"diskFormat": "raw", "source": {"upload": {}}, **spec}, "status": status}


def test_image_doc_has_every_base_key_and_string_properties() -> None:
    doc = glance.image_doc(image("x", properties={"os_distro": "ubuntu"}, tags=["b", "a"], name="My Image"))
    for key in ("name", "disk_format", "container_format", "visibility", "size", "virtual_size", "status",
                "checksum", "protected", "min_ram", "min_disk", "owner", "os_hidden", "os_hash_algo",
                "os_hash_value", "id", "created_at", "updated_at", "tags", "self", "file", "schema"):
        assert key in doc
    assert doc["name"] == "My Image" and doc["owner"] == "a" and doc["os_distro"] == "ubuntu"
    assert doc["self"] == "/v2/images/uid-a-x" and doc["created_at"] == "2026-01-01T00:00:00Z"
    assert glance.image_doc(image("plain"))["name"] == "plain"  # made with kubectl: the object's name


def test_a_snapshot_shows_novas_properties() -> None:
    snap = image("snap", status={"status": "active", "detectedFormat": "raw",
                                 "snapshot": {"instanceUuid": "i-1", "baseImageRef": "img-0"}})
    snap["spec"] = {"source": {"instance": "web"}}
    doc = glance.image_doc(snap)
    assert (doc["image_type"], doc["instance_uuid"], doc["base_image_ref"], doc["disk_format"]) == (
        "snapshot", "i-1", "img-0", "raw")
    assert "image_type" not in glance.image_doc(image("plain"))


def test_new_image_follows_glance_defaults_and_refusals() -> None:
    spec = glance.new_image({"name": "n", "disk_format": "qcow2", "ramdisk_id": "r"}, "a")
    assert spec["visibility"] == "shared" and spec["source"] == {"upload": {}}
    assert spec["properties"] == {"ramdisk_id": "r"}
    for body, code in (({"status": "active"}, 403), ({"os_glance_x": "1"}, 403), ({"id": "x"}, 400),
                       ({"disk_format": "wrong"}, 400), ({"container_format": "wrong"}, 400),
                       ({"visibility": "public"}, 403), ({"owner": "b"}, 403), ({"prop": 1}, 400),
                       ({"min_ram": -1}, 400), ([], 400)):
        with pytest.raises(GlanceError) as e:
            glance.new_image(body, "a")
        assert e.value.status == code, body


@pytest.mark.parametrize("name, expected", [("cirros", ("cirros", "cirros-")),
                                            ("Ubuntu 24.04", (None, "ubuntu-24-04-")),
                                            (None, (None, "image-")), ("!!!", (None, "image-"))])
def test_kubernetes_name(name: str | None, expected: tuple[str | None, str]) -> None:
    assert glance.kubernetes_name(name) == expected


def test_patch_both_dialects_and_glances_codes() -> None:
    obj = image("x", properties={"k": "v"}, tags=["t"], status={"status": "queued"})
    v21, v20 = PATCH_TYPES
    assert glance.apply_patch(obj, [{"op": "replace", "path": "/name", "value": "new"}], v21) == {"name": "new"}
    assert glance.apply_patch(obj, [{"replace": "/min_ram", "value": 512}], v20) == {"minRam": 512}
    assert glance.apply_patch(obj, [{"op": "remove", "path": "/k"}], v21) == {"properties": {"k": None}}
    assert glance.apply_patch(obj, [{"op": "add", "path": "/tags/1", "value": "u"}], v21) == {"tags": ["t", "u"]}
    assert glance.apply_patch(obj, [{"op": "replace", "path": "/tags/0", "value": "x"}], v21) == {"tags": ["x"]}
    assert glance.apply_patch(obj, [{"op": "remove", "path": "/tags/0"}], v21) == {"tags": []}
    assert glance.apply_patch(obj, [{"op": "add", "path": "/tags/-", "value": "t"}], v21) == {}  # a set
    assert glance.apply_patch(obj, [], v21) == {}
    assert glance.apply_patch(image("bare", status={"status": "queued"}),  # defaults are not written
                              [{"op": "replace", "path": "/visibility", "value": "private"}], v21) == {}
    for ops, media, code in (([{"op": "replace", "path": "/status", "value": "active"}], v21, 403),
                             ([{"op": "add", "path": "/os_glance_foo", "value": "x"}], v21, 403),
                             ([{"op": "remove", "path": "/name"}], v21, 403),
                             ([{"op": "replace", "path": "/nope", "value": "x"}], v21, 409),
                             ([{"add": "/k", "value": "x"}], v20, 409),
                             ([{"op": "move", "path": "/name"}], v21, 400),
                             ([{"op": "add", "path": "/a/b", "value": "x"}], v21, 400),
                             ([{"op": "add", "path": "/tags/3", "value": "x"}], v21, 400),
                             ([{"op": "remove", "path": "/tags/-"}], v21, 400),
                             ([{"op": "replace", "path": "/protected", "value": "yes"}], v21, 400),
                             ({"op": "add"}, v21, 400)):
        with pytest.raises(GlanceError) as e:
            glance.apply_patch(obj, ops, media)
        assert e.value.status == code, ops
    active = image("y")  # its format cannot change once the data is there
    with pytest.raises(GlanceError) as e:
        glance.apply_patch(active, [{"op": "replace", "path": "/disk_format", "value": "qcow2"}], v21)
    assert e.value.status == 403


def test_visibility_in_lists() -> None:
    mine = image("mine", "a", visibility="private")
    public = image("pub", "b", visibility="public")
    private = image("priv", "b", visibility="private")
    community = image("comm", "b", visibility="community")
    shared = image("sh", "b", visibility="shared", members=["a"],
                   status={"status": "active", "members": [{"member": "a", "status": "accepted"}]})
    pending = image("pend", "b", visibility="shared", members=["a"])
    killed = image("dead", "a", status={"status": "killed"})
    objs = [mine, public, private, community, shared, pending, killed]

    def names(*params: tuple[str, str]) -> set[str]:
        page, _ = glance.select(objs, "a", glance.parse_query(list(params)))
        return {d["name"] for d in page}
    assert names() == {"mine", "pub", "sh"}
    assert names(("member_status", "pending"), ("visibility", "shared")) == {"pend"}
    assert names(("visibility", "all")) == {"mine", "pub", "comm", "sh"}
    assert names(("visibility", "community")) == {"comm"}
    assert glance.visible(private, "a") is False and glance.visible(pending, "a") is True


def test_filters_sorting_and_paging() -> None:
    objs = [image(f"i{n}", uid=f"u{n}", created=f"2026-01-0{n}T00:00:00Z", tags=["x"] if n % 2 else [],
                  status={"status": "active", "size": n * 10}) for n in range(1, 6)]

    def run(*params: tuple[str, str]) -> tuple[list[str], bool]:
        page, more = glance.select(objs, "a", glance.parse_query(list(params)))
        return [d["name"] for d in page], more
    assert run()[0] == ["i5", "i4", "i3", "i2", "i1"]  # newest first
    assert run(("limit", "2")) == (["i5", "i4"], True)
    assert run(("limit", "2"), ("marker", "u4")) == (["i3", "i2"], True)
    assert run(("sort_key", "size"), ("sort_dir", "asc"))[0] == ["i1", "i2", "i3", "i4", "i5"]
    assert run(("sort", "name:asc"))[0][0] == "i1"
    assert run(("tag", "x"))[0] == ["i5", "i3", "i1"]
    assert run(("size_min", "20"), ("size_max", "30"))[0] == ["i3", "i2"]
    assert run(("id", "in:u1,u2"))[0] == ["i2", "i1"]
    for params in ([("limit", "x")], [("limit", "-1")], [("marker", "nope")], [("sort_key", "owner")],
                   [("sort_dir", "sideways")], [("visibility", "everyone")], [("member_status", "maybe")],
                   [("sort", "name:asc"), ("sort_key", "size")], [("size_min", "big")]):
        with pytest.raises(GlanceError) as e:
            glance.select(objs, "a", glance.parse_query(params))
        assert e.value.status == 400, params


def test_status_follows_deactivation_at_once() -> None:
    assert glance.glance_status(image("x", deactivated=True)) == "deactivated"
    assert glance.glance_status(image("x", status={"status": "deactivated"})) == "active"
    assert glance.glance_status(image("x", status={})) == "queued"


def test_members_and_schemas() -> None:
    obj = image("s", visibility="shared", members=["b", "c"],
                status={"status": "active", "members": [{"member": "b", "status": "accepted"}]})
    assert [(m["member_id"], m["status"]) for m in glance.members(obj)] == [("b", "accepted"), ("c", "pending")]
    assert glance.member_status(obj, "c") == "pending" and glance.member_status(obj, "d") is None
    schemas = glance.schemas()
    assert {s["name"] for s in schemas.values()} == {"image", "images", "member", "members"}
    assert schemas["image"]["additionalProperties"] == {"type": "string"}
    assert None in schemas["image"]["properties"]["disk_format"]["enum"]


def jwt(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{body}.sig"


def test_keystone_credentials_and_token() -> None:
    token = jwt({"sub": "system:serviceaccount:ns1:sa", "exp": 2_000_000_000,
                 "kubernetes.io": {"namespace": "ns1"}})
    by_password = keystone.credential({"auth": {"identity": {"methods": ["password"], "password": {"user": {
        "name": "x", "password": token}}}, "scope": {"project": {"name": "p"}}}})
    assert (by_password.token, by_password.project) == (token, "p")
    by_token = keystone.credential({"auth": {"identity": {"methods": ["token"], "token": {"id": token}}}})
    assert by_token.project is None and keystone.token_namespace(token) == "ns1"
    app = keystone.credential({"auth": {"identity": {"methods": ["application_credential"],
                                                     "application_credential": {"id": "ns2", "secret": token}}}})
    assert (app.token, app.project) == (token, "ns2")
    with pytest.raises(keystone.AuthError):
        keystone.credential({"auth": {"identity": {"methods": ["password"], "password": {"user": {}}}}})
    now = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    body = keystone.token_body(by_password, {"username": "system:serviceaccount:ns1:sa", "uid": "u1"}, "p",
                               ["member", "reader"], "http://h:1", now)["token"]
    assert body["expires_at"] == "2033-05-18T03:33:20.000000Z"  # the JWT's exp
    assert keystone.expires_at("opaque", now) == now + dt.timedelta(hours=1)
    image_eps = next(s for s in body["catalog"] if s["type"] == "image")["endpoints"]
    assert {e["interface"] for e in image_eps} == {"public", "internal", "admin"}
    assert all(e["region"] == e["region_id"] == "RegionOne" and e["url"] == "http://h:1/projects/p/image"
               for e in image_eps)
    assert body["project"] == {"id": "p", "name": "p", "domain": {"id": "default", "name": "Default"}}


def test_list_links_escape_the_query_values() -> None:
    params = [("name", "a b&marker=evil"), ("tag", "x/y"), ("marker", "old")]
    links = glance.list_links(params, [{"id": "id-2"}], more=True)
    assert links["first"] == "/v2/images?name=a+b%26marker%3Devil&tag=x%2Fy"
    assert links["next"] == "/v2/images?name=a+b%26marker%3Devil&tag=x%2Fy&marker=id-2"
    assert glance.list_links([], [{"id": "id-2"}], more=False) == {"first": "/v2/images"}


def test_roles_follow_what_rbac_allows() -> None:
    assert keystone.roles(False, False, admin=True) == ["admin", "member", "reader"]  # in every project
    assert keystone.roles(True, True) == ["member", "reader"]
    assert keystone.roles(False, True) == ["reader"]
    assert keystone.roles(False, False) == []


def test_protected_images_are_not_deleted() -> None:
    with pytest.raises(GlanceError) as e:
        glance.check_delete(image("img", protected=True))
    assert e.value.status == 403 and "protected" in e.value.message
    glance.check_delete(image("img"))


@pytest.mark.parametrize(("action", "status", "code"), [("deactivate", "queued", 403), ("reactivate", "importing", 403),
                                                        ("explode", "active", 404)])
def test_deactivation_only_from_active_or_deactivated(action: str, status: str, code: int) -> None:
    with pytest.raises(GlanceError) as e:
        glance.check_action(action, image("img", status={"status": status}))
    assert e.value.status == code
    assert glance.check_action("deactivate", image("img")) is True
    assert glance.check_action("reactivate", image("img", status={"status": "deactivated"})) is False


def test_upload_rules_in_glances_order() -> None:
    queued = image("img", source={"upload": {}}, diskFormat="raw", containerFormat="bare", status={"status": "queued"})
    assert glance.check_upload(queued, "application/octet-stream", "10") == 10
    for obj, ctype, size, code in ((queued, "text/plain", None, 415),
                                   (image("img", source={"url": "http://x"}, status={"status": "queued"}),
                                    "application/octet-stream", None, 409),
                                   ({**queued, "status": {"status": "active"}}, "application/octet-stream", None, 409),
                                   (queued, "application/octet-stream", "ten", 400)):
        with pytest.raises(GlanceError) as e:
            glance.check_upload(obj, ctype, size)
        assert e.value.status == code


def test_import_methods_and_glances_refusals_of_an_import() -> None:
    assert glance.import_info()["import-methods"]["value"] == ["glance-direct", "web-download", "copy-image"]
    queued = image("img", containerFormat="bare", status={"status": "queued"})
    staged = {**queued, "status": {"status": "uploading"}}
    assert glance.parse_import(staged, {"method": {"name": "glance-direct"}}) == ("glance-direct", None)
    assert glance.parse_import(queued, {"method": {"name": "web-download", "uri": "https://x/disk"}}) == (
        "web-download", "https://x/disk")
    snapshot = image("img", containerFormat="bare", source={"instance": "web"}, status={"status": "queued"})
    for obj, body, code, words in (
            (queued, {}, 400, "method"),
            (queued, {"method": {"name": "glance-download"}}, 400, "not valid"),
            (queued, {"method": {"name": "copy-image"}}, 403, "copy_image"),
            (queued, {"method": {"name": "glance-direct"}}, 409, "staged"),
            (staged, {"method": {"name": "web-download", "uri": "https://x"}}, 409, "'queued'"),
            (queued, {"method": {"name": "web-download", "uri": "file:///etc/passwd"}}, 400, "pass filtering"),
            (queued, {"method": {"name": "web-download"}}, 400, "pass filtering"),
            (snapshot, {"method": {"name": "glance-direct"}}, 409, "cannot be imported again"),
            (image("img", status={"status": "queued"}), {"method": {"name": "glance-direct"}}, 400,
             "container_format")):
        with pytest.raises(GlanceError) as e:
            glance.parse_import(obj, body)
        assert e.value.status == code and words in str(e.value), (body, str(e.value))
    # A stage is an upload to `uploading`: the same rules, said with that word.
    with pytest.raises(GlanceError) as e:
        glance.check_upload(staged, "application/octet-stream", "10", "uploading")
    assert e.value.status == 409 and "uploading to uploading" in str(e.value)


def test_refused_uploads_answer_as_glance() -> None:
    from kova.api.errors import Refusal

    assert glance.upload_refused(Refusal("SizeExceeded", "too big"), "raw").status == 413
    bad = glance.upload_refused(Refusal("InvalidDiskFormat", "qcow2 data"), "raw")
    assert bad.status == 415 and bad.message.startswith("Image disk_format raw does not match the data")
    assert glance.upload_refused(Refusal("ChecksumMismatch", "x"), "raw").status == 400


def test_download_rules() -> None:
    assert glance.check_download(image("img", status={"status": "active", "size": 10})) == 10
    assert glance.check_download(image("img", status={"status": "queued"})) is None
    with pytest.raises(GlanceError) as e:
        glance.check_download(image("img", deactivated=True, status={"status": "active", "size": 10}))
    assert e.value.status == 403


def test_member_rules() -> None:
    shared = image("img", visibility="shared", members=["b"])
    assert glance.added_member(shared, {"member": "c"}) == ("c", ["b", "c"])
    for body, code in (({}, 400), ({"member": ""}, 400), ({"member": "b"}, 409)):
        with pytest.raises(GlanceError) as e:
            glance.added_member(shared, body)
        assert e.value.status == code
    with pytest.raises(GlanceError) as e:
        glance.added_member(image("img"), {"member": "c"})
    assert e.value.status == 403
    assert [m["member_id"] for m in glance.visible_members(shared, "a")] == ["b"]  # the owner sees all
    assert glance.visible_members(shared, "z") == []  # a non-member sees only itself
    answers = glance.answered_members(shared, "b", "b", {"status": "accepted"}, "2026-01-02T00:00:00Z")
    assert answers == [{"member": "b", "status": "accepted", "createdAt": "2026-01-02T00:00:00Z",
                        "updatedAt": "2026-01-02T00:00:00Z"}]
    with pytest.raises(GlanceError) as e:
        glance.answered_members(shared, "b", "a", {"status": "accepted"}, "t")  # only the member answers
    assert e.value.status == 403
    assert glance.removed_member(shared, "b") == []


# ------------------------------------------------------------------------------------------------ limits
TAG_LIMIT = ("The limit has been exceeded on the number of allowed image tags. Attempted: 129, Maximum: 128")
PROPERTY_LIMIT = ("The limit has been exceeded on the number of allowed image properties. Attempted: 129, "
                  "Maximum: 128")


def test_glances_quotas_are_the_crds() -> None:
    from kova.api import crdgen

    def spec(kind: str) -> dict[str, Any]:
        crd = next(c for c in crdgen.all_crds() if c["spec"]["names"]["kind"] == kind)
        return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"])
    image_spec, instance_spec = spec("Image"), spec("Instance")
    assert image_spec["tags"]["maxItems"] == image_spec["members"]["maxItems"] == 128
    assert image_spec["properties"]["maxProperties"] == instance_spec["metadata"]["maxProperties"] == 128
    for field, name in ((image_spec["tags"], "image_tag_quota"), (image_spec["properties"], "image_property_quota"),
                        (image_spec["members"], "image_member_quota"), (instance_spec["metadata"], "metadata_items")):
        assert "128" in field["description"] and name in field["description"]


def test_create_past_glances_quotas_is_413_before_any_write() -> None:
    props = {f"p{n}": "v" for n in range(128)}
    assert len(glance.new_image({"name": "n", **props, "tags": [f"t{n}" for n in range(128)]}, "a")["properties"]) \
        == 128  # the limit itself is allowed
    with pytest.raises(GlanceError) as e:
        glance.new_image({"name": "n", **props, "p128": "v"}, "a")
    assert (e.value.status, e.value.message) == (413, PROPERTY_LIMIT)
    with pytest.raises(GlanceError) as e:
        glance.new_image({"name": "n", "tags": [f"t{n}" for n in range(129)]}, "a")
    assert (e.value.status, e.value.message) == (413, TAG_LIMIT)
    # Duplicated tags are one tag (a set), as the Image keeps them.
    assert len(glance.new_image({"tags": ["t"] * 129}, "a")["tags"]) == 1


def test_patch_past_glances_quotas_is_413_but_shrinking_is_not() -> None:
    v21 = PATCH_TYPES[0]
    full = image("x", properties={f"p{n}": "v" for n in range(128)}, tags=[f"t{n}" for n in range(128)])
    for ops, message in (([{"op": "add", "path": "/p128", "value": "v"}], PROPERTY_LIMIT),
                         ([{"op": "add", "path": "/tags/-", "value": "t128"}], TAG_LIMIT),
                         ([{"op": "replace", "path": "/tags", "value": [f"u{n}" for n in range(129)]}], TAG_LIMIT)):
        with pytest.raises(GlanceError) as e:
            glance.apply_patch(full, ops, v21)
        assert (e.value.status, e.value.message) == (413, message), ops
    # At the limit, a property may change and any may go; a tag already there is no new tag.
    assert glance.apply_patch(full, [{"op": "replace", "path": "/p0", "value": "w"}], v21) == {
        "properties": {**{f"p{n}": None for n in range(128)}, **{f"p{n}": "v" for n in range(1, 128)}, "p0": "w"}}
    assert glance.apply_patch(full, [{"op": "remove", "path": "/p0"}], v21)["properties"]["p0"] is None
    assert glance.apply_patch(full, [{"op": "add", "path": "/tags/-", "value": "t0"}], v21) == {}
    # Swapping one property for a new one stays at the limit: Glance counts the result.
    swapped = glance.apply_patch(full, [{"op": "remove", "path": "/p0"}, {"op": "add", "path": "/q", "value": "v"}],
                                 v21)
    assert swapped["properties"]["q"] == "v" and swapped["properties"]["p0"] is None


def test_put_tag_past_image_tag_quota_is_glances_413() -> None:
    full = image("x", uid="img-1", tags=[f"t{n}" for n in range(128)])
    glance.check_new_tag(full, "t5")  # already there: nothing is added
    glance.check_new_tag(image("y", tags=[f"t{n}" for n in range(127)]), "new")  # the 128th
    with pytest.raises(GlanceError) as e:
        glance.check_new_tag(full, "t128")
    assert (e.value.status, e.value.message) == (413, f"Image tag limit exceeded for image img-1: {TAG_LIMIT}:")
    with pytest.raises(GlanceError) as e:
        glance.check_new_tag(image("z"), "x" * 256)
    assert e.value.status == 400


def test_add_member_past_image_member_quota_is_glances_413() -> None:
    members = [f"p{n}" for n in range(128)]
    assert glance.added_member(image("img", visibility="shared", members=members[:127]), {"member": "p127"}) == (
        "p127", members)
    full = image("img", uid="img-1", visibility="shared", members=members)
    for body in ({"member": "p128"}, {"member": "p0"}):  # Glance counts before it looks for a duplicate
        with pytest.raises(GlanceError) as e:
            glance.added_member(full, body)
        assert (e.value.status, e.value.message) == (
            413, "Image member limit exceeded for image img-1: The limit has been exceeded on the number of "
                 "allowed image members for this image. Attempted: 129, Maximum: 128:")


def test_only_a_project_member_answers_a_share() -> None:
    glance.check_member_role(True)
    with pytest.raises(GlanceError) as e:
        glance.check_member_role(False)  # a reader
    assert (e.value.status, e.value.message) == (403, "You are not authorized to complete modify_member action.")


def test_what_only_an_administrator_may_do() -> None:
    v21 = PATCH_TYPES[0]
    body = {"name": "n", "disk_format": "raw", "visibility": "public", "owner": "b"}
    with pytest.raises(GlanceError) as e:
        glance.image_owner(body, "a", admin=False)
    assert e.value.status == 403
    assert glance.image_owner(body, "a", admin=True) == "b"  # made in the owner's namespace
    with pytest.raises(GlanceError) as e:
        glance.image_owner({"owner": "Not A Namespace"}, "a", admin=True)
    assert e.value.status == 400
    with pytest.raises(GlanceError) as e:
        glance.new_image({**body, "owner": "a"}, "a")
    assert e.value.status == 403 and "publicize_image" in e.value.message
    assert glance.new_image(body, "b", admin=True)["visibility"] == "public"
    obj = image("x", ns="a", visibility="private")
    publicize = [{"op": "replace", "path": "/visibility", "value": "public"}]
    with pytest.raises(GlanceError):
        glance.apply_patch(obj, publicize, v21)
    assert glance.apply_patch(obj, publicize, v21, admin=True) == {"visibility": "public"}
    move = [{"op": "replace", "path": "/owner", "value": "b"}]
    for admin, status in ((False, 403), (True, 409)):  # an image's owner is its namespace: nobody moves it
        with pytest.raises(GlanceError) as e:
            glance.apply_patch(obj, move, v21, admin=admin)
        assert e.value.status == status
    # An administrator lists every project's private and shared images; a project only its own and public ones.
    assert glance.listed(obj, "b", None, "accepted", admin=True)
    assert not glance.listed(obj, "b", None, "accepted")


def test_a_resumed_stage_names_the_bytes_kept_and_the_whole_size() -> None:
    assert glance.parse_resume(None, 0) == (0, None)
    assert glance.parse_resume("bytes 32-99/100", 32) == (32, 100)
    for wrong in ("bytes 0-99/100", "bytes 32-98/100"):  # not from what is kept, or not to the end
        with pytest.raises(GlanceError) as e:
            glance.parse_resume(wrong, 32)
        assert e.value.status == 416 and e.value.headers == {"Content-Range": "bytes */32"}
    with pytest.raises(GlanceError) as e:
        glance.parse_resume("items 1-2", 0)
    assert e.value.status == 400
    queued = image("x", status={"status": "queued"})
    assert glance.stage_doc(queued, 32) == {"image_id": "uid-a-x", "status": "queued", "size": 32, "complete": False}
    arriving = image("x", status={"status": "uploading"})  # a stage under way: not complete before verified
    assert glance.stage_doc(arriving, None)["complete"] is False
    whole = image("x", status={"status": "uploading", "size": 100})
    assert glance.stage_doc(whole, 100) == {"image_id": "uid-a-x", "status": "uploading", "size": 100,
                                            "complete": True}
    with pytest.raises(GlanceError):
        glance.stage_doc(image("x"), 100)  # active: no stage
