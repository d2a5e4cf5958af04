"""The simulator's pure parts: virt-api's discovery from the vendored schema, its error bodies, durations,
kube-scheduler's filters and scores for VMIs, and the addresses VMIs' interfaces get."""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
from email.message import Message
from typing import Any

import pytest

from tests.cloud import networks, virtapi, websocket
from tests.cloud.kubelet import NODES
from tests.cloud.scheduler import (
    EXISTING_ANTI_AFFINITY,
    NODE_AFFINITY,
    POD_AFFINITY,
    POD_ANTI_AFFINITY,
    Node,
    Pod,
    fit_error,
    node_selector_term,
    quantity,
    schedule,
    vmi_requests,
)
from tests.cloud.sim import claim_names, duration


def test_discovery_comes_from_the_vendored_swagger() -> None:
    doc = virtapi.swagger()
    for version in virtapi.VERSIONS:
        listing = virtapi.resource_list(doc, version)
        names = [r["name"] for r in listing["resources"]]
        assert listing["groupVersion"] == f"subresources.kubevirt.io/{version}"
        assert {"virtualmachineinstances/pause", "virtualmachineinstances/unpause",
                "virtualmachineinstances/softreboot", "virtualmachines/start", "virtualmachines/stop",
                "virtualmachines/restart",
                "virtualmachineinstances/portforward", "expand-vm-spec"} <= set(names)
        assert not any("{" in n for n in names) and "healthz" not in names and len(names) == len(set(names))
        # As virt-api lists them: name and namespaced, with no kind and no verbs.
        assert all(r["namespaced"] and r["kind"] == "" and r["verbs"] is None for r in listing["resources"])


def test_openapi_is_the_groups_part_of_the_document() -> None:
    v2 = virtapi.openapi_v2(virtapi.swagger())
    assert v2["paths"] and all(p.startswith("/apis/subresources.kubevirt.io") for p in v2["paths"])
    assert {"v1.PauseOptions", "v1.RestartOptions", "v1.StopOptions"} <= set(v2["definitions"])
    v3 = virtapi.openapi_v3(v2)
    assert v3["openapi"] == "3.0.0" and "#/definitions/" not in str(v3)


def test_errors_read_like_virt_apis() -> None:
    status = virtapi.conflict("virtualmachineinstance", "vm", "VMI is already paused").status()
    assert status == {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "code": 409,
                      "reason": "Conflict",
                      "message": 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "vm": '
                                 'VMI is already paused',
                      "details": {"name": "vm", "group": "kubevirt.io", "kind": "virtualmachineinstance"}}
    assert virtapi.not_found("virtualmachine", "x").status()["message"] == 'virtualmachine.kubevirt.io "x" not found'


def test_restart_requests_are_guarded_like_kubevirts() -> None:
    vm = {"spec": {"runStrategy": "Always"}, "status": {"printableStatus": "Running"}}
    ops = virtapi.VirtAPI.change_requests(vm, {"action": "Stop", "uid": "u"}, {"action": "Start"})
    assert ops == [{"op": "test", "path": "/status/stateChangeRequests", "value": None},
                   {"op": "add", "path": "/status/stateChangeRequests",
                    "value": [{"action": "Stop", "uid": "u"}, {"action": "Start"}]}]
    vm["status"]["stateChangeRequests"] = [{"action": "Start"}]  # type: ignore[assignment]
    with pytest.raises(virtapi.StatusError, match="stop/start already underway"):
        virtapi.VirtAPI.change_requests(vm, {"action": "Start"})
    assert virtapi.VirtAPI.change_requests({"spec": {}, "status": {}}, {"action": "Start"}) == [
        {"op": "add", "path": "/status", "value": {"stateChangeRequests": [{"action": "Start"}]}}]


def test_durations_quantities_and_claims() -> None:
    assert duration("2h") == dt.timedelta(hours=2)
    assert duration("1h30m10s") == dt.timedelta(hours=1, minutes=30, seconds=10)
    assert duration("1.5s") == dt.timedelta(seconds=1.5)
    with pytest.raises(ValueError):
        duration("2 hours")
    assert quantity("3Gi") == 3 * 1024**3 and quantity("500m") == 0.5
    spec = {"volumes": [{"name": "a", "dataVolume": {"name": "dv"}},
                        {"name": "b", "persistentVolumeClaim": {"claimName": "pvc"}},
                        {"name": "c", "cloudInitNoCloud": {"userData": "x"}}]}
    assert claim_names(spec) == ["dv", "pvc"]


