"""What the guest gets (kova.compute.guest, kova.compute.access) and that every VirtualMachine Kova emits,
over all the options, is valid against KubeVirt's own schema (the vendored OpenAPI document, as the local
cloud's CRDs carry it), the way the API server checks it with strict field validation."""

from __future__ import annotations

import email
import functools
import itertools
from pathlib import Path
from typing import Any

import pytest
import yaml

from kova.api.models import FlavorSpec, InstanceSpec, SecurityGroupSpec, ServerGroupPolicy
from kova.compute import access, children, guest

CRDS = Path(__file__).resolve().parents[1] / "cloud" / "crds" / "kubevirt-cdi.yaml"
INSTANCE: dict[str, Any] = {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance",
                            "metadata": {"name": "web", "namespace": "team-a", "uid": "u-1"},
                            "spec": {"flavorRef": "m1", "imageRef": "os"}}
KEY = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIBTjTpBhbT6a6IW7OqkFh8CqmtHbJn8rIWrsxO0XxzEo me@host"


@functools.cache
def schema(kind: str) -> dict[str, Any]:
    crd = next(d for d in yaml.safe_load_all(CRDS.read_text()) if d["spec"]["names"]["kind"] == kind)
    return dict(crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"])


def violations(value: Any, node: dict[str, Any], path: str = "") -> list[str]:
    """Where `value` breaks a structural schema: unknown fields (strict validation), types, enums, required."""
    if node.get("x-kubernetes-int-or-string"):
        return [] if isinstance(value, int | str) else [f"{path}: not int-or-string"]
    kind = node.get("type")
    if kind == "object":
        if not isinstance(value, dict):
            return [f"{path}: not an object"]
        out = [f"{path}.{r}: required" for r in node.get("required", []) if r not in value]
        props = node.get("properties")
        for key, item in value.items():
            if props is not None and key in props:
                out += violations(item, props[key], f"{path}.{key}")
            elif isinstance(node.get("additionalProperties"), dict):
                out += violations(item, node["additionalProperties"], f"{path}.{key}")
            elif not node.get("x-kubernetes-preserve-unknown-fields") and path != ".metadata":
                out.append(f"{path}.{key}: unknown field")
        return out
    if kind == "array":
        return [v for i, x in enumerate(value) for v in violations(x, node.get("items", {}), f"{path}[{i}]")] \
            if isinstance(value, list) else [f"{path}: not an array"]
    types = {"string": str, "integer": int, "boolean": bool, "number": int | float}
    if kind in types and (not isinstance(value, types[kind]) or (kind == "integer" and isinstance(value, bool))):
        return [f"{path}: not {kind}"]
    if "enum" in node and value not in node["enum"]:
        return [f"{path}: {value!r} not in {node['enum']}"]
    return []


PROPS = [{}, {"hw_disk_bus": "scsi", "hw_vif_model": "e1000e", "hw_rng_model": "virtio", "hw_video_model": "vga",
              "hw_machine_type": "q35", "hw_qemu_guest_agent": "yes"},
         {"hw_firmware_type": "uefi", "os_secure_boot": "required", "hw_cdrom_bus": "scsi", "hw_video_model": "none"},
         {"hw_firmware_type": "uefi", "hw_disk_bus": "sata"}]
NETWORKS = [[], ["pod", "storage"], ["lab/vlan10"]]
GROUPS = [(None, None), ("web", ServerGroupPolicy.anti_affinity), ("db", ServerGroupPolicy.soft_affinity)]


@pytest.mark.parametrize(("props", "networks", "group", "iso", "keys", "user"), list(itertools.product(
    PROPS, NETWORKS, GROUPS, [False, True], [[], [KEY]], [None, "#!/bin/sh\necho hi\n"])))
def test_every_emitted_vm_is_valid_for_kubevirt(props: dict[str, str], networks: list[str],
                                                group: tuple[str | None, ServerGroupPolicy | None], iso: bool,
                                                keys: list[str], user: str | None) -> None:
    spec = InstanceSpec.model_validate({**INSTANCE["spec"], "networks": networks, "userData": user})
    flavor = FlavorSpec(vcpus=2, ram=1024, disk=5, ephemeral=1, swap=512,
                        extra_specs={"hw:cpu_policy": "dedicated", "hw:mem_page_size": "large"})
    g = children.Guest(keys=keys, nics=guest.nics(networks), security_groups=["web"], server_group=group[0],
                       policy=group[1], zone="zone-a", devices=guest.devices(props), iso=iso)
    vm = children.build_virtual_machine(INSTANCE, spec, flavor, True, g)
    assert violations(vm, schema("VirtualMachine")) == []
    for dv in (children.build_data_volume(INSTANCE, "http://s3/x", "ab", 5, "img"),
               children.build_data_volume(INSTANCE, None, "ab", 5, "img")):
        assert violations(dv, schema("DataVolume")) == []


def test_the_schema_check_catches_what_the_api_server_would_refuse() -> None:
    vm = children.build_virtual_machine(INSTANCE, InstanceSpec.model_validate(INSTANCE["spec"]),
                                        FlavorSpec(vcpus=1, ram=512), True)
    vm["spec"]["template"]["spec"]["domain"]["devices"]["disks"][0]["disk"]["buss"] = "virtio"
    vm["spec"]["runStrategy"] = 3
    assert len(violations(vm, schema("VirtualMachine"))) == 2


def test_devices_from_image_properties() -> None:
    vm = children.build_virtual_machine(INSTANCE, InstanceSpec.model_validate(INSTANCE["spec"]),
                                        FlavorSpec(vcpus=1, ram=512), True,
                                        children.Guest(devices=guest.devices(PROPS[1] | PROPS[3])))
    domain = vm["spec"]["template"]["spec"]["domain"]
    assert domain["devices"]["disks"][0]["disk"]["bus"] == "sata"
    assert domain["devices"]["interfaces"][0]["model"] == "e1000e"
    assert domain["devices"]["rng"] == {} and domain["devices"]["video"] == {"type": "vga"}
    assert domain["machine"] == {"type": "q35"} and domain["firmware"]["bootloader"]["efi"] == {"secureBoot": False}


@pytest.mark.parametrize(("props", "says"), [
    ({"hw_disk_bus": "ide"}, "no IDE"), ({"hw_vif_model": "virtio-net"}, "hw_vif_model=virtio-net"),
    ({"os_secure_boot": "required"}, "needs hw_firmware_type=uefi"), ({"hw_machine_type": "Q35 !"}, "machine"),
    ({"hw_qemu_guest_agent": "maybe"}, "yes or no"), ({"hw_rng_model": "egd"}, "virtio"),
])
def test_invalid_image_properties_are_refused_clearly(props: dict[str, str], says: str) -> None:
    with pytest.raises(guest.Invalid) as e:
        guest.devices(props)
    assert e.value.reason == "InvalidImageProperty" and says in str(e.value)


def test_an_iso_boots_as_a_cdrom_beside_a_blank_root_disk() -> None:
    vm = children.build_virtual_machine(INSTANCE, InstanceSpec.model_validate(INSTANCE["spec"]),
                                        FlavorSpec(vcpus=1, ram=512, disk=10), True, children.Guest(iso=True))
    tpl = vm["spec"]["template"]["spec"]
    assert tpl["domain"]["devices"]["disks"][:2] == [
        {"name": "cdrom", "cdrom": {"bus": "sata", "readonly": True}, "bootOrder": 1},
        {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 2}]
    assert tpl["volumes"][0] == {"name": "cdrom", "dataVolume": {"name": "web-iso"}}
    assert children.build_data_volume(INSTANCE, None, "x", 10)["spec"]["source"] == {"blank": {}}


def test_keys_reach_cloud_init_and_the_users_data_stays_unchanged() -> None:
    assert guest.user_data(None, [KEY]) == f"#cloud-config\nssh_authorized_keys:\n- {KEY}\n"
    assert guest.user_data("#cloud-config\n", []) == "#cloud-config\n"
    script = "#!/bin/sh\necho hi\n"
    mime = guest.user_data(script, [KEY])
    assert mime is not None and mime == guest.user_data(script, [KEY])  # the same bytes each time
    parts = [p for p in email.message_from_string(mime).walk() if not p.is_multipart()]
    assert [p.get_content_type() for p in parts] == ["text/x-shellscript", "text/cloud-config"]
    assert parts[0].get_payload(decode=True).decode() == script
    keys = yaml.safe_load(parts[1].get_payload(decode=True).decode())
    assert keys["ssh_authorized_keys"] == [KEY] and keys["merge_how"][0]["settings"] == ["append"]
    config = "#cloud-config\nssh_authorized_keys: [ssh-rsa AAAA other]\n"
    first = next(p for p in email.message_from_string(guest.user_data(config, [KEY]) or "").walk()
                 if not p.is_multipart())
    assert first.get_content_type() == "text/cloud-config" and first.get_payload(decode=True).decode() == config


def test_networks_bind_as_kubevirt_wants() -> None:
    ifaces, nets = guest.interfaces(guest.nics(["pod", "lab/vlan10"]), "virtio")
    assert ifaces == [{"name": "default", "masquerade": {}, "model": "virtio"},
                      {"name": "lab-vlan10", "bridge": {}, "model": "virtio"}]
    assert nets == [{"name": "default", "pod": {}}, {"name": "lab-vlan10", "multus": {"networkName": "lab/vlan10"}}]
    _, only = guest.interfaces(guest.nics(["vlan10"]), None)
    assert only == [{"name": "vlan10", "multus": {"networkName": "vlan10", "default": True}}]
    with pytest.raises(guest.Invalid):
        guest.nics(["pod", "pod"])


def test_server_group_policies_become_pod_affinity() -> None:
    hard = guest.affinity("g", ServerGroupPolicy.anti_affinity)
    assert hard == {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"compute.kova.dev/server-group": "g"}},
         "topologyKey": "kubernetes.io/hostname"}]}}
    soft = guest.affinity("g", ServerGroupPolicy.soft_affinity)
    assert soft is not None and soft["podAffinity"]["preferredDuringSchedulingIgnoredDuringExecution"][0]["weight"]
    assert guest.affinity(None, None) is None


