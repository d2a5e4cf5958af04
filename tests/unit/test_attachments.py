"""kova.compute.attachments: who holds a volume, what the server plugs in and what it reports; no cluster."""

from __future__ import annotations

from typing import Any

from kova.api.models import AttachmentState, InstanceSpec, InstanceStatus, VolumeWord
from kova.compute import attachments, server, volumes
from tests.unit.test_server import Objects, obj
from tests.unit.test_server import world as server_world
from tests.unit.test_volumes import claim, vol
from tests.unit.test_volumes import world as volume_world

STAMP = "2026-01-01T12:00:00Z"


def inst(name: str, *attached: str, created: str = "2026-01-01T11:00:00Z", status: list[dict[str, Any]] | None = None,
         deleting: bool = False, **extra: Any) -> dict[str, Any]:
    i = obj(name, spec={"flavorRef": "m1", "imageRef": "cirros",
                        "volumeAttachments": [{"volume": v, **extra} for v in attached]},
            status={"volumeAttachments": status or []})
    i["apiVersion"], i["kind"] = "compute.kova.dev/v1alpha1", "Instance"
    i["metadata"]["creationTimestamp"] = created
    if deleting:
        i["metadata"]["deletionTimestamp"] = STAMP
    return i


def holding(v: dict[str, Any], *servers: tuple[str, str]) -> dict[str, Any]:
    v["status"] = {"status": "in-use", "attachments": [{"server": s, "serverUid": f"uid-{s}", "state": state}
                                                       for s, state in servers]}
    return v


def test_a_volume_goes_to_the_oldest_server_that_asks_and_stays_there() -> None:
    older, newer = inst("b", "data", created="2026-01-01T10:00:00Z"), inst("a", "data")
    held = attachments.holders(vol(), [newer, older], STAMP)
    assert [(h.server, h.state) for h in held] == [("b", AttachmentState.attaching)]
    assert attachments.word(held) is VolumeWord.attaching
    # Once b holds it, a server made before b does not take it away.
    oldest = inst("c", "data", created="2026-01-01T09:00:00Z")
    assert [h.server for h in attachments.holders(holding(vol(), ("b", "attaching")), [newer, older, oldest],
                                                  STAMP)] == ["b"]


def test_a_multiattach_volume_goes_to_every_server_that_asks() -> None:
    held = attachments.holders(vol(multiattach=True), [inst("a", "data"), inst("b", "data"), inst("c", "other")],
                               STAMP)
    assert sorted(h.server for h in held) == ["a", "b"]


def test_attached_in_use_then_detaching_until_the_disk_is_unplugged_then_available() -> None:
    plugged = [{"volume": "data", "state": "attached", "device": "/dev/sda", "serial": "uid-data"}]
    held = attachments.holders(holding(vol(), ("a", "attaching")), [inst("a", "data", status=plugged)], STAMP)
    assert [(h.state, h.device, h.attached_at) for h in held] == [(AttachmentState.attached, "/dev/sda", STAMP)]
    assert attachments.word(held) is VolumeWord.in_use
    # Detached in the spec, the disk still plugged: the server keeps it, detaching; another server waits.
    going = [{**plugged[0], "state": "detaching"}]
    held = attachments.holders(holding(vol(), ("a", "attached")), [inst("a", status=going), inst("b", "data")],
                               STAMP)
    assert [(h.server, h.state) for h in held] == [("a", AttachmentState.detaching)]
    assert attachments.word(held) is VolumeWord.detaching
    # Unplugged: the volume goes to the server that waited.
    held = attachments.holders(holding(vol(), ("a", "detaching")), [inst("a"), inst("b", "data")], STAMP)
    assert [(h.server, h.state) for h in held] == [("b", AttachmentState.attaching)]
    assert attachments.holders(holding(vol(), ("a", "detaching")), [inst("a")], STAMP) == []


def test_a_server_being_deleted_or_gone_lets_the_volume_go() -> None:
    assert attachments.holders(holding(vol(), ("a", "attached")), [inst("a", "data", deleting=True)], STAMP) == []
    assert attachments.holders(holding(vol(), ("a", "attached")), [], STAMP) == []
    # A new server of the same name is another server (another uid).
    other = inst("a", "data")
    other["metadata"]["uid"] = "uid-a-2"
    held = attachments.holders(holding(vol(), ("a", "attached")), [other], STAMP)
    assert [(h.server_uid, h.state) for h in held] == [("uid-a-2", AttachmentState.attaching)]