# ---------------------------------------------------------------------------------------------- scheduler
GiB = 1024**3
NODES3 = [Node(name, {"kubernetes.io/hostname": name, "topology.kubernetes.io/zone": zone,
                      "kubevirt.io/schedulable": "true"}, {"cpu": 16, "memory": 64 * GiB, "pods": 110})
          for name, zone in NODES]


def pod(name: str, labels: dict[str, str] | None = None, node: str = "", cpu: float = 1, memory: int = GiB,
        ns: str = "ns", **affinity: Any) -> Pod:
    return Pod(ns, name, labels or {}, {"cpu": cpu, "memory": memory}, {"kubevirt.io/schedulable": "true"},
               affinity, node=node)


def required(key: str, **labels: str) -> dict[str, Any]:
    return {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": labels}, "topologyKey": key}]}


HOST, ZONE = "kubernetes.io/hostname", "topology.kubernetes.io/zone"


def test_the_layout_is_three_nodes_in_two_zones() -> None:
    assert NODES == (("sim-node-0", "zone-a"), ("sim-node-1", "zone-b"), ("sim-node-2", "zone-b"))
    assert networks.pod_cidr(0) == "10.244.0.0/24" and networks.pod_cidr(2) == "10.244.2.0/24"


def test_spread_then_name_when_nothing_else_decides() -> None:
    assert schedule(pod("a"), NODES3, []).node == "sim-node-0"
    placed = [pod("x", node="sim-node-0"), pod("y", node="sim-node-1")]
    assert schedule(pod("a"), NODES3, placed).node == "sim-node-2"


def test_required_anti_affinity_spreads_then_refuses_like_kube_scheduler() -> None:
    anti = required(HOST, app="db")
    placed: list[Pod] = []
    for name in ("db-0", "db-1", "db-2"):
        decision = schedule(pod(name, {"app": "db"}, podAntiAffinity=anti), NODES3, placed)
        assert decision.node is not None
        placed.append(pod(name, {"app": "db"}, decision.node, podAntiAffinity=anti))
    assert sorted(p.node for p in placed) == ["sim-node-0", "sim-node-1", "sim-node-2"]
    decision = schedule(pod("db-3", {"app": "db"}, podAntiAffinity=anti), NODES3, placed)
    assert decision.node is None
    assert decision.message == (
        "0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. no new claims to deallocate, "
        "preemption: 0/3 nodes are available: 3 No preemption victims found for incoming pod.")
    # Others' anti-affinity keeps a pod they select away too, even without rules of its own.
    assert schedule(pod("intruder", {"app": "db"}), NODES3, placed).reasons == {
        n.name: [EXISTING_ANTI_AFFINITY] for n in NODES3}
    # In another namespace the term (own namespace by default) does not apply.
    assert schedule(pod("db-x", {"app": "db"}, ns="other", podAntiAffinity=anti), NODES3, placed).node


def test_zone_anti_affinity_and_mixed_reasons_sorted_in_the_message() -> None:
    placed = [pod("web-0", {"app": "web"}, "sim-node-1")]
    anti = required(ZONE, app="web")
    decision = schedule(pod("web-1", {"app": "web"}, podAntiAffinity=anti), NODES3, placed)
    assert decision.node == "sim-node-0" and decision.reasons == {n: [POD_ANTI_AFFINITY] for n in
                                                                  ("sim-node-1", "sim-node-2")}
    zone_b = {"requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [
        {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["zone-b"]}]}]}}
    decision = schedule(pod("web-1", {"app": "web"}, podAntiAffinity=required(HOST, app="web"),
                            nodeAffinity=zone_b), NODES3, placed)
    assert decision.node == "sim-node-2"
    placed.append(pod("web-2", {"app": "web"}, "sim-node-2"))
    decision = schedule(pod("web-3", {"app": "web"}, podAntiAffinity=required(HOST, app="web"),
                            nodeAffinity=zone_b), NODES3, placed)
    assert decision.message.startswith(
        "0/3 nodes are available: 1 node(s) didn't match Pod's node affinity/selector, "
        "2 node(s) didn't match pod anti-affinity rules. ")
    assert decision.message.endswith("preemption: 0/3 nodes are available: 1 Preemption is not helpful for "
                                     "scheduling, 2 No preemption victims found for incoming pod.")


