"""kova.openstack.compute.nova and .microversion: Nova's documents and request checks as pure functions.

Every document is checked against the response schema Tempest's own client picks for the microversion
(`schema_versions_info` and `BaseComputeClient.get_schema`), validated as `rest_client.validate_response` does
(Draft 4 with Tempest's format checker); the rest is asserted against Nova's API reference and source."""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
from collections.abc import Callable
from functools import partial
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from tempest.lib.api_schema.response.compute.v2_1 import versions as versions_schema
from tempest.lib.common import api_version_request as tempest_version
from tempest.lib.common.jsonschema_validator import FORMAT_CHECKER, JSONSCHEMA_VALIDATOR
from tempest.lib.services.compute.flavors_client import FlavorsClient
from tempest.lib.services.compute.keypairs_client import KeyPairsClient
from tempest.lib.services.compute.limits_client import LimitsClient
from tempest.lib.services.compute.servers_client import ServersClient

from kova.api.errors import StatusError
from kova.api.models import FlavorSpec
from kova.compute import actions
from kova.openstack.compute import microversion, nova
from kova.openstack.compute.microversion import NotAcceptable, Version
from kova.openstack.compute.nova import NovaError, Related

Body = dict[str, Any]

BASE = "https://cloud.example.com:8774/projects/demo/compute"
SERVER_UID = "0b6f7f5e-4c1d-4a57-9e25-3f0d2b1c9a01"
GROUP_UID = "5d2c6a4e-8f1b-4c3d-9a7e-2b1f0e9d8c76"
IMAGE_UID = "9e0c1f6a-1b2c-4d3e-8f70-112233445566"


def v(text: str) -> Version:
    return microversion.parse_number(text)


# ---------------------------------------------------------------------------------------------- Tempest's schemas
def tempest_schema(client: Any, version: str | None) -> Any:
    """The schema module Tempest's `client` validates with at `version` (None: no header), as get_schema picks it."""
    wanted = tempest_version.APIVersionRequest(version)
    for entry in client.schema_versions_info:
        if wanted.is_null() and entry["min"] is None:
            return entry["schema"]
        if wanted.matches(tempest_version.APIVersionRequest(entry["min"]),
                          tempest_version.APIVersionRequest(entry["max"])):
            return entry["schema"]
    raise AssertionError(f"Tempest has no schema for {version}")


def validate(schema: Body, body: Body) -> None:
    """rest_client.validate_response's check of a body (a ValidationError names what Tempest would refuse)."""
    JSONSCHEMA_VALIDATOR(schema["response_body"], format_checker=FORMAT_CHECKER).validate(body)


# Which of Tempest's server schemas each view answers (POST .../action rebuild: enable_instance_password False,
# as Kova's Tempest configuration says: Kova sets no admin password).
SERVER_SCHEMAS = {"show": "get_server", "detail": "list_servers_detail", "update": "update_server",
                  "rebuild": "rebuild_server"}


def validate_server(doc: Body, version: str, mode: str) -> None:
    schema = getattr(tempest_schema(ServersClient, version), SERVER_SCHEMAS[mode])
    validate(schema, {"servers": [doc]} if mode == "detail" else {"server": doc})


# ---------------------------------------------------------------------------------------------- Instance objects
def applied_flavor() -> Body:
    return {"name": "m1.small", "vcpus": 2, "ram": 2048, "disk": 20, "ephemeral": 0, "swap": 0,
            "extraSpecs": {"hw:cpu_policy": "dedicated"}}


def running(**changes: Any) -> Body:
    """The status of a server the operator has booted and runs (what `kubectl get instance -o yaml` shows)."""
    status: Body = {
        "status": "ACTIVE", "vmState": "active", "powerState": "Running",
        "addresses": [{"interface": "pod", "ip": "10.244.1.7", "mac": "02:ab:cd:00:11:22"},
                      {"interface": "storage-net", "ip": "fd00::7"}],
        "flavor": applied_flavor(), "imageRef": "cirros", "virtualMachine": "web", "dataVolume": "web-root",
        "node": "worker-1", "availabilityZone": "zone-a", "requests": {"power": "Running"},
        "conditions": [{"type": "Ready", "status": "True", "reason": "Running",
                        "lastTransitionTime": "2026-03-01T10:00:40Z"}],
        "actions": [{"action": "create", "requestId": "req-1", "startTime": "2026-03-01T10:00:01Z",
                     "finishTime": "2026-03-01T10:00:40Z", "result": "Success"}]}
    status.update(changes)
    return status


def server(status: Body | None = None, metadata: Body | None = None, **spec: Any) -> Body:
    """An Instance as kube-apiserver serves it; `status` None: the running one above, {}: none yet."""
    obj: Body = {
        "apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance",
        "metadata": {"name": "web", "namespace": "demo", "uid": SERVER_UID, "generation": 1,
                     "resourceVersion": "4711", "creationTimestamp": "2026-03-01T10:00:00Z",
                     "managedFields": [
                         {"manager": "kova-api", "operation": "Update", "apiVersion": "compute.kova.dev/v1alpha1",
                          "time": "2026-03-01T10:00:00Z"},
                         {"manager": "kova", "operation": "Update", "apiVersion": "compute.kova.dev/v1alpha1",
                          "subresource": "status", "time": "2026-03-01T10:00:41Z"}],
                     "annotations": {nova.USER_ID: "alice", nova.KEY_NAME: "alice key",
                                     nova.ACCESS_IPV4: "203.0.113.7"},
                     **(metadata or {})},
        "spec": {"flavorRef": "m1.small", "imageRef": "cirros", "keyName": "alice-key",
                 "metadata": {"role": "web"}, "tags": ["blue"], "userData": "#cloud-config\nruncmd: [true]\n",
                 "serverGroup": "web-group", "description": "front end", **spec},
        "status": running() if status is None else status}
    if not obj["status"]:
        del obj["status"]
    return obj


