"""Glance's web-download import: stream a URL into the object store once, verifying as it goes.

One pass over the bytes: they are read from HTTP, streamed into multipart parts as they arrive (a part's
length is known before its first byte when the source announces its size; otherwise parts are of the
smallest size and gathered first), and fed to md5 and sha512 (and the expected hash's algorithm) on threads
of their own (hashlib drops the GIL, so they run beside the upload). An import holds a few MiB, whatever
size the source announces (parts grow to ~105 MiB near the 1 TiB cap, but are never held whole).

Nothing becomes visible before it is verified: the multipart upload is completed only when the length,
the expected hash, the size cap and Glance's format and safety checks (kova.image.formats) pass, and
aborted otherwise. The record written after it (kova.image.blob) is what makes the image active. The source
is opened by a `Source` (kova.adapters.http: through the import filter, which refuses what a tenant should
not reach) and written to a `Store` (kova.adapters.store). This module knows nothing of Kubernetes, so it
can run in the operator today and as a Job later (STYLE 6).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import queue
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
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
PART_QUEUE = 8  # chunks (~1 MiB each) queued for a part's upload: what an import holds of it
PERMANENT_HTTP = {400, 401, 403, 404, 410, 451}
DEFAULT_SIZE_CAP = 1 << 40  # Glance's image_size_cap: 1 TiB


class ImportFailed(Refusal):
    """The source cannot give a good image (Glance kills the image)."""


class SourceUnavailable(Exception):
    """A failure that may pass (network, 5xx): try again later."""


class Cancelled(Exception):
    """The import was stopped from outside (the Image is being deleted, or the operator stops)."""


class Interrupted(Exception):
    """The client of a resumable upload (a stage) went away or stopped sending. Raised by the caller's chunks;
    the pipeline then keeps the parts that were whole (`kept` bytes, from the start) for a later resume."""

    def __init__(self, message: str, kept: int = 0) -> None:
        super().__init__(message)
        self.kept = kept


class Store(Protocol):
    """The object store as the pipeline writes it: a multipart upload, then the record (kova.adapters.store)."""

    def pending_uploads(self, uid: str) -> list[str]: ...
    def begin(self, uid: str, metadata: dict[str, str]) -> str: ...
    def upload_part(self, uid: str, upload_id: str, number: int, body: Iterable[Any], length: int) -> Any:
        """Uploads one part whose `length` bytes come from `body` (bytes-like chunks) as they are produced;
        raises if `body` gives more or fewer, or raises itself (the part is then never completed)."""
    def complete(self, uid: str, upload_id: str, parts: list[Any]) -> None: ...
    def abort(self, uid: str, upload_id: str) -> None: ...
    def write_record(self, uid: str, blob: Blob) -> None: ...
    def write_staged(self, uid: str, blob: Blob) -> None: ...
    def data_size(self, uid: str) -> int | None:
        """Bytes at the image's data key (an interrupted stage's first parts), None when there are none."""
    def open_blob(self, uid: str, offset: int = 0, length: int | None = None) -> Any: ...


class Source(Protocol):
    """Opens a GET (kova.adapters.http); raises NotAllowed for what the import filter refuses."""

    def open(self, url: str) -> Any: ...


@dataclass
class ImportProgress:
    done: int = 0
    total: int | None = None
    stopped: ImportFailed | None = None  # set by `stop`: the import ends with this failure
    hang_up: Callable[[], None] | None = None  # shuts the source's connection (set once it is open)
    store_waits: int = 0  # half-seconds spent waiting for the store to take a part's bytes (not the source's fault)

    def stop(self, failure: ImportFailed) -> None:
        """Ends the import from another thread (a deadline, a rate too low): the source is hung up on, so a
        read blocked on a source that trickles returns at once, and the import fails with `failure`."""
        self.stopped = failure
        if self.hang_up is not None:
            self.hang_up()


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
    gets parts just large enough, in whole MiB (they stream: their size costs no memory)."""
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
        progress.hang_up = getattr(resp, "shutdown", None)  # urllib3: interrupts a read blocked in another thread
        chunks = _read(resp, url, progress, cancelled, size_cap)
        return _stream(store, uid, url, chunks, disk_format, parse_checksum(checksum), progress, part_size)
    finally:
        # Hang up rather than hand the connection back: after a refusal or a cut-off the source may still
        # be sending (a chunked source that never ends), and each hop has a pool of its own anyway.
        resp.close()


