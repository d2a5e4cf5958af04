"""The node side of the local cloud when the real virt-controller runs (tests/cloud/kubevirt.py, issue 19):
kubelet and virt-handler of three simulated nodes, nothing of the control plane.

Nodes (kubelet registering them, virt-handler's heartbeat and device plugins): the simulator's three nodes
(tests/cloud/sim.py `NODES`, same labels, podCIDRs and capacity) plus what virt-handler adds: the label
`kubevirt.io/schedulable=true` and `cpumanager=false`, the annotation `kubevirt.io/heartbeat` (refreshed every
minute, pkg/virt-handler/heartbeat/heartbeat.go), and the device plugins' resources `devices.kubevirt.io/kvm`,
`tun`, `vhost-net` (1000 each, cmd/virt-handler `--max-devices`; every virt-launcher pod asks one of each, so a
node without them fails scheduling with "Insufficient devices.kubevirt.io/kvm"). One virt-handler pod per node
(`kubevirt.io=virt-handler` in namespace kubevirt, bound by spec.nodeName, as its DaemonSet's are): virt-
controller's node controller looks for it before it fails the VMIs of a node whose heartbeat is stale.

kubelet: every pod bound to one of these nodes (spec.nodeName) runs at once: phase Running, init containers
terminated (Completed) but restartable ones (sidecars) running, containers running and ready, the pod IP the
lowest free address of the node's podCIDR, and the conditions kubelet computes: PodReadyToStartContainers,
Initialized, ContainersReady, and Ready, which also needs every readiness gate's condition True (the launcher
pod's `kubevirt.io/virtual-machine-unpaused`, which virt-controller writes: False while the VMI is paused, then
Ready is False with ReadinessGatesNotReady). A pod being deleted is gone at once (containers stopped, kubelet's
final delete with grace 0). A virt-launcher pod whose VMI has finished (Succeeded/Failed) has exited: Succeeded.

virt-handler (pkg/virt-handler/vm.go, updateVMIStatus): a VMI that virt-controller handed over (phase Scheduled,
status.nodeName one of these nodes) whose launcher pod runs is started: phase Running, status.interfaces (one per
interface, eth0.. as the guest names them, tests/cloud/networks.py; the pod network's entry has the pod's IP),
LiveMigratable / StorageLiveMigratable conditions and migrationMethod, machine, currentCPUTopology, memory,
volumeStatus (one per volume with its disk's target), guestOSInfo; an Event `Started` ("VirtualMachineInstance
started."). A VMI being deleted is shut down: phase Succeeded (Event `Stopped`, "The VirtualMachineInstance was
shut down."). Pausing is virt-api's and virt-handler's REST (not here): a test writes the Paused condition.

It works like tests/cloud/sim.py: list+watch caches of Pods, VMIs and Nodes, idempotent passes, only changed
objects written (a VMI has no status subresource: virt-handler updates the whole object, with the cached
resourceVersion, so a concurrent write of virt-controller wins and the next pass retries).

    python -m tests.cloud.virthandler [--interval SECONDS]     # uses $KUBECONFIG
"""

from __future__ import annotations

import argparse
import ipaddress
import logging
import threading
import time
from typing import Any

from kubernetes import config
from kubernetes.client.exceptions import ApiException

from tests.cloud import networks
from tests.cloud.sim import NODES, Simulator, node_object, node_status, now

log = logging.getLogger("virthandler")
KV = ("kubevirt.io", "v1")
NAMESPACE = "kubevirt"
HANDLER_IMAGE = "virt-handler:v1.7.0"
HEARTBEAT = "kubevirt.io/heartbeat"
HEARTBEAT_EVERY = 60.0
# virt-handler's device plugins (pkg/virt-handler/device-manager, PermanentHostDevicePlugins; --max-devices 1000).
DEVICES = {"devices.kubevirt.io/kvm": "1k", "devices.kubevirt.io/tun": "1k", "devices.kubevirt.io/vhost-net": "1k"}
LAUNCHER = "virt-launcher"
CREATED_BY = "kubevirt.io/created-by"  # the VMI uid on its launcher pod