def related(**changes: Any) -> Related:
    return Related(**{"image_id": IMAGE_UID, "image_properties": {"os_distro": "cirros", "hw_disk_bus": "virtio"},
                      "groups": [GROUP_UID], **changes})


def view(obj: Body, version: str, mode: str = "show", rel: Related | None = None) -> Body:
    doc = nova.server_view(obj, v(version), BASE, rel or related(), mode)
    validate_server(doc, version, mode)
    return doc


def created() -> Body:
    """Just written by POST /servers: the operator has not seen it yet."""
    return server(status={})


def deleting() -> Body:
    return server(metadata={"deletionTimestamp": "2026-03-01T11:00:00Z", "finalizers": ["compute.kova.dev/vm"]})


def errored() -> Body:
    return server(status={"status": "ERROR", "vmState": "error",
                          "fault": {"code": 500, "message": "No valid host was found. 0/3 nodes are available"},
                          "actions": [{"action": "create", "requestId": "req-1", "startTime": "2026-03-01T10:00:01Z",
                                       "finishTime": "2026-03-01T10:00:30Z", "result": "Error",
                                       "message": "No valid host was found."}]})


def refused(call: Callable[[], object], status: int = 400) -> str:
    with pytest.raises(NovaError) as e:
        call()
    assert e.value.status == status, e.value.message
    return e.value.message


# ---------------------------------------------------------------------------------------------- microversions
@pytest.mark.parametrize(("headers", "expected"), [
    ({}, Version(2, 1)), ({"Accept": "application/json"}, Version(2, 1)),
    ({"OpenStack-API-Version": "compute 2.47"}, Version(2, 47)),
    ({"X-OpenStack-Nova-API-Version": "2.47"}, Version(2, 47)),
    ({"OpenStack-API-Version": "compute 2.60", "X-OpenStack-Nova-API-Version": "2.3"}, Version(2, 60)),
    ({"OpenStack-API-Version": "image 2.5, compute 2.61, volume 3.70"}, Version(2, 61)),
    ({"OpenStack-API-Version": "volume 3.70", "X-OpenStack-Nova-API-Version": "2.9"}, Version(2, 9)),
    ({"OpenStack-API-Version": "compute latest"}, Version(2, 100)),
    ({"X-OpenStack-Nova-API-Version": "latest"}, Version(2, 100)),
    ({"OpenStack-API-Version": "compute 2.100"}, Version(2, 100)),
], ids=["none", "other-headers", "new", "legacy", "new-wins", "comma-list", "other-services-then-legacy", "latest",
        "legacy-latest", "max"])
def test_the_version_asked_for(headers: dict[str, str], expected: Version) -> None:
    assert microversion.requested(headers) == expected


@pytest.mark.parametrize("text", ["2.0", "2.101", "3.1", "1.1"])
def test_a_version_outside_2_1_to_2_100_is_not_acceptable(text: str) -> None:
    for headers in ({"OpenStack-API-Version": f"compute {text}"}, {"X-OpenStack-Nova-API-Version": text}):
        with pytest.raises(NotAcceptable) as e:
            microversion.requested(headers)
        assert e.value.status == 406
        assert "Minimum is 2.1 and maximum is 2.100" in e.value.message


@pytest.mark.parametrize("text", ["two.one", "2", "2.x", "2.1.1", "v2.1", "-2.1"])
def test_a_version_that_is_not_x_dot_y_is_a_bad_request(text: str) -> None:
    with pytest.raises(StatusError) as e:
        microversion.requested({"OpenStack-API-Version": f"compute {text}"})
    assert e.value.status == 400 and not isinstance(e.value, NotAcceptable)


@pytest.mark.parametrize("text", ["2.01", "02.1"])
def test_a_version_with_a_leading_zero_is_a_bad_request(text: str) -> None:
    with pytest.raises(StatusError) as e:
        microversion.requested({"X-OpenStack-Nova-API-Version": text})
    assert e.value.status == 400


def test_the_answer_names_its_version_in_both_headers_and_varies_on_them() -> None:
    headers = microversion.answer_headers(microversion.requested({"OpenStack-API-Version": "compute 2.47"}))
    assert headers["OpenStack-API-Version"] == "compute 2.47"
    assert headers["X-OpenStack-Nova-API-Version"] == "2.47"  # Tempest compares it with the string it sent
    assert {h.strip() for h in headers["Vary"].split(",")} == {"OpenStack-API-Version",
                                                              "X-OpenStack-Nova-API-Version"}


# ---------------------------------------------------------------------------------------------- server views
@pytest.mark.parametrize("version", ["2.1", "2.3", "2.9", "2.16", "2.19", "2.26", "2.47", "2.54", "2.57", "2.63",
                                     "2.71", "2.73", "2.75", "2.90", "2.96", "2.98", "2.100"])
def test_every_server_view_passes_tempests_schema(version: str) -> None:
    for obj in (server(), created(), deleting(), errored(), server(locked=True, lockedReason="audit")):
        for mode in SERVER_SCHEMAS:
            view(obj, version, mode)
    brief = tempest_schema(ServersClient, version).list_servers
    validate(brief, {"servers": [nova.server_brief(server(), BASE)]})


