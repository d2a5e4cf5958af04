"""Nova's life cycle as pure decisions (kova.compute.lifecycle): every action's words, steps and refusals,
without a cluster. `settle` plays the handler: it carries out steps the way handlers/instance.py does."""

from __future__ import annotations

import datetime as dt
from dataclasses import replace
from typing import Any

import pytest

from kova.api.conditions import Progress
from kova.api.models import MAX_ACTIONS, FlavorSpec, InstanceSpec, InstanceStatus, NovaStatus
from kova.compute import lifecycle
from kova.compute.lifecycle import Blocked, Children, ImageInfo, Inputs, Step

GiB = 1 << 30
SMALL = FlavorSpec(vcpus=1, ram=512, disk=2)
LARGE = FlavorSpec(vcpus=4, ram=4096, disk=5)
T0 = dt.datetime(2026, 11, 24, 12, 0, tzinfo=dt.UTC)


def image(ref: str = "os", uid: str = "img-1", **kw: Any) -> ImageInfo:
    return ImageInfo(**{"ref": ref, "uid": uid, "sha512": f"sha-{uid}", "size": GiB // 2, "virtual_size": GiB,
                        "min_disk": 0, "min_ram": 0, **kw})


def vm(printable: str = "Running", ready: bool = True) -> dict[str, Any]:
    return {"metadata": {"name": "web"}, "status": {"printableStatus": printable, "ready": ready}}


def vmi(uid: str = "vmi-1", paused: bool = False, phase: str = "Running") -> dict[str, Any]:
    conds = [{"type": "Paused", "status": "True", "reason": "PausedByUser"}] if paused else []
    return {"metadata": {"uid": uid}, "status": {"phase": phase, "conditions": conds}}


def dv(image_uid: str = "img-1", phase: str = "Succeeded") -> dict[str, Any]:
    return {"metadata": {"uid": f"dv-{image_uid}", "annotations": {lifecycle.DISK_IMAGE_ANNOTATION: image_uid}},
            "status": {"phase": phase}}


def pvc(gib: int, owner: str = "dv-img-1", deleting: bool = False) -> dict[str, Any]:
    return {"metadata": {"ownerReferences": [{"kind": "DataVolume", "uid": owner}],
                         **({"deletionTimestamp": "2026-11-24T12:00:00Z"} if deleting else {})},
            "spec": {"resources": {"requests": {"storage": f"{gib}Gi"}}},
            "status": {"capacity": {"storage": f"{gib}Gi"}}}


RUNNING = Children(dv=dv(), pvc=pvc(2), vm=vm(), vmi=vmi())
STOPPED = Children(dv=dv(), pvc=pvc(2), vm=vm("Stopped", False), vmi=None)


def spec(**kw: Any) -> InstanceSpec:
    return InstanceSpec.model_validate({"flavorRef": "small", "imageRef": "os", **kw})


def inputs(sp: InstanceSpec, st: InstanceStatus, children: Children, **kw: Any) -> Inputs:
    flavors = {"small": SMALL, "large": LARGE}
    kw.setdefault("flavor", flavors.get(sp.flavor_ref) or Blocked("WaitingForFlavor", "no such flavor",
                                                                  on=("Flavor", sp.flavor_ref)))
    kw.setdefault("image", image())
    return Inputs(spec=sp, status=st, children=children, now=kw.pop("now", T0), **kw)


def settle(i: Inputs, refuse: str | None = None) -> Step:
    """Decide and carry out until a step has nothing more to do now, as the handler does."""
    for _ in range(8):
        step = lifecycle.decide(i)
        if step.call is not None:
            step = lifecycle.call_refused(step, refuse) if refuse else replace(
                step, status=step.called or step.status)
        i = replace(i, status=InstanceStatus.model_validate({**step.fields(), "status": step.word.value}))
        if not step.again:
            return step
    raise AssertionError("no settled step after 8")


def booted(sp: InstanceSpec | None = None, children: Children = RUNNING) -> InstanceStatus:
    step = settle(inputs(sp or spec(), InstanceStatus(), children))
    assert step.word in (NovaStatus.active, NovaStatus.shutoff, NovaStatus.paused), step
    return step.status


def actions(step: Step) -> list[tuple[str, str | None]]:
    return [(a.action, a.result) for a in step.status.actions]


