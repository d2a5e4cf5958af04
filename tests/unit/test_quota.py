"""Quotas, pure: Nova's count of a namespace's Instances and its refusals, Glance's usage and 413s, the
ResourceQuota and status Kova keeps, and the limits from Helm values and a Quota's spec."""

from __future__ import annotations

from typing import Any

import pytest

from kova.adapters import env
from kova.adapters.runtime import quota_defaults
from kova.api.models import QUOTA_DEFAULTS, NovaStatus, effective_limits
from kova.compute import quota, server
from kova.compute.lifecycle import Blocked
from kova.image import quota as glance
from tests.unit.test_server import Objects, obj, world

FLAVORS = Objects(obj("small", None, spec={"vcpus": 2, "ram": 2048}), obj("big", None, spec={"vcpus": 4, "ram": 8192}),
                  cluster=True)
LIMITS = {**QUOTA_DEFAULTS}  # instances 10, cores 20, ram 51200, server_group_members 10


def inst(name: str, flavor: str = "small", *, at: str = "2026-01-01T10:00:00Z", booted: dict[str, Any] | None = None,
         group: str | None = None, status: dict[str, Any] | None = None, deleting: bool = False) -> dict[str, Any]:
    body = obj(name, spec={"flavorRef": flavor, "imageRef": "os", **({"serverGroup": group} if group else {})},
               status=status or ({"flavor": booted} if booted else {}))
    body["metadata"]["creationTimestamp"] = at
    if deleting:
        body["metadata"]["deletionTimestamp"] = at
    return body


def running(name: str, vcpus: int, ram: int, **kw: Any) -> dict[str, Any]:
    return inst(name, booted={"name": "x", "vcpus": vcpus, "ram": ram, "disk": 1}, **kw)


def test_novas_words_for_a_server_over_quota() -> None:
    refusal = quota.over_quota("cores", 4, 18, 20)
    assert refusal.message == "Quota exceeded for cores: Requested 4, but already used 18 of 20 cores"
    assert (refusal.code, refusal.reason) == (403, "QuotaExceeded")


def test_booted_instances_hold_their_applied_flavor_and_the_rest_fit_oldest_first() -> None:
    # 18 cores booted (whatever flavor their spec names now); two new ones of 2 cores: the older one fits.
    booted = [running(f"b{i}", 6, 1024, at="2026-01-01T09:00:00Z") for i in range(3)]
    late, early = inst("late", at="2026-01-01T10:00:02Z"), inst("early", at="2026-01-01T10:00:01Z")
    verdict = quota.decide([*booted, late, early], FLAVORS, LIMITS)
    assert verdict.refused == {"late": quota.over_quota("cores", 2, 20, 20)}
    assert (verdict.usage.instances, verdict.usage.cores, verdict.usage.ram) == (4, 20, 3 * 1024 + 2048)
    # Whichever of the two reconciles first, each gets the same answer: the decision is the namespace's.
    assert quota.check_instance(late, [*booted, early], FLAVORS, LIMITS) == quota.over_quota("cores", 2, 20, 20)
    assert quota.check_instance(early, [*booted, late], FLAVORS, LIMITS) is None


def test_instances_then_cores_then_ram_in_novas_order_and_unlimited_is_minus_one() -> None:
    ten = [running(f"b{i}", 1, 128) for i in range(10)]
    assert quota.check_instance(inst("n"), ten, FLAVORS, LIMITS) == quota.over_quota("instances", 1, 10, 10)
    assert quota.check_instance(inst("n"), ten, FLAVORS, {**LIMITS, "instances": -1}) is None
    ram = {**LIMITS, "ram": 8192}
    assert quota.check_instance(inst("n", "big"), [running("b", 1, 1024)], FLAVORS, ram) == \
        quota.over_quota("ram", 8192, 1024, 8192)


def test_a_booted_instance_is_never_over_quota_even_when_the_limit_is_lowered() -> None:
    assert quota.check_instance(running("a", 8, 1024), [running("b", 8, 1024)], FLAVORS, {**LIMITS, "cores": 4}) is None