def test_show_at_2_1() -> None:
    doc = view(server(), "2.1")
    assert (doc["id"], doc["name"], doc["status"], doc["tenant_id"], doc["user_id"]) == (
        SERVER_UID, "web", "ACTIVE", "demo", "alice")
    # Keys of later microversions are absent (Tempest's v2_1 schema allows none of them).
    for key in ("locked", "description", "tags", "trusted_image_certificates", "server_groups", "locked_reason",
                "pinned_availability_zone", "scheduler_hints", "host_status"):
        assert key not in doc
    assert not [k for k in doc if k.startswith("OS-EXT-SRV-ATTR:")]  # admin-only
    assert doc["flavor"] == {"id": "m1.small", "links": [{"rel": "bookmark", "href": f"{BASE}/flavors/m1.small"}]}
    assert doc["image"] == {"id": IMAGE_UID, "links": [{"rel": "bookmark", "href": f"{BASE}/images/{IMAGE_UID}"}]}
    assert doc["links"] == [{"rel": "self", "href": f"{BASE}/v2.1/servers/{SERVER_UID}"},
                            {"rel": "bookmark", "href": f"{BASE}/servers/{SERVER_UID}"}]
    # nova.utils.generate_hostid: sha224 of project and host.
    assert doc["hostId"] == hashlib.sha224(b"demo" + b"worker-1").hexdigest()
    assert view(server(metadata={"namespace": "other"}), "2.1")["hostId"] != doc["hostId"]
    assert view(created(), "2.1")["hostId"] == ""  # no host yet
    assert doc["created"] == "2026-03-01T10:00:00Z"
    assert doc["updated"] == "2026-03-01T10:00:41Z"  # the last write (the status, here)
    assert doc["OS-SRV-USG:launched_at"] == "2026-03-01T10:00:40.000000"
    assert doc["OS-SRV-USG:terminated_at"] is None
    assert (doc["OS-EXT-STS:vm_state"], doc["OS-EXT-STS:task_state"], doc["OS-EXT-STS:power_state"]) == (
        "active", None, 1)
    assert doc["key_name"] == "alice key"
    assert doc["metadata"] == {"role": "web"} and doc["accessIPv4"] == "203.0.113.7" and doc["accessIPv6"] == ""
    assert doc["OS-EXT-AZ:availability_zone"] == "zone-a" and doc["progress"] == 0
    assert doc["addresses"]["pod"] == [{"addr": "10.244.1.7", "version": 4, "OS-EXT-IPS:type": "fixed",
                                        "OS-EXT-IPS-MAC:mac_addr": "02:ab:cd:00:11:22"}]
    assert doc["addresses"]["storage-net"][0]["version"] == 6


def test_2_47_embeds_the_flavor() -> None:
    assert view(server(), "2.47")["flavor"] == {"original_name": "m1.small", "vcpus": 2, "ram": 2048, "disk": 20,
                                                "ephemeral": 0, "swap": 0,
                                                "extra_specs": {"hw:cpu_policy": "dedicated"}}
    # Not booted yet: the sizes of the Flavor it names.
    sizes = FlavorSpec(vcpus=1, ram=512, disk=1, swap=256)
    flavor = view(created(), "2.47", rel=related(flavor=sizes))["flavor"]
    assert (flavor["original_name"], flavor["vcpus"], flavor["ram"], flavor["disk"], flavor["swap"]) == (
        "m1.small", 1, 512, 1, 256)


def test_2_71_server_groups_in_show_update_and_rebuild_but_not_in_detail() -> None:
    for mode in ("show", "update", "rebuild"):
        assert view(server(), "2.71", mode)["server_groups"] == [GROUP_UID]
        assert "server_groups" not in view(server(), "2.70", mode)
    assert "server_groups" not in view(server(), "2.71", "detail")
    assert view(server(serverGroup=None), "2.71", rel=related(groups=[]))["server_groups"] == []


def test_2_73_locked_reason() -> None:
    locked = server(locked=True, lockedReason="under audit")
    doc = view(locked, "2.73")
    assert (doc["locked"], doc["locked_reason"]) == (True, "under audit")
    assert view(server(), "2.73")["locked_reason"] is None
    assert "locked_reason" not in view(locked, "2.72") and view(locked, "2.72")["locked"] is True
    assert view(locked, "2.73", "detail")["locked_reason"] == "under audit"


def test_from_2_75_update_answers_the_full_view() -> None:
    show, update = view(server(), "2.75"), view(server(), "2.75", "update")
    assert set(update) == set(show)
    short = view(server(), "2.74", "update")
    for key in ("OS-EXT-STS:vm_state", "OS-EXT-STS:task_state", "OS-EXT-STS:power_state", "key_name",
                "security_groups", "OS-SRV-USG:launched_at", "OS-EXT-AZ:availability_zone", "config_drive"):
        assert key in update and key not in short


def test_rebuild_answers_key_name_from_2_54_and_user_data_from_2_57() -> None:
    assert "key_name" not in view(server(), "2.53", "rebuild")
    at_254 = view(server(), "2.54", "rebuild")
    assert at_254["key_name"] == "alice key" and "user_data" not in at_254
    assert "user_data" not in view(server(), "2.56", "rebuild")
    for version in ("2.57", "2.75"):
        doc = view(server(), version, "rebuild")
        assert base64.b64decode(doc["user_data"]).decode() == "#cloud-config\nruncmd: [true]\n"
    assert view(server(userData=None), "2.57", "rebuild")["user_data"] is None
    full = view(server(), "2.75", "rebuild")
    assert set(view(server(), "2.75")) <= set(full)


def test_2_96_pinned_availability_zone() -> None:
    assert view(server(availabilityZone="zone-a"), "2.96")["pinned_availability_zone"] == "zone-a"
    assert view(server(), "2.96", "detail")["pinned_availability_zone"] is None
    assert "pinned_availability_zone" not in view(server(availabilityZone="zone-a"), "2.95")


def test_2_98_shows_the_images_properties() -> None:
    assert view(server(), "2.98")["image"]["properties"] == {"os_distro": "cirros", "hw_disk_bus": "virtio"}
    assert "properties" not in view(server(), "2.97")["image"]
    # A property name Tempest's schema refuses does not break the document.
    odd = related(image_properties={"os_distro": "cirros", "owner/team": "x"})
    assert view(server(), "2.98", rel=odd)["image"]["properties"] == {"os_distro": "cirros"}


def test_2_100_scheduler_hints() -> None:
    assert view(server(), "2.100")["scheduler_hints"] == {"group": GROUP_UID}
    assert view(server(serverGroup=None), "2.100", "detail", related(groups=[]))["scheduler_hints"] == {}
    assert "scheduler_hints" not in view(server(), "2.99")