# ---------------------------------------------------------------------------------------------- boot
def test_boot_says_build_with_one_message_until_active() -> None:
    """Each distinct message would be one more status write: BUILD stays one message until ACTIVE."""
    worlds = [Children(), Children(dv=dv(phase="ImportInProgress"), vm=vm("Provisioning", False)),
              Children(dv=dv(), vm=vm("Starting", False)), Children(dv=dv(), vm=vm("Starting", False), vmi=vmi())]
    st = InstanceStatus()
    steps = []
    for children in worlds:
        step = settle(inputs(spec(), st, children))
        st = step.status
        steps.append((step.word, step.message, step.progress, step.task_state))
    assert len(set(steps)) == 1 and steps[0][0] is NovaStatus.build
    assert steps[0][1] == "importing image os into a 2 GiB root disk, then starting it"
    active = settle(inputs(spec(), st, RUNNING))
    assert (active.word, active.progress, active.running) == (NovaStatus.active, Progress.READY, True)
    assert actions(active) == [("create", "Success")] and active.status.flavor is not None
    assert active.status.flavor.name == "small" and active.status.root_disk_gib == 2


def test_boot_waits_for_the_flavor_and_refuses_a_too_small_one() -> None:
    waiting = settle(inputs(spec(flavorRef="nope"), InstanceStatus(), Children()))
    assert (waiting.word, waiting.progress, waiting.wait_on) == (NovaStatus.build, Progress.RECONCILING,
                                                                ("Flavor", "nope"))
    assert waiting.flavor is None  # nothing is created before the flavor is known
    refused = settle(inputs(spec(), InstanceStatus(), Children(), image=image(min_ram=1024)))
    assert (refused.word, refused.reason, refused.progress) == (NovaStatus.error, "FlavorTooSmall", Progress.STALLED)
    assert refused.fault is not None and "minRam 1024" in refused.fault.message


@pytest.mark.parametrize(("children", "word", "progress"), [
    (Children(dv={"status": {"phase": "Failed", "conditions": [
        {"type": "Running", "reason": "ChecksumMismatch", "message": "bad"}]}}, vm=vm("DataVolumeError", False)),
     NovaStatus.error, Progress.STALLED),
    (Children(dv=dv(), vm=vm("ErrorUnschedulable", False)), NovaStatus.error, Progress.STALLED),
    (Children(dv=dv(phase="WaitForFirstConsumer"), vm=vm("ErrorUnschedulable", False)), NovaStatus.error,
     Progress.STALLED),
    (STOPPED, NovaStatus.shutoff, Progress.READY),
])
def test_nova_status_from_children(children: Children, word: NovaStatus, progress: Progress) -> None:
    st = InstanceStatus.model_validate(booted().dump())
    step = settle(inputs(spec(powerState="Stopped") if word is NovaStatus.shutoff else spec(), st, children))
    assert (step.word, step.progress) == (word, progress)
    if word is NovaStatus.error:
        assert step.fault is not None and step.fault.message


def test_an_unschedulable_disk_importer_is_not_nova_s_no_valid_host() -> None:
    """KubeVirt says ErrorUnschedulable while the root disk's importer pod waits for the scheduler to see the
    claim CDI made a moment before (the scheduler retries it): the server stays in BUILD; once the disk is made,
    an unschedulable launcher is Nova's NoValidHost."""
    building = settle(inputs(spec(), InstanceStatus(), Children(dv=dv(phase="ImportScheduled"),
                                                                vm=vm("ErrorUnschedulable", False))))
    assert (building.word, building.progress, building.fault) == (NovaStatus.build, Progress.RECONCILING, None)
    # Its DataVolume not seen yet (just created): nor is the disk made.
    early = settle(inputs(spec(), InstanceStatus(), Children(vm=vm("ErrorUnschedulable", False))))
    assert (early.word, early.fault) == (NovaStatus.build, None)
    failed = settle(inputs(spec(), building.status, Children(dv=dv(), vm=vm("ErrorUnschedulable", False))))
    assert (failed.word, failed.reason) == (NovaStatus.error, "NoValidHost")
    # A DataVolume collected after its import: the bound claim says the disk is made.
    bound = {"metadata": {"annotations": {}}, "status": {"phase": "Bound"}}  # bound before its import ends
    assert settle(inputs(spec(), building.status, Children(pvc=bound, vm=vm("ErrorUnschedulable", False)))
                  ).word is NovaStatus.build
    imported = {**bound, "metadata": {"annotations": {"cdi.kubevirt.io/storage.pod.phase": "Succeeded"}}}
    collected = settle(inputs(spec(), building.status, Children(pvc=imported, vm=vm("ErrorUnschedulable", False))))
    assert (collected.word, collected.reason) == (NovaStatus.error, "NoValidHost")


