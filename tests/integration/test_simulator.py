"""The local cloud's KubeVirt/CDI simulator behaves as the real projects do where Kova may lean on them:
virt-api's aggregated subresources behind a real APIService (and kube-apiserver's RBAC in front of it),
CDI's PersistentVolumeClaims and their expansion (and blank disks), VirtualMachineExport downloads, three
zoned Nodes with kube-scheduler's placement of VMIs, and pod and Multus network interfaces."""

from __future__ import annotations

import base64
import gzip
import hashlib
import ipaddress
import json
import math
import os
import ssl
import urllib.error
import urllib.parse
import urllib.request
import zlib
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, condition, wait_for
from tests.httpsource import Source

pytestmark = pytest.mark.integration
SUB = "/apis/subresources.kubevirt.io/v1"


# ----------------------------------------------------------------------------------------------- helpers
def call(cloud: LocalCloud, method: str, path: str, body: dict[str, Any] | None = None,
         token: str | None = None) -> tuple[int, dict[str, Any]]:
    """One request to kube-apiserver, as the admin or with a bearer token; (status, JSON body or {})."""
    pki = cloud.workdir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    else:
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    data = json.dumps(body or {}).encode() if method in ("PUT", "POST") else None
    req = urllib.request.Request(cloud.api_url + path, data=data, method=method, headers=headers)
    try:
        with urllib.request.urlopen(req, context=ctx, timeout=30) as resp:
            raw = resp.read()
            return resp.status, json.loads(raw) if raw else {}
    except urllib.error.HTTPError as e:
        raw = e.read()
        return e.code, json.loads(raw) if raw.strip() else {}


def vmi_sub(ns: str, name: str, sub: str) -> str:
    return f"{SUB}/namespaces/{ns}/virtualmachineinstances/{name}/{sub}"


def vm_sub(ns: str, name: str, sub: str) -> str:
    return f"{SUB}/namespaces/{ns}/virtualmachines/{name}/{sub}"


def data_volume(name: str, url: str, size: str = "1Gi", labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": name, "labels": labels or {}},
            "spec": {"source": {"http": {"url": url}}, "storage": {"resources": {"requests": {"storage": size}}}}}


def virtual_machine(name: str, dv: str, strategy: str = "Always") -> dict[str, Any]:
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
            "spec": {"runStrategy": strategy, "template": {"spec": {
                "domain": {"devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]},
                           "resources": {"requests": {"memory": "64Mi"}}},
                "volumes": [{"name": "root", "dataVolume": {"name": dv}}]}}}}


def vm_with_disk(kubectl: Kubectl, source: Source, name: str, strategy: str = "Always",
                 data: bytes | None = None) -> bytes:
    """A VM whose root disk is imported from loopback; returns once it is Running (or Stopped)."""
    data = data if data is not None else os.urandom(300_000)
    url = source.add(f"/{kubectl.namespace}/{name}.img", data)
    kubectl.apply([data_volume(f"{name}-root", url), virtual_machine(name, f"{name}-root", strategy)])
    want = "Running" if strategy == "Always" else "Stopped"
    wait_for(lambda: kubectl.status("dv", f"{name}-root").get("phase") == "Succeeded", 30, "the import")
    wait_for(lambda: kubectl.status("vm", name).get("printableStatus") == want, 30, f"the VM {want}")
    return data


def simulator_log(cloud: LocalCloud) -> str:
    return (cloud.logs / "simulator.log").read_text()