def test_a_server_being_deleted() -> None:
    # Nova's task_state while it deletes. (Nova itself keeps the vm_state's word until nova-compute has
    # destroyed the guest and then shows DELETED; Kova says DELETED as soon as kube-apiserver marks the object.)
    doc = view(deleting(), "2.1")
    assert (doc["status"], doc["OS-EXT-STS:task_state"]) == ("DELETED", "deleting")


def test_a_server_just_created_is_building_and_scheduling() -> None:
    doc = view(created(), "2.1")
    assert (doc["status"], doc["OS-EXT-STS:vm_state"], doc["OS-EXT-STS:task_state"],
            doc["OS-EXT-STS:power_state"]) == ("BUILD", "building", "scheduling", 0)
    assert doc["progress"] == 0 and doc["addresses"] == {} and doc["OS-SRV-USG:launched_at"] is None
    assert doc["flavor"]["id"] == "m1.small"


@pytest.mark.parametrize(("changes", "word", "task"), [
    ({"powerState": "Stopped"}, "ACTIVE", "powering-off"),
    ({"powerState": "Suspended"}, "ACTIVE", "suspending"),
    ({"rebootRequest": {"type": "SOFT", "token": "t2"}}, "REBOOT", "rebooting"),
    ({"rebootRequest": {"type": "HARD", "token": "t2"}}, "HARD_REBOOT", "rebooting_hard"),
    ({"flavorRef": "m1.large"}, "RESIZE", "resize_prep"),
    ({"imageRef": "ubuntu"}, "REBUILD", "rebuilding"),
], ids=["stop", "suspend", "soft-reboot", "hard-reboot", "resize", "rebuild"])
def test_a_spec_change_not_yet_carried_out_shows_novas_task(changes: Body, word: str, task: str) -> None:
    # The client that asked sees its request taken at once (Nova's task_state, and _STATE_MAP's word for it).
    asked = server(status=running(requests={"power": "Running", "reboot": "t1"}), **changes)
    doc = view(asked, "2.1")
    assert (doc["status"], doc["OS-EXT-STS:vm_state"], doc["OS-EXT-STS:task_state"]) == (word, "active", task)
    if "rebootRequest" in changes:  # once served (the token is the last one done) it is over
        done = server(status=running(requests={"power": "Running", "reboot": "t2"}), **changes)
        assert view(done, "2.1")["status"] == "ACTIVE"


def test_a_hard_reboot_of_a_paused_server_keeps_the_paused_status_word() -> None:
    paused = running(status="PAUSED", vmState="paused", powerState="Paused",
                     requests={"power": "Paused", "reboot": "t1"})
    doc = view(server(powerState="Paused", rebootRequest={"type": "HARD", "token": "t2"}, status=paused), "2.1")
    assert (doc["status"], doc["OS-EXT-STS:task_state"]) == ("PAUSED", "rebooting_hard")


def test_an_error_server_shows_its_fault() -> None:
    doc = view(errored(), "2.1")
    assert doc["status"] == "ERROR" and doc["OS-EXT-STS:vm_state"] == "error"
    assert doc["fault"]["code"] == 500
    assert doc["fault"]["message"] == "No valid host was found. 0/3 nodes are available"
    assert "details" not in doc["fault"]  # a 500's details are for administrators
    dt.datetime.fromisoformat(doc["fault"]["created"].replace("Z", "+00:00"))
    assert "progress" not in doc  # not one of Nova's progress statuses
    assert "fault" not in view(server(), "2.1")


def test_2_90_shows_the_hostname_to_its_owner() -> None:
    for mode in SERVER_SCHEMAS:
        assert view(server(), "2.90", mode).get("OS-EXT-SRV-ATTR:hostname") == "web", mode


# ---------------------------------------------------------------------------------------------- POST /servers
def create_body(**changes: Any) -> Body:
    server_dict = {"name": "web", "flavorRef": "m1.small", "imageRef": IMAGE_UID, **changes}
    return {"server": {k: x for k, x in server_dict.items() if x is not None}}


@pytest.mark.parametrize("flavor_ref", ["m1.small", f"{BASE}/flavors/m1.small"])
def test_image_ref_is_an_id_and_flavor_ref_an_id_or_a_link(flavor_ref: str) -> None:
    new = nova.parse_create(create_body(flavorRef=flavor_ref), v("2.1"))
    assert (new.image_id, new.flavor_id, new.name) == (IMAGE_UID, "m1.small", "web")
    assert (new.min_count, new.max_count, new.group_id) == (1, 1, None)


def test_an_image_ref_that_is_a_link_is_refused() -> None:
    link = f"https://cloud.example.com:9292/v2/images/{IMAGE_UID}"
    refused(partial(nova.parse_create, create_body(imageRef=link), v("2.1")))
    refused(partial(act, {"rebuild": {"imageRef": link}}))


def test_an_image_as_the_root_device_boots_from_the_image() -> None:
    bdm = [{"boot_index": 0, "uuid": IMAGE_UID, "source_type": "image", "destination_type": "local",
            "delete_on_termination": True}]
    assert nova.parse_create(create_body(imageRef="", block_device_mapping_v2=bdm), v("2.1")).image_id == IMAGE_UID


VOLUME_UID = "6e1b3b4c-1111-4d4e-9a0b-000000000001"


def test_a_volume_at_boot_index_0_boots_the_server_and_others_are_attached() -> None:
    bdm = [{"boot_index": 0, "uuid": VOLUME_UID, "source_type": "volume", "destination_type": "volume",
            "delete_on_termination": True},
           {"boot_index": 1, "uuid": IMAGE_UID, "source_type": "volume", "destination_type": "volume", "tag": "db"}]
    new = nova.parse_create(create_body(imageRef=None, block_device_mapping_v2=bdm), v("2.1"))
    assert new.image_id == "" and new.boot_volume == nova.BlockDevice(VOLUME_UID, True)
    assert new.volumes == [nova.BlockDevice(IMAGE_UID, False, "db")]
    # Beside an image, a volume is attached.
    beside = nova.parse_create(create_body(block_device_mapping_v2=bdm[1:]), v("2.1"))
    assert beside.image_id == IMAGE_UID and beside.boot_volume is None and len(beside.volumes) == 1