def test_a_refusal_is_final_and_holds_nothing_and_deleting_ones_count_for_nothing() -> None:
    refused = inst("r", status={"fault": {"code": 403, "message": "Quota exceeded for cores: ..."},
                                      "conditions": [{"type": "Ready", "status": "False", "reason": "QuotaExceeded"}]})
    gone = running("gone", 16, 1024, deleting=True)
    verdict = quota.decide([refused, gone, running("a", 18, 1024)], FLAVORS, LIMITS)
    # r would fit now (18 + 2 = 20) but stays refused, holding nothing; the deleting one is not counted.
    assert verdict.refused["r"].message == "Quota exceeded for cores: ..."
    assert (verdict.usage.instances, verdict.usage.cores) == (1, 18)
    assert quota.check_instance(inst("n"), [refused, gone, running("a", 18, 1024)], FLAVORS, LIMITS) is None


def test_a_missing_flavor_counts_as_nothing_yet() -> None:
    assert quota.demand(inst("n", "nope"), FLAVORS) == (0, 0)


def test_a_full_server_group_is_novas_too_many_servers_in_group() -> None:
    members = [running(f"m{i}", 1, 128, group="db") for i in range(2)]
    limits = {**LIMITS, "server_group_members": 2}
    assert quota.check_instance(inst("n", group="db"), members, FLAVORS, limits) == quota.GROUP_FULL
    assert quota.GROUP_FULL.message == "Quota exceeded, too many servers in group"
    assert quota.check_instance(inst("n", group="web"), members, FLAVORS, limits) is None


def test_an_instance_over_quota_is_error_with_novas_fault_and_nothing_is_made() -> None:
    refusal = quota.over_quota("cores", 1, 20, 20)
    plan = server.plan(world(quota=Blocked(refusal.reason, refusal.message, refused=True, code=403)))
    assert plan.step.word is NovaStatus.error and plan.step.reason == "QuotaExceeded"
    assert plan.step.fault is not None and (plan.step.fault.code, plan.step.fault.message) == (403, refusal.message)
    assert plan.vm is None and plan.disks == [] and not plan.default_group
    # A booted one is not asked again (status.flavor is what it holds).
    booted = server.plan(world(status={"flavor": {"name": "m1", "vcpus": 1, "ram": 512, "disk": 2},
                                       "imageRef": "cirros"},
                               quota=Blocked(refusal.reason, refusal.message, refused=True, code=403)))
    assert booted.step.word is not NovaStatus.error


def test_the_resource_quota_counts_what_the_api_server_can_and_leaves_out_unlimited() -> None:
    owner = {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Quota",
             "metadata": {"name": "default", "namespace": "team-a", "uid": "u1"}}
    rq = quota.resource_quota(owner, {**LIMITS, "key_pairs": -1}, {"app.kubernetes.io/managed-by": "kova"})
    assert rq["metadata"]["name"] == "kova" and rq["metadata"]["ownerReferences"][0]["uid"] == "u1"
    assert rq["spec"]["hard"] == {"count/instances.compute.kova.dev": "10", "count/servergroups.compute.kova.dev": "10",
                                  "count/images.image.kova.dev": "100", "count/volumes.compute.kova.dev": "10"}


def test_status_items_and_summary() -> None:
    items = quota.items({"instances": 10, "cores": -1}, {"instances": 3, "cores": 7})
    assert items == [{"name": "instances", "limit": 10, "inUse": 3, "usage": "3/10"},
                     {"name": "cores", "limit": -1, "inUse": 7, "usage": "7/unlimited"}]
    assert quota.summary({"instances": 2}, {"instances": 3})[0]
    assert not quota.summary({"instances": 3}, {"instances": 3})[0]


# ---------------------------------------------------------------------------------------------- Glance
MiB = 1 << 20


