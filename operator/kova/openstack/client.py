"""`kova image upload` and `kova image download`: the image API's own client (Glance v2 calls), with a
progress bar. The token is $KOVA_TOKEN or the kubeconfig's current user; the project is the namespace."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import secrets
import sys
import urllib.parse
import uuid
from collections.abc import Iterable, Iterator
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

    def find(self, name_or_id: str) -> dict[str, Any] | None:
        """The image `name_or_id` means for this project (see `choose`)."""
        quoted = urllib.parse.quote(name_or_id, safe="")
        found = list(self.json("GET", f"/images?name={quoted}&visibility=all")["images"])
        if _is_uuid(name_or_id):
            with contextlib.suppress(ClientError):  # not found, or not visible to this project
                found.append(self.json("GET", f"/images/{quoted}"))
        return choose(found, name_or_id, self.namespace)


def _is_uuid(text: str) -> bool:
    try:
        uuid.UUID(text)
    except ValueError:
        return False
    return True


def choose(images: list[dict[str, Any]], name_or_id: str, project: str) -> dict[str, Any] | None:
    """The image `name_or_id` means to `project`: the one with that id, whoever owns it; else the project's
    own image of that name. Another project's image is never taken by name: its public image of the same name
    would otherwise receive our upload, or be downloaded in place of ours."""
    for image in images:
        if image["id"] == name_or_id:
            return dict(image)
    mine = [i for i in images if i["name"] == name_or_id and i.get("owner") == project]
    if len(mine) > 1:
        ids = ", ".join(sorted(i["id"] for i in mine))
        raise ClientError(f"{len(mine)} images in project {project} are named {name_or_id!r} ({ids}): give the "
                          "id instead")
    return dict(mine[0]) if mine else None


def _explain(status: int, detail: str) -> str:
    what = {401: "the token was refused (expired, or not a token of this cluster)",
            403: "not allowed", 404: "not found", 409: "conflict", 413: "too large",
            415: "the data is not what its disk format says"}.get(status, f"HTTP {status}")
    return f"{what}: {detail}" if detail else what


def upload(api: ImageApi, name: str, path: Path, disk_format: str, container_format: str, *,
           stage: bool = False, resume: bool = False) -> dict[str, Any]:
    """Upload `path` as image `name` (created if missing): in one PUT; or, with `stage`, staged then imported
    (glance-direct), which a broken link does not undo: `resume` sends only what the stage lacks."""
    if not path.is_file():
        raise ClientError(f"{path}: no such file")
    image = api.find(name)
    if image is None:
        if resume:
            raise ClientError(f"no image {name!r} in project {api.namespace} to resume")
        image = api.json("POST", "/images", {"name": name, "disk_format": disk_format,
                                             "container_format": container_format, "visibility": "private"},
                         ok=(201,))
    elif image["status"] == "uploading" and resume:  # staged whole already: only its import is left
        api.call("POST", f"/images/{image['id']}/import", {"method": {"name": "glance-direct"}}, ok=(202,))[1].close()
        return dict(api.json("GET", f"/images/{image['id']}"))
    elif image["status"] != "queued":
        raise ClientError(f"image {name} ({image['id']}) is {image['status']}: its data cannot change; upload to a "
                          "new image")
    size = path.stat().st_size
    start = int(api.json("GET", f"/images/{image['id']}/stage")["size"]) if resume else 0
    if start > size:
        raise ClientError(f"the stage of {name} holds {start} bytes, more than {path} ({size}): not this file")
    headers = {"Content-Type": "application/octet-stream", "x-openstack-image-size": str(size)}
    if start:
        headers["Content-Range"] = f"bytes {start}-{size - 1}/{size}"
    with path.open("rb") as f, tqdm(total=size, initial=start, unit="B", unit_scale=True, unit_divisor=1024,
                                     desc=name, file=sys.stderr, disable=None) as bar:
        f.seek(start)

        def body() -> Iterator[bytes]:
            while data := f.read(CHUNK):
                bar.update(len(data))
                yield data
        target = "stage" if stage or resume else "file"
        _resp, conn = api.call("PUT", f"/images/{image['id']}/{target}", body(), ok=(204,), headers=headers)
        conn.close()
    if stage or resume:
        api.call("POST", f"/images/{image['id']}/import", {"method": {"name": "glance-direct"}}, ok=(202,))[1].close()
    return dict(api.json("GET", f"/images/{image['id']}"))


def download(api: ImageApi, name: str, out: BinaryIO | None, out_path: Path | None) -> int:
    """Write image `name`'s data to `out_path` (only once it matches the image's hash), or stream it to `out`."""
    image = api.find(name)
    if image is None:
        raise ClientError(f"no image {name!r} in project {api.namespace}")
    resp, conn = api.call("GET", f"/images/{image['id']}/file", ok=(200, 204))
    try:
        if resp.status == 204:
            raise ClientError(f"image {name} has no data yet (status {image['status']})")
        total = int(resp.headers.get("Content-Length") or 0) or None
        algo, expected = image.get("os_hash_algo") or "sha512", image.get("os_hash_value")
        with tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, desc=name, file=sys.stderr,
                  disable=None) as bar:
            def chunks() -> Iterator[bytes]:
                while True:
                    try:
                        data = resp.read(CHUNK)
                    except (OSError, http.client.HTTPException) as e:
                        raise ClientError(f"the download broke off: {str(e) or type(e).__name__}: try again") from e
                    if not data:
                        return
                    bar.update(len(data))
                    yield data
            if out_path is not None:
                return save(chunks(), out_path, algo, expected)
            assert out is not None
            return _copy(chunks(), out, algo, expected)
    finally:
        conn.close()


def save(chunks: Iterable[bytes], path: Path, algo: str, expected: str | None) -> int:
    """Write `chunks` to `path` if their `algo` digest is `expected` (when given); the byte count.

    The data goes to a temporary file beside `path` that replaces it only once complete and verified: a
    broken or corrupt download never leaves a file that looks like the image, nor destroys the one there."""
    try:
        if path.exists() and not path.is_file():  # /dev/null, a pipe: nothing to replace, write through
            with path.open("wb") as f:
                return _copy(chunks, f, algo, expected)
        path = path.resolve() if path.is_symlink() else path  # a link keeps pointing at the new data
        part = path.with_name(f".{path.name}.{secrets.token_hex(4)}.part")
        # 0o666 and the umask, as open() would make `path`; O_EXCL: never write through someone's file or link.
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            with open(fd, "wb") as f:
                done = _copy(chunks, f, algo, expected)
            os.replace(part, path)
        except BaseException:
            part.unlink(missing_ok=True)
            raise
        return done
    except OSError as e:
        raise ClientError(f"{path}: {e.strerror or e}") from e


def _copy(chunks: Iterable[bytes], target: BinaryIO, algo: str, expected: str | None) -> int:
    digest = hashlib.new(algo)
    done = 0
    for data in chunks:
        digest.update(data)
        target.write(data)
        done += len(data)
    if expected and digest.hexdigest() != expected:
        raise ClientError(f"the downloaded data does not match the image's {digest.name}: try again")
    return done
