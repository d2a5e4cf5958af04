"""KubeVirt v1.7.0's real virt-controller on the local cloud (issue 19): what it writes for VirtualMachines like
Kova's, with the simulated node side (tests/cloud/kubelet.py, virthandler.py) and the real kube-scheduler.
Fixtures of record: each behaviour Kova reads, driven by the real controller.

Each asserted field names the KubeVirt v1.7.0 source that produces it (paths in kubevirt.io/kubevirt@v1.7.0)."""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud
from tests.cloud.kubelet import NODES
from tests.cloud.kubevirt import LAUNCHER_IMAGE, KubeVirt
from tests.conftest import wait_for

pytestmark = pytest.mark.integration
NS = "real-kv"
NODE_NAMES = {n for n, _ in NODES}


@pytest.fixture(scope="module")
def kv(tmp_path_factory: pytest.TempPathFactory) -> Iterator[KubeVirt]:
    cloud = LocalCloud(Path(tmp_path_factory.mktemp("real-kubevirt"))).start()
    try:
        cloud.kubectl("create", "namespace", NS)
        yield cloud.kubevirt
    finally:
        cloud.stop()


def get(kv: KubeVirt, kind: str, name: str) -> dict[str, Any] | None:
    out = kv.cloud.kubectl("-n", NS, "get", kind, name, "-o", "json", "--ignore-not-found")
    return json.loads(out) if out.strip() else None


def status(kv: KubeVirt, kind: str, name: str) -> dict[str, Any]:
    return (get(kv, kind, name) or {}).get("status") or {}


def cond(obj_status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in obj_status.get("conditions") or [] if c["type"] == type_), {})


def launcher_pods(kv: KubeVirt, vm: str) -> list[dict[str, Any]]:
    out = kv.cloud.kubectl("-n", NS, "get", "pods", "-l", f"kubevirt.io=virt-launcher,vm.kubevirt.io/name={vm}",
                           "-o", "json")
    return [p for p in json.loads(out)["items"] if not p["metadata"].get("deletionTimestamp")]


def vm_body(name: str, *, networks: list[dict[str, Any]] | None = None, interfaces: list[dict[str, Any]] | None = None,
            node_selector: dict[str, str] | None = None, running: bool = True) -> dict[str, Any]:
    """A VirtualMachine shaped like Kova's (operator/kova/compute/children.py), with a containerDisk for a root
    disk instead of a DataVolume (no CDI here) and a cloud-init disk."""
    spec: dict[str, Any] = {
        "domain": {"cpu": {"cores": 1, "sockets": 1, "threads": 1}, "memory": {"guest": "512Mi"},
                   "resources": {"requests": {"memory": "512Mi", "cpu": "1"}},
                   "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}, "bootOrder": 1},
                                         {"name": "cloudinit", "disk": {"bus": "virtio"}}],
                               "interfaces": interfaces or [{"name": "default", "masquerade": {}}]}},
        "networks": networks or [{"name": "default", "pod": {}}],
        "volumes": [{"name": "root", "containerDisk": {"image": "cirros-container-disk-demo:v1.7.0"}},
                    {"name": "cloudinit", "cloudInitNoCloud": {"userData": "#cloud-config\n"}}]}
    if node_selector:
        spec["nodeSelector"] = node_selector
    return {"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
            "metadata": {"name": name, "namespace": NS, "labels": {"kova.dev/instance": name}},
            "spec": {"runStrategy": "Always" if running else "Halted",
                     "template": {"metadata": {"labels": {"kova.dev/instance": name}}, "spec": spec}}}


def create(kv: KubeVirt, body: dict[str, Any]) -> None:
    kv.cloud.kubectl("create", "-f", "-", input=json.dumps(body))


def running_and_ready(kv: KubeVirt, name: str) -> dict[str, Any] | None:
    s = status(kv, "vm", name)
    return s if s.get("printableStatus") == "Running" and s.get("ready") is True else None


def test_controller_leads_with_its_own_service_account(kv: KubeVirt) -> None:
    # pkg/virt-controller/watch/application.go: the Lease kubevirt/virt-controller (leaderelectionconfig
    # DefaultLeaseName), held under the host name; the token is of ServiceAccount kubevirt/kubevirt-controller.
    lease = json.loads(kv.cloud.kubectl("-n", "kubevirt", "get", "lease", "virt-controller", "-o", "json"))
    assert lease["spec"]["holderIdentity"]
    assert "kubevirt-controller" in (kv.dir / "virt-controller.kubeconfig").read_text()