def test_the_volume_plan_reports_its_holders_only_once_it_is_available() -> None:
    dv = obj("volume-data", status={"phase": "Succeeded"})
    p = volumes.plan(volume_world(vol(), datavolumes=Objects(dv), pvcs=Objects(claim(4, 4)),
                                  instances=[inst("a", "data")]))
    assert (p.word, p.reason, p.message) == (VolumeWord.attaching, "Attaching", "attaching to a")
    assert p.fields["attachments"] == [{"server": "a", "serverUid": "uid-a", "state": "attaching"}]
    creating = volumes.plan(volume_world(vol(), instances=[inst("a", "data")]))
    assert creating.word is VolumeWord.creating and "attachments" not in creating.fields


def test_delete_on_termination_makes_the_server_an_owner_of_the_volume() -> None:
    dv = obj("volume-data", status={"phase": "Succeeded"})
    a = inst("a", "data", deleteOnTermination=True)
    p = volumes.plan(volume_world(vol(), datavolumes=Objects(dv), pvcs=Objects(claim(4, 4)), instances=[a]))
    assert p.owners == [{"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "name": "a", "uid": "uid-a"}]
    # Already so: nothing to write. Turned off: the reference goes.
    owned = vol()
    owned["metadata"]["ownerReferences"] = p.owners
    assert volumes.plan(volume_world(owned, datavolumes=Objects(dv), pvcs=Objects(claim(4, 4)),
                                     instances=[a])).owners is None
    kept = volumes.plan(volume_world(owned, datavolumes=Objects(dv), pvcs=Objects(claim(4, 4)),
                                     instances=[inst("a", "data")]))
    assert kept.owners == []
    # The server gone: its reference stays, the garbage collector is about to delete the volume.
    assert volumes.plan(volume_world(owned, datavolumes=Objects(dv), pvcs=Objects(claim(4, 4)),
                                     instances=[])).owners is None


def _wanted(volume: dict[str, Any], **spec: Any) -> attachments.Wanted:
    i = inst("a", "data", **spec)
    return attachments.wanted(i, InstanceSpec.model_validate(i["spec"]), InstanceStatus(), Objects(volume))


def test_a_server_plugs_only_what_its_volume_lists_it_holding() -> None:
    w = _wanted(holding(vol(), ("a", "attaching")), tag="db")
    assert w.grants == [attachments.Grant("data", "volume-data", "uid-data", False, "db")]
    waiting = _wanted(vol())
    assert waiting.grants == [] and waiting.waiting[0].state is AttachmentState.attaching
    missing = attachments.wanted(inst("a", "data"), InstanceSpec.model_validate(inst("a", "data")["spec"]),
                                 InstanceStatus(), Objects())
    assert missing.wait_on == [("Volume", "team-a", "data")] and "does not exist" in str(missing.waiting[0].message)


def test_a_volume_held_by_another_server_is_refused_once_with_novas_words() -> None:
    w = _wanted(holding(vol(), ("b", "attached")))
    assert w.grants == [] and w.waiting[0].state is AttachmentState.refused
    assert "attached to server b and is not multiattach" in str(w.waiting[0].message)
    assert [r for r, _ in w.refused] == ["VolumeAttachRefused"]
    i = inst("a", "data")
    again = attachments.wanted(i, InstanceSpec.model_validate(i["spec"]),
                               InstanceStatus.model_validate({"volumeAttachments": [w.waiting[0].dump()]}),
                               Objects(holding(vol(), ("b", "attached"))))
    assert again.refused == []  # one Event, not one per reconcile
    # Multiattach: it is shared, not refused.
    shared = _wanted(holding(vol(multiattach=True), ("b", "attached")))
    assert shared.waiting[0].state is AttachmentState.attaching and shared.refused == []


def test_the_vm_gets_a_hot_pluggable_scsi_disk_whose_serial_is_the_volumes_uid() -> None:
    spec = {"flavorRef": "m1", "imageRef": "cirros", "volumeAttachments": [{"volume": "data"}]}
    plan = server.plan(server_world(spec, volumes=Objects(holding(vol(multiattach=True), ("web", "attaching")))))
    assert plan.vm is not None
    template = plan.vm["spec"]["template"]["spec"]
    assert template["domain"]["devices"]["disks"][-1] == {"name": "vol-data", "disk": {"bus": "scsi"},
                                                          "serial": "uid-data", "shareable": True}
    assert template["volumes"][-1] == {"name": "vol-data", "persistentVolumeClaim": {
        "claimName": "volume-data", "hotpluggable": True}}
    # Not held: no disk.
    plan = server.plan(server_world(spec, volumes=Objects(vol())))
    assert plan.vm is not None and all(d["name"] != "vol-data" for d in plan.vm["spec"]["template"]["spec"]["domain"][
        "devices"]["disks"])


def test_the_server_reports_the_device_once_virt_handler_says_ready_and_detaching_until_unplugged() -> None:
    w = attachments.Wanted(grants=[attachments.Grant("data", "volume-data", "uid-data")])

    def vmi(*statuses: dict[str, Any]) -> dict[str, Any]:
        return obj("web", status={"phase": "Running", "volumeStatus": [{"name": "root", "target": "vda"}, *statuses]})
    mounted = attachments.observed(w, vmi({"name": "vol-data", "phase": "MountedToPod", "message": "mounted"}),
                                   InstanceStatus())
    assert [(a.state, a.device, a.message) for a in mounted] == [(AttachmentState.attaching, None, "mounted")]
    ready = attachments.observed(w, vmi({"name": "vol-data", "phase": "Ready", "target": "sda"}), InstanceStatus())
    assert [(a.volume, a.state, a.device, a.serial) for a in ready] == [
        ("data", AttachmentState.attached, "/dev/sda", "uid-data")]
    # Stopped: attached still, with the device it had.
    stopped = attachments.observed(w, None, InstanceStatus(volume_attachments=ready))
    assert [(a.state, a.device) for a in stopped] == [(AttachmentState.attached, "/dev/sda")]
    # Detached from the spec, still in the VMI: detaching, until virt-controller drops its status.
    going = attachments.observed(attachments.Wanted(), vmi({"name": "vol-data", "phase": "UnMountedFromPod"}),
                                 InstanceStatus(volume_attachments=ready))
    assert [(a.volume, a.state, a.device) for a in going] == [("data", AttachmentState.detaching, "/dev/sda")]
    assert attachments.observed(attachments.Wanted(), vmi(), InstanceStatus(volume_attachments=ready)) == []


def test_the_attachment_list_refuses_another_namespace_and_twice_the_same_volume() -> None:
    from tests.unit.test_crds import _schema

    items = _schema("Instance")["properties"]["spec"]["properties"]["volumeAttachments"]
    assert items["x-kubernetes-list-type"] == "map" and items["x-kubernetes-list-map-keys"] == ["volume"]
    rules = [r["message"] for r in items["items"]["properties"]["volume"]["x-kubernetes-validations"]]
    assert any("another namespace cannot be attached" in r for r in rules)



def test_a_server_booted_from_a_volume_has_the_volumes_claim_as_root_disk_and_nothing_to_import() -> None:
    from kova.api.models import NovaStatus

    spec = {"flavorRef": "m1", "bootVolume": {"volume": "data", "deleteOnTermination": True}}
    plan = server.plan(server_world(spec, volumes=Objects(holding(vol(), ("web", "attaching")))))
    assert plan.step.word is NovaStatus.build and plan.disks == [] and plan.grow is None
    assert plan.vm is not None
    template = plan.vm["spec"]["template"]["spec"]
    assert template["volumes"][0] == {"name": "root", "persistentVolumeClaim": {"claimName": "volume-data"}}
    assert template["domain"]["devices"]["disks"][0]["bootOrder"] == 1
    step, fields = server.report(plan)
    assert step.status.image_ref == "" and fields["dataVolume"] == "volume-data"
    assert fields["volumeAttachments"] == [{"volume": "data", "state": "attached", "serial": "uid-data",
                                            "deleteOnTermination": True}]
    # Not held yet: it waits for the volume; held by another server: refused, as Nova answers 400.
    waits = server.plan(server_world(spec, volumes=Objects(vol())))
    assert (waits.step.word, waits.step.reason, waits.vm) == (NovaStatus.build, "WaitingForVolume", None)
    taken = server.plan(server_world(spec, volumes=Objects(holding(vol(), ("other", "attached")))))
    assert (taken.step.word, taken.step.reason) == (NovaStatus.error, "VolumeInUse")
    assert taken.step.fault is not None and "attached to server other" in taken.step.fault.message


def test_the_boot_volume_is_held_like_an_attachment_and_goes_with_the_server_if_asked() -> None:
    booted = obj("srv", spec={"flavorRef": "m1", "bootVolume": {"volume": "data", "deleteOnTermination": True}})
    booted["apiVersion"], booted["kind"] = "compute.kova.dev/v1alpha1", "Instance"
    held = attachments.holders(vol(), [booted, inst("a", "data", created="2026-01-01T12:00:00Z")], STAMP)
    assert [h.server for h in held] == ["srv"]
    assert attachments.owners(vol(), held, [booted])[0]["name"] == "srv"
    assert attachments.volumes_named(booted) == {"data"}


def test_a_server_boots_from_an_image_or_a_volume_never_both() -> None:
    from kova.api import crdgen

    crd = next(c for c in crdgen.all_crds() if c["spec"]["names"]["kind"] == "Instance")
    rules = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["x-kubernetes-validations"]
    assert {"rule": "has(self.imageRef) != has(self.bootVolume)",
            "message": "a server boots from imageRef or from bootVolume: exactly one of them"} in rules
