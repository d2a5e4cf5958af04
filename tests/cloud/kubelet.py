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

import ipaddress
import logging
import re
import ssl
import threading
import time
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud import networks

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("kubelet")
# The nodes: (name, zone). Each is big enough that bench-scale's ~700 one-vCPU Instances fit on three, and
# small enough that a VMI asking 512 GiB fits on none (the e2e test of ErrorUnschedulable). 250 pods: a
# /24 podCIDR holds that many addresses.
NODES = (("sim-node-0", "zone-a"), ("sim-node-1", "zone-b"), ("sim-node-2", "zone-b"))
# virt-handler's device plugins (pkg/virt-handler/device-manager, --max-devices 1000): every virt-launcher pod
# asks one of each, so a node without them fails scheduling with "Insufficient devices.kubevirt.io/kvm".
DEVICES = {"devices.kubevirt.io/kvm": "1k", "devices.kubevirt.io/tun": "1k", "devices.kubevirt.io/vhost-net": "1k"}
NODE_CAPACITY = {"cpu": "256", "memory": "256Gi", "pods": "250", "ephemeral-storage": "1Ti", **DEVICES}
HEARTBEAT = "kubevirt.io/heartbeat"  # virt-handler's (pkg/virt-handler/heartbeat/heartbeat.go), every minute
HEARTBEAT_EVERY = 60.0
HANDLER_NAMESPACE = "kubevirt"
SCHEDULABLE_LABEL = "kubevirt.io/schedulable"  # virt-handler's, on a node that runs VMIs
# virt-handler's node labeller: the machine types the node's QEMU supports (a VMI asking one gets a nodeSelector).
MACHINE_TYPES = {f"machine-type.node.kubevirt.io/{m}": "true" for m in ("q35", "pc-q35-rhel9.6.0", "pc-q35-rhel9.4.0")}
LAUNCHER = ("kubevirt.io", "virt-launcher")
CREATED_BY = "kubevirt.io/created-by"  # the VMI uid on its launcher pod
BACKOFF_BASE, BACKOFF_MAX = 10.0, 300.0  # kubelet's container restart back-off (pkg/kubelet/kubelet.go)
BACKOFF_SCALE = 0.1  # the local cloud's kubelet waits a tenth of that: 1 s, 2 s, 4 s ... 30 s
IMPORTER_LABEL = ("cdi.kubevirt.io", "importer")
Payload = Callable[[threading.Event, dict[str, Any]], tuple[int, str]]


_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def quantity(value: Any) -> float:
    """A Kubernetes quantity (500m, 2, 64Mi) as a number."""
    m = re.fullmatch(r"([0-9.]+)(m|[kMGT]i?|)", str(value))
    if not m:
        return 0.0
    num, unit = float(m.group(1)), m.group(2)
    return num / 1000 if unit == "m" else num * _UNITS[unit]


