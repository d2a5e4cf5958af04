"""The node side the local cloud has no machine for: kubelet on three Nodes.

Registration (as kubelet registers a node and virt-handler labels it): sim-node-0 in zone-a, sim-node-1 and
sim-node-2 in zone-b (`topology.kubernetes.io/zone`), each 256 CPUs, 256 GiB, 250 pods, podCIDR
10.244.<n>.0/24, Ready (no kubelet heartbeats them and no controller of the local cloud marks nodes
NotReady); the admission's not-ready taint is removed once Ready.

Pods: a pod the real kube-scheduler bound to one of these nodes is run as far as its controllers can see:
`Running` with every container running and started, `Ready` once its readiness gates are True, a pod IP
on loopback (127.<100+node>.x.y: a controller that connects to a pod, as CDI's does for progress, stays on
this machine). CDI's importer pods (label `cdi.kubevirt.io: importer`) run the importer's payload
(tests/cloud/importer.py); when it exits the container is `Terminated` with its exit code, reason and the
termination message CDI reads; a pod that failed is restarted as `restartPolicy: OnFailure` says: the
container waits in `CrashLoopBackOff` for kubelet's back-off (10 s doubling up to 5 min, here scaled down
by `BACKOFF_SCALE`), then runs again with `restartCount` one higher. A pod that exited 0 is `Succeeded`.

Modelled on kubelet's pod status manager (pkg/kubelet/status, pkg/kubelet/kuberuntime: CrashLoopBackOff,
lastState, restartCount) in Kubernetes v1.37.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud import networks, scheduler

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("kubelet")
# The nodes: (name, zone). Each is big enough that bench-scale's ~700 one-vCPU Instances fit on three, and
# small enough that a VMI asking 512 GiB fits on none (the e2e test of ErrorUnschedulable). 250 pods: a
# /24 podCIDR holds that many addresses.
NODES = (("sim-node-0", "zone-a"), ("sim-node-1", "zone-b"), ("sim-node-2", "zone-b"))
NODE_CAPACITY = {"cpu": "256", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti"}
BACKOFF_BASE, BACKOFF_MAX = 10.0, 300.0  # kubelet's container restart back-off (pkg/kubelet/kubelet.go)
BACKOFF_SCALE = 0.1  # the local cloud's kubelet waits a tenth of that: 1 s, 2 s, 4 s ... 30 s
IMPORTER_LABEL = ("cdi.kubevirt.io", "importer")


def now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_object(index: int, name: str, zone: str) -> dict[str, Any]:
    """A Node as kubelet registers it and virt-handler labels it (kubevirt.io/schedulable)."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "sim",
                scheduler.SCHEDULABLE_LABEL: "true"}},
            "spec": {"podCIDR": networks.pod_cidr(index), "podCIDRs": [networks.pod_cidr(index)],
                     "providerID": f"sim://{name}"}}


def node_status(index: int) -> dict[str, Any]:
    stamp = now()

    def cond(type_: str, status: str, reason: str, message: str) -> dict[str, str]:
        return {"type": type_, "status": status, "reason": reason, "message": message,
                "lastHeartbeatTime": stamp, "lastTransitionTime": stamp}
    return {"capacity": NODE_CAPACITY, "allocatable": NODE_CAPACITY,
            "conditions": [cond("MemoryPressure", "False", "KubeletHasSufficientMemory",
                                "kubelet has sufficient memory available"),
                           cond("DiskPressure", "False", "KubeletHasNoDiskPressure", "kubelet has no disk pressure"),
                           cond("PIDPressure", "False", "KubeletHasSufficientPID",
                                "kubelet has sufficient PID available"),
                           cond("Ready", "True", "KubeletReady", "kubelet is posting ready status")],
            "addresses": [{"type": "InternalIP", "address": f"127.{100 + index}.0.1"},
                          {"type": "Hostname", "address": NODES[index][0]}],
            "nodeInfo": {"architecture": "amd64", "operatingSystem": "linux", "osImage": "Kova simulated node",
                         "kernelVersion": "6.8.0", "kubeletVersion": "v1.37.2", "kubeProxyVersion": "",
                         "containerRuntimeVersion": "containerd://2.1.0", "bootID": "", "machineID": "",
                         "systemUUID": ""}}


