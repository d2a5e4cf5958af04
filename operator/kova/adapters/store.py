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
from dataclasses import asdict, dataclass
from typing import Any

from minio import Minio
from minio.datatypes import Part
from minio.error import S3Error

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


class _UnsignedPartClient(Minio):
    """Uploads parts with a CRC32 checksum that the store verifies, instead of a signed sha256.

    Over plain HTTP minio-py signs a sha256 of every part and the server hashes it again: two full
    passes over the image that the importer pays on top of the md5 + sha512 that Glance needs. A CRC32
    (zlib, ~2 GiB/s) still lets the server refuse a part that was damaged in transit (verified in
    tests against MinIO). Only part uploads go through here; every other request is signed as usual.
    """

    def _build_headers(self, host: str, headers: Any = None, body: bytes | None = None,
                       creds: Any = None) -> Any:
        built, date = super()._build_headers(host, headers, None, creds)  # None: do not hash the body
        if body:
            built["Content-Length"] = str(len(body))
            built["x-amz-checksum-crc32"] = base64.b64encode(struct.pack(">I", zlib.crc32(body))).decode()
        built["x-amz-content-sha256"] = "UNSIGNED-PAYLOAD"
        return built, date


def blob_key(uid: str) -> str:
    return f"images/{uid}"


def record_key(uid: str) -> str:
    return f"images/{uid}.json"


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
        try:
            resp = self.client.get_object(self.bucket, record_key(uid))
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

    def upload_part(self, uid: str, upload_id: str, number: int, data: bytes) -> Part:
        etag = self.parts._upload_part(self.bucket, blob_key(uid), data, None, upload_id, number)
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
        data = json.dumps(asdict(blob), sort_keys=True).encode()
        self.client.put_object(self.bucket, record_key(uid), io.BytesIO(data), len(data),
                               content_type="application/json")

    # ----- delete -----
    def delete_image(self, uid: str) -> None:
        """Abort open uploads, then remove the record (the image stops being active), then the blob."""
        for upload_id in self.pending_uploads(uid):
            self.abort(uid, upload_id)
        for key in (record_key(uid), blob_key(uid)):
            self.client.remove_object(self.bucket, key)  # S3 DELETE of a missing key succeeds

    def open_blob(self, uid: str, offset: int = 0, length: int | None = None) -> Any:
        """The image's bytes as a stream (the image API's download); the caller closes and releases it."""
        return self.client.get_object(self.bucket, blob_key(uid), offset=offset, length=length or 0)

    # ----- share -----
    def presigned_get(self, uid: str, ttl: dt.timedelta) -> str:
        return str(self.signer.presigned_get_object(self.bucket, blob_key(uid), expires=ttl))
