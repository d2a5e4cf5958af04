"""Volumes (Cinder's model on claims) through kubectl: made blank, from an image and from another volume by
the real CDI, extended, attached to servers (the real virt-controller's declarative hotplug, the simulated
virt-handler's phases) and detached, and the refusals of the API server and of Kova."""

from __future__ import annotations

import io
import json
import tempfile
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, condition, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance
from tests.integration.test_isolation import Tenant, install_tenant_roles
from tests.integration.test_placement import os_image
from tests.qcow2 import qcow2_to_raw

pytestmark = pytest.mark.integration


def volume(name: str, size: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Volume", "metadata": {"name": name},
            "spec": {"size": size, **spec}}


def wait_volume(kubectl: Kubectl, name: str, word: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(lambda: (o := kubectl.get("volume", name)) and (o.get("status") or {}).get("status") == word
                    and o["status"].get("observedGeneration") == o["metadata"]["generation"] and o,
                    timeout, f"volume {name} to be {word}")


def test_volumes_blank_from_an_image_and_from_a_volume_then_extended(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    data = disk("vol")
    kubectl.apply([image("os", source.add(f"/{kubectl.namespace}/vol.qcow2", data))])
    wait_image(kubectl, "os", "active")
    kubectl.apply([volume("blank", 1, description="scratch"), volume("root", 1, source={"image": "os"})])
    blank = wait_volume(kubectl, "blank", "available")
    assert (blank["status"]["size"], blank["status"]["claim"], blank["status"]["storageClass"]) == (
        1, "volume-blank", "sim-local")
    assert condition(blank)["status"] == "True"
    pvc = kubectl.get("pvc", "volume-blank")
    assert pvc is not None and pvc["metadata"]["ownerReferences"][0]["kind"] == "DataVolume"
    wait_volume(kubectl, "root", "available")
    volumes = cloud.workdir / "volumes" / str(kubectl.namespace)
    with tempfile.TemporaryFile() as raw:  # the image's disk, as CDI's importer writes it
        qcow2_to_raw(io.BytesIO(data), raw)
        raw.seek(0)
        assert (volumes / "volume-root.img").read_bytes() == raw.read()
    # A volume cloned from another: CDI's host-assisted copy in the namespace.
    kubectl.apply([volume("copy", 2, source={"volume": "root"})])
    wait_volume(kubectl, "copy", "available", timeout=120)
    assert (volumes / "volume-copy.img").read_bytes() == (volumes / "volume-root.img").read_bytes()
    # Extend: extending while the claim grows, then available at the new size.
    kubectl("patch", "volume", "blank", "--type=merge", "-p", '{"spec":{"size":3}}')
    wait_for(lambda: (kubectl.get("volume", "blank") or {}).get("status", {}).get("status") == "extending", 30,
             "the volume to say extending")
    grown = wait_volume(kubectl, "blank", "available")
    assert grown["status"]["size"] == 3
    assert (kubectl.get("pvc", "volume-blank") or {})["status"]["capacity"]["storage"] == "3Gi"


def test_what_cinder_refuses_is_refused(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    kubectl.apply([volume("small", 2)])
    wait_volume(kubectl, "small", "available")
    out = kubectl("patch", "volume", "small", "--type=merge", "-p", '{"spec":{"size":1}}', check=False)
    assert "a volume cannot shrink" in out
    out = kubectl("apply", "-f", "-", check=False, input=json.dumps(
        volume("two", 1, source={"image": "os", "volume": "small"})))
    assert "a volume has one source at most" in out
    kubectl.apply([image("big", source.add(f"/{kubectl.namespace}/big.qcow2", disk("big")))])
    wait_image(kubectl, "big", "active")
    # 64 MiB of disk fits in 1 GiB; a volume from an image the namespace cannot see waits as if it were missing.
    kubectl.apply([volume("hidden", 1, source={"image": "nowhere/secret"})])
    hidden = wait_for(lambda: ((o := kubectl.get("volume", "hidden")) or {}).get("status", {}).get("status") and o,
                      30, "the volume to say why it waits")
    assert hidden["status"]["status"] == "creating" and condition(hidden)["reason"] == "WaitingForImage"
    assert kubectl.get("dv", "volume-hidden") is None


def attachment(kubectl: Kubectl, server: str, volume: str, state: str, timeout: float = 60) -> dict[str, Any]:
    def seen() -> dict[str, Any] | None:
        entries = ((kubectl.get("instance", server) or {}).get("status") or {}).get("volumeAttachments") or []
        return next((a for a in entries if a["volume"] == volume and a["state"] == state), None)
    return wait_for(seen, timeout, f"volume {volume} to be {state} on {server}")


def test_a_volume_attached_hot_refused_twice_detached_then_attached_to_a_stopped_server(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    fl = unique(kubectl, "v")
    os_image(kubectl, source)
    kubectl.apply([flavor(fl)])  # the administrator's
    tenant.apply([volume("data", 1, source={"image": "os"}), instance("one", fl, "os"),
                  instance("two", fl, "os", powerState="Stopped")])
    wait_volume(kubectl, "data", "available")
    wait_instance(kubectl, "one", "ACTIVE", timeout=90)
    wait_instance(kubectl, "two", "SHUTOFF", timeout=90)
    uid = (kubectl.get("volume", "data") or {})["metadata"]["uid"]
    # Attached to a running server: KubeVirt plugs it in hot; the device is what the guest sees.
    tenant("patch", "instance", "one", "--type=merge", "-p",
           json.dumps({"spec": {"volumeAttachments": [{"volume": "data", "tag": "db"}]}}))
    attached = attachment(kubectl, "one", "data", "attached")
    assert attached["serial"] == uid and attached["tag"] == "db" and attached["device"].startswith("/dev/sd")
    vmi = kubectl.get("vmi", "one") or {}
    plugged = next(v for v in vmi["status"]["volumeStatus"] if v["name"] == "vol-data")
    assert plugged["phase"] == "Ready" and plugged["hotplugVolume"]["attachPodName"].startswith("hp-volume-")
    disk_ = next(d for d in vmi["spec"]["domain"]["devices"]["disks"] if d["name"] == "vol-data")
    assert disk_ == {"name": "vol-data", "disk": {"bus": "scsi"}, "serial": uid}
    used = wait_volume(kubectl, "data", "in-use")
    assert [(a["server"], a["device"]) for a in used["status"]["attachments"]] == [("one", attached["device"])]
    assert wait_instance(kubectl, "one", "ACTIVE")["status"]["powerState"] == "Running"
    # What Cinder and Nova refuse: deleting it, a second server without multiattach, another namespace's volume.
    out = tenant("delete", "volume", "data", check=False)
    assert "is in-use (attached to one)" in out and kubectl.get("volume", "data") is not None
    tenant("patch", "instance", "two", "--type=merge", "-p",
           json.dumps({"spec": {"volumeAttachments": [{"volume": "data"}]}}))
    refused = attachment(kubectl, "two", "data", "refused")
    assert "attached to server one and is not multiattach" in refused["message"]
    events = json.loads(kubectl("get", "events", "--field-selector",
                                "involvedObject.name=two,reason=VolumeAttachRefused", "-o", "json"))["items"]
    assert len(events) == 1
    out = tenant("patch", "instance", "one", "--type=merge", "-p",
                 json.dumps({"spec": {"volumeAttachments": [{"volume": "other/data"}]}}), check=False)
    assert "a volume of another namespace cannot be attached" in out
    tenant("patch", "instance", "one", "--type=merge", "-p", '{"spec":{"locked":true}}')
    out = tenant("patch", "instance", "one", "--type=json", "-p", '[{"op":"remove","path":"/spec/volumeAttachments"}]',
                 check=False)
    assert "the instance is locked" in out
    tenant("patch", "instance", "one", "--type=merge", "-p", '{"spec":{"locked":false}}')
    # Detached: unplugged from the running server, then the server that waited (stopped) holds it.
    tenant("patch", "instance", "one", "--type=json", "-p", '[{"op":"remove","path":"/spec/volumeAttachments"}]')
    wait_for(lambda: not ((kubectl.get("instance", "one") or {}).get("status") or {}).get("volumeAttachments"), 60,
             "the volume to be unplugged from one")
    assert all(v["name"] != "vol-data" for v in (kubectl.get("vmi", "one") or {})["status"].get("volumeStatus", []))
    attachment(kubectl, "two", "data", "attached")
    assert [a["server"] for a in wait_volume(kubectl, "data", "in-use")["status"]["attachments"]] == ["two"]
    # A stopped server gets it at start.
    tenant("patch", "instance", "two", "--type=merge", "-p", '{"spec":{"powerState":"Running"}}')
    wait_instance(kubectl, "two", "ACTIVE", timeout=90)
    assert attachment(kubectl, "two", "data", "attached")["device"].startswith("/dev/sd")


def test_boot_from_volume_and_delete_on_termination(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    """A server booted from a volume made from an image, with two more attached: deleting it deletes the one
    asked to go with it (deleteOnTermination) and keeps the others, available."""
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    fl = unique(kubectl, "d")
    os_image(kubectl, source)
    kubectl.apply([flavor(fl)])  # the administrator's
    tenant.apply([volume("root", 1, source={"image": "os"}), volume("scratch", 1), volume("keep", 1)])
    wait_volume(kubectl, "root", "available")
    srv = instance("srv", fl, "os", bootVolume={"volume": "root"},
                   volumeAttachments=[{"volume": "scratch", "deleteOnTermination": True}, {"volume": "keep"}])
    del srv["spec"]["imageRef"]
    out = tenant.apply([{**srv, "spec": {**srv["spec"], "imageRef": "os"}}], check=False)
    assert "exactly one of them" in out
    tenant.apply([srv])
    booted = wait_instance(kubectl, "srv", "ACTIVE", timeout=90)
    assert booted["status"]["imageRef"] == "" and booted["status"]["dataVolume"] == "volume-root"
    root = (kubectl.get("vm", "srv") or {})["spec"]["template"]["spec"]["volumes"][0]
    assert root == {"name": "root", "persistentVolumeClaim": {"claimName": "volume-root"}}
    assert kubectl.get("dv", "srv-root") is None  # nothing imported for it
    assert attachment(kubectl, "srv", "root", "attached")["device"] == "/dev/vda"
    assert [a["server"] for a in wait_volume(kubectl, "root", "in-use")["status"]["attachments"]] == ["srv"]
    attachment(kubectl, "srv", "scratch", "attached")
    attachment(kubectl, "srv", "keep", "attached")
    wait_for(lambda: [o["kind"] for o in (kubectl.get("volume", "scratch") or {})["metadata"].get(
        "ownerReferences") or []] == ["Instance"], 30, "the server to own the volume it deletes")
    tenant("delete", "instance", "srv", "--wait=false")
    wait_for(lambda: kubectl.get("volume", "scratch") is None, 60, "the volume to go with its server")
    for name in ("keep", "root"):
        kept = wait_volume(kubectl, name, "available")
        assert kept["status"].get("attachments", []) == [] and not kept["metadata"].get("ownerReferences")
    tenant("delete", "volume", "keep")


def test_cinders_quotas_volumes_counted_by_the_api_server_gigabytes_by_kova(
        cloud: LocalCloud, operator: Operator, kubectl: Kubectl) -> None:
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    tenant.apply([volume("a", 2)])
    wait_volume(kubectl, "a", "available")
    wait_for(lambda: kubectl.get("quotas.compute.kova.dev", "default"), 30, "the namespace's Quota")
    kubectl("patch", "quotas.compute.kova.dev", "default", "--type=merge", "-p", '{"spec":{"volumes":3,"gigabytes":4}}')
    wait_for(lambda: ((kubectl.get("resourcequota", "kova") or {}).get("spec") or {}).get("hard", {}).get(
        "count/volumes.compute.kova.dev") == "3", 30, "the ResourceQuota to count volumes")
    # Two at once: the older fits, the other gets Cinder's 413 words, for good.
    tenant.apply([volume("b", 2), volume("c", 1)])
    wait_volume(kubectl, "b", "available")
    over = wait_volume(kubectl, "c", "error")
    assert condition(over)["reason"] == "QuotaExceeded" and condition(over)["message"] == (
        "VolumeSizeExceedsAvailableQuota: Requested volume or snapshot exceeds allowed gigabytes quota. "
        "Requested 1G, quota is 4G and 4G has been consumed.")
    assert kubectl.get("dv", "volume-c") is None
    out = tenant.apply([volume("d", 1)], check=False)
    assert "exceeded quota: kova" in out and "count/volumes.compute.kova.dev" in out
    # An extend over quota is not done, and says why; room made by a deletion lets it through.
    tenant("patch", "volume", "a", "--type=merge", "-p", '{"spec":{"size":3}}')
    held = wait_for(lambda: (o := kubectl.get("volume", "a")) and condition(o)["reason"] == "QuotaExceeded" and o,
                    30, "the extend to be refused")
    assert held["status"]["status"] == "available" and held["status"]["size"] == 2
    assert "Requested 1G, quota is 4G and 4G has been consumed" in condition(held)["message"]
    used = wait_for(lambda: {q["name"]: q["inUse"] for q in ((kubectl.get("quotas.compute.kova.dev", "default") or {})
                                                             .get("status") or {}).get("quotas") or []}.get(
        "gigabytes") == 4 and kubectl.get("quotas.compute.kova.dev", "default"), 30, "the Quota to show gigabytes")
    assert {q["name"]: q["inUse"] for q in used["status"]["quotas"]}["volumes"] == 3
    tenant("delete", "volume", "b")
    grown = wait_for(
        lambda: (o := kubectl.get("volume", "a")) and o["status"].get("size") == 3 and o, 60, "the extend")
    assert grown["status"]["allocated"] == 3


def test_novas_volume_api_with_openstacksdk(cloud: LocalCloud, operator: Operator, api: str, source: Source,
                                            kubectl: Kubectl, namespace: str) -> None:
    """block_device_mapping_v2 (boot from a volume) and os-volume_attachments, as openstacksdk speaks them."""
    from openstack import exceptions as sdk_errors

    from tests.integration.test_compute_sdk import connect, instance_of, project

    small, _, _ = project(kubectl, source, "vol")
    kubectl.apply([volume("root", 1, source={"image": "os"}), volume("data", 1)])
    root = wait_volume(kubectl, "root", "available")["metadata"]["uid"]
    data = wait_volume(kubectl, "data", "available")["metadata"]["uid"]
    compute = connect(api, tenant_token(cloud, namespace), namespace).compute
    server = compute.create_server(name="bfv", flavor_id=small, networks="none", block_device_mapping=[
        {"boot_index": 0, "uuid": root, "source_type": "volume", "destination_type": "volume"}])
    server = compute.wait_for_server(server, interval=1, wait=120)
    obj = instance_of(kubectl, server.id)
    assert obj["spec"]["bootVolume"] == {"volume": "root", "deleteOnTermination": False}
    assert "imageRef" not in obj["spec"] and obj["status"]["imageRef"] == ""
    compute.create_volume_attachment(server, data, tag="db")

    def attached() -> dict[str, Any] | None:
        found = {a.volume_id: a for a in compute.volume_attachments(server)}
        return found if found.keys() == {root, data} and all(a.device for a in found.values()) else None
    found = wait_for(attached, 60, "both volumes to be listed with their devices")
    assert found[root].device == "/dev/vda" and found[data].device.startswith("/dev/sd") and found[data].tag == "db"
    assert {v["id"] for v in compute.get_server(server.id).attached_volumes} == {root, data}
    with pytest.raises(sdk_errors.BadRequestException, match="already attached"):
        compute.create_volume_attachment(server, data)
    with pytest.raises(sdk_errors.BadRequestException, match="root device"):
        compute.delete_volume_attachment(server, root, ignore_missing=False)
    compute.delete_volume_attachment(server, data, ignore_missing=False)
    wait_volume(kubectl, "data", "available")
    # A rebuild onto an image: Nova's answer for a volume-backed server below 2.93; the server is untouched.
    image_id = (kubectl.get("image", "os") or {})["metadata"]["uid"]
    with pytest.raises(sdk_errors.BadRequestException, match="Unable to rebuild with a different image for a "
                                                             "volume-backed server"):
        compute.rebuild_server(server, image=image_id)
    assert compute.get_server(server.id).status == "ACTIVE"
    compute.delete_server(server)
    compute.wait_for_delete(server, interval=1, wait=60)
    wait_volume(kubectl, "root", "available")
