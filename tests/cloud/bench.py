"""The local cloud Kova is tested on: real etcd, kube-apiserver, kube-controller-manager, MinIO, the
KubeVirt/CDI and Multus NetworkAttachmentDefinition CRDs, a default StorageClass and the KubeVirt/CDI
simulator (which registers three Nodes in two zones and schedules VMIs on them), all on 127.0.0.1. kube-apiserver
runs with the aggregation layer (front-proxy CA and client certificate): the simulator's virt-api is an
aggregated API server behind the APIService v1.subresources.kubevirt.io, reached on loopback.

It starts the way controller-runtime's envtest does (a CA, a serving certificate, an admin client
certificate, a service-account signing key, then the processes with flags), from binaries the Makefile
built from pinned Go modules. Every child gets PR_SET_PDEATHSIG, so none outlives the process that
started it, even when that process is killed.

    python -m tests.cloud up [--dir DIR]    # start, print the environment, run until Ctrl-C / SIGTERM
"""

from __future__ import annotations

import base64
import contextlib
import ctypes
import json
import os
import random
import re
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import IO, Any

import yaml
from cryptography.hazmat.primitives import serialization

from tests.cloud.kubevirt import KubeVirt
from tests.cloud.pki import leaf, new_ca, new_key, pem_cert, pem_key

REPO = Path(__file__).resolve().parents[2]
CRDS = Path(__file__).resolve().parent / "crds" / "kubevirt-cdi.yaml"
# CDI v1.65.0's own CRDs, as its operator installs them (vendored, see third_party/README.md): the version of
# the cdi-controller the local cloud runs.
CDI_CRDS = REPO / "third_party" / "cdi" / "v1.65.0" / "crds.yaml"
# KubeVirt v1.7.0's, printed by its own generators (third_party/kubevirt/v1.7.0): virt-controller's version.
KUBEVIRT_CRDS = REPO / "third_party" / "kubevirt" / "v1.7.0" / "crds.yaml"
CDI_NAMESPACE = "cdi"
UPLOAD_SIGNERS = ("cdi-uploadserver-signer", "cdi-uploadserver-client-signer")  # upload servers', their clients'
# Multus' NetworkAttachmentDefinition, as its project publishes it (vendored, see third_party/README.md).
NAD_CRD = REPO / "third_party" / "network-attachment-definition" / "networks-crd.yaml"
# The CSI snapshot CRDs of the snapshot-controller the local cloud runs (external-snapshotter, vendored).
SNAPSHOT_CRDS = REPO / "third_party" / "external-snapshotter" / "v8.7.0" / "crds.yaml"
LOOPBACK = "127.0.0.1"
S3_BUCKET = "kova-images"
FRONT_PROXY_CLIENT = "front-proxy-client"
# User agents of the cluster's own components: kube-apiserver's audit log tells their writes from Kova's.
COMPONENT_AGENTS = {"virt-controller", "cdi-controller", "kube-scheduler", "kube-controller-manager",
                    "snapshot-controller", "kova-simulated-nodes", "kube-apiserver"}
WRITE_VERBS = {"POST", "PUT", "PATCH", "APPLY", "DELETE", "DELETECOLLECTION"}
_PR_SET_PDEATHSIG = 1


def bin_dir() -> Path:
    return Path(os.environ.get("KOVA_BIN_DIR", REPO / ".cache" / "bin"))


