"""The object store (S3 / MinIO) as Kova uses it: one blob and one small JSON record per image.

`images/<uid>` holds the bytes; `images/<uid>.json` records what was verified while they streamed in
(size, md5, sha512, format). The record is written only after the blob is complete and checked, so
"the record exists" is the one fact that makes an image active, whatever crashed before.
Every call here is safe to repeat (crossplane's Observe / Create / Delete contract).
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import hmac
import io
import json
import logging
import os
import re
import secrets
import shutil
import struct
import time
import zlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlunsplit

import certifi
import urllib3
from minio import Minio
from minio import time as mtime
from minio.datatypes import Part
from minio.error import MinioException, S3Error, ServerError
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


log = logging.getLogger(__name__)

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


# What a store that is down or unreachable raises (a file store: OSError; S3: urllib3's or minio's errors).
STORE_ERRORS: tuple[type[Exception], ...] = (OSError, MinioException, urllib3.exceptions.HTTPError)


def _pool() -> urllib3.PoolManager:
    """minio's own pool, but a store that does not answer fails in seconds, not after minio's 5-minute
    timeouts retried five times: reconciles read records and must not hang on one store."""
    return urllib3.PoolManager(
        timeout=urllib3.Timeout(connect=5, read=120), maxsize=10, cert_reqs="CERT_REQUIRED",
        ca_certs=os.environ.get("SSL_CERT_FILE") or certifi.where(),
        retries=urllib3.Retry(total=5, connect=1, backoff_factor=0.2, status_forcelist=[500, 502, 503, 504]))


class ObjectStore:
    def __init__(self, config: StoreConfig) -> None:
        self.config = config
        self.bucket = config.bucket
        self.client = Minio(config.endpoint, access_key=config.access_key, secret_key=config.secret_key,
                            secure=config.secure, region=config.region, http_client=_pool())
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
        try:
            return str(self.client._create_multipart_upload(self.bucket, blob_key(uid), headers))
        except S3Error as e:
            if e.code != "NoSuchBucket":  # a store that was down at start has no bucket yet: make it now
                raise
            self.ensure_bucket()
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


# ---------------------------------------------------------------------------------------------- stores
@dataclass(frozen=True)
class StoreSpec:
    """One store of KOVA_STORES: Glance's `stores` (an id, a weight, a description, one default)."""

    id: str
    kind: str  # s3 or file
    weight: int = 0
    description: str = ""
    default: bool = False
    s3: StoreConfig | None = None
    path: str = ""  # file: the directory (a PersistentVolume in the chart)
    url: str = ""  # file: the URL `kova api` serves signed links at, as importer pods reach it