def test_security_groups_become_network_policies() -> None:
    spec = SecurityGroupSpec.model_validate({"rules": [
        {"protocol": "tcp", "portRangeMin": 22, "portRangeMax": 22, "remoteIpPrefix": "10.0.0.0/8"},
        {"protocol": "tcp", "portRangeMin": 8000, "portRangeMax": 8080, "remoteGroup": "lb"},
        {"protocol": "icmp"},
        {"direction": "egress", "protocol": "udp", "portRangeMin": 53}]})
    policy, notes = access.network_policy("team-a", "web", spec)
    assert policy["metadata"] == {"name": "kova-sg-web", "namespace": "team-a"}
    assert policy["spec"]["podSelector"] == {"matchLabels": {"sg.compute.kova.dev/web": ""}}
    assert policy["spec"]["ingress"] == [
        {"from": [{"ipBlock": {"cidr": "10.0.0.0/8"}}], "ports": [{"protocol": "TCP", "port": 22}]},
        {"from": [{"podSelector": {"matchLabels": {"sg.compute.kova.dev/lb": ""}}}],
         "ports": [{"protocol": "TCP", "port": 8000, "endPort": 8080}]}]
    assert policy["spec"]["egress"] == [{"ports": [{"protocol": "UDP", "port": 53}]}]
    assert len(notes) == 1 and "ICMP" in notes[0]
    default, _ = access.network_policy("team-a", "default", access.default_group())
    assert default["spec"]["ingress"] == [{"from": [{"podSelector": {"matchLabels": {
        "sg.compute.kova.dev/default": ""}}}]}] and default["spec"]["egress"] == [{}]  # Neutron's default
    assert children.build_virtual_machine(INSTANCE, InstanceSpec.model_validate(INSTANCE["spec"]),
                                          FlavorSpec(vcpus=1, ram=512), True)["spec"]["template"]["metadata"][
        "labels"]["sg.compute.kova.dev/default"] == ""