def test_what_kova_does_not_make_at_boot_is_refused() -> None:
    image_to_volume = {"boot_index": 0, "uuid": IMAGE_UID, "source_type": "image", "destination_type": "volume",
                       "volume_size": 10}
    assert "create the Volume first" in refused(lambda: nova.parse_create(
        create_body(imageRef=None, block_device_mapping_v2=[image_to_volume]), v("2.1")))
    root = {"boot_index": 0, "uuid": VOLUME_UID, "source_type": "volume", "destination_type": "volume"}
    assert "not both" in refused(lambda: nova.parse_create(create_body(block_device_mapping_v2=[root]), v("2.1")))
    assert "one by one" in refused(lambda: nova.parse_create(
        create_body(imageRef=None, block_device_mapping_v2=[root], max_count=2), v("2.1")))


def test_volume_attachments_look_as_novas_at_each_microversion() -> None:
    entry = {"volume": "data", "device": "/dev/sda", "tag": "db", "deleteOnTermination": True}
    assert nova.volume_attachment_view("srv", VOLUME_UID, entry, v("2.1")) == {
        "id": VOLUME_UID, "serverId": "srv", "volumeId": VOLUME_UID, "device": "/dev/sda"}
    assert nova.volume_attachment_view("srv", VOLUME_UID, entry, v("2.79"))["delete_on_termination"] is True
    latest = nova.volume_attachment_view("srv", VOLUME_UID, entry, v("2.89"))
    assert "id" not in latest and latest["tag"] == "db" and latest["attachment_id"] != latest["bdm_uuid"]
    assert nova.attach_request({"volumeAttachment": {"volumeId": VOLUME_UID, "tag": "db"}}, v("2.49")) == (
        VOLUME_UID, {"tag": "db"})
    assert "'tag' was unexpected" in refused(lambda: nova.attach_request(
        {"volumeAttachment": {"volumeId": VOLUME_UID, "tag": "db"}}, v("2.48")))
    assert "is not a 'uuid'" in refused(lambda: nova.attach_request({"volumeAttachment": {"volumeId": "x"}},
                                                                    v("2.1")))


def test_networks_are_required_from_2_37() -> None:
    assert nova.parse_create(create_body(), v("2.36")).network_ids == ["pod"]
    assert "networks" in refused(lambda: nova.parse_create(create_body(), v("2.37")))


@pytest.mark.parametrize(("networks", "expected"), [
    ("auto", ["pod"]), ("none", []),
    ([{"uuid": "3f8d1c9e-7a6b-4c5d-8e9f-0a1b2c3d4e5f"}, {"uuid": "0c2b1d7e-5f3a-4e9b-8a6c-1d2e3f4a5b6c"}],
     ["3f8d1c9e-7a6b-4c5d-8e9f-0a1b2c3d4e5f", "0c2b1d7e-5f3a-4e9b-8a6c-1d2e3f4a5b6c"]),
])
def test_networks_auto_none_or_a_list(networks: Any, expected: list[str]) -> None:
    assert nova.parse_create(create_body(networks=networks), v("2.37")).network_ids == expected


@pytest.mark.parametrize("networks", ["auto", "none"])
def test_auto_and_none_are_2_37s(networks: str) -> None:
    refused(lambda: nova.parse_create(create_body(networks=networks), v("2.36")))


@pytest.mark.parametrize("networks", [[{"port": "8c4b6d2e-0000-4a4a-9b9b-123456789abc"}], "everything",
                                      {"uuid": "x"}, [{}]])
def test_ports_and_malformed_networks_are_refused(networks: Any) -> None:
    refused(lambda: nova.parse_create(create_body(networks=networks), v("2.37")))


def test_counts() -> None:
    assert "min_count must be <= max_count" in refused(
        lambda: nova.parse_create(create_body(min_count=3, max_count=2), v("2.1")))
    new = nova.parse_create(create_body(min_count=3), v("2.1"))
    assert (new.min_count, new.max_count) == (3, 3)
    new = nova.parse_create(create_body(min_count="2", max_count="4"), v("2.1"))
    assert (new.min_count, new.max_count) == (2, 4)
    for bad in ("two", 1.5, True, 0, -1, [1]):
        refused(partial(nova.parse_create, create_body(min_count=bad), v("2.1")))
        refused(partial(nova.parse_create, create_body(max_count=bad), v("2.1")))


def test_user_data_must_be_base64() -> None:
    script = "#!/bin/sh\necho hello\n"
    new = nova.parse_create(create_body(user_data=base64.b64encode(script.encode()).decode()), v("2.1"))
    assert new.spec["userData"] == script
    assert "user_data" in refused(lambda: nova.parse_create(create_body(user_data="#!/bin/sh not base64"), v("2.1")))


def test_description_from_2_19_and_tags_from_2_52() -> None:
    refused(lambda: nova.parse_create(create_body(description="front"), v("2.18")))
    assert nova.parse_create(create_body(description="front"), v("2.19")).spec["description"] == "front"
    body = create_body(tags=["blue", "web"], networks="auto")
    refused(lambda: nova.parse_create(body, v("2.51")))
    assert nova.parse_create(body, v("2.52")).spec["tags"] == ["blue", "web"]
    refused(lambda: nova.parse_create(create_body(tags=["a/b"], networks="auto"), v("2.52")))


def test_access_ips_are_kept_and_bad_ones_refused() -> None:
    new = nova.parse_create(create_body(accessIPv4="203.0.113.7", accessIPv6="2001:db8::7"), v("2.1"))
    assert new.annotations == {nova.ACCESS_IPV4: "203.0.113.7", nova.ACCESS_IPV6: "2001:db8::7"}
    for key, value in (("accessIPv4", "300.1.2.3"), ("accessIPv4", "2001:db8::1"), ("accessIPv6", "203.0.113.7"),
                       ("accessIPv4", "web")):
        assert key in refused(partial(nova.parse_create, create_body(**{key: value}), v("2.1")))