STORE_ID = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def parse_stores(text: str, primary: StoreConfig | None, environ: Mapping[str, str]) -> tuple[StoreSpec, ...]:
    """KOVA_STORES (JSON): a list of {id, type (s3 or file), weight, description, default}; an s3 store with
    `endpoint` and `bucket` takes its keys from KOVA_STORE_<ID>_ACCESS_KEY and _SECRET_KEY, one without uses
    KOVA_S3_* (the primary); a file store has `path` and `url`. Unset: the primary S3 store alone, id `s3`."""
    if not text.strip():
        if primary is None:
            raise env.BadSetting("KOVA_S3_* or KOVA_STORES must say where images are stored")
        return (StoreSpec(id="s3", kind="s3", default=True, s3=primary, description="the object store"),)
    try:
        raw = json.loads(text)
    except ValueError as e:
        raise env.BadSetting(f"KOVA_STORES is not JSON: {e}") from None
    if not isinstance(raw, list) or not raw or not all(isinstance(r, dict) for r in raw):
        raise env.BadSetting("KOVA_STORES is a JSON list of stores: [{\"id\": ..., \"type\": \"s3\"|\"file\"}]")
    specs = []
    for r in raw:
        sid, kind = str(r.get("id", "")), r.get("type")
        if not STORE_ID.match(sid):
            raise env.BadSetting(f"KOVA_STORES: store id {sid!r} is not a lower-case name")
        common = StoreSpec(id=sid, kind=str(kind), weight=int(r.get("weight", 0)),
                           description=str(r.get("description", "")), default=bool(r.get("default")))
        if kind == "file":
            if not r.get("path") or not r.get("url"):
                raise env.BadSetting(f"KOVA_STORES: file store {sid} needs `path` and `url` (where kova api is)")
            specs.append(replace(common, path=str(r["path"]), url=str(r["url"]).rstrip("/")))
        elif kind == "s3":
            if r.get("endpoint"):
                key = sid.upper().replace("-", "_")
                access = environ.get(f"KOVA_STORE_{key}_ACCESS_KEY")
                secret = environ.get(f"KOVA_STORE_{key}_SECRET_KEY")
                if not access or not secret:
                    raise env.BadSetting(f"KOVA_STORES: s3 store {sid} needs KOVA_STORE_{key}_ACCESS_KEY and "
                                         f"KOVA_STORE_{key}_SECRET_KEY")
                config = StoreConfig(endpoint=str(r["endpoint"]), access_key=access, secret_key=secret,
                                     bucket=str(r.get("bucket") or "kova-images"), secure=bool(r.get("secure")),
                                     region=r.get("region") or None, public_endpoint=r.get("publicEndpoint") or None)
            elif primary is None:
                raise env.BadSetting(f"KOVA_STORES: s3 store {sid} has no endpoint, and KOVA_S3_* is not set")
            else:
                config = primary
            specs.append(replace(common, s3=config))
        else:
            raise env.BadSetting(f"KOVA_STORES: store {sid} has type {kind!r}: s3 or file")
    ids = [s.id for s in specs]
    if len(set(ids)) != len(ids):
        raise env.BadSetting(f"KOVA_STORES: store ids repeat: {', '.join(ids)}")
    defaults = [s.id for s in specs if s.default]
    if len(defaults) > 1:
        raise env.BadSetting(f"KOVA_STORES: one default store, not {', '.join(defaults)}")
    if not defaults:
        specs[0] = replace(specs[0], default=True)
    return tuple(specs)


def sign_link(key: bytes, store: str, uid: str, expires: int) -> str:
    """The signature of a file store's link: who holds it may read that image until `expires` (epoch s)."""
    return hmac.new(key, f"{store}/{uid}/{expires}".encode(), hashlib.sha256).hexdigest()