# --------------------------------------------------------------------------------------------- virt-api
def test_aggregated_api_is_available_on_loopback(cloud: LocalCloud) -> None:
    apiservice = json.loads(cloud.kubectl("get", "apiservice", "v1.subresources.kubevirt.io", "-o", "json"))
    assert condition(apiservice, "Available")["status"] == "True"
    assert apiservice["spec"]["service"] == {"namespace": "kubevirt", "name": "virt-api",
                                             "port": cloud.virt_api_port}
    service = json.loads(cloud.kubectl("-n", "kubevirt", "get", "service", "virt-api", "-o", "json"))
    assert (service["spec"]["type"], service["spec"]["externalName"]) == ("ExternalName", "localhost")
    listing = json.loads(cloud.kubectl("get", "--raw", SUB))
    names = {r["name"] for r in listing["resources"]}
    assert {"virtualmachineinstances/pause", "virtualmachineinstances/unpause", "virtualmachineinstances/softreboot",
            "virtualmachines/restart", "virtualmachines/start", "virtualmachines/stop"} <= names
    assert all(r["namespaced"] for r in listing["resources"])
    group = json.loads(cloud.kubectl("get", "--raw", "/apis/subresources.kubevirt.io"))
    assert group["preferredVersion"]["version"] == "v1"
    # Only kube-apiserver's front proxy gets in: a client without the front-proxy certificate does not.
    ca = (cloud.workdir / "virt-api-ca.crt").read_text()
    ctx = ssl.create_default_context(cadata=ca)
    ctx.check_hostname = False
    with pytest.raises(OSError):
        urllib.request.urlopen(f"https://127.0.0.1:{cloud.virt_api_port}{SUB}", context=ctx, timeout=5).read()
    # kube-apiserver reached the simulator on loopback, through its front proxy, saying who asks.
    assert "virt-api 127.0.0.1:" in simulator_log(cloud)
    assert "GET /apis/subresources.kubevirt.io/v1 user=kova-bench-admin" in simulator_log(cloud)


def test_subresources_are_authorized_by_kube_apiserver(cloud: LocalCloud, namespace: str) -> None:
    none = cloud.tenant_token(namespace, "none", "nobody")
    status, body = call(cloud, "PUT", vmi_sub(namespace, "ghost", "pause"), token=none)
    assert status == 403 and 'cannot update resource "virtualmachineinstances/pause" in API group ' \
                              '"subresources.kubevirt.io"' in body["message"]
    pauser = cloud.tenant_token(namespace, "none", "pauser")
    Kubectl(cloud, namespace).apply([
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role", "metadata": {"name": "pause"},
         "rules": [{"apiGroups": ["subresources.kubevirt.io"], "resources": ["virtualmachineinstances/pause"],
                    "verbs": ["update"]}]},
        {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding", "metadata": {"name": "pause"},
         "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pause"},
         "subjects": [{"kind": "ServiceAccount", "name": "pauser", "namespace": namespace}]}])
    # Authorized: the request reaches virt-api, which finds no such VMI.
    def through() -> tuple[int, dict[str, Any]] | None:
        answer = call(cloud, "PUT", vmi_sub(namespace, "ghost", "pause"), token=pauser)
        return answer if answer[0] != 403 else None
    status, body = wait_for(through, 10, "the role to apply")
    assert (status, body["reason"], body["message"]) == (
        404, "NotFound", 'virtualmachineinstance.kubevirt.io "ghost" not found')
    assert call(cloud, "PUT", vmi_sub(namespace, "ghost", "unpause"), token=pauser)[0] == 403
    assert f"user=system:serviceaccount:{namespace}:pauser groups=system:serviceaccounts," in simulator_log(cloud)