def test_keypair_fingerprint_and_generation() -> None:
    public, private = access.generate("me@team-a")
    assert public.startswith("ssh-ed25519 ") and public.endswith(" me@team-a")
    assert private.startswith("-----BEGIN OPENSSH PRIVATE KEY-----")
    fp = access.fingerprint(public)
    assert len(fp.split(":")) == 16 and fp == access.fingerprint(public.rsplit(" ", 1)[0])
    for bad in ("hello", "ssh-rsa !!!", "ssh-ed25519 AAAA"):
        with pytest.raises(ValueError):
            access.fingerprint(bad)


def test_zones_from_node_labels() -> None:
    def node(name: str, zone: str | None, ready: bool = True, cordoned: bool = False) -> dict[str, Any]:
        return {"metadata": {"name": name, "labels": {"topology.kubernetes.io/zone": zone} if zone else {}},
                "spec": {"unschedulable": cordoned},
                "status": {"conditions": [{"type": "Ready", "status": "True" if ready else "False"}]}}
    zones = access.zones([node("n2", "b"), node("n1", "a"), node("n3", "b", ready=False), node("n4", None),
                          node("n5", "c", cordoned=True)])
    assert zones == {"a": (["n1"], True), "b": (["n2", "n3"], True), "c": (["n5"], False)}
