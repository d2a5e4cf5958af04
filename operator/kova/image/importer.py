"""Glance's web-download import: stream a URL into the object store once, verifying as it goes.

One pass over the bytes: they are read from HTTP, cut into multipart parts uploaded two at a time, and fed
to md5 and sha512 (and the expected hash's algorithm) on threads of their own (hashlib drops the GIL, so
they run beside the upload). Memory stays bounded by the part size, whatever the image size.

Nothing becomes visible before it is verified: the multipart upload is completed only when the length,
the expected hash, the size cap and Glance's format and safety checks (kova.image.formats) pass, and
aborted otherwise. The record written after it (kova.image.blob) is what makes the image active. The source
is opened by a `Source` (kova.adapters.http: through the import filter, which refuses what a tenant should
not reach) and written to a `Store` (kova.adapters.store). This module knows nothing of Kubernetes, so it
can run in the operator today and as a Job later (STYLE 6).
"""

from __future__ import annotations

import hashlib
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Protocol

import urllib3

from kova.api.errors import Refusal
from kova.image import formats
from kova.image.blob import Blob
from kova.image.filter import NotAllowed

PART_SIZE = 16 * 1024 * 1024
MAX_PARTS = 10_000  # S3's limit on the parts of one multipart upload
CHUNK = 1024 * 1024
PERMANENT_HTTP = {400, 401, 403, 404, 410, 451}
DEFAULT_SIZE_CAP = 1 << 40  # Glance's image_size_cap: 1 TiB


class ImportFailed(Refusal):
    """The source cannot give a good image (Glance kills the image)."""


class SourceUnavailable(Exception):
    """A failure that may pass (network, 5xx): try again later."""


class Cancelled(Exception):
    """The import was stopped from outside (the Image is being deleted, or the operator stops)."""


class Store(Protocol):
    """The object store as the pipeline writes it: a multipart upload, then the record (kova.adapters.store)."""

    def pending_uploads(self, uid: str) -> list[str]: ...
    def begin(self, uid: str, metadata: dict[str, str]) -> str: ...
    def upload_part(self, uid: str, upload_id: str, number: int, data: bytes) -> Any: ...
    def complete(self, uid: str, upload_id: str, parts: list[Any]) -> None: ...
    def abort(self, uid: str, upload_id: str) -> None: ...
    def write_record(self, uid: str, blob: Blob) -> None: ...


class Source(Protocol):
    """Opens a GET (kova.adapters.http); raises NotAllowed for what the import filter refuses."""

    def open(self, url: str) -> Any: ...


@dataclass
class ImportProgress:
    done: int = 0
    total: int | None = None


class _Hasher(threading.Thread):
    def __init__(self, algorithm: str) -> None:
        super().__init__(daemon=True, name=f"hash-{algorithm}")
        self.digest = hashlib.new(algorithm)
        # 4 chunks of slack: the hashes (~330 MiB/s) outrun the import; more would only hold memory.
        self.queue: queue.Queue[bytes | None] = queue.Queue(maxsize=4)
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


