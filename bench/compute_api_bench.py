"""`make bench`, fourth part: Nova's compute API of `kova api` against kubectl, on the local cloud, in one run.

The local cloud, the operator (with the chart's RBAC) and `kova api` are started as the tests' fixtures do; a
namespace gets a tenant ServiceAccount token (bound to `edit`), a Flavor and an active Image. Then:

1. Boot to ACTIVE, one server at a time, KOVA_API_BENCH_N (default 5) each way, interleaved:
   - `openstack server create --wait` (the real CLI, through clouds.yaml with the tenant token), the whole
     command timed as a process;
   - `kubectl apply` of the same Instance and `kubectl wait --for=jsonpath={.status.status}=ACTIVE`, the two
     commands timed as processes, with the same token.
   A watch on the namespace's Instances says when each was created and when ACTIVE was stored, so the
   time of each command splits into the client before the create, the boot itself, and the client after.
2. KOVA_API_BENCH_LIST_N (default 500) servers in the namespace (the booted ones and, to make up the number,
   Instances of a Flavor that does not exist: the operator keeps them in BUILD, waiting for it), then
   KOVA_API_BENCH_REQUESTS (default 20) rounds of `GET /servers/detail` and `GET /servers` (plain HTTP, the
   tenant token, `OpenStack-API-Version: compute 2.100`, one kept-alive connection), `kubectl get instances
   -o json` (a process), and the list `kova api` itself makes of kube-apiserver (plain HTTPS, same token):
   P50/P95 side by side.

Nothing is asserted; figures and ratios are printed. KOVA_API_BENCH_JSON=path also writes them there.

    make bench                                       # all four parts
    KOVA_API_BENCH_N=3 KOVA_API_BENCH_LIST_N=1000 python -m bench.compute_api_bench
"""

from __future__ import annotations

import http.client
import json
import math
import os
import shutil
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from tests.cloud.bench import LocalCloud, binary, kubeconfig_dict
from tests.conftest import chart_rbac_kubeconfig, import_env, wait_settled
from tests.httpsource import Source
from tests.qcow2 import make_qcow2

from bench.scale_bench import Watch, create

NS = "bench"
FLAVOR = "bench.small"
ABSENT_FLAVOR = "bench.absent"  # no such Flavor: its Instances wait in BUILD
IMAGE = "os"
MICROVERSION = "compute 2.100"
OPENSTACK = str(Path(sys.executable).parent / "openstack")
GROUP = "/apis/compute.kova.dev/v1alpha1"
UNLIMITED = {"KOVA_QUOTA_INSTANCES": "-1", "KOVA_QUOTA_CORES": "-1", "KOVA_QUOTA_RAM": "-1"}


