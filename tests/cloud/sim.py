"""The KubeVirt side the local cloud does not run for real yet, and the node side it has no machine for.

CDI is real: cdi-controller v1.65.0 (started by tests/cloud/bench.py) makes each DataVolume's claim and
importer pod, and reports phases, conditions and restarts itself. What it needs of a node is here:
kubelet (tests/cloud/kubelet.py: the Nodes, pods run as far as controllers can see, restarts), the
importer pod's payload (tests/cloud/importer.py: download, checksum, conversion to raw, the importer's
failure modes) and a CSI driver (tests/cloud/csi.py: provisioning, binding, expansion, deletion). Pods are
placed by the real kube-scheduler.

kube-scheduler for VMIs (tests/cloud/scheduler.py, pure functions, until virt-controller makes launcher
pods here): a VMI is placed on a node that passes the filters (taints, nodeSelector and required node
affinity, the sum of requests already on the node, required pod affinity and anti-affinity over the placed
VMIs' labels by topologyKey, and other VMIs' anti-affinity), best by preferred (anti-)affinity weights, then
fewest VMIs, then name. When none fits, the VMI stays Scheduling with PodScheduled False / Unschedulable and
kube-scheduler's message ("0/3 nodes are available: ..."), the VM says ErrorUnschedulable; it is retried
every step, so a freed node takes it.

KubeVirt: a VirtualMachine that should run (runStrategy Always/RerunOnFailure/Once, or `running: true`;
Manual on a start request) waits for its DataVolumes (Provisioning), gets a VirtualMachineInstance it
controls, is scheduled (status.nodeName and the `kubevirt.io/nodeName` label) and moves Starting → Running
with `ready`; Halted removes the VMI (Stopping → Stopped). `status.stateChangeRequests` (Stop of a VMI
uid, then Start) are carried out as virt-controller does: that is how a restart replaces the VMI. A VMI
whose `Paused` condition is True makes the VM `Paused` (not ready; the VMI's conditions are mirrored on the
VM). Disks, CD-ROMs, firmware (EFI, secure boot), machine type, rng, video and interface models are taken
as written: only networks and resources matter here.

Networks (tests/cloud/networks.py): `status.interfaces` has one entry per interface (eth0, eth1, ...): the
pod network's address from the node's podCIDR; a Multus network's from its NetworkAttachmentDefinition's
IPAM (`range`, `subnet`, `ranges`) or else a 192.168.<crc32(ns/name) % 250>.0/24 of its own; the lowest free
address, unique per network. A VMI naming a NAD that does not exist stays Pending with Synchronized False /
FailedCreate ("failed to render launch manifest: failed to locate network attachment definition ns/name")
and a Warning event, as virt-controller leaves it; the VM shows Starting with that condition mirrored; once
the NAD exists the VMI starts.

virt-api: the aggregated API subresources.kubevirt.io (tests/cloud/virtapi.py), behind a real APIService.
virt-exportproxy and the export controller: VirtualMachineExports (tests/cloud/exportserver.py).

Like KubeVirt's and CDI's controllers, it works from informer-style caches: one watch per kind keeps an
in-memory copy of every DataVolume, PersistentVolumeClaim, PersistentVolume, Pod, VirtualMachine,
VirtualMachineInstance, VirtualMachineExport and Node, and its own writes update that copy at once.
A pass over the caches costs the API server nothing.

    python -m tests.cloud.sim [--delay SECONDS] [--virt-api-port N] [--export-port N]     # uses $KUBECONFIG
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as dt
import functools
import json
import logging
import os
import re
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.cloud import csi, importer, kubelet, networks, scheduler

log = logging.getLogger("sim")
KV = ("kubevirt.io", "v1")
CDI = ("cdi.kubevirt.io", "v1beta1")
EXPORT = ("export.kubevirt.io", "v1")
NAD = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
# The nodes: (name, zone). Each is big enough that bench-scale's ~700 one-vCPU Instances fit on three, and
# small enough that a VMI asking 512 GiB fits on none (the e2e test of ErrorUnschedulable). 250 pods: a
# /24 podCIDR holds that many addresses.
NODE_NAME_LABEL = "kubevirt.io/nodeName"  # virt-controller's label on a scheduled VMI
RUNNING_STRATEGIES = {"Always", "RerunOnFailure", "Once"}
STORAGE_CLASS = "sim-local"
EXPORT_TTL = dt.timedelta(hours=2)  # exportv1.DefaultDurationTTL
_DURATION = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
# What kubelet says of a pod whose readiness gate is False: virt-controller copies it to the VMI (and the VM).
PAUSED_NOT_READY = ("ReadinessGatesNotReady",
                    'the status of pod readiness gate "kubevirt.io/virtual-machine-unpaused" is not "True", '
                    'but False')


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_time(value: str) -> dt.datetime:
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))


def duration(value: str) -> dt.timedelta:
    """A Go duration (metav1.Duration) such as 2h, 90s or 1h30m."""
    parts = re.findall(r"([0-9.]+)(ms|h|m|s)", value)
    if not parts or "".join(n + u for n, u in parts) != value:
        raise ValueError(f"not a duration: {value!r}")
    return dt.timedelta(seconds=sum(float(n) * _DURATION[u] for n, u in parts))


def condition(type_: str, status: bool, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": now(), "lastProbeTime": now()}


def find_condition(obj: dict[str, Any] | None, type_: str) -> dict[str, Any] | None:
    return next((c for c in (obj or {}).get("status", {}).get("conditions") or [] if c.get("type") == type_), None)


def has_condition(obj: dict[str, Any] | None, type_: str) -> bool:
    return (find_condition(obj, type_) or {}).get("status") == "True"


def signature(conditions: list[dict[str, Any]] | None) -> list[tuple[str, str, str, str]]:
    """Conditions without their timestamps: what decides whether a status write is needed."""
    return sorted((c.get("type", ""), c.get("status", ""), c.get("reason", ""), c.get("message", ""))
                  for c in conditions or [])


def claim_names(vm_or_vmi_spec: dict[str, Any]) -> list[str]:
    """The PersistentVolumeClaims behind a VM's (or VMI's) volumes: a DataVolume's claim has its name."""
    out = []
    for volume in vm_or_vmi_spec.get("volumes", []):
        name = volume.get("dataVolume", {}).get("name") or volume.get("persistentVolumeClaim", {}).get("claimName")
        if name:
            out.append(name)
    return out