def test_requests_made_while_building_wait_for_the_build() -> None:
    building = settle(inputs(spec(), InstanceStatus(), Children(dv=dv(phase="ImportInProgress"))))
    sp = spec(flavorRef="large", rebootRequest={"token": "t"})
    still = settle(inputs(sp, building.status, Children(dv=dv(), vm=vm("Starting", False))))
    assert still.word is NovaStatus.build and still.status.task is None and still.flavor is not None
    assert still.flavor.name == "small"
    built = settle(inputs(sp, still.status, RUNNING))
    assert built.word is NovaStatus.resize  # then served


# ---------------------------------------------------------------------------------------------- power
def test_pause_calls_kubevirt_once_running_and_says_paused() -> None:
    st = booted()
    pausing = lifecycle.decide(inputs(spec(powerState="Paused"), st, RUNNING))
    assert (pausing.word, pausing.task_state, pausing.call) == (NovaStatus.active, "pausing", ("vmi", "pause"))
    paused = settle(inputs(spec(powerState="Paused"), pausing.status, replace(RUNNING, vmi=vmi(paused=True))))
    assert (paused.word, paused.progress, paused.call) == (NovaStatus.paused, Progress.READY, None)
    assert actions(paused)[-1] == ("pause", "Success") and paused.fields()["vmState"] == "paused"
    unpausing = lifecycle.decide(inputs(spec(), paused.status, replace(RUNNING, vmi=vmi(paused=True))))
    assert (unpausing.word, unpausing.task_state, unpausing.call) == (NovaStatus.paused, "unpausing",
                                                                      ("vmi", "unpause"))
    active = settle(inputs(spec(), unpausing.status, RUNNING))
    assert active.word is NovaStatus.active and actions(active)[-1] == ("unpause", "Success")


def test_suspend_halts_the_vm_and_resume_starts_it() -> None:
    st = booted()
    going = settle(inputs(spec(powerState="Suspended"), st, RUNNING))
    assert (going.word, going.task_state, going.running) == (NovaStatus.active, "suspending", False)
    done = settle(inputs(spec(powerState="Suspended"), going.status, STOPPED))
    assert (done.word, done.progress) == (NovaStatus.suspended, Progress.READY) and actions(done)[-1] == (
        "suspend", "Success")
    back = settle(inputs(spec(), done.status, STOPPED))
    assert (back.word, back.task_state, back.running) == (NovaStatus.suspended, "resuming", True)
    assert settle(inputs(spec(), back.status, RUNNING)).status.actions[-1].action == "resume"


# ---------------------------------------------------------------------------------------------- reboot
def test_soft_reboot_writes_reboot_then_asks_kubevirt() -> None:
    st = booted()
    sp = spec(rebootRequest={"type": "SOFT", "token": "1"})
    first = lifecycle.decide(inputs(sp, st, RUNNING))
    assert (first.word, first.task_state, first.again, first.call) == (NovaStatus.reboot, "reboot_started", True,
                                                                       None)
    second = lifecycle.decide(inputs(sp, InstanceStatus.model_validate(first.fields()), RUNNING))
    assert second.call == ("vmi", "softreboot") and second.called is not None and second.called.task is None
    done = settle(inputs(sp, st, RUNNING))
    assert done.word is NovaStatus.active and done.status.requests.reboot == "1"
    assert actions(done)[-1] == ("reboot", "Success")
    # The same token again is no new request.
    assert settle(inputs(sp, done.status, RUNNING)).status.actions == done.status.actions


def test_hard_reboot_waits_for_a_new_vmi() -> None:
    sp = spec(rebootRequest={"type": "HARD", "token": "a"})
    step = settle(inputs(sp, booted(), RUNNING))
    assert (step.word, step.task_state) == (NovaStatus.hard_reboot, "rebooting_hard")
    assert step.status.task is not None and step.status.task.replaces_vmi == "vmi-1"
    same = settle(inputs(sp, step.status, RUNNING))
    assert same.word is NovaStatus.hard_reboot
    done = settle(inputs(sp, same.status, replace(RUNNING, vmi=vmi("vmi-2"))))
    assert done.word is NovaStatus.active and actions(done)[-1] == ("reboot", "Success")