# ---------------------------------------------------------------------------------------------- server actions
def act(body: Any, version: str = "2.1", obj: Body | None = None, token: str = "tok-1") -> nova.Action:
    spec, status = actions.parse(obj or server())
    return nova.parse_action(body, spec, status, token, v(version))


@pytest.mark.parametrize(("body", "name", "power"), [
    ({"os-stop": None}, "stop", "Stopped"), ({"os-start": None}, "start", "Running"),
    ({"pause": None}, "pause", "Paused"), ({"unpause": None}, "unpause", "Running"),
    ({"suspend": None}, "suspend", "Suspended"), ({"resume": None}, "resume", "Running"),
])
def test_power_actions_ask_for_a_power_state(body: Body, name: str, power: str) -> None:
    action = act(body)
    assert (action.name, action.patch) == (name, {"powerState": power})


def test_reboot_asks_once_per_token() -> None:
    hard = act({"reboot": {"type": "HARD"}}, token="t-9")
    assert (hard.name, hard.hard, hard.patch) == ("reboot", True, {"rebootRequest": {"type": "HARD", "token": "t-9"}})
    soft = act({"reboot": {"type": "SOFT"}}, token="t-10")
    assert (soft.hard, soft.patch) == (False, {"rebootRequest": {"type": "SOFT", "token": "t-10"}})
    bodies: list[Body] = [{"reboot": {}}, {"reboot": {"type": "WARM"}}, {"reboot": None}]
    for bad in bodies:
        refused(partial(act, bad))


def test_resize_must_change_flavor_and_is_answered_once_per_token() -> None:
    assert refused(lambda: act({"resize": {"flavorRef": "m1.small"}})) == "When resizing, instances must change flavor!"
    assert refused(lambda: act({"resize": {"flavorRef": f"{BASE}/flavors/m1.small"}})) == (
        "When resizing, instances must change flavor!")
    resize = act({"resize": {"flavorRef": f"{BASE}/flavors/m1.large"}})
    assert (resize.patch, resize.flavor_id) == ({"flavorRef": "m1.large"}, "m1.large")
    refused(lambda: act({"resize": {}}))
    assert act({"confirmResize": None}, token="t-3").patch == {"resizeRequest": {"action": "Confirm", "token": "t-3"}}
    assert act({"revertResize": None}, token="t-4").patch == {"resizeRequest": {"action": "Revert", "token": "t-4"}}


def test_lock_takes_a_reason_from_2_73() -> None:
    assert act({"lock": None}).patch == {"locked": True, "lockedReason": None}
    assert act({"lock": {"locked_reason": "audit"}}, "2.73").patch == {"locked": True, "lockedReason": "audit"}
    refused(lambda: act({"lock": {"locked_reason": "x" * 256}}, "2.73"))
    assert act({"unlock": None}).patch == {"locked": False, "lockedReason": None}


def test_a_locked_reason_before_2_73_is_ignored() -> None:
    assert act({"lock": {"locked_reason": "audit"}}, "2.72").patch == {"locked": True, "lockedReason": None}


def test_rebuild_needs_an_image() -> None:
    bodies: list[Body] = [{"rebuild": {}}, {"rebuild": None}, {"rebuild": {"name": "web2"}}]
    for body in bodies:
        refused(partial(act, body))
    rebuild = act({"rebuild": {"imageRef": IMAGE_UID, "name": "web2"}})
    assert (rebuild.image_id, rebuild.patch) == (IMAGE_UID, {"name": "web2"})
    user_data = base64.b64encode(b"#cloud-config\n").decode()
    assert act({"rebuild": {"imageRef": IMAGE_UID, "user_data": user_data}}, "2.57").patch == {
        "userData": "#cloud-config\n"}


def test_create_image_needs_a_name() -> None:
    bodies: list[Body] = [{"createImage": {}}, {"createImage": {"name": "  "}}, {"createImage": None}]
    for body in bodies:
        refused(partial(act, body))
    snap = act({"createImage": {"name": "web-snap", "metadata": {"purpose": "backup"}}})
    assert (snap.image_name, snap.image_metadata, snap.patch) == ("web-snap", {"purpose": "backup"}, {})


def test_unknown_malformed_and_unserved_actions_are_bad_requests() -> None:
    assert refused(lambda: act({"fly": {}})) == "There is no such action: fly"
    refused(lambda: act({}))
    refused(lambda: act({"os-stop": None, "os-start": None}))
    # Nova's actions Kova does not serve: a 400 that says why, rather than "no such action".
    for key in ("shelve", "unshelve", "rescue", "migrate", "changePassword"):
        message = refused(partial(act, {key: None}))
        assert message.startswith(f"{key}: ") and len(message) > len(key) + 10


# ---------------------------------------------------------------------------------------------- server lists
def q(*params: tuple[str, str], version: str = "2.1") -> nova.ServerQuery:
    return nova.parse_server_query(list(params), v(version))


def matches(obj: Body, query: nova.ServerQuery) -> bool:
    return nova.server_matches(obj, query.filters, related())


def test_an_unknown_filter_is_ignored_before_2_75_and_refused_from_2_75() -> None:
    assert q(("flavour", "m1.small"), version="2.74").filters == {}
    assert "flavour" in refused(lambda: q(("flavour", "m1.small"), version="2.75"))


def test_admin_only_filters_are_dropped_silently() -> None:
    for version in ("2.1", "2.75", "2.100"):
        query = q(("host", "worker-9"), ("node", "n"), ("all_tenants", "1"), ("name", "web"), version=version)
        assert query.filters == {"name": "web"}
    assert matches(server(), q(("host", "worker-9")))


def test_name_is_a_regular_expression() -> None:
    assert matches(server(), q(("name", "we")))
    assert matches(server(), q(("name", "^w.b$")))
    assert not matches(server(), q(("name", "^eb")))
    assert matches(server(name="Web Front"), q(("name", "Front$")))


