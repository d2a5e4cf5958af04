"""The two pods of CDI's host-assisted clone (CDI v1.65.0), for the simulated kubelet: the real cdi-controller
makes them, their Secrets and the upload Service; this does what their containers would.

A clone of claim S (namespace A) into claim T (namespace B), on a StorageClass without a CSIDriver object:
CDI's upload controller makes, in B, the upload server pod `cdi-upload-T` (label `cdi.kubevirt.io:
cdi-upload-server`), its Secret (server certificate for the Service's names, client CA) and the headless
Service `cdi-upload-T`; once T's `cdi.kubevirt.io/storage.pod.ready` is "true", its clone controller makes,
in A, the cloner pod `<T's uid>-source-pod` (label `cdi.kubevirt.io: cdi-clone-source`) and then its Secret
(a client certificate named `A/S-B/T`).

- The upload server (cmd/cdi-uploadserver, pkg/uploadserver) serves HTTPS on the pod's address, port 8443,
  with the certificate of the Secret mounted at /etc/tls/: `/healthz` answers "OK" (the pod's readiness
  probe), a POST to /v1beta1/upload from a client whose certificate the client CA signed and names
  `$CLIENT_NAME` writes the claim's files (401 otherwise, 409 once done, 503 while busy). Then it exits 0
  with the JSON termination message CDI parses, `{"preallocationApplied":true,"message":"Clone Complete"}`
  (a filesystem-to-filesystem clone untars, which CDI counts as preallocated); past `$DEADLINE` with nothing
  received, `{"deadlinePassed":true,"message":"Deadline Passed"}`.
- The cloner (cmd/cdi-cloner, cloner_startup.sh) reads the claim mounted as `cdi-data-vol` and POSTs it to
  `$UPLOAD_URL` (https://cdi-upload-T.B.svc:8443/v1beta1/upload) with its client certificate, checking the
  server's against `$SERVER_CA_CERT`; the Service's name is resolved as cluster DNS would, to the ready pod
  its selector picks. While it copies it serves `kubevirt_cdi_clone_progress_total{ownerUID="$OWNER_UID"}`
  on https://<pod address>:8443/metrics (cdi-controller reads it into the DataVolume's progress). It exits 0
  with the plain termination message "Clone Complete"; when the POST fails, 255 with klog's last line
  ("Unexpected status code 500", "Error ... POSTing to ...").

The claim's files are the simulator's volume file `<volumes>/<namespace>/<claim>.img` (disk.img): it is copied
with its holes (tar -S), at its own size: a host-assisted clone does not grow disk.img to a larger target
(pkg/uploadserver fileToFileCloneProcessor only untars; UPLOAD_IMAGE_SIZE is not used). A source claim with no
file sends an empty archive: the target gets none. The copy takes `delay` seconds spread over the data, plus
the data at `rate` bytes a second (0: no limit); more data than the target's capacity fails as tar does
(500 "Saving stream failed: error unarchiving to /data: exit status 2"; kubelet restarts the cloner).

The body between the two simulated pods is not CDI's (snappy-compressed tar): the apparent size (8 bytes)
then each data extent as offset and length (8 bytes each) and its bytes. The upload server of a plain upload
(`virtctl image-upload` through cdi-uploadproxy, which the local cloud has not) gets ready and answers every
upload 500: only clones are modelled.

Registered by label in tests/cloud/sim.py, as the importer is: `run` for both labels. Each container waits for
the Secrets it names before it starts, as kubelet does.
"""

from __future__ import annotations

import base64
import datetime as dt
import errno
import http.client
import json
import logging
import os
import socket
import ssl
import struct
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud.importer import claim_of, env_of
from tests.cloud.kubelet import quantity
from tests.cloud.pki import TLSHandler, TLSServer, issue, name, new_key, server_context

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("cloner")
COMPONENT = "cdi.kubevirt.io"  # CDI's CDIComponentLabel
UPLOAD_SERVER_LABEL = (COMPONENT, "cdi-upload-server")  # common.UploadServerCDILabel
CLONE_SOURCE_LABEL = (COMPONENT, "cdi-clone-source")  # common.ClonerSourcePodName
PLAIN_UPLOAD_CLIENT = "client.upload-server.cdi.kubevirt.io"  # CLIENT_NAME of an upload pod that is no clone target
PORT = 8443  # the upload server's and the cloner's metrics port
UPLOAD_PATHS = ("/v1beta1/upload", "/v1alpha1/upload")  # common.SyncUploadPaths
CLONE_CONTENT_TYPES = ("filesystem-clone", "blockdevice-clone")  # the x-cdi-content-type of a clone
CERT_VOLUME = "tls-config"  # the upload pod's volume of its Secret, at /etc/tls/
PROGRESS_METRIC = "kubevirt_cdi_clone_progress_total"
COPY_DELAY = 0.5  # seconds a clone takes besides its data
COPY_RATE = float(1 << 30)  # bytes of data a second (0: no limit)
CHUNK = 1 << 20
_EXTENT = struct.Struct(">QQ")
_SIZE = struct.Struct(">Q")