class FileStore:
    """A store in a directory (Glance's `file` store), laid out as the object store: `images/<uid>`, its
    record `images/<uid>.json` and staged record; a multipart upload is a folder of part files under
    `uploads/<uid>/<upload id>/`, joined into the image's file at completion (written aside, synced, then
    renamed into place, so a crash never leaves half an image under its name). Importers read it through a
    short-lived signed link that `kova api` serves (`/stores/<id>/images/<uid>`): no store credentials ever
    reach a tenant's namespace."""

    def __init__(self, spec: StoreSpec, link_key: bytes) -> None:
        self.id, self.root, self.url, self.key = spec.id, Path(spec.path), spec.url, link_key

    def _image(self, uid: str) -> Path:
        return self.root / blob_key(uid)

    def location(self, uid: str) -> str:
        return f"file://{self._image(uid)}"

    def ensure_bucket(self) -> None:
        (self.root / "images").mkdir(parents=True, exist_ok=True)
        (self.root / "uploads").mkdir(parents=True, exist_ok=True)

    def _read(self, path: Path) -> Blob | None:
        try:
            return Blob(**json.loads(path.read_bytes()))
        except FileNotFoundError:
            return None

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}")
        with tmp.open("wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)

    def read_record(self, uid: str) -> Blob | None:
        return self._read(self.root / record_key(uid))

    def read_staged(self, uid: str) -> Blob | None:
        return self._read(self.root / staged_key(uid))

    def write_record(self, uid: str, blob: Blob) -> None:
        self._write(self.root / record_key(uid), json.dumps(asdict(blob), sort_keys=True).encode())

    def write_staged(self, uid: str, blob: Blob) -> None:
        self._write(self.root / staged_key(uid), json.dumps(asdict(blob), sort_keys=True).encode())

    def promote_staged(self, uid: str) -> Blob | None:
        blob = self.read_staged(uid)
        if blob is None:
            return self.read_record(uid)
        self.write_record(uid, blob)
        (self.root / staged_key(uid)).unlink(missing_ok=True)
        return blob

    def pending_uploads(self, uid: str) -> list[str]:
        folder = self.root / "uploads" / uid
        return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []

    def begin(self, uid: str, metadata: dict[str, str]) -> str:
        upload_id = secrets.token_hex(8)
        (self.root / "uploads" / uid / upload_id).mkdir(parents=True)
        return upload_id

    def upload_part(self, uid: str, upload_id: str, number: int, body: Iterable[Any], length: int) -> Part:
        path = self.root / "uploads" / uid / upload_id / f"{number:05d}"
        written = 0
        with path.open("wb") as f:
            for chunk in body:
                written += len(chunk)
                if written > length:
                    raise ValueError(f"the part is longer than its {length} bytes")
                f.write(chunk)
        if written != length:
            path.unlink(missing_ok=True)
            raise ValueError(f"the part ended after {written} of its {length} bytes")
        return Part(number, f"{number:05d}")

    def complete(self, uid: str, upload_id: str, parts: list[Part]) -> None:
        folder = self.root / "uploads" / uid / upload_id
        target = self._image(uid)
        tmp = target.with_name(f".{target.name}.{upload_id}")
        target.parent.mkdir(parents=True, exist_ok=True)
        with tmp.open("wb") as out:
            for part in parts:
                with (folder / str(part.etag)).open("rb") as f:
                    _append(f, out)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, target)
        shutil.rmtree(folder, ignore_errors=True)

    def abort(self, uid: str, upload_id: str) -> None:
        shutil.rmtree(self.root / "uploads" / uid / upload_id, ignore_errors=True)

    def delete_image(self, uid: str) -> None:
        shutil.rmtree(self.root / "uploads" / uid, ignore_errors=True)
        for key in (record_key(uid), staged_key(uid), blob_key(uid)):
            (self.root / key).unlink(missing_ok=True)

    def data_size(self, uid: str) -> int | None:
        try:
            return self._image(uid).stat().st_size
        except FileNotFoundError:
            return None

    def open_blob(self, uid: str, offset: int = 0, length: int | None = None) -> Any:
        return _FileSlice(self._image(uid), offset, length)

    def presigned_get(self, uid: str, ttl: dt.timedelta) -> str:
        expires = int(time.time() + ttl.total_seconds())
        return f"{self.url}/stores/{self.id}/images/{uid}?expires={expires}&signature=" \
               f"{sign_link(self.key, self.id, uid, expires)}"


def _append(src: Any, dst: Any) -> None:
    """`src` onto the end of `dst`, copied by the kernel (copy_file_range: no pass through this process)."""
    left = os.fstat(src.fileno()).st_size
    while left > 0:
        try:
            done = os.copy_file_range(src.fileno(), dst.fileno(), left)
        except OSError:  # a filesystem that cannot: copy through here
            shutil.copyfileobj(src, dst, 1 << 20)
            return
        if done == 0:
            break
        left -= done


class _FileSlice:
    """A file's bytes from `offset`, `length` of them (or to its end), read as a store response is."""

    def __init__(self, path: Path, offset: int, length: int | None) -> None:
        self.f = path.open("rb")
        self.f.seek(offset)
        self.left = length if length else None

    def read(self, n: int = -1) -> bytes:
        if self.left is not None:
            n = self.left if n < 0 else min(n, self.left)
        data = self.f.read(n)
        if self.left is not None:
            self.left -= len(data)
        return data

    def stream(self, amt: int = 1 << 20) -> Iterator[bytes]:
        while data := self.read(amt):
            yield data

    def close(self) -> None:
        self.f.close()

    def release_conn(self) -> None:
        pass