def image(name: str, status: str, size: int = 0, deleting: bool = False) -> dict[str, Any]:
    body = obj(name, status={"status": status, "size": size})
    if deleting:
        body["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    return body


def test_glance_usage_counts_data_held_uploads_under_way_and_images() -> None:
    images = [image("a", "active", 3 * MiB + 5), image("b", "deactivated", MiB), image("c", "saving"),
              image("d", "importing"), image("e", "queued"), image("f", "active", 9 * MiB, deleting=True)]
    used = glance.usage(images)
    assert used.counts() == {"image_count_total": 5, "image_size_total": 4, "image_stage_total": 0,
                             "image_count_uploading": 2}
    assert glance.usage(images, leave_out="uid-c").uploading == 1
    # Staged for an interoperable import (uploading): counted as under way, its bytes in image_stage_total.
    staged = glance.usage([*images, image("g", "uploading", 5 * MiB)])
    assert staged.counts()["image_stage_total"] == 5 and staged.counts()["image_count_uploading"] == 3
    assert staged.counts()["image_size_total"] == 4


def test_a_stage_over_image_stage_total_gets_glances_413() -> None:
    used = glance.Usage(images=2, bytes=1 * MiB, staged=8 * MiB)
    limits = {"image_size_total": 100, "image_stage_total": 10, "image_count_uploading": 10}
    glance.check_upload("team-a", used, limits, 2 * MiB, staging=True)  # fits exactly
    glance.check_upload("team-a", used, limits, 50 * MiB)  # an upload is held to image_size_total
    with pytest.raises(glance.OverLimit) as e:
        glance.check_upload("team-a", used, limits, 3 * MiB, staging=True)
    assert "image_stage_total is over limit of 10 due to current usage 8 and delta 3" in str(e.value)


def test_an_upload_over_image_size_total_gets_glances_413() -> None:
    used = glance.Usage(images=2, bytes=8 * MiB)
    limits = {"image_size_total": 10, "image_count_uploading": 10}
    glance.check_upload("team-a", used, limits, 2 * MiB)  # fits exactly
    with pytest.raises(glance.OverLimit) as e:
        glance.check_upload("team-a", used, limits, 2 * MiB + 1)
    assert e.value.code == 413
    assert str(e.value).endswith("Project team-a is over a limit for [Resource image_size_total is over limit of 10 "
                                 "due to current usage 8 and delta 3]")
    assert str(e.value).startswith("The request returned a 413 Request Entity Too Large.")
    assert glance.room(used, 10) == 2 * MiB and glance.room(used, -1) is None
    with pytest.raises(glance.OverLimit):  # full: even an upload of unknown size cannot start
        glance.check_upload("team-a", glance.Usage(bytes=10 * MiB), limits, None)


def test_too_many_uploads_at_once_is_image_count_uploading() -> None:
    with pytest.raises(glance.OverLimit, match=r"Resource image_count_uploading is over limit of 1 due to current "
                                               r"usage 1 and delta 1"):
        glance.check_upload("team-a", glance.Usage(uploading=1), {"image_count_uploading": 1}, None)
    glance.check_upload("team-a", glance.Usage(uploading=1), {"image_count_uploading": -1}, None)


# ---------------------------------------------------------------------------------------------- limits
def test_limits_are_a_quotas_spec_over_the_helm_defaults() -> None:
    defaults = quota_defaults({"KOVA_QUOTA_CORES": "8", "KOVA_QUOTA_IMAGE_SIZE_TOTAL": "-1"})
    assert defaults == {**QUOTA_DEFAULTS, "cores": 8, "image_size_total": -1}
    assert QUOTA_DEFAULTS["instances"] == 10 and QUOTA_DEFAULTS["ram"] == 51200
    limits = effective_limits(defaults, {"instances": 3, "keyPairs": -1})
    assert (limits["instances"], limits["key_pairs"], limits["cores"]) == (3, -1, 8)
    with pytest.raises(env.BadSetting, match="KOVA_QUOTA_RAM=-2 is below its minimum of -1"):
        quota_defaults({"KOVA_QUOTA_RAM": "-2"})


def test_every_instance_counts_as_one_but_only_admitted_ones_hold_cores() -> None:
    refused = inst("r", status={"conditions": [{"type": "Ready", "status": "False", "reason": "QuotaExceeded"}]})
    instances = [running("a", 18, 1024), refused, running("gone", 1, 1, deleting=True)]
    used = quota.counts(instances, 2, 1, quota.decide(instances, FLAVORS, LIMITS).usage)
    assert used == {"instances": 2, "cores": 18, "ram": 1024, "key_pairs": 2, "server_groups": 1,
                    "server_group_members": 0}


def test_a_web_download_waits_for_an_upload_slot_and_is_capped_to_what_the_quota_leaves() -> None:
    images = [image("a", "active", 9 * MiB), image("b", "importing"), obj("me", status={"status": "queued"})]
    busy = glance.gate("team-a", images, "uid-me", {"image_count_uploading": 1, "image_size_total": 10})
    assert busy.wait == ("waiting: 1 uploads and imports are under way in this project, its quota "
                         "image_count_uploading is 1")
    free = glance.gate("team-a", images, "uid-me", {"image_count_uploading": 2, "image_size_total": 10})
    assert free.wait is None and free.size_cap(64 * MiB) == MiB and free.size_cap(MiB // 2) == MiB // 2
    over = free.exceeded(64 * MiB, "SizeExceeded")
    assert over is not None and str(over).endswith("[Resource image_size_total is over limit of 10 due to current "
                                                   "usage 9 and delta 2]")
    assert free.exceeded(64 * MiB, "ChecksumMismatch") is None and free.exceeded(MiB // 2, "SizeExceeded") is None
    unlimited = glance.gate("team-a", images, "uid-me", {"image_count_uploading": -1, "image_size_total": -1})
    assert unlimited.wait is None and unlimited.size_cap(64 * MiB) == 64 * MiB


def test_a_resize_is_checked_for_its_growth_only_before_it_starts_and_holds_the_larger_flavor_meanwhile() -> None:
    me = running("me", 2, 2048)
    me["spec"]["flavorRef"] = "big"
    me["status"]["flavor"]["name"] = "small"
    others = [running("a", 16, 1024)]
    # 18 cores held, +2 to grow from small (2) to big (4): 20 fits; one core less allowed does not.
    assert quota.check_resize(me, [*others, me], FLAVORS, LIMITS) is None
    assert quota.check_resize(me, [*others, me], FLAVORS, {**LIMITS, "cores": 19}) == \
        quota.over_quota("cores", 2, 18, 19)
    # Started (a task or a resize under way), or shrinking, or the same flavor: not asked.
    assert quota.check_resize({**me, "status": {**me["status"], "task": {"action": "resize"}}}, [me], FLAVORS,
                              {**LIMITS, "cores": 1}) is None
    same = running("same", 2, 2048)
    same["status"]["flavor"]["name"] = "small"
    assert quota.check_resize(same, [same], FLAVORS, {**LIMITS, "cores": 1}) is None
    # During the resize the larger of the old and new flavor is held (a revert must find its room).
    resizing = running("r", 4, 8192)
    resizing["status"]["resize"] = {"oldFlavor": {"name": "x", "vcpus": 8, "ram": 1024, "disk": 1},
                                    "newFlavor": "big"}
    assert quota.demand(resizing, FLAVORS) == (8, 8192)


def test_a_resize_over_quota_is_refused_and_the_server_keeps_running_as_it_was() -> None:
    refusal = quota.over_quota("cores", 2, 20, 20)
    applied = {"name": "m1", "vcpus": 1, "ram": 512, "disk": 2}
    plan = server.plan(world(spec={"flavorRef": "m2", "imageRef": "cirros"},
                             status={"flavor": applied, "imageRef": "cirros", "status": "ACTIVE",
                                     "requests": {"power": "Running"},
                                     "actions": [{"action": "create", "requestId": "cirros",
                                                  "startTime": "2026-01-01T11:00:00Z",
                                                  "finishTime": "2026-01-01T11:00:01Z", "result": "Success"}]},
                             quota=Blocked(refusal.reason, refusal.message, refused=True, code=403)))
    assert plan.step.reason == "QuotaExceeded" and plan.step.message == refusal.message
    assert plan.step.warning == ("QuotaExceeded", refusal.message)
    assert plan.step.status.actions[-1].action == "resize" and plan.step.status.actions[-1].result == "Error"
    assert plan.step.status.flavor is not None and plan.step.status.flavor.name == "m1"


def test_nothing_to_decide_only_when_every_limit_an_instance_adds_is_unlimited() -> None:
    free = {"instances": -1, "cores": -1, "ram": -1, "server_group_members": -1, "key_pairs": 100}
    assert quota.unlimited(free)
    for name in ("instances", "cores", "ram", "server_group_members"):
        assert not quota.unlimited({**free, name: 10}), name
