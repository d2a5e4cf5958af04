"""kova.compute.server: an Instance's whole reconcile as one plan, from what the caches hold; no cluster."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from kova.api.conditions import Progress
from kova.api.models import NovaStatus
from kova.compute import access, server, snapshot
from kova.compute.children import DISK_IMAGE_ANNOTATION
from kova.compute.guest import SG_LABEL

NOW = dt.datetime(2026, 1, 1, 12, tzinfo=dt.UTC)
SHA = "ab" * 64


class Objects:
    """A watch cache as the controller hands it over: get by key, iterate."""

    def __init__(self, *objs: dict[str, Any], cluster: bool = False) -> None:
        self.items = {((o["metadata"]["name"],) if cluster else (o["metadata"]["namespace"], o["metadata"]["name"])): o
                      for o in objs}

    def get(self, key: tuple[str, ...]) -> dict[str, Any] | None:
        return self.items.get(key)

    def objects(self) -> Iterator[dict[str, Any]]:
        return iter(self.items.values())


def obj(name: str, namespace: str | None = "team-a", **body: Any) -> dict[str, Any]:
    md: dict[str, Any] = {"name": name, "uid": f"uid-{name}", "creationTimestamp": "2026-01-01T11:00:00Z"}
    if namespace:
        md["namespace"] = namespace
    return {"apiVersion": "x/v1", "kind": "X", "metadata": md, **body}


def world(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None, **kw: Any) -> server.World:
    inst = obj("web", spec=spec if spec is not None else {"flavorRef": "m1", "imageRef": "cirros"})
    defaults: dict[str, Any] = {
        "flavors": Objects(obj("m1", None, spec={"vcpus": 1, "ram": 512, "disk": 2}), cluster=True),
        "images": Objects(obj("cirros", spec={"diskFormat": "qcow2", "source": {"url": "http://x"}},
                              status={"status": "active", "size": 100, "virtualSize": 1 << 30, "osHashValue": SHA})),
        "datavolumes": Objects(), "pvcs": Objects(), "vms": Objects(), "vmis": Objects(), "keypairs": Objects(),
        "servergroups": Objects(), "zones": Objects(cluster=True), "securitygroups": Objects()}
    return server.World(instance=inst, status=status or {}, now=NOW, **{**defaults, **kw})


def test_a_first_boot_plans_the_vm_its_disk_and_the_default_group() -> None:
    plan = server.plan(world())
    assert plan.step.word is NovaStatus.build
    assert plan.vm is not None and plan.vm["kind"] == "VirtualMachine" and plan.vm["metadata"]["name"] == "web"
    assert [(d.name, d.gib, d.from_image, d.image.sha512) for d in plan.disks] == [("web-root", 2, True, SHA)]
    assert plan.default_group and plan.delete == [] and plan.grow is None
    _, fields = server.report(plan)
    assert fields["virtualMachine"] == "web" and fields["dataVolume"] == "web-root" and fields["addresses"] == []


def test_a_missing_image_is_waited_for_and_nothing_is_created() -> None:
    plan = server.plan(world(images=Objects()))
    assert plan.step.reason == "WaitingForImage" and plan.step.wait_on == ("Image", "team-a", "cirros")
    assert plan.vm is None and plan.disks == [] and not plan.default_group


def test_a_disk_that_exists_is_not_planned_again() -> None:
    dv = obj("web-root", status={"phase": "ImportInProgress"})
    assert server.plan(world(datavolumes=Objects(dv))).disks == []


def test_an_expired_link_replaces_the_data_volume() -> None:
    # CDI retries the import forever (restartCount), the DataVolume stays ImportInProgress.
    dv = obj("web-root", status={"phase": "ImportInProgress", "restartCount": 2, "conditions": [
        {"type": "Running", "status": "False", "reason": "Error", "message": "Unable to connect to http data "
         "source: expected status code 200, got 403. Status: 403 Forbidden"}]})
    plan = server.plan(world(datavolumes=Objects(dv), presign_ttl=dt.timedelta(minutes=30)))
    assert plan.delete == [("web-root", "uid-web-root")]
    assert [d.name for d in plan.disks] == ["web-root"]  # a new one, with a new link


def test_a_bad_spec_is_one_line_naming_the_field_and_keeps_the_rest_of_the_status() -> None:
    plan = server.plan(world(spec={"imageRef": "cirros", "powerState": "Sleeping"}))
    step, fields = server.report(plan)
    assert step.word is NovaStatus.error and step.reason == "InvalidSpec"
    assert "\n" not in step.message and "errors.pydantic.dev" not in step.message
    assert "spec.flavorRef: Field required" in step.message and "spec.powerState" in step.message
    assert fields == {"fault": {"code": 400, "message": step.message}}  # the action history is not wiped


def test_a_running_server_reports_its_addresses_node_and_zone() -> None:
    booted = server.plan(world())
    status = {**booted.step.fields(), "status": "BUILD"}
    vm = obj("web", spec={"runStrategy": "Always"}, status={"printableStatus": "Running", "ready": True})
    vmi = obj("web", status={"phase": "Running", "nodeName": "n1",
                             "interfaces": [{"name": "default", "ipAddress": "10.0.0.5", "mac": "aa"}]})
    dv = obj("web-root", status={"phase": "Succeeded"})
    dv["metadata"]["annotations"] = {DISK_IMAGE_ANNOTATION: "uid-cirros"}
    zone = obj("zone-a", None, status={"hosts": ["n1"]})
    plan = server.plan(world(status=status, vms=Objects(vm), vmis=Objects(vmi), datavolumes=Objects(dv),
                             zones=Objects(zone, cluster=True)))
    step, fields = server.report(plan)
    assert step.word is NovaStatus.active
    assert fields["addresses"] == [{"interface": "pod", "ip": "10.0.0.5", "mac": "aa"}]
    assert (fields["node"], fields["availabilityZone"]) == ("n1", "zone-a")
    assert not plan.default_group  # made at the first boot only


def test_a_security_group_with_bad_rules_fails_closed_and_says_why_in_one_line() -> None:
    group = obj("web", spec={"rules": [{"direction": "sideways", "protocol": "tcp"}]})
    policy, notes, refusal = access.security_group(group)
    assert refusal is not None and refusal.reason == "InvalidRules" and "\n" not in refusal.message
    assert refusal.message.startswith("spec.rules.0.direction: ")
    # Its members get nothing in or out until it is fixed (a group never fails open).
    assert policy["spec"]["ingress"] == [] and policy["spec"]["egress"] == [] and notes == []
    assert policy["spec"]["policyTypes"] == ["Ingress", "Egress"]
    assert policy["spec"]["podSelector"] == access.members("web")
    good, _, none = access.security_group(obj("web", spec={"rules": []}))
    assert none is None and good["spec"]["egress"] == [{}]  # Neutron's default egress
    assert good["metadata"]["ownerReferences"][0]["uid"] == "uid-web"


def test_a_snapshot_waits_for_a_built_instance_and_refuses_a_missing_or_failed_one() -> None:
    missing = snapshot.source_state(None, "web", "team-a")
    assert not isinstance(missing, str) and missing is not None and missing.reason == "InstanceNotFound"
    failed = snapshot.source_state(obj("web", status={"status": "ERROR", "fault": {"message": "boom"}}), "web",
                                   "team-a")
    assert not isinstance(failed, str) and failed is not None and failed.message.endswith("boom")
    assert snapshot.source_state(obj("web", status={"status": "BUILD"}), "web", "team-a") == \
        "waiting for Instance web to finish building"
    assert snapshot.source_state(obj("web", status={"status": "ACTIVE", "virtualMachine": "web"}), "web",
                                 "team-a") is None
    running = {"status": "ACTIVE", "virtualMachine": "web"}
    locked = snapshot.source_state(obj("web", spec={"locked": True}, status=running), "web", "team-a")
    assert not isinstance(locked, str) and locked is not None and locked.reason == "InstanceLocked"
    assert snapshot.snapshot_running(obj("img", status={"status": "importing"}))
    assert not snapshot.snapshot_running(obj("img", status={"status": "active"}))


def test_another_namespaces_network_is_refused_unless_shared_and_said_as_missing() -> None:
    spec = {"flavorRef": "m1", "imageRef": "cirros", "networks": ["pod", "team-b/vlan100"]}
    refused = server.plan(world(spec))
    assert refused.step.word is NovaStatus.error and refused.step.reason == "NetworkNotFound"
    assert refused.step.fault is not None and refused.step.fault.code == 500
    assert refused.step.message == ("failed to render launch manifest: failed to locate network attachment "
                                    "definition team-b/vlan100")  # KubeVirt's words for a missing one
    assert refused.vm is None and refused.disks == []
    shared = server.plan(world(spec, shared_networks=frozenset({"team-b"})))
    assert shared.vm is not None and [n.network for n in shared.nics] == ["pod", "team-b/vlan100"]
    own = server.plan(world({**spec, "networks": ["team-a/storage"]}))
    assert own.vm is not None  # its own namespace, spelled out


def test_an_image_one_cannot_see_reads_as_one_that_does_not_exist() -> None:
    private = obj("os", "team-b", spec={"diskFormat": "qcow2", "source": {"url": "http://x"}},
                  status={"status": "active", "size": 1, "osHashValue": SHA})
    seen = server.plan(world({"flavorRef": "m1", "imageRef": "team-b/os"}, images=Objects(private)))
    missing = server.plan(world({"flavorRef": "m1", "imageRef": "team-b/os"}, images=Objects()))
    assert (seen.step.word, seen.step.reason, seen.step.message, seen.step.wait_on) == (
        missing.step.word, missing.step.reason, missing.step.message, missing.step.wait_on)
    assert seen.step.word is NovaStatus.build and seen.vm is None


def test_rules_network_policy_would_refuse_fail_closed_too() -> None:
    for rule, said in (({"remoteIpPrefix": "10.0.0.0/33"}, "is not a CIDR"),
                       ({"remoteIpPrefix": "fd00::/64"}, "does not match ethertype IPv4")):
        policy, _, refusal = access.security_group(obj("db", spec={"rules": [{"protocol": "tcp", **rule}]}))
        assert refusal is not None and said in refusal.message and refusal.message.startswith("spec.rules.0.")
        assert policy["spec"]["ingress"] == policy["spec"]["egress"] == []
    v6 = {"ethertype": "IPv6", "remoteIpPrefix": "fd00::/64"}
    _, _, fine = access.security_group(obj("db", spec={"rules": [v6]}))
    assert fine is None


def test_a_missing_security_group_is_waited_for_like_a_flavor_and_default_never_is() -> None:
    spec = {"flavorRef": "m1", "imageRef": "cirros", "securityGroups": ["default", "web", "db"]}
    waiting = server.plan(world(spec, securitygroups=Objects(obj("db"))))
    step, fields = server.report(waiting)
    assert (step.word, step.reason, step.wait_on) == (NovaStatus.build, "WaitingForSecurityGroup",
                                                      ("SecurityGroup", "team-a", "web"))
    assert step.progress is Progress.RECONCILING and fields["fault"] is None
    assert "Unable to find security_group with name or id 'web'" in step.message
    assert waiting.vm is None and waiting.disks == [] and not waiting.default_group  # nothing is made yet
    # Once it exists the server boots; `default` is Kova's own and is never waited for.
    found = server.plan(world(spec, securitygroups=Objects(obj("db"), obj("web"))))
    assert found.vm is not None and found.step.reason != "WaitingForSecurityGroup" and found.default_group
    assert set(found.vm["spec"]["template"]["metadata"]["labels"]) >= {SG_LABEL + g
                                                                       for g in ("default", "web", "db")}
    assert server.plan(world({**spec, "securityGroups": ["default"]})).vm is not None
    # Another namespace's group of that name is not this namespace's.
    elsewhere = server.plan(world(spec, securitygroups=Objects(obj("db"), obj("web", "team-b"))))
    assert elsewhere.step.reason == "WaitingForSecurityGroup"


def test_a_running_server_whose_group_went_keeps_running() -> None:
    spec = {"flavorRef": "m1", "imageRef": "cirros", "securityGroups": ["web"]}
    booted = server.plan(world(spec, securitygroups=Objects(obj("web"))))
    status = {**booted.step.fields(), "status": "ACTIVE"}
    vm = obj("web", spec={"runStrategy": "Always"}, status={"printableStatus": "Running", "ready": True})
    vmi = obj("web", status={"phase": "Running", "nodeName": "n1"})
    dv = obj("web-root", status={"phase": "Succeeded"})
    dv["metadata"]["annotations"] = {DISK_IMAGE_ANNOTATION: "uid-cirros"}
    plan = server.plan(world(spec, status=status, vms=Objects(vm), vmis=Objects(vmi), datavolumes=Objects(dv)))
    assert plan.step.word is NovaStatus.active and plan.step.wait_on is None and plan.vm is not None


def test_a_group_is_in_use_while_an_instance_of_its_namespace_names_it() -> None:
    instances = [obj("a", spec={"securityGroups": ["web"]}), obj("b", spec={"securityGroups": ["db", "web"]}),
                 obj("c", spec={}), obj("d", "team-b", spec={"securityGroups": ["web"]})]
    assert access.users("team-a", "web", instances) == ["a", "b"]
    assert access.users("team-a", "default", instances) == ["c"]  # naming none is being in `default`
    assert access.users("team-a", "ssh", instances) == []
    assert access.in_use("ssh", []) is None
    refusal = access.in_use("web", ["a", "b"])
    assert refusal is not None and refusal.reason == "SecurityGroupInUse"
    assert refusal.message.startswith("Security Group web in use by server(s) a, b")
    many = access.in_use("web", [f"s{n:02}" for n in range(25)])
    assert many is not None and "s09 and 15 more" in many.message and "s10" not in many.message


def test_the_key_copied_at_boot_stays_until_a_rebuild_takes_the_key_pair_it_names() -> None:
    from kova.api.models import InstanceSpec, InstanceStatus
    keypairs = Objects(obj("k2", status={"publicKey": "ssh-ed25519 NEW"}))
    image = server.image_info(world().images, "cirros", "team-a")
    assert not isinstance(image, type(None))
    status = InstanceStatus.model_validate({"imageRef": "cirros", "publicKey": "ssh-ed25519 OLD"})
    w = world(keypairs=keypairs)

    def keys(spec: dict[str, Any], st: InstanceStatus = status) -> list[str]:
        g = server.guest_of(w, InstanceSpec.model_validate(spec), st, image, booted=True)
        assert not isinstance(g, type(None)) and hasattr(g, "keys"), g
        return list(g.keys)

    # Running: the key pair of the same name may change; the server keeps what it booted with (Nova's copy).
    assert keys({"flavorRef": "m1", "imageRef": "cirros", "keyName": "k2"}) == ["ssh-ed25519 OLD"]
    # A rebuild (a new imageRef) takes the key pair it names now (Nova 2.54)...
    assert keys({"flavorRef": "m1", "imageRef": "other", "keyName": "k2"}) == ["ssh-ed25519 NEW"]
    # ...or, when that key pair is gone, keeps the one copied at boot; and none when it names none.
    assert keys({"flavorRef": "m1", "imageRef": "other", "keyName": "gone"}) == ["ssh-ed25519 OLD"]
    assert keys({"flavorRef": "m1", "imageRef": "other"}) == []
