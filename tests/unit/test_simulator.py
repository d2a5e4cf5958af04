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
from tests.cloud.kubelet import NODES, quantity
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


def test_the_layout_is_three_nodes_in_two_zones() -> None:
    assert NODES == (("sim-node-0", "zone-a"), ("sim-node-1", "zone-b"), ("sim-node-2", "zone-b"))
    assert networks.pod_cidr(0) == "10.244.0.0/24" and networks.pod_cidr(2) == "10.244.2.0/24"


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