def test_vm_runs_and_is_ready(kv: KubeVirt) -> None:
    create(kv, vm_body("runs"))
    vm = wait_for(lambda: running_and_ready(kv, "runs"), timeout=90, what="VM runs Running and ready")
    # pkg/virt-controller/watch/vm/vm.go: setPrintableStatus (isVirtualMachineStatusRunning); updateStatus sets
    # created (a VMI exists) and ready (the VMI's Ready condition True); syncReadyConditionFromVMI copies it.
    assert vm["printableStatus"] == "Running" and vm["created"] is True and vm["ready"] is True
    assert cond(vm, "Ready")["status"] == "True"

    vmi = get(kv, "vmi", "runs")
    assert vmi is not None
    vs = vmi["status"]
    # pkg/virt-controller/watch/vmi/lifecycle.go, updateStatus: Scheduling -> Scheduled once the launcher pod is
    # ready (controller.IsPodReady: phase Running, compute container running), with status.nodeName and the
    # label kubevirt.io/nodeName; virt-handler (pkg/virt-handler/vm.go, updateVMIStatus) makes it Running.
    assert vs["phase"] == "Running"
    assert vs["nodeName"] in NODE_NAMES
    assert vmi["metadata"]["labels"]["kubevirt.io/nodeName"] == vs["nodeName"]
    assert [p["phase"] for p in vs["phaseTransitionTimestamps"]][:2] == ["Scheduling", "Scheduled"]
    # lifecycle.go, syncReadyConditionFromPod: once Running, the VMI's Ready is the pod's Ready condition.
    assert cond(vs, "Ready")["status"] == "True"
    # lifecycle.go, setLauncherContainerInfo: the compute container's image.
    assert vs["launcherContainerImageVersion"] == LAUNCHER_IMAGE
    # lifecycle.go, setActivePods: pod uid -> node.
    assert list(vs["activePods"].values()) == [vs["nodeName"]]
    assert vs["migrationTransport"] == "Unix"  # lifecycle.go, shouldSetMigrationTransport

    [pod] = launcher_pods(kv, "runs")
    # pkg/virt-controller/services/template.go, RenderLaunchManifest: what kubelet and kube-scheduler get.
    spec = pod["spec"]
    assert spec["nodeSelector"] == {"kubevirt.io/schedulable": "true"}
    assert spec["readinessGates"] == [{"conditionType": "kubevirt.io/virtual-machine-unpaused"}]
    assert spec["restartPolicy"] == "Never" and spec["automountServiceAccountToken"] is False
    compute = next(c for c in spec["containers"] if c["name"] == "compute")
    assert compute["image"] == LAUNCHER_IMAGE
    for device in ("devices.kubevirt.io/kvm", "devices.kubevirt.io/tun", "devices.kubevirt.io/vhost-net"):
        assert compute["resources"]["requests"][device] == "1"
    assert [c["name"] for c in spec["containers"]] == ["compute", "volumeroot"]  # + one per containerDisk
    labels = pod["metadata"]["labels"]
    assert labels["kubevirt.io"] == "virt-launcher" and labels["vm.kubevirt.io/name"] == "runs"
    assert labels["kubevirt.io/created-by"] == vmi["metadata"]["uid"] and labels["kova.dev/instance"] == "runs"
    assert pod["metadata"]["annotations"]["kubevirt.io/domain"] == "runs"
    # lifecycle.go, syncPausedConditionToPod: the readiness gate's condition, written by virt-controller.
    gate = cond(pod["status"], "kubevirt.io/virtual-machine-unpaused")
    assert (gate["status"], gate["reason"]) == ("True", "NotPaused")
    # The node side's pod IP is what the VMI reports for the pod network (tests/cloud/virthandler.py).
    assert vs["interfaces"][0]["ipAddress"] == pod["status"]["podIP"]