def test_soft_reboot_of_a_stopped_instance_is_refused_and_over() -> None:
    st = booted(spec(powerState="Stopped"), STOPPED)
    step = settle(inputs(spec(powerState="Stopped", rebootRequest={"token": "x"}), st, STOPPED))
    assert (step.word, step.progress) == (NovaStatus.shutoff, Progress.READY)
    assert step.warning is not None and "vm_state stopped" in step.warning[1]
    assert actions(step)[-1] == ("reboot", "Error") and step.status.requests.reboot == "x"


def test_a_refused_kubevirt_action_ends_the_task_with_its_reason() -> None:
    sp = spec(rebootRequest={"type": "SOFT", "token": "1"})
    step = settle(inputs(sp, booted(), RUNNING), refuse="KubeVirt refused softreboot (HTTP 409): not running")
    assert step.status.task is None and step.task_state is None
    assert step.status.actions[-1].result == "Error" and "409" in (step.status.actions[-1].message or "")


# ---------------------------------------------------------------------------------------------- resize
def test_resize_grows_the_disk_restarts_and_waits_for_confirm() -> None:
    st = booted()
    sp = spec(flavorRef="large")
    growing = settle(inputs(sp, st, RUNNING))
    assert (growing.word, growing.task_state, growing.grow_disk) == (NovaStatus.resize, "resize_migrating", 5)
    assert growing.flavor is not None and growing.flavor.name == "small"  # nothing else changes before the disk
    restarting = settle(inputs(sp, growing.status, replace(RUNNING, pvc=pvc(5))))
    assert restarting.word is NovaStatus.resize and restarting.flavor is not None
    assert (restarting.flavor.name, restarting.flavor.vcpus) == ("large", 4)
    verify = settle(inputs(sp, restarting.status, replace(RUNNING, pvc=pvc(5), vmi=vmi("vmi-2"))))
    assert (verify.word, verify.progress, verify.fields()["vmState"]) == (NovaStatus.verify_resize, Progress.READY,
                                                                         "resized")
    assert verify.status.resize is not None and verify.status.resize.old_flavor.name == "small"
    confirmed = settle(inputs(spec(flavorRef="large", resizeRequest={"action": "Confirm", "token": "c1"}),
                              verify.status, replace(RUNNING, pvc=pvc(5), vmi=vmi("vmi-2"))))
    assert (confirmed.word, confirmed.status.resize) == (NovaStatus.active, None)
    assert [a for a, _ in actions(confirmed)] == ["create", "resize", "confirmResize"]
    assert confirmed.status.flavor is not None and confirmed.status.flavor.name == "large"


def _verify(sp: InstanceSpec) -> tuple[Step, Children]:
    world = replace(RUNNING, pvc=pvc(5))
    step = settle(inputs(sp, settle(inputs(sp, booted(), world)).status, world))
    world = replace(world, vmi=vmi("vmi-2"))
    step = settle(inputs(sp, step.status, world))
    assert step.word is NovaStatus.verify_resize
    return step, world


def test_revert_by_setting_the_flavor_back_restores_the_old_flavor() -> None:
    verify, world = _verify(spec(flavorRef="large"))
    reverting = settle(inputs(spec(), verify.status, world))
    assert (reverting.word, reverting.task_state) == (NovaStatus.revert_resize, "resize_reverting")
    assert reverting.flavor is not None and reverting.flavor.name == "small"
    done = settle(inputs(spec(), reverting.status, replace(world, vmi=vmi("vmi-3"))))
    assert done.word is NovaStatus.active and done.status.flavor is not None and done.status.flavor.name == "small"
    assert actions(done)[-1] == ("revertResize", "Success") and done.status.resize is None


def test_revert_by_request_is_not_undone_by_the_unchanged_flavor_ref() -> None:
    verify, world = _verify(spec(flavorRef="large"))
    sp = spec(flavorRef="large", resizeRequest={"action": "Revert", "token": "r"})
    reverting = settle(inputs(sp, verify.status, world))
    done = settle(inputs(sp, reverting.status, replace(world, vmi=vmi("vmi-3"))))
    assert done.word is NovaStatus.active and done.status.flavor is not None and done.status.flavor.name == "small"
    assert done.status.requests.reverted_flavor == "large"
    again = settle(inputs(sp, done.status, replace(world, vmi=vmi("vmi-3"))))
    assert again.word is NovaStatus.active and again.status.task is None