def test_status_is_case_insensitive() -> None:
    assert matches(server(), q(("status", "active")))
    assert matches(server(), q(("status", "ACTIVE")))
    assert not matches(server(), q(("status", "shutoff")))
    stopped = server(powerState="Stopped", status=running(status="SHUTOFF", vmState="stopped",
                                                          powerState="Shutdown", requests={"power": "Stopped"}))
    assert matches(stopped, q(("status", "SHUTOFF")))


def test_an_unknown_status_is_refused_from_2_38() -> None:
    assert not matches(server(), q(("status", "RUNNING"), version="2.37"))
    refused(lambda: q(("status", "RUNNING"), version="2.38"))


def test_changes_since() -> None:
    # Nova lists servers updated at or after the time.
    assert matches(server(), q(("changes-since", "2026-03-01T10:00:41Z")))
    assert matches(server(), q(("changes-since", "2026-03-01T11:00:41+01:00")))
    assert not matches(server(), q(("changes-since", "2026-03-01T10:00:42Z")))
    assert "changes-since" in refused(lambda: q(("changes-since", "yesterday")))


def test_tags_filters() -> None:
    tagged = server(tags=["blue", "web"])
    for key, value, hit in (("tags", "blue,web", True), ("tags", "blue,db", False),
                            ("tags-any", "db,web", True), ("tags-any", "db,red", False),
                            ("not-tags", "blue,web", False), ("not-tags", "blue,db", True),
                            ("not-tags-any", "db,web", False), ("not-tags-any", "db,red", True)):
        assert matches(tagged, q((key, value), version="2.26")) is hit, (key, value)


def test_paging_with_limit_and_marker() -> None:
    items = [{"id": f"id-{n}"} for n in range(5)]
    page, more = nova.page(items, q(("limit", "2")))
    assert (page, more) == (items[:2], True)
    page, more = nova.page(items, q(("limit", "2"), ("marker", "id-1")))
    assert (page, more) == (items[2:4], True)
    page, more = nova.page(items, q(("limit", "2"), ("marker", "id-3")))
    assert (page, more) == (items[4:], False)
    assert nova.page(items, q()) == (items, False)
    assert nova.page(items, q(("limit", "0"))) == ([], False)
    # Without a limit a page holds Nova's max_limit (1000) and says there is more: nothing is cut off unsaid.
    many = [{"id": f"id-{n}"} for n in range(1001)]
    assert nova.page(many, q()) == (many[:1000], True)
    assert nova.page(many, q(("marker", "id-999"))) == (many[1000:], False)
    assert "id-9" in refused(lambda: nova.page(items, q(("marker", "id-9"))))
    for bad in ("-1", "ten"):
        refused(partial(q, ("limit", bad)))
    # The next page's link keeps the query and names the last id as the marker.
    [link] = nova.next_link(f"{BASE}/v2.1/servers/detail", [("limit", "2"), ("marker", "id-0"), ("name", "web")],
                            "id-2")
    url = urlsplit(link["href"])
    assert link["rel"] == "next" and f"{url.scheme}://{url.netloc}{url.path}" == f"{BASE}/v2.1/servers/detail"
    assert sorted(parse_qsl(url.query)) == [("limit", "2"), ("marker", "id-2"), ("name", "web")]


# ---------------------------------------------------------------------------------------------- flavors
def flavor(**spec: Any) -> Body:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Flavor",
            "metadata": {"name": "m1.small", "uid": "f-uid", "creationTimestamp": "2026-01-01T00:00:00Z"},
            "spec": {"vcpus": 2, "ram": 2048, "disk": 20, "extraSpecs": {"hw:cpu_policy": "dedicated"},
                     "description": "two cores", **spec}}


@pytest.mark.parametrize("version", ["2.1", "2.54", "2.55", "2.60", "2.61", "2.74", "2.75", "2.100"])
def test_flavor_documents_pass_tempests_schema(version: str) -> None:
    schema = tempest_schema(FlavorsClient, version)
    for obj in (flavor(), flavor(swap=512, ephemeral=10, description=None, extraSpecs={})):
        validate(schema.list_flavors, {"flavors": [nova.flavor_view(obj, v(version), BASE, False)]})
        validate(schema.list_flavors_details, {"flavors": [nova.flavor_view(obj, v(version), BASE, True)]})
        validate(schema.create_update_get_flavor_details, {"flavor": nova.flavor_view(obj, v(version), BASE, True)})


def test_a_flavor_in_a_list() -> None:
    doc = nova.flavor_view(flavor(), v("2.54"), BASE, False)
    assert doc == {"id": "m1.small", "name": "m1.small",
                   "links": [{"rel": "self", "href": f"{BASE}/v2.1/flavors/m1.small"},
                             {"rel": "bookmark", "href": f"{BASE}/flavors/m1.small"}]}
    assert nova.flavor_view(flavor(), v("2.55"), BASE, False) == {**doc, "description": "two cores"}
    assert nova.flavor_view(flavor(), v("2.61"), BASE, False) == {**doc, "description": "two cores"}


def test_flavor_detail_swap_and_extra_specs() -> None:
    for version, empty_swap in (("2.1", ""), ("2.74", ""), ("2.75", 0)):
        assert nova.flavor_view(flavor(), v(version), BASE, True)["swap"] == empty_swap
        assert nova.flavor_view(flavor(swap=512), v(version), BASE, True)["swap"] == 512
    assert "extra_specs" not in nova.flavor_view(flavor(), v("2.60"), BASE, True)
    assert nova.flavor_view(flavor(), v("2.61"), BASE, True)["extra_specs"] == {"hw:cpu_policy": "dedicated"}
    doc = nova.flavor_view(flavor(ephemeral=10), v("2.1"), BASE, True)
    assert (doc["vcpus"], doc["ram"], doc["disk"], doc["OS-FLV-EXT-DATA:ephemeral"],
            doc["os-flavor-access:is_public"]) == (2, 2048, 20, 10, True)


