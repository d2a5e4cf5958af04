"""virt-api's aggregated API, `subresources.kubevirt.io`, played by the simulator behind a real APIService.

As virt-operator does, the simulator registers the APIServices v1 and v1alpha3.subresources.kubevirt.io
for the Service kubevirt/virt-api, with its own CA in `caBundle`. That Service is `type: ExternalName,
externalName: localhost`: kube-apiserver's aggregator resolves an ExternalName service to its name and
the APIService's port, so it dials 127.0.0.1 and never a ClusterIP. The server speaks HTTPS with a
certificate for virt-api.kubevirt.svc (the name the aggregator checks) and, like every aggregated server,
requires the front-proxy client certificate that kube-apiserver presents (CA and allowed names read from
kube-system/extension-apiserver-authentication), then trusts X-Remote-User / X-Remote-Group. kube-apiserver
has already authorized the request with RBAC (`update` on virtualmachineinstances/pause in the group
subresources.kubevirt.io, say) before proxying it.

Served, as virt-api does (pkg/virt-api/api.go, pkg/virt-api/rest/lifecycle.go, console.go, vnc.go):
  GET  /, /apis, /apis/subresources.kubevirt.io, /apis/subresources.kubevirt.io/{v1,v1alpha3}[/]
       (an APIResourceList whose names come from the vendored swagger's paths: names and `namespaced`
       only, no verbs or kinds, as virt-api lists them), .../healthz, .../version, /healthz, /openapi/v2,
       /openapi/v3 (the vendored document cut down to this group)
  GET  .../virtualmachineinstances/{name}/console | vnc   → 101, a websocket (tests/cloud/websocket.py;
       subprotocol plain.kubevirt.io when offered, binary frames): the console is a fake guest's serial
       port (a "\r\n<name> login: " banner, then an echo of what is typed, as a tty with echo on), vnc a
       fake QEMU VNC server (RFB 3.8: `RFB 003.008\n`, security type None, ServerInit with the desktop
       name "QEMU (<namespace>_<name>)"; what the client sends after that is read and ignored)
  PUT  .../virtualmachineinstances/{name}/pause | unpause | softreboot   → 200, empty body
  PUT  .../virtualmachines/{name}/start | stop | restart                  → 202, empty body
Errors are metav1.Status objects with virt-api's codes and messages (404 when the VMI/VM is missing, 409
"VMI is already paused", "VMI is not paused", "VM is not running", "VMI is paused", ...; for console and
vnc, checked before the upgrade as v1.7's streamer does: 404, 400 "VMI is not running", 409 "VMI is in
failed status" (console), 400 "No serial consoles are present." / "No graphics devices are present." when
autoattachSerialConsole / autoattachGraphicsDevice is false; a request that is no websocket handshake gets
gorilla/websocket's plain-text 400). Other subresources in the discovery list answer 501.

As virt-operator does, the simulator installs the `subresources.kubevirt.io` get rule of KubeVirt's
`kubevirt.io:edit` and `kubevirt.io:admin` ClusterRoles (console, vnc, vnc/screenshot, ...), aggregated
into the built-in edit and admin roles: a namespace's editors may open its consoles. The rest of those
roles (kubevirt.io kinds, the update verbs) is not installed.

What virt-handler and virt-controller would then do is applied here too: pause sets the VMI's Paused
condition (PausedByUser) and turns its Ready condition False the way the pod readiness gate does; unpause
reverses it; each records the Event virt-handler records (Paused, Unpaused, SoftRebooted).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import ssl
import struct
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud import websocket
from tests.cloud.pki import TLSServer, leaf, new_ca, pem_cert, server_context
from tests.cloud.sim import KV, condition, find_condition, has_condition, vmi_final

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("virt-api")
GROUP = "subresources.kubevirt.io"
VERSIONS = ("v1", "v1alpha3")  # v1.SubresourceGroupVersions: the first is preferred
SERVICE = ("kubevirt", "virt-api")
THIRD_PARTY = Path(__file__).resolve().parents[2] / "third_party" / "kubevirt"
FIELD_MANAGER = "kubevirt-simulator"
PLAIN_STREAM = "plain.kubevirt.io"  # client-go's subresources.PlainStreamProtocolName
# The get rule of KubeVirt v1.7's kubevirt.io:edit and kubevirt.io:admin (pkg/virt-operator/resource/
# generate/rbac/cluster.go): the VMI subresources a namespace's editors read, consoles among them.
EDITORS_GET = ["virtualmachineinstances/console", "virtualmachineinstances/vnc",
               "virtualmachineinstances/vnc/screenshot", "virtualmachineinstances/portforward",
               "virtualmachineinstances/guestosinfo", "virtualmachineinstances/filesystemlist",
               "virtualmachineinstances/userlist", "virtualmachineinstances/sev/fetchcertchain",
               "virtualmachineinstances/sev/querylaunchmeasurement", "virtualmachineinstances/usbredir",
               "virtualmachines/objectgraph", "virtualmachineinstances/objectgraph"]


class StatusError(Exception):
    """apimachinery's errors.StatusError: what virt-api's writeError sends."""

    def __init__(self, code: int, reason: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code, self.reason, self.details = code, reason, details

    def status(self) -> dict[str, Any]:
        out = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": str(self),
               "reason": self.reason, "code": self.code}
        if self.details:
            out["details"] = self.details
        return out


def _qualified(kind: str) -> str:
    return f"{kind}.kubevirt.io"  # v1.Resource(kind): group kubevirt.io, the singular kind as resource


def conflict(kind: str, name: str, why: str) -> StatusError:
    return StatusError(409, "Conflict", f'Operation cannot be fulfilled on {_qualified(kind)} "{name}": {why}',
                       {"name": name, "group": "kubevirt.io", "kind": kind})


def not_found(kind: str, name: str) -> StatusError:
    return StatusError(404, "NotFound", f'{_qualified(kind)} "{name}" not found',
                       {"name": name, "group": "kubevirt.io", "kind": kind})


def forbidden(kind: str, name: str, why: str) -> StatusError:
    return StatusError(403, "Forbidden", f'{_qualified(kind)} "{name}" is forbidden: {why}',
                       {"name": name, "group": "kubevirt.io", "kind": kind})


def bad_request(why: str) -> StatusError:
    return StatusError(400, "BadRequest", why)


def internal(why: str) -> StatusError:
    return StatusError(500, "InternalError", f"Internal error occurred: {why}", {"causes": [{"message": why}]})


def swagger() -> dict[str, Any]:
    return dict(json.loads((THIRD_PARTY / "swagger.json").read_text()))


def resource_names(doc: dict[str, Any], version: str) -> list[str]:
    """The namespaced subresources of `version` in the official swagger, named as discovery names them:
    `virtualmachineinstances/pause`, `virtualmachineinstances/portforward` (path parameters dropped),
    `expand-vm-spec`."""
    prefix = f"/apis/{GROUP}/{version}/namespaces/{{namespace}}/"
    names = set()
    for path in doc["paths"]:
        if path.startswith(prefix):
            parts = [p for p in path[len(prefix):].split("/") if not p.startswith("{")]
            names.add("/".join(parts))
    return sorted(names)


def resource_list(doc: dict[str, Any], version: str) -> dict[str, Any]:
    # virt-api's list: names and namespaced only (Kind, SingularName and Verbs are left at their zero values).
    return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": f"{GROUP}/{version}",
            "resources": [{"name": n, "singularName": "", "namespaced": True, "kind": "", "verbs": None}
                          for n in resource_names(doc, version)]}


def api_group() -> dict[str, Any]:
    # virt-api's subresourceAPIGroup() calls the group "subresource.kubevirt.io"; its versions are right.
    versions = [{"groupVersion": f"{GROUP}/{v}", "version": v} for v in VERSIONS]
    return {"kind": "APIGroup", "apiVersion": "v1", "name": "subresource.kubevirt.io", "versions": versions,
            "preferredVersion": versions[0],
            "serverAddressByClientCIDRs": [{"clientCIDR": "0.0.0.0/0", "serverAddress": ""}]}


def openapi_v2(doc: dict[str, Any]) -> dict[str, Any]:
    """The official document cut down to this group's paths and the definitions they reach."""
    paths = {p: v for p, v in doc["paths"].items() if p.startswith(f"/apis/{GROUP}")}
    defs: dict[str, Any] = {}
    todo = re.findall(r'"#/definitions/([^"]+)"', json.dumps(paths))
    while todo:
        name = todo.pop()
        if name not in defs and name in doc["definitions"]:
            defs[name] = doc["definitions"][name]
            todo.extend(re.findall(r'"#/definitions/([^"]+)"', json.dumps(defs[name])))
    return {"swagger": "2.0", "info": {"title": "KubeVirt API", "version": version()}, "paths": paths,
            "definitions": defs}


