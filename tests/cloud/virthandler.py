"""virt-handler of the three simulated nodes (tests/cloud/kubelet.py registers them and runs their pods): the
part of KubeVirt that needs a node. The real virt-controller does the rest (tests/cloud/kubevirt.py).

A VMI that virt-controller handed over (phase Scheduled, status.nodeName one of the nodes) whose launcher pod
runs is started (pkg/virt-handler/vm.go, updateVMIStatus): phase Running, status.interfaces (one per
interface, eth0.. as the guest names them, tests/cloud/networks.py; the pod network's entry has the pod's
IP), LiveMigratable / StorageLiveMigratable conditions and migrationMethod, machine, currentCPUTopology,
memory, volumeStatus (one per volume with its disk's target), guestOSInfo; an Event `Started`
("VirtualMachineInstance started."). Hot-plugged volumes go through their phases (`hotplug`: AttachedToNode
→ MountedToPod → Ready, and UnMountedFromPod when they leave the spec), with virt-handler's Events. A VMI
being deleted is shut down: phase Succeeded (Event `Stopped`, "The VirtualMachineInstance was shut down."),
and kubelet sees its launcher exit. Pause, unpause and soft
reboot come through virt-api (tests/cloud/virtapi.py), which writes what virt-handler would.

A VMI has no status subresource: virt-handler updates the whole object (PUT) with the cached
resourceVersion, so a concurrent write of virt-controller wins and the next pass retries. Not a merge
patch: that would drop the `lastProbeTime: null` keys virt-controller's JSON patches `test` conditions
against (Go marshals a zero metav1.Time as null).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud import networks
from tests.cloud.kubelet import CREATED_BY, NODES, now

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("virt-handler")
KV = ("kubevirt.io", "v1")


def final(phase: str | None) -> bool:
    return phase in ("Succeeded", "Failed")


def hotpluggable(volume: dict[str, Any]) -> bool:
    return bool((volume.get("persistentVolumeClaim") or volume.get("dataVolume") or {}).get("hotpluggable"))


class VirtHandler:
    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.nodes = {name for name, _ in NODES}

    def cached(self, plural: str) -> list[dict[str, Any]]:
        return self.sim.cached(plural)

    def rest(self, *args: Any) -> Any:
        return self.sim.rest(*args)

    def event(self, *args: Any) -> None:
        self.sim.event(*args)

    def remember(self, plural: str, obj: dict[str, Any]) -> None:
        self.sim.remember(plural, obj)

    def nads(self, vmi: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        return self.sim.nads(vmi)

    def reconcile(self) -> None:
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
                elif status.get("phase") == "Running":
                    self.hotplug(vmi)
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
            if hotpluggable(vol):  # virt-controller reports those, and hotplug() below plugs them in
                continue
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

    def hotplug(self, vmi: dict[str, Any]) -> None:
        """pkg/virt-handler/vm.go updateHotplugVolumeStatus, one step per pass: a hot-plugged volume that
        virt-controller attached to the node (AttachedToNode, its attachment pod ready: attachPodUID) is
        mounted into the launcher (MountedToPod), then attached to the domain (Ready, with the guest's target:
        the next free sdX, as libvirt names SCSI disks). One that left the VMI's spec is detached and
        unmounted (UnMountedFromPod, an empty target: the field is required), and virt-controller then deletes
        its attachment pod."""
        in_spec = {v["name"] for v in vmi["spec"].get("volumes") or []}
        statuses = [dict(s) for s in (vmi.get("status") or {}).get("volumeStatus") or []]
        used = {s.get("target") for s in statuses}
        said: list[tuple[str, str]] = []
        for s in statuses:
            if s.get("hotplugVolume") is None:
                continue
            name, phase = s["name"], s.get("phase")
            if s["name"] in in_spec and phase == "AttachedToNode" and s["hotplugVolume"].get("attachPodUID"):
                s.update(phase="MountedToPod", reason="VolumeMountedToPod",
                         message=f"Volume {name} has been mounted in virt-launcher pod")
            elif s["name"] in in_spec and phase == "MountedToPod":
                target = next(t for n in range(26) if (t := f"sd{chr(ord('a') + n)}") not in used)
                used.add(target)
                s.update(phase="Ready", target=target, reason="VolumeReady",
                         message=f"Successfully attach hotplugged volume {name} to VM")
            elif s["name"] not in in_spec and phase in ("Ready", "MountedToPod", "AttachedToNode"):
                s.update(target="", phase="UnMountedFromPod", reason="VolumeUnMountedFromPod",
                         message=f"Volume {name} has been unmounted from virt-launcher pod")
            else:
                continue
            said.append((s["reason"], s["message"]))
        if said:
            self.update_vmi(vmi, {"volumeStatus": statuses})
            for reason, message in said:
                self.event(vmi, reason, message, "virt-handler")

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

