"""VirtualMachineExport downloads, as virt-exportproxy and the exporter pods serve them, on 127.0.0.1.

The export controller (tests/cloud/sim.py) decides when an export is Ready and which claims it exports; this
server serves those, and nothing else, at the paths of KubeVirt's export proxy:

    https://127.0.0.1:<port>/api/export.kubevirt.io/v1/namespaces/<ns>/<export>/volumes/<claim>/disk.img
                                                                              .../volumes/<claim>/disk.img.gz

`disk.img` is the claim's bytes (the simulator's volume file) with Content-Length and Range support, as
http.ServeContent sends them; `disk.img.gz` is the same gzip-compressed, streamed (chunked). The token, from
the Secret `status.tokenSecretRef` names (key `token`), goes in the `x-kubevirt-export-token` header or
query parameter; without it, or with another, the answer is 401 with an empty body. An export that is gone
or not Ready is not served (404). The certificate is signed by a CA whose PEM is `links.*.cert`.
"""

from __future__ import annotations

import base64
import hmac
import logging
import re
import threading
import time
import urllib.parse
import zlib
from http.server import BaseHTTPRequestHandler
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud.pki import LOOPBACK, TLSServer, leaf, new_ca, pem_cert, server_context

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("virt-exportproxy")
TOKEN = "x-kubevirt-export-token"
_PATH = re.compile(r"^/api/export\.kubevirt\.io/v1/namespaces/(?P<ns>[^/]+)/(?P<name>[^/]+)/volumes/"
                   r"(?P<volume>[^/]+)/(?P<file>disk\.img|disk\.img\.gz)$")
_RANGE = re.compile(r"^bytes=(\d*)-(\d*)$")
Published = dict[tuple[str, str], tuple[str, list[str], str]]  # (ns, export) → (uid, claims, token secret)


class ExportServer:
    def __init__(self, sim: Simulator, port: int, state_dir: Path) -> None:
        self.sim = sim
        self.port = port
        self.state_dir = state_dir
        self.lock = threading.Lock()
        self.published: Published = {}
        self.tokens: dict[tuple[str, str], tuple[float, str | None]] = {}
        self.ca_pem = ""

    def start(self) -> None:
        ca = new_ca("kubevirt.io:export-ca")
        serving = leaf("virt-exportproxy.kubevirt.svc", ca, server=True, dns=("virt-exportproxy.kubevirt.svc",))
        self.ca_pem = pem_cert(ca[0]).decode()
        (self.state_dir / "export-ca.crt").write_text(self.ca_pem)
        server = self

        class Handler(ExportHandler):
            app = server

        TLSServer(self.port, Handler, server_context(*serving, self.state_dir / "virt-exportproxy", "tls")
                  ).serve_in_thread("virt-exportproxy")
        self.sim.exports = self
        self.sim.export_links = self.links
        log.info("export server on https://%s:%d", LOOPBACK, self.port)

    def serve(self, ns: str, name: str, entry: tuple[str, list[str], str]) -> None:
        """Serve one export from now on: the controller calls this before it writes Ready, as KubeVirt's
        exporter pod is ready before the export's status says so."""
        with self.lock:
            self.published[(ns, name)] = entry

    def publish(self, ready: Published) -> None:
        with self.lock:
            gone = set(self.published) - set(ready)
            self.published = dict(ready)
        for ns, name in sorted(gone):
            log.info("export %s/%s is no longer served", ns, name)

    def links(self, export: dict[str, Any], claims: list[str]) -> dict[str, Any]:
        md = export["metadata"]
        base = f"https://{LOOPBACK}:{self.port}/api/export.kubevirt.io/v1/namespaces/{md['namespace']}/{md['name']}"
        link = {"cert": self.ca_pem, "volumes": [
            {"name": claim, "formats": [{"format": "raw", "url": f"{base}/volumes/{claim}/disk.img"},
                                        {"format": "gzip", "url": f"{base}/volumes/{claim}/disk.img.gz"}]}
            for claim in claims]}
        # Both are the proxy's: the internal link of a real cluster names the exporter's Service instead.
        return {"internal": link, "external": link}

    def token(self, ns: str, secret: str) -> str | None:
        """The export's token as the exporter pod sees it (a mounted Secret: a change shows after a moment)."""
        key = (ns, secret)
        cached = self.tokens.get(key)
        if cached and time.monotonic() - cached[0] < 2:
            return cached[1]
        try:
            data = self.sim.rest("GET", f"/api/v1/namespaces/{ns}/secrets/{secret}").get("data") or {}
            value: str | None = base64.b64decode(data["token"]).decode() if "token" in data else None
        except ApiException as e:
            if e.status != 404:
                raise
            value = None
        self.tokens[key] = (time.monotonic(), value)
        return value


class ExportHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    app: ExportServer

    def handle(self) -> None:
        try:
            self.request.do_handshake()
        except OSError as e:
            log.warning("%s: TLS handshake failed: %s", self.client_address[0], e)
            return
        super().handle()

    def empty(self, code: int) -> None:
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_HEAD(self) -> None:
        self.do_GET()

    def do_GET(self) -> None:
        url = urllib.parse.urlsplit(self.path)
        m = _PATH.match(url.path)
        with self.app.lock:
            entry = self.app.published.get((m["ns"], m["name"])) if m else None
        if m is None or entry is None or m["volume"] not in entry[1]:
            self.empty(404)
            return
        token = self.app.token(m["ns"], entry[2])
        offered = [*urllib.parse.parse_qs(url.query).get(TOKEN, []), self.headers.get(TOKEN, "")]
        if not token or not any(hmac.compare_digest(o.encode(), token.encode()) for o in offered if o):
            self.empty(401)
            return
        path = self.app.sim.volumes / m["ns"] / f"{m['volume']}.img"
        if not path.is_file():
            self.empty(404)
            return
        if m["file"] == "disk.img":
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
