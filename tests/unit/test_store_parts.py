"""How a part goes to the store as it streams: aws-chunked frames with a CRC32 trailer, whose length on the
wire is known before the first byte (the request's Content-Length)."""

from __future__ import annotations

import base64
import os
import struct
import zlib

import pytest

from kova.adapters.store import aws_chunked, aws_chunked_length

MiB = 1 << 20


def decode(wire: bytes) -> tuple[bytes, bytes]:
    """(data, trailer) of an aws-chunked body, as S3 reads it."""
    data, rest = b"", wire
    while True:
        size_line, rest = rest.split(b"\r\n", 1)
        size = int(size_line, 16)
        if size == 0:
            assert rest.endswith(b"\r\n\r\n")
            return data, rest[:-4]
        data += rest[:size]
        assert rest[size:size + 2] == b"\r\n"
        rest = rest[size + 2:]


@pytest.mark.parametrize("length", [1, 1000, 64 * 1024, MiB - 1, MiB, MiB + 1, 3 * MiB + 17])
@pytest.mark.parametrize("pieces", [1, 7])
def test_frames_carry_the_bytes_and_their_crc32(length: int, pieces: int) -> None:
    data = os.urandom(length)
    step = -(-length // pieces)
    body = [data[i:i + step] for i in range(0, length, step)]
    wire = b"".join(bytes(x) for x in aws_chunked(body, length, frame=256 * 1024))
    assert len(wire) == aws_chunked_length(length, frame=256 * 1024)
    got, trailer = decode(wire)
    assert got == data
    assert trailer == b"x-amz-checksum-crc32:" + base64.b64encode(struct.pack(">I", zlib.crc32(data)))


@pytest.mark.parametrize("sent", [MiB - 1, MiB + 1])
def test_a_body_of_another_length_is_never_sent_whole(sent: int) -> None:
    """Fewer or more bytes than the part's length: the generator fails before the trailer, so the request
    is dropped and the store keeps nothing of it."""
    with pytest.raises(ValueError):
        for item in aws_chunked([bytes(sent)], MiB):
            assert not bytes(item).startswith(b"0\r\n")