def run(args: list[str], env: dict[str, str] | None = None, input: str | None = None) -> tuple[float, str]:
    """(wall seconds, stdout) of a command run to its end; its failure stops the bench with its stderr."""
    started = time.monotonic()
    res = subprocess.run(args, input=input, capture_output=True, text=True, timeout=300,
                         env={**os.environ, **(env or {})}, stdin=None if input is not None else subprocess.DEVNULL)
    seconds = time.monotonic() - started
    if res.returncode != 0:
        raise SystemExit(f"{' '.join(args[:4])}... failed ({res.returncode}):\n{res.stdout[-2000:]}\n"
                         f"{res.stderr[-3000:]}")
    return seconds, res.stdout


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile: of 20 samples, P95 is the 19th smallest."""
    s = sorted(values)
    return s[max(0, math.ceil(q * len(s)) - 1)]


def instance(name: str, flavor: str) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name, "namespace": NS},
            "spec": {"flavorRef": flavor, "imageRef": IMAGE}}


class Tenant:
    """The project's user: the `openstack` CLI through clouds.yaml, kubectl through a kubeconfig, and plain HTTP
    clients of `kova api` and kube-apiserver, all with one ServiceAccount token."""

    def __init__(self, cloud: LocalCloud, api_port: int, token: str, workdir: Path) -> None:
        self.cloud, self.api_port, self.token = cloud, api_port, token
        clouds = workdir / "clouds.yaml"
        clouds.write_text(yaml.safe_dump({"clouds": {"kova": {
            "auth_type": "v3token", "region_name": "RegionOne", "identity_api_version": 3,
            "auth": {"auth_url": f"http://127.0.0.1:{api_port}/identity/v3", "token": token, "project_name": NS,
                     "project_domain_name": "Default"}}}}))
        # HOME apart: no user's own clouds.yaml or kubectl cache is read, and the CLI's caches stay in the bench.
        self.os_env = {"OS_CLIENT_CONFIG_FILE": str(clouds), "HOME": str(workdir)}
        self.kubeconfig = workdir / "tenant.kubeconfig"
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(
            cloud.api_url, (cloud.workdir / "pki" / "ca.crt").read_text(), token=token, user=f"{NS}-tenant")))
        self.kube_env = {"HOME": str(workdir)}
        self.tls = ssl.create_default_context(cafile=str(cloud.workdir / "pki" / "ca.crt"))
        self.conn = http.client.HTTPConnection("127.0.0.1", api_port, timeout=120)

    def openstack(self, *args: str) -> tuple[float, str]:
        return run([OPENSTACK, "--os-cloud", "kova", *args], env=self.os_env)

    def kubectl(self, *args: str, input: str | None = None) -> tuple[float, str]:
        return run([binary("kubectl"), f"--kubeconfig={self.kubeconfig}", "-n", NS, *args], env=self.kube_env,
                   input=input)

    def nova(self, path: str) -> tuple[float, dict[str, Any]]:
        """(seconds, body) of a GET of the compute API, on the kept-alive connection."""
        started = time.monotonic()
        self.conn.request("GET", f"/projects/{NS}/compute/v2.1{path}", headers={
            "X-Auth-Token": self.token, "OpenStack-API-Version": MICROVERSION, "Accept": "application/json"})
        resp = self.conn.getresponse()
        body = resp.read()
        seconds = time.monotonic() - started
        if resp.status != 200:
            raise SystemExit(f"GET {path}: {resp.status} {body[:2000]!r}")
        return seconds, dict(json.loads(body))

    def kube_list(self) -> tuple[float, int]:
        """(seconds, items) of the list `kova api` makes for the caller: Instances in pages of 500, same token."""
        started, items, cont = time.monotonic(), 0, ""
        while True:
            url = f"{self.cloud.api_url}{GROUP}/namespaces/{NS}/instances?limit=500" + (f"&continue={cont}" if cont
                                                                                       else "")
            request = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}"})
            with urllib.request.urlopen(request, context=self.tls, timeout=120) as resp:
                page = json.loads(resp.read())
            items += len(page["items"])
            cont = page["metadata"].get("continue") or ""
            if not cont:
                return time.monotonic() - started, items


# ---------------------------------------------------------------------------------------------- 1. boots
def boots(cloud: LocalCloud, tenant: Tenant, watch: Watch, n: int) -> dict[str, Any]:
    """n boots each way, interleaved (so a drift of the machine weighs on both alike); per boot, from the
    command's start: the Instance created, ACTIVE stored, the command(s) returned."""
    rows: dict[str, list[dict[str, float]]] = {"openstack": [], "kubectl": []}
    for i in range(n):
        started = time.monotonic()
        _, out = tenant.openstack("server", "create", "--flavor", FLAVOR, "--image", IMAGE, "--wait", "-f", "json",
                                  f"api-{i}")
        total = time.monotonic() - started
        server = json.loads(out)
        if server["status"] != "ACTIVE":
            raise SystemExit(f"openstack server create --wait returned {server['status']}")
        rows["openstack"].append({"total": total, **marks(cloud, watch, started, uid=server["id"])})

        name = f"kube-{i}"
        started = time.monotonic()
        apply_s, _ = tenant.kubectl("apply", "-f", "-", input=yaml.safe_dump(instance(name, FLAVOR)))
        tenant.kubectl("wait", "--for=jsonpath={.status.status}=ACTIVE", "--timeout=120s", f"instance/{name}")
        total = time.monotonic() - started
        rows["kubectl"].append({"total": total, "apply": apply_s, **marks(cloud, watch, started, name=name)})
    return rows