def test_node_selector_and_node_affinity_operators() -> None:
    zone_a = Pod("ns", "a", {}, {"cpu": 1}, {ZONE: "zone-a", "kubevirt.io/schedulable": "true"})
    assert schedule(zone_a, NODES3, []).node == "sim-node-0"
    nowhere = Pod("ns", "a", {}, {"cpu": 1}, {ZONE: "zone-c"})
    assert schedule(nowhere, NODES3, []).reasons == {n.name: [NODE_AFFINITY] for n in NODES3}
    node = NODES3[1]
    def term(*exprs: dict[str, Any]) -> dict[str, Any]:
        return {"matchExpressions": list(exprs)}
    assert node_selector_term(node, term({"key": ZONE, "operator": "NotIn", "values": ["zone-a"]}))
    assert node_selector_term(node, term({"key": ZONE, "operator": "Exists"}))
    assert not node_selector_term(node, term({"key": "gpu", "operator": "Exists"}))
    assert node_selector_term(node, term({"key": "gpu", "operator": "DoesNotExist"}))
    assert not node_selector_term(node, {})  # an empty term selects nothing
    assert node_selector_term(node, {"matchFields": [{"key": "metadata.name", "operator": "In",
                                                      "values": ["sim-node-1"]}]})


def test_required_pod_affinity_follows_its_peer_and_the_first_of_a_group_goes_anywhere() -> None:
    placed = [pod("db", {"app": "db"}, "sim-node-2")]
    decision = schedule(pod("app", podAffinity=required(HOST, app="db")), NODES3, placed)
    assert decision.node == "sim-node-2"
    assert decision.reasons == {"sim-node-0": [POD_AFFINITY], "sim-node-1": [POD_AFFINITY]}
    zone = schedule(pod("app", podAffinity=required(ZONE, app="db")), NODES3, placed)
    assert zone.node == "sim-node-1" and list(zone.reasons) == ["sim-node-0"]  # same zone, fewer pods
    assert schedule(pod("app", podAffinity=required(HOST, app="cache")), NODES3, placed).node is None
    # No pod matches yet, and the pod matches its own term: it starts the group.
    assert schedule(pod("c0", {"app": "cache"}, podAffinity=required(HOST, app="cache")), NODES3, placed).node


def test_resources_are_summed_per_node() -> None:
    full = [pod(f"big-{n.name}", node=n.name, cpu=15) for n in NODES3]
    decision = schedule(pod("two", cpu=2), NODES3, full)
    assert decision.node is None and decision.message.startswith("0/3 nodes are available: 3 Insufficient cpu. ")
    assert schedule(pod("one", cpu=1), NODES3, full).node == "sim-node-0"
    assert schedule(pod("huge", memory=512 * GiB), NODES3, []).message.startswith(
        "0/3 nodes are available: 3 Insufficient memory.")
    assert vmi_requests({"domain": {"cpu": {"cores": 4}, "memory": {"guest": "2Gi"}}}) == {
        "cpu": 0.4, "memory": 2 * GiB}  # KubeVirt's defaults: a tenth of a core per vCPU
    assert vmi_requests({"domain": {"resources": {"requests": {"cpu": "2", "memory": "1Gi"}}}}) == {
        "cpu": 2, "memory": GiB}


def test_preferences_score_before_spread() -> None:
    placed = [pod("db", {"app": "db"}, "sim-node-1"), pod("x", node="sim-node-0")]
    near = {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 50, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": HOST}}]}
    decision = schedule(pod("app", podAffinity=near), NODES3, placed)
    assert decision.node == "sim-node-1" and decision.scores == {"sim-node-0": 0, "sim-node-1": 50, "sim-node-2": 0}
    away = {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 10, "podAffinityTerm": {"labelSelector": {"matchLabels": {"app": "db"}}, "topologyKey": ZONE}}]}
    assert schedule(pod("app", podAntiAffinity=away), NODES3, placed).node == "sim-node-0"
    prefer_b = {"preferredDuringSchedulingIgnoredDuringExecution": [
        {"weight": 5, "preference": {"matchExpressions": [{"key": ZONE, "operator": "In", "values": ["zone-b"]}]}}]}
    assert schedule(pod("app", nodeAffinity=prefer_b), NODES3, placed).node == "sim-node-2"
    assert fit_error(1, {"n": ["Insufficient cpu", "Insufficient memory"]}).startswith(
        "0/1 nodes are available: 1 Insufficient cpu, 1 Insufficient memory. ")


# ------------------------------------------------------------------------------------------------ networks
def vmi(uid: str, interfaces: list[dict[str, Any]], nets: list[dict[str, Any]], ns: str = "ns") -> dict[str, Any]:
    return {"metadata": {"namespace": ns, "name": uid, "uid": uid},
            "spec": {"domain": {"devices": {"interfaces": interfaces}}, "networks": nets}}