def test_pause_unpause_softreboot_and_restart(cloud: LocalCloud, source: Source, kubectl: Kubectl,
                                              namespace: str) -> None:
    ns = namespace
    vm_with_disk(kubectl, source, "vm")
    first = kubectl.get("vmi", "vm")
    assert first is not None
    assert call(cloud, "PUT", vmi_sub(ns, "vm", "pause"), {"dryRun": ["All"]})[0] == 200
    assert kubectl.status("vm", "vm")["printableStatus"] == "Running"  # a dry run changes nothing

    assert call(cloud, "PUT", vmi_sub(ns, "vm", "pause"))[0] == 200
    # virt-handler's Paused condition; virt-controller closes the launcher pod's readiness gate, the VMI's Ready
    # follows the pod's, and the VM says Paused (pkg/virt-controller/watch/vm/vm.go setPrintableStatus) a moment
    # before its Ready turns False; `ready` is left out then.
    vm = wait_for(lambda: (v := kubectl.get("vm", "vm")) and v["status"]["printableStatus"] == "Paused"
                  and condition(v, "Ready").get("status") == "False" and v, 20, "the VM Paused")
    assert not vm["status"].get("ready")
    assert (condition(vm, "Paused")["status"], condition(vm, "Paused")["reason"]) == ("True", "PausedByUser")
    assert (condition(vm, "Ready")["status"], condition(vm, "Ready")["reason"]) == ("False", "ReadinessGatesNotReady")
    vmi = kubectl.get("vmi", "vm")
    assert condition(vmi, "Paused")["message"] == "VMI was paused by user"
    assert vmi is not None and vmi["status"]["phase"] == "Running"

    status, body = call(cloud, "PUT", vmi_sub(ns, "vm", "pause"))
    assert (status, body["reason"]) == (409, "Conflict")
    assert body["message"] == 'Operation cannot be fulfilled on virtualmachineinstance.kubevirt.io "vm": ' \
                              'VMI is already paused'
    status, body = call(cloud, "PUT", vmi_sub(ns, "vm", "softreboot"))
    assert status == 409 and body["message"].endswith("VMI is paused")

    assert call(cloud, "PUT", vmi_sub(ns, "vm", "unpause"))[0] == 200
    vm = wait_for(lambda: (v := kubectl.get("vm", "vm")) and v["status"]["printableStatus"] == "Running"
                  and v["status"].get("ready") is True and v, 20, "the VM Running again")
    assert vm["status"]["ready"] is True and not condition(vm, "Paused")
    assert condition(vm, "LiveMigratable")["status"] == "True"  # mirrored from the VMI
    status, body = call(cloud, "PUT", vmi_sub(ns, "vm", "unpause"))
    assert status == 409 and body["message"].endswith("VMI is not paused")

    assert call(cloud, "PUT", vmi_sub(ns, "vm", "softreboot"))[0] == 200
    reasons = [e["reason"] for e in kubectl.events("vm") if e["involvedObject"]["kind"] == "VirtualMachineInstance"]
    assert {"Paused", "Unpaused", "SoftRebooted"} <= set(reasons)
    assert kubectl.status("vmi", "vm")["phase"] == "Running"

    status, body = call(cloud, "PUT", vm_sub(ns, "vm", "restart"), {"gracePeriodSeconds": 5})
    assert (status, body["message"]) == (400, "For force restart, only gracePeriod=0 is supported for now")
    assert call(cloud, "PUT", vm_sub(ns, "vm", "restart"))[0] == 202
    second = wait_for(lambda: (v := kubectl.get("vmi", "vm")) and v["metadata"]["uid"] != first["metadata"]["uid"]
                      and v.get("status", {}).get("phase") == "Running" and v, 20, "a new VMI running")
    assert second["metadata"]["ownerReferences"][0]["uid"] == vm["metadata"]["uid"]
    wait_for(lambda: kubectl.status("vm", "vm").get("printableStatus") == "Running", 10, "the VM Running")
    assert not kubectl.status("vm", "vm").get("stateChangeRequests")
    assert call(cloud, "PUT", vm_sub(ns, "ghost", "restart"))[0] == 404


def test_stop_and_start(cloud: LocalCloud, source: Source, kubectl: Kubectl, namespace: str) -> None:
    ns = namespace
    vm_with_disk(kubectl, source, "vm")
    status, body = call(cloud, "PUT", vm_sub(ns, "vm", "start"))
    assert status == 409 and body["message"].endswith("VM is already running")
    assert call(cloud, "PUT", vm_sub(ns, "vm", "stop"))[0] == 202
    wait_for(lambda: kubectl.status("vm", "vm").get("printableStatus") == "Stopped", 10, "the VM Stopped")
    assert kubectl.get("vm", "vm")["spec"]["runStrategy"] == "Halted"  # type: ignore[index]
    assert kubectl.get("vmi", "vm") is None
    status, body = call(cloud, "PUT", vm_sub(ns, "vm", "restart"))
    assert status == 409 and body["message"].endswith("RunStategy Halted does not support manual restart requests")
    status, body = call(cloud, "PUT", vmi_sub(ns, "vm", "pause"))
    assert status == 404
    assert call(cloud, "PUT", vm_sub(ns, "vm", "start"))[0] == 202
    wait_for(lambda: kubectl.status("vm", "vm").get("printableStatus") == "Running", 20, "the VM Running")
    assert kubectl.get("vm", "vm")["spec"]["runStrategy"] == "Always"  # type: ignore[index]