def now() -> str:
    import datetime as dt

    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def node_object(index: int, name: str, zone: str) -> dict[str, Any]:
    """A Node as kubelet registers it and virt-handler labels it (kubevirt.io/schedulable)."""
    return {"apiVersion": "v1", "kind": "Node",
            "metadata": {"name": name, "labels": {
                "kubernetes.io/hostname": name, "kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64",
                "topology.kubernetes.io/zone": zone, "topology.kubernetes.io/region": "sim",
                SCHEDULABLE_LABEL: "true", "cpumanager": "false", **MACHINE_TYPES}},
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


def bare(value: Any) -> Any:
    """`value` without empty parts (None, "", {}, []), which the API server may add or drop: what compares."""
    if isinstance(value, dict):
        value = {k: bare(v) for k, v in value.items()}
        return {k: v for k, v in value.items() if v not in (None, "", {}, [])} or None
    if isinstance(value, list):
        return [bare(v) for v in value] or None
    return None if value == "" else value


@dataclass
class Container:
    """What kubelet knows of a pod's (first) container between status writes."""

    restarts: int = 0
    exited: tuple[int, str, str] | None = None  # exit code, reason, termination message
    finished_at: str = ""
    started_at: str = ""
    backoff_until: float = 0.0
    running: bool = False  # the payload thread is running
    probed: bool = False  # its readiness probe passed once
    done: bool = False  # exited 0, or exited and never restarted: nothing more happens
    waiting: tuple[str, str] | None = None  # not started yet: reason, message (a Secret it needs is missing)
    last: dict[str, Any] = field(default_factory=dict)  # lastState


class Kubelet:
    """Runs the pods bound to the simulated nodes; `payloads` says what a pod's container does (by label),
    others run until deleted."""

    def __init__(self, sim: Simulator) -> None:
        self.sim = sim
        self.containers: dict[str, Container] = {}
        self.ips: dict[str, str] = {}
        self.lock = threading.Lock()
        # What a pod's first container does, by label (an empty value: any): (exit code, termination message).
        # It gets an Event set when the pod is deleted (a server stops then).
        self.payloads: list[tuple[tuple[str, str], Payload]] = []
        self.stops: dict[str, threading.Event] = {}
        self.heartbeat_at = 0.0

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
            self.handler_pod(name)
        self.heartbeat()
        log.info("nodes %s registered", ", ".join(f"{n} ({z})" for n, z in NODES))

    def handler_pod(self, node: str) -> None:
        """virt-handler's pod on the node, as its DaemonSet makes it: virt-controller's node controller looks
        for it before it fails the VMIs of a node whose heartbeat is stale."""
        body = {"apiVersion": "v1", "kind": "Pod",
                "metadata": {"name": f"virt-handler-{node}", "namespace": HANDLER_NAMESPACE,
                             "labels": {"kubevirt.io": "virt-handler", "app.kubernetes.io/component": "kubevirt"}},
                "spec": {"nodeName": node, "automountServiceAccountToken": False,
                         "containers": [{"name": "virt-handler", "image": "virt-handler:v1.7.0"}]}}
        try:
            self.sim.rest("POST", f"/api/v1/namespaces/{HANDLER_NAMESPACE}/pods", body, "application/json")
        except ApiException as e:
            if e.status not in (404, 409):  # 404: no kubevirt namespace (a cloud without KubeVirt)
                raise

    def heartbeat(self) -> None:
        """virt-handler's heartbeat: the node schedulable, and the time."""
        self.heartbeat_at = time.monotonic()
        for name, _ in NODES:
            self.sim.rest("PATCH", f"/api/v1/nodes/{name}", {"metadata": {
                "labels": {SCHEDULABLE_LABEL: "true", "cpumanager": "false"},
                "annotations": {HEARTBEAT: now()}}})

    def pod_ip(self, pod: dict[str, Any]) -> str:
        """A launcher pod gets the next free address of its node's podCIDR (the VMI's pod network shows it;
        nothing dials it). Any other pod gets a loopback address (127.<100+node>.x.y): CDI dials its importer
        pods (progress), kube-apiserver an exporter pod (its service proxy), and they must stay on this machine."""
        uid = pod["metadata"]["uid"]
        with self.lock:
            if uid not in self.ips:
                node = next((i for i, (n, _) in enumerate(NODES) if n == pod["spec"]["nodeName"]), 0)
                used = set(self.ips.values()) | {p.get("status", {}).get("podIP") for p in self.sim.cached("pods")}
                known = (pod.get("status") or {}).get("podIP")
                if known:
                    self.ips[uid] = known
                elif (pod["metadata"].get("labels") or {}).get(LAUNCHER[0]) == LAUNCHER[1]:
                    self.ips[uid] = networks.allocate(ipaddress.ip_network(networks.pod_cidr(node)),
                                                      {ip for ip in used if ip})
                else:
                    self.ips[uid] = next(ip for n in range(2, 65000)
                                         if (ip := f"127.{100 + node}.{n // 250}.{n % 250 + 2}") not in used)
            return self.ips[uid]

    def payload(self, pod: dict[str, Any]) -> Payload | None:
        labels = pod["metadata"].get("labels") or {}
        return next((fn for (k, v), fn in self.payloads if k in labels and (not v or labels[k] == v)), None)

    def stop_event(self, uid: str) -> threading.Event:
        with self.lock:
            return self.stops.setdefault(uid, threading.Event())

    def reconcile(self) -> None:
        if time.monotonic() - self.heartbeat_at >= HEARTBEAT_EVERY:
            self.heartbeat()
        nodes = {n for n, _ in NODES}
        live = set()
        finished = {v["metadata"]["uid"] for v in self.sim.cached("virtualmachineinstances")
                    if (v.get("status") or {}).get("phase") in ("Succeeded", "Failed")}
        for pod in self.sim.cached("pods"):
            if pod["spec"].get("nodeName") not in nodes:
                continue
            live.add(pod["metadata"]["uid"])
            if pod["metadata"].get("deletionTimestamp"):
                self.delete(pod)
                continue
            labels = pod["metadata"].get("labels") or {}
            if labels.get(LAUNCHER[0]) == LAUNCHER[1] and labels.get(CREATED_BY) in finished:
                self.exited(pod)  # the domain is gone: virt-launcher exits
                continue
            try:
                self.sync(pod)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
        with self.lock:
            for uid in set(self.stops) - live:
                self.stops.pop(uid).set()
            for uid in set(self.containers) - live:
                del self.containers[uid]
            for uid in set(self.ips) - live:
                del self.ips[uid]

    def delete(self, pod: dict[str, Any]) -> None:
        """A pod being deleted: its containers are stopped at once (no grace period to wait out)."""
        md = pod["metadata"]
        self.stop_event(md["uid"]).set()
        try:
            self.sim.rest("DELETE", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}",
                          {"gracePeriodSeconds": 0, "preconditions": {"uid": md["uid"]}}, "application/json")
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    def exited(self, pod: dict[str, Any]) -> None:
        status = pod.get("status") or {}
        if status.get("phase") in ("Succeeded", "Failed"):
            return
        stamp = now()
        md = pod["metadata"]
        done = [{"type": t, "status": "False", "reason": "PodCompleted"} for t in ("Ready", "ContainersReady")]
        written = self.sim.rest("PATCH", f"/api/v1/namespaces/{md['namespace']}/pods/{md['name']}/status", {"status": {
            "phase": "Succeeded", "conditions": done,
            "containerStatuses": [
                {"name": c["name"], "image": c.get("image", ""), "imageID": "", "restartCount": 0, "ready": False,
                 "started": False, "state": {"terminated": {"exitCode": 0, "reason": "Completed", "startedAt": stamp,
                                                            "finishedAt": stamp}}}
                for c in pod["spec"].get("containers") or []]}}, "application/strategic-merge-patch+json")
        self.sim.remember("pods", written)

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
            if not c.started_at:  # kubelet starts no container before the Secrets it needs exist
                c.waiting = self.missing_secret(pod)
                if c.waiting is not None:
                    self.write(pod, c)
                    return
            if payload is not None or not c.started_at:  # a payload runs again on each restart
                c.started_at = now()
            if payload is not None:
                c.running = True
                threading.Thread(target=self.run, args=(pod, c, payload), daemon=True).start()
        self.write(pod, c)

    def run(self, pod: dict[str, Any], c: Container, payload: Payload) -> None:
        md = pod["metadata"]
        try:
            code, message = payload(self.stop_event(md["uid"]), pod)
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

    def missing_secret(self, pod: dict[str, Any]) -> tuple[str, str] | None:
        """Why the pod's containers cannot start yet, if a Secret they need is missing: a Secret volume keeps
        them ContainerCreating, a Secret in their environment fails them with CreateContainerConfigError (CDI
        makes a cloner pod's Secret after the pod, and creates it only while the pod is not Running)."""
        spec, ns = pod["spec"], pod["metadata"]["namespace"]
        wanted = [(v["secret"]["secretName"], "ContainerCreating", "") for v in spec.get("volumes") or []
                  if v.get("secret") and not v["secret"].get("optional")]
        for container in [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]:
            refs = [(v.get("valueFrom") or {}).get("secretKeyRef") or {} for v in container.get("env") or []]
            refs += [e.get("secretRef") or {} for e in container.get("envFrom") or []]
            wanted += [(r["name"], "CreateContainerConfigError", f'secret "{r["name"]}" not found')
                       for r in refs if r.get("name") and not r.get("optional")]
        for name, reason, message in wanted:
            try:
                self.sim.rest("GET", f"/api/v1/namespaces/{ns}/secrets/{name}")
            except ApiException as e:
                if e.status != 404:
                    raise
                return reason, message
        return None

    def probe(self, pod: dict[str, Any], c: Container) -> bool:
        """The first container's HTTP readiness probe, as kubelet runs it (on the pod's loopback address)."""
        get = ((pod["spec"]["containers"] or [{}])[0].get("readinessProbe") or {}).get("httpGet")
        if get is None or c.probed:
            return True
        url = f"{get.get('scheme', 'HTTP').lower()}://{self.pod_ip(pod)}:{get['port']}{get.get('path', '/')}"
        ctx = ssl.create_default_context()
        ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE  # kubelet does not verify probe certificates
        try:
            with urllib.request.urlopen(url, timeout=1, context=ctx) as resp:
                c.probed = 200 <= resp.status < 400
        except OSError:
            c.probed = False
        return c.probed

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
        if c.waiting is not None:
            reason, message = c.waiting
            state: dict[str, Any] = {"waiting": {"reason": reason, **({"message": message} if message else {})}}
            phase, ready = "Pending", False
        elif c.exited is None:
            state = {"running": {"startedAt": c.started_at}}
            phase, ready = "Running", self.probe(pod, c)
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
                "state": state if first or c.waiting else {"running": {"startedAt": c.started_at}},
                **({"lastState": c.last} if first and c.last else {})})
        inits = []
        for container in spec.get("initContainers") or []:
            sidecar = container.get("restartPolicy") == "Always"  # runs beside the containers
            inits.append({"name": container["name"], "image": container.get("image", ""), "imageID": "",
                          "containerID": "", "restartCount": 0, "ready": sidecar, "started": sidecar,
                          "state": {"running": {"startedAt": c.started_at}} if sidecar else {"terminated": {
                              "exitCode": 0, "reason": "Completed", "startedAt": c.started_at,
                              "finishedAt": c.started_at, "containerID": ""}}})
        # Ready: containers ready and every readiness gate's condition True (the launcher pod's
        # kubevirt.io/virtual-machine-unpaused, which virt-controller writes: False while the VMI is paused).
        current = {x.get("type"): x for x in status.get("conditions") or []}
        gates = [g["conditionType"] for g in spec.get("readinessGates") or []]
        closed = [g for g in gates if (current.get(g) or {}).get("status") != "True"]
        containers_ready = phase == "Running" and all(s["ready"] for s in statuses)

        def cond(type_: str, ok: bool, reason: str = "", message: str = "") -> dict[str, Any]:
            return {"type": type_, "status": "True" if ok else "False", "lastTransitionTime": None,
                    "lastProbeTime": None, **({"reason": reason} if reason else {}),
                    **({"message": message} if message else {})}
        if containers_ready and closed:
            ready = cond("Ready", False, "ReadinessGatesNotReady", f'the status of pod readiness gate "{closed[0]}" '
                         f'is not "True", but {(current.get(closed[0]) or {}).get("status", "False")}')
        else:
            ready = cond("Ready", containers_ready)
        # Strategic merge by type: the gates' conditions (virt-controller's) are neither sent nor overwritten.
        conditions = [cond("PodReadyToStartContainers", phase == "Running"), cond("Initialized", True),
                      cond("ContainersReady", containers_ready), ready, cond("PodScheduled", True)]
        ip = self.pod_ip(pod)
        node = next((i for i, (n, _) in enumerate(NODES) if n == spec["nodeName"]), 0)
        host = f"127.{100 + node}.0.1"  # the node's InternalIP
        desired = {"phase": phase, "hostIP": host, "hostIPs": [{"ip": host}], "podIP": ip, "podIPs": [{"ip": ip}],
                   "containerStatuses": statuses, "initContainerStatuses": inits,
                   "qosClass": status.get("qosClass") or "Burstable"}

        def signature(s: dict[str, Any]) -> Any:
            conds = sorted((x.get("type"), x.get("status"), x.get("reason", "")) for x in s.get("conditions") or []
                           if x.get("type") not in gates)
            return ({k: bare(s.get(k)) for k in desired}, conds)
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
                                            "conditions": conditions}}, "application/strategic-merge-patch+json")
        self.sim.remember("pods", written)