def import_chunks(store: Store, uid: str, chunks: Iterator[bytes], disk_format: str, *, source: str,
                  size: int | None = None, size_cap: int = DEFAULT_SIZE_CAP, progress: ImportProgress | None = None,
                  part_size: int = PART_SIZE, staged: bool = False, resume_from: int = 0) -> Blob:
    """Glance's image-upload (or stage, with `staged`): bytes sent by a client (the image API) through the same
    verified pipeline as web-download (hashes, format and safety checks, size cap; nothing visible before it
    is verified).

    A stage is resumable: when the caller's chunks raise Interrupted, the parts already whole are kept at the
    image's data key (never visible: no record says so), and `resume_from` (their size) continues it, the
    kept bytes read back from the store ahead of the client's (the hashes and the format check see every byte
    once more, in order; S3 cannot read the parts of an open multipart upload, so they are kept completed)."""
    progress = progress or ImportProgress()
    progress.total = size  # what the parts are cut by: a part of known length streams, never held whole
    for upload_id in store.pending_uploads(uid):
        store.abort(uid, upload_id)
    if size is not None and size > size_cap:
        raise ImportFailed("SizeExceeded", f"the upload announces {size} bytes, over the image size cap of "
                                           f"{size_cap} bytes (KOVA_IMAGE_SIZE_CAP)")
    if resume_from:
        kept = store.data_size(uid) or 0
        if kept != resume_from:
            raise ImportFailed("ResumeMismatch", f"{kept} bytes of this stage are kept, not {resume_from}: resume "
                                                 f"from byte {kept}")
        chunks = itertools.chain(_kept(store, uid, kept), chunks)

    def capped() -> Iterator[bytes]:
        for chunk in chunks:
            progress.done += len(chunk)
            if progress.done > size_cap:
                raise ImportFailed("SizeExceeded", f"the upload sent more than the image size cap of {size_cap} "
                                                   "bytes (KOVA_IMAGE_SIZE_CAP)")
            yield chunk
    return _stream(store, uid, source, capped(), disk_format, None, progress, part_size_for(size, part_size),
                   staged, resume_from)


def _kept(store: Store, uid: str, length: int) -> Iterator[bytes]:
    """The bytes an interrupted stage kept, read back from the store in chunks."""
    resp = store.open_blob(uid, 0, length)
    try:
        while data := resp.read(CHUNK):
            yield data
    finally:
        resp.close()
        getattr(resp, "release_conn", lambda: None)()


def _read(resp: Any, url: str, progress: ImportProgress, cancelled: Callable[[], bool],
          size_cap: int) -> Iterator[bytes]:
    """The source's bytes in chunks of up to CHUNK, cut off at the size cap (a chunked source that never ends
    stops there too). Bytes are counted as they arrive, not when a chunk is full, so the rate watch
    (kova.image.pace) sees a source that trickles for what it sends."""
    while True:
        pieces: list[bytes] = []
        have = 0
        while have < CHUNK:
            if cancelled():
                raise Cancelled("import stopped")
            if progress.stopped:  # also when stopped before the connection could be hung up
                raise progress.stopped
            try:
                piece = resp.read1(CHUNK - have)
            except Exception as e:
                if progress.stopped:  # hung up on from outside: that is why the read failed
                    raise progress.stopped from e
                if isinstance(e, urllib3.exceptions.ProtocolError):
                    raise ImportFailed("SizeMismatch", f"the source sent {progress.done} bytes, fewer than its "
                                                       f"Content-Length {progress.total}: {e}") from e
                if isinstance(e, urllib3.exceptions.HTTPError):
                    raise SourceUnavailable(f"reading {url}: {e}") from e
                raise
            if progress.stopped:
                raise progress.stopped
            if not piece:
                break
            pieces.append(piece)
            have += len(piece)
            progress.done += len(piece)
            if progress.done > size_cap:
                resp.close()  # stop the transfer now, not after the parts in flight are aborted
                raise ImportFailed("SizeExceeded", f"the source sent more than the image size cap of {size_cap} "
                                                   "bytes (KOVA_IMAGE_SIZE_CAP); the import was cut off there")
        if not pieces:
            return
        # One chunk of ~1 MiB: each chunk costs the hashes, the inspector and the part queue a few steps.
        yield pieces[0] if len(pieces) == 1 else b"".join(pieces)


class _Part:
    """One part on its way to the store. Its bytes go through a short queue to the thread that uploads it
    as they arrive, so an import holds a few chunks of a part, never the whole part (whose size grows with
    the announced size: ~105 MiB near the 1 TiB cap)."""

    def __init__(self, number: int, length: int, progress: ImportProgress) -> None:
        self.number, self.length, self.fed, self.progress = number, length, 0, progress
        self.whole = False  # every byte given: the part completes (an interrupted stage keeps it)
        self.queue: queue.Queue[Any] = queue.Queue(maxsize=PART_QUEUE)
        self.future: Future[Any] | None = None

    def chunks(self) -> Iterator[Any]:
        while (item := self.queue.get()) is not None:
            if item is _ABANDON:
                raise Cancelled("the import stopped while this part was uploading")
            yield item

    def put(self, item: Any) -> None:
        """Blocks while the store is behind; raises the upload's error if it failed meanwhile."""
        while True:
            try:
                self.queue.put(item, timeout=0.5)
                return
            except queue.Full:
                self.progress.store_waits += 1
                if self.progress.stopped:  # a deadline also covers a store that stopped reading
                    raise self.progress.stopped from None
                if self.future is not None and self.future.done():
                    self.future.result()
                    raise RuntimeError(f"part {self.number} stopped reading before its {self.length} "
                                       "bytes") from None

    def abandon(self) -> None:
        """Ends the upload thread's body with an error, so the store is never sent a part cut short."""
        while True:
            try:
                self.queue.get_nowait()
            except queue.Empty:
                break
        with contextlib.suppress(queue.Full):
            self.queue.put_nowait(_ABANDON)