def test_resize_confirms_itself_after_the_window() -> None:
    verify, world = _verify(spec(flavorRef="large"))
    sp = spec(flavorRef="large")
    early = settle(inputs(sp, verify.status, world, confirm_window=60, now=T0 + dt.timedelta(seconds=30)))
    assert early.word is NovaStatus.verify_resize and early.wake_after == pytest.approx(30.5)
    late = settle(inputs(sp, verify.status, world, confirm_window=60, now=T0 + dt.timedelta(seconds=61)))
    assert late.word is NovaStatus.active and late.status.actions[-1].request_id == "auto-confirm"


@pytest.mark.parametrize(("flavor", "reason"), [
    (FlavorSpec(vcpus=1, ram=256, disk=5), "FlavorTooSmall"),
    (FlavorSpec(vcpus=8, ram=8192, disk=1), "ResizeDiskShrink"),
])
def test_resize_refused_before_anything_changes(flavor: FlavorSpec, reason: str) -> None:
    st = booted()
    step = settle(inputs(spec(flavorRef="odd"), st, RUNNING, flavor=flavor, image=image(min_ram=512)))
    assert (step.word, step.progress, step.reason) == (NovaStatus.active, Progress.STALLED, reason)
    assert step.flavor is not None and step.flavor.name == "small" and step.grow_disk is None and step.call is None
    assert actions(step)[-1] == ("resize", "Error") and step.status.task is None and step.warning is not None
    again = settle(inputs(spec(flavorRef="odd"), step.status, RUNNING, flavor=flavor, image=image(min_ram=512)))
    assert again.progress is Progress.STALLED and again.warning is None  # one Event, not one per reconcile
    assert again.status.actions == step.status.actions


def test_resize_of_a_paused_instance_is_refused() -> None:
    st = booted(spec(powerState="Paused"), replace(RUNNING, vmi=vmi(paused=True)))
    step = settle(inputs(spec(flavorRef="large", powerState="Paused"), st, replace(RUNNING, vmi=vmi(paused=True))))
    assert step.progress is Progress.STALLED and "vm_state paused" in step.message


# ---------------------------------------------------------------------------------------------- rebuild
def test_rebuild_stops_replaces_the_disk_and_starts_again() -> None:
    st = booted()
    new = image("os2", "img-2")
    sp = spec(imageRef="os2")
    stopping = settle(inputs(sp, st, RUNNING, image=new))
    assert (stopping.word, stopping.running, stopping.task_state) == (NovaStatus.rebuild, False, "rebuilding")
    deleting = settle(inputs(sp, stopping.status, STOPPED, image=new))
    assert deleting.delete_disk and deleting.disk is None
    creating = settle(inputs(sp, deleting.status, Children(vm=vm("Stopped", False)), image=new))
    assert creating.disk is new and creating.word is NovaStatus.rebuild
    assert creating.status.image_ref == "os"  # still the old image until the new disk runs
    # The old disk's claim still going away (or none yet): the VM is not started on it.
    for claim in (pvc(2, deleting=True), None, pvc(2, owner="dv-img-2", deleting=True)):
        waiting = settle(inputs(sp, creating.status, Children(dv=dv("img-2", "ImportScheduled"), pvc=claim,
                                                              vm=vm("Stopped", False)), image=new))
        assert waiting.word is NovaStatus.rebuild and not waiting.running and waiting.disk is new
    importing = settle(inputs(sp, creating.status, Children(dv=dv("img-2", "ImportInProgress"),
                                                            pvc=pvc(2, owner="dv-img-2"), vm=vm("Stopped", False)),
                              image=new))
    assert importing.word is NovaStatus.rebuild and importing.running  # a WaitForFirstConsumer claim needs a pod
    spawned = settle(inputs(sp, creating.status, replace(RUNNING, dv=dv("img-2"), pvc=pvc(2, owner="dv-img-2")),
                            image=new))
    assert (spawned.word, spawned.status.image_ref) == (NovaStatus.active, "os2")
    assert actions(spawned)[-1] == ("rebuild", "Success") and spawned.status.image_checksum == "sha-img-2"


