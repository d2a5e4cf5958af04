"""The payload of KubeVirt's exporter pod (virt-exportserver, cmd/virt-exportserver in KubeVirt v1.7.0), for the
simulated kubelet: the real export controller makes the pod, its Service, certificate and token Secrets; this
does what its container would.

It serves, over HTTPS on the pod's address and port 8443 (a loopback address: tests/cloud/kubelet.py), with
the certificate from the Secret mounted at /cert (signed by the export CA, for the Service's name):

    /exportready                  200 once serving (the pod's readiness probe)
    $VOLUME<i>_EXPORT_RAW_URI      the claim mounted at $VOLUME<i>_EXPORT_PATH, as it is (disk.img)
    $VOLUME<i>_EXPORT_RAW_GZIP_URI the same, gzip-compressed and streamed (disk.img.gz)

`disk.img` is the claim's bytes (the simulator's volume file) with Content-Length and Range support, as
http.ServeContent sends them. The token, from the Secret mounted at /token (key `token`), goes in the
`x-kubevirt-export-token` header or query parameter; without it, or with another, the answer is 401 with an
empty body (pkg/storage/export/virt-exportserver/exportserver.go).
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import ssl
import tempfile
import threading
import time
import urllib.parse
import zlib
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud.pki import TLSHandler, TLSServer

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("virt-exportserver")
TOKEN = "x-kubevirt-export-token"
PORT = 8443
EXPORTER_LABEL = ("kubevirt.io.virt-export-service", "")  # any value: the export's name
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")


def mounted_secret(pod: dict[str, Any], mount_path: str) -> str:
    container = pod["spec"]["containers"][0]
    volume = next(m["name"] for m in container.get("volumeMounts") or [] if m["mountPath"] == mount_path)
    return str(next(v for v in pod["spec"]["volumes"] if v["name"] == volume)["secret"]["secretName"])


class Exporter:
    """One exporter pod's server."""

    def __init__(self, sim: Simulator, pod: dict[str, Any]) -> None:
        self.sim = sim
        self.ns = pod["metadata"]["namespace"]
        self.token_secret = mounted_secret(pod, "/token")
        self.cert_secret = mounted_secret(pod, "/cert")
        self.tokens: tuple[float, str | None] = (0.0, None)
        env = {e["name"]: e.get("value", "") for e in pod["spec"]["containers"][0].get("env") or []}
        mounts = {m["mountPath"]: m["name"] for m in pod["spec"]["containers"][0].get("volumeMounts") or []}
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in pod["spec"]["volumes"]
                  if v.get("persistentVolumeClaim")}
        self.files: dict[str, tuple[str, Path]] = {}  # URI path -> (raw | gzip, volume file)
        i = 0
        while f"VOLUME{i}_EXPORT_PATH" in env:
            claim = claims[mounts[env[f"VOLUME{i}_EXPORT_PATH"]]]
            path = sim.volumes / self.ns / f"{claim}.img"
            if env.get(f"VOLUME{i}_EXPORT_RAW_URI"):
                self.files[env[f"VOLUME{i}_EXPORT_RAW_URI"]] = ("raw", path)
            if env.get(f"VOLUME{i}_EXPORT_RAW_GZIP_URI"):
                self.files[env[f"VOLUME{i}_EXPORT_RAW_GZIP_URI"]] = ("gzip", path)
            i += 1

    def context(self) -> ssl.SSLContext:
        data = self.sim.rest("GET", f"/api/v1/namespaces/{self.ns}/secrets/{self.cert_secret}")["data"]
        with tempfile.TemporaryDirectory() as tmp:
            cert, key = Path(tmp) / "tls.crt", Path(tmp) / "tls.key"
            cert.write_bytes(base64.b64decode(data["tls.crt"]))
            key.write_bytes(base64.b64decode(data["tls.key"]))
            ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            ctx.load_cert_chain(cert, key)
        ctx.set_alpn_protocols(["http/1.1"])
        return ctx

    def token(self) -> str | None:
        """The export's token as the pod sees it (a mounted Secret: a change shows after a moment)."""
        if time.monotonic() - self.tokens[0] < 2:
            return self.tokens[1]
        try:
            data = self.sim.rest("GET", f"/api/v1/namespaces/{self.ns}/secrets/{self.token_secret}").get("data") or {}
            value: str | None = base64.b64decode(data["token"]).decode() if "token" in data else None
        except ApiException as e:
            if e.status != 404:
                raise
            value = None
        self.tokens = (time.monotonic(), value)
        return value


def run(sim: Simulator, stopped: threading.Event, pod: dict[str, Any]) -> tuple[int, str]:
    """The container: serve until the pod is deleted."""
    exporter = Exporter(sim, pod)

    class Handler(ExportHandler):
        app = exporter

    ip = sim.kubelet.pod_ip(pod)
    server = TLSServer(PORT, Handler, exporter.context(), host=ip)
    server.serve_in_thread(f"exporter {pod['metadata']['name']}")
    log.info("exporter %s/%s serving %s on https://%s:%d", exporter.ns, pod["metadata"]["name"],
             ", ".join(sorted(exporter.files)), ip, PORT)
    stopped.wait()
    server.shutdown()
    server.server_close()
    return 0, ""


class ExportHandler(TLSHandler):
    tls_log = log
    app: Exporter

    def empty(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        if url.path == "/exportready":
            self.empty(200)
            return
        served = self.app.files.get(url.path)
        if served is None:
            self.empty(404)
            return
        token = self.app.token()
        offered = [*urllib.parse.parse_qs(url.query).get(TOKEN, []), self.headers.get(TOKEN, "")]
        if not token or not any(hmac.compare_digest(o.encode(), token.encode()) for o in offered if o):
            self.empty(401)
            return
        kind, path = served
        if not path.is_file():
            self.empty(404)
            return
        if kind == "raw":
            self.raw(path)
        else:
            self.gzip(path)

    def raw(self, path: Path) -> None:
        size = path.stat().st_size
        start, end, code = 0, size - 1, 200
        wanted = _RANGE.match(self.headers.get("Range", ""))
        if wanted and (wanted[1] or wanted[2]):
            if wanted[1]:
                start, end = int(wanted[1]), min(int(wanted[2]) if wanted[2] else size - 1, size - 1)
            else:
                start = max(0, size - int(wanted[2]))
            if start > end:
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{size}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            code = 206
        self.send_response(code)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Accept-Ranges", "bytes")
        self.send_header("Content-Length", str(end - start + 1))
        if code == 206:
            self.send_header("Content-Range", f"bytes {start}-{end}/{size}")
        self.end_headers()
        if self.command == "HEAD":
            return
        with path.open("rb") as f:
            f.seek(start)
            left = end - start + 1
            while left > 0 and (chunk := f.read(min(left, 1 << 20))):
                self.wfile.write(chunk)
                left -= len(chunk)

    def gzip(self, path: Path) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        if self.command == "HEAD":
            return
        packer = zlib.compressobj(wbits=31)  # the gzip container

        def send(data: bytes) -> None:
            if data:
                self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
        with path.open("rb") as f:
            while chunk := f.read(1 << 20):
                send(packer.compress(chunk))
        send(packer.flush())
        self.wfile.write(b"0\r\n\r\n")

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        log.info("%s %s %s -> %s", self.client_address[0], self.command, self.path.split("?", 1)[0], code)

    def log_message(self, format: str, *args: Any) -> None:
        log.info("%s " + format, self.client_address[0], *args)