_ABANDON = object()


def _stream(store: Store, uid: str, url: str, chunks: Iterator[bytes], disk_format: str,
            expected: tuple[str, str] | None, progress: ImportProgress, part_size: int,
            staged: bool = False, resumed: int = 0) -> Blob:
    """With an announced length every part's length is known before its first byte, and each part streams
    to the store as it arrives. Without one (a chunked source, an upload that does not say), parts are of
    the smallest size (part_size_for) and are gathered in memory first: a few MiB of chunk lists, no copy."""
    hashers = {name: _Hasher(name) for name in {"md5", "sha512", *((expected[0],) if expected else ())}}
    upload_id = store.begin(uid, {"kova-source": url[:1024]})
    pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="upload")
    inflight: deque[_Part] = deque()
    parts: list[Any] = []
    lengths: list[int] = []  # of every part started, in order
    inspector = formats.StreamInspector()
    total = progress.total
    offset = 0  # bytes given to parts so far
    current: _Part | None = None
    gathered: list[bytes] = []  # without an announced length: the part being gathered, from `gathered_from`
    gathered_from = 0
    completed = False

    def start(length: int, body: Iterable[Any] | None = None) -> _Part:
        if len(parts) + len(inflight) >= MAX_PARTS:
            raise ImportFailed("SizeExceeded", f"a source that does not announce its length can send at most "
                                               f"{MAX_PARTS * part_size} bytes ({MAX_PARTS} parts of {part_size})")
        if len(inflight) >= 2:  # one part streaming, one waiting for the store's answer: bounded memory
            parts.append(_result(inflight.popleft()))
        part = _Part(len(parts) + len(inflight) + 1, length, progress)
        part.whole = body is not None
        part.future = pool.submit(store.upload_part, uid, upload_id, part.number,
                                  part.chunks() if body is None else body, length)
        inflight.append(part)
        lengths.append(length)
        return part

    try:
        for chunk in inspector.wrap(chunks):
            for h in hashers.values():
                h.queue.put(chunk)
            if total is None:
                gathered.append(chunk)
                offset += len(chunk)
                if offset - gathered_from >= part_size:
                    start(offset - gathered_from, gathered)
                    gathered, gathered_from = [], offset
                continue
            view = memoryview(chunk)
            while view:
                if current is None:
                    if offset >= total:
                        raise ImportFailed("SizeMismatch", f"{url} sent more than the {total} bytes announced")
                    current = start(min(part_size, total - offset))
                piece = view[:current.length - current.fed]
                view = view[len(piece):]
                current.put(piece)
                current.fed += len(piece)
                offset += len(piece)
                if current.fed == current.length:
                    current.put(None)
                    current.whole = True
                    current = None
        if gathered:
            start(offset - gathered_from, gathered)
        size = progress.done
        if total is not None and size != total:
            raise ImportFailed("SizeMismatch", f"{url} sent {size} bytes, its length was announced as {total}")
        if size == 0:
            raise ImportFailed("EmptyImage", f"{url} sent no data")
        while inflight:
            parts.append(_result(inflight.popleft()))
        digests = {name: h.result() for name, h in hashers.items()}
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
        # Staged (Glance's stage): verified, but the image becomes active only when its import is asked for.
        (store.write_staged if staged else store.write_record)(uid, blob)
        return blob
    except Interrupted as e:
        if not staged:
            raise
        # Keep the parts that are whole, in order, at the data key: a resume reads them back.
        while inflight and inflight[0].whole:
            parts.append(_result(inflight.popleft()))
        kept = sum(lengths[:len(parts)])
        if kept <= resumed:  # no further than what the store keeps already: that stays
            raise Interrupted(str(e), resumed) from e
        store.complete(uid, upload_id, parts)
        completed = True
        raise Interrupted(str(e), kept) from e
    finally:
        for h in hashers.values():
            if h.is_alive():
                h.queue.put(None)
        for part in inflight:
            part.abandon()
        pool.shutdown(wait=True, cancel_futures=True)
        if not completed:
            store.abort(uid, upload_id)


def _result(part: _Part) -> Any:
    assert part.future is not None
    return part.future.result()
