"""The local cloud's simulated node side: what KubeVirt and CDI need of a machine, and nothing else.

The controllers are real (tests/cloud/bench.py starts them): virt-controller v1.7.0 does VM → VMI,
restarts and run strategies, VMI → launcher pod, exports; cdi-controller v1.65.0 does DataVolume → claim →
importer pod, phases, conditions, restarts; kube-scheduler places every pod. This process plays:

- kubelet (tests/cloud/kubelet.py): the three Nodes, pods run as far as controllers can see, exits,
  restarts with back-off, readiness probes;
- the importer pod's payload (tests/cloud/importer.py) and the exporter pod's (tests/cloud/exportserver.py);
- two CSI drivers (tests/cloud/csi.py): provisioning, binding, expansion, deletion; CSI clones and the
  rebinds of CDI's populators on the second;
- virt-handler (tests/cloud/virthandler.py): a scheduled VMI → Running, its addresses
  (tests/cloud/networks.py: the pod network from the node's podCIDR, a Multus network from its
  NetworkAttachmentDefinition's IPAM), volumeStatus;
- virt-api (tests/cloud/virtapi.py): the aggregated API subresources.kubevirt.io behind a real APIService
  (pause, unpause, softreboot, start, stop, restart), consoles.

Like the controllers, it works from informer-style caches: one watch per kind keeps an in-memory copy of
every DataVolume, PersistentVolumeClaim, PersistentVolume, Pod, VirtualMachine, VirtualMachineInstance,
VolumeSnapshot, VolumeSnapshotContent and Node, and its own writes update that copy at once. A pass over the
caches costs the API server nothing.

    python -m tests.cloud.sim [--delay SECONDS] [--virt-api-port N]     # uses $KUBECONFIG
"""

from __future__ import annotations

import argparse
import datetime as dt
import functools
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

from tests.cloud import cloner, csi, exportserver, importer, kubelet, networks, virthandler

log = logging.getLogger("sim")
KV = ("kubevirt.io", "v1")
CDI = ("cdi.kubevirt.io", "v1beta1")
SNAPSHOT = ("snapshot.storage.k8s.io", "v1")
NAD = ("k8s.cni.cncf.io", "v1", "network-attachment-definitions")
# The nodes: (name, zone). Each is big enough that bench-scale's ~700 one-vCPU Instances fit on three, and
# small enough that a VMI asking 512 GiB fits on none (the e2e test of ErrorUnschedulable). 250 pods: a
# /24 podCIDR holds that many addresses.
NODE_NAME_LABEL = "kubevirt.io/nodeName"  # virt-controller's label on a scheduled VMI
RUNNING_STRATEGIES = {"Always", "RerunOnFailure", "Once"}
STORAGE_CLASS = "sim-local"
PREP_LABEL = ("cdi.kubevirt.io", "cdi-populator-prep")
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


class Simulator:
    def __init__(self, delay: float, volumes: Path) -> None:
        self.delay = delay
        self.volumes = volumes
        self.api = client.CustomObjectsApi()
        self.core = client.CoreV1Api()
        for api in (self.api, self.core):  # kube-apiserver's audit log tells its writes from Kova's by this
            api.api_client.user_agent = "kova-simulated-nodes"
        self.last_step: dict[str, float] = {}
        self.lock = threading.Lock()
        self.caches: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "datavolumes": {}, "virtualmachines": {}, "virtualmachineinstances": {},
            "persistentvolumeclaims": {}, "nodes": {}, "pods": {},
            "persistentvolumes": {}, "volumesnapshots": {}, "volumesnapshotcontents": {}}
        self.synced = {plural: threading.Event() for plural in self.caches}
        self.soft_reboots: dict[str, int] = {}  # by VMI uid: the guest rebooted this often
        self.warned: set[str] = set()  # VMI uid + reason: Warning events already recorded
        self.kubelet = kubelet.Kubelet(self)
        self.virt_handler = virthandler.VirtHandler(self)
        self.kubelet.payloads.append((kubelet.IMPORTER_LABEL, functools.partial(importer.run, self)))
        self.kubelet.payloads.append((exportserver.EXPORTER_LABEL, functools.partial(exportserver.run, self)))
        for label in (cloner.UPLOAD_SERVER_LABEL, cloner.CLONE_SOURCE_LABEL):  # a host-assisted clone's two pods
            self.kubelet.payloads.append((label, functools.partial(cloner.run, self)))
        # CDI's prep pod (PrepClaimPhase) only mounts a grown claim so kubelet finishes its file system's resize.
        self.kubelet.payloads.append((PREP_LABEL, lambda stopped, pod: (0, "")))

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

    # ----- loop -----
    def start_informers(self) -> None:
        crds = ((CDI, "datavolumes"), (KV, "virtualmachines"), (KV, "virtualmachineinstances"),
                (SNAPSHOT, "volumesnapshots"), (SNAPSHOT, "volumesnapshotcontents"))
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
            for step in (self.reconcile_claims, self.kubelet.reconcile, self.virt_handler.reconcile):
                try:
                    step()
                except Exception:
                    log.exception("%s", step.__name__)
            time.sleep(interval)


def main() -> None:
    from tests.cloud.virtapi import VirtAPI

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds between simulated phases")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between passes")
    state = Path(os.environ.get("KUBECONFIG", "./kubeconfig")).resolve().parent
    parser.add_argument("--volumes", type=Path, default=state / "volumes")
    parser.add_argument("--state-dir", type=Path, default=state,
                        help="where the simulator writes its CAs (virt-api-ca.crt, export-ca.crt)")
    parser.add_argument("--virt-api-port", type=int, default=0, help="0: no aggregated API")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    config.load_kube_config()
    sim = Simulator(args.delay, args.volumes)
    sim.kubelet.register_nodes()
    sim.start_informers()
    if args.virt_api_port:
        VirtAPI(sim, args.virt_api_port, args.state_dir).start()
    log.info("simulator ready (delay %.2fs)", args.delay)
    sim.run(args.interval)


if __name__ == "__main__":
    main()