def part_size_for(total: int | None, minimum: int = PART_SIZE) -> int:
    """Parts of `minimum` bytes reach MAX_PARTS times that (156 GiB for 16 MiB); a larger announced image
    gets parts just large enough, in whole MiB (each import holds up to three parts in memory)."""
    if total is None:
        return minimum
    return max(minimum, -(-total // (MAX_PARTS << 20)) << 20)


def import_url(store: Store, uid: str, url: str, disk_format: str, checksum: str | None, *,
               fetcher: Source, size_cap: int = DEFAULT_SIZE_CAP,
               progress: ImportProgress | None = None, cancelled: Callable[[], bool] = lambda: False,
               part_size: int = PART_SIZE) -> Blob:
    progress = progress or ImportProgress()
    # An upload left open by an import that died (operator restart) is abandoned first: no orphans.
    for upload_id in store.pending_uploads(uid):
        store.abort(uid, upload_id)
    try:
        resp = fetcher.open(url)
    except NotAllowed as e:
        raise ImportFailed("SourceNotAllowed", f"the import filter refuses the source: {e}") from e
    except (urllib3.exceptions.HTTPError, OSError) as e:
        raise SourceUnavailable(f"GET {url}: {e}") from e
    try:
        if resp.status in PERMANENT_HTTP:
            raise ImportFailed("SourceNotFound" if resp.status in (404, 410) else "SourceRefused",
                               f"GET {url} answered HTTP {resp.status}")
        if resp.status != 200:
            raise SourceUnavailable(f"GET {url} answered HTTP {resp.status}")
        length = resp.headers.get("Content-Length")
        progress.total = int(length) if length and length.isdigit() else None
        if progress.total is not None and progress.total > size_cap:
            raise ImportFailed("SizeExceeded", f"the source announces {progress.total} bytes, over the image size "
                                               f"cap of {size_cap} bytes (KOVA_IMAGE_SIZE_CAP)")
        part_size = part_size_for(progress.total, part_size)
        chunks = _read(resp, url, progress, cancelled, size_cap)
        return _stream(store, uid, url, chunks, disk_format, parse_checksum(checksum), progress, part_size)
    finally:
        # Hang up rather than hand the connection back: after a refusal or a cut-off the source may still
        # be sending (a chunked source that never ends), and each hop has a pool of its own anyway.
        resp.close()


def import_chunks(store: Store, uid: str, chunks: Iterator[bytes], disk_format: str, *, source: str,
                  size: int | None = None, size_cap: int = DEFAULT_SIZE_CAP, progress: ImportProgress | None = None,
                  part_size: int = PART_SIZE) -> Blob:
    """Glance's image-upload: bytes sent by a client (the image API) through the same verified pipeline as
    web-download (hashes, format and safety checks, size cap; nothing visible before it is verified)."""
    progress = progress or ImportProgress(total=size)
    for upload_id in store.pending_uploads(uid):
        store.abort(uid, upload_id)
    if size is not None and size > size_cap:
        raise ImportFailed("SizeExceeded", f"the upload announces {size} bytes, over the image size cap of "
                                           f"{size_cap} bytes (KOVA_IMAGE_SIZE_CAP)")

    def capped() -> Iterator[bytes]:
        for chunk in chunks:
            progress.done += len(chunk)
            if progress.done > size_cap:
                raise ImportFailed("SizeExceeded", f"the upload sent more than the image size cap of {size_cap} "
                                                   "bytes (KOVA_IMAGE_SIZE_CAP)")
            yield chunk
    return _stream(store, uid, source, capped(), disk_format, None, progress, part_size_for(size, part_size))


def _read(resp: Any, url: str, progress: ImportProgress, cancelled: Callable[[], bool],
          size_cap: int) -> Iterator[bytes]:
    """The source's bytes, cut off at the size cap (a chunked source that never ends stops there too)."""
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
            return
        progress.done += len(chunk)
        if progress.done > size_cap:
            resp.close()  # stop the transfer now, not after the parts in flight are aborted
            raise ImportFailed("SizeExceeded", f"the source sent more than the image size cap of {size_cap} "
                                               "bytes (KOVA_IMAGE_SIZE_CAP); the import was cut off there")
        yield chunk


def _stream(store: Store, uid: str, url: str, chunks: Iterator[bytes], disk_format: str,
            expected: tuple[str, str] | None, progress: ImportProgress, part_size: int) -> Blob:
    hashers = {name: _Hasher(name) for name in {"md5", "sha512", *((expected[0],) if expected else ())}}
    upload_id = store.begin(uid, {"kova-source": url[:1024]})
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="upload")
    inflight: deque[Future[Any]] = deque()
    parts: list[Any] = []
    inspector = formats.StreamInspector()
    buffer: list[bytes] = []
    buffered = 0
    completed = False

    def flush() -> None:
        nonlocal buffer, buffered
        if len(parts) + len(inflight) >= MAX_PARTS:
            raise ImportFailed("SizeExceeded", f"a source that does not announce its length can send at most "
                                               f"{MAX_PARTS * part_size} bytes ({MAX_PARTS} parts of {part_size})")
        if len(inflight) >= 2:  # at most two parts uploading and one filling: bounded memory
            parts.append(inflight.popleft().result())
        data = b"".join(buffer)
        buffer, buffered = [], 0
        inflight.append(pool.submit(store.upload_part, uid, upload_id, len(parts) + len(inflight) + 1, data))

    try:
        for chunk in inspector.wrap(chunks):
            for h in hashers.values():
                h.queue.put(chunk)
            buffer.append(chunk)
            buffered += len(chunk)
            if buffered >= part_size:
                flush()
        if buffered or (not inflight and not parts):
            flush()
        while inflight:
            parts.append(inflight.popleft().result())
        digests = {name: h.result() for name, h in hashers.items()}
        size = progress.done
        if progress.total is not None and size != progress.total:
            raise ImportFailed("SizeMismatch", f"{url} sent {size} bytes, its length was announced as "
                                               f"{progress.total}")
        if size == 0:
            raise ImportFailed("EmptyImage", f"{url} sent no data")
        if expected and digests[expected[0]] != expected[1]:
            raise ImportFailed("ChecksumMismatch", f"{expected[0]} of the data is {digests[expected[0]]}, "
                                                   f"expected {expected[1]}")
        try:
            found = inspector.verdict(disk_format)
        except formats.Refused as e:
            raise ImportFailed(e.reason, str(e)) from e
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