def marks(cloud: LocalCloud, watch: Watch, started: float, uid: str = "", name: str = "") -> dict[str, float]:
    """When the watch saw the Instance created and ACTIVE, in seconds from `started`."""
    if not name:
        items = json.loads(cloud.kubectl("-n", NS, "get", "instances", "-o", "json"))["items"]
        name = next(o["metadata"]["name"] for o in items if o["metadata"]["uid"] == uid)
    deadline = time.monotonic() + 10  # the watch may trail the command by a moment
    while "active" not in watch.first.get(name, {}) and time.monotonic() < deadline:
        time.sleep(0.05)
    seen = watch.first.get(name, {})
    if "added" not in seen or "active" not in seen:
        raise SystemExit(f"the watch did not see {name} created and ACTIVE: {seen}")
    return {"created": seen["added"] - started, "active": seen["active"] - started}


# ---------------------------------------------------------------------------------------------- 2. lists
def fill(cloud: LocalCloud, names: list[str], clients: int = 8) -> float:
    """POST the Instances (of the absent Flavor) from `clients` connections; the seconds it took."""
    return create(cloud, names, clients, NS, lambda name: instance(name, ABSENT_FLAVOR))


def statuses(cloud: LocalCloud) -> dict[str, int]:
    out = cloud.kubectl("-n", NS, "get", "instances", "-o", "jsonpath={range .items[*]}{.status.status}{'\\n'}{end}")
    counts: dict[str, int] = {}
    for word in out.splitlines():
        counts[word or "(none)"] = counts.get(word or "(none)", 0) + 1
    return counts


def lists(cloud: LocalCloud, tenant: Tenant, total: int, booted: int, rounds: int) -> dict[str, Any]:
    names = [f"build-{i:05d}" for i in range(total - booted)]
    posted = fill(cloud, names)
    # Measured once the operator has written every status (BUILD, waiting for the Flavor)...
    started, deadline = time.monotonic(), time.monotonic() + 120 + total * 0.2
    while (counts := statuses(cloud)).get("BUILD", 0) < len(names):
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {len(names)} Instances in BUILD: {counts}")
        time.sleep(0.5)
    # ... and kube-apiserver takes no more writes (the operator's Events and quota bookkeeping done).
    # Leases apart: cdi-controller renews its leader Lease every 2 s, whatever else happens.
    wait_settled(lambda: sum(v for k, v in cloud.write_requests().items() if k[0] != "leases"), timeout=120,
                 quiet=2.0, what="writes to stop")
    settled = time.monotonic() - started
    samples: dict[str, list[float]] = {"detail": [], "brief": [], "kubectl": [], "kube_list": []}
    sizes: dict[str, int] = {}
    counted: dict[str, set[int]] = {k: set() for k in samples}
    tenant.nova("/servers/detail")  # the first request of a connection pays the token's access review
    for _ in range(rounds):
        seconds, body = tenant.nova("/servers/detail")
        samples["detail"].append(seconds)
        counted["detail"].add(len(body["servers"]))
        sizes["detail"] = len(json.dumps(body))
        seconds, body = tenant.nova("/servers")
        samples["brief"].append(seconds)
        counted["brief"].add(len(body["servers"]))
        sizes["brief"] = len(json.dumps(body))
        seconds, out = tenant.kubectl("get", "instances", "-o", "json")
        samples["kubectl"].append(seconds)
        counted["kubectl"].add(len(json.loads(out)["items"]))
        sizes["kubectl"] = len(out)
        seconds, items = tenant.kube_list()
        samples["kube_list"].append(seconds)
        counted["kube_list"].add(items)
    return {"posted_s": posted, "settled_s": settled, "statuses": counts, "samples": samples, "sizes": sizes,
            "counts": {k: sorted(v) for k, v in counted.items()}}