def openapi_v3(v2: dict[str, Any]) -> dict[str, Any]:
    """The same in OpenAPI 3 form, as the aggregator fetches it per group-version: operations with their
    responses, and the definitions as component schemas."""
    def ops(item: dict[str, Any]) -> dict[str, Any]:
        return {method: {"operationId": op.get("operationId", ""), "description": op.get("description", ""),
                         "responses": {code: {"description": r.get("description", "")}
                                       for code, r in op.get("responses", {}).items()}}
                for method, op in item.items() if method != "parameters"}
    schemas = json.loads(json.dumps(v2["definitions"]).replace('"#/definitions/', '"#/components/schemas/'))
    return {"openapi": "3.0.0", "info": v2["info"], "paths": {p: ops(item) for p, item in v2["paths"].items()},
            "components": {"schemas": schemas}}


def version() -> str:
    return (THIRD_PARTY / "VERSION").read_text().strip()


def cluster_roles() -> list[dict[str, Any]]:
    """What virt-operator installs for a namespace's editors and admins, the console part of it."""
    return [{"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": f"kubevirt.io:{role}",
                          "labels": {"kubevirt.io": "", f"rbac.authorization.k8s.io/aggregate-to-{role}": "true"}},
             "rules": [{"apiGroups": [GROUP], "resources": EDITORS_GET, "verbs": ["get"]}]}
            for role in ("edit", "admin")]


