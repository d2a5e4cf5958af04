"""A small KubeVirt + CDI simulator: plays their controllers on a cluster that has no KVM or kubelet.

CDI: a DataVolume is imported for real. For an `http` source the simulator GETs the URL (a presigned MinIO
URL, say) and checks `checksum` (`sha256:`/`sha512:`) when given; for an `s3` source it reads the Secret
named by `secretRef` (accessKeyId / secretKey) and downloads the object. The bytes land in a file that
stands for the PVC (`<volumes>/<namespace>/<name>.img`). Phases: ImportScheduled → ImportInProgress (with
progress) → Succeeded, or Failed with a reason and message.

KubeVirt: a VirtualMachine that should run (runStrategy Always/RerunOnFailure/Once, or `running: true`)
waits for its DataVolumes (Provisioning), gets a VirtualMachineInstance it controls, and moves Starting →
Running with `ready` and an interface IP on the VMI; Halted removes the VMI (Stopping → Stopped). A VMI
that asks for more than the simulated node has stays Scheduling, and the VM says ErrorUnschedulable.

Like KubeVirt's and CDI's controllers, it works from informer-style caches: one watch per kind keeps an
in-memory copy of every DataVolume, VirtualMachine and VirtualMachineInstance, and its own status writes
update that copy at once. A pass over the caches costs the API server nothing.

    python -m tests.cloud.sim [--delay SECONDS]      # uses $KUBECONFIG
"""

from __future__ import annotations

import argparse
import base64
import datetime as dt
import hashlib
import logging
import os
import re
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path
from typing import Any

from kubernetes import client, config, watch
from kubernetes.client.exceptions import ApiException

log = logging.getLogger("sim")
KV = ("kubevirt.io", "v1")
CDI = ("cdi.kubevirt.io", "v1beta1")
NODE = {"name": "sim-node-0", "cpu": 64, "memory": 256 * 1024**3}
RUNNING_STRATEGIES = {"Always", "RerunOnFailure", "Once"}
_UNITS = {"": 1, "k": 1000, "M": 1000**2, "G": 1000**3, "T": 1000**4,
          "Ki": 1024, "Mi": 1024**2, "Gi": 1024**3, "Ti": 1024**4}


def now() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def quantity(value: Any) -> float:
    m = re.fullmatch(r"([0-9.]+)(m|[kMGT]i?|)", str(value))
    if not m:
        return 0.0
    num, unit = float(m.group(1)), m.group(2)
    return num / 1000 if unit == "m" else num * _UNITS[unit]


def condition(type_: str, status: bool, reason: str = "", message: str = "") -> dict[str, str]:
    return {"type": type_, "status": "True" if status else "False", "reason": reason, "message": message,
            "lastTransitionTime": now(), "lastProbeTime": now()}