def labels_of(pod: dict[str, Any]) -> dict[str, str]:
    return dict(pod["metadata"].get("labels") or {})


def plain_env(pod: dict[str, Any]) -> dict[str, str]:
    """The first container's literal environment (what needs no Secret)."""
    return {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or [] if "value" in e}


def is_clone_pod(pod: dict[str, Any]) -> bool:
    """A cloner pod, or the upload server pod of a clone target (not that of a plain upload, whose client is
    cdi-uploadproxy)."""
    component = labels_of(pod).get(COMPONENT)
    if component == CLONE_SOURCE_LABEL[1]:
        return True
    return component == UPLOAD_SERVER_LABEL[1] and plain_env(pod).get("CLIENT_NAME", "") != PLAIN_UPLOAD_CLIENT


def run(sim: Simulator, stopped: threading.Event, pod: dict[str, Any], delay: float | None = None,
        rate: float | None = None) -> tuple[int, str]:
    """One run of the pod's container, as kubelet's payload: (exit code, termination message)."""
    if labels_of(pod).get(COMPONENT) == CLONE_SOURCE_LABEL[1]:
        return run_cloner(sim, stopped, pod, COPY_DELAY if delay is None else delay,
                          COPY_RATE if rate is None else rate)
    return run_upload_server(sim, stopped, pod)


def secret_names(pod: dict[str, Any]) -> set[str]:
    """The Secrets the pod's container needs before it can start (environment and volumes)."""
    names = {str(v["secret"]["secretName"]) for v in pod["spec"].get("volumes") or [] if v.get("secret")}
    for var in pod["spec"]["containers"][0].get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            names.add(str(ref["name"]))
    return names


def wait_for_secrets(sim: Simulator, stopped: threading.Event, pod: dict[str, Any]) -> bool:
    """Wait as kubelet does for the Secrets a container needs (CDI makes the cloner's after its pod, the
    upload server's just after; a kubelet that holds such a pod Pending has waited already): False if the pod
    is deleted first."""
    ns, wanted = pod["metadata"]["namespace"], secret_names(pod)
    while wanted:
        for secret in sorted(wanted):
            try:
                sim.rest("GET", f"/api/v1/namespaces/{ns}/secrets/{secret}")
                wanted.discard(secret)
            except ApiException as e:
                if e.status != 404:
                    raise
        if wanted and stopped.wait(0.2):
            return False
    return True


def secret_data(sim: Simulator, namespace: str, secret: str) -> dict[str, bytes]:
    data = sim.rest("GET", f"/api/v1/namespaces/{namespace}/secrets/{secret}").get("data") or {}
    return {k: base64.b64decode(v) for k, v in data.items()}


def tls_files(directory: Path, cert: bytes, key: bytes) -> tuple[Path, Path]:
    """A certificate and key where ssl loads them from (files)."""
    cert_file, key_file = directory / "tls.crt", directory / "tls.key"
    cert_file.write_bytes(cert)
    key_file.write_bytes(key)
    key_file.chmod(0o600)
    return cert_file, key_file


def volume_file(sim: Simulator, namespace: str, claim: str) -> Path:
    return sim.volumes / namespace / f"{claim}.img"


def termination(**fields: Any) -> str:
    """common.TerminationMessage as Go's json.Marshal writes it (no spaces, its field order)."""
    order = ("scratchSpaceRequired", "preallocationApplied", "deadlinePassed", "vddkInfo", "labels", "message")
    return json.dumps({k: fields[k] for k in order if k in fields}, separators=(",", ":"))


