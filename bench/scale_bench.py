"""`make bench-scale`: Kova as the API server's heaviest client, on the local cloud, figures from one run.

1. A burst of KOVA_SCALE_N Instances (default 500) of one tiny Image (simulator delay 0.05 s):
   - Instance ADDED → VirtualMachine ADDED, and VM ready → Instance ACTIVE, P50/P95/P99, from watches;
   - API writes per Instance by resource, subresource and verb, from kube-apiserver's
     apiserver_request_total (Kova's writes only: the simulator writes status subresources of
     DataVolumes, VMs and VMIs and creates VMIs, which are KubeVirt's and CDI's writes, listed apart);
   - the operator's RSS.
   Then 100 more at 10 per second: the reaction when the machine is not saturated.
2. The operator restarted with all of them present: the time until a new Instance gets its VM, and the
   writes made to the existing Instances and their children meanwhile.
3. Imports (skipped with KOVA_SCALE_IMPORTS=0): 40 Images applied together (peak RSS under
   KOVA_MAX_CONCURRENT_IMPORTS), then the Instance reaction latency while 10 imports run.
4. The golden-image cache (skipped with KOVA_SCALE_CACHE_N=0): KOVA_SCALE_CACHE_N servers (default 5) of a
   1 GiB image booted one after the other, with the cache off, then on with host-assisted clones (the default
   class sim-local), then on with CSI clones (sim-clone made the default): the first and the Nth boot's time
   to ACTIVE, and the object store's bytes read per boot (MinIO's audit log).

Phases 1-3 run with the image cache off: what they measure is Kova's own work per Instance.

Nothing is asserted; targets are printed beside the figures, and a miss says where the time or the
writes go.

    make bench-scale                        # 500 Instances
    KOVA_SCALE_N=5000 make bench-scale      # 5,000 (a 64 KiB image keeps the simulator's disks small)
"""

from __future__ import annotations

import json
import os
import shutil
import ssl
import sys
import tempfile
import threading
import time
import urllib.request
from collections import Counter, defaultdict
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import yaml
from tests.cloud.bench import LocalCloud, Proc
from tests.httpsource import Source
from tests.qcow2 import make_qcow2

NS = "scale"
# (resource, subresource) Kova writes; everything else written meanwhile is the simulator or the bench.
KOVA_WRITES = {("instances", "status"), ("instances", ""), ("virtualmachines", ""), ("datavolumes", "")}
# Kova's other writes a burst causes: the namespace's Quota (made once, its status at most every 10 s) and the
# ResourceQuota it keeps (kova.controllers.quota). Printed apart, per Instance.
QUOTA_WRITES = {("quotas", "status"), ("quotas", ""), ("resourcequotas", "")}
MiB = 1 << 20
CACHE_NS = "kova-image-cache"


# ---------------------------------------------------------------------------------------------- watching
class Watch:
    """Watches one resource over HTTPS and records when each object was first seen in a given state."""

    def __init__(self, cloud: LocalCloud, path: str, marks: dict[str, Any]) -> None:
        self.first: dict[str, dict[str, float]] = defaultdict(dict)
        self.marks = marks  # mark name → predicate(event type, object)
        pki = cloud.workdir / "pki"
        self.ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        self.ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        self.url = f"{cloud.api_url}{path}?watch=1&timeoutSeconds=3600"
        self.ready = threading.Event()
        self.drops = 0
        self.last_error = ""
        threading.Thread(target=self._run, daemon=True).start()
        self.ready.wait(10)

    def _run(self) -> None:
        """Follow the watch; when the server ends it (timeout, load), resume from the last resourceVersion."""
        rv = ""
        while True:
            try:
                with urllib.request.urlopen(self.url + (f"&resourceVersion={rv}" if rv else ""), context=self.ctx,
                                            timeout=3600) as resp:
                    self.ready.set()
                    for line in resp:
                        now = time.monotonic()
                        event = json.loads(line)
                        obj = event["object"]
                        if event["type"] == "ERROR":
                            rv = ""  # expired: start again from now
                            break
                        rv = obj["metadata"].get("resourceVersion", rv)
                        name = obj["metadata"]["name"]
                        for mark, test in self.marks.items():
                            if mark not in self.first[name] and test(event["type"], obj):
                                self.first[name][mark] = now
            except Exception as e:  # a dropped stream: note it and resume
                self.drops += 1
                self.last_error = repr(e)
                time.sleep(0.2)

    def count(self, mark: str, names: list[str]) -> int:
        return sum(1 for n in names if mark in self.first.get(n, {}))