@dataclass
class Container:
    """What kubelet knows of a pod's (first) container between status writes."""

    restarts: int = 0
    exited: tuple[int, str, str] | None = None  # exit code, reason, termination message
    finished_at: str = ""
    started_at: str = ""
    backoff_until: float = 0.0
    running: bool = False  # the payload thread is running
    done: bool = False  # exited 0, or exited and never restarted: nothing more happens
    last: dict[str, Any] = field(default_factory=dict)  # lastState


class Kubelet:
    """Runs the pods bound to the simulated nodes; `payloads` says what a pod's container does (by label),
    others run until deleted."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.containers: dict[str, Container] = {}
        self.ips: dict[str, str] = {}
        self.lock = threading.Lock()
        self.payloads: list[tuple[tuple[str, str], Callable[[dict[str, Any]], tuple[int, str]]]] = []

    def register_nodes(self) -> None:
        """Register the nodes, Ready. The TaintNodesByCondition admission gives a new Node the not-ready
        taint; the node lifecycle controller takes it off once the node is Ready, and so does this."""
        for index, (name, zone) in enumerate(NODES):
            body = node_object(index, name, zone)
            try:
                self.sim.rest("POST", "/api/v1/nodes", body, "application/json")
            except ApiException as e:
                if e.status != 409:
                    raise
                self.sim.rest("PATCH", f"/api/v1/nodes/{name}", {"metadata": {"labels": body["metadata"]["labels"]}})
            self.sim.rest("PATCH", f"/api/v1/nodes/{name}/status", {"status": node_status(index)})
            self.sim.rest("PATCH", f"/api/v1/nodes/{name}", {"spec": {"taints": None}})
        log.info("nodes %s registered", ", ".join(f"{n} ({z})" for n, z in NODES))

    def pod_ip(self, pod: dict[str, Any]) -> str:
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid not in self.ips:
                node = next((i for i, (n, _) in enumerate(NODES) if n == pod["spec"]["nodeName"]), 0)
                used = set(self.ips.values())
                self.ips[uid] = next(ip for n in range(2, 65000)
                                     if (ip := f"127.{100 + node}.{n // 250}.{n % 250 + 2}") not in used)
            return self.ips[uid]

    def payload(self, pod: dict[str, Any]) -> Callable[[dict[str, Any]], tuple[int, str]] | None:
        labels = pod["metadata"].get("labels") or {}
        return next((fn for (k, v), fn in self.payloads if labels.get(k) == v), None)

    def reconcile(self) -> None:
        nodes = {n for n, _ in NODES}
        live = set()
        for pod in self.sim.cached("pods"):
            if pod["spec"].get("nodeName") not in nodes:
                continue
            live.add(pod["metadata"]["uid"])
            if pod["metadata"].get("deletionTimestamp"):
                self.delete(pod)
                continue
            try:
                self.sync(pod)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
        with self.lock:
            for uid in set(self.containers) - live:
                del self.containers[uid]
            for uid in set(self.ips) - live:
                del self.ips[uid]

    def delete(self, pod: dict[str, Any]) -> None:
        """A pod being deleted: its containers are stopped at once (no grace period to wait out)."""
        md = pod["metadata"]
        try:
            self.sim.rest("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                          {"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}}, "application/json")
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def sync(self, pod: dict[str, Any]) -> None:
        uid = pod["metadata"]["uid"]
        phase = (pod.get("status") or {}).get("phase")
        if phase in ("Succeeded", "Failed"):
            return
        with self.lock:
            c = self.containers.setdefault(uid, Container())
        payload = self.payload(pod)
        if c.exited is not None and not c.done and time.monotonic() >= c.backoff_until:
            # The back-off is over: kubelet starts the container again.
            c.last = self.terminated(c)
            c.exited, c.restarts = None, c.restarts + 1
        if c.exited is None and not c.running and not c.done:
            c.started_at = now()
            if payload is not None:
                c.running = True
                threading.Thread(target=self.run, args=(pod, c, payload), daemon=True).start()
        self.write(pod, c)

    def run(self, pod: dict[str, Any], c: Container, payload: Callable[[dict[str, Any]], tuple[int, str]]) -> None:
        md = pod["metadata"]
        try:
            code, message = payload(pod)
        except Exception as e:  # the container crashed
            log.exception("pod %s/%s", md["namespace"], md["name"])
            code, message = 2, f"{type(e).__name__}: {e}"
        c.exited = (code, "Completed" if code == 0 else "Error", message[:4096])
        c.finished_at = now()
        policy = pod["spec"].get("restartPolicy", "Always")
        restart = policy == "Always" or (policy == "OnFailure" and code != 0)
        c.done = not restart
        c.backoff_until = time.monotonic() + self.backoff(c)
        c.running = False
        log.info("pod %s/%s container exited %d (%s)", md["namespace"], md["name"], code, message[:200])
        cached = self.sim.get_cached("pods", md["namespace"], md["name"])
        if cached is not None and cached["metadata"]["uid"] == md["uid"]:
            try:
                self.write(cached, c)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    @staticmethod
    def backoff(c: Container) -> float:
        return min(BACKOFF_BASE * 2 ** c.restarts, BACKOFF_MAX) * BACKOFF_SCALE

    def terminated(self, c: Container) -> dict[str, Any]:
        code, reason, message = c.exited or (0, "Completed", "")
        return {"terminated": {"exitCode": code, "reason": reason, "message": message, "startedAt": c.started_at,
                               "finishedAt": c.finished_at, "containerID": ""}}

    def write(self, pod: dict[str, Any], c: Container) -> None:
        """The pod's status as kubelet reports it; written only when it changed."""
        spec, status = pod["spec"], pod.get("status") or {}
        containers = spec.get("containers") or []
        if c.exited is None:
            state: dict[str, Any] = {"running": {"startedAt": c.started_at}}
            phase, ready = "Running", True
        elif c.done:
            state, ready = self.terminated(c), False
            phase = "Succeeded" if c.exited[0] == 0 else "Failed"
        elif time.monotonic() < c.backoff_until - self.backoff(c) / 2:
            # Just exited: kubelet reports the termination (CDI reads its message) before the back-off.
            state, phase, ready = self.terminated(c), "Running", False
        else:
            name = containers[0]["name"] if containers else ""
            delay = int(min(BACKOFF_BASE * 2 ** c.restarts, BACKOFF_MAX))  # what kubelet says, unscaled
            state = {"waiting": {"reason": "CrashLoopBackOff", "message": f"back-off {delay}s restarting failed "
                                 f"container={name} pod={pod['metadata']['name']}_{pod['metadata']['namespace']}"
                                 f"({pod['metadata']['uid']})"}}
            phase, ready = "Running", False
        statuses = []
        for i, container in enumerate(containers):
            first = i == 0
            statuses.append({
                "name": container["name"], "image": container.get("image", ""), "imageID": "", "containerID": "",
                "ready": ready if first else phase == "Running", "started": "running" in state if first else True,
                "restartCount": c.restarts if first else 0,
                "state": state if first else {"running": {"startedAt": c.started_at}},
                **({"lastState": c.last} if first and c.last else {})})
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        gated = all(any(x.get("type") == g and x.get("status") == "True" for x in status.get("conditions") or [])
                    for g in gates)
        containers_ready = phase == "Running" and all(s["ready"] for s in statuses)
        keep = [x for x in status.get("conditions") or [] if x.get("type") in gates]
        conditions = [*keep, *({"type": t, "status": "True" if v else "False", "lastTransitionTime": None,
                                "lastProbeTime": None}
                               for t, v in (("PodReadyToStartContainers", phase == "Running"), ("Initialized", True),
                                            ("ContainersReady", containers_ready),
                                            ("Ready", containers_ready and gated), ("PodScheduled", True)))]
        ip = self.pod_ip(pod)
        desired = {"phase": phase, "hostIP": ip.rsplit(".", 2)[0] + ".0.1", "podIP": ip, "podIPs": [{"ip": ip}],
                   "containerStatuses": statuses, "qosClass": status.get("qosClass") or "Burstable"}

        def signature(s: dict[str, Any]) -> Any:
            conds = sorted((x.get("type"), x.get("status")) for x in s.get("conditions") or [])
            return ({k: s.get(k) for k in desired}, conds)
        if signature(status) == signature({**desired, "conditions": conditions}):
            return
        stamp = now()
        old = {x.get("type"): x for x in status.get("conditions") or []}
        for x in conditions:
            same = old.get(x["type"], {}).get("status") == x["status"]
            x["lastTransitionTime"] = old[x["type"]].get("lastTransitionTime") if same else stamp
        md = pod["metadata"]
        written = self.sim.rest("PATCH", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status",
                                {"status": {**desired, "startTime": status.get("startTime") or stamp,
                                            "conditions": conditions}})
        self.sim.remember("pods", written)