# ----- the upload server -----
class Upload:
    """One upload server's state: what it writes, whom it accepts, whether it is done."""

    def __init__(self, sim: Simulator, pod: dict[str, Any]) -> None:
        self.ns = pod["metadata"]["namespace"]
        self.claim = claim_of(pod)
        self.target = volume_file(sim, self.ns, self.claim)
        self.client_name = plain_env(pod).get("CLIENT_NAME", "")
        pvc = sim.get_cached("persistentvolumeclaims", self.ns, self.claim) or sim.rest(
            "GET", f"/api/v1/namespaces/{self.ns}/persistentvolumeclaims/{self.claim}")
        self.capacity = int(quantity(((pvc.get("status") or {}).get("capacity") or {}).get("storage", "0")))
        self.lock = threading.Lock()
        self.busy = False
        self.done = threading.Event()

    def receive(self, body: Body) -> None:
        """Write the claim's files from a clone body; OSError with tar's words if they do not fit."""
        self.target.parent.mkdir(parents=True, exist_ok=True)
        if body.left == 0:  # an empty archive: nothing to write
            return
        part = self.target.with_name(f".{self.target.name}.clone")
        written = 0
        try:
            with part.open("wb") as out:
                out.truncate(_SIZE.unpack(body.read(_SIZE.size))[0])
                while body.left > 0:
                    offset, size = _EXTENT.unpack(body.read(_EXTENT.size))
                    written += size
                    if written > self.capacity:
                        raise OSError(errno.ENOSPC, "error unarchiving to /data: exit status 2")
                    out.seek(offset)
                    while size > 0:
                        chunk = body.read(min(size, CHUNK))
                        out.write(chunk)
                        size -= len(chunk)
            os.replace(part, self.target)
        finally:
            part.unlink(missing_ok=True)


class Body:
    """A request body of known length, read exactly."""

    def __init__(self, stream: Any, length: int) -> None:
        self.stream, self.left = stream, length

    def read(self, size: int) -> bytes:
        data = bytes(self.stream.read(min(size, self.left)))
        self.left -= len(data)
        if len(data) != size:
            raise OSError(errno.EPIPE, "unexpected EOF")
        return data

    def drain(self) -> None:
        while self.left > 0 and (data := self.stream.read(min(self.left, CHUNK))):
            self.left -= len(data)


class UploadHandler(TLSHandler):
    tls_log = log
    app: Upload

    def reply(self, code: int, body: bytes = b"") -> None:
        self.send_response(code)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        if urllib.parse.urlsplit(self.path).path == "/healthz":
            self.reply(200, b"OK")
        else:
            self.reply(404, b"404 page not found\n")

    def do_POST(self) -> None:
        if urllib.parse.urlsplit(self.path).path not in UPLOAD_PATHS:
            self.reply(404, b"404 page not found\n")
            return
        peer = self.request.getpeercert() or {}
        names = [v for rdn in peer.get("subject", ()) for k, v in rdn if k == "commonName"]
        if self.app.client_name not in names:  # no verified certificate, or not the one CDI made for this clone
            self.reply(401)
            return
        with self.app.lock:
            if self.app.busy:
                self.reply(503)
                return
            if self.app.done.is_set():
                self.reply(409)
                return
            self.app.busy = True
        try:
            self.upload()
        finally:
            with self.app.lock:
                self.app.busy = False

    def upload(self) -> None:
        body = Body(self.rfile, int(self.headers.get("Content-Length") or 0))
        if self.headers.get("x-cdi-content-type", "") not in CLONE_CONTENT_TYPES:
            body.drain()
            self.reply(500, b"Saving stream failed: the simulator takes clones only")
            return
        try:
            self.app.receive(body)
        except OSError as e:
            log.warning("upload %s/%s failed: %s", self.app.ns, self.app.claim, e)
            body.drain()  # Go's client reads the answer of a server that stopped reading early
            self.reply(500, f"Saving stream failed: {e.strerror or e}".encode())
            return
        self.reply(200)
        self.wfile.flush()
        self.app.done.set()

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        if self.path != "/healthz":
            log.info("%s %s %s -> %s", self.client_address[0], self.command, self.path, code)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s " + format, self.client_address[0], *args)


def deadline_of(pod: dict[str, Any]) -> float | None:
    """$DEADLINE (RFC 3339) as a time.time()."""
    value = plain_env(pod).get("DEADLINE")
    return dt.datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp() if value else None