def test_rebuild_onto_an_image_the_flavor_cannot_hold_is_refused() -> None:
    step = settle(inputs(spec(imageRef="big"), booted(), RUNNING, image=image("big", "img-9", min_disk=50)))
    assert step.progress is Progress.STALLED and step.reason == "RebuildRefused" and step.running
    assert not step.delete_disk and step.status.image_ref == "os"


# ---------------------------------------------------------------------------------------------- the rest
def test_a_snapshot_stops_the_instance_while_its_disk_is_exported() -> None:
    step = settle(inputs(spec(), booted(), RUNNING, snapshots=["snap"]))
    assert (step.word, step.running, step.task_state) == (NovaStatus.active, False, "image_pending_upload")
    uploading = settle(inputs(spec(), booted(), STOPPED, snapshots=["snap"], snapshot_uploading=True))
    assert uploading.task_state == "image_uploading"
    after = settle(inputs(spec(), booted(), STOPPED))
    assert after.running and after.task_state == "powering-on"


def test_a_locked_instance_is_not_stopped_for_a_snapshot() -> None:
    step = settle(inputs(spec(locked=True), booted(), RUNNING, snapshots=["snap"]))
    assert (step.word, step.running) == (NovaStatus.active, True) and step.task_state is None


def test_lock_and_unlock_are_recorded_and_the_history_is_bounded() -> None:
    st = booted()
    for n in range(MAX_ACTIONS + 6):
        st = settle(inputs(spec(locked=n % 2 == 0), st, RUNNING)).status
    assert len(st.actions) == MAX_ACTIONS and st.actions[-1].action == "unlock"
    assert st.actions[0].action in ("lock", "unlock")  # create dropped out first


def test_the_export_link_is_the_raw_url_of_the_root_volume() -> None:
    from kova.compute.snapshot import export_link

    ready = {"status": {"phase": "Ready", "links": {"internal": {"cert": "PEM", "volumes": [
        {"name": "web-root", "formats": [{"format": "gzip", "url": "https://x/web-root/disk.img.gz"},
                                         {"format": "raw", "url": "https://x/web-root/disk.img"}]}]}}}}
    assert export_link(ready, "web-root") == ("https://x/web-root/disk.img", "PEM")
    assert export_link({"status": {"phase": "Pending"}}, "web-root") is None
    assert export_link({}, "web-root") is None


def _importing(restarts: int, running: str, reason: str = "Error", message: str = "", phase: str = "ImportInProgress",
               ) -> dict[str, Any]:
    """A root disk as CDI v1.65.0 reports an import it retries (pkg/controller/datavolume/controller-base.go)."""
    return {"metadata": {"name": "srv-root"}, "status": {"phase": phase, "restartCount": restarts, "conditions": [
        {"type": "Running", "status": running, "reason": reason, "message": message}]}}


def test_an_import_cdi_keeps_retrying_is_a_fault_after_three_restarts_and_keeps_its_words() -> None:
    refused = "Unable to connect to http data source: expected status code 200, got 404. Status: 404 Not Found"
    assert lifecycle.import_failure(_importing(2, "False", message=refused)) is None  # kubelet's back-off: wait
    fault = lifecycle.import_failure(_importing(3, "False", message=refused))
    assert fault == f"root disk import failed (CDI keeps retrying): Error: {refused}"
    # While the next attempt runs, CDI says "Pod is running": the fault already given stays as it was.
    assert lifecycle.import_failure(_importing(3, "True", "Pod is running"), fault) == fault
    assert lifecycle.import_failure(_importing(4, "True", "Pod is running")) == \
        "root disk import failed 4 times (CDI keeps retrying)"
    # An attempt that succeeds ends it; a checksum that does not match is final at once.
    assert lifecycle.import_failure(_importing(5, "False", "Completed", phase="Succeeded"), fault) is None
    final = lifecycle.import_failure(_importing(0, "False", "ChecksumError", "checksum mismatch", phase="Failed"))
    assert final == "root disk import failed: ChecksumError: checksum mismatch"


def test_a_missing_network_is_found_from_the_objects_not_from_kubevirts_message() -> None:
    # What virt-controller v1.7.0 mirrors on the VM when it cannot render the launcher pod
    # (pkg/virt-controller/watch/vmi/vmi.go; tests/integration/test_real_kubevirt.py records it).
    said = "failed to render launch manifest: failed to locate network attachment definition ns/vlan"
    vm_ = {"metadata": {"name": "srv"}, "status": {"printableStatus": "Starting", "conditions": [
        {"type": "Synchronized", "status": "False", "reason": "FailedCreate", "message": said}]}}
    assert lifecycle.launch_failed(vm_) == said
    assert lifecycle._failure(Children(vm=vm_, missing_networks=("ns/vlan",))) == ("NetworkNotFound", said)
    # The same words with every network present: a passing cause (a rebuild's disk being replaced), retried.
    assert lifecycle._failure(Children(vm=vm_)) is None
    assert lifecycle.launch_failed(vm()) is None


