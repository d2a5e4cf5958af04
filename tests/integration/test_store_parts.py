"""Parts streamed to MinIO (aws-chunked, CRC32 trailer): what arrives intact is kept, a part damaged in
transit is refused by the store itself."""

from __future__ import annotations

import os
import uuid

import pytest
from minio.error import S3Error

from kova.adapters.store import ObjectStore, StoreConfig, aws_chunked, aws_chunked_length, blob_key
from tests.cloud.bench import S3_BUCKET, LocalCloud

pytestmark = pytest.mark.integration
MiB = 1 << 20


def store(cloud: LocalCloud) -> ObjectStore:
    return ObjectStore(StoreConfig(endpoint=cloud.s3_endpoint, access_key=cloud.s3_access_key,
                                   secret_key=cloud.s3_secret_key, bucket=S3_BUCKET))


def test_a_part_damaged_in_transit_is_refused_and_an_intact_one_kept(cloud: LocalCloud) -> None:
    s, uid = store(cloud), f"parts-{uuid.uuid4().hex}"
    data = os.urandom(5 * MiB + 3)
    upload_id = s.begin(uid, {})
    frames = [bytes(f) for f in aws_chunked([data], len(data))]
    frames[1] = frames[1][:-1] + bytes([frames[1][-1] ^ 1])  # one bit flipped after the CRC32 was taken
    with pytest.raises(S3Error) as e:
        s.parts.stream_part(S3_BUCKET, blob_key(uid), upload_id, 1, frames, aws_chunked_length(len(data)), len(data))
    assert e.value.code == "XAmzContentChecksumMismatch"
    # The same part, intact and in pieces of odd sizes as a socket gives them, then a short last part.
    pieces = [data[i:i + 300_001] for i in range(0, len(data), 300_001)]
    parts = [s.upload_part(uid, upload_id, 1, iter(pieces), len(data)), s.upload_part(uid, upload_id, 2, [b"end"], 3)]
    s.complete(uid, upload_id, parts)
    resp = s.open_blob(uid)
    try:
        assert resp.read() == data + b"end"
    finally:
        resp.close()
        resp.release_conn()
    s.delete_image(uid)
