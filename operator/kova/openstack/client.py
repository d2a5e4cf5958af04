"""`kova image upload` and `kova image download`: the image API's own client (Glance v2 calls), with a
progress bar. The token is $KOVA_TOKEN or the kubeconfig's current user; the project is the namespace."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import sys
import urllib.parse
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

from kubernetes import client as k8s_client
from kubernetes import config as k8s_config
from tqdm import tqdm

CHUNK = 1 << 20


class ClientError(Exception):
    """A failure said in one line, for the command line."""


def credentials(namespace: str | None) -> tuple[str, str]:
    """(token, namespace): $KOVA_TOKEN or the kubeconfig's current user (the Kubernetes client resolves it:
    a token, a token file or an exec plugin), and --namespace or the current context's."""
    token = os.environ.get("KOVA_TOKEN")
    path = os.environ.get("KUBECONFIG", "").split(os.pathsep)[0] or str(Path.home() / ".kube" / "config")
    if Path(path).is_file() and (not token or not namespace):
        try:
            _, active = k8s_config.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
            namespace = namespace or (active.get("context") or {}).get("namespace")
            if not token:
                conf = k8s_client.Configuration()
                k8s_config.load_kube_config(  # type: ignore[no-untyped-call]
                    config_file=path, client_configuration=conf, persist_config=False)
                token = str((conf.api_key or {}).get("BearerToken") or "").removeprefix("Bearer ") or None
        except k8s_config.ConfigException as e:
            raise ClientError(f"{path}: {e}") from e
    if not token:
        raise ClientError("no token: set KOVA_TOKEN (e.g. KOVA_TOKEN=$(kubectl create token NAME)), or use a "
                          "kubeconfig whose user has a token")
    return token, namespace or "default"


class ImageApi:
    def __init__(self, api: str, token: str, namespace: str) -> None:
        url = urllib.parse.urlsplit(api.rstrip("/"))
        if url.scheme not in ("http", "https") or not url.netloc:
            raise ClientError(f"--api {api!r} is not an http(s) URL of kova api (or set KOVA_API_URL)")
        self.url, self.token, self.namespace = url, token, namespace
        self.prefix = f"{url.path}/projects/{namespace}/image/v2"

    def _connect(self) -> http.client.HTTPConnection:
        cls = http.client.HTTPSConnection if self.url.scheme == "https" else http.client.HTTPConnection
        return cls(self.url.netloc, timeout=300)

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None,
             ok: tuple[int, ...] = (200,)) -> tuple[http.client.HTTPResponse, http.client.HTTPConnection]:
        conn = self._connect()
        hdrs = {"X-Auth-Token": self.token, "Accept": "application/json", **(headers or {})}
        if isinstance(body, (dict, list)):
            body = json.dumps(body).encode()
            hdrs.setdefault("Content-Type", "application/json")
        try:
            conn.request(method, self.prefix + path, body=body, headers=hdrs,
                         encode_chunked=body is not None and not isinstance(body, bytes))
            resp = conn.getresponse()
        except OSError as e:
            raise ClientError(f"cannot reach kova api at {self.url.geturl()}: {e}") from e
        if resp.status not in ok:
            detail = resp.read().decode(errors="replace")
            with contextlib.suppress(ValueError):
                detail = json.loads(detail).get("message", detail)
            conn.close()
            raise ClientError(_explain(resp.status, detail.strip().splitlines()[-1] if detail.strip() else ""))
        return resp, conn

    def json(self, method: str, path: str, body: Any = None, ok: tuple[int, ...] = (200,)) -> Any:
        resp, conn = self.call(method, path, body, ok=ok)
        try:
            return json.loads(resp.read() or b"null")
        finally:
            conn.close()

    def find(self, name: str) -> dict[str, Any] | None:
        """The image named `name` (its Glance name, or an Image's name) or with that id, in this project."""
        quoted = urllib.parse.quote(name)
        found = self.json("GET", f"/images?name={quoted}&visibility=all")["images"]
        mine = [i for i in found if i["owner"] == self.namespace] or found
        if len(mine) > 1:
            raise ClientError(f"{len(mine)} images are named {name!r}; give the id instead")
        if mine:
            return dict(mine[0])
        try:
            return dict(self.json("GET", f"/images/{quoted}"))
        except ClientError:
            return None


def _explain(status: int, detail: str) -> str:
    what = {401: "the token was refused (expired, or not a token of this cluster)",
            403: "not allowed", 404: "not found", 409: "conflict", 413: "too large",
            415: "the data is not what its disk format says"}.get(status, f"HTTP {status}")
    return f"{what}: {detail}" if detail else what


def upload(api: ImageApi, name: str, path: Path, disk_format: str, container_format: str) -> dict[str, Any]:
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    image = api.find(name)
    if image is None:
        image = api.json("POST", "/images", {"name": name, "disk_format": disk_format,
                                             "container_format": container_format, "visibility": "private"},
                         ok=(201,))
    elif image["status"] != "queued":
        raise ClientError(f"image {name} ({image['id']}) is {image['status']}: its data cannot change; upload to a "
                          "new image")
    size = path.stat().st_size
    with path.open("rb") as f, tqdm(total=size, unit="B", unit_scale=True, unit_divisor=1024, desc=name,
                                     file=sys.stderr, disable=None) as bar:
        def body() -> Iterator[bytes]:
            while data := f.read(CHUNK):
                bar.update(len(data))
                yield data
        _resp, conn = api.call("PUT", f"/images/{image['id']}/file", body(), ok=(204,), headers={
            "Content-Type": "application/octet-stream", "x-openstack-image-size": str(size)})
        conn.close()
    return dict(api.json("GET", f"/images/{image['id']}"))


def download(api: ImageApi, name: str, out: BinaryIO | None, out_path: Path | None) -> int:
    image = api.find(name)
    if image is None:
        raise ClientError(f"no image {name!r} in project {api.namespace}")
    resp, conn = api.call("GET", f"/images/{image['id']}/file", ok=(200, 204))
    try:
        if resp.status == 204:
            raise ClientError(f"image {name} has no data yet (status {image['status']})")
        digest = hashlib.new(image.get("os_hash_algo") or "sha512")
        total = int(resp.headers.get("Content-Length") or 0) or None
        target = out_path.open("wb") if out_path else out
        assert target is not None
        done = 0
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                  disable=None) as bar:
            while data := resp.read(CHUNK):
                digest.update(data)
                target.write(data)
                done += len(data)
                bar.update(len(data))
        if out_path:
            target.close()
        if image.get("os_hash_value") and digest.hexdigest() != image["os_hash_value"]:
            raise ClientError(f"the downloaded data does not match the image's {digest.name}: try again")
        return done
    finally:
        conn.close()