def worker_of(parent: int) -> int | None:
    """The `kova worker` child of process `parent` (kova.adapters.worker), if it runs."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            cmdline = (entry / "cmdline").read_bytes().split(b"\0")
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        if ppid == parent and b"worker" in cmdline:
            return int(entry.name)
    return None


def binary(name: str) -> str:
    path = bin_dir() / name
    if not path.exists():
        raise RuntimeError(f"{path} is missing: run `make bins` first (it builds the bench from Go modules)")
    return str(path)


class S3Audit:
    """A loopback listener for MinIO's audit webhook: one JSON document per S3 call it served."""

    def __init__(self) -> None:
        calls: list[dict[str, Any]] = []
        self.calls, self.lock = calls, threading.Lock()
        audit = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with contextlib.suppress(ValueError), audit.lock:
                    calls.append(json.loads(body).get("api") or {})
                self.send_response(200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer((LOOPBACK, 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True, name="s3-audit").start()

    def reads(self, key: str) -> int:
        with self.lock:
            return sum(1 for c in self.calls if c.get("name") == "GetObject" and c.get("object") == key)

    def bytes_read(self, key: str) -> int:
        """Bytes MinIO sent answering GetObject calls for `key` (its audit's `tx`, headers included)."""
        with self.lock:
            return sum(int(c.get("tx") or 0) for c in self.calls if c.get("name") == "GetObject"
                       and c.get("object") == key)


def free_port() -> int:
    with socket.socket() as s:
        s.bind((LOOPBACK, 0))
        return int(s.getsockname()[1])


def lasting_port() -> int:
    """A free port below the kernel's ephemeral range, for a listener that starts long after its port is named:
    a port from free_port() could meanwhile be taken by any outgoing connection (they draw from that range)."""
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low)
        with socket.socket() as s:
            try:
                s.bind((LOOPBACK, port))
            except OSError:
                continue
            return port
    raise RuntimeError(f"no free port below {low}")


def _die_with_parent() -> None:
    # Runs in the child between fork and exec: SIGKILL it when the thread that started it dies.
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ports: dict[str, int] = field(default_factory=dict)


@dataclass
class LocalCloud:
    """One local cloud in `workdir`; `start()` returns when every part answers, `stop()` ends them all."""

    workdir: Path
    with_simulator: bool = True
    sim_delay: float = 0.3
    procs: list[Proc] = field(default_factory=list)
    api_port: int = 0
    s3_port: int = 0
    s3_audit: S3Audit | None = None  # MinIO's audit log of S3 calls (reads counted by tests)
    cdi_api_port: int = 0  # cdi-apiserver's webhooks (named by its webhook configurations: kept across restarts)
    virt_api_port: int = 0  # the simulator's aggregated API (subresources.kubevirt.io), behind an APIService
    # Controllers a cluster runs as Deployments: restarted when they exit, as kubelet restarts their pods
    # (cdi-controller exits when it loses its leader Lease, for instance while kube-apiserver restarts).
    supervised: dict[str, Any] = field(default_factory=dict)
    kubevirt: Any = None  # tests.cloud.kubevirt.KubeVirt, once started
    restarts: Counter[str] = field(default_factory=Counter)
    s3_access_key: str = "kova-bench"
    s3_secret_key: str = "kova-bench-secret"
    kova_api_port: int = 0  # where the session's `kova api` listens: the file store's links name it
    link_key: str = "kova-bench-file-store-link-key"

    # ----- paths and environment -----
    @property
    def kubeconfig(self) -> Path:
        return self.workdir / "kubeconfig"

    @property
    def logs(self) -> Path:
        return self.workdir / "logs"

    @property
    def api_url(self) -> str:
        return f"https://{LOOPBACK}:{self.api_port}"

    @property
    def s3_endpoint(self) -> str:
        return f"{LOOPBACK}:{self.s3_port}"

    @property
    def file_store(self) -> Path:
        return self.workdir / "file-store"

    def env(self) -> dict[str, str]:
        """What a client of the bench (the operator, kubectl, a test) needs in its environment: two stores,
        MinIO (`s3`, the default) and a directory (`file`, read by importers through `kova api`'s links)."""
        if not self.kova_api_port:
            self.kova_api_port = lasting_port()
        # Equal weights: `stores` then lists them by id, the order Tempest's waiters compare with.
        stores = [{"id": "s3", "type": "s3", "default": True, "description": "MinIO"},
                  {"id": "file", "type": "file", "path": str(self.file_store),
                   "url": f"http://{LOOPBACK}:{self.kova_api_port}", "description": "a directory"}]
        return {
            "KUBECONFIG": str(self.kubeconfig),
            "KOVA_S3_ENDPOINT": self.s3_endpoint,
            "KOVA_S3_ACCESS_KEY": self.s3_access_key,
            "KOVA_S3_SECRET_KEY": self.s3_secret_key,
            "KOVA_S3_BUCKET": S3_BUCKET,
            "KOVA_S3_SECURE": "false",
            "KOVA_STORES": json.dumps(stores),
            "KOVA_STORE_LINK_KEY": self.link_key,
        }

    # ----- lifecycle -----
    def start(self) -> LocalCloud:
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            self._write_pki()
            self._start_etcd()
            self._start_apiserver()
            # CRDs before the controller manager: its garbage collector watches their kinds from the start
            # (it discovers kinds added later only every 30 s, and owner references to them wait until then).
            self._install_crds()
            self._start_controller_manager()
            self._start_scheduler()
            self.supervise("snapshot-controller", self._start_snapshot_controller)
            self._start_minio()
            self._install_cdi()
            self.supervise("cdi-apiserver", self._start_cdi_apiserver)
            self._register_cdi_webhooks()
            self.supervise("cdi-controller", self._start_cdi)
            self.kubevirt = KubeVirt(self)
            self.kubevirt.install()
            if self.with_simulator:
                self.start_simulator()  # the Nodes first: virt-controller's node controller reads them at start
            self.supervise("virt-controller", self.kubevirt.start_controller)
            (self.workdir / "env").write_text("".join(f"export {k}={v}\n" for k, v in self.env().items()))
        except BaseException:
            self.stop()
            raise
        return self

    def start_store(self) -> LocalCloud:
        """Only MinIO: for benchmarks that need the object store and nothing else."""
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(exist_ok=True)
        try:
            self._start_minio()
        except BaseException:
            self.stop()
            raise
        return self

    def supervise(self, name: str, start: Any) -> None:
        """Run `start()` now and again whenever the process it spawned (named `name`) exits."""
        start()
        self.supervised[name] = start
        if len(self.supervised) == 1:
            threading.Thread(target=self._supervisor, daemon=True, name="supervisor").start()

    def _supervisor(self) -> None:
        while self.supervised:
            time.sleep(0.5)
            for name, start in list(self.supervised.items()):
                proc = next((p for p in self.procs if p.name == name), None)
                if proc is not None and proc.popen.poll() is None:
                    continue
                if proc is not None:
                    self.procs.remove(proc)
                    self.restarts[name] += 1
                with contextlib.suppress(Exception):  # tried again on the next round (kube-apiserver may be down)
                    start()

    def stop(self) -> None:
        self.supervised.clear()
        # One after the other, newest first: kube-apiserver stops in about a second while etcd is still
        # there, but waits out the whole deadline for an etcd that went away under it.
        deadline = time.monotonic() + 10
        for proc in reversed(self.procs):
            if proc.popen.poll() is None:
                proc.popen.terminate()
            try:
                proc.popen.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                proc.popen.kill()
                proc.popen.wait()
        self.procs.clear()

    def stop_part(self, name: str) -> None:
        """Stop one part (an outage); `start_part` brings it back on the same address and data."""
        for proc in [p for p in self.procs if p.name == name]:
            proc.popen.terminate()
            try:
                proc.popen.wait(timeout=10)
            except subprocess.TimeoutExpired:  # kube-apiserver drains its watches slowly: a crash will do
                proc.popen.kill()
                proc.popen.wait()
            self.procs.remove(proc)

    def start_part(self, name: str) -> None:
        {"minio": self._start_minio, "kube-apiserver": self._start_apiserver}[name]()

    def __enter__(self) -> LocalCloud:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def spawn(self, name: str, args: list[str], env: dict[str, str] | None = None) -> Proc:
        """Start a child whose output goes to logs/<name>.log and that dies with this process."""
        log = self.logs / f"{name}.log"
        out: IO[bytes] = log.open("ab")
        popen = subprocess.Popen(args, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                 env={**os.environ, **(env or {})}, preexec_fn=_die_with_parent)
        out.close()
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def _wait(self, proc: Proc, ready: Any, what: str, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited with {proc.popen.returncode} before {what}; "
                                   f"see {proc.log}:\n{proc.log.read_text()[-3000:]}")
            with contextlib.suppress(Exception):
                if ready():
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{proc.name}: timed out waiting for {what}; see {proc.log}")

    # ----- parts -----
    def _write_pki(self) -> None:
        pki = self.workdir / "pki"
        pki.mkdir(exist_ok=True)
        ca = new_ca("kova-bench-ca")
        serving = leaf("kube-apiserver", ca, server=True)
        admin = leaf("kova-bench-admin", ca, org="system:masters")
        # The aggregation layer, as kubeadm sets it up: kube-apiserver proxies to aggregated API servers
        # (the simulator's virt-api) with the front-proxy client certificate, and they trust only the
        # front-proxy CA (published in kube-system/extension-apiserver-authentication) for X-Remote-User.
        front_proxy_ca = new_ca("front-proxy-ca")
        front_proxy = leaf(FRONT_PROXY_CLIENT, front_proxy_ca)
        sa_key = new_key()
        files = {"ca.crt": pem_cert(ca[0]), "ca.key": pem_key(ca[1]),
                 "apiserver.crt": pem_cert(serving[0]), "apiserver.key": pem_key(serving[1]),
                 "admin.crt": pem_cert(admin[0]), "admin.key": pem_key(admin[1]),
                 "front-proxy-ca.crt": pem_cert(front_proxy_ca[0]),
                 "front-proxy-client.crt": pem_cert(front_proxy[0]),
                 "front-proxy-client.key": pem_key(front_proxy[1]),
                 "sa.key": pem_key(sa_key),
                 "sa.pub": sa_key.public_key().public_bytes(
                     serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)}
        for filename, data in files.items():
            (pki / filename).write_bytes(data)
        self.api_port = free_port()
        self.kubeconfig.write_text(yaml.safe_dump(kubeconfig_dict(
            self.api_url, (pki / "ca.crt").read_text(), client_cert=(pki / "admin.crt").read_text(),
            client_key=(pki / "admin.key").read_text())))

    def _start_etcd(self) -> None:
        client, peer = free_port(), free_port()
        self.etcd_url = f"http://{LOOPBACK}:{client}"
        proc = self.spawn("etcd", [
            binary("etcd"), "--name=bench", f"--data-dir={self.workdir / 'etcd'}",
            f"--listen-client-urls={self.etcd_url}", f"--advertise-client-urls={self.etcd_url}",
            f"--listen-peer-urls=http://{LOOPBACK}:{peer}",
            f"--initial-advertise-peer-urls=http://{LOOPBACK}:{peer}",
            f"--initial-cluster=bench=http://{LOOPBACK}:{peer}",
            "--listen-metrics-urls=", "--unsafe-no-fsync=true", "--log-level=warn"])
        self._wait(proc, lambda: _get(f"{self.etcd_url}/health", None).get("health") == "true", "etcd health")

    def _start_apiserver(self) -> None:
        pki = self.workdir / "pki"
        proc = self.spawn("kube-apiserver", [
            binary("kube-apiserver"),
            f"--etcd-servers={self.etcd_url}", f"--bind-address={LOOPBACK}", f"--advertise-address={LOOPBACK}",
            f"--secure-port={self.api_port}", f"--cert-dir={pki}",
            f"--tls-cert-file={pki / 'apiserver.crt'}", f"--tls-private-key-file={pki / 'apiserver.key'}",
            f"--client-ca-file={pki / 'ca.crt'}",
            f"--service-account-key-file={pki / 'sa.pub'}",
            f"--service-account-signing-key-file={pki / 'sa.key'}",
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
            "--service-cluster-ip-range=10.0.0.0/24", "--authorization-mode=RBAC", "--allow-privileged=true",
            "--endpoint-reconciler-type=none",
            f"--requestheader-client-ca-file={pki / 'front-proxy-ca.crt'}",
            f"--requestheader-allowed-names={FRONT_PROXY_CLIENT}",
            "--requestheader-extra-headers-prefix=X-Remote-Extra-", "--requestheader-group-headers=X-Remote-Group",
            "--requestheader-username-headers=X-Remote-User",
            f"--proxy-client-cert-file={pki / 'front-proxy-client.crt'}",
            f"--proxy-client-key-file={pki / 'front-proxy-client.key'}", "--v=1",
            f"--audit-policy-file={self._audit_policy()}", f"--audit-log-path={self.audit_log}",
            "--audit-log-format=json", "--audit-log-maxsize=200", "--audit-log-maxbackup=1"])
        self._wait(proc, lambda: self._api_get("/readyz") == "ok", "/readyz", timeout=120)

    @property
    def audit_log(self) -> Path:
        return self.workdir / "audit.log"

    def _audit_policy(self) -> Path:
        """Who wrote what: kube-apiserver's audit log of every write, as a cluster administrator keeps it (the
        HA test reads which credential made each write). Metadata only: no bodies."""
        path = self.workdir / "audit-policy.yaml"
        path.write_text(yaml.safe_dump({
            "apiVersion": "audit.k8s.io/v1", "kind": "Policy",
            "omitStages": ["RequestReceived", "ResponseStarted", "Panic"],
            "rules": [{"level": "Metadata", "verbs": ["create", "update", "patch", "delete", "deletecollection"]},
                      {"level": "None"}]}))
        return path

    def audit(self) -> list[dict[str, Any]]:
        """The writes kube-apiserver has audited so far (one JSON event a line)."""
        if not self.audit_log.exists():
            return []
        return [json.loads(line) for line in self.audit_log.read_text().splitlines() if line.strip()]

    def _start_controller_manager(self) -> None:
        # Only the controllers whose behaviour Kova relies on: owner-reference garbage collection, and
        # namespace deletion (tests delete their namespaces). The serviceaccount controllers give every
        # namespace its `default` ServiceAccount and tokens, as in a real cluster; clusterrole-aggregation
        # fills the built-in view/edit roles from the chart's kova-image-reader/editor, as in a real cluster.
        # pvc-protection takes the kubernetes.io/pvc-protection finalizer off claims no pod uses (the
        # simulator's PVCs), or no namespace holding one could ever be deleted. resourcequota computes the
        # use of the ResourceQuota Kova keeps per namespace, which the API server's admission then enforces.
        proc = self.spawn("kube-controller-manager", [
            binary("kube-controller-manager"), f"--kubeconfig={self.kubeconfig}",
            "--controllers=garbagecollector,namespace,serviceaccount,serviceaccount-token,clusterrole-aggregation,"
            "pvc-protection,resourcequota",
            f"--service-account-private-key-file={self.workdir / 'pki' / 'sa.key'}",
            f"--root-ca-file={self.workdir / 'pki' / 'ca.crt'}",
            "--leader-elect=false", f"--bind-address={LOOPBACK}", f"--secure-port={free_port()}",
            "--concurrent-gc-syncs=5", "--v=1"])
        self._wait(proc, lambda: self._api_get("/api/v1/namespaces/default/serviceaccounts/default"),
                   "the controller manager (the default ServiceAccount)")

    def _start_snapshot_controller(self) -> None:
        """external-snapshotter's snapshot-controller, built from its pinned module: VolumeSnapshot →
        VolumeSnapshotContent, bound, ready once the driver's side (the simulator's csi-snapshotter) cut it."""
        port = free_port()
        proc = self.spawn("snapshot-controller", [
            binary("snapshot-controller"), f"--kubeconfig={self.kubeconfig}", f"--http-endpoint={LOOPBACK}:{port}",
            "--retry-interval-max=10s", "--v=2"])
        self._wait(proc, lambda: urllib.request.urlopen(f"http://{LOOPBACK}:{port}/metrics", timeout=2).status == 200,
                   "snapshot-controller (/metrics)")

    def _start_minio(self) -> None:
        self.s3_port = self.s3_port or free_port()  # a restart keeps the address clients know
        if self.s3_audit is None:
            self.s3_audit = S3Audit()
        proc = self.spawn("minio", [
            binary("minio"), "server", "--quiet", "--address", f"{LOOPBACK}:{self.s3_port}",
            "--console-address", f"{LOOPBACK}:{free_port()}", str(self.workdir / "minio")],
            env={"MINIO_ROOT_USER": self.s3_access_key, "MINIO_ROOT_PASSWORD": self.s3_secret_key,
                 "MINIO_BROWSER": "off", "MINIO_UPDATE": "off", "CI": "true",
                 # Every S3 call MinIO serves, told to a loopback listener: what tests count reads with.
                 "MINIO_AUDIT_WEBHOOK_ENABLE_kova": "on",
                 "MINIO_AUDIT_WEBHOOK_ENDPOINT_kova": f"http://{LOOPBACK}:{self.s3_audit.port}/"})
        self._wait(proc, lambda: _status(f"http://{self.s3_endpoint}/minio/health/ready") == 200, "MinIO")
        client = self.s3_client()
        if not client.bucket_exists(S3_BUCKET):
            client.make_bucket(S3_BUCKET)

    def s3_reads(self, key: str) -> int:
        """How many GetObject calls MinIO served for `key` so far (its audit log; it posts each call once
        answered, so a caller waits for the count it expects)."""
        return self.s3_audit.reads(key) if self.s3_audit else 0

    def s3_client(self) -> Any:
        from minio import Minio

        return Minio(self.s3_endpoint, access_key=self.s3_access_key, secret_key=self.s3_secret_key,
                     secure=False)

    def _install_crds(self) -> None:
        # Kova's own too (install_kova_crds applies them again, unchanged): the resourcequota controller, like
        # the garbage collector, counts kinds added later only after its next discovery, up to 30 s on, and
        # until then the API server refuses every object a ResourceQuota counts ("status unknown for quota").
        # KubeVirt's and CDI's own, of the versions whose controllers run here.
        self.kubectl("apply", "--server-side", "-f", str(KUBEVIRT_CRDS), "-f", str(CDI_CRDS), "-f", str(NAD_CRD),
                     "-f", str(SNAPSHOT_CRDS), "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd",
                     "virtualmachines.kubevirt.io", "virtualmachineinstances.kubevirt.io", "kubevirts.kubevirt.io",
                     "datavolumes.cdi.kubevirt.io", "virtualmachineexports.export.kubevirt.io",
                     "network-attachment-definitions.k8s.cni.cncf.io", "storageprofiles.cdi.kubevirt.io",
                     "cdis.cdi.kubevirt.io", "volumesnapshots.snapshot.storage.k8s.io",
                     "volumesnapshotcontents.snapshot.storage.k8s.io", "volumesnapshotclasses.snapshot.storage.k8s.io")
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([STORAGE_CLASS, *CLONE_STORAGE]))

    def _start_scheduler(self) -> None:
        """kube-scheduler, built from the same module as the API server, with its default profile."""
        port = free_port()
        proc = self.spawn("kube-scheduler", [
            binary("kube-scheduler"), f"--kubeconfig={self.kubeconfig}", "--leader-elect=false",
            f"--bind-address={LOOPBACK}", f"--secure-port={port}", "--v=1"])
        self._wait(proc, lambda: (self.logs / "kube-scheduler.log").read_text().find("Serving securely") >= 0,
                   "kube-scheduler")

    def _install_cdi(self) -> None:
        """What CDI's operator installs for cdi-controller (v1.65.0): namespace `cdi`, the CDI resource, the
        clone token keys; and a StorageProfile for the simulated driver, which CDI cannot know (a cluster
        administrator writes its claim properties, as for any driver CDI has no defaults for)."""
        self.kubectl("create", "namespace", CDI_NAMESPACE, check=False)
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "CDI", "metadata": {"name": "cdi"},
             "spec": {"config": {"featureGates": []}}},
            {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "StorageProfile", "metadata": {"name": "sim-local"},
             "spec": {"claimPropertySets": [{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}]}},
            # Storage that clones on its own side: CDI clones its claims as CSI clones.
            {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "StorageProfile", "metadata": {"name": "sim-clone"},
             "spec": {"cloneStrategy": "csi-clone",
                      "claimPropertySets": [{"accessModes": ["ReadWriteOnce"], "volumeMode": "Filesystem"}]}}]))
        keys = self.workdir / "pki" / "cdi-token"
        keys.mkdir(exist_ok=True)
        key = new_key()
        (keys / "id_rsa").write_bytes(pem_key(key))
        (keys / "id_rsa.pub").write_bytes(key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo))
        # The upload server's signer and its clients' (CDI's operator makes them: cdi-uploadserver-signer,
        # cdi-uploadserver-client-signer): cdi-controller signs with them the certificates of a host-assisted
        # clone's upload server and cloner pods, and puts their bundles (ConfigMaps in `cdi`) in the pods.
        bundles = []
        for signer in UPLOAD_SIGNERS:
            cert, signer_key = new_ca(signer)
            (self.workdir / "pki" / signer).mkdir(exist_ok=True)
            (self.workdir / "pki" / signer / "tls.crt").write_bytes(pem_cert(cert))
            (self.workdir / "pki" / signer / "tls.key").write_bytes(pem_key(signer_key))
            bundles.append({"apiVersion": "v1", "kind": "ConfigMap",
                            "metadata": {"name": f"{signer}-bundle", "namespace": CDI_NAMESPACE},
                            "data": {"ca-bundle.crt": pem_cert(cert).decode()}})
        self.kubectl("apply", "--server-side", "--force-conflicts", "-f", "-", input=yaml.safe_dump_all(bundles))
        # CDI's operator's aggregated roles (pkg/operator/resources/cluster/rbac.go): a namespace's editors work
        # with DataVolumes, and its editors and viewers may clone from it (`datavolumes/source`).
        source = {"apiGroups": ["cdi.kubevirt.io"], "resources": ["datavolumes/source"], "verbs": ["create"]}
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "cdi.kubevirt.io:edit", "labels": {
                 "rbac.authorization.k8s.io/aggregate-to-admin": "true",
                 "rbac.authorization.k8s.io/aggregate-to-edit": "true"}},
             "rules": [{"apiGroups": ["cdi.kubevirt.io"], "resources": ["datavolumes", "dataimportcrons",
                                                                        "datasources"], "verbs": ["*"]}, source]},
            {"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
             "metadata": {"name": "cdi.kubevirt.io:view", "labels": {
                 "rbac.authorization.k8s.io/aggregate-to-view": "true"}},
             "rules": [{"apiGroups": ["cdi.kubevirt.io"], "verbs": ["get", "list", "watch"], "resources": [
                 "cdiconfigs", "dataimportcrons", "datasources", "datavolumes", "objecttransfers",
                 "storageprofiles", "volumeimportsources", "volumeuploadsources", "volumeclonesources"]}, source]}]))
        # The same key pair for cdi-apiserver, which signs clone tokens with it (CDI's operator shares it so).
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump({
            "apiVersion": "v1", "kind": "Secret", "type": "Opaque",
            "metadata": {"name": "cdi-api-signing-key", "namespace": CDI_NAMESPACE,
                         "labels": {"cdi.kubevirt.io": "keystore"}},
            "data": {f: base64.b64encode((keys / f).read_bytes()).decode() for f in ("id_rsa", "id_rsa.pub")}}))

    def _start_cdi_apiserver(self) -> None:
        """cdi-apiserver: CDI's admission webhooks for DataVolumes, which authorize a clone from another
        namespace (a SubjectAccessReview of `datavolumes/source` there) and sign its token with the key pair
        cdi-controller checks (the Secret cdi-api-signing-key, made from pki/cdi-token before it starts: it
        would otherwise make a key of its own). Served on loopback, with a certificate for cdi-api.cdi.svc."""
        pki = self.workdir / "pki"
        if not (pki / "cdi-api.crt").exists():
            ca = new_ca("cdi-apiserver-signer")
            cert, key = leaf("cdi-api", ca, server=True, dns=(f"cdi-api.{CDI_NAMESPACE}.svc",))
            (pki / "cdi-api-ca.crt").write_bytes(pem_cert(ca[0]))
            (pki / "cdi-api.crt").write_bytes(pem_cert(cert))
            (pki / "cdi-api.key").write_bytes(pem_key(key))
        self.cdi_api_port = self.cdi_api_port or free_port()
        proc = self.spawn("cdi-apiserver", [
            binary("cdi-apiserver"), f"-kubeconfig={self.kubeconfig}", f"-bind-address={LOOPBACK}",
            f"-port={self.cdi_api_port}", "-v=1"],  # above 2 it logs whole AdmissionReviews, tokens included
            env={"CERT_FILE": str(pki / "cdi-api.crt"), "KEY_FILE": str(pki / "cdi-api.key"),
                 "KUBECONFIG": str(self.kubeconfig)})
        context = ssl.create_default_context(cafile=str(pki / "cdi-api-ca.crt"))
        self._wait(proc, lambda: urllib.request.urlopen(
            f"https://localhost:{self.cdi_api_port}/healthz", context=context, timeout=2).status == 200,
                   "cdi-apiserver (/healthz)")

    def _register_cdi_webhooks(self) -> None:
        """What CDI's operator registers for cdi-apiserver (pkg/operator/resources/cluster/apiserver.go): the
        DataVolume mutating and validating webhooks, through the Service cdi-api, here an ExternalName for
        localhost (kube-apiserver resolves a webhook's Service to <externalName>:<port>), on its real port.
        Ready once a clone from another namespace is answered by the webhook (a dry run: nothing is stored)."""
        ca = base64.b64encode((self.workdir / "pki" / "cdi-api-ca.crt").read_bytes()).decode()
        common = {"rules": [{"operations": ["CREATE", "UPDATE"], "apiGroups": ["cdi.kubevirt.io"],
                             "apiVersions": ["v1beta1"], "resources": ["datavolumes"], "scope": "*"}],
                  "failurePolicy": "Fail", "sideEffects": "None", "matchPolicy": "Exact", "timeoutSeconds": 30,
                  "namespaceSelector": {}, "objectSelector": {}, "admissionReviewVersions": ["v1", "v1beta1"]}

        def hook(kind: str, name: str, path: str, **extra: Any) -> dict[str, Any]:
            return {"apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
                    "metadata": {"name": f"cdi-api-datavolume-{path}", "labels": {"cdi.kubevirt.io": "cdi-api"}},
                    "webhooks": [{"name": name, **common, **extra, "clientConfig": {
                        "caBundle": ca, "service": {"namespace": CDI_NAMESPACE, "name": "cdi-api",
                                                    "path": f"/datavolume-{path}", "port": self.cdi_api_port}}}]}
        self.kubectl("apply", "--server-side", "-f", "-", input=yaml.safe_dump_all([
            {"apiVersion": "v1", "kind": "Service",
             "metadata": {"name": "cdi-api", "namespace": CDI_NAMESPACE, "labels": {"cdi.kubevirt.io": "cdi-api"}},
             "spec": {"type": "ExternalName", "externalName": "localhost",
                      "ports": [{"name": "https", "port": self.cdi_api_port, "protocol": "TCP"}]}},
            hook("MutatingWebhookConfiguration", "datavolume-mutate.cdi.kubevirt.io", "mutate",
                 reinvocationPolicy="Never"),
            hook("ValidatingWebhookConfiguration", "datavolume-validate.cdi.kubevirt.io", "validate")]))
        probe = yaml.safe_dump({
            "apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume",
            "metadata": {"name": "webhook-probe", "namespace": CDI_NAMESPACE},
            "spec": {"source": {"pvc": {"namespace": "default", "name": "webhook-probe"}},
                     "storage": {"resources": {"requests": {"storage": "1Gi"}}}}})
        deadline = time.monotonic() + 60
        while "storage.clone.token" not in self.kubectl("create", "--dry-run=server", "-o", "json", "-f", "-",
                                                         input=probe, check=False):
            if time.monotonic() > deadline:
                raise RuntimeError("cdi-apiserver's webhooks were not called within 60 s")
            time.sleep(0.2)

    def _start_cdi(self) -> None:
        """cdi-controller, naming images in the pods it makes that nothing pulls (the simulated kubelet runs the
        importer's payload itself)."""
        keys = self.workdir / "pki" / "cdi-token"
        proc = self.spawn("cdi-controller", [
            binary("cdi-controller"), f"-kubeconfig={self.kubeconfig}", f"-token-key-dir={keys}",
            f"-metrics-bind-address={LOOPBACK}:{free_port()}", "-v=1"],
            env={"IMPORTER_IMAGE": "cdi-importer:v1.65.0", "CLONER_IMAGE": "cdi-cloner:v1.65.0",
                 "UPLOADSERVER_IMAGE": "cdi-uploadserver:v1.65.0", "OVIRT_POPULATOR_IMAGE": "ovirt-populator:v1.65.0",
                 "UPLOADPROXY_SERVICE": "cdi-uploadproxy", "PULL_POLICY": "IfNotPresent",
                 # Where it reads the upload signers (CDI: /var/run/certs/<signer>/tls.{crt,key}).
                 **{f"UPLOAD_{role}_{part}_FILE": str(self.workdir / "pki" / signer / f"tls.{ext}")
                    for role, signer in zip(("SERVER", "CLIENT"), UPLOAD_SIGNERS, strict=True)
                    for part, ext in (("KEY", "key"), ("CERT", "crt"))},
                 "KUBECONFIG": str(self.kubeconfig)})
        # Ready once it leads and its config controller made the CDIConfig.
        self._wait(proc, lambda: json.loads(self._api_get("/apis/cdi.kubevirt.io/v1beta1/cdiconfigs/config")),
                   "cdi-controller (CDIConfig config)", timeout=120)

    def start_simulator(self) -> Proc:
        """The KubeVirt/CDI simulator; returns once its caches are synced and kube-apiserver finds its
        aggregated API (the APIService v1.subresources.kubevirt.io) Available."""
        # Ports stay the same across restarts: the APIService and export links keep pointing at them.
        self.virt_api_port = self.virt_api_port or free_port()
        log = self.logs / "simulator.log"
        offset = log.stat().st_size if log.exists() else 0
        proc = self.spawn("simulator", [sys.executable, "-m", "tests.cloud.sim", "--delay", str(self.sim_delay),
                                        "--virt-api-port", str(self.virt_api_port)],
                          env={**self.env(), "PYTHONPATH": str(REPO)})
        self._wait(proc, lambda: log.read_bytes()[offset:].find(b"simulator ready") >= 0, "the simulator")
        self._wait(proc, lambda: self._apiservice_available(), "APIService v1.subresources.kubevirt.io Available")
        return proc

    def _apiservice_available(self) -> bool:
        apiservice = json.loads(self._api_get("/apis/apiregistration.k8s.io/v1/apiservices/"
                                              "v1.subresources.kubevirt.io"))
        ca_bundle = (self.workdir / "virt-api-ca.crt").read_bytes()
        # A restarted simulator has a new CA: Available must be about the APIService that carries it.
        return base64.b64decode(apiservice["spec"].get("caBundle", "")) == ca_bundle and any(
            c["type"] == "Available" and c["status"] == "True" for c in apiservice.get("status", {}).get(
                "conditions", []))

    def start_operator(self, name: str = "operator", extra_env: dict[str, str] | None = None,
                       args: tuple[str, ...] = ()) -> Proc:
        """`kova run` against this cloud, with short retry delays; returns once its liveness probe answers."""
        port, metrics = free_port(), free_port()
        proc = self.spawn(name, [sys.executable, "-m", "kova.cli", "run", *args,
                                 "--liveness", f"http://{LOOPBACK}:{port}/healthz",
                                 "--metrics-address", LOOPBACK, "--metrics-port", str(metrics)],
                          env={**self.env(), "KOVA_ERROR_BACKOFFS": "0.5,1,2",
                               "KOVA_IMPORT_RETRY_DELAY": "1", "PYTHONPATH": str(REPO / "operator"),
                               **(extra_env or {})})
        proc.ports = {"liveness": port, "metrics": metrics}
        self._wait(proc, lambda: _status(f"http://{LOOPBACK}:{port}/healthz") == 200,
                   "the operator's liveness endpoint", timeout=60)
        return proc

    def start_api(self, kubeconfig: Path, name: str = "api", extra_env: dict[str, str] | None = None,
                  port: int = 0) -> Proc:
        """`kova api` against this cloud (its own account from `kubeconfig`), on `port` (or a free one); returns
        once it answers."""
        port = port or free_port()
        proc = self.spawn(name, [sys.executable, "-m", "kova.cli", "api", "--listen", f"{LOOPBACK}:{port}",
                                 "--kubeconfig", str(kubeconfig)],
                          env={**self.env(), "PYTHONPATH": str(REPO / "operator"), **(extra_env or {})})
        proc.ports = {"http": port}
        self._wait(proc, lambda: _status(f"http://{LOOPBACK}:{port}/identity/v3") == 200, "kova api", timeout=60)
        return proc

    def api_kubeconfig(self, namespace: str = "kova-system") -> Path:
        """The chart's `kova api` ServiceAccount, its roles and the aggregated image roles, installed; a
        kubeconfig with that account's token (the API runs with what `helm install` gives it, no more)."""
        rendered = subprocess.run(
            [binary("helm"), "template", "kova", str(REPO / "charts" / "kova"), "--namespace", namespace,
             "--show-only", "templates/api.yaml", "--show-only", "templates/image-roles.yaml",
             "--show-only", "templates/compute-roles.yaml"],
            capture_output=True, text=True, check=True).stdout
        docs = [d for d in yaml.safe_load_all(rendered) if d and d["kind"] not in ("Deployment", "Service")]
        self.kubectl("create", "namespace", namespace, check=False)
        self.kubectl("apply", "-f", "-", input=yaml.safe_dump_all(docs))
        token = self.kubectl("-n", namespace, "create", "token", "kova-api", "--duration=24h").strip()
        path = self.workdir / "api.kubeconfig"
        path.write_text(yaml.safe_dump(kubeconfig_dict(
            self.api_url, (self.workdir / "pki" / "ca.crt").read_text(), token=token, user="kova-api")))
        return path

    def tenant_token(self, namespace: str, role: str = "edit", name: str | None = None) -> str:
        """A token of a ServiceAccount bound to the built-in `role` (edit, view, or none) in `namespace`: an
        OpenStack user of that project; or to `kova-admin` in every namespace: an OpenStack administrator."""
        name = name or f"os-{role}"
        self.kubectl("-n", namespace, "create", "serviceaccount", name)
        if role == "kova-admin":  # Keystone's admin in every project: a ClusterRoleBinding, as an operator grants it
            self.kubectl("create", "clusterrolebinding", f"{namespace}-{name}", "--clusterrole=kova-admin",
                         f"--serviceaccount={namespace}:{name}")
        elif role != "none":
            self.kubectl("-n", namespace, "create", "rolebinding", name, f"--clusterrole={role}",
                         f"--serviceaccount={namespace}:{name}")
        return self.kubectl("-n", namespace, "create", "token", name, "--duration=24h").strip()

    def install_kova_crds(self) -> None:
        self.kubectl("apply", "--server-side", "-f", str(REPO / "crds"))
        self.kubectl("wait", "--for=condition=Established", "--timeout=60s", "crd", "--all")

    # ----- clients -----
    def kubectl(self, *args: str, input: str | None = None, check: bool = True) -> str:
        res = subprocess.run([binary("kubectl"), f"--kubeconfig={self.kubeconfig}", *args], input=input,
                             capture_output=True, text=True, timeout=120)
        if check and res.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)} failed ({res.returncode}): {res.stderr.strip()}")
        return res.stdout if check else res.stdout + res.stderr

    def write_requests(self, *, kova_only: bool = False) -> Counter[tuple[str, str, str]]:
        """kube-apiserver's own count of write requests so far (apiserver_request_total), by (resource,
        subresource, verb): what tests and benchmarks measure Kova's API writes with. `kova_only`: without the
        writes the cluster's own components made (the real controllers patch VirtualMachines too), which
        kube-apiserver's audit log tells apart by user agent."""
        totals: Counter[tuple[str, str, str]] = Counter()
        if kova_only:
            totals.subtract(self.component_writes())
        for line in self._api_get("/metrics").splitlines():
            if not line.startswith("apiserver_request_total{"):
                continue
            labels = dict(re.findall(r'(\w+)="([^"]*)"', line.split("}")[0]))
            if labels.get("verb") in WRITE_VERBS:
                key = (labels.get("resource", ""), labels.get("subresource", ""), labels["verb"])
                totals[key] += int(float(line.rsplit(" ", 1)[1]))
        return +totals  # positive counts only

    def component_writes(self) -> Counter[tuple[str, str, str]]:
        """The writes so far of the cluster's own components (controllers, the simulated nodes), by (resource,
        subresource, verb as apiserver_request_total says it), from the audit log's user agents."""
        verbs = {"create": "POST", "update": "PUT", "patch": "PATCH", "delete": "DELETE",
                 "deletecollection": "DELETECOLLECTION"}
        out: Counter[tuple[str, str, str]] = Counter()
        for event in self.audit():
            if event.get("userAgent", "").split("/")[0] in COMPONENT_AGENTS and event.get("verb") in verbs:
                ref = event.get("objectRef") or {}
                out[(ref.get("resource", ""), ref.get("subresource", ""), verbs[event["verb"]])] += 1
        return out

    def _admin_tls(self) -> Any:
        import ssl

        pki = self.workdir / "pki"
        ctx = ssl.create_default_context(cafile=str(pki / "ca.crt"))
        ctx.load_cert_chain(str(pki / "admin.crt"), str(pki / "admin.key"))
        return ctx

    def _api_get(self, path: str) -> str:
        with urllib.request.urlopen(self.api_url + path, context=self._admin_tls(), timeout=5) as resp:
            return str(resp.read().decode())

    def watch(self, path: str, resource_version: str, timeout: int = 30) -> Iterator[dict[str, Any]]:
        """The objects of a watch on `path` (a collection, e.g. with a fieldSelector) from `resource_version`
        on: every version the API server stored after it, none missed however slow the reader."""
        sep = "&" if "?" in path else "?"
        url = f"{self.api_url}{path}{sep}watch=1&resourceVersion={resource_version}&timeoutSeconds={timeout}"
        with urllib.request.urlopen(url, context=self._admin_tls(), timeout=timeout + 5) as resp:
            for line in resp:
                if line.strip():
                    yield json.loads(line)["object"]

    # ----- the real virt-controller (issue 19; opt-in, tests/cloud/kubevirt.py) -----


