"""The importer: part sizes, and the pipeline against an in-memory store (bytes in order, refusals,
memory held whatever size the source announces)."""

from __future__ import annotations

import hashlib
import io
import os
import threading
from collections.abc import Iterable, Iterator
from typing import Any

import pytest

from kova.image import importer
from kova.image.blob import Blob
from kova.image.importer import (
    MAX_PARTS,
    PART_QUEUE,
    PART_SIZE,
    Cancelled,
    ImportFailed,
    ImportProgress,
    part_size_for,
)

MiB, GiB, TiB = 1 << 20, 1 << 30, 1 << 40


@pytest.mark.parametrize("total", [None, 1, 100 * GiB, 156 * GiB, 157 * GiB, 500 * GiB, TiB])
def test_parts_stay_within_the_s3_limit(total: int | None) -> None:
    size = part_size_for(total)
    assert size >= PART_SIZE and size % MiB == 0
    if total is not None:
        assert -(-total // size) <= MAX_PARTS
        assert size == PART_SIZE or -(-total // (size - MiB)) > MAX_PARTS  # no larger than needed


# ------------------------------------------------------------------------------------ the pipeline, in memory
class FakeStore:
    """A store that consumes each part's body at its own pace in the importer's upload threads, and records
    the most bytes the importer held at once: read from the source, not yet taken by the store."""

    def __init__(self, keep: bool = True) -> None:
        self.keep = keep
        self.lock = threading.Lock()
        self.read = 0  # bytes the source handed to the importer
        self.taken = 0  # bytes the store took from part bodies
        self.peak_held = 0
        self.parts: dict[int, bytes] = {}
        self.lengths: dict[int, int] = {}
        self.completed: list[int] | None = None
        self.aborted: list[str] = []
        self.record: Blob | None = None
        self.staged: Blob | None = None

    def note_read(self, n: int) -> None:
        with self.lock:
            self.read += n
            self.peak_held = max(self.peak_held, self.read - self.taken)

    def pending_uploads(self, uid: str) -> list[str]:
        return []

    def begin(self, uid: str, metadata: dict[str, str]) -> str:
        return "upload-1"

    def upload_part(self, uid: str, upload_id: str, number: int, body: Iterable[Any], length: int) -> int:
        got = bytearray()
        n = 0
        for chunk in body:
            n += len(chunk)
            with self.lock:
                self.taken += len(chunk)
            if self.keep:
                got += chunk
        if n != length:
            raise ValueError(f"part {number}: {n} bytes, {length} announced")
        self.parts[number], self.lengths[number] = bytes(got), n
        return number

    def complete(self, uid: str, upload_id: str, parts: list[Any]) -> None:
        self.completed = list(parts)

    def abort(self, uid: str, upload_id: str) -> None:
        self.aborted.append(upload_id)

    def write_record(self, uid: str, blob: Blob) -> None:
        self.record = blob

    def write_staged(self, uid: str, blob: Blob) -> None:
        self.staged = blob

    def blob(self) -> bytes:
        assert self.completed is not None
        return b"".join(self.parts[n] for n in self.completed)

    def data_size(self, uid: str) -> int | None:
        return len(self.blob()) if self.completed is not None else None

    def open_blob(self, uid: str, offset: int = 0, length: int | None = None) -> Any:
        return io.BytesIO(self.blob()[offset:offset + length if length else None])


class FakeResponse:
    """A source that announces `announced` bytes (None: chunked) and sends `data`, or fresh generated
    MiBs up to `generate` bytes (a new object each time, as a socket read gives)."""

    status = 200

    def __init__(self, store: FakeStore, data: bytes = b"", announced: int | None = None, generate: int = 0) -> None:
        self.store, self.data, self.generate, self.offset = store, data, generate, 0
        self.headers = {} if announced is None else {"Content-Length": str(announced)}

    def read(self, n: int) -> bytes:
        if self.generate:
            size = min(n, self.generate - self.offset)
            chunk = bytes(size)
        else:
            chunk = self.data[self.offset:self.offset + n]
        self.offset += len(chunk)
        self.store.note_read(len(chunk))
        return chunk

    read1 = read

    def close(self) -> None:
        pass


class FakeSource:
    def __init__(self, response: FakeResponse) -> None:
        self.response = response

    def open(self, url: str) -> FakeResponse:
        return self.response


@pytest.mark.parametrize("announced", [True, False])
def test_parts_carry_the_bytes_in_order(announced: bool) -> None:
    """Announced: parts stream as the bytes arrive; not announced: parts are gathered. Either way the
    completed blob is the source's bytes, every part but the last of the part size."""
    store = FakeStore()
    data = os.urandom(5 * MiB + 12345)
    resp = FakeResponse(store, data, len(data) if announced else None)
    blob = importer.import_url(store, "uid", "http://src/disk", "raw", f"sha256:{hashlib.sha256(data).hexdigest()}",
                      fetcher=FakeSource(resp), part_size=MiB)
    assert store.blob() == data and store.completed == [1, 2, 3, 4, 5, 6]
    assert [store.lengths[n] for n in store.completed] == [MiB] * 5 + [12345]
    assert (blob.size, blob.md5, blob.sha256) == (len(data), hashlib.md5(data).hexdigest(),
                                                  hashlib.sha256(data).hexdigest())
    assert store.record == blob and not store.aborted


def test_a_source_that_sends_less_than_announced_is_refused_and_nothing_kept() -> None:
    store = FakeStore()
    data = os.urandom(3 * MiB)
    with pytest.raises(ImportFailed) as e:
        importer.import_chunks(store, "uid", iter([data]), "raw", source="upload", size=4 * MiB, part_size=MiB)
    assert e.value.reason == "SizeMismatch"
    assert store.completed is None and store.record is None and store.aborted == ["upload-1"]


def test_an_upload_that_sends_more_than_announced_is_refused_and_nothing_kept() -> None:
    store = FakeStore()
    with pytest.raises(ImportFailed) as e:
        importer.import_chunks(store, "uid", iter([os.urandom(MiB), os.urandom(MiB)]), "raw", source="upload",
                      size=MiB + 10, part_size=MiB)
    assert e.value.reason == "SizeMismatch" and "more than the" in str(e.value)
    assert store.completed is None and store.record is None and store.aborted == ["upload-1"]


def test_a_stage_is_verified_and_recorded_apart_so_the_image_is_not_active_yet() -> None:
    """Glance's stage: the same checks as an upload; the record that makes an image active is not written."""
    store = FakeStore()
    data = os.urandom(MiB)
    blob = importer.import_chunks(store, "uid", iter([data]), "raw", source="stage", size=MiB, staged=True)
    assert store.record is None and store.staged == blob and blob.size == MiB
    assert blob.md5 == hashlib.md5(data).hexdigest() and store.blob() == data


def test_an_interrupted_stage_keeps_its_whole_parts_and_a_resume_verifies_every_byte() -> None:
    """A stage whose client goes away: the parts that arrived whole are completed at the data key (no record:
    nothing active), the part cut short is dropped; a resume reads them back ahead of the rest, so the
    hashes and the format check cover the whole image, and the staged record is the whole image's."""
    store = FakeStore()
    part = 4 * MiB
    data = os.urandom(3 * part + MiB)

    def broken(upto: int) -> Iterator[bytes]:
        for at in range(0, upto, MiB):
            yield data[at:at + MiB]
        raise importer.Interrupted("the client went away")
    with pytest.raises(importer.Interrupted) as e:
        importer.import_chunks(store, "uid", broken(2 * part + MiB), "raw", source="stage", size=len(data),
                               part_size=part, staged=True)
    assert e.value.kept == 2 * part and store.data_size("uid") == 2 * part
    assert store.record is None and store.staged is None and store.blob() == data[:2 * part]
    # A plain upload keeps nothing: Glance's image goes back to queued with no data.
    plain = FakeStore()
    with pytest.raises(importer.Interrupted):
        importer.import_chunks(plain, "uid", broken(2 * part), "raw", source="upload", size=len(data),
                               part_size=part)
    assert plain.completed is None and plain.aborted
    # Resumed from elsewhere than what is kept: refused, nothing changed.
    with pytest.raises(importer.ImportFailed) as failed:
        importer.import_chunks(store, "uid", iter([data[part:]]), "raw", source="stage", size=len(data),
                               part_size=part, staged=True, resume_from=part)
    assert failed.value.reason == "ResumeMismatch"
    rest = (data[at:at + MiB] for at in range(2 * part, len(data), MiB))
    blob = importer.import_chunks(store, "uid", rest, "raw", source="stage", size=len(data), part_size=part,
                                  staged=True, resume_from=2 * part)
    assert store.blob() == data and store.staged == blob and blob.size == len(data)
    assert blob.sha512 == hashlib.sha512(data).hexdigest()


@pytest.mark.parametrize("announced", [None, 1 * GiB, 900 * GiB])
def test_bytes_held_do_not_grow_with_the_announced_size(announced: int | None) -> None:
    """Near the cap a part is ~93 MiB (900 GiB / 10,000 parts): the importer must not gather it. It reads
    160 MiB (more than one such part), then is stopped; at no moment did it hold more than a few MiB that
    the store had not taken (the chunks queued for the part streaming), whatever was announced."""
    assert part_size_for(900 * GiB) > 90 * MiB
    store = FakeStore(keep=False)
    resp = FakeResponse(store, announced=announced, generate=160 * MiB)
    with pytest.raises(Cancelled):
        importer.import_url(store, "uid", "http://src/disk", "raw", None, fetcher=FakeSource(resp),
                   cancelled=lambda: resp.offset >= 160 * MiB)
    assert store.read == 160 * MiB
    # Streaming: the part's queue and the chunk in hand. Gathered (nothing announced): at most the 16 MiB
    # part being gathered and two parts in flight, whatever the size of the image.
    bound = (PART_QUEUE + 2) * MiB if announced else 3 * PART_SIZE + MiB
    assert store.peak_held <= bound, store.peak_held / MiB
    assert store.completed is None and store.aborted == ["upload-1"]


def test_an_upload_with_its_own_progress_streams_parts_of_the_announced_size() -> None:
    """The import worker hands import_chunks a progress of its own: the announced size still cuts the parts,
    so a part of ~93 MiB streams as it arrives instead of being gathered whole."""
    store = FakeStore(keep=False)

    def chunks() -> Iterator[bytes]:
        block = os.urandom(MiB)
        for _ in range(160):
            store.note_read(MiB)
            yield block
    with pytest.raises(ImportFailed):  # 160 MiB of 900 GiB: it ends short, after the parts streamed
        importer.import_chunks(store, "uid", chunks(), "raw", source="upload", size=900 * GiB,
                               progress=ImportProgress())
    assert store.read == 160 * MiB
    assert store.peak_held <= (PART_QUEUE + 2) * MiB, store.peak_held / MiB