class SerialPort:
    """A guest's serial console as virt-handler streams it: a Linux guest's login prompt, then the tty's echo
    of every byte typed."""

    def __init__(self, ns: str, name: str) -> None:
        self.name = name

    def greeting(self) -> bytes:
        return f"\r\n{self.name} login: ".encode()

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        return data, False


class Framebuffer:
    """A guest's display as QEMU's VNC server offers it to virt-handler: the RFB 3.8 handshake with security
    type None (KubeVirt's VNC socket has no password), up to ServerInit; later client messages (SetEncodings,
    FramebufferUpdateRequest, ...) are read and ignored. RFC 6143 §7.1-7.3."""

    VERSION = b"RFB 003.008\n"
    WIDTH, HEIGHT = 720, 400  # the VGA text mode a guest boots in
    # 32 bits per pixel, depth 24, little-endian, true colour, 255 per channel, shifts 16/8/0.
    PIXEL_FORMAT = struct.pack(">BBBBHHHBBB3x", 32, 24, 0, 1, 255, 255, 255, 16, 8, 0)

    def __init__(self, ns: str, name: str) -> None:
        self.desktop = f"QEMU ({ns}_{name})"  # libvirt names the domain <namespace>_<name>
        self.buffer = b""
        self.state = "version"

    def greeting(self) -> bytes:
        return self.VERSION

    def receive(self, data: bytes) -> tuple[bytes, bool]:
        self.buffer += data
        if self.state == "version" and len(self.buffer) >= 12:
            version, self.buffer = self.buffer[:12], self.buffer[12:]
            if version != self.VERSION:
                reason = f"unsupported RFB version {version!r}".encode()
                return b"\x00" + struct.pack(">I", len(reason)) + reason, True  # no security types: failed
            self.state = "security"
            return b"\x01\x01", False  # one security type: None
        if self.state == "security" and self.buffer:
            chosen, self.buffer = self.buffer[0], self.buffer[1:]
            if chosen != 1:
                reason = b"security type not offered"
                return struct.pack(">II", 1, len(reason)) + reason, True
            self.state = "init"
            return struct.pack(">I", 0), False  # SecurityResult OK
        if self.state == "init" and self.buffer:
            self.buffer, self.state = b"", "normal"  # ClientInit's shared flag
            name = self.desktop.encode()
            return struct.pack(">HH", self.WIDTH, self.HEIGHT) + self.PIXEL_FORMAT + struct.pack(">I", len(name)) \
                + name, False
        if self.state == "normal":
            self.buffer = b""
        return b"", False


def run_strategy(vm: dict[str, Any]) -> str:
    spec = vm["spec"]
    if spec.get("runStrategy"):
        return str(spec["runStrategy"])
    return "Always" if spec.get("running") else "Halted"