def run_upload_server(sim: Simulator, stopped: threading.Event, pod: dict[str, Any]) -> tuple[int, str]:
    """The upload server's container: serve until the clone arrives (exit 0), the deadline passes or the pod
    is deleted."""
    if not wait_for_secrets(sim, stopped, pod):
        return 0, ""
    app = Upload(sim, pod)
    volume = next(v for v in pod["spec"]["volumes"] if v["name"] == CERT_VOLUME)
    secret = secret_data(sim, app.ns, volume["secret"]["secretName"])
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    with tempfile.TemporaryDirectory() as tmp:
        ctx.load_cert_chain(*tls_files(Path(tmp), secret["tls.crt"], secret["tls.key"]))
    ctx.load_verify_locations(cadata=secret["ca.crt"].decode())
    ctx.verify_mode = ssl.CERT_OPTIONAL  # tls.VerifyClientCertIfGiven: the readiness probe has none
    ctx.set_alpn_protocols(["http/1.1"])

    class Handler(UploadHandler):
        pass
    Handler.app = app
    ip = sim.kubelet.pod_ip(pod)
    server = TLSServer(PORT, Handler, ctx, host=ip)
    server.serve_in_thread(f"upload server {pod['metadata']['name']}")
    log.info("upload server %s/%s for %s on https://%s:%d", app.ns, pod["metadata"]["name"], app.client_name, ip,
             PORT)
    deadline = deadline_of(pod)
    try:
        while not app.done.is_set():
            if stopped.wait(0.1):
                return 0, ""
            if deadline is not None and time.time() >= deadline:
                with app.lock:
                    if not app.busy and not app.done.is_set():
                        return 0, termination(deadlinePassed=True, message="Deadline Passed")
    finally:
        server.shutdown()
        server.server_close()
    log.info("upload server %s/%s: clone of %s written", app.ns, pod["metadata"]["name"], app.client_name)
    return 0, termination(preallocationApplied=True, message="Clone Complete")


# ----- the cloner -----
def extents(path: Path) -> tuple[int, list[tuple[int, int]]]:
    """The file's apparent size and its data extents (offset, length), holes left out as tar -S leaves them."""
    with path.open("rb") as f:
        fd, size = f.fileno(), os.fstat(f.fileno()).st_size
        out, pos = [], 0
        while pos < size:
            try:
                start = os.lseek(fd, pos, os.SEEK_DATA)
            except OSError as e:
                if e.errno == errno.ENXIO:  # only a hole from here on
                    break
                return size, [(0, size)] if size else []  # no SEEK_DATA here: all of it is data
            end = os.lseek(fd, start, os.SEEK_HOLE)
            out.append((start, end - start))
            pos = end
    return size, out


class Progress:
    """The cloner's progress metric (pkg/monitoring/metrics/cdi-cloner), served while it copies."""

    _context: ssl.SSLContext | None = None
    _lock = threading.Lock()

    def __init__(self, owner: str) -> None:
        self.owner = owner
        self.percent = 0.0

    @classmethod
    def context(cls) -> ssl.SSLContext:
        """A self-signed certificate, as the cloner makes one for its metrics endpoint (CDI does not verify it)."""
        with cls._lock:
            if cls._context is None:
                key = new_key()
                cert = issue(name("cdi-cloner"), key, None, server=True)
                with tempfile.TemporaryDirectory() as tmp:
                    cls._context = server_context(cert, key, Path(tmp), "metrics")
            return cls._context

    def text(self) -> str:
        return (f"# HELP {PROGRESS_METRIC} The clone progress in percentage\n# TYPE {PROGRESS_METRIC} counter\n"
                f'{PROGRESS_METRIC}{{ownerUID="{self.owner}"}} {self.percent:g}\n')


class MetricsHandler(TLSHandler):
    tls_log = None
    progress: Progress

    def do_GET(self) -> None:
        body = self.progress.text().encode() if self.path.startswith("/metrics") else b"404 page not found\n"
        self.send_response(200 if self.path.startswith("/metrics") else 404)
        self.send_header("Content-Type", "text/plain; version=0.0.4")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: Any) -> None:
        pass


class CloneFailed(Exception):
    """The cloner's fatal error: klog.Fatalf, exit 255, its line the termination message."""


def resolve(sim: Simulator, host: str) -> str:
    """Cluster DNS for `<service>.<namespace>.svc`: a headless Service's ready pod's address."""
    service, _, rest = host.partition(".")
    ns = rest.split(".")[0]
    try:
        spec = sim.rest("GET", f"/api/v1/namespaces/{ns}/services/{service}").get("spec") or {}
    except ApiException as e:
        if e.status != 404:
            raise
        spec = {}
    selector: dict[str, str] = spec.get("selector") or {}
    for pod in sim.cached("pods") if selector else []:
        status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if (pod["metadata"]["namespace"] == ns and ready and status.get("podIP")
                and all(labels_of(pod).get(k) == v for k, v in selector.items())):
            return str(status["podIP"])
    raise CloneFailed(f"lookup {host}: no such host")