# ---------------------------------------------------------------------------------------------- key pairs
def ssh_public_key() -> str:
    key = ed25519.Ed25519PrivateKey.generate().public_key()
    return key.public_bytes(serialization.Encoding.OpenSSH, serialization.PublicFormat.OpenSSH).decode() + " alice"


def keypair(public_key: str, **spec: Any) -> Body:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "KeyPair",
            "metadata": {"name": "alice-key", "namespace": "demo", "uid": "4c9e2f6a-0000-4bbb-8ccc-1234567890ab",
                         "creationTimestamp": "2026-02-01T08:00:00Z", "annotations": {nova.USER_ID: "alice"}},
            "spec": {"name": "alice key", "publicKey": public_key, **spec}}


def test_keypair_documents_pass_tempests_schema_and_show_novas_fingerprint() -> None:
    public = ssh_public_key()
    md5 = hashlib.md5(base64.b64decode(public.split()[1]), usedforsecurity=False).hexdigest()
    fingerprint = ":".join(md5[i:i + 2] for i in range(0, 32, 2))  # nova.crypto.generate_fingerprint
    for version in ("2.1", "2.2", "2.92"):
        schema = tempest_schema(KeyPairsClient, version)
        listed = nova.keypair_view(keypair(public), v(version), False)
        shown = nova.keypair_view(keypair(public), v(version), True)
        validate(schema.list_keypairs, {"keypairs": [{"keypair": listed}]})
        validate(schema.get_keypair, {"keypair": shown})
        assert (shown["name"], shown["public_key"], shown["fingerprint"], shown["user_id"]) == (
            "alice key", public, fingerprint, "alice")
        assert ("type" in listed) is (version != "2.1")
    assert nova.keypair_view(keypair(public, type="x509"), v("2.2"), False)["type"] == "x509"


def test_parse_keypair() -> None:
    public = ssh_public_key()
    assert nova.parse_keypair({"keypair": {"name": "alice key"}}, v("2.1")) == ("alice key", None, "ssh")
    assert nova.parse_keypair({"keypair": {"name": "k", "public_key": public, "type": "ssh"}}, v("2.2")) == (
        "k", public, "ssh")
    refused(lambda: nova.parse_keypair({"keypair": {"name": "k", "type": "ssh"}}, v("2.1")))  # type is 2.2's
    refused(lambda: nova.parse_keypair({"keypair": {"name": "k", "type": "rsa"}}, v("2.2")))
    refused(lambda: nova.parse_keypair({"keypair": {"name": "k"}}, v("2.92")))  # 2.92 generates no keys
    refused(lambda: nova.parse_keypair({"keypair": {"name": "k", "public_key": "ssh-rsa not-a-key"}}, v("2.1")))
    for name in ("", "key/1", "key:1", "x" * 256, None):
        refused(partial(nova.parse_keypair, {"keypair": {"name": name}}, v("2.1")))
    refused(lambda: nova.parse_keypair({"name": "k"}, v("2.1")))
    assert nova.parse_keypair({"keypair": {"name": "alice@laptop.home", "public_key": public}}, v("2.92"))[0] == (
        "alice@laptop.home")  # @ and . are 2.92's


@pytest.mark.parametrize(("name", "version"), [("alice@laptop", "2.91"), ("alice.key", "2.1"), (" key", "2.92")])
def test_keypair_names_nova_refuses(name: str, version: str) -> None:
    refused(lambda: nova.parse_keypair({"keypair": {"name": name, "public_key": ssh_public_key()}}, v(version)))


# ---------------------------------------------------------------------------------------------- limits, versions
QUOTAS = {"instances": (10, 2), "cores": (20, 4), "ram": (51200, 4096), "key_pairs": (100, 1),
          "server_groups": (10, 1), "server_group_members": (10, 0)}


@pytest.mark.parametrize("version", ["2.1", "2.35", "2.36", "2.38", "2.39", "2.56", "2.57", "2.100"])
def test_limits_pass_tempests_schema(version: str) -> None:
    validate(tempest_schema(LimitsClient, version).get_limit, nova.limits_view(QUOTAS, v(version)))


def test_limits_follow_the_microversion() -> None:
    def absolute(version: str) -> Body:
        doc = nova.limits_view(QUOTAS, v(version))
        assert doc["limits"]["rate"] == []
        return dict(doc["limits"]["absolute"])

    base = absolute("2.1")
    assert (base["maxTotalInstances"], base["totalInstancesUsed"], base["maxTotalCores"], base["totalCoresUsed"],
            base["maxTotalRAMSize"], base["totalRAMUsed"], base["maxTotalKeypairs"]) == (10, 2, 20, 4, 51200, 4096, 100)
    network = {"maxSecurityGroups", "maxSecurityGroupRules", "maxTotalFloatingIps", "totalSecurityGroupsUsed",
               "totalFloatingIpsUsed"}
    assert network <= set(absolute("2.35")) and not network & set(absolute("2.36"))
    assert "maxImageMeta" in absolute("2.38") and "maxImageMeta" not in absolute("2.39")
    personality = {"maxPersonality", "maxPersonalitySize"}
    assert personality <= set(absolute("2.56")) and not personality & set(absolute("2.57"))
    assert absolute("2.100")["maxServerMeta"] == 128


def test_version_documents() -> None:
    root = "https://cloud.example.com:8774/projects/demo/compute"
    listed = nova.versions(root)
    validate(versions_schema.list_versions, listed)
    current = {d["id"]: d for d in listed["versions"]}["v2.1"]
    assert (current["status"], current["version"], current["min_version"]) == ("CURRENT", "2.100", "2.1")
    one = nova.version(root)
    validate(versions_schema.get_one_version, one)
    assert {"rel": "self", "href": f"{root}/v2.1/"} in one["version"]["links"]
    validate(versions_schema.get_one_version, nova.version(root, "v2.0"))

