"""What `openstack server create` takes besides flavor and image, end to end through kubectl: a key pair in
the guest's cloud-init, networks, security groups as NetworkPolicies, server groups spreading Instances over
the simulated nodes, availability zones, image properties as devices, and an ISO boot."""

from __future__ import annotations

import base64
import email
import gzip
import ipaddress
import json
from pathlib import Path
from typing import Any

import pytest

from kova.compute.guest import mac_address
from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, condition, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import flavor, image, instance, unique, wait_image, wait_instance
from tests.integration.test_lifecycle import raw_disk

pytestmark = pytest.mark.integration
CORPUS = Path(__file__).resolve().parents[1] / "corpus"


def compute(kind: str, name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": kind, "metadata": {"name": name}, "spec": spec}


def os_image(kubectl: Kubectl, source: Source, name: str = "os", **spec: Any) -> None:
    url = source.add(f"/{kubectl.namespace}/{name}.raw", raw_disk(name))
    kubectl.apply(image(name, url, diskFormat="raw", **spec))


def cloud_init(kubectl: Kubectl, name: str) -> str:
    vmi = kubectl.get("vmi", name) or {}
    return next(v["cloudInitNoCloud"]["userData"] for v in vmi["spec"]["volumes"] if "cloudInitNoCloud" in v)


def test_a_key_pair_reaches_the_guests_cloud_init(cloud: LocalCloud, operator: Operator, source: Source,
                                                  kubectl: Kubectl) -> None:
    fl = unique(kubectl, "k")
    os_image(kubectl, source)
    kubectl.apply([flavor(fl), compute("KeyPair", "mine")])
    kubectl("wait", "--for=condition=Ready", "--timeout=30s", "keypair/mine")
    kp = kubectl.status("keypair", "mine")
    assert kp["publicKey"].startswith("ssh-ed25519 ") and len(kp["fingerprint"].split(":")) == 16
    secret = json.loads(kubectl("get", "secret", kp["privateKeySecret"], "-o", "json"))
    assert base64.b64decode(secret["data"]["ssh-privatekey"]).startswith(b"-----BEGIN OPENSSH PRIVATE KEY-----")
    script = "#!/bin/sh\necho hello > /tmp/hello\n"
    # The Instance names the key before... it exists: it waits, as for a Flavor.
    kubectl.apply([instance("plain", fl, "os", keyName="mine"), instance("both", fl, "os", keyName="later",
                                                                         userData=script)])
    waiting = wait_for(lambda: (o := kubectl.get("instance", "both")) and condition(o).get("reason") ==
                       "WaitingForKeyPair" and o, 30, "the wait for the key")
    assert waiting["status"]["status"] == "BUILD"
    imported = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBTjTpBhbT6a6IW7OqkFh8CqmtHbJn8rIWrsxO0XxzEo me@laptop"
    kubectl.apply(compute("KeyPair", "later", publicKey=imported))
    wait_instance(kubectl, "plain", "ACTIVE", timeout=90)
    wait_instance(kubectl, "both", "ACTIVE", timeout=90)
    assert kp["publicKey"] in cloud_init(kubectl, "plain")
    parts = [p for p in email.message_from_string(cloud_init(kubectl, "both")).walk() if not p.is_multipart()]
    assert parts[0].get_payload(decode=True).decode() == script  # the user's data, unchanged
    assert imported in parts[1].get_payload(decode=True).decode()
    assert imported in cloud_init(kubectl, "both")  # readable: ASCII parts stay 7bit
    # Deleting the key pair changes no server (Nova copies the key at boot): after the KeyPair is gone, a
    # change that makes Kova apply the VM again (new server metadata) still leaves the key in it.
    kubectl("delete", "keypair", "later")
    kubectl("patch", "instance", "both", "--type=merge", "-p", '{"spec":{"metadata":{"after":"delete"}}}')
    vm = wait_for(lambda: (o := kubectl.get("vm", "both")) and "after" in o["metadata"].get("annotations", {}).get(
        "compute.kova.dev/server-metadata", "") and o, 30, "the VM applied again")
    volumes = vm["spec"]["template"]["spec"]["volumes"]
    assert imported in next(v["cloudInitNoCloud"]["userData"] for v in volumes if "cloudInitNoCloud" in v)


def test_two_networks_two_addresses(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    fl = unique(kubectl, "n")
    os_image(kubectl, source)
    nad = {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
           "metadata": {"name": "storage"},
           "spec": {"config": json.dumps({"cniVersion": "0.3.1", "type": "bridge", "bridge": "br-storage",
                                          "ipam": {"type": "host-local", "subnet": "172.20.0.0/24"}})}}
    kubectl.apply([flavor(fl), nad, instance("srv", fl, "os", networks=["pod", "storage"])])
    inst = wait_instance(kubectl, "srv", "ACTIVE", timeout=90)
    addresses = {a["interface"]: a["ip"] for a in inst["status"]["addresses"]}
    assert set(addresses) == {"pod", "storage"}
    assert ipaddress.ip_address(addresses["storage"]) in ipaddress.ip_network("172.20.0.0/24")
    assert ipaddress.ip_address(addresses["pod"]) in ipaddress.ip_network("10.244.0.0/16")
    spec = (kubectl.get("vm", "srv") or {})["spec"]["template"]["spec"]
    assert spec["networks"][1] == {"name": "storage", "multus": {"networkName": "storage"}}
    # Each interface has its MAC fixed per server, as a Nova port keeps its own across reboots and rebuilds.
    mac = mac_address(inst["metadata"]["uid"], "storage")
    assert spec["domain"]["devices"]["interfaces"][1] == {"name": "storage", "bridge": {}, "macAddress": mac}
    assert {a["interface"]: a.get("mac") for a in inst["status"]["addresses"]}["storage"] == mac
    # A network that does not exist: ERROR as Nova says it, and no guess.
    kubectl.apply(instance("lost", fl, "os", networks=["nowhere"]))
    lost = wait_instance(kubectl, "lost", "ERROR", timeout=150)
    assert condition(lost)["reason"] == "NetworkNotFound" and "nowhere" in lost["status"]["fault"]["message"]


def test_security_groups_select_their_instances(cloud: LocalCloud, operator: Operator, source: Source,
                                                kubectl: Kubectl) -> None:
    fl = unique(kubectl, "s")
    os_image(kubectl, source)
    kubectl.apply([flavor(fl), compute("SecurityGroup", "web", rules=[
        {"protocol": "tcp", "portRangeMin": 443, "portRangeMax": 443},
        {"protocol": "tcp", "portRangeMin": 22, "portRangeMax": 22, "remoteIpPrefix": "10.0.0.0/8"}]),
        instance("front", fl, "os", securityGroups=["web"]), instance("back", fl, "os")])
    kubectl("wait", "--for=condition=Ready", "--timeout=30s", "securitygroup/web")
    wait_instance(kubectl, "front", "ACTIVE", timeout=90)
    wait_instance(kubectl, "back", "ACTIVE", timeout=90)
    policies = {p["metadata"]["name"]: p for p in json.loads(kubectl("get", "networkpolicy", "-o", "json"))["items"]}
    assert set(policies) == {"kova-sg-web", "kova-sg-default"}
    web = policies["kova-sg-web"]["spec"]
    assert web["ingress"][0]["ports"] == [{"protocol": "TCP", "port": 443}]
    assert web["ingress"][1]["from"] == [{"ipBlock": {"cidr": "10.0.0.0/8"}}]

    def selected(policy: str) -> set[str]:
        labels = policies[policy]["spec"]["podSelector"]["matchLabels"]
        selector = ",".join(f"{k}={v}" for k, v in labels.items())
        return {v["metadata"]["name"] for v in json.loads(kubectl("get", "vmi", "-l", selector, "-o", "json"))["items"]}
    assert selected("kova-sg-web") == {"front"} and selected("kova-sg-default") == {"back"}
    assert policies["kova-sg-web"]["metadata"]["ownerReferences"][0]["name"] == "web"
    kubectl("delete", "instance", "front")  # a group in use is kept until no server names it (test_security_groups)
    kubectl("delete", "securitygroup", "web")
    wait_for(lambda: kubectl.get("networkpolicy", "kova-sg-web") is None, 30, "the policy to go with its group")


def test_anti_affinity_spreads_three_and_refuses_a_fourth(cloud: LocalCloud, operator: Operator, source: Source,
                                                          kubectl: Kubectl) -> None:
    fl = unique(kubectl, "a")
    os_image(kubectl, source)
    kubectl.apply([flavor(fl), compute("ServerGroup", "spread", policy="anti-affinity"),
                   *(instance(f"s{i}", fl, "os", serverGroup="spread") for i in range(3))])
    nodes = {wait_instance(kubectl, f"s{i}", "ACTIVE", timeout=90)["status"]["node"] for i in range(3)}
    assert nodes == {"sim-node-0", "sim-node-1", "sim-node-2"}
    kubectl.apply(instance("s3", fl, "os", serverGroup="spread"))
    err = wait_instance(kubectl, "s3", "ERROR", timeout=60)
    assert condition(err)["reason"] == "NoValidHost"
    assert err["status"]["fault"]["message"].startswith("No valid host was found.")
    assert "anti-affinity" in err["status"]["fault"]["message"]
    group = wait_for(lambda: (o := kubectl.get("servergroup", "spread")) and len(o.get("status", {}).get(
        "members", [])) == 4 and o, 30, "the members")
    assert group["status"]["members"] == ["s0", "s1", "s2", "s3"]


def test_availability_zones(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    zones = wait_for(lambda: {z["metadata"]["name"]: z for z in json.loads(
        cloud.kubectl("get", "availabilityzones", "-o", "json"))["items"]} or None, 30, "the zones")
    assert set(zones) == {"zone-a", "zone-b"}
    assert zones["zone-b"]["status"]["hosts"] == ["sim-node-1", "sim-node-2"] and zones["zone-a"]["status"]["available"]
    fl = unique(kubectl, "z")
    os_image(kubectl, source)
    kubectl.apply([flavor(fl), instance("here", fl, "os", availabilityZone="zone-a"),
                   instance("nowhere", fl, "os", availabilityZone="zone-x")])
    here = wait_instance(kubectl, "here", "ACTIVE", timeout=90)
    assert (here["status"]["node"], here["status"]["availabilityZone"]) == ("sim-node-0", "zone-a")
    waiting = wait_for(lambda: (o := kubectl.get("instance", "nowhere")) and condition(o).get("reason") ==
                       "WaitingForAvailabilityZone" and o, 30, "the wait for the zone")
    assert kubectl.get("vm", "nowhere") is None and "zone-x" in condition(waiting)["message"]


def test_image_properties_become_devices_and_bad_ones_are_refused(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    fl = unique(kubectl, "d")
    os_image(kubectl, source, "uefi", properties={
        "hw_disk_bus": "scsi", "hw_vif_model": "e1000e", "hw_firmware_type": "uefi", "os_secure_boot": "required",
        "hw_machine_type": "q35", "hw_rng_model": "virtio", "hw_video_model": "virtio"})
    os_image(kubectl, source, "odd", properties={"hw_disk_bus": "ide"})
    kubectl.apply([flavor(fl), instance("dev", fl, "uefi"), instance("bad", fl, "odd")])
    wait_instance(kubectl, "dev", "ACTIVE", timeout=90)
    domain = (kubectl.get("vm", "dev") or {})["spec"]["template"]["spec"]["domain"]
    assert domain["devices"]["disks"][0]["disk"]["bus"] == "scsi"
    assert domain["devices"]["interfaces"][0]["model"] == "e1000e"
    assert domain["firmware"]["bootloader"]["efi"]["secureBoot"] is True and domain["features"]["smm"]["enabled"]
    assert domain["machine"]["type"] == "q35" and domain["devices"]["rng"] == {}
    assert domain["devices"]["video"] == {"type": "virtio"}
    bad = wait_instance(kubectl, "bad", "ERROR")
    assert condition(bad)["reason"] == "InvalidImageProperty" and "hw_disk_bus=ide" in bad["status"]["fault"]["message"]
    assert kubectl.get("vm", "bad") is None  # refused before anything was made


def test_an_iso_boots_as_a_cdrom_with_a_blank_root_disk(cloud: LocalCloud, operator: Operator, source: Source,
                                                        kubectl: Kubectl) -> None:
    data = gzip.decompress((CORPUS / "iso.img.gz").read_bytes())
    fl = unique(kubectl, "iso")
    kubectl.apply([flavor(fl, disk=4), image("installer", source.add(f"/{kubectl.namespace}/inst.iso", data),
                                             diskFormat="iso"), instance("srv", fl, "installer")])
    wait_image(kubectl, "installer", "active")
    wait_instance(kubectl, "srv", "ACTIVE", timeout=90)
    tpl = (kubectl.get("vm", "srv") or {})["spec"]["template"]["spec"]
    assert tpl["domain"]["devices"]["disks"][0] == {"name": "cdrom", "cdrom": {"bus": "sata", "readonly": True},
                                                    "bootOrder": 1}
    root, iso = kubectl.get("dv", "srv-root"), kubectl.get("dv", "srv-iso")
    assert root is not None and iso is not None
    assert root["spec"]["source"] == {"blank": {}} and root["spec"]["storage"]["resources"]["requests"][
        "storage"] == "4Gi"
    assert (cloud.workdir / "volumes" / str(kubectl.namespace) / "srv-iso.img").read_bytes() == data