@dataclass(frozen=True)
class Survey:
    records: list[tuple[str, Blob]]  # (store id, record) of the stores that hold the image, best first
    unread: dict[str, str]  # store id → why its record could not be read


class Stores:
    """Every store of KOVA_STORES. Imports write to one (the default unless asked); an image is in each store
    that holds its record, and is read from the first of them by weight (then id), as Glance orders them."""

    def __init__(self, specs: tuple[StoreSpec, ...], link_key: bytes = b"") -> None:
        self.specs = {s.id: s for s in specs}
        self.by_id: dict[str, ObjectStore | FileStore] = {
            s.id: (FileStore(s, link_key) if s.kind == "file" else ObjectStore(s.s3))  # type: ignore[arg-type]
            for s in specs}
        self.default = next(s.id for s in specs if s.default)
        self.order = [s.id for s in sorted(specs, key=lambda s: (-s.weight, s.id))]

    def get(self, store_id: str | None = None) -> ObjectStore | FileStore:
        return self.by_id[store_id or self.default]

    def ensure_bucket(self) -> None:
        """The default store must answer (imports write there); another that is down is reported and made
        when first written to, so one store's outage does not keep Kova from starting."""
        for sid, store in self.by_id.items():
            try:
                store.ensure_bucket()
            except STORE_ERRORS as e:
                if sid == self.default:
                    raise
                log.warning("store %s did not answer at start: %s", sid, e)

    def survey(self, uid: str) -> Survey:
        """Every store's answer for the image: one store that is down must not stop the others' images."""
        records: list[tuple[str, Blob]] = []
        unread: dict[str, str] = {}
        for sid in self.order:
            try:
                blob = self.by_id[sid].read_record(uid)
            except STORE_ERRORS as e:
                unread[sid] = f"{type(e).__name__}: {e}"
                continue
            if blob is not None:
                records.append((sid, blob))
        return Survey(records, unread)

    def records(self, uid: str) -> list[tuple[str, Blob]]:
        """(store id, record) of every store that answers and holds the image, best first."""
        return self.survey(uid).records

    def holding(self, uid: str) -> list[str]:
        """The stores that answer and hold the image (its record), best first."""
        return [sid for sid, _ in self.records(uid)]

    def _best(self, uid: str) -> ObjectStore | FileStore:
        held = self.holding(uid)
        return self.by_id[held[0]] if held else self.get()

    # What the rest of Kova asks of "the store", across them.
    def read_record(self, uid: str) -> Blob | None:
        records = self.records(uid)
        return records[0][1] if records else None

    def read_staged(self, uid: str) -> Blob | None:
        return next((b for sid in self.order if (b := self.by_id[sid].read_staged(uid)) is not None), None)

    def promote_staged(self, uid: str) -> Blob | None:
        for sid in self.order:
            if self.by_id[sid].read_staged(uid) is not None:
                return self.by_id[sid].promote_staged(uid)
        return self.read_record(uid)

    def data_size(self, uid: str) -> int | None:
        return next((n for sid in self.order if (n := self.by_id[sid].data_size(uid)) is not None), None)

    def location(self, uid: str, held: Sequence[str] = ()) -> str:
        """Where the image's data is in the first of `held` (else the default store); asks no store."""
        return next((self.by_id[sid] for sid in held if sid in self.by_id), self.get()).location(uid)

    def open_blob(self, uid: str, offset: int = 0, length: int | None = None) -> Any:
        return self._best(uid).open_blob(uid, offset, length)

    def presigned_get(self, uid: str, ttl: dt.timedelta, held: Sequence[str] = ()) -> str:
        """A link to the image's data in the first of `held` (the Image's status.stores) that is configured;
        without one, the default store's. No store is asked: it runs on the operator's event loop."""
        store = next((self.by_id[sid] for sid in held if sid in self.by_id), self.get())
        return store.presigned_get(uid, ttl)

    def delete_image(self, uid: str) -> None:
        for store in self.by_id.values():
            store.delete_image(uid)