def test_a_missing_network_is_not_no_valid_host_while_kubevirt_still_says_unschedulable() -> None:
    """A launcher that cannot be made is never placed: virt-controller's own Unschedulable (said while the root
    disk's claim was missing) stands on the VM long after the disk is made. A missing network is the fault."""
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    said = "failed to render launch manifest: failed to locate network attachment definition ns/nowhere"
    v = vm("ErrorUnschedulable", False)
    v["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "PVC ns/lost-root does not exist, waiting for it to appear"}]
    disk = dv()
    disk["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": "2026-01-01T11:00:00Z"}]
    # Before KubeVirt says why it cannot make the launcher: not a verdict.
    waiting = settle(inputs(spec(), InstanceStatus(), Children(dv=disk, vm=v, missing_networks=("ns/nowhere",)),
                            now=now))
    assert (waiting.word, waiting.fault) == (NovaStatus.build, None)
    v["status"]["conditions"].append({"type": "Synchronized", "status": "False", "reason": "FailedCreate",
                                      "message": said})
    step = settle(inputs(spec(), waiting.status, Children(dv=disk, vm=v, missing_networks=("ns/nowhere",)), now=now))
    assert (step.word, step.reason) == (NovaStatus.error, "NetworkNotFound")
    assert step.fault is not None and "nowhere" in step.fault.message


def test_an_unschedulable_launcher_is_no_valid_host_only_once_the_scheduler_had_time_to_retry() -> None:
    """The scheduler retries an unschedulable pod at once when what it waited for changes (a claim it saw
    unbound a moment before): KubeVirt's ErrorUnschedulable counts as Nova's final NoValidHost only once it
    has stood for UNSCHEDULABLE_GRACE seconds; until then the server builds, and is decided again then."""
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)

    def unschedulable(seconds_ago: float) -> Children:
        since = (now - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")
        v = vm("ErrorUnschedulable", False)
        v["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                      "lastTransitionTime": since,
                                      "message": "0/3 nodes are available: 3 Insufficient memory."}]
        return Children(dv=dv(), vm=v)
    fresh = settle(inputs(spec(), InstanceStatus(), unschedulable(2), now=now))
    assert (fresh.word, fresh.fault) == (NovaStatus.build, None)
    assert fresh.wake_after == pytest.approx(lifecycle.UNSCHEDULABLE_GRACE - 2 + 0.5)
    standing = settle(inputs(spec(), fresh.status, unschedulable(lifecycle.UNSCHEDULABLE_GRACE + 1), now=now))
    assert (standing.word, standing.reason) == (NovaStatus.error, "NoValidHost")
    assert standing.fault is not None and "Insufficient memory" in standing.fault.message



def test_kubevirts_own_claim_not_found_counts_from_when_the_disk_was_made() -> None:
    """virt-controller writes PodScheduled False/Unschedulable itself, without a time, while the claim does not
    exist, and keeps it while the launcher made later stays unplaced: it counts from the disk's Ready."""
    now = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
    v = vm("ErrorUnschedulable", False)
    v["status"]["conditions"] = [{"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                                  "message": "PVC ns/web-root does not exist, waiting for it to appear"}]

    def made(seconds_ago: float) -> Children:
        disk = dv()
        disk["status"]["conditions"] = [{"type": "Ready", "status": "True", "lastTransitionTime": (
            now - dt.timedelta(seconds=seconds_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")}]
        return Children(dv=disk, vm=v)
    step = settle(inputs(spec(), InstanceStatus(), made(1), now=now))
    assert (step.word, step.fault) == (NovaStatus.build, None)
    assert step.wake_after == pytest.approx(lifecycle.UNSCHEDULABLE_GRACE - 1 + 0.5)
    step = settle(inputs(spec(), step.status, made(lifecycle.UNSCHEDULABLE_GRACE + 1), now=now))
    assert (step.word, step.reason) == (NovaStatus.error, "NoValidHost")