# ---------------------------------------------------------------------------------------------- main
def setup(cloud: LocalCloud, source: Source, workdir: Path) -> Tenant:
    """The cloud, the operator and kova api started, and the project: its user, a Flavor, an active Image."""
    url = source.add("/os.qcow2", make_qcow2(1 << 30, os.urandom(64 * 1024) * 16))
    cloud.start()
    cloud.install_kova_crds()
    # As the tests' fixtures: the operator with the chart's RBAC, kova api with its own account. Hundreds of
    # servers in one project are over Nova's default quotas, which are not what is measured.
    operator_kubeconfig = chart_rbac_kubeconfig(cloud)
    cloud.start_operator(extra_env={"KUBECONFIG": str(operator_kubeconfig), **import_env(source), **UNLIMITED})
    api = cloud.start_api(cloud.api_kubeconfig(), extra_env=UNLIMITED)
    cloud.kubectl("create", "namespace", NS)
    token = cloud.tenant_token(NS, "edit")
    cloud.kubectl("apply", "-f", "-", input=yaml.safe_dump_all([
        {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": FLAVOR},
         "spec": {"vcpus": 1, "ram": 512, "disk": 1}},
        {"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": IMAGE, "namespace": NS},
         "spec": {"diskFormat": "qcow2", "source": {"url": url}}}]))
    cloud.kubectl("-n", NS, "wait", "--for=jsonpath={.status.status}=active", "--timeout=120s", f"image/{IMAGE}")
    return Tenant(cloud, api.ports["http"], token, workdir)


def main() -> int:
    n = int(os.environ.get("KOVA_API_BENCH_N", "5"))
    total = int(os.environ.get("KOVA_API_BENCH_LIST_N", "500"))
    rounds = int(os.environ.get("KOVA_API_BENCH_REQUESTS", "20"))
    if total < 2 * n:
        raise SystemExit(f"KOVA_API_BENCH_LIST_N ({total}) must be at least the {2 * n} servers booted")
    workdir = Path(tempfile.mkdtemp(prefix="kova-compute-bench-"))
    source = Source()
    cloud = LocalCloud(workdir / "cloud")
    try:
        tenant = setup(cloud, source, workdir)
        watch = Watch(cloud, f"{GROUP}/namespaces/{NS}/instances", {
            "added": lambda t, o: t == "ADDED",
            "active": lambda t, o: (o.get("status") or {}).get("status") == "ACTIVE"})
        tenant.kubectl("get", "instances")  # kubectl's discovery cache, warm as a regular user's is
        load = [os.getloadavg()[0]]
        boot = boots(cloud, tenant, watch, n)
        load.append(os.getloadavg()[0])
        listed = lists(cloud, tenant, total, 2 * n, rounds)
        load.append(os.getloadavg()[0])
    finally:
        cloud.stop()
        source.close()
        shutil.rmtree(workdir, ignore_errors=True)
    figures = report(boot, listed, n, total, rounds, cloud.sim_delay, load)
    if os.environ.get("KOVA_API_BENCH_JSON"):  # for tests/integration/test_bench.py
        Path(os.environ["KOVA_API_BENCH_JSON"]).write_text(json.dumps(figures))
    return 0