def test_interfaces_get_addresses_per_network() -> None:
    two = vmi("u1", [{"name": "default", "masquerade": {}},
                     {"name": "data", "bridge": {}, "macAddress": "02:00:00:00:00:01"}],
              [{"name": "default", "pod": {}}, {"name": "data", "multus": {"networkName": "data-net"}}])
    used: dict[str, set[str]] = {}
    first = networks.interface_status(two, "10.244.1.0/24", {"ns/data-net": None}, used)
    assert [(i["name"], i["interfaceName"]) for i in first] == [("default", "eth0"), ("data", "eth1")]
    assert first[0]["ipAddress"] == "10.244.1.2" and first[0]["ipAddresses"] == ["10.244.1.2"]
    subnet = networks.nad_subnet("ns", "data-net", None)[0]
    assert str(subnet).startswith("192.168.") and first[1]["ipAddress"] == str(subnet.network_address + 2)
    assert first[1]["mac"] == "02:00:00:00:00:01" and first[0]["mac"].startswith("52:54:00:")
    again = networks.interface_status(dict(two, metadata={"namespace": "ns", "name": "b", "uid": "u2"}),
                                      "10.244.1.0/24", {}, used)
    assert [i["ipAddress"] for i in again] == ["10.244.1.3", str(subnet.network_address + 3)]
    # What is handed out is read back from the VMIs' status.
    assert networks.used_addresses([dict(two, status={"interfaces": first})]) == {
        "pod": {"10.244.1.2"}, "multus:ns/data-net": {first[1]["ipAddress"]}}


def test_nad_ipam_decides_the_subnet() -> None:
    def nad(config: dict[str, Any]) -> dict[str, Any]:
        return {"spec": {"config": json.dumps(config)}}
    assert networks.nad_subnet("ns", "n", nad({"ipam": {"type": "whereabouts", "range": "10.10.0.0/28"}})) == (
        networks.ipaddress.ip_network("10.10.0.0/28"), 1)
    assert str(networks.nad_subnet("ns", "n", nad({"plugins": [{"type": "bridge", "ipam": {
        "type": "host-local", "subnet": "172.30.0.0/16"}}]}))[0]) == "172.30.0.0/16"
    assert str(networks.nad_subnet("ns", "n", nad({"ipam": {"ranges": [[{"subnet": "10.1.2.0/24"}]]}}))[0]) == \
        "10.1.2.0/24"
    assert networks.nad_subnet("ns", "n", nad({"ipam": {}})) == networks.nad_subnet("ns", "n", None)
    assert networks.nad_subnet("a", "n", None) != networks.nad_subnet("b", "n", None)  # per namespace/name
    assert networks.nad_ref("ns", "other/n") == ("other", "n") and networks.nad_ref("ns", "n") == ("ns", "n")
    assert networks.interfaces({"spec": {}})[0][1] == {"name": "default", "pod": {}}  # auto-attached


# ------------------------------------------------------------------------------- virt-api's console websockets
def request_headers(**changes: str) -> Message:
    """Headers as http.server reads them: names in any case."""
    message = Message()
    for name, value in {"connection": "keep-alive, Upgrade", "upgrade": "websocket", "sec-websocket-version": "13",
                        "sec-websocket-key": base64.b64encode(b"0123456789abcdef").decode(),
                        **{k.replace("_", "-"): v for k, v in changes.items()}}.items():
        message[name] = value
    return message


def test_websocket_handshake_is_checked_as_gorilla_does() -> None:
    assert websocket.handshake_error("GET", request_headers()) is None
    assert "'upgrade' token not found in 'Connection' header" in str(
        websocket.handshake_error("GET", request_headers(connection="close")))
    assert "unsupported version" in str(websocket.handshake_error("GET", request_headers(sec_websocket_version="8")))
    assert "16-byte length" in str(websocket.handshake_error("GET", request_headers(sec_websocket_key="c2hvcnQ=")))
    # RFC 6455 §1.3's example.
    assert websocket.accept("dGhlIHNhbXBsZSBub25jZQ==") == "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
    assert websocket.subprotocol({"Sec-WebSocket-Protocol": "binary, plain.kubevirt.io"},
                                 ("plain.kubevirt.io",)) == "plain.kubevirt.io"
    assert websocket.subprotocol({}, ("plain.kubevirt.io",)) is None


