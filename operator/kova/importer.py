"""Glance's web-download import: stream a URL into the object store once, verifying as it goes.

One pass over the bytes: they are read from HTTP, cut into multipart parts uploaded two at a time, and fed
to md5 and sha512 (and the expected hash's algorithm) on threads of their own (hashlib drops the GIL, so
they run beside the upload). Memory stays bounded by the part size, whatever the image size.

Nothing becomes visible before it is verified: the multipart upload is completed only when the length,
the expected hash and the format check pass, and aborted otherwise. The record written after it
(store.Blob) is what makes the image active. This module knows nothing of Kubernetes, so it can run in
the operator today and as a Job later (STYLE 6).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import urllib3

from kova import formats
from kova.store import Blob, ObjectStore

PART_SIZE = 16 * 1024 * 1024
CHUNK = 1024 * 1024
PERMANENT_HTTP = {400, 401, 403, 404, 410, 451}


class ImportFailed(Exception):
    """The source cannot give a good image (Glance kills the image)."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


class SourceUnavailable(Exception):
    """A failure that may pass (network, 5xx): try again later."""


class Cancelled(Exception):
    """The import was stopped from outside (the Image is being deleted, or the operator stops)."""


@dataclass
class ImportProgress:
    done: int = 0
    total: int | None = None


class _Hasher(threading.Thread):
    def __init__(self, algorithm: str) -> None:
        super().__init__(daemon=True, name=f"hash-{algorithm}")
        self.digest = hashlib.new(algorithm)
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=16)
        self.start()

    def run(self) -> None:
        while (chunk := self.queue.get()) is not None:
            self.digest.update(chunk)

    def result(self) -> str:
        self.queue.put(None)
        self.join()
        return self.digest.hexdigest()


def parse_checksum(value: str | None) -> tuple[str, str] | None:
    if not value:
        return None
    algorithm, _, digest = value.partition(":")
    return algorithm.lower(), digest.lower()


_default_http = urllib3.PoolManager(retries=False, timeout=urllib3.Timeout(connect=10, read=60))


def import_url(store: ObjectStore, uid: str, url: str, disk_format: str, checksum: str | None, *,
               progress: ImportProgress | None = None, cancelled: Callable[[], bool] = lambda: False,
               part_size: int = PART_SIZE, http: urllib3.PoolManager | None = None) -> Blob:
    progress = progress or ImportProgress()
    # An upload left open by an import that died (operator restart) is abandoned first: no orphans.
    for upload_id in store.pending_uploads(uid):
        store.abort(uid, upload_id)
    try:
        resp = (http or _default_http).request("GET", url, preload_content=False, enforce_content_length=True)
    except urllib3.exceptions.HTTPError as e:
        raise SourceUnavailable(f"GET {url}: {e}") from e
    try:
        if resp.status in PERMANENT_HTTP:
            raise ImportFailed("SourceNotFound" if resp.status in (404, 410) else "SourceRefused",
                               f"GET {url} answered HTTP {resp.status}")
        if resp.status != 200:
            raise SourceUnavailable(f"GET {url} answered HTTP {resp.status}")
        length = resp.headers.get("Content-Length")
        progress.total = int(length) if length and length.isdigit() else None
        return _stream(store, uid, url, resp, disk_format, parse_checksum(checksum), progress, cancelled,
                       part_size)
    finally:
        resp.release_conn()


def _stream(store: ObjectStore, uid: str, url: str, resp: Any, disk_format: str,
            expected: tuple[str, str] | None, progress: ImportProgress, cancelled: Callable[[], bool],
            part_size: int) -> Blob:
    hashers = {name: _Hasher(name) for name in {"md5", "sha512", *((expected[0],) if expected else ())}}
    upload_id = store.begin(uid, {"kova-source": url[:1024]})
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="upload")
    inflight: deque[Future[Any]] = deque()
    parts = []
    head = bytearray()
    tail = b""
    buffer: list[bytes] = []
    buffered = 0
    completed = False

    def flush() -> None:
        nonlocal buffer, buffered
        if len(inflight) >= 2:  # at most two parts uploading and one filling: bounded memory
            parts.append(inflight.popleft().result())
        data = b"".join(buffer)
        buffer, buffered = [], 0
        inflight.append(pool.submit(store.upload_part, uid, upload_id, len(parts) + len(inflight) + 1, data))

    try:
        while True:
            if cancelled():
                raise Cancelled("import stopped")
            try:
                chunk = resp.read(CHUNK)
            except urllib3.exceptions.ProtocolError as e:
                raise ImportFailed("SizeMismatch", f"the source sent {progress.done} bytes, fewer than its "
                                                   f"Content-Length {progress.total}: {e}") from e
            except urllib3.exceptions.HTTPError as e:
                raise SourceUnavailable(f"reading {url}: {e}") from e
            if not chunk:
                break
            for h in hashers.values():
                h.queue.put(chunk)
            if len(head) < formats.HEAD_BYTES:
                head += chunk[: formats.HEAD_BYTES - len(head)]
            tail = (tail + chunk)[-formats.TAIL_BYTES:]
            buffer.append(chunk)
            buffered += len(chunk)
            progress.done += len(chunk)
            if buffered >= part_size:
                flush()
        if buffered or (not inflight and not parts):
            flush()
        while inflight:
            parts.append(inflight.popleft().result())
        digests = {name: h.result() for name, h in hashers.items()}
        size = progress.done
        if progress.total is not None and size != progress.total:
            raise ImportFailed("SizeMismatch", f"the source sent {size} bytes, its Content-Length said "
                                               f"{progress.total}")
        if size == 0:
            raise ImportFailed("EmptyImage", f"GET {url} returned no data")
        if expected and digests[expected[0]] != expected[1]:
            raise ImportFailed("ChecksumMismatch", f"{expected[0]} of the data is {digests[expected[0]]}, "
                                                   f"expected {expected[1]}")
        found = formats.inspect(bytes(head), tail, size)
        problem = formats.check_declared(disk_format, found)
        if problem:
            raise ImportFailed("InvalidDiskFormat", problem)
        store.complete(uid, upload_id, parts)
        completed = True
        blob = Blob(size=size, md5=digests["md5"], sha512=digests["sha512"], sha256=digests.get("sha256"),
                    disk_format=found.format, virtual_size=found.virtual_size, source=url)
        store.write_record(uid, blob)
        return blob
    finally:
        for h in hashers.values():
            if h.is_alive():
                h.queue.put(None)
        pool.shutdown(wait=True, cancel_futures=True)
        if not completed:
            store.abort(uid, upload_id)