def percentiles(values: list[float]) -> str:
    if not values:
        return "no samples"
    s = sorted(values)

    def p(q: float) -> float:
        return s[min(len(s) - 1, int(q * len(s)))]
    return f"P50 {p(0.50):.3f}s  P95 {p(0.95):.3f}s  P99 {p(0.99):.3f}s  max {s[-1]:.3f}s  (n={len(s)})"


def rss_mib(proc: Proc) -> tuple[float, float]:
    fields = dict(line.split(":", 1) for line in Path(f"/proc/{proc.popen.pid}/status").read_text().splitlines())
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


# Who wrote, by the product of its user agent: the real controllers, the simulated node side, Kova (the python
# client's default), the bench's own POSTs (urllib) and kubectl.
AGENTS = {"virt-controller": "virt-controller (KubeVirt)", "cdi-controller": "cdi-controller (CDI)",
          "kube-scheduler": "kube-scheduler", "kube-controller-manager": "kube-controller-manager",
          "kova-simulated-nodes": "simulated node side", "OpenAPI-Generator": "Kova",
          "Python-urllib": "the bench", "kubectl": "the bench", "kube-apiserver": "kube-apiserver"}


def cpu_by_process(cloud: LocalCloud, op: Proc) -> dict[str, float]:
    procs = {p.name: p.popen.pid for p in cloud.procs if p.popen.poll() is None}
    procs["operator"] = op.popen.pid
    return {name: cpu_seconds(pid) for name, pid in procs.items()}


def instance(name: str, image: str = "tiny") -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name, "namespace": NS},
            "spec": {"flavorRef": "scale.tiny", "imageRef": image}}