def post(sim: Simulator, stopped: threading.Event, env: dict[str, str], source: Path, progress: Progress,
         delay: float, rate: float) -> tuple[int, bytes]:
    """POST the claim's files to the upload server, paced: its status and body."""
    url = urllib.parse.urlsplit(env["UPLOAD_URL"])
    host, port = url.hostname or "", url.port or 443
    size, data = extents(source) if source.is_file() else (0, [])
    total = sum(length for _, length in data)
    length = (_SIZE.size + sum(_EXTENT.size + n for _, n in data)) if source.is_file() else 0
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_verify_locations(cadata=env["SERVER_CA_CERT"])
    with tempfile.TemporaryDirectory() as tmp:
        ctx.load_cert_chain(*tls_files(Path(tmp), env["CLIENT_CERT"].encode(), env["CLIENT_KEY"].encode()))
    address = resolve(sim, host)
    started = time.monotonic()

    def pace(upto: int) -> None:
        """Wait until `upto` bytes of data may have been sent."""
        share = upto / total if total else 1.0
        due = started + delay * share + (upto / rate if rate > 0 else 0.0)
        if stopped.wait(max(0.0, due - time.monotonic())):
            raise CloneFailed("terminated")

    with socket.create_connection((address, port), timeout=30) as raw, \
            ctx.wrap_socket(raw, server_hostname=host) as tls:
        head = (f"POST {url.path or '/'} HTTP/1.1\r\nHost: {url.netloc}\r\nUser-Agent: Go-http-client/1.1\r\n"
                f"Content-Length: {length}\r\nx-cdi-content-type: filesystem-clone\r\n\r\n")
        tls.sendall(head.encode())
        sent = 0
        if length:
            tls.sendall(_SIZE.pack(size))
            with source.open("rb") as f:
                for offset, n in data:
                    tls.sendall(_EXTENT.pack(offset, n))
                    f.seek(offset)
                    while n > 0:
                        chunk = f.read(min(n, CHUNK))
                        pace(sent + len(chunk))  # the last byte lands when the copy's time is up
                        tls.sendall(chunk)
                        n -= len(chunk)
                        sent += len(chunk)
                        progress.percent = round(100 * sent / total, 2)
        pace(sent)
        response = http.client.HTTPResponse(tls)
        response.begin()
        return response.status, response.read()


def run_cloner(sim: Simulator, stopped: threading.Event, pod: dict[str, Any], delay: float = COPY_DELAY,
               rate: float = COPY_RATE) -> tuple[int, str]:
    """The cloner's container: copy the source claim to the upload server."""
    if not wait_for_secrets(sim, stopped, pod):
        return 0, ""
    env = env_of(sim, pod)
    ns = pod["metadata"]["namespace"]
    source = volume_file(sim, ns, claim_of(pod))
    progress = Progress(env.get("OWNER_UID", ""))

    class Handler(MetricsHandler):
        pass
    Handler.progress = progress
    metrics = TLSServer(PORT, Handler, Progress.context(), host=sim.kubelet.pod_ip(pod))
    metrics.serve_in_thread(f"cloner metrics {pod['metadata']['name']}")
    url = env.get("UPLOAD_URL", "")
    try:
        status, body = post(sim, stopped, env, source, progress, delay, rate)
    except CloneFailed as e:
        if stopped.is_set():
            return 0, ""
        return 255, f"Error Post \"{url}\": dial tcp: {e} POSTing to {url}"
    except (OSError, http.client.HTTPException) as e:
        if stopped.is_set():
            return 0, ""
        reason = f"tls: failed to verify certificate: {e}" if isinstance(e, ssl.SSLCertVerificationError) else e
        return 255, f"Error Post \"{url}\": {reason} POSTing to {url}"
    finally:
        metrics.shutdown()
        metrics.server_close()
    if not 200 <= status < 300:
        log.warning("cloner %s/%s: upload server answered %d: %s", ns, pod["metadata"]["name"], status,
                    body.decode(errors="replace"))
        return 255, f"Unexpected status code {status}"
    log.info("cloner %s/%s: %s sent to %s", ns, pod["metadata"]["name"], source.name, url)
    preallocation = env.get("PREALLOCATION") == "true"
    return 0, "Clone Complete" + (", Preallocation applied" if preallocation else "")