def final(phase: str | None) -> bool:
    return phase in ("Succeeded", "Failed")


def pod_condition(type_: str, status: bool, reason: str = "", message: str = "") -> dict[str, Any]:
    cond: dict[str, Any] = {"type": type_, "status": "True" if status else "False", "lastProbeTime": None,
                            "lastTransitionTime": now()}
    if reason:
        cond["reason"] = reason
    if message:
        cond["message"] = message
    return cond


class NodeSide(Simulator):
    """kubelet + virt-handler over informer caches; reuses the simulator's informer and REST helpers."""

    def __init__(self) -> None:
        super().__init__(delay=0.0, volumes=None)  # type: ignore[arg-type]  # no volumes: nothing is imported
        self.caches = {"pods": {}, "virtualmachineinstances": {}, "nodes": {}}
        self.synced = {plural: threading.Event() for plural in self.caches}
        self.nodes = {name for name, _ in NODES}
        self.heartbeat_at = 0.0

    # ----- nodes -----
    def ensure_nodes(self) -> None:
        """Register the nodes Ready with virt-handler's labels, devices and a first heartbeat."""
        for index, (name, zone) in enumerate(NODES):
            body = node_object(index, name, zone)
            body["metadata"]["labels"]["cpumanager"] = "false"
            try:
                self.rest("POST", "/api/v1/nodes", body, "application/json")
            except ApiException as e:
                if e.status != 409:
                    raise
                self.rest("PATCH", f"/api/v1/nodes/{name}", {"metadata": {"labels": body["metadata"]["labels"]}})
            status = node_status(index)
            status["capacity"] = status["allocatable"] = {**status["capacity"], **DEVICES}
            self.rest("PATCH", f"/api/v1/nodes/{name}/status", {"status": status})
            self.rest("PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": None}})
            self.ensure_handler_pod(name)
        self.heartbeat()
        log.info("nodes %s registered", ", ".join(n for n, _ in NODES))

    def heartbeat(self) -> None:
        """virt-handler's heartbeat (heartbeat.go): schedulable, and the time, every minute."""
        self.heartbeat_at = time.monotonic()
        for name in sorted(self.nodes):
            self.rest("PATCH", f"/api/v1/nodes/{name}", {"metadata": {
                "labels": {"kubevirt.io/schedulable": "true", "cpumanager": "false"},
                "annotations": {HEARTBEAT: now()}}})

    def ensure_handler_pod(self, node: str) -> None:
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"virt-handler-{node}", "namespace": NAMESPACE,
                             "labels": {"kubevirt.io": "virt-handler", "app.kubernetes.io/component": "kubevirt"}},
                "spec": {"nodeName": node, "automountServiceAccountToken": False,
                         "containers": [{"name": "virt-handler", "image": HANDLER_IMAGE}]}}
        try:
            self.rest("POST", f"/api/v1/namespaces/{NAMESPACE}/pods", body, "application/json")
        except ApiException as e:
            if e.status != 409:
                raise

    # ----- kubelet -----
    def reconcile_pods(self) -> None:
        pods = [p for p in self.cached("pods") if (p.get("spec") or {}).get("nodeName") in self.nodes]
        vmis = {v["metadata"]["uid"]: v for v in self.cached("virtualmachineinstances")}
        used: dict[str, set[str]] = {}
        for pod in pods:
            ip = (pod.get("status") or {}).get("podIP")
            if ip and not final((pod.get("status") or {}).get("phase")):
                used.setdefault(pod["spec"]["nodeName"], set()).add(ip)
        for pod in pods:
            try:
                self.reconcile_pod(pod, vmis, used)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    def reconcile_pod(self, pod: dict[str, Any], vmis: dict[str, dict[str, Any]], used: dict[str, set[str]]) -> None:
        md, spec, status = pod["metadata"], pod["spec"], pod.get("status") or {}
        path = f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}"
        if md.get("deletionTimestamp"):
            # Containers stopped: kubelet's final delete (grace 0, on the pod's uid).
            self.rest("DELETE", path, {"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}},
                      "application/json")
            log.info("pod %s/%s stopped and deleted", md["namespace"], md["name"])
            return
        if final(status.get("phase")):
            return
        vmi = vmis.get((md.get("labels") or {}).get(CREATED_BY, ""))
        if (md.get("labels") or {}).get("kubevirt.io") == LAUNCHER and vmi is not None and final(
                (vmi.get("status") or {}).get("phase")):
            self.patch_pod_status(pod, self.exited_status(pod))
            return
        node = spec["nodeName"]
        ip = status.get("podIP")
        if not ip:
            index = [n for n, _ in NODES].index(node)
            ip = networks.allocate(ipaddress.ip_network(networks.pod_cidr(index)), used.setdefault(node, set()))
        want = self.running_status(pod, ip)
        if self.same(status, want):
            return
        self.patch_pod_status(pod, want)
        if status.get("phase") != "Running":
            log.info("pod %s/%s running on %s (%s)", md["namespace"], md["name"], node, ip)

    @staticmethod
    def same(status: dict[str, Any], want: dict[str, Any]) -> bool:
        def conds(s: dict[str, Any]) -> set[tuple[str, str, str]]:
            return {(c["type"], c["status"], c.get("reason", "")) for c in s.get("conditions") or []}
        return (status.get("phase") == want["phase"] and status.get("podIP") == want["podIP"]
                and conds(want) <= conds(status)
                and len(status.get("containerStatuses") or []) == len(want["containerStatuses"]))

    def running_status(self, pod: dict[str, Any], ip: str) -> dict[str, Any]:
        spec, status = pod["spec"], pod.get("status") or {}
        started = status.get("startTime") or now()

        def container(c: dict[str, Any], *, init: bool) -> dict[str, Any]:
            sidecar = init and c.get("restartPolicy") == "Always"
            state = ({"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": started,
                                     "finishedAt": started, "containerID": f"containerd://{pod['metadata']['uid']}"}}
                     if init and not sidecar else {"running": {"startedAt": started}})
            return {"name": c["name"], "image": c["image"], "imageID": f"{c['image']}@sha256:{'0' * 64}",
                    "containerID": f"containerd://{pod['metadata']['uid']}-{c['name']}", "restartCount": 0,
                    "ready": not init or sidecar, "started": not init or sidecar, "state": state}
        # Ready: containers ready and every readiness gate True (kubelet's status manager).
        current = {c["type"]: c for c in status.get("conditions") or []}
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        false_gates = [g for g in gates if (current.get(g) or {}).get("status") != "True"]
        if false_gates:
            ready = pod_condition("Ready", False, "ReadinessGatesNotReady",
                                  f'the status of pod readiness gate "{false_gates[0]}" is not "True", but '
                                  f'{(current.get(false_gates[0]) or {}).get("status", "False")}')
        else:
            ready = pod_condition("Ready", True)
        conditions = [pod_condition("PodReadyToStartContainers", True), pod_condition("Initialized", True),
                      ready, pod_condition("ContainersReady", True), pod_condition("PodScheduled", True)]
        node_index = [n for n, _ in NODES].index(spec["nodeName"])
        host_ip = f"172.18.0.{node_index + 2}"  # sim.node_status's InternalIP (only written, never dialled)
        return {"phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}], "hostIP": host_ip,
                "hostIPs": [{"ip": host_ip}], "startTime": started, "conditions": conditions,
                "initContainerStatuses": [container(c, init=True) for c in spec.get("initContainers") or []],
                "containerStatuses": [container(c, init=False) for c in spec.get("containers") or []]}

    @staticmethod
    def exited_status(pod: dict[str, Any]) -> dict[str, Any]:
        stamp = now()
        return {"phase": "Succeeded", "conditions": [pod_condition("Ready", False, "PodCompleted"),
                                                     pod_condition("ContainersReady", False, "PodCompleted")],
                "containerStatuses": [
                    {"name": c["name"], "image": c["image"], "imageID": "", "restartCount": 0, "ready": False,
                     "started": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed",
                                                                "startedAt": stamp, "finishedAt": stamp}}}
                    for c in pod["spec"].get("containers") or []]}

    def patch_pod_status(self, pod: dict[str, Any], status: dict[str, Any]) -> None:
        md = pod["metadata"]
        # Strategic merge: conditions merge by type, so virt-controller's readiness-gate condition stays.
        written = self.rest("PATCH", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status",
                            {"status": status}, "application/strategic-merge-patch+json")
        self.remember("pods", written)

    # ----- virt-handler -----
    def reconcile_vmis(self) -> None:
        pods = self.cached("pods")
        for vmi in self.cached("virtualmachineinstances"):
            status = vmi.get("status") or {}
            if status.get("nodeName") not in self.nodes or final(status.get("phase")):
                continue
            try:
                if vmi["metadata"].get("deletionTimestamp"):
                    self.shut_down(vmi)
                elif status.get("phase") == "Scheduled":
                    pod = self.launcher_pod(vmi, pods)
                    if pod is not None and (pod.get("status") or {}).get("phase") == "Running":
                        self.start_vmi(vmi, pod)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    @staticmethod
    def launcher_pod(vmi: dict[str, Any], pods: list[dict[str, Any]]) -> dict[str, Any] | None:
        uid = vmi["metadata"]["uid"]
        return next((p for p in pods if (p["metadata"].get("labels") or {}).get(CREATED_BY) == uid
                     and not p["metadata"].get("deletionTimestamp")), None)

    def start_vmi(self, vmi: dict[str, Any], pod: dict[str, Any]) -> None:
        spec, status = vmi["spec"], vmi.get("status") or {}
        node = status["nodeName"]
        index = [n for n, _ in NODES].index(node)
        used = networks.used_addresses([v for v in self.cached("virtualmachineinstances")
                                        if not final((v.get("status") or {}).get("phase"))])
        interfaces = networks.interface_status(vmi, networks.pod_cidr(index), self.nads(vmi), used)
        pod_ip = pod["status"]["podIP"]
        pod_ifaces = {i["name"] for i, n in networks.interfaces(vmi) if "multus" not in n}
        for entry in interfaces:
            if entry["name"] in pod_ifaces:
                entry.update(ipAddress=pod_ip, ipAddresses=[pod_ip], podInterfaceName="eth0")
        domain = spec.get("domain") or {}
        cpu = domain.get("cpu") or {}
        memory = (domain.get("memory") or {}).get("guest") or ((domain.get("resources") or {}).get(
            "requests") or {}).get("memory", "")
        targets = {d["name"]: d for d in domain.get("devices", {}).get("disks") or []}
        volume_status = []
        for n, vol in enumerate(spec.get("volumes") or []):
            disk = targets.get(vol["name"], {})
            prefix = "sd" if (disk.get("cdrom") or disk.get("disk") or {}).get("bus") in ("sata", "scsi") else "vd"
            volume: dict[str, Any] = {"name": vol["name"], "target": f"{prefix}{chr(ord('a') + n)}"}
            claim = (vol.get("persistentVolumeClaim") or vol.get("dataVolume") or {}).get("claimName") or (
                vol.get("dataVolume") or {}).get("name")
            if claim:
                volume["persistentVolumeClaimInfo"] = {"claimName": claim}
            volume_status.append(volume)
        conditions = [c for c in status.get("conditions") or []
                      if c.get("type") not in ("LiveMigratable", "StorageLiveMigratable")]
        conditions += [
            # calculateLiveMigrationCondition: the pod network with masquerade migrates; bridge does not.
            {"type": "LiveMigratable", "status": "True", "lastProbeTime": None, "lastTransitionTime": None},
            {"type": "StorageLiveMigratable", "status": "True", "lastProbeTime": None, "lastTransitionTime": None}]
        transitions = list(status.get("phaseTransitionTimestamps") or [])
        transitions.append({"phase": "Running", "phaseTransitionTimestamp": now()})
        new = {
            "phase": "Running", "interfaces": interfaces, "conditions": conditions, "migrationMethod": "LiveMigration",
            "machine": {"type": (domain.get("machine") or {}).get("type") or "q35"},
            "currentCPUTopology": {"cores": cpu.get("cores", 1), "sockets": cpu.get("sockets", 1),
                                   "threads": cpu.get("threads", 1)},
            "memory": {"guestAtBoot": memory, "guestCurrent": memory, "guestRequested": memory},
            "volumeStatus": volume_status, "guestOSInfo": {}, "selinuxContext": "none",
            "phaseTransitionTimestamps": transitions,
        }
        self.update_vmi(vmi, new)
        self.event(vmi, "Started", "VirtualMachineInstance started.", "virt-handler")
        log.info("vmi %s/%s running on %s", vmi["metadata"]["namespace"], vmi["metadata"]["name"], node)

    def shut_down(self, vmi: dict[str, Any]) -> None:
        transitions = [*((vmi.get("status") or {}).get("phaseTransitionTimestamps") or []),
                       {"phase": "Succeeded", "phaseTransitionTimestamp": now()}]
        self.update_vmi(vmi, {"phase": "Succeeded", "phaseTransitionTimestamps": transitions})
        self.event(vmi, "Stopped", "The VirtualMachineInstance was shut down.", "virt-handler")
        log.info("vmi %s/%s shut down", vmi["metadata"]["namespace"], vmi["metadata"]["name"])

    def update_vmi(self, vmi: dict[str, Any], status: dict[str, Any]) -> None:
        """virt-handler's Update (PUT) of the whole VMI with its cached resourceVersion: 409 if it changed
        meanwhile. Not a merge patch: that would drop the `lastProbeTime: null` keys virt-controller's JSON
        patches `test` conditions against (Go marshals a zero metav1.Time as null)."""
        md = vmi["metadata"]
        body = {**vmi, "status": {**(vmi.get("status") or {}), **status}}
        written = self.rest("PUT", f"/apis/{KV[0]}/{KV[1]}/namespaces/{md['namespace']}/virtualmachineinstances/"
                                   f"{md['name']}", body, "application/json")
        self.remember("virtualmachineinstances", written)

    # ----- loop -----
    def start_informers(self) -> None:
        threading.Thread(target=self.informer, daemon=True, name="virtualmachineinstances",
                         args=("virtualmachineinstances", f"/apis/{KV[0]}/{KV[1]}/virtualmachineinstances",
                               self.api.list_cluster_custom_object, *KV, "virtualmachineinstances")).start()
        threading.Thread(target=self.informer, daemon=True, name="pods",
                         args=("pods", "/api/v1/pods", self.core.list_pod_for_all_namespaces)).start()
        threading.Thread(target=self.informer, daemon=True, name="nodes",
                         args=("nodes", "/api/v1/nodes", self.core.list_node)).start()
        for synced in self.synced.values():
            synced.wait()

    def run(self, interval: float) -> None:
        while True:
            for step in (self.reconcile_pods, self.reconcile_vmis):
                try:
                    step()
                except Exception:
                    log.exception("%s", step.__name__)
            if time.monotonic() - self.heartbeat_at >= HEARTBEAT_EVERY:
                try:
                    self.heartbeat()
                except Exception:
                    log.exception("heartbeat")
            time.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between passes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config.load_kube_config()
    side = NodeSide()
    side.ensure_nodes()
    side.start_informers()
    log.info("node side ready")
    side.run(args.interval)


if __name__ == "__main__":
    main()
