"""Format inspection of the bytes that stream in, against the declared diskFormat."""

from __future__ import annotations

import struct

import pytest

from kova import formats
from tests.qcow2 import make_qcow2


def inspect(data: bytes) -> formats.Inspection:
    return formats.inspect(data[: formats.HEAD_BYTES], data[-formats.TAIL_BYTES:], len(data))


def test_qcow2_virtual_size_read_from_header() -> None:
    found = inspect(make_qcow2(3 << 30, b"hello" * 100))
    assert (found.format, found.virtual_size, found.problem) == ("qcow2", 3 << 30, None)
    assert formats.check_declared("qcow2", found) is None


def test_qcow2_with_backing_file_is_refused() -> None:
    found = inspect(make_qcow2(1 << 30, backing_file="/etc/shadow"))
    assert found.problem and "backing file" in found.problem
    assert formats.check_declared("qcow2", found) == found.problem


def test_qcow2_declared_as_raw_is_refused() -> None:
    assert formats.check_declared("raw", inspect(make_qcow2(1 << 30))) == "diskFormat is raw but the data is qcow2"


def test_raw_is_its_own_size() -> None:
    data = bytes(1 << 20)
    found = inspect(data)
    assert (found.format, found.virtual_size) == ("raw", 1 << 20)
    assert formats.check_declared("raw", found) is None
    assert formats.check_declared("qcow2", found) == "diskFormat is qcow2 but the data is raw"


def test_iso_vmdk_vhd_vdi_are_recognised() -> None:
    iso = bytearray(40000)
    iso[0x8001:0x8006] = b"CD001"
    assert inspect(bytes(iso)).format == "iso"
    vmdk = b"KDMV" + struct.pack("<IIQ", 1, 3, 2048) + bytes(1000)
    assert (inspect(vmdk).format, inspect(vmdk).virtual_size) == ("vmdk", 2048 * 512)
    footer = bytearray(512)
    footer[:8] = b"conectix"
    footer[48:56] = struct.pack(">Q", 1 << 30)
    vhd = bytes(4096) + bytes(footer)
    assert (inspect(vhd).format, inspect(vhd).virtual_size) == ("vhd", 1 << 30)
    vdi = bytearray(0x200)
    vdi[0x40:0x44] = b"\x7f\x10\xda\xbe"
    vdi[0x170:0x178] = struct.pack("<Q", 5 << 20)
    assert (inspect(bytes(vdi)).format, inspect(bytes(vdi)).virtual_size) == ("vdi", 5 << 20)
    assert inspect(b"vhdxfile" + bytes(100)).format == "vhdx"


@pytest.mark.parametrize(("declared", "found", "ok"), [("iso", "raw", True), ("raw", "iso", True),
                                                       ("vmdk", "raw", False)])
def test_declared_format_tolerances(declared: str, found: str, ok: bool) -> None:
    result = formats.check_declared(declared, formats.Inspection(found, 1))
    assert (result is None) is ok