# ---------------------------------------------------------------------------------------- CDI and CSI
def test_data_volume_claims_are_bound_and_grow(cloud: LocalCloud, source: Source, kubectl: Kubectl,
                                               namespace: str) -> None:
    data = os.urandom(200_000)
    kubectl.apply(data_volume("disk", source.add(f"/{kubectl.namespace}/disk", data), "1Gi",
                              labels={"kova.dev/instance": "vm1"}))
    dv = wait_for(lambda: (d := kubectl.get("dv", "disk")) and d.get("status", {}).get("phase") == "Succeeded" and d,
                  30, "the import")
    assert dv["status"]["claimName"] == "disk"
    pvc = wait_for(lambda: (p := kubectl.get("pvc", "disk")) and p.get("status", {}).get("phase") == "Bound" and p,
                   10, "the claim bound")
    assert pvc["metadata"]["labels"]["kova.dev/instance"] == "vm1"
    assert pvc["metadata"]["labels"]["app"] == "containerized-data-importer"
    owner = pvc["metadata"]["ownerReferences"][0]
    assert (owner["kind"], owner["name"], owner["uid"], owner["controller"]) == (
        "DataVolume", "disk", dv["metadata"]["uid"], True)
    assert pvc["spec"]["storageClassName"] == "sim-local"  # the default class, set by kube-apiserver
    # CDI asks for the DataVolume's size plus its filesystem overhead (6%: CDIConfig filesystemOverhead,
    # pkg/controller/datavolume/util.go); the driver binds what is asked.
    asked = pvc["spec"]["resources"]["requests"]["storage"]
    assert asked == pvc["status"]["capacity"]["storage"] and int(asked) == math.ceil(2**30 * 1.06)
    volume = cloud.workdir / "volumes" / namespace / "disk.img"

    kubectl("patch", "pvc", "disk", "--type=merge", "-p", '{"spec":{"resources":{"requests":{"storage":"3Gi"}}}}')
    # Every version of the claim since the one read above, from a watch: polling could miss a short-lived
    # condition on a loaded machine.
    seen: set[str] = set()
    claims = f"/api/v1/namespaces/{namespace}/persistentvolumeclaims?fieldSelector=metadata.name%3Ddisk"
    for claim in cloud.watch(claims, pvc["metadata"]["resourceVersion"]):
        seen.update(c["type"] for c in claim.get("status", {}).get("conditions") or [])
        if claim.get("status", {}).get("capacity", {}).get("storage") == "3Gi":
            break
    else:
        raise AssertionError(f"the claim did not grow to 3Gi; conditions seen: {seen}")
    assert {"Resizing", "FileSystemResizePending"} <= seen
    assert volume.stat().st_size == len(data)  # the bytes stay; only the capacity is recorded
    out = kubectl("patch", "pvc", "disk", "--type=merge", "-p",
                  '{"spec":{"resources":{"requests":{"storage":"1Gi"}}}}', check=False)
    assert "can not be less than status.capacity" in out or "field can not be less than" in out, out

    kubectl("delete", "dv", "disk", "--wait=false")
    wait_for(lambda: kubectl.get("pvc", "disk") is None, 30, "the claim to go with its DataVolume")


# ---------------------------------------------------------------------------------------------- export
def download(kubectl: Kubectl, url: str, ca: str, token: str | None = None, header: bool = True,
             headers: dict[str, str] | None = None) -> tuple[int, bytes]:
    """GET an internal export link as Kova does: from the ready pod behind the link's Service (the local cloud
    has no cluster DNS), verifying the certificate for the Service's name."""
    import urllib3

    from kova.compute import snapshot

    _, name = snapshot.export_service(url) or ("", "")
    service = kubectl.get("svc", name)
    wanted = ((service or {}).get("spec") or {}).get("selector", {})
    selector = ",".join(f"{k}={v}" for k, v in sorted(wanted.items()))
    pods = json.loads(kubectl("get", "pods", "-l", selector, "-o", "json"))["items"] if selector else []
    address = snapshot.export_address(service, pods)
    if address is None:
        return 404, b""
    hdrs = dict(headers or {})
    parts = urllib.parse.urlsplit(url)
    path = parts.path
    if token and header:
        hdrs["x-kubevirt-export-token"] = token
    elif token:
        path += f"?x-kubevirt-export-token={token}"
    pool = urllib3.HTTPSConnectionPool(address[0], address[1], cert_reqs="CERT_REQUIRED", ca_cert_data=ca,
                                       server_hostname=parts.hostname, assert_hostname=parts.hostname,
                                       retries=False, timeout=30)
    resp = pool.urlopen("GET", path, headers=hdrs, decode_content=False)
    return resp.status, resp.data


