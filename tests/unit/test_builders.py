"""Pure builders: children, visibility rules, status words; no cluster."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from kova.api.conditions import Progress, set_condition, summarize
from kova.api.models import FlavorSpec, ImageSpec, InstanceSpec
from kova.compute import children, flavors
from kova.image import rules
from kova.image.blob import Blob

INSTANCE: dict[str, Any] = {
    "apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance",
    "metadata": {"name": "web", "namespace": "team-a", "uid": "u-1", "generation": 3},
    "spec": {"flavorRef": "m1.small", "imageRef": "cirros"},
}


def flavor(**kw: Any) -> FlavorSpec:
    return FlavorSpec.model_validate({"vcpus": 2, "ram": 2048, "disk": 10, **kw})


def image(**kw: Any) -> ImageSpec:
    return ImageSpec.model_validate({"diskFormat": "qcow2", "source": {"url": "http://x/img"}, **kw})


@pytest.mark.parametrize(("visibility", "members", "namespace", "visible"), [
    ("private", [], "team-a", True),
    ("private", [], "team-b", False),
    ("shared", ["team-b"], "team-b", True),
    ("shared", ["team-c"], "team-b", False),
    ("public", [], "team-b", True),
    ("community", [], "team-b", True),
])
def test_image_visibility(visibility: str, members: list[str], namespace: str, visible: bool) -> None:
    spec = image(visibility=visibility, members=members)
    assert rules.image_visible_to(spec, "team-a", namespace) is visible


def test_image_ref_may_name_another_namespace() -> None:
    assert rules.parse_image_ref("cirros", "team-a") == ("team-a", "cirros")
    assert rules.parse_image_ref("library/cirros", "team-a") == ("library", "cirros")


def test_private_flavor_needs_access() -> None:
    assert flavors.flavor_usable_in(flavor(), "x")
    assert not flavors.flavor_usable_in(flavor(public=False, access=["y"]), "x")
    assert flavors.flavor_usable_in(flavor(public=False, access=["x"]), "x")


def test_data_volume_imports_by_presigned_url_with_checksum() -> None:
    dv = children.build_data_volume(INSTANCE, "http://s3/bucket/images/u?X-Amz-Signature=s", "ab" * 64, 12)
    assert dv["metadata"]["name"] == "web-root" and dv["metadata"]["namespace"] == "team-a"
    assert dv["spec"]["source"]["http"] == {"url": "http://s3/bucket/images/u?X-Amz-Signature=s",
                                            "checksum": "sha512:" + "ab" * 64}
    assert dv["spec"]["storage"]["resources"]["requests"]["storage"] == "12Gi"
    owner = dv["metadata"]["ownerReferences"][0]
    assert owner == {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "name": "web", "uid": "u-1",
                     "controller": True, "blockOwnerDeletion": True}


def test_virtual_machine_from_flavor() -> None:
    spec = InstanceSpec.model_validate({**INSTANCE["spec"], "userData": "#cloud-config\n",
                                        "metadata": {"role": "web", "owner": "team-a"}})
    fl = flavor(ephemeral=5, swap=512, extraSpecs={"hw:cpu_policy": "dedicated", "hw:mem_page_size": "1GB",
                                                    "kova:node_selector:zone": "az1"})
    vm = children.build_virtual_machine(INSTANCE, spec, fl, running=True)
    tpl = vm["spec"]["template"]["spec"]
    assert vm["spec"]["runStrategy"] == "Always"
    assert tpl["domain"]["cpu"] == {"cores": 2, "sockets": 1, "threads": 1, "dedicatedCpuPlacement": True}
    assert tpl["domain"]["memory"] == {"guest": "2048Mi", "hugepages": {"pageSize": "1Gi"}}
    assert tpl["domain"]["resources"]["requests"] == {"memory": "2048Mi", "cpu": "2"}
    assert tpl["nodeSelector"] == {"zone": "az1"}
    volumes = {v["name"]: v for v in tpl["volumes"]}
    assert volumes["root"] == {"name": "root", "dataVolume": {"name": "web-root"}}
    assert volumes["ephemeral"]["emptyDisk"] == {"capacity": "5Gi"}
    assert volumes["swap"]["emptyDisk"] == {"capacity": "512Mi"}
    assert volumes["cloudinit"]["cloudInitNoCloud"] == {"userData": "#cloud-config\n"}
    assert [d["name"] for d in tpl["domain"]["devices"]["disks"]] == ["root", "ephemeral", "swap", "cloudinit"]
    meta = '{"owner": "team-a", "role": "web"}'
    assert vm["metadata"]["annotations"] == {"compute.kova.dev/server-metadata": meta}
    assert vm["spec"]["template"]["metadata"]["annotations"] == {"compute.kova.dev/server-metadata": meta}


def test_a_vm_not_wanted_running_is_halted() -> None:
    spec = InstanceSpec.model_validate(INSTANCE["spec"])
    assert children.build_virtual_machine(INSTANCE, spec, flavor(), running=False)["spec"]["runStrategy"] == "Halted"


def test_image_status_from_store_record() -> None:
    blob = Blob(size=10, md5="m", sha512="s", sha256=None, disk_format="qcow2", virtual_size=100, source="u")
    view = rules.observe_image(blob, "s3://b/images/u", {}, False, 0, None, None)
    assert view.status.value == "active" and view.fields["osHashValue"] == "s" and view.fields["checksum"] == "m"
    killed = rules.observe_image(None, "", {"status": "killed", "message": "bad hash", "conditions": [
        {"type": "Ready", "status": "False", "reason": "ChecksumMismatch"}]}, False, 0, None, None)
    assert (killed.status.value, killed.reason, killed.progress) == ("killed", "ChecksumMismatch", Progress.STALLED)
    importing = rules.observe_image(None, "", {}, True, 50, 200, None)
    assert importing.status.value == "importing" and importing.fields["progress"] == "20%"  # 10% steps
    # Between two steps nothing a user sees changes, so nothing is written.
    assert rules.observe_image(None, "", {}, True, 59, 200, None) == importing
    assert rules.observe_image(None, "", {}, True, 60, 200, None).fields["progress"] == "30%"
    waiting = rules.observe_image(None, "", {}, False, 0, None, None, queued_message="waiting for a slot")
    assert (waiting.status.value, waiting.message) == ("queued", "waiting for a slot")
    assert rules.observe_image(None, "", {}, False, 0, None, None).status.value == "queued"
    off = rules.observe_image(blob, "s3://b/images/u", {}, False, 0, None, None, deactivated=True)
    assert (off.status.value, off.progress, off.fields["osHashValue"]) == ("deactivated", Progress.READY, "s")
    # Staged through the image API (the API says `uploading`): the operator keeps it until the import.
    staged = rules.observe_image(None, "", {"status": "uploading", "message": "10 bytes staged"}, False, 0, None,
                                 None, upload_id="u")
    assert (staged.status.value, staged.message, staged.progress) == ("uploading", "10 bytes staged",
                                                                      Progress.RECONCILING)


def test_spec_stores_plan_copies_then_removals_never_the_last_copy() -> None:
    order = ["file", "nfs", "s3"]
    assert rules.copy_plan(None, ["s3"], [], order) is None  # unset: the data stays where it arrived
    plan = rules.copy_plan(["s3", "file"], ["s3"], [], order)
    assert plan == rules.CopyPlan(copy=["file"], drop=[], failed=[])
    # Glance's import into `file` only, staged in s3: s3 is emptied once file holds it, and not before.
    assert rules.copy_plan(["file"], ["s3"], [], order) == rules.CopyPlan(copy=["file"], drop=[], failed=[])
    assert rules.copy_plan(["file"], ["file", "s3"], [], order) == rules.CopyPlan(copy=[], drop=["s3"], failed=[])
    # A failed copy is not tried again until it is asked for again; one that holds the data is no failure.
    assert rules.copy_plan(["file", "nfs"], ["s3"], ["nfs"], order) == rules.CopyPlan(
        copy=["file"], drop=[], failed=["nfs"])
    assert rules.copy_plan(["nfs"], ["nfs"], ["nfs"], order) == rules.CopyPlan(copy=[], drop=[], failed=[])
    # A store that is not configured (any more) is left out.
    assert rules.copy_plan(["tape"], ["s3"], [], order) == rules.CopyPlan(copy=[], drop=[], failed=[])


def test_a_store_that_does_not_answer_is_no_loss() -> None:
    """An active image whose only listed store is down stays active (the store still holds what it held),
    and says why its status is not renewed; a store that answers without the record no longer lists it."""
    active = {"status": "active", "stores": ["file"], "size": 1}
    view = rules.observe_image(None, "", active, False, 0, None, None, unanswered=["file"])
    assert (view.status.value, view.progress, view.reason, view.fields) == (
        "active", Progress.READY, "StoreUnreachable", {})
    assert "store file did not answer" in view.message
    assert rules.observe_image(None, "", active, False, 0, None, None).status.value == "queued"
    off = rules.observe_image(None, "", active, False, 0, None, None, deactivated=True, unanswered=["file"])
    assert off.status.value == "deactivated"
    # An image that never had data is not made active by an outage.
    assert rules.observe_image(None, "", {"status": "queued"}, False, 0, None, None,
                               unanswered=["file"]).status.value == "queued"
    order = ["s3", "file", "nfs"]
    assert rules.held_stores(["s3"], {"file": "down"}, ["s3", "file"], order) == ["s3", "file"]
    assert rules.held_stores(["s3"], {}, ["s3", "file"], order) == ["s3"]  # file answered: no record there
    assert rules.held_stores([], {"nfs": "down"}, ["s3"], order) == []  # never listed: not claimed


def test_condition_transition_time_moves_only_on_flip() -> None:
    c1 = set_condition([], "Ready", False, "Spawning", "a", 1, "t1")
    c2 = set_condition(c1, "Ready", False, "Spawning", "b", 2, "t2")
    ready = next(c for c in c2 if c["type"] == "Ready")
    assert ready == {"type": "Ready", "status": "False", "reason": "Spawning", "message": "b",
                     "lastTransitionTime": "t1", "observedGeneration": 2}
    c3 = set_condition(c2, "Ready", True, "Active", "", 2, "t3")
    assert next(c for c in c3 if c["type"] == "Ready")["lastTransitionTime"] == "t3"


def test_summarize_sets_kstatus_triplet() -> None:
    stalled = summarize([], Progress.STALLED, "ImageKilled", "no", 4, "t")
    assert {c["type"]: c["status"] for c in stalled} == {"Ready": "False", "Reconciling": "False",
                                                         "Stalled": "True"}
    ready = summarize(stalled, Progress.READY, "Active", "ok", 5, "t2")
    assert {c["type"]: c["status"] for c in ready} == {"Ready": "True", "Reconciling": "False", "Stalled": "False"}
    assert all(c["observedGeneration"] == 5 for c in ready)


def test_image_link_expired_only_for_an_old_import_cdi_keeps_retrying() -> None:
    # What CDI v1.65.0 writes for an importer that got 403 (pkg/controller/datavolume/controller-base.go,
    # from the PVC annotations pkg/controller/import-controller.go sets): still ImportInProgress, restarted.
    def dv(phase: str, restarts: int, created: str) -> dict[str, Any]:
        message = "Unable to connect to http data source: expected status code 200, got 403. Status: 403 Forbidden"
        return {"metadata": {"creationTimestamp": created},
                "status": {"phase": phase, "restartCount": restarts, "conditions": [
                    {"type": "Running", "status": "False", "reason": "Error", "message": message}]}}

    now = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    ttl = dt.timedelta(hours=1)
    assert children.image_link_expired(dv("ImportInProgress", 1, "2026-01-01T10:59:00Z"), ttl, now)
    assert not children.image_link_expired(dv("ImportInProgress", 5, "2026-01-01T11:30:00Z"), ttl, now)  # valid
    assert not children.image_link_expired(dv("ImportInProgress", 0, "2026-01-01T10:00:00Z"), ttl, now)  # no try
    assert not children.image_link_expired(dv("Failed", 0, "2026-01-01T10:00:00Z"), ttl, now)  # checksum: final
    assert not children.image_link_expired(dv("Succeeded", 2, "2026-01-01T10:00:00Z"), ttl, now)