def moot(e: ApiException) -> bool:
    """An error a controller shrugs off: the object is gone or changed, or its namespace is going away."""
    return e.status in (404, 409) or (e.status == 403 and "NamespaceTerminating" in str(e.body or ""))


def vmi_final(vmi: dict[str, Any]) -> bool:
    return vmi.get("status", {}).get("phase") in ("Succeeded", "Failed")


class Cluster:
    """One pass's view for kube-scheduler and the IPAM, built when first needed and kept current as the
    pass binds VMIs and hands out addresses (the caches only see those writes on the next pass)."""

    def __init__(self, nodes: list[dict[str, Any]], vmis: list[dict[str, Any]]) -> None:
        self.node_objects = sorted(nodes, key=lambda n: n["metadata"]["name"])
        self.vmis = vmis

    @functools.cached_property
    def nodes(self) -> list[scheduler.Node]:
        return [scheduler.node_from_object(n) for n in self.node_objects]

    @functools.cached_property
    def placed(self) -> list[scheduler.Pod]:
        # A pod that has finished holds nothing; one that is being deleted still does, until it is gone.
        return [scheduler.pod_from_vmi(v) for v in self.vmis
                if (v.get("status") or {}).get("nodeName") and not vmi_final(v)]

    @functools.cached_property
    def used(self) -> dict[str, set[str]]:
        return networks.used_addresses([v for v in self.vmis if not vmi_final(v)])

    def bind(self, pod: scheduler.Pod, node: str) -> None:
        self.placed.append(dataclasses.replace(pod, node=node))

    def pod_cidr(self, node: str) -> str:
        found = next((n for n in self.node_objects if n["metadata"]["name"] == node), None)
        return ((found or {}).get("spec") or {}).get("podCIDR") or networks.pod_cidr(0)