def create(cloud: LocalCloud, names: list[str], clients: int = 8, namespace: str = NS,
           body: Any = None) -> float:
    """POST the Instances (`body(name)`, this bench's by default) into `namespace` from `clients` connections at
    once, as a burst of users or a GitOps sync would; returns the seconds it took."""
    pki = cloud.workdir / "pki"
    ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
    ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
    url = f"{cloud.api_url}/apis/compute.kova.dev/v1alpha1/namespaces/{namespace}/instances"
    make = body or instance

    def post(name: str) -> None:
        request = urllib.request.Request(url, data=json.dumps(make(name)).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        with urllib.request.urlopen(request, context=ctx, timeout=120) as resp:
            resp.read()
    started = time.monotonic()
    with ThreadPoolExecutor(clients) as pool:
        list(pool.map(post, names))
    return time.monotonic() - started


def wait(what: str, check: Any, timeout: float) -> float:
    start = time.monotonic()
    while not check():
        if time.monotonic() - start > timeout:
            raise SystemExit(f"timed out after {timeout:.0f}s waiting for {what}")
        time.sleep(0.2)
    return time.monotonic() - start


# ---------------------------------------------------------------------------------------------- phases
def burst(cloud: LocalCloud, op: Proc, inst: Watch, vms: Watch, n: int) -> None:
    names = [f"vm-{i:05d}" for i in range(n)]
    before = cloud.write_requests(kova_only=True)
    audited = len(cloud.audit())
    cpu_before = cpu_by_process(cloud, op)
    started = time.monotonic()
    created = create(cloud, names)
    seconds = wait(f"{n} Instances to be ACTIVE", lambda: inst.count("active", names) == n, 300 + n * 1.0)
    wall = time.monotonic() - started
    cpu = {k: v - cpu_before.get(k, 0.0) for k, v in cpu_by_process(cloud, op).items()}
    time.sleep(2)  # writes that trail the last ACTIVE (none are expected) are counted too
    delta = cloud.write_requests(kova_only=True) - before
    reaction = [vms.first[x]["added"] - inst.first[x]["added"] for x in names if "added" in vms.first.get(x, {})]
    overhead = [inst.first[x]["active"] - vms.first[x]["ready"] for x in names
                if "ready" in vms.first.get(x, {}) and "active" in inst.first.get(x, {})]
    rss, hwm = rss_mib(op)
    print(f"\n== burst: {n} Instances of one Image (POSTed by 8 clients in {created:.1f}s; all ACTIVE "
          f"{seconds:.1f}s after the first)")
    print(f"Instance ADDED -> VM ADDED      {percentiles(reaction)}   target P50 <= 0.3s, P99 <= 2s")
    print(f"VM ready -> Instance ACTIVE    {percentiles(overhead)}   target P95 <= 0.5s")
    kova = {k: v for k, v in delta.items() if (k[0], k[1]) in KOVA_WRITES and k != ("instances", "", "POST")}
    print("Kova's API writes per Instance (Events apart):")
    for (res, sub, verb), count in sorted(kova.items()):
        print(f"  {verb:6} {res + ('/' + sub if sub else ''):22} {count / n:6.2f}")
    total = sum(kova.values()) / n
    events = delta.get(("events", "", "POST"), 0) / n + delta.get(("events", "", "PATCH"), 0) / n
    print(f"  total {total:.2f} per Instance (target <= 4); Events {events:.2f} per Instance (target <= 3)")
    quota = {k: v for k, v in delta.items() if (k[0], k[1]) in QUOTA_WRITES}
    print(f"  and the namespace's quota bookkeeping: {sum(quota.values()) / n:.3f} per Instance ("
          + (", ".join(f"{v} {verb} {r}{'/' + s if s else ''}" for (r, s, verb), v in sorted(quota.items()))
             or "none") + ")")
    others = {k: v for k, v in delta.items() if k not in kova and k not in quota and k != ("instances", "", "POST")
              and k[0] != "events"}
    print("Other writes that are not the components' (Kova's Lease and NetworkPolicies; a component's write the "
          "audit log had not flushed yet shows here too):")
    for (res, sub, verb), count in sorted(others.items()):
        print(f"  {verb:6} {res + ('/' + sub if sub else ''):22} {count / n:6.2f}")
    by_agent = Counter(AGENTS.get(e.get("userAgent", "").split("/")[0], "others")
                       for e in cloud.audit()[audited:] if e.get("objectRef", {}).get("resource") != "events")
    by_agent.pop("the bench", None)
    print("Writes per Instance by who made them (kube-apiserver's audit log, by user agent; Events apart):")
    for who, count in sorted(by_agent.items(), key=lambda kv: -kv[1]):
        print(f"  {who:28} {count / n:6.2f}")
    print(f"operator RSS {rss:.0f} MiB (peak {hwm:.0f} MiB)")
    if inst.drops or vms.drops:
        print(f"(the bench's watches were resumed {inst.drops + vms.drops} times: {vms.last_error or inst.last_error})")
    print(f"where the time goes: CPU seconds in the {wall:.1f}s from the first create to the last ACTIVE "
          f"({os.cpu_count()} cores = {wall * (os.cpu_count() or 1):.0f} CPU-s; the bench's own clients apart):")
    for name, seconds_used in sorted(cpu.items(), key=lambda kv: -kv[1]):
        print(f"  {name:24} {seconds_used:6.1f}s  ({1000 * seconds_used / n:.1f} ms per Instance)")


def paced(cloud: LocalCloud, inst: Watch, vms: Watch, rate: float = 10.0, count: int = 100) -> None:
    """The same boots arriving at `rate` per second: the reaction when the machine is not saturated."""
    names = [f"paced-{i:03d}" for i in range(count)]
    for name in names:
        create(cloud, [name], clients=1)
        time.sleep(max(0.0, 1 / rate - 0.01))
    wait(f"{count} paced Instances to be ACTIVE", lambda: inst.count("active", names) == count, 300)
    reaction = [vms.first[x]["added"] - inst.first[x]["added"] for x in names if "added" in vms.first.get(x, {})]
    overhead = [inst.first[x]["active"] - vms.first[x]["ready"] for x in names
                if "ready" in vms.first.get(x, {}) and "active" in inst.first.get(x, {})]
    print(f"\n== {count} Instances at {rate:.0f} per second")
    print(f"Instance ADDED -> VM ADDED      {percentiles(reaction)}")
    print(f"VM ready -> Instance ACTIVE    {percentiles(overhead)}")


def restart(cloud: LocalCloud, op: Proc, inst: Watch, vms: Watch, n: int, env: dict[str, str]) -> Proc:
    op.popen.kill()
    op.popen.wait()
    before = cloud.write_requests(kova_only=True)
    started = time.monotonic()
    fresh = cloud.start_operator(extra_env=env)
    up = time.monotonic() - started
    create(cloud, ["after-restart"])
    # Generous limits: a miss is measured and printed, not cut short.
    seconds = wait("the new Instance's VM", lambda: "added" in vms.first.get("after-restart", {}), max(120, n / 5))
    wait("the new Instance to be ACTIVE", lambda: "active" in inst.first.get("after-restart", {}), 120)
    time.sleep(max(5.0, n / 200))  # let the resumed handlers of every existing Instance run
    delta = cloud.write_requests(kova_only=True) - before
    kova = {k: v for k, v in delta.items() if (k[0], k[1]) in KOVA_WRITES and k != ("instances", "", "POST")}
    rss, hwm = rss_mib(fresh)
    print(f"\n== restart with {n} Instances present (operator live in {up:.1f}s)")
    print(f"a new Instance got its VM {seconds:.2f}s after it was created, {up + seconds:.1f}s after the restart "
          "(target <= 10s)")
    existing = sum(kova.values()) - 4  # the new Instance's own boot: DV, VM, two status writes
    print(f"writes to existing Instances and their children: {existing} (target 0); all writes: "
          + (", ".join(f"{v} {verb} {r}{'/' + s if s else ''}" for (r, s, verb), v in sorted(kova.items()))
             or "none"))
    print(f"operator RSS after the restart {rss:.0f} MiB (peak {hwm:.0f} MiB; target <= 400 MiB at 5,000)")
    return fresh


def imports(cloud: LocalCloud, op: Proc, src: Source, inst: Watch, vms: Watch) -> None:
    block = os.urandom(MiB)
    images = []
    for i in range(40):
        url = src.add(f"/import-{i}.raw", block * 64)
        images.append({"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image",
                       "metadata": {"name": f"import-{i}", "namespace": NS},
                       "spec": {"diskFormat": "raw", "source": {"url": url}}})
    _, hwm_before = rss_mib(op)
    started = time.monotonic()
    cloud.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(images))

    def active() -> int:
        out = cloud.kubectl("get", "images", "-n", NS, "-o", "jsonpath={.items[*].status.status}")
        return out.split().count("active") - 1  # the tiny image

    wait("40 Images to be active", lambda: active() >= 40, 600)
    _, hwm = rss_mib(op)
    print(f"\n== 40 Images of 64 MiB applied together: all active in {time.monotonic() - started:.1f}s; "
          f"operator peak RSS {hwm:.0f} MiB (before: {hwm_before:.0f} MiB; the chart's limit is 512 MiB)")
    slow = [src.add(f"/slow-{i}.raw", block * 64, seconds_per_mib=0.3) for i in range(10)]
    cloud.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": f"slow-{i}", "namespace": NS},
         "spec": {"diskFormat": "raw", "source": {"url": url}}} for i, url in enumerate(slow)]))
    time.sleep(3)
    names = [f"busy-{i:03d}" for i in range(100)]
    create(cloud, names)
    wait("100 Instances to be ACTIVE", lambda: inst.count("active", names) == 100, 300)
    reaction = [vms.first[x]["added"] - inst.first[x]["added"] for x in names if "added" in vms.first.get(x, {})]
    print(f"Instance ADDED -> VM ADDED while 10 imports run: {percentiles(reaction)}   target P99 <= 2s")