def export(name: str, kind: str, source: str, token_secret: str | None = None, ttl: str | None = None
           ) -> dict[str, Any]:
    spec: dict[str, Any] = {"source": {"apiGroup": "kubevirt.io" if kind == "VirtualMachine" else "",
                                       "kind": kind, "name": source}}
    if token_secret:
        spec["tokenSecretRef"] = token_secret
    if ttl:
        spec["ttlDuration"] = ttl
    return {"apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport", "metadata": {"name": name},
            "spec": spec}


def test_export_of_a_stopped_vm(cloud: LocalCloud, source: Source, kubectl: Kubectl) -> None:
    data = vm_with_disk(kubectl, source, "vm", strategy="Halted")
    kubectl("create", "secret", "generic", "my-token", "--from-literal=token=s3cret-t0ken")
    kubectl.apply(export("out", "VirtualMachine", "vm", token_secret="my-token"))
    ex = wait_for(lambda: (e := kubectl.get("vmexport", "out")) and e.get("status", {}).get("phase") == "Ready" and e,
                  15, "the export Ready")
    status = ex["status"]
    assert (condition(ex, "Ready")["status"], condition(ex, "Ready")["reason"]) == ("True", "PodReady")
    assert (status["serviceName"], status["tokenSecretRef"], status["virtualMachineName"]) == (
        "virt-export-out", "my-token", "vm")
    link = status["links"]["internal"]
    [volume] = link["volumes"]
    formats = {f["format"]: f["url"] for f in volume["formats"]}
    base = f"https://virt-export-out.{kubectl.namespace}.svc"  # the exporter's Service (export/links.go)
    assert volume["name"] == "vm-root"
    assert formats == {"raw": f"{base}/volumes/vm-root/disk.img", "gzip": f"{base}/volumes/vm-root/disk.img.gz"}

    code, body = download(kubectl, formats["raw"], link["cert"], "s3cret-t0ken")
    assert code == 200 and hashlib.sha256(body).hexdigest() == hashlib.sha256(data).hexdigest()
    assert download(kubectl, formats["raw"], link["cert"], "s3cret-t0ken", header=False) == (200, data)
    code, body = download(kubectl, formats["gzip"], link["cert"], "s3cret-t0ken")
    assert code == 200 and gzip.decompress(body) == data
    assert download(kubectl, formats["raw"], link["cert"], "s3cret-t0ken", headers={"Range": "bytes=10-19"}) == (
        206, data[10:20])
    assert download(kubectl, formats["raw"], link["cert"])[0] == 401
    assert download(kubectl, formats["raw"], link["cert"], "wrong")[0] == 401

    kubectl("delete", "vmexport", "out")
    wait_for(lambda: download(kubectl, formats["raw"], link["cert"], "s3cret-t0ken")[0] == 404, 10, "the export to go")