class ImportFailed(Exception):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class Simulator:
    def __init__(self, delay: float, volumes: Path) -> None:
        self.delay = delay
        self.volumes = volumes
        self.api = client.CustomObjectsApi()
        self.core = client.CoreV1Api()
        self.importing: set[str] = set()
        self.last_step: dict[str, float] = {}
        self.lock = threading.Lock()
        self.caches: dict[str, dict[tuple[str, str], dict[str, Any]]] = {
            "datavolumes": {}, "virtualmachines": {}, "virtualmachineinstances": {}}
        self.synced = {plural: threading.Event() for plural in self.caches}

    # ----- informers -----
    def informer(self, gv: tuple[str, str], plural: str) -> None:
        """List once, then watch from that resourceVersion; list again when the watch expires (410)."""
        cache = self.caches[plural]
        while True:
            try:
                listed = self.api.list_cluster_custom_object(*gv, plural)
                with self.lock:
                    cache.clear()
                    for obj in listed["items"]:
                        cache[self._key(obj)] = obj
                self.synced[plural].set()
                rv = listed["metadata"]["resourceVersion"]
                for event in watch.Watch().stream(self.api.list_cluster_custom_object, *gv, plural,
                                                  resource_version=rv, timeout_seconds=300):
                    obj = event["object"]
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
        return (obj["metadata"]["namespace"], obj["metadata"]["name"])

    def cached(self, plural: str) -> list[dict[str, Any]]:
        with self.lock:
            return list(self.caches[plural].values())

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

    def remember(self, plural: str, obj: dict[str, Any]) -> None:
        """Put what the server answered into the cache, unless the watch already brought something newer."""
        def rv(o: dict[str, Any] | None) -> int:
            return int((o or {}).get("metadata", {}).get("resourceVersion") or 0)
        with self.lock:
            cache = self.caches[plural]
            if rv(obj) > rv(cache.get(self._key(obj))):
                cache[self._key(obj)] = obj

    def due(self, key: str) -> bool:
        """True at most once per `delay` for `key`: each call that returns True is one step of progress."""
        t = time.monotonic()
        if t - self.last_step.get(key, 0.0) >= self.delay:
            self.last_step[key] = t
            return True
        return False

    # ----- CDI -----
    def reconcile_datavolumes(self) -> None:
        for dv in self.cached("datavolumes"):
            uid = dv["metadata"]["uid"]
            phase = dv.get("status", {}).get("phase", "")
            if phase in ("Succeeded", "Failed") or dv["metadata"].get("deletionTimestamp"):
                continue
            with self.lock:
                if uid in self.importing:
                    continue
                self.importing.add(uid)
            threading.Thread(target=self.import_dv, args=(dv,), daemon=True).start()

    def import_dv(self, dv: dict[str, Any]) -> None:
        md = dv["metadata"]
        try:
            self.patch_status(CDI, "datavolumes", dv, {
                "phase": "ImportScheduled", "progress": "N/A", "claimName": md["name"],
                "conditions": [condition("Bound", True, "Bound"), condition("Ready", False, "ImportScheduled"),
                               condition("Running", False, "Pending")]})
            time.sleep(self.delay)
            target = self.volumes / md["namespace"] / f"{md['name']}.img"
            target.parent.mkdir(parents=True, exist_ok=True)
            size = self.download(dv, target)
            self.patch_status(CDI, "datavolumes", dv, {
                "phase": "Succeeded", "progress": "100.0%",
                "conditions": [condition("Bound", True, "Bound"), condition("Ready", True, "Completed"),
                               condition("Running", False, "Completed", f"Import Complete; {size} bytes")]})
            log.info("datavolume %s/%s imported %d bytes", md["namespace"], md["name"], size)
        except ImportFailed as e:
            log.info("datavolume %s/%s failed: %s: %s", md["namespace"], md["name"], e.reason, e)
            self.patch_status(CDI, "datavolumes", dv, {
                "phase": "Failed", "progress": "N/A",
                "conditions": [condition("Bound", True, "Bound"), condition("Ready", False, e.reason, str(e)),
                               condition("Running", False, e.reason, str(e))]})
        except Exception:
            log.exception("datavolume %s/%s", md["namespace"], md["name"])
            with self.lock:
                self.importing.discard(md["uid"])  # try again on the next pass

    def download(self, dv: dict[str, Any], target: Path) -> int:
        source = dv["spec"].get("source", {})
        if "http" in source:
            return self.download_http(dv, source["http"], target)
        if "s3" in source:
            return self.download_s3(dv, source["s3"], target)
        raise ImportFailed("UnsupportedSource", f"the simulator imports http and s3 sources, not {list(source)}")

    def progress(self, dv: dict[str, Any], done: int, total: int | None) -> None:
        pct = f"{100.0 * done / total:.2f}%" if total else "N/A"
        self.patch_status(CDI, "datavolumes", dv, {"phase": "ImportInProgress", "progress": pct, "conditions": [
            condition("Bound", True, "Bound"), condition("Ready", False, "TransferRunning"),
            condition("Running", True, "Pod is running")]})

    def copy(self, dv: dict[str, Any], stream: Any, total: int | None, target: Path,
             digests: list[Any]) -> int:
        done, last = 0, 0.0
        with target.open("wb") as out:
            while chunk := stream.read(1 << 20):
                out.write(chunk)
                for d in digests:
                    d.update(chunk)
                done += len(chunk)
                if time.monotonic() - last > 0.5:
                    last = time.monotonic()
                    self.progress(dv, done, total)
        return done

    def download_http(self, dv: dict[str, Any], http: dict[str, Any], target: Path) -> int:
        url = http["url"]
        digests = []
        algo, expected = "", ""
        if http.get("checksum"):
            algo, _, expected = http["checksum"].partition(":")
            if algo not in ("sha256", "sha512") or not expected:
                raise ImportFailed("InvalidChecksum", f"checksum must be sha256:<hex> or sha512:<hex>, "
                                                      f"got {http['checksum']!r}")
            digests.append(hashlib.new(algo))
        self.progress(dv, 0, None)
        try:
            with urllib.request.urlopen(url, timeout=30) as resp:
                total = int(resp.headers["Content-Length"]) if resp.headers.get("Content-Length") else None
                size = self.copy(dv, resp, total, target, digests)
        except urllib.error.HTTPError as e:
            body = e.read()[:500].decode(errors="replace")
            reason = "Forbidden" if e.code == 403 else "NotFound" if e.code == 404 else "HTTPError"
            raise ImportFailed(reason, f"GET {urllib.parse.urlsplit(url).path}: HTTP {e.code}: {body}") from e
        except (urllib.error.URLError, OSError) as e:
            raise ImportFailed("TransferFailed", f"GET {url}: {e}") from e
        if digests and digests[0].hexdigest() != expected.lower():
            target.unlink(missing_ok=True)
            raise ImportFailed("ChecksumMismatch", f"{algo} of the downloaded data is "
                                                   f"{digests[0].hexdigest()}, expected {expected}")
        return size

    def download_s3(self, dv: dict[str, Any], s3: dict[str, Any], target: Path) -> int:
        from minio import Minio
        from minio.error import S3Error

        ns = dv["metadata"]["namespace"]
        try:
            secret = self.core.read_namespaced_secret(s3["secretRef"], ns)
        except ApiException as e:
            raise ImportFailed("SecretNotFound", f"secret {ns}/{s3.get('secretRef')}: {e.reason}") from e
        data = secret.data or {}
        try:
            access = base64.b64decode(data["accessKeyId"]).decode()
            secret_key = base64.b64decode(data["secretKey"]).decode()
        except KeyError as e:
            raise ImportFailed("InvalidSecret", f"secret {ns}/{s3['secretRef']} lacks {e}") from e
        url = urllib.parse.urlsplit(s3["url"])
        bucket, _, key = url.path.lstrip("/").partition("/")
        store = Minio(url.netloc, access_key=access, secret_key=secret_key, secure=url.scheme == "https")
        self.progress(dv, 0, None)
        try:
            resp = store.get_object(bucket, key)
        except S3Error as e:
            reason = {"NoSuchKey": "NotFound", "NoSuchBucket": "NotFound"}.get(e.code, "Forbidden")
            raise ImportFailed(reason, f"s3 {bucket}/{key}: {e.code}: {e.message}") from e
        try:
            total = int(resp.headers.get("Content-Length") or 0) or None
            return self.copy(dv, resp, total, target, [])
        finally:
            resp.close()
            resp.release_conn()

    # ----- KubeVirt -----
    def reconcile_vms(self) -> None:
        vmis = {self._key(v): v for v in self.cached("virtualmachineinstances")}
        dvs = {self._key(d): d for d in self.cached("datavolumes")}
        for vm in self.cached("virtualmachines"):
            if vm["metadata"].get("deletionTimestamp"):
                continue
            key = (vm["metadata"]["namespace"], vm["metadata"]["name"])
            try:
                self.reconcile_vm(vm, vmis.get(key), dvs)
            except ApiException as e:
                if e.status not in (404, 409):
                    raise

    def reconcile_vm(self, vm: dict[str, Any], vmi: dict[str, Any] | None,
                     dvs: dict[tuple[str, str], dict[str, Any]]) -> None:
        ns, name = vm["metadata"]["namespace"], vm["metadata"]["name"]
        spec = vm["spec"]
        strategy = spec.get("runStrategy") or ("Always" if spec.get("running") else "Halted")
        status = vm.get("status", {})
        if strategy not in RUNNING_STRATEGIES:
            if vmi is not None:
                if vmi["metadata"].get("deletionTimestamp") is None:
                    self.api.delete_namespaced_custom_object(*KV, ns, "virtualmachineinstances", name)
                self.set_vm(vm, "Stopping", ready=False, created=True)
            elif status.get("printableStatus") != "Stopped":
                self.set_vm(vm, "Stopped", ready=False, created=False)
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
            self.set_vm(vm, "Starting", ready=False, created=True)
            return
        phase = vmi.get("status", {}).get("phase", "Pending")
        if phase == "Running":
            self.set_vm(vm, "Running", ready=True, created=True)
            return
        if not self.due(f"vmi/{ns}/{name}"):
            return
        if phase == "Pending":
            if not self.fits(vmi):
                self.patch_status(KV, "virtualmachineinstances", vmi, {"phase": "Scheduling", "conditions": [
                    condition("PodScheduled", False, "Unschedulable",
                              f"0/1 nodes are available: 1 Insufficient memory or cpu on {NODE['name']}.")]})
                self.set_vm(vm, "ErrorUnschedulable", ready=False, created=True,
                            message="0/1 nodes are available: insufficient memory or cpu")
                return
            self.patch_status(KV, "virtualmachineinstances", vmi, {"phase": "Scheduled", "nodeName": NODE["name"]})
            self.set_vm(vm, "Starting", ready=False, created=True)
        elif phase == "Scheduled":
            ip = f"10.244.0.{zlib.crc32(vmi['metadata']['uid'].encode()) % 250 + 2}"
            self.patch_status(KV, "virtualmachineinstances", vmi, {
                "phase": "Running", "nodeName": NODE["name"],
                "conditions": [condition("Ready", True), condition("LiveMigratable", True)],
                "interfaces": [{"name": "default", "ipAddress": ip, "ipAddresses": [ip],
                                "mac": "52:54:00:" + ":".join(f"{b:02x}" for b in os.urandom(3)),
                                "infoSource": "domain, guest-agent", "interfaceName": "eth0"}]})

    def fits(self, vmi: dict[str, Any]) -> bool:
        domain = vmi["spec"]["domain"]
        requests = domain.get("resources", {}).get("requests", {})
        memory = quantity(requests.get("memory") or domain.get("memory", {}).get("guest", 0))
        cpu = domain.get("cpu", {})
        cores = cpu.get("cores", 1) * cpu.get("sockets", 1) * cpu.get("threads", 1)
        return memory <= NODE["memory"] and cores <= NODE["cpu"]

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

    def set_vm(self, vm: dict[str, Any], printable: str, *, ready: bool, created: bool, message: str = "") -> None:
        status = vm.get("status", {})
        if (status.get("printableStatus"), status.get("ready", False), status.get("created", False)) == (
                printable, ready, created):
            return
        reason = "" if ready else printable
        self.patch_status(KV, "virtualmachines", vm, {
            "printableStatus": printable, "ready": ready, "created": created,
            "conditions": [condition("Ready", ready, reason, message)]})
        log.info("vm %s/%s %s", vm["metadata"]["namespace"], vm["metadata"]["name"], printable)

    # ----- loop -----
    def run(self, interval: float) -> None:
        for gv, plural in ((CDI, "datavolumes"), (KV, "virtualmachines"), (KV, "virtualmachineinstances")):
            threading.Thread(target=self.informer, args=(gv, plural), daemon=True, name=plural).start()
        for synced in self.synced.values():
            synced.wait()
        log.info("simulator ready (delay %.2fs)", self.delay)
        while True:
            for step in (self.reconcile_datavolumes, self.reconcile_vms):
                try:
                    step()
                except Exception:
                    log.exception("%s", step.__name__)
            time.sleep(interval)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay", type=float, default=0.3, help="seconds between simulated phases")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between passes")
    parser.add_argument("--volumes", type=Path,
                        default=Path(os.environ.get("KUBECONFIG", ".")).parent / "volumes")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    config.load_kube_config()
    Simulator(args.delay, args.volumes).run(args.interval)


if __name__ == "__main__":
    main()
