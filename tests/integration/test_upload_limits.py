"""Uploads through `kova api` cannot hold it hostage (issue 17): a client that stops sending is dropped after
KOVA_UPLOAD_READ_TIMEOUT and its image goes back to `queued` with nothing kept, as in Glance; uploads at once
are bounded per project (413, Glance's image_count_uploading) and in all (503 with Retry-After); and uploads
that crawl never stall downloads or other calls."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import socket
import threading
import time
import urllib.request
import uuid
from collections.abc import Iterator

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import wait_for
from tests.integration.test_e2e import store_keys

pytestmark = pytest.mark.integration
MiB = 1 << 20
IDLE = 3  # KOVA_UPLOAD_READ_TIMEOUT of the API under test


@pytest.fixture(scope="module")
def port(cloud: LocalCloud) -> Iterator[int]:
    """A `kova api` of its own with small limits: 7 uploads at once (more than asyncio's default pool has
    threads on a small machine), 6 per project."""
    proc = cloud.start_api(cloud.api_kubeconfig(), name="api-upload-limits", extra_env={
        "KOVA_UPLOAD_READ_TIMEOUT": str(IDLE), "KOVA_MAX_UPLOADS": "7", "KOVA_MAX_UPLOADS_PER_PROJECT": "6"})
    yield proc.ports["http"]
    proc.popen.terminate()
    proc.popen.wait(timeout=30)


class Project:
    def __init__(self, cloud: LocalCloud, port: int, name: str) -> None:
        self.port, self.name = port, name
        self.token = cloud.tenant_token(name, "edit")

    def call(self, method: str, path: str, body: bytes | None = None,
             content_type: str = "application/json") -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        try:
            conn.request(method, f"/projects/{self.name}/image/v2{path}", body=body,
                         headers={"X-Auth-Token": self.token, "Content-Type": content_type})
            resp = conn.getresponse()
            return resp.status, dict(resp.headers), resp.read()
        finally:
            conn.close()

    def new_image(self) -> str:
        status, _, body = self.call("POST", "/images", json.dumps({"name": "up", "disk_format": "raw",
                                                                   "container_format": "bare"}).encode())
        assert status == 201, body
        return str(json.loads(body)["id"])

    def status(self, image_id: str) -> str:
        return str(json.loads(self.call("GET", f"/images/{image_id}")[2])["status"])

    def upload(self, image_id: str, data: bytes) -> tuple[int, dict[str, str], bytes]:
        return self.call("PUT", f"/images/{image_id}/file", data, "application/octet-stream")


class Held:
    """PUT /file over a raw socket that announces `length` bytes and sends them only when told."""

    def __init__(self, project: Project, image_id: str, length: int = MiB) -> None:
        self.sock = socket.create_connection(("127.0.0.1", project.port), timeout=30)
        self.sock.sendall(f"PUT /projects/{project.name}/image/v2/images/{image_id}/file HTTP/1.1\r\n"
                          f"Host: 127.0.0.1\r\nX-Auth-Token: {project.token}\r\n"
                          f"Content-Type: application/octet-stream\r\nContent-Length: {length}\r\n\r\n".encode())

    def answer(self) -> int:
        resp = http.client.HTTPResponse(self.sock)
        resp.begin()
        resp.read()
        return resp.status

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def projects(cloud: LocalCloud, port: int, namespace: str) -> Iterator[list[Project]]:
    others = [f"{namespace[:50]}-{x}{uuid.uuid4().hex[:4]}" for x in "bc"]
    for ns in others:
        cloud.kubectl("create", "namespace", ns)
    yield [Project(cloud, port, ns) for ns in (namespace, *others)]
    for ns in others:
        cloud.kubectl("delete", "namespace", ns, "--wait=false", check=False)


def test_an_upload_that_stops_sending_is_dropped_and_its_image_queued(cloud: LocalCloud,
                                                                      projects: list[Project]) -> None:
    a = projects[0]
    image = a.new_image()
    held = Held(a, image)
    try:
        held.sock.sendall(os.urandom(1000))
        start = time.monotonic()
        assert held.answer() == 408
        assert time.monotonic() - start < IDLE + 10
    finally:
        held.close()
    assert a.status(image) == "queued"
    assert store_keys(cloud, image) == (False, False, []), "nothing may stay in the store"
    data = os.urandom(MiB)
    assert a.upload(image, data)[0] == 204  # the image takes a good upload afterwards
    assert a.status(image) == "active"


def test_uploads_at_once_are_bounded_and_never_stall_other_calls(cloud: LocalCloud, projects: list[Project]) -> None:
    a, b, c = projects
    ready = b.new_image()
    data = os.urandom(MiB)
    assert b.upload(ready, data)[0] == 204
    held_a = [a.new_image() for _ in range(7)]
    held_b, lone_c = b.new_image(), c.new_image()
    held: list[Held] = []
    stop = threading.Event()

    def drip() -> None:  # a byte a second each: slow, never idle long enough to be dropped
        while not stop.wait(1):
            for h in list(held):
                with contextlib.suppress(OSError):
                    h.sock.sendall(b"\0")
    dripper = threading.Thread(target=drip, daemon=True)
    dripper.start()
    try:
        for image in held_a[:6]:
            held.append(Held(a, image))
            wait_for(lambda image=image: a.status(image) == "saving", 15, "the upload to be received")
        status, _, body = a.upload(held_a[6], data)
        assert status == 413 and b"image_count_uploading is over limit of 6" in body, body
        held.append(Held(b, held_b))  # another project still has room: 7 in all
        wait_for(lambda: b.status(held_b) == "saving", 15, "B's upload to be received")
        status, headers, body = c.upload(lone_c, data)
        assert status == 503 and headers.get("Retry-After") == "10" and b"KOVA_MAX_UPLOADS" in body, body
        # Seven uploads crawl; the API answers everything else at once, downloads included.
        start = time.monotonic()
        assert b.call("GET", "/images")[0] == 200
        req = urllib.request.Request(f"http://127.0.0.1:{b.port}/projects/{b.name}/image/v2/images/{ready}/file",
                                     headers={"X-Auth-Token": b.token})
        with urllib.request.urlopen(req, timeout=15) as resp:
            assert resp.read() == data
        assert time.monotonic() - start < 10
    finally:
        stop.set()
        dripper.join()
        for h in held:
            h.close()
    # Hung up on by their clients: back to queued, and the slots are free again.
    for image in held_a[:6]:
        wait_for(lambda image=image: a.status(image) == "queued", 30, "the image to be queued again")
    assert c.upload(lone_c, data)[0] == 204 and a.upload(held_a[6], data)[0] == 204
