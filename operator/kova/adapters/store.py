"""The object store (S3 / MinIO) as Kova uses it: one blob and one small JSON record per image.

`images/<uid>` holds the bytes; `images/<uid>.json` records what was verified while they streamed in
(size, md5, sha512, format). The record is written only after the blob is complete and checked, so
"the record exists" is the one fact that makes an image active, whatever crashed before.
Every call here is safe to repeat (crossplane's Observe / Create / Delete contract).
"""

from __future__ import annotations

import base64
import datetime as dt
import io
import json
import os
import struct
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import urlunsplit

from minio import Minio
from minio import time as mtime
from minio.datatypes import Part
from minio.error import S3Error, ServerError
from minio.signer import sign_v4_s3

from kova.adapters import env
from kova.image.blob import Blob


@dataclass(frozen=True)
class StoreConfig:
    endpoint: str
    access_key: str
    secret_key: str
    bucket: str
    secure: bool = False
    region: str | None = None
    # Address the importer (CDI) reaches the store at, when it differs from the operator's.
    public_endpoint: str | None = None

    @classmethod
    def from_env(cls) -> StoreConfig:
        def need(name: str) -> str:
            value = os.environ.get(name)
            if not value:
                raise env.BadSetting(f"{name} is not set (see README: configuration)")
            return value

        return cls(endpoint=need("KOVA_S3_ENDPOINT"), access_key=need("KOVA_S3_ACCESS_KEY"),
                   secret_key=need("KOVA_S3_SECRET_KEY"), bucket=os.environ.get("KOVA_S3_BUCKET", "kova-images"),
                   secure=env.flag("KOVA_S3_SECURE", False),
                   region=os.environ.get("KOVA_S3_REGION") or None,
                   public_endpoint=os.environ.get("KOVA_S3_PUBLIC_ENDPOINT") or None)


FRAME = 1 << 20  # aws-chunked frame: the part's bytes are sent in frames of this size as they come
_TRAILER = b"x-amz-checksum-crc32:"


class _UnsignedPartClient(Minio):
    """Uploads parts as they stream, with a CRC32 that the store verifies, instead of a signed sha256.

    Over plain HTTP minio-py signs a sha256 of every part, which needs the whole part in memory first, and
    the server hashes it again: two passes over the image on top of the md5 + sha512 that Glance needs.
    Here a part is sent as S3's `STREAMING-UNSIGNED-PAYLOAD-TRAILER` (aws-chunked frames, the part's CRC32
    in a trailer after the last byte), so its bytes go out as they arrive and a part damaged in transit is
    still refused (XAmzContentChecksumMismatch; tests/integration/test_store_parts.py). Only part uploads
    go through here; every other request is signed as usual.
    """

    def stream_part(self, bucket: str, key: str, upload_id: str, number: int, frames: Iterable[Any],
                    encoded: int, length: int) -> str:
        """PUT one part whose aws-chunked body (`encoded` bytes, `length` decoded) is `frames`; its ETag."""
        creds = self._provider.retrieve() if self._provider else None
        region = self._get_region(bucket)
        url = self._base_url.build(method="PUT", region=region, bucket_name=bucket, object_name=key,
                                   query_params={"partNumber": str(number), "uploadId": upload_id})
        date = mtime.utcnow()
        headers: dict[str, str | list[str] | tuple[str]] = {
            "Host": url.netloc, "User-Agent": self._user_agent, "x-amz-date": mtime.to_amz_date(date),
            "x-amz-content-sha256": STREAMING, "Content-Encoding": "aws-chunked", "Content-Length": str(encoded),
            "x-amz-decoded-content-length": str(length), "x-amz-trailer": "x-amz-checksum-crc32"}
        if creds:
            headers = sign_v4_s3(method="PUT", url=url, region=region, headers=headers, credentials=creds,
                                 content_sha256=STREAMING, date=date)
        # No retries: a body that streams cannot be sent twice (the import is retried as a whole instead).
        resp = self._http.urlopen("PUT", urlunsplit(url), body=frames, headers=headers, retries=False,
                                  preload_content=True)
        if resp.status != 200:
            if "xml" in resp.headers.get("content-type", ""):
                raise S3Error.fromxml(resp)
            raise ServerError(f"part {number}: HTTP {resp.status}", resp.status)
        return str(resp.headers.get("etag", "")).strip('"')


STREAMING = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"


def aws_chunked_length(length: int, frame: int = FRAME) -> int:
    """Bytes on the wire of an aws-chunked body of `length` bytes (known before the first one is sent)."""
    full, rest = divmod(length, frame)
    size = full * (len(b"%x" % frame) + 4 + frame)
    if rest:
        size += len(b"%x" % rest) + 4 + rest
    return size + len(b"0\r\n") + len(_TRAILER) + 8 + 4  # the CRC32 is 8 characters of base64


def aws_chunked(body: Iterable[Any], length: int, frame: int = FRAME) -> Iterator[Any]:
    """`body`'s bytes as aws-chunked frames, then its CRC32 trailer; raises if it is not `length` bytes long
    (the connection is then dropped: the store never receives a part cut short or overlong)."""
    crc, sent, room = 0, 0, 0  # room: bytes left in the frame being sent
    for chunk in body:
        view = memoryview(chunk).cast("B")
        while view:
            if not room:
                room = min(frame, length - sent)
                if not room:
                    raise ValueError(f"the part is longer than its {length} bytes")
                yield b"%x\r\n" % room
            piece, view = view[:room], view[room:]
            crc = zlib.crc32(piece, crc)
            sent, room = sent + len(piece), room - len(piece)
            yield piece
            if not room:
                yield b"\r\n"
    if sent != length:
        raise ValueError(f"the part ended after {sent} of its {length} bytes")
    yield b"0\r\n" + _TRAILER + base64.b64encode(struct.pack(">I", crc)) + b"\r\n\r\n"