def image_cache(cloud: LocalCloud, op: Proc, src: Source, env: dict[str, str], n: int) -> Proc:
    from kova.adapters.store import blob_key

    ns, gib = "cache-bench", 1 << 30
    cloud.kubectl("create", "namespace", ns)
    cloud.kubectl("create", "namespace", CACHE_NS, check=False)
    url = src.add("/big.raw", os.urandom(MiB) * (gib // MiB))
    cloud.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": "scale.big"},
         "spec": {"vcpus": 1, "ram": 64, "disk": 2}},
        {"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": "big", "namespace": ns},
         "spec": {"diskFormat": "raw", "source": {"url": url}}}]))
    cloud.kubectl("wait", "-n", ns, "--for=condition=Ready", "--timeout=300s", "image/big")
    uid = json.loads(cloud.kubectl("get", "image", "big", "-n", ns, "-o", "json"))["metadata"]["uid"]
    print(f"\n== {n} servers of a 1 GiB image, one after the other (time to ACTIVE; store bytes read per boot)")
    # Root disks are on the default class: sim-local (host-assisted clones), then sim-clone (CSI clones).
    runs = (("off", "sim-local", "direct", "cache off, direct import"),
            (CACHE_NS, "sim-local", "cached", "cache on, host-assisted clone"),
            (CACHE_NS, "sim-clone", "csi", "cache on, CSI clone (sim-clone)"))
    for mode, default, prefix, label in runs:
        for sc in ("sim-local", "sim-clone"):
            cloud.kubectl("annotate", "--overwrite", "storageclass", sc,
                          f"storageclass.kubernetes.io/is-default-class={'true' if sc == default else 'false'}")
        op.popen.terminate()
        op.popen.wait()
        op = cloud.start_operator(extra_env={**env, "KOVA_IMAGE_CACHE_NAMESPACE": mode})
        read_before, seconds = cloud.s3_audit.bytes_read(blob_key(uid)) if cloud.s3_audit else 0, []
        names = [f"{prefix}-{i}" for i in range(n)]
        for name in names:
            started = time.monotonic()
            create(cloud, [name], clients=1, namespace=ns, body=lambda x: {
                "apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance",
                "metadata": {"name": x, "namespace": ns}, "spec": {"flavorRef": "scale.big", "imageRef": "big"}})
            wait(f"{name} to be ACTIVE", lambda x=name: cloud.kubectl(  # type: ignore[misc]
                "get", "instance", x, "-n", ns, "-o", "jsonpath={.status.status}") == "ACTIVE", 600)
            seconds.append(time.monotonic() - started)
        time.sleep(2)  # MinIO posts its audit of a call once it is answered
        read = (cloud.s3_audit.bytes_read(blob_key(uid)) if cloud.s3_audit else 0) - read_before
        print(f"{label + ':':<33} first boot {seconds[0]:.1f}s, boot {n} {seconds[-1]:.1f}s (mean of 2..{n}: "
              f"{sum(seconds[1:]) / max(1, n - 1):.1f}s); store read {read / n / MiB:.0f} MiB per boot "
              f"({read / MiB:.0f} MiB in all)")
        cloud.kubectl("delete", "instance", "-n", ns, "--wait=true", *names)
    for sc in ("sim-local", "sim-clone"):  # the local cloud's default again
        cloud.kubectl("annotate", "--overwrite", "storageclass", sc,
                      f"storageclass.kubernetes.io/is-default-class={'true' if sc == 'sim-local' else 'false'}")
    return op