def test_missing_network_attachment_definition(kv: KubeVirt) -> None:
    create(kv, vm_body("nonad", interfaces=[{"name": "default", "masquerade": {}}, {"name": "net1", "bridge": {}}],
                       networks=[{"name": "default", "pod": {}},
                                 {"name": "net1", "multus": {"networkName": "absent-nad"}}]))
    message = f"failed to render launch manifest: failed to locate network attachment definition {NS}/absent-nad"

    def synchronized_false() -> dict[str, Any] | None:
        s = status(kv, "vmi", "nonad")
        return s if cond(s, "Synchronized").get("status") == "False" else None
    vs = wait_for(synchronized_false, timeout=60, what="the VMI's Synchronized False")
    # pkg/network/multus/nad.go ("failed to locate network attachment definition ns/name") wrapped by
    # pkg/virt-controller/services/template.go (FailedToRenderLaunchManifestErrFormat); the sync error becomes
    # the condition in pkg/controller/conditions.go (CheckFailure) with reason controller.FailedCreatePodReason.
    synced = cond(vs, "Synchronized")
    assert (synced["reason"], synced["message"]) == ("FailedCreate", message)
    assert vs["phase"] == "Pending"  # lifecycle.go, updateStatus: unprocessed, no pod
    ready = cond(vs, "Ready")  # lifecycle.go, syncReadyConditionFromPod: no pod
    assert (ready["status"], ready["reason"], ready["message"]) == (
        "False", "PodNotExists", "virt-launcher pod has not yet been scheduled")
    assert launcher_pods(kv, "nonad") == []
    # pkg/virt-controller/watch/vm/vm.go: the VMI exists but has no pod -> Starting; its conditions mirrored.
    vm = wait_for(lambda: (s := status(kv, "vm", "nonad")).get("printableStatus") == "Starting" and s,
                  what="VM Starting")
    assert (cond(vm, "Synchronized")["reason"], cond(vm, "Synchronized")["message"]) == ("FailedCreate", message)
    # No Warning event for it: the render error is only the condition and a requeue (vmi.go).
    events = json.loads(kv.cloud.kubectl("-n", NS, "get", "events", "-o", "json"))["items"]
    assert not [e for e in events if e["involvedObject"]["name"] == "nonad" and e["type"] == "Warning"]

    # Once the NAD exists the requeued VMI starts, with a second interface.
    kv.cloud.kubectl("apply", "-f", "-", input=json.dumps({
        "apiVersion": "k8s.cni.cncf.io/v1", "kind": "NetworkAttachmentDefinition",
        "metadata": {"name": "absent-nad", "namespace": NS},
        "spec": {"config": json.dumps({"cniVersion": "0.3.1", "type": "bridge", "bridge": "br1",
                                       "ipam": {"type": "host-local", "subnet": "192.168.77.0/24"}})}}))
    wait_for(lambda: running_and_ready(kv, "nonad"), timeout=90, what="VM Running once the NAD exists")
    [pod] = launcher_pods(kv, "nonad")
    # template.go: Multus' request annotation (pkg/network/multus/annotation.go).
    networks = json.loads(pod["metadata"]["annotations"]["k8s.v1.cni.cncf.io/networks"])
    assert [(n["name"], n["namespace"]) for n in networks] == [("absent-nad", NS)]
    ifaces = status(kv, "vmi", "nonad")["interfaces"]
    assert [i["name"] for i in ifaces] == ["default", "net1"]
    assert ifaces[1]["ipAddress"].startswith("192.168.77.")


def test_unschedulable(kv: KubeVirt) -> None:
    create(kv, vm_body("nofit", node_selector={"topology.kubernetes.io/zone": "zone-x"}))
    vm = wait_for(lambda: (s := status(kv, "vm", "nofit")).get("printableStatus") == "ErrorUnschedulable" and s,
                  timeout=60, what="VM ErrorUnschedulable")
    # vm.go, isVirtualMachineStatusUnschedulable: the VMI's PodScheduled False / Unschedulable, which
    # lifecycle.go (updateStatus, Scheduling) copies from the pod, where kube-scheduler wrote it.
    scheduled = cond(vm, "PodScheduled")
    assert (scheduled["status"], scheduled["reason"]) == ("False", "Unschedulable")
    assert scheduled["message"].startswith("0/3 nodes are available: 3 node(s) didn't match Pod's node "
                                           "affinity/selector.")
    vs = status(kv, "vmi", "nofit")
    assert vs["phase"] == "Scheduling"
    assert cond(vs, "PodScheduled")["reason"] == "Unschedulable"
    assert cond(vs, "Ready")["reason"] == "GuestNotRunning"  # lifecycle.go, syncReadyConditionFromPod