def client_frames(*frames: bytes) -> io.BytesIO:
    return io.BytesIO(b"".join(frames))


def test_websocket_messages_pings_and_the_closing_handshake() -> None:
    mask = b"\x01\x02\x03\x04"
    big = bytes(range(256)) * 300  # a 64-bit length
    rfile = client_frames(websocket.encode(websocket.TEXT, "hé".encode(), mask, fin=False),
                          websocket.encode(websocket.PING, b"p", mask),
                          websocket.encode(websocket.CONTINUATION, b"llo", mask),
                          websocket.encode(websocket.BINARY, big, mask),
                          websocket.encode(websocket.CLOSE, websocket.close_payload(1000), mask))
    wfile = io.BytesIO()
    conn = websocket.Connection(rfile, wfile)
    assert conn.receive() == (websocket.TEXT, "hé".encode() + b"llo")  # reassembled, the ping answered between
    assert conn.receive() == (websocket.BINARY, big)
    assert conn.receive() is None and conn.close_code == 1000 and conn.closed
    conn.send(b"late")  # (a server's frames are not masked)
    sent = io.BytesIO(wfile.getvalue())
    assert websocket.read_frame(sent, masked=False) == websocket.Frame(True, websocket.PONG, b"p")
    assert websocket.read_frame(sent, masked=False) == websocket.Frame(True, websocket.CLOSE, b"\x03\xe8")


def test_websocket_refuses_an_unmasked_client_frame() -> None:
    wfile = io.BytesIO()
    conn = websocket.Connection(client_frames(websocket.encode(websocket.BINARY, b"x")), wfile)
    assert conn.receive() is None
    assert websocket.read_frame(io.BytesIO(wfile.getvalue()), masked=False).payload[:2] == b"\x03\xea"  # 1002


def test_the_fake_guests_serial_port_and_display() -> None:
    port = virtapi.SerialPort("ns", "web-1")
    assert port.greeting() == b"\r\nweb-1 login: " and port.receive(b"root\r") == (b"root\r", False)
    display = virtapi.Framebuffer("ns", "web-1")
    assert display.greeting() == b"RFB 003.008\n"
    assert display.receive(b"RFB 003") == (b"", False)  # a version split across messages
    assert display.receive(b".008\n") == (b"\x01\x01", False)
    assert display.receive(b"\x01") == (b"\x00\x00\x00\x00", False)
    init, done = display.receive(b"\x00")
    assert not done and init[:4] == b"\x02\xd0\x01\x90" and init[24:] == b"QEMU (ns_web-1)"
    assert display.receive(b"\x02\x00\x00\x01\x00\x00\x00\x00") == (b"", False)  # SetEncodings: ignored
    assert virtapi.Framebuffer("ns", "x").receive(b"RFB 003.003\n")[1]  # an older client: refused


def test_editors_may_open_consoles_as_kubevirts_roles_say() -> None:
    edit, admin = virtapi.cluster_roles()
    assert edit["metadata"]["name"] == "kubevirt.io:edit"
    assert edit["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-edit"] == "true"
    assert admin["metadata"]["labels"]["rbac.authorization.k8s.io/aggregate-to-admin"] == "true"
    rule = edit["rules"][0]
    assert rule["apiGroups"] == ["subresources.kubevirt.io"] and rule["verbs"] == ["get"]
    assert {"virtualmachineinstances/console", "virtualmachineinstances/vnc"} <= set(rule["resources"])


def test_qcow2_to_raw_gives_the_guest_view_as_a_sparse_disk(tmp_path: Any) -> None:
    import os

    from tests.qcow2 import NotQcow2, make_qcow2, qcow2_to_raw

    guest = os.urandom(200_000)
    src, dst = tmp_path / "img.qcow2", tmp_path / "disk.img"
    src.write_bytes(make_qcow2(32 << 20, guest))
    with src.open("rb") as f, dst.open("wb") as out:
        assert qcow2_to_raw(f, out) == 32 << 20
    disk = dst.read_bytes()
    assert len(disk) == 32 << 20 and disk[:len(guest)] == guest and not disk[len(guest):].strip(b"\0")
    assert dst.stat().st_blocks * 512 < 4 << 20  # the unallocated clusters are holes
    src.write_bytes(make_qcow2(1 << 20, b"x", backing_file="base.qcow2"))
    with src.open("rb") as f, dst.open("wb") as out, pytest.raises(NotQcow2, match="backing file"):
        qcow2_to_raw(f, out)