def test_export_waits_for_a_running_vm_to_stop(cloud: LocalCloud, source: Source, kubectl: Kubectl) -> None:
    data = vm_with_disk(kubectl, source, "vm")
    kubectl.apply([export("of-vm", "VirtualMachine", "vm"), export("of-pvc", "PersistentVolumeClaim", "vm-root"),
                   export("no-vm", "VirtualMachine", "ghost")])
    ex = wait_for(lambda: (e := kubectl.get("vmexport", "of-vm")) and condition(e, "Ready").get("reason") == "InUse"
                  and e, 15, "the export to see the VM running")
    assert ex["status"]["phase"] == "Pending" and not ex["status"].get("links")
    assert condition(ex, "Ready")["message"] == f"Virtual Machine {kubectl.namespace}/vm is running"
    pvc_ex = wait_for(lambda: (e := kubectl.get("vmexport", "of-pvc")) and condition(e, "Ready").get("reason")
                      == "InUse" and e, 10, "the claim export to see the claim in use")
    # PVCReady from the claim's phase (pkg/storage/export/export/export.go, pvcConditionFromPVC).
    assert (condition(pvc_ex, "PVCReady")["status"], condition(pvc_ex, "PVCReady")["reason"]) == ("True", "PVCBound")
    missing = wait_for(lambda: (e := kubectl.get("vmexport", "no-vm")) and e.get("status", {}).get("phase") and e,
                       10, "a status")
    # v1.7.0 says VMNoVolumes for a VirtualMachine that does not exist (it finds no volumes to export).
    assert (missing["status"]["phase"], condition(missing, "Ready")["reason"]) == ("Skipped", "VMNoVolumes")
    kubectl("patch", "vm", "vm", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    ex = wait_for(lambda: (e := kubectl.get("vmexport", "of-vm")) and e.get("status", {}).get("phase") == "Ready" and e,
                  30, "the export Ready once the VM stopped")
    # Without tokenSecretRef KubeVirt makes a token Secret of its own, which the export controls (v1.7.0 writes
    # it once the export can be served: pkg/storage/export/export/export.go getOrCreateTokenSecret).
    assert ex["status"]["tokenSecretRef"] == "export-token-of-vm"
    secret = kubectl.get("secret", "export-token-of-vm")
    assert secret is not None and secret["metadata"]["ownerReferences"][0]["name"] == "of-vm"
    token = json.loads(kubectl("get", "secret", "export-token-of-vm", "-o", "jsonpath={.data}"))["token"]
    link = ex["status"]["links"]["internal"]
    url = link["volumes"][0]["formats"][0]["url"]
    assert download(kubectl, url, link["cert"], base64.b64decode(token).decode()) == (200, data)


# -------------------------------------------------------------------------------- nodes and scheduling
HOST, ZONE = "kubernetes.io/hostname", "topology.kubernetes.io/zone"


def bare_vm(name: str, labels: dict[str, str] | None = None, **spec: Any) -> dict[str, Any]:
    """A VM without disks: nothing to import, so it reaches the scheduler at once."""
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
            "spec": {"runStrategy": "Always", "template": {
                "metadata": {"labels": labels or {}},
                "spec": {"domain": {"devices": {}, "resources": {"requests": {"memory": "64Mi"}}}, **spec}}}}


def running_vmi(kubectl: Kubectl, name: str, timeout: float = 20) -> dict[str, Any]:
    return wait_for(lambda: (v := kubectl.get("vmi", name)) and v.get("status", {}).get("phase") == "Running" and v,
                    timeout, f"the VMI {name} Running")


def test_three_nodes_in_two_zones_stay_ready(cloud: LocalCloud) -> None:
    nodes = {n["metadata"]["name"]: n for n in json.loads(cloud.kubectl("get", "nodes", "-o", "json"))["items"]}
    assert {name: n["metadata"]["labels"][ZONE] for name, n in nodes.items()} == {
        "sim-node-0": "zone-a", "sim-node-1": "zone-b", "sim-node-2": "zone-b"}
    for index, (name, node) in enumerate(sorted(nodes.items())):
        labels = node["metadata"]["labels"]
        assert (labels[HOST], labels["kubernetes.io/os"]) == (name, "linux")
        assert condition(node, "Ready")["status"] == "True"
        assert not node["spec"].get("taints")  # the admission's not-ready taint is gone, as once Ready
        assert node["spec"]["podCIDR"] == f"10.244.{index}.0/24"
        assert node["status"]["allocatable"]["cpu"] == node["status"]["capacity"]["cpu"]