def main() -> int:
    n = int(os.environ.get("KOVA_SCALE_N", "500"))
    workdir = Path(tempfile.mkdtemp(prefix="kova-scale-"))
    src = Source()
    url = src.add("/tiny.qcow2", make_qcow2(64 * MiB, b"kova scale " * 100))
    cloud = LocalCloud(workdir, sim_delay=0.05)
    try:
        cloud.start()
        cloud.install_kova_crds()
        # Hundreds of Instances in one namespace: far over Nova's default quotas, which are not what is measured.
        env = {"KOVA_IMPORT_ALLOWED_HOSTS": src.netloc, "KOVA_QUOTA_INSTANCES": "-1", "KOVA_QUOTA_CORES": "-1",
               "KOVA_QUOTA_RAM": "-1", "KOVA_IMAGE_CACHE_NAMESPACE": "off"}
        op = cloud.start_operator(extra_env=env)
        cloud.kubectl("create", "namespace", NS)
        cloud.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": "scale.tiny"},
             "spec": {"vcpus": 1, "ram": 64, "disk": 1}},
            {"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": "tiny", "namespace": NS},
             "spec": {"diskFormat": "qcow2", "source": {"url": url}}}]))
        cloud.kubectl("wait", "-n", NS, "--for=condition=Ready", "--timeout=60s", "image/tiny")
        inst = Watch(cloud, f"/apis/compute.kova.dev/v1alpha1/namespaces/{NS}/instances", {
            "added": lambda t, o: t == "ADDED",
            "active": lambda t, o: (o.get("status") or {}).get("status") == "ACTIVE"})
        vms = Watch(cloud, f"/apis/kubevirt.io/v1/namespaces/{NS}/virtualmachines", {
            "added": lambda t, o: t == "ADDED",
            "ready": lambda t, o: bool((o.get("status") or {}).get("ready"))})
        print(f"machine: {os.cpu_count()} CPUs shared by etcd, kube-apiserver, the simulator and the operator")
        burst(cloud, op, inst, vms, n)
        paced(cloud, inst, vms)
        op = restart(cloud, op, inst, vms, n, env)
        if os.environ.get("KOVA_SCALE_IMPORTS", "1") != "0":
            imports(cloud, op, src, inst, vms)
        cache_n = int(os.environ.get("KOVA_SCALE_CACHE_N", "5"))
        if cache_n:
            op = image_cache(cloud, op, src, env, cache_n)
    finally:
        cloud.stop()
        src.close()
        shutil.rmtree(workdir, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