# The simulator's CSI driver: the default class, as a cluster's storage vendor installs it.
STORAGE_CLASS: dict[str, Any] = {
    "apiVersion": "storage.k8s.io/v1", "kind": "StorageClass",
    "metadata": {"name": "sim-local", "annotations": {"storageclass.kubernetes.io/is-default-class": "true"}},
    "provisioner": "local.sim.kova.dev", "allowVolumeExpansion": True, "reclaimPolicy": "Delete",
    "volumeBindingMode": "Immediate",
}

# The simulator's second driver: storage that clones on its own side (tests/cloud/csi.py). Its CSIDriver
# object is what makes CDI fill its claims with populators and allows CSI clones.
CLONE_STORAGE: list[dict[str, Any]] = [
    {"apiVersion": "storage.k8s.io/v1", "kind": "StorageClass", "metadata": {"name": "sim-clone"},
     "provisioner": "clone.sim.kova.dev", "allowVolumeExpansion": True, "reclaimPolicy": "Delete",
     "volumeBindingMode": "Immediate"},
    {"apiVersion": "storage.k8s.io/v1", "kind": "CSIDriver", "metadata": {"name": "clone.sim.kova.dev"},
     "spec": {"attachRequired": False, "podInfoOnMount": False, "volumeLifecycleModes": ["Persistent"]}},
    {"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshotClass", "metadata": {"name": "sim-clone"},
     "driver": "clone.sim.kova.dev", "deletionPolicy": "Delete"},
]


def kubeconfig_dict(server: str, ca_pem: str, *, client_cert: str | None = None, client_key: str | None = None,
                    token: str | None = None, user: str = "admin") -> dict[str, Any]:
    def b64(s: str) -> str:
        return base64.b64encode(s.encode()).decode()

    creds: dict[str, str] = {"token": token} if token else {
        "client-certificate-data": b64(client_cert or ""), "client-key-data": b64(client_key or "")}
    return {
        "apiVersion": "v1", "kind": "Config", "current-context": "bench",
        "clusters": [{"name": "bench", "cluster": {"server": server, "certificate-authority-data": b64(ca_pem)}}],
        "users": [{"name": user, "user": creds}],
        "contexts": [{"name": "bench", "context": {"cluster": "bench", "user": user}}],
    }


def _get(url: str, ctx: Any) -> Any:
    with urllib.request.urlopen(url, timeout=2, context=ctx) as resp:
        return json.loads(resp.read())


def _status(url: str) -> int:
    with urllib.request.urlopen(url, timeout=2) as resp:
        return int(resp.status)