def test_required_anti_affinity_spreads_vms_and_the_fourth_is_unschedulable(kubectl: Kubectl) -> None:
    anti = {"podAntiAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchLabels": {"group": "db"}}, "topologyKey": HOST}]}}
    kubectl.apply([bare_vm(f"db-{i}", {"group": "db"}, affinity=anti) for i in range(3)])
    vmis = [running_vmi(kubectl, f"db-{i}") for i in range(3)]
    hosts = [v["status"]["nodeName"] for v in vmis]
    assert sorted(hosts) == ["sim-node-0", "sim-node-1", "sim-node-2"]
    assert [v["metadata"]["labels"]["kubevirt.io/nodeName"] for v in vmis] == hosts  # as virt-controller labels it
    kubectl.apply(bare_vm("db-3", {"group": "db"}, affinity=anti))
    vm = wait_for(lambda: (v := kubectl.get("vm", "db-3")) and v.get("status", {}).get("printableStatus")
                  == "ErrorUnschedulable" and v, 15, "the fourth VM ErrorUnschedulable")
    vmi = kubectl.get("vmi", "db-3")
    assert vmi is not None and vmi["status"]["phase"] == "Scheduling" and not vmi["status"].get("nodeName")
    scheduled = condition(vmi, "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert scheduled["message"].startswith("0/3 nodes are available: 3 node(s) didn't match pod anti-affinity rules. ")
    assert condition(vm, "PodScheduled")["message"] == scheduled["message"]  # mirrored on the VM
    # virt-controller's own words on the VM's Ready (pkg/virt-controller/watch/vm/vm.go).
    assert condition(vm, "Ready")["message"] == "Guest VM is not reported as running"
    # As kube-scheduler retries: once a node is free again, the pending one goes there.
    freed = hosts[0]
    kubectl("delete", "vm", "db-0", "--wait=false")
    assert running_vmi(kubectl, "db-3")["status"]["nodeName"] == freed
    wait_for(lambda: kubectl.status("vm", "db-3").get("printableStatus") == "Running", 10, "the VM Running")


def test_node_selector_and_required_pod_affinity(kubectl: Kubectl) -> None:
    kubectl.apply([bare_vm("in-a", nodeSelector={ZONE: "zone-a"}),
                   bare_vm("anchor", {"role": "anchor"}, nodeSelector={HOST: "sim-node-2"}),
                   bare_vm("nowhere", nodeSelector={ZONE: "zone-z"})])
    assert running_vmi(kubectl, "in-a")["status"]["nodeName"] == "sim-node-0"
    assert running_vmi(kubectl, "anchor")["status"]["nodeName"] == "sim-node-2"
    near = {"podAffinity": {"requiredDuringSchedulingIgnoredDuringExecution": [
        {"labelSelector": {"matchExpressions": [{"key": "role", "operator": "In", "values": ["anchor"]}]},
         "topologyKey": HOST}]}}
    kubectl.apply(bare_vm("follower", affinity=near))
    assert running_vmi(kubectl, "follower")["status"]["nodeName"] == "sim-node-2"
    wait_for(lambda: kubectl.status("vm", "nowhere").get("printableStatus") == "ErrorUnschedulable", 10,
             "the VM ErrorUnschedulable")
    assert condition(kubectl.get("vmi", "nowhere"), "PodScheduled")["message"].startswith(
        "0/3 nodes are available: 3 node(s) didn't match Pod's node affinity/selector. ")


# ------------------------------------------------------------------------------------------------ networks
def nad(name: str, ipam: dict[str, Any] | None = None) -> dict[str, Any]:
    config = {"cniVersion": "0.3.1", "name": name, "type": "bridge", "bridge": "br1", "ipam": ipam or {}}
    return {"apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition", "metadata": {"name": name},
            "spec": {"config": json.dumps(config)}}


def multus_vm(name: str, *nads: str) -> dict[str, Any]:
    interfaces = [{"name": "default", "masquerade": {}, "model": "virtio"},
                  *({"name": f"net{i}", "bridge": {}} for i, _ in enumerate(nads, 1))]
    nets = [{"name": "default", "pod": {}},
            *({"name": f"net{i}", "multus": {"networkName": n}} for i, n in enumerate(nads, 1))]
    vm = bare_vm(name, networks=nets)
    vm["spec"]["template"]["spec"]["domain"]["devices"]["interfaces"] = interfaces
    return vm


def test_pod_and_multus_networks_get_an_address_each(kubectl: Kubectl) -> None:
    ns = kubectl.namespace
    assert ns
    kubectl.apply([nad("data"), nad("storage", {"type": "whereabouts", "range": "10.77.0.0/24"}),
                   multus_vm("vm", "data", f"{ns}/storage")])
    vmi = running_vmi(kubectl, "vm")
    interfaces = vmi["status"]["interfaces"]
    assert [(i["name"], i["interfaceName"]) for i in interfaces] == [("default", "eth0"), ("net1", "eth1"),
                                                                      ("net2", "eth2")]
    pod, data, storage = (ipaddress.ip_address(i["ipAddress"]) for i in interfaces)
    node = vmi["status"]["nodeName"]
    assert pod in ipaddress.ip_network(f"10.244.{node[-1]}.0/24")  # the node's podCIDR
    assert data in ipaddress.ip_network(f"192.168.{zlib.crc32(f'{ns}/data'.encode()) % 250}.0/24")
    assert storage in ipaddress.ip_network("10.77.0.0/24")  # the NAD's own IPAM range
    assert all(i["ipAddresses"] == [i["ipAddress"]] and i["mac"] and i["infoSource"] for i in interfaces)
    kubectl.apply(multus_vm("second", "data"))
    second = running_vmi(kubectl, "second")["status"]["interfaces"]
    assert second[1]["ipAddress"] != interfaces[1]["ipAddress"]  # one network, distinct addresses


def test_a_missing_network_attachment_definition_keeps_the_vmi_pending(kubectl: Kubectl) -> None:
    kubectl.apply(multus_vm("vm", "ghost"))
    want = f"failed to render launch manifest: failed to locate network attachment definition " \
           f"{kubectl.namespace}/ghost"
    vmi = wait_for(lambda: (v := kubectl.get("vmi", "vm")) and condition(v, "Synchronized").get("message") == want
                   and v, 15, "the render failure")
    assert (vmi["status"]["phase"], condition(vmi, "Synchronized")["reason"]) == ("Pending", "FailedCreate")
    vm = kubectl.get("vm", "vm")
    assert vm is not None and vm["status"]["printableStatus"] == "Starting"  # what KubeVirt shows
    assert condition(vm, "Synchronized")["message"] == want
    # The condition is all virt-controller says: no Warning event (a fixture of record, test_real_kubevirt.py).
    kubectl.apply(nad("ghost"))  # virt-controller retries: once the NAD exists, the pod is made
    assert running_vmi(kubectl, "vm")["status"]["interfaces"][1]["ipAddress"].startswith("192.168.")


# ------------------------------------------------------------------------------------- boot devices, blank
def test_blank_data_volume_and_boot_devices(cloud: LocalCloud, source: Source, kubectl: Kubectl,
                                            namespace: str) -> None:
    url = source.add(f"/{namespace}/installer.iso", os.urandom(100_000))
    blank = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "blank"},
             "spec": {"source": {"blank": {}}, "storage": {"resources": {"requests": {"storage": "5Gi"}}}}}
    vm = bare_vm("installer", volumes=[{"name": "cd", "dataVolume": {"name": "iso"}},
                                       {"name": "root", "dataVolume": {"name": "blank"}},
                                       {"name": "scratch", "emptyDisk": {"capacity": "1Gi"}}])
    vm["spec"]["template"]["spec"]["domain"] = {
        "machine": {"type": "q35"}, "features": {"smm": {"enabled": True}},
        "firmware": {"bootloader": {"efi": {"secureBoot": True}}},
        "resources": {"requests": {"memory": "128Mi"}},
        "devices": {"disks": [{"name": "cd", "cdrom": {"bus": "sata"}, "bootOrder": 1},
                              {"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 2},
                              {"name": "scratch", "disk": {"bus": "virtio"}}],
                    "interfaces": [{"name": "default", "masquerade": {}, "model": "e1000e"}],
                    "rng": {}, "autoattachGraphicsDevice": True, "video": {"type": "vga"}}}
    vm["spec"]["template"]["spec"]["networks"] = [{"name": "default", "pod": {}}]
    kubectl.apply([data_volume("iso", url), blank, vm])
    dv = wait_for(lambda: (d := kubectl.get("dv", "blank")) and d.get("status", {}).get("phase") == "Succeeded"
                  and d, 15, "the blank DataVolume")
    assert condition(dv, "Ready")["status"] == "True"
    # A blank disk is an empty sparse file of the claim's usable size (CDI's createBlankImage): nothing downloaded.
    blank_file = (cloud.workdir / "volumes" / namespace / "blank.img").stat()
    assert 5 * 2**30 * 0.99 < blank_file.st_size < 5.5 * 2**30 and blank_file.st_blocks == 0
    assert running_vmi(kubectl, "installer")["status"]["interfaces"][0]["interfaceName"] == "eth0"
    wait_for(lambda: kubectl.status("vm", "installer").get("printableStatus") == "Running", 10, "the VM Running")