class VirtAPI:
    def __init__(self, sim: Simulator, port: int, state_dir: Path) -> None:
        self.sim = sim
        self.port = port
        self.state_dir = state_dir
        self.doc = swagger()
        self.lists = {v: resource_list(self.doc, v) for v in VERSIONS}
        self.openapi = openapi_v2(self.doc)
        self.openapi_v3 = {v: openapi_v3({**self.openapi, "paths": {
            p: item for p, item in self.openapi["paths"].items() if p.startswith(f"/apis/{GROUP}/{v}/")}})
            for v in VERSIONS}
        self.openapi_hash = hashlib.sha256(json.dumps(self.openapi_v3, sort_keys=True).encode()).hexdigest()
        self.allowed_names: list[str] = []

    # ----- what virt-operator sets up -----
    def start(self) -> None:
        front_proxy_ca, self.allowed_names = self.requestheader()
        ca = new_ca("kubevirt.io:virt-api-ca")
        serving = leaf("virt-api.kubevirt.svc", ca, server=True,
                       dns=("virt-api.kubevirt.svc", "virt-api.kubevirt.svc.cluster.local"))
        ctx = server_context(*serving, self.state_dir / "virt-api", "tls")
        ctx.verify_mode = ssl.CERT_REQUIRED  # only kube-apiserver's front proxy may call
        ctx.load_verify_locations(cadata=front_proxy_ca)
        api = self

        class Handler(VirtAPIHandler):
            app = api

        server = TLSServer(self.port, Handler, ctx)
        server.serve_in_thread("virt-api")
        ca_pem = pem_cert(ca[0])
        (self.state_dir / "virt-api-ca.crt").write_bytes(ca_pem)
        self.register(ca_pem)
        log.info("virt-api serving https://127.0.0.1:%d for the APIServices of %s", self.port, GROUP)

    def requestheader(self) -> tuple[str, list[str]]:
        """The front-proxy CA and allowed client names that kube-apiserver publishes for aggregated servers."""
        deadline = time.monotonic() + 60
        while True:
            try:
                cm = self.sim.rest("GET", "/api/v1/namespaces/kube-system/configmaps/"
                                          "extension-apiserver-authentication")
                data = cm.get("data") or {}
                if data.get("requestheader-client-ca-file"):
                    return data["requestheader-client-ca-file"], json.loads(
                        data.get("requestheader-allowed-names") or "[]")
            except ApiException as e:
                if e.status != 404 or time.monotonic() > deadline:
                    raise
            if time.monotonic() > deadline:
                raise RuntimeError("kube-apiserver published no requestheader-client-ca-file")
            time.sleep(0.2)

    def apply(self, path: str, body: dict[str, Any]) -> None:
        self.sim.rest("PATCH", f"{path}?fieldManager={FIELD_MANAGER}&force=true", body,
                      "application/apply-patch+yaml")

    def register(self, ca_pem: bytes) -> None:
        ns, name = SERVICE
        self.apply(f"/api/v1/namespaces/{ns}", {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": ns}})
        self.apply(f"/api/v1/namespaces/{ns}/services/{name}", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": ns},
            # Not a ClusterIP: the aggregator dials an ExternalName service at its name, here loopback.
            "spec": {"type": "ExternalName", "externalName": "localhost",
                     "ports": [{"name": "https", "port": self.port, "protocol": "TCP"}]}})
        for priority, version_ in zip((15, 10), VERSIONS, strict=True):
            apiservice = f"{version_}.{GROUP}"
            self.apply(f"/apis/apiregistration.k8s.io/v1/apiservices/{apiservice}", {
                "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
                "metadata": {"name": apiservice, "labels": {"kubevirt.io": "virt-api"}},
                "spec": {"group": GROUP, "version": version_, "groupPriorityMinimum": 1000,
                         "versionPriority": priority, "caBundle": base64.b64encode(ca_pem).decode(),
                         "service": {"namespace": ns, "name": name, "port": self.port}}})
        for role in cluster_roles():
            self.apply(f"/apis/rbac.authorization.k8s.io/v1/clusterroles/{role['metadata']['name']}", role)

    # ----- reads and writes, as virt-api makes them (from the API server, not a cache) -----
    def get(self, plural: str, ns: str, name: str) -> dict[str, Any] | None:
        try:
            return self.sim.rest("GET", f"/apis/{KV[0]}/{KV[1]}/namespaces/{ns}/{plural}/{name}")
        except ApiException as e:
            if e.status == 404:
                return None
            raise internal(f"unable to retrieve {plural} [{name}]: {e.reason}") from e

    def vmi_conditions(self, ns: str, name: str, change: Callable[[dict[str, Any]], list[dict[str, Any]]]) -> None:
        """What virt-handler writes once the domain is (un)paused: the VMI's conditions, by an update of the whole
        VMI (it has no status subresource) guarded by its resourceVersion, retried on a conflict."""
        for _ in range(5):
            vmi = self.get("virtualmachineinstances", ns, name)
            if vmi is None:
                return
            vmi["status"] = {**(vmi.get("status") or {}), "conditions": change(vmi)}
            try:
                written = self.sim.rest("PUT", f"/apis/{KV[0]}/{KV[1]}/namespaces/{ns}/virtualmachineinstances/"
                                               f"{name}", vmi, "application/json")
            except ApiException as e:
                if e.status == 409:
                    continue
                raise
            self.sim.remember("virtualmachineinstances", written)
            return

    def patch_vm(self, ns: str, name: str, ops: list[dict[str, Any]], status: bool) -> None:
        path = f"/apis/{KV[0]}/{KV[1]}/namespaces/{ns}/virtualmachines/{name}" + ("/status" if status else "")
        try:
            self.sim.rest("PATCH", path, ops, "application/json-patch+json")
        except ApiException as e:
            if "test operation does not apply" in (e.body or "") or "testing value" in (e.body or ""):
                raise conflict("virtualmachine", name, f"jsonpatch test operation does not apply: {e.body}") from e
            raise internal(str(e.body or e.reason)) from e

    # ----- VMI subresources (virt-api validates, virt-handler acts) -----
    def vmi(self, ns: str, name: str) -> dict[str, Any]:
        vmi = self.get("virtualmachineinstances", ns, name)
        if vmi is None:
            raise not_found("virtualmachineinstance", name)
        return vmi

    def pause(self, ns: str, name: str, body: dict[str, Any]) -> int:
        vmi = self.vmi(ns, name)
        if vmi.get("status", {}).get("phase") != "Running":
            raise conflict("virtualmachineinstance", name, "VM is not running")
        probe = vmi["spec"].get("livenessProbe")
        if probe is not None and probe.get("guestAgentPing") is None:
            raise forbidden("virtualmachineinstance", name,
                            "Pausing VMIs with a non-GuestAgentPing LivenessProbe is not supported")
        if find_condition(vmi, "Paused") is not None:
            raise conflict("virtualmachineinstance", name, "VMI is already paused")
        if body.get("dryRun") == ["All"]:
            return 200

        # virt-handler's Paused condition; virt-controller then closes the launcher pod's readiness gate, and the
        # VMI's Ready follows the pod's.
        def paused(v: dict[str, Any]) -> list[dict[str, Any]]:
            keep = [c for c in v.get("status", {}).get("conditions") or [] if c["type"] != "Paused"]
            return [*keep, {**condition("Paused", True, "PausedByUser", "VMI was paused by user"),
                            "lastProbeTime": None}]
        self.vmi_conditions(ns, name, paused)
        self.sim.event(vmi, "Paused", "VirtualMachineInstance paused", "virt-handler")
        return 200

    def unpause(self, ns: str, name: str, body: dict[str, Any]) -> int:
        vm = self.get("virtualmachines", ns, name)
        if vm is not None and vm.get("status", {}).get("snapshotInProgress"):
            raise conflict("virtualmachine", name, "VM snapshot is in progress")
        vmi = self.vmi(ns, name)
        if vmi.get("status", {}).get("phase") != "Running":
            raise conflict("virtualmachineinstance", name, "VMI is not running")
        if find_condition(vmi, "Paused") is None:
            raise conflict("virtualmachineinstance", name, "VMI is not paused")
        if body.get("dryRun") == ["All"]:
            return 200

        def unpaused(v: dict[str, Any]) -> list[dict[str, Any]]:
            return [c for c in v.get("status", {}).get("conditions") or [] if c["type"] != "Paused"]
        self.vmi_conditions(ns, name, unpaused)
        self.sim.event(vmi, "Unpaused", "VirtualMachineInstance unpaused", "virt-handler")
        return 200

    def softreboot(self, ns: str, name: str, body: dict[str, Any]) -> int:
        vmi = self.vmi(ns, name)
        if vmi.get("status", {}).get("phase") != "Running":
            raise conflict("virtualmachineinstance", name, "VM is not running")
        if has_condition(vmi, "Paused"):
            raise conflict("virtualmachineinstance", name, "VMI is paused")
        acpi = (vmi["spec"].get("domain", {}).get("features") or {}).get("acpi") or {}
        if find_condition(vmi, "AgentConnected") is None and acpi.get("enabled") is False:
            raise conflict("virtualmachineinstance", name,
                           "VMI neither have the agent connected nor the ACPI feature enabled")
        uid = vmi["metadata"]["uid"]
        self.sim.soft_reboots[uid] = self.sim.soft_reboots.get(uid, 0) + 1
        log.info("vmi %s/%s soft rebooted (%d times); it stays Running", ns, name, self.sim.soft_reboots[uid])
        self.sim.event(vmi, "SoftRebooted", "VirtualMachineInstance soft rebooted", "virt-handler")
        return 200

    def stream_target(self, ns: str, name: str, sub: str) -> SerialPort | Framebuffer:
        """The VMI's serial port or display, once virt-api's checks before the upgrade pass (rest/console.go
        validateVMIForConsole, rest/vnc.go vmiHasDisplay)."""
        vmi = self.vmi(ns, name)
        devices = vmi["spec"].get("domain", {}).get("devices") or {}
        phase = vmi.get("status", {}).get("phase")
        if sub == "console":
            if devices.get("autoattachSerialConsole") is False:
                raise bad_request("No serial consoles are present.")
            if phase == "Failed":
                raise conflict("virtualmachineinstance", name, "VMI is in failed status")
        elif devices.get("autoattachGraphicsDevice") is False:
            raise bad_request("No graphics devices are present.")
        if phase != "Running":
            raise bad_request("VMI is not running")
        return SerialPort(ns, name) if sub == "console" else Framebuffer(ns, name)

    # ----- VM subresources: they change the VM, virt-controller does the rest -----
    def vm(self, ns: str, name: str) -> dict[str, Any]:
        vm = self.get("virtualmachines", ns, name)
        if vm is None:
            raise not_found("virtualmachine", name)
        return vm

    @staticmethod
    def change_requests(vm: dict[str, Any], *changes: dict[str, Any]) -> list[dict[str, Any]]:
        """getChangeRequestJson: JSON patch ops adding state change requests, guarded by a test op."""
        status = vm.get("status") or {}
        ops: list[dict[str, Any]]
        if not status:
            ops = [{"op": "add", "path": "/status", "value": {"stateChangeRequests": list(changes)}}]
        else:
            current = status.get("stateChangeRequests") or []
            ops = [{"op": "test", "path": "/status/stateChangeRequests", "value": current or None}]
            if not current:
                ops.append({"op": "add", "path": "/status/stateChangeRequests", "value": list(changes)})
            elif len(changes) == 1 and changes[0]["action"] == "Stop":
                ops.append({"op": "replace", "path": "/status/stateChangeRequests", "value": list(changes)})
            else:
                raise internal("unable to complete request: stop/start already underway")
        if status.get("startFailure") is not None:
            ops.append({"op": "remove", "path": "/status/startFailure"})
        return ops

    @staticmethod
    def running_patch(vm: dict[str, Any], running: bool) -> list[dict[str, Any]]:
        if vm["spec"].get("runStrategy") is not None:
            return [{"op": "test", "path": "/spec/runStrategy", "value": vm["spec"]["runStrategy"]},
                    {"op": "replace", "path": "/spec/runStrategy", "value": "Always" if running else "Halted"}]
        return [{"op": "test", "path": "/spec/running", "value": vm["spec"].get("running")},
                {"op": "replace", "path": "/spec/running", "value": running}]

    def restart(self, ns: str, name: str, body: dict[str, Any]) -> int:
        grace = body.get("gracePeriodSeconds")
        if grace is not None and grace > 0:
            raise bad_request("For force restart, only gracePeriod=0 is supported for now")
        if grace is not None and grace < 0:
            raise bad_request("gracePeriod has to be greater or equal to 0")
        vm = self.vm(ns, name)
        strategy = run_strategy(vm)
        if strategy in ("Halted", "Once"):
            raise conflict("virtualmachine", name, f"RunStategy {strategy} does not support manual restart requests")
        vmi = self.get("virtualmachineinstances", ns, name)
        if vmi is None:
            raise conflict("virtualmachine", name, "VM is not running: Halted")
        self.patch_vm(ns, name, self.change_requests(vm, {"action": "Stop", "uid": vmi["metadata"]["uid"]},
                                                     {"action": "Start"}), status=True)
        return 202

    def start_vm(self, ns: str, name: str, body: dict[str, Any]) -> int:
        vm = self.vm(ns, name)
        vmi = self.get("virtualmachineinstances", ns, name)
        if vmi is not None and not vmi_final(vmi) and vmi.get("status", {}).get("phase") not in (None, "", "Unknown"):
            raise conflict("virtualmachine", name, "VM is already running")
        strategy = run_strategy(vm)
        if strategy == "Halted":
            self.patch_vm(ns, name, self.running_patch(vm, True), status=False)
        elif strategy in ("RerunOnFailure", "Manual"):
            if strategy == "RerunOnFailure" and vmi is not None and vmi["status"].get("phase") == "Failed":
                raise conflict("virtualmachine", name, "RerunOnFailure does not support starting VM from failed state")
            changes = [{"action": "Start"}]
            if vmi is not None and vmi_final(vmi):
                changes.insert(0, {"action": "Stop", "uid": vmi["metadata"]["uid"]})
            self.patch_vm(ns, name, self.change_requests(vm, *changes), status=True)
        else:
            raise conflict("virtualmachine", name, f"{strategy} does not support manual start requests")
        return 202

    def stop_vm(self, ns: str, name: str, body: dict[str, Any]) -> int:
        vm = self.vm(ns, name)
        strategy = run_strategy(vm)
        vmi = self.get("virtualmachineinstances", ns, name)
        running = vmi is not None and not vmi_final(vmi)
        if strategy == "Halted":
            if not running:
                raise conflict("virtualmachine", name, "VM is not running")
            raise conflict("virtualmachine", name,
                           "Halted only supports manual stop requests with a shorter graceperiod")
        if strategy in ("RerunOnFailure", "Manual"):
            if not running or vmi is None:
                raise conflict("virtualmachine", name, "VM is not running")
            self.patch_vm(ns, name, self.change_requests(vm, {"action": "Stop", "uid": vmi["metadata"]["uid"]}),
                          status=True)
        else:
            self.patch_vm(ns, name, self.running_patch(vm, False), status=False)
        return 202


_PUT = re.compile(rf"^/apis/{re.escape(GROUP)}/(?P<version>v1|v1alpha3)/namespaces/(?P<ns>[^/]+)/"
                  r"(?P<plural>virtualmachineinstances|virtualmachines)/(?P<name>[^/]+)/(?P<sub>.+)$")


_STREAM = re.compile(rf"^/apis/{re.escape(GROUP)}/(?:v1|v1alpha3)/namespaces/(?P<ns>[^/]+)/"
                     r"virtualmachineinstances/(?P<name>[^/]+)/(?P<sub>console|vnc)$")


class VirtAPIHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: VirtAPI

    def setup(self) -> None:
        super().setup()
        self.user, self.groups = "", []  # type: tuple[str, list[str]]

    def handle(self) -> None:
        try:
            self.request.do_handshake()
        except (ssl.SSLError, OSError) as e:
            log.warning("%s: TLS handshake refused: %s", self.client_address[0], e)
            return
        super().handle()

    def authenticated(self) -> bool:
        """The caller is kube-apiserver's front proxy (a client certificate of the front-proxy CA with an
        allowed name); the user it vouches for is in X-Remote-User / X-Remote-Group."""
        cert = self.request.getpeercert() or {}
        cn = next((v for rdn in cert.get("subject", ()) for k, v in rdn if k == "commonName"), "")
        if self.app.allowed_names and cn not in self.app.allowed_names:
            self.reply(401, StatusError(401, "Unauthorized", f"client certificate {cn!r} is not allowed").status())
            return False
        self.user = self.headers.get("X-Remote-User", "")
        self.groups = self.headers.get_all("X-Remote-Group") or []
        return True

    def reply(self, code: int, body: Any = None) -> None:
        data = b"" if body is None else json.dumps(body).encode()
        self.send_response(code)
        if body is not None:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        if not self.authenticated():
            return
        path = self.path.split("?", 1)[0].rstrip("/") or "/"
        stream = _STREAM.match(path)
        if stream:
            self.stream(stream["ns"], stream["name"], stream["sub"])
            return
        base = f"/apis/{GROUP}"
        routes: dict[str, Callable[[], Any]] = {
            "/": lambda: {"paths": ["/apis", "/openapi/v2", base, *(f"{base}/{v}" for v in VERSIONS)]},
            "/apis": lambda: {"kind": "APIGroupList", "apiVersion": "v1", "groups": [api_group()]},
            base: api_group,
            "/healthz": lambda: {"apiserver": {"connectivity": "ok"}},
            "/openapi/v2": lambda: self.app.openapi,
            "/openapi/v3": lambda: {"paths": {
                f"apis/{GROUP}/{v}": {"serverRelativeURL": f"/openapi/v3/apis/{GROUP}/{v}?hash={self.app.openapi_hash}"}
                for v in VERSIONS}},
        }
        for v in VERSIONS:
            routes[f"{base}/{v}"] = self.app.lists[v].copy
            routes[f"{base}/{v}/healthz"] = routes["/healthz"]
            routes[f"{base}/{v}/version"] = lambda: {"gitVersion": version(), "platform": "linux/amd64"}
            routes[f"/openapi/v3/apis/{GROUP}/{v}"] = self.app.openapi_v3[v].copy
        route = routes.get(path)
        if route is None:
            self.reply(404, StatusError(404, "NotFound", "the server could not find the requested resource").status())
        else:
            self.reply(200, route())

    def stream(self, ns: str, name: str, sub: str) -> None:
        """A console or VNC websocket: virt-api's checks, then the upgrade, then the guest's side of it until
        either end closes. The connection is the websocket's from then on, never another request's."""
        try:
            guest = self.app.stream_target(ns, name, sub)
        except StatusError as e:
            self.reply(e.code, e.status())
            return
        refusal = websocket.handshake_error(self.command, self.headers)
        if refusal:
            # gorilla's Upgrader answers http.Error(400, "Bad Request"); virt-api's writeError then appends its
            # Status to that body (its WriteHeader is superfluous by then).
            data = b"Bad Request\n" + json.dumps(bad_request(refusal).status()).encode()
            self.send_response(400)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Sec-Websocket-Version", "13")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        self.close_connection = True
        self.send_response(101)
        self.send_header("Upgrade", "websocket")
        self.send_header("Connection", "Upgrade")
        self.send_header("Sec-WebSocket-Accept", websocket.accept(self.headers["Sec-WebSocket-Key"]))
        protocol = websocket.subprotocol(self.headers, (PLAIN_STREAM,))
        if protocol:
            self.send_header("Sec-WebSocket-Protocol", protocol)
        self.end_headers()
        conn = websocket.Connection(self.rfile, self.wfile)
        try:
            conn.send(guest.greeting())
            while (message := conn.receive()) is not None:
                reply, done = guest.receive(message[1])
                if reply:
                    conn.send(reply)
                if done:
                    conn.close()
        except OSError as e:
            log.info("%s of %s/%s: the connection ended: %s", sub, ns, name, e)
        log.info("%s of %s/%s closed (peer's code %s)", sub, ns, name, conn.close_code)

    def do_PUT(self) -> None:
        if not self.authenticated():
            return
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        m = _PUT.match(self.path.split("?", 1)[0])
        handlers: dict[tuple[str, str], Callable[[str, str, dict[str, Any]], int]] = {
            ("virtualmachineinstances", "pause"): self.app.pause,
            ("virtualmachineinstances", "unpause"): self.app.unpause,
            ("virtualmachineinstances", "softreboot"): self.app.softreboot,
            ("virtualmachines", "restart"): self.app.restart,
            ("virtualmachines", "start"): self.app.start_vm,
            ("virtualmachines", "stop"): self.app.stop_vm,
        }
        try:
            if m is None:
                raise StatusError(404, "NotFound", "the server could not find the requested resource")
            handler = handlers.get((m["plural"], m["sub"]))
            if handler is None:
                raise StatusError(501, "NotImplemented", f"the simulator does not play {m['plural']}/{m['sub']}")
            try:
                body = json.loads(raw) if raw.strip() else {}
            except ValueError as e:
                raise bad_request(f"Can not unmarshal Request body to struct, error: {e}") from e
            code = handler(m["ns"], m["name"], body if isinstance(body, dict) else {})
            self.reply(code)
        except StatusError as e:
            self.reply(e.code, e.status())
        except Exception as e:
            log.exception("PUT %s", self.path)
            self.reply(500, internal(str(e)).status())

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        # The access log says who called from where: kube-apiserver, from loopback, for a user.
        log.info("%s:%d %s %s user=%s groups=%s -> %s", self.client_address[0], self.client_address[1],
                 self.command, self.path, self.user or "-", ",".join(self.groups) or "-", code)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s " + format, self.client_address[0], *args)