def blob_key(uid: str) -> str:
    return f"images/{uid}"


def record_key(uid: str) -> str:
    return f"images/{uid}.json"


def staged_key(uid: str) -> str:
    """The record of bytes staged (Glance's stage) and verified, not yet imported: the image is not active."""
    return f"images/{uid}.staged.json"


class ObjectStore:
    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        self.client = Minio(config.endpoint, access_key=config.access_key, secret_key=config.secret_key,
                            secure=config.secure, region=config.region)
        self.parts = _UnsignedPartClient(config.endpoint, access_key=config.access_key,
                                         secret_key=config.secret_key, secure=config.secure, region=config.region)
        # Presigned URLs are signed for the host CDI will use; signing needs no request to the store.
        self.signer = Minio(config.public_endpoint or config.endpoint, access_key=config.access_key,
                            secret_key=config.secret_key, secure=config.secure, region=config.region or "us-east-1")

    def location(self, uid: str) -> str:
        return f"s3://{self.bucket}/{blob_key(uid)}"

    def ensure_bucket(self) -> None:
        if not self.client.bucket_exists(self.bucket):
            try:
                self.client.make_bucket(self.bucket)
            except S3Error as e:
                if e.code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
                    raise

    # ----- observe -----
    def read_record(self, uid: str) -> Blob | None:
        return self._read_blob(record_key(uid))

    def read_staged(self, uid: str) -> Blob | None:
        return self._read_blob(staged_key(uid))

    def _read_blob(self, key: str) -> Blob | None:
        try:
            resp = self.client.get_object(self.bucket, key)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise
        try:
            return Blob(**json.loads(resp.read()))
        finally:
            resp.close()
            resp.release_conn()

    def pending_uploads(self, uid: str) -> list[str]:
        """Multipart uploads left open for this image's blob (by an import that died)."""
        # minio-py has no public call for ListMultipartUploads; this is the one private use, kept here.
        result = self.client._list_multipart_uploads(self.bucket, prefix=blob_key(uid))
        return [u.upload_id for u in result.uploads if u.object_name == blob_key(uid) and u.upload_id]

    # ----- create -----
    def begin(self, uid: str, metadata: dict[str, str]) -> str:
        headers: dict[str, str | list[str] | tuple[str]] = {"Content-Type": "application/octet-stream",
                   **{f"x-amz-meta-{k}": v for k, v in metadata.items()}}
        return str(self.client._create_multipart_upload(self.bucket, blob_key(uid), headers))

    def upload_part(self, uid: str, upload_id: str, number: int, body: Iterable[Any], length: int) -> Part:
        """One part of `length` bytes, sent as `body` produces them (kova.image.importer holds a few MiB)."""
        etag = self.parts.stream_part(self.bucket, blob_key(uid), upload_id, number, aws_chunked(body, length),
                                      aws_chunked_length(length), length)
        return Part(number, etag)

    def complete(self, uid: str, upload_id: str, parts: list[Part]) -> None:
        self.client._complete_multipart_upload(self.bucket, blob_key(uid), upload_id, parts)

    def abort(self, uid: str, upload_id: str) -> None:
        try:
            self.client._abort_multipart_upload(self.bucket, blob_key(uid), upload_id)
        except S3Error as e:
            if e.code != "NoSuchUpload":
                raise

    def write_record(self, uid: str, blob: Blob) -> None:
        self._write_blob(record_key(uid), blob)

    def write_staged(self, uid: str, blob: Blob) -> None:
        self._write_blob(staged_key(uid), blob)

    def _write_blob(self, key: str, blob: Blob) -> None:
        data = json.dumps(asdict(blob), sort_keys=True).encode()
        self.client.put_object(self.bucket, key, io.BytesIO(data), len(data), content_type="application/json")

    def promote_staged(self, uid: str) -> Blob | None:
        """Glance's glance-direct import: the staged bytes (already in place and verified) become the image's.
        The record is written before the staged one is removed: a crash between leaves it active, and a retry
        finds the record."""
        blob = self.read_staged(uid)
        if blob is None:
            return self.read_record(uid)
        self.write_record(uid, blob)
        self.client.remove_object(self.bucket, staged_key(uid))
        return blob

    # ----- delete -----
    def delete_image(self, uid: str) -> None:
        """Abort open uploads, then remove the record (the image stops being active), then the blob."""
        for upload_id in self.pending_uploads(uid):
            self.abort(uid, upload_id)
        for key in (record_key(uid), staged_key(uid), blob_key(uid)):
            self.client.remove_object(self.bucket, key)  # S3 DELETE of a missing key succeeds

    def data_size(self, uid: str) -> int | None:
        """Bytes at the image's data key, None when there is no object (an interrupted stage's kept parts;
        an active image's data)."""
        try:
            return int(self.client.stat_object(self.bucket, blob_key(uid)).size or 0)
        except S3Error as e:
            if e.code in ("NoSuchKey", "NoSuchObject"):
                return None
            raise

    def open_blob(self, uid: str, offset: int = 0, length: int | None = None) -> Any:
        """The image's bytes as a stream (the image API's download); the caller closes and releases it."""
        return self.client.get_object(self.bucket, blob_key(uid), offset=offset, length=length or 0)

    # ----- share -----
    def presigned_get(self, uid: str, ttl: dt.timedelta) -> str:
        return str(self.signer.presigned_get_object(self.bucket, blob_key(uid), expires=ttl))