class Simulator:
    def __init__(self, delay: float, volumes: Path) -> None:
        self.delay = delay
        self.volumes = volumes
        self.api = client.CustomObjectsApi()
        self.core = client.CoreV1Api()
        self.last_step: dict[str, float] = {}
        self.lock = threading.Lock()
        self.caches: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "datavolumes": {}, "virtualmachines": {}, "virtualmachineinstances": {},
            "virtualmachineexports": {}, "persistentvolumeclaims": {}, "nodes": {}, "pods": {},
            "persistentvolumes": {}}
        self.synced = {plural: threading.Event() for plural in self.caches}
        self.soft_reboots: dict[str, int] = {}  # by VMI uid: the guest rebooted this often
        self.exports: Any = None  # the export server (exportserver.ExportServer), once started
        self.export_links: Callable[[dict[str, Any], list[str]], dict[str, Any]] | None = None
        self.warned: set[str] = set()  # VMI uid + reason: Warning events already recorded
        self.kubelet = kubelet.Kubelet(self)
        self.kubelet.payloads.append((kubelet.IMPORTER_LABEL, functools.partial(importer.run, self)))

    def reconcile_claims(self) -> None:
        csi.reconcile(self)

    # ----- raw API calls -----
    def rest(self, method: str, path: str, body: Any = None,
             content_type: str = "application/merge-patch+json") -> dict[str, Any]:
        """One call to the API server, JSON in and out, with the kubeconfig's credentials."""
        api = self.api.api_client
        headers = {"Accept": "application/json", "Content-Type": content_type}
        _, url, headers, data, _ = api.param_serialize(method, path, header_params=headers, body=body,
                                                       auth_settings=["BearerToken"])
        resp = api.call_api(method, url, headers, data)
        raw = resp.read()
        if not 200 <= resp.status <= 299:
            raise ApiException.from_response(http_resp=resp, body=raw.decode(errors="replace"), data=None)
        return json.loads(raw) if raw else {}

    def event(self, obj: dict[str, Any], reason: str, message: str, component: str,
              type_: str = "Normal") -> None:
        """An Event about `obj`, as a KubeVirt component's event recorder writes it."""
        md = obj["metadata"]
        stamp = now()
        self.rest("POST", f"/api/v1/namespaces/{md['namespace']}/events", {
            "apiVersion": "v1", "kind": "Event",
            "metadata": {"generateName": f"{md['name']}.", "namespace": md["namespace"]},
            "involvedObject": {"apiVersion": obj.get("apiVersion", ""), "kind": obj.get("kind", ""),
                               "name": md["name"], "namespace": md["namespace"], "uid": md["uid"],
                               "resourceVersion": md.get("resourceVersion", "")},
            "reason": reason, "message": message, "type": type_, "count": 1,
            "firstTimestamp": stamp, "lastTimestamp": stamp,
            "source": {"component": component, "host": (obj.get("status") or {}).get("nodeName", "")}},
            "application/json")

    # ----- informers -----
    def informer(self, plural: str, path: str, watch_fn: Callable[..., Any], *watch_args: str) -> None:
        """List once, then watch from that resourceVersion; list again when the watch expires (410)."""
        cache = self.caches[plural]
        while True:
            try:
                listed = self.rest("GET", path)
                with self.lock:
                    cache.clear()
                    for obj in listed["items"]:
                        cache[self._key(obj)] = obj
                self.synced[plural].set()
                rv = listed["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(watch_fn, *watch_args, resource_version=rv, timeout_seconds=300):
                    obj = event["raw_object"]
                    with self.lock:
                        if event["type"] == "DELETED":
                            cache.pop(self._key(obj), None)
                        elif event["type"] in ("ADDED", "MODIFIED") and int(
                                obj["metadata"].get("resourceVersion") or 0) >= int(
                                (cache.get(self._key(obj)) or {}).get("metadata", {}).get("resourceVersion") or 0):
                            cache[self._key(obj)] = obj
            except ApiException as e:
                if e.status != 410:
                    log.exception("watch %s", plural)
                    time.sleep(1)
            except Exception:
                log.exception("watch %s", plural)
                time.sleep(1)

    @staticmethod
    def _key(obj: dict[str, Any]) -> tuple[str, str]:
        return (obj["metadata"].get("namespace", ""), obj["metadata"]["name"])

    def cached(self, plural: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.caches[plural].values())

    def get_cached(self, plural: str, namespace: str, name: str) -> dict[str, Any] | None:
        with self.lock:
            return self.caches[plural].get((namespace, name))

    # ----- helpers -----
    def patch_status(self, gv: tuple[str, str], plural: str, obj: dict[str, Any], status: dict[str, Any]) -> None:
        md = obj["metadata"]
        try:
            written = self.api.patch_namespaced_custom_object_status(*gv, md["namespace"], plural, md["name"],
                                                                     {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise
            return
        self.remember(plural, written)

    def patch_claim_status(self, pvc: dict[str, Any], status: dict[str, Any]) -> None:
        md = pvc["metadata"]
        try:
            written = self.rest("PATCH", f"/api/v1/namespaces/{md['namespace']}/persistentvolumeclaims/"
                                         f"{md['name']}/status", {"status": status})
        except ApiException as e:
            if e.status != 404:
                raise
            return
        self.remember("persistentvolumeclaims", written)

    def remember(self, plural: str, obj: dict[str, Any]) -> None:
        """Put what the server answered into the cache, unless the watch already brought something newer."""
        def rv(o: dict[str, Any] | None) -> int:
            return int((o or {}).get("metadata", {}).get("resourceVersion") or 0)
        with self.lock:
            cache = self.caches[plural]
            if rv(obj) > rv(cache.get(self._key(obj))):
                cache[self._key(obj)] = obj

    def forget(self, plural: str, obj: dict[str, Any]) -> None:
        """Drop an object this simulator deleted, before the watch says so."""
        with self.lock:
            cached = self.caches[plural].get(self._key(obj))
            if cached is not None and cached["metadata"]["uid"] == obj["metadata"]["uid"]:
                del self.caches[plural][self._key(obj)]

    def due(self, key: str) -> bool:
        """True at most once per `delay` for `key`: each call that returns True is one step of progress."""
        t = time.monotonic()
        if t - self.last_step.get(key, 0.0) >= self.delay:
            self.last_step[key] = t
            return True
        return False

    # ----- KubeVirt -----
    def reconcile_vms(self) -> None:
        vmis = {self._key(v): v for v in self.cached("virtualmachineinstances")}
        dvs = {self._key(d): d for d in self.cached("datavolumes")}
        cluster = Cluster(self.cached("nodes"), list(vmis.values()))
        for vm in self.cached("virtualmachines"):
            if vm["metadata"].get("deletionTimestamp"):
                continue
            key = (vm["metadata"]["namespace"], vm["metadata"]["name"])
            try:
                self.reconcile_vm(vm, vmis.get(key), dvs, cluster)
            except ApiException as e:
                if not moot(e):
                    raise

    def reconcile_vm(self, vm: dict[str, Any], vmi: dict[str, Any] | None,
                     dvs: dict[tuple[str, str], dict[str, Any]], cluster: Cluster) -> None:
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        spec = vm["spec"]
        strategy = spec.get("runStrategy") or ("Always" if spec.get("running") else "Halted")
        status = vm.get("status", {})
        requests = status.get("stateChangeRequests") or []
        if requests and requests[0].get("action") == "Stop":
            # A stop (or the first half of a restart) of one VMI: delete it; once it is gone, the request is done.
            uid = requests[0].get("uid")
            if vmi is not None and uid in (None, vmi["metadata"]["uid"]):
                self.delete_vmi(vmi)
                self.set_vm(vm, "Stopping", ready=False, created=True)
            else:
                self.set_requests(vm, requests[1:])
            return
        start_requested = bool(requests) and requests[0].get("action") == "Start"
        wants_vmi = strategy in RUNNING_STRATEGIES or (strategy == "Manual" and (vmi is not None or start_requested))
        if not wants_vmi:
            if vmi is not None:
                self.delete_vmi(vmi)
                self.set_vm(vm, "Stopping", ready=False, created=True)
            elif status.get("printableStatus") != "Stopped":
                self.set_vm(vm, "Stopped", ready=False, created=False)
            if start_requested and strategy == "Halted":
                self.set_requests(vm, requests[1:])  # a paused start is not simulated
            return
        # Volumes first: a VM waits for its DataVolumes the way virt-controller does.
        for volume in spec["template"]["spec"].get("volumes", []):
            ref = volume.get("dataVolume", {}).get("name")
            if ref is None:
                continue
            dv = dvs.get((ns, ref))
            phase = (dv or {}).get("status", {}).get("phase")
            if phase == "Failed":
                self.set_vm(vm, "DataVolumeError", ready=False, created=False,
                            message=f"DataVolume {ref} failed to import")
                return
            if phase != "Succeeded":
                self.set_vm(vm, "Provisioning" if dv else "WaitingForVolumeBinding", ready=False, created=False)
                return
        if vmi is None:
            self.create_vmi(vm)
            self.last_step[f"vmi/{ns}/{name}"] = time.monotonic()
            if start_requested:
                self.set_requests(vm, requests[1:])
            self.set_vm(vm, "Starting", ready=False, created=True)
            return
        if start_requested:
            self.set_requests(vm, requests[1:])  # already running: nothing to start
        phase = vmi.get("status", {}).get("phase", "Pending")
        if phase == "Running":
            # virt-controller mirrors the VMI's conditions on the VM (syncConditions): Ready as it is on the
            # VMI (False, ReadinessGatesNotReady while paused), and the others (LiveMigratable, Paused, ...).
            mirrored = [c for c in vmi.get("status", {}).get("conditions") or [] if c.get("type") != "Ready"]
            if has_condition(vmi, "Paused"):
                self.set_vm(vm, "Paused", ready=False, created=True, ready_condition=find_condition(vmi, "Ready"),
                            extra=mirrored)
            else:
                self.set_vm(vm, "Running", ready=True, created=True, extra=mirrored)
            return
        if not self.due(f"vmi/{ns}/{name}"):
            return
        if phase in ("Pending", "Scheduling"):
            self.schedule_vmi(vm, vmi, cluster)
        elif phase == "Scheduled":
            self.run_vmi(vmi, cluster)

    def schedule_vmi(self, vm: dict[str, Any], vmi: dict[str, Any], cluster: Cluster) -> None:
        """virt-controller renders the launcher pod (every NAD it names must exist), kube-scheduler binds it."""
        status = vmi.get("status") or {}
        missing = [ref for ref, nad in self.nads(vmi).items() if nad is None]
        if missing:
            # What virt-controller's VMI controller does when RenderLaunchManifest fails: no pod, the VMI
            # stays Pending with Synchronized False / FailedCreate (the VM shows Starting, mirroring it).
            message = f"failed to render launch manifest: failed to locate network attachment definition {missing[0]}"
            sync = condition("Synchronized", False, "FailedCreate", message)
            if signature(status.get("conditions")) != signature([sync]):
                self.patch_status(KV, "virtualmachineinstances", vmi, {"phase": "Pending", "conditions": [sync]})
                self.warn_once(vmi, "FailedCreate", message, "virtualmachine-controller")
            self.set_vm(vm, "Starting", ready=False, created=True, extra=[sync])
            return
        pod = scheduler.pod_from_vmi(vmi)
        decision = scheduler.schedule(pod, cluster.nodes, cluster.placed, self.namespace_labels(pod))
        if decision.node is None:
            unschedulable = condition("PodScheduled", False, "Unschedulable", decision.message)
            if status.get("phase") != "Scheduling" or signature(status.get("conditions")) != signature(
                    [unschedulable]):
                self.patch_status(KV, "virtualmachineinstances", vmi,
                                  {"phase": "Scheduling", "conditions": [unschedulable]})
                log.info("vmi %s/%s unschedulable: %s", *self._key(vmi), decision.message)
            self.set_vm(vm, "ErrorUnschedulable", ready=False, created=True, message=decision.message,
                        extra=[unschedulable])
            return
        md = vmi["metadata"]
        # virt-controller records the launcher pod's node on the VMI: status.nodeName and a label.
        self.remember("virtualmachineinstances", self.api.patch_namespaced_custom_object(
            *KV, md["namespace"], "virtualmachineinstances", md["name"],
            {"metadata": {"labels": {NODE_NAME_LABEL: decision.node}}}))
        self.patch_status(KV, "virtualmachineinstances", vmi, {
            "phase": "Scheduled", "nodeName": decision.node, "conditions": [condition("PodScheduled", True)]})
        cluster.bind(pod, decision.node)
        log.info("vmi %s/%s scheduled on %s", md["namespace"], md["name"], decision.node)
        self.set_vm(vm, "Starting", ready=False, created=True)

    def run_vmi(self, vmi: dict[str, Any], cluster: Cluster) -> None:
        """virt-handler starts the domain; the guest agent reports one address per interface."""
        node = (vmi.get("status") or {}).get("nodeName", "")
        interfaces = networks.interface_status(vmi, cluster.pod_cidr(node), self.nads(vmi), cluster.used)
        self.patch_status(KV, "virtualmachineinstances", vmi, {
            "phase": "Running", "nodeName": node,
            "conditions": [condition("Ready", True), condition("LiveMigratable", True)],
            "interfaces": interfaces})

    def nads(self, vmi: dict[str, Any]) -> dict[str, dict[str, Any] | None]:
        """The NetworkAttachmentDefinitions a VMI's Multus networks name, by `ns/name` (None: missing)."""
        out: dict[str, dict[str, Any] | None] = {}
        for net in (vmi.get("spec") or {}).get("networks") or []:
            if "multus" not in net:
                continue
            ns, name = networks.nad_ref(vmi["metadata"]["namespace"], net["multus"].get("networkName", ""))
            try:
                out[f"{ns}/{name}"] = self.rest("GET", f"/apis/{NAD[0]}/{NAD[1]}/namespaces/{ns}/{NAD[2]}/{name}")
            except ApiException as e:
                if e.status != 404:
                    raise
                out[f"{ns}/{name}"] = None
        return out

    def namespace_labels(self, pod: scheduler.Pod) -> dict[str, dict[str, str]]:
        """Namespaces' labels, read only for a pod whose affinity terms have a namespaceSelector."""
        if "namespaceSelector" not in json.dumps(pod.affinity):
            return {}
        listed = self.rest("GET", "/api/v1/namespaces")
        return {n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in listed["items"]}

    def warn_once(self, obj: dict[str, Any], reason: str, message: str, component: str) -> None:
        key = f"{obj['metadata']['uid']}/{reason}"
        if key not in self.warned:
            self.warned.add(key)
            self.event(obj, reason, message, component, "Warning")

    def delete_vmi(self, vmi: dict[str, Any]) -> None:
        if vmi["metadata"].get("deletionTimestamp") is None:
            md = vmi["metadata"]
            try:
                self.api.delete_namespaced_custom_object(*KV, md["namespace"], "virtualmachineinstances", md["name"])
            except ApiException as e:
                if e.status != 404:
                    raise
            self.forget("virtualmachineinstances", vmi)
            log.info("vmi %s/%s deleted", md["namespace"], md["name"])

    def set_requests(self, vm: dict[str, Any], rest: list[dict[str, Any]]) -> None:
        self.patch_status(KV, "virtualmachines", vm, {"stateChangeRequests": rest or None})

    def create_vmi(self, vm: dict[str, Any]) -> None:
        md = vm["metadata"]
        template = vm["spec"]["template"]
        body = {
            "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachineInstance",
            "metadata": {"name": md["name"], "namespace": md["namespace"],
                         "annotations": template.get("metadata", {}).get("annotations", {}),
                         "labels": {**template.get("metadata", {}).get("labels", {}),
                                    "kubevirt.io/created-by": md["uid"]},
                         "ownerReferences": [{"apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine",
                                              "name": md["name"], "uid": md["uid"], "controller": True,
                                              "blockOwnerDeletion": True}]},
            "spec": template["spec"],
        }
        self.remember("virtualmachineinstances",
                      self.api.create_namespaced_custom_object(*KV, md["namespace"], "virtualmachineinstances", body))
        log.info("vmi %s/%s created", md["namespace"], md["name"])

    def set_vm(self, vm: dict[str, Any], printable: str, *, ready: bool, created: bool, message: str = "",
               ready_condition: dict[str, Any] | None = None, extra: Sequence[dict[str, Any]] = ()) -> None:
        status = vm.get("status", {})
        ready_cond = ({**condition("Ready", False), **{k: ready_condition.get(k, "") for k in ("reason", "message")}}
                      if ready_condition else condition("Ready", ready, "" if ready else printable, message))
        conditions = [ready_cond, *(c for c in extra if c)]
        if (status.get("printableStatus"), status.get("ready", False), status.get("created", False),
                signature(status.get("conditions"))) == (printable, ready, created, signature(conditions)):
            return
        self.patch_status(KV, "virtualmachines", vm, {
            "printableStatus": printable, "ready": ready, "created": created, "conditions": conditions})
        log.info("vm %s/%s %s", vm["metadata"]["namespace"], vm["metadata"]["name"], printable)

    # ----- the export controller -----
    def reconcile_exports(self) -> None:
        vms = {self._key(v): v for v in self.cached("virtualmachines")}
        vmis = {self._key(v): v for v in self.cached("virtualmachineinstances")}
        dvs = {self._key(d): d for d in self.cached("datavolumes")}
        claims = {self._key(c): c for c in self.cached("persistentvolumeclaims")}
        ready: dict[tuple[str, str], tuple[str, list[str], str]] = {}
        for export in self.cached("virtualmachineexports"):
            if export["metadata"].get("deletionTimestamp"):
                continue
            try:
                volumes = self.reconcile_export(export, vms, vmis, dvs, claims)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise
                continue
            if volumes is not None:
                md = export["metadata"]
                ready[self._key(export)] = (md["uid"], volumes, self.token_secret_name(export))
        if self.exports is not None:
            self.exports.publish(ready)  # what is no longer Ready (or is gone) is no longer served

    @staticmethod
    def token_secret_name(export: dict[str, Any]) -> str:
        # naming.GetName("export-token", name, 63) in KubeVirt
        return export["spec"].get("tokenSecretRef") or f"export-token-{export['metadata']['name']}"[:63]

    def reconcile_export(self, export: dict[str, Any], vms: dict[tuple[str, str], dict[str, Any]],
                         vmis: dict[tuple[str, str], dict[str, Any]], dvs: dict[tuple[str, str], dict[str, Any]],
                         claims: dict[tuple[str, str], dict[str, Any]]) -> list[str] | None:
        """One pass of KubeVirt's VMExportController over an export; the claims it serves when Ready."""
        md, spec = export["metadata"], export["spec"]
        ns, name = md["namespace"], md["name"]
        status = export.get("status") or {}
        try:
            ttl = duration(spec["ttlDuration"]) if spec.get("ttlDuration") else EXPORT_TTL
        except ValueError:
            ttl = EXPORT_TTL
        expires = parse_time(md["creationTimestamp"]) + ttl
        if dt.datetime.now(dt.UTC) >= expires:  # the TTL is over: the controller deletes the export
            self.api.delete_namespaced_custom_object(*EXPORT, ns, "virtualmachineexports", name)
            self.forget("virtualmachineexports", export)
            log.info("virtualmachineexport %s/%s expired", ns, name)
            return None
        token_secret = self.token_secret_name(export)
        if not spec.get("tokenSecretRef") and status.get("tokenSecretRef") != token_secret:
            self.create_token_secret(export, token_secret)
        source = spec["source"]
        kind, src = source.get("kind"), source.get("name", "")
        group = source.get("apiGroup") or ""
        desired: dict[str, Any] = {"tokenSecretRef": token_secret, "serviceName": f"virt-export-{name}"[:63],
                                   "ttlExpirationTime": expires.strftime("%Y-%m-%dT%H:%M:%SZ")}
        conditions: list[dict[str, str]] = []
        volumes: list[str] = []
        not_ready: tuple[str, str] | None = None
        phase = "Pending"
        if kind == "VirtualMachine" and group == "kubevirt.io":
            desired["virtualMachineName"] = src
            vm = vms.get((ns, src))
            volumes = claim_names(vm["spec"]["template"]["spec"]) if vm else []
            populated = all(self.populated(claims.get((ns, v)), dvs.get((ns, v))) for v in volumes)
            vmi = vmis.get((ns, src))
            if vm is None:
                not_ready, phase = ("VMNotFound", f"Virtual Machine {ns}/{src} not found"), "Skipped"
            elif not volumes:
                not_ready, phase = ("VMNoVolumes", f"Virtual Machine {ns}/{src} has no volumes"), "Skipped"
            elif not populated:
                not_ready = ("VolumesNotPopulated", f"Not all volumes in the Virtual Machine {ns}/{src} are populated")
            elif vmi is not None and not vmi_final(vmi):
                not_ready = ("InUse", f"Virtual Machine {ns}/{src} is running")
        elif kind == "PersistentVolumeClaim" and group == "":
            pvc = claims.get((ns, src))
            volumes = [src] if pvc else []
            if pvc is None:
                not_ready = ("Initializing", "")
                conditions.append(condition("PVC", False, "PVCNotFound", f"PersistentVolumeClaim {ns}/{src} not found"))
            else:
                bound = (pvc.get("status") or {}).get("phase") == "Bound"
                conditions.append(condition("PVC", bound, "PVCBound" if bound else "PVCPending"))
                # In use: a pod mounts it; here, a VMI not yet finished whose volumes name it.
                in_use = any(v["metadata"]["namespace"] == ns and not vmi_final(v) and src in claim_names(v["spec"])
                             for v in vmis.values())
                if in_use:
                    not_ready = ("InUse", f"PersistentVolumeClaim {ns}/{src} is in use")
                elif not self.populated(pvc, dvs.get((ns, src))):
                    not_ready = ("PVCPending", f"PersistentVolumeClaim {ns}/{src} is not populated")
        else:
            not_ready = ("Initializing", "")  # snapshots and templates are not simulated
        if not_ready is None:
            phase = "Ready"
            conditions.insert(0, condition("Ready", True, "PodReady"))
            desired["links"] = self.export_links(export, volumes) if self.export_links else None
            if self.exports is not None:
                # The links answer before the status says Ready, never after: a client that saw Ready and
                # downloaded at once got 404 while this pass still went through the other exports.
                self.exports.serve(ns, name, (md["uid"], volumes, token_secret))
        else:
            conditions.insert(0, condition("Ready", False, *not_ready))
        desired["phase"] = phase
        desired["conditions"] = conditions
        current = {k: v for k, v in status.items() if k != "conditions"}
        wanted = {k: v for k, v in desired.items() if k != "conditions" and v is not None}
        if current != wanted or signature(status.get("conditions")) != signature(conditions):
            patch = {**{k: None for k in status}, **desired}  # merge patch: what is no longer wanted goes
            self.patch_status(EXPORT, "virtualmachineexports", export, patch)
            log.info("virtualmachineexport %s/%s %s %s", ns, name, phase, not_ready[0] if not_ready else "")
        return volumes if phase == "Ready" else None

    @staticmethod
    def populated(pvc: dict[str, Any] | None, dv: dict[str, Any] | None) -> bool:
        """A claim is populated once bound and, when a DataVolume fills it, once the import succeeded."""
        if pvc is None or (pvc.get("status") or {}).get("phase") != "Bound":
            return False
        return dv is None or dv.get("status", {}).get("phase") == "Succeeded"

    def create_token_secret(self, export: dict[str, Any], secret_name: str) -> None:
        """KubeVirt's generated export token (kutil.GenerateVMExportToken), in a Secret the export controls."""
        md = export["metadata"]
        body = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                "metadata": {"name": secret_name, "namespace": md["namespace"],
                             "ownerReferences": [{"apiVersion": "/".join(EXPORT), "kind": "VirtualMachineExport",
                                                  "name": md["name"], "uid": md["uid"], "controller": True,
                                                  "blockOwnerDeletion": True}]},
                "stringData": {"token": secrets.token_urlsafe(24)}}
        try:
            self.rest("POST", f"/api/v1/namespaces/{md['namespace']}/secrets", body, "application/json")
        except ApiException as e:
            if e.status != 409:
                raise

    # ----- loop -----
    def start_informers(self) -> None:
        crds = ((CDI, "datavolumes"), (KV, "virtualmachines"), (KV, "virtualmachineinstances"),
                (EXPORT, "virtualmachineexports"))
        for gv, plural in crds:
            threading.Thread(target=self.informer, daemon=True, name=plural,
                             args=(plural, f"/apis/{gv[0]}/{gv[1]}/{plural}", self.api.list_cluster_custom_object,
                                   *gv, plural)).start()
        threading.Thread(target=self.informer, daemon=True, name="persistentvolumeclaims",
                         args=("persistentvolumeclaims", "/api/v1/persistentvolumeclaims",
                               self.core.list_persistent_volume_claim_for_all_namespaces)).start()
        threading.Thread(target=self.informer, daemon=True, name="nodes",
                         args=("nodes", "/api/v1/nodes", self.core.list_node)).start()
        threading.Thread(target=self.informer, daemon=True, name="persistentvolumes",
                         args=("persistentvolumes", "/api/v1/persistentvolumes",
                               self.core.list_persistent_volume)).start()
        threading.Thread(target=self.informer, daemon=True, name="pods",
                         args=("pods", "/api/v1/pods", self.core.list_pod_for_all_namespaces)).start()
        for synced in self.synced.values():
            synced.wait()

    def run(self, interval: float) -> None:
        while True:
            for step in (self.reconcile_claims, self.kubelet.reconcile, self.reconcile_vms, self.reconcile_exports):
                try:
                    step()
                except Exception:
                    log.exception("%s", step.__name__)
            time.sleep(interval)


def main() -> None:
    from tests.cloud.exportserver import ExportServer
    from tests.cloud.virtapi import VirtAPI

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds between simulated phases")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between passes")
    state = Path(os.environ.get("KUBECONFIG", "./kubeconfig")).resolve().parent
    parser.add_argument("--volumes", type=Path, default=state / "volumes")
    parser.add_argument("--state-dir", type=Path, default=state,
                        help="where the simulator writes its CAs (virt-api-ca.crt, export-ca.crt)")
    parser.add_argument("--virt-api-port", type=int, default=0, help="0: no aggregated API")
    parser.add_argument("--export-port", type=int, default=0, help="0: no export server")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config.load_kube_config()
    sim = Simulator(args.delay, args.volumes)
    sim.kubelet.register_nodes()
    sim.start_informers()
    if args.export_port:
        ExportServer(sim, args.export_port, args.state_dir).start()
    if args.virt_api_port:
        VirtAPI(sim, args.virt_api_port, args.state_dir).start()
    log.info("simulator ready (delay %.2fs)", args.delay)
    sim.run(args.interval)


if __name__ == "__main__":
    main()
