"""Glance's format and safety rules (kova.image.formats) over a corpus of real disk images.

The corpus (tests/corpus) was made with qemu-img, xorriso, cryptsetup and sgdisk; each row names the
advisory or check it stands for. The bytes go through the same streaming inspector the importer uses,
chunk by chunk, as they would arrive from a source."""

from __future__ import annotations

import struct
from collections.abc import Iterator

import pytest

from kova.image import formats
from tests.corpus.cases import CASES, Case, load


def chunked(data: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(data), size):
        yield data[i:i + size]


def inspect(data: bytes, declared: str, chunk: int = 1 << 20) -> formats.Verdict:
    inspector = formats.StreamInspector()
    assert b"".join(inspector.wrap(chunked(data, chunk))) == data  # the bytes pass through unchanged
    return inspector.verdict(declared)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(case: Case) -> None:
    data = load(case)
    if case.outcome == "active":
        found = inspect(data, case.declared)
        assert (found.format, found.virtual_size) == (case.detected, case.virtual_size), case.stands_for
    else:
        with pytest.raises(formats.Refused) as refused:
            inspect(data, case.declared)
        assert refused.value.reason == case.reason, f"{case.stands_for}: {refused.value}"
        assert str(refused.value)  # the inspector's words reach the Image's message


def test_corpus_covers_what_glance_refuses() -> None:
    killed = [c for c in CASES if c.outcome == "killed"]
    assert len(CASES) >= 30
    assert {c.reason for c in killed} == {formats.UNSAFE, formats.INVALID}
    # Every unsafe image is refused both under its own name and when it claims to be raw.
    unsafe_files = {c.file for c in killed if c.reason == formats.UNSAFE}
    for file in unsafe_files:
        assert "raw" in {c.declared for c in killed if c.file == file}, file
    usable = {c.detected for c in CASES if c.outcome == "active"}
    assert {"raw", "qcow2", "vmdk", "vhd", "vhdx", "vdi", "iso", "gpt"} <= usable


@pytest.mark.parametrize("chunk", [512, 4096, 65536 + 7, 3 << 20])
def test_verdict_does_not_depend_on_how_the_stream_is_cut(chunk: int) -> None:
    for case in CASES:
        data = load(case)
        try:
            found: object = inspect(data, case.declared, chunk)
        except formats.Refused as e:
            found = e.reason
        expected = (case.detected, case.virtual_size) if case.outcome == "active" else case.reason
        assert (found if isinstance(found, str) else (found.format, found.virtual_size)) == expected, case.name


def footer(size: int, disk_type: int = 2) -> bytearray:
    f = bytearray(512)
    f[:8] = b"conectix"
    f[48:56] = struct.pack(">Q", size)
    f[60:64] = struct.pack(">I", disk_type)
    f[64:68] = struct.pack(">I", ~sum(f) & 0xFFFFFFFF)
    return f


def test_fixed_vhd_footer() -> None:
    assert formats.fixed_vhd_size(bytes(footer(4096)), 4096 + 512) == 4096
    assert formats.fixed_vhd_size(bytes(footer(4096)), 8192 + 512) is None  # the size must add up
    assert formats.fixed_vhd_size(bytes(footer(4096, disk_type=3)), 4096 + 512) is None  # dynamic: not fixed
    bad = footer(4096)
    bad[70] ^= 1
    assert formats.fixed_vhd_size(bytes(bad), 4096 + 512) is None  # checksum
    # A raw disk that happens to end in a fixed-VHD footer is still raw when declared raw.
    disk = bytes(4096) + bytes(footer(4096))
    assert inspect(disk, "vhd") == formats.Verdict("vhd", 4096)
    assert inspect(disk, "raw") == formats.Verdict("raw", 4096 + 512)
    with pytest.raises(formats.Refused, match="diskFormat is vhd but the data is raw"):
        inspect(bytes(4096 + 512), "vhd")