def test_pause_restart_stop(kv: KubeVirt) -> None:
    create(kv, vm_body("life"))
    wait_for(lambda: running_and_ready(kv, "life"), timeout=90, what="VM life running")
    # virt-handler's Paused condition (pkg/virt-handler/vm.go, calculatePausedCondition, ReasonPausedUser),
    # written the way it does: an Update of the VMI.
    vmi = get(kv, "vmi", "life")
    assert vmi is not None
    stamp = dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    vmi["status"]["conditions"].append({"type": "Paused", "status": "True", "reason": "PausedByUser",
                                        "message": "VMI was paused by user", "lastProbeTime": stamp,
                                        "lastTransitionTime": stamp})
    kv.cloud.kubectl("replace", "-f", "-", input=json.dumps(vmi))
    vm = wait_for(lambda: (s := status(kv, "vm", "life")).get("printableStatus") == "Paused"
                  and cond(s, "Ready").get("status") == "False" and s, what="VM Paused and not ready")
    # lifecycle.go, syncPausedConditionToPod: the readiness gate False (Paused); kubelet's Ready then False
    # with ReadinessGatesNotReady, copied to the VMI (syncReadyConditionFromPod) and to the VM; vm.go,
    # isVirtualMachineStatusPaused; status.ready dropped (false, omitempty).
    assert "ready" not in vm
    ready = cond(vm, "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "ReadinessGatesNotReady")
    assert ready["message"] == ('the status of pod readiness gate "kubevirt.io/virtual-machine-unpaused" is not '
                                '"True", but False')
    assert cond(vm, "Paused")["reason"] == "PausedByUser"
    [pod] = launcher_pods(kv, "life")
    gate = cond(pod["status"], "kubevirt.io/virtual-machine-unpaused")
    assert (gate["status"], gate["reason"], gate["message"]) == ("False", "Paused", "the virtual machine is paused")

    # Restart as virt-api's restart does it (pkg/virt-api/rest/lifecycle.go): stateChangeRequests Stop (of this
    # VMI's uid) then Start; vm.go deletes the VMI, creates a new one and pops each request (popStateChangeRequest).
    old_uid = vmi["metadata"]["uid"]
    kv.cloud.kubectl("-n", NS, "patch", "vm", "life", "--subresource=status", "--type=merge", "-p", json.dumps(
        {"status": {"stateChangeRequests": [{"action": "Stop", "uid": old_uid}, {"action": "Start"}]}}))

    def restarted() -> bool:
        new = get(kv, "vmi", "life")
        return bool(new and new["metadata"]["uid"] != old_uid and new["status"].get("phase") == "Running"
                    and running_and_ready(kv, "life"))
    wait_for(restarted, timeout=90, what="a new VMI running after the restart")
    assert "stateChangeRequests" not in status(kv, "vm", "life")

    # Stop: runStrategy Halted -> the VMI is deleted (virt-handler shuts it down), the VM Stopped.
    kv.cloud.kubectl("-n", NS, "patch", "vm", "life", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    vm = wait_for(lambda: (s := status(kv, "vm", "life")).get("printableStatus") == "Stopped"
                  and get(kv, "vmi", "life") is None and cond(s, "Ready").get("reason") == "VMINotExists" and s,
                  timeout=60, what="VM Stopped, its Ready condition saying why")
    ready = cond(vm, "Ready")  # vm.go, syncReadyConditionFromVMI: no VMI
    assert (ready["status"], ready["reason"], ready["message"]) == ("False", "VMINotExists", "VMI does not exist")
    assert "created" not in vm and "ready" not in vm


def test_export_of_a_vm_without_volumes_is_skipped(kv: KubeVirt) -> None:
    create(kv, vm_body("noexport", running=False))
    wait_for(lambda: status(kv, "vm", "noexport").get("printableStatus") == "Stopped", what="VM noexport Stopped")
    # v1.7.0 serves export.kubevirt.io v1alpha1 and v1beta1 only (components/crds.go).
    kv.cloud.kubectl("create", "-f", "-", input=json.dumps({
        "apiVersion": "export.kubevirt.io/v1beta1", "kind": "VirtualMachineExport",
        "metadata": {"name": "noexport", "namespace": NS},
        "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": "noexport"}}}))
    es = wait_for(lambda: (s := status(kv, "vmexport", "noexport")).get("phase") and s, what="export phase")
    # pkg/storage/export/export/vm-source.go (noVolumeVMReason) and export.go (the phase, TTL 2h default).
    assert es["phase"] == "Skipped"
    assert (cond(es, "Ready")["status"], cond(es, "Ready")["reason"]) == ("False", "VMNoVolumes")
    assert es["virtualMachineName"] == "noexport" and es["serviceName"] == "virt-export-noexport"