def report(boot: dict[str, list[dict[str, float]]], listed: dict[str, Any], n: int, total: int, rounds: int,
           sim_delay: float, load: list[float]) -> dict[str, Any]:
    def med(rows: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in rows)

    api, kube = boot["openstack"], boot["kubectl"]
    boot_ratio = med(api, "total") / med(kube, "total")
    print(f"\ncompute API: boot to ACTIVE, one server at a time, {n} each way interleaved (simulator delay "
          f"{sim_delay}s; {os.cpu_count()} CPUs shared by the whole cloud)")
    print(f"  {'':38} {'median':>7} {'max':>7}   {'created':>8} {'ACTIVE':>8} {'returned':>8}  (medians, from "
          "the start)")
    for label, rows in (("openstack server create --wait", api), ("kubectl apply + kubectl wait", kube)):
        print(f"  {label:38} {med(rows, 'total'):6.2f}s {max(r['total'] for r in rows):6.2f}s   "
              f"{med(rows, 'created'):7.2f}s {med(rows, 'active'):7.2f}s {med(rows, 'total'):7.2f}s")
    boot_api, boot_kube = med(api, "active") - med(api, "created"), med(kube, "active") - med(kube, "created")
    print(f"  ratio {boot_ratio:.2f}x (openstack / kubectl, medians); the boot itself (created -> ACTIVE) "
          f"{boot_api:.2f}s through the API, {boot_kube:.2f}s through kubectl")
    print(f"  after ACTIVE: openstack {med(api, 'total') - med(api, 'active'):.2f}s (its --wait polls every 5 s, "
          f"osc_lib's wait_for_status), kubectl wait {med(kube, 'total') - med(kube, 'active'):.2f}s (a watch); "
          f"kubectl apply alone {med(kube, 'apply'):.2f}s")

    s = listed["samples"]
    words = ", ".join(f"{v} {k}" for k, v in sorted(listed["statuses"].items()))
    print(f"\ncompute API: listing {total} servers ({words}; the BUILD ones are of a Flavor that does not exist, "
          f"the operator running), {rounds} requests each, interleaved")
    print(f"  (the {total - 2 * n} Instances POSTed in {listed['posted_s']:.1f}s, statuses written and writes "
          f"quiet {listed['settled_s']:.1f}s later)")
    print(f"  {'':48} {'P50':>7} {'P95':>7}  {'bytes':>9}  servers")
    columns = (("GET /servers/detail (compute 2.100)", "detail"), ("GET /servers (compute 2.100)", "brief"),
            ("kubectl get instances -o json (a process)", "kubectl"),
            ("kube-apiserver LIST instances (kova api's call)", "kube_list"))
    for label, key in columns:
        size = listed["sizes"].get(key)
        print(f"  {label:48} {percentile(s[key], 0.5) * 1000:5.0f}ms {percentile(s[key], 0.95) * 1000:5.0f}ms  "
              f"{size if size is not None else '':>9}  {'/'.join(map(str, listed['counts'][key]))}")
    short = {k: c for k, c in listed["counts"].items() if c != [total]}
    if short:
        print(f"  NOTE: not all {total} servers came back in one answer: {short} (the compute API pages at 1,000 "
              "servers, Nova's max_limit)")
    detail_ratio = percentile(s["detail"], 0.5) / percentile(s["kubectl"], 0.5)
    print(f"  ratio GET /servers/detail / kubectl get, P50: {detail_ratio:.2f}x; over kova api's own LIST: "
          f"{percentile(s['detail'], 0.5) / percentile(s['kube_list'], 0.5):.2f}x")
    # Whatever else runs on the machine shows here: every figure above shared these CPUs with it.
    print(f"\n  load average (1 min) before the boots, between the parts, at the end: "
          f"{', '.join(f'{x:.1f}' for x in load)} ({os.cpu_count()} CPUs)")
    return {
        "load": load,
        "boot": {k: {"median": med(v, "total"), "max": max(r["total"] for r in v), "created": med(v, "created"),
                     "active": med(v, "active"), "samples": [r["total"] for r in v]} for k, v in boot.items()},
        "boot_ratio": boot_ratio,
        "list": {k: {"p50": percentile(v, 0.5), "p95": percentile(v, 0.95), "n": len(v),
                     "servers": listed["counts"][k]} for k, v in s.items()},
        "list_ratio": detail_ratio, "statuses": listed["statuses"], "total": total,
    }


if __name__ == "__main__":
    sys.exit(main())
