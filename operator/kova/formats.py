"""Disk image format inspection, from the first bytes (and the last 512, for VHD) of a stream.

Glance inspects uploads because a declared format cannot be trusted: a "raw" image that is really a qcow2
with a backing file would make the hypervisor open a host file. The same checks are made here, while
the bytes stream past, so no second read is needed.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

HEAD_BYTES = 64 * 1024  # enough for every header below (ISO's descriptor sits at 32 KiB)
TAIL_BYTES = 512


@dataclass(frozen=True)
class Inspection:
    format: str  # raw, qcow2, iso, vmdk, vhd, vhdx, vdi
    virtual_size: int | None  # bytes, when the header says
    problem: str | None = None  # a reason to refuse the image, if any


def inspect(head: bytes, tail: bytes, size: int) -> Inspection:
    """`head`: the first HEAD_BYTES (or all, if shorter); `tail`: the last TAIL_BYTES; `size`: total."""
    if head[:4] == b"QFI\xfb" and len(head) >= 72:
        version, = struct.unpack(">I", head[4:8])
        backing_offset, = struct.unpack(">Q", head[8:16])
        virtual_size, = struct.unpack(">Q", head[24:32])
        problem = None
        if backing_offset:
            problem = "qcow2 image has a backing file, which is not allowed"
        elif version >= 3 and len(head) >= 80:
            incompatible, = struct.unpack(">Q", head[72:80])
            if incompatible & 0x4:
                problem = "qcow2 image has an external data file, which is not allowed"
        return Inspection("qcow2", virtual_size, problem)
    if head[:8] == b"vhdxfile":
        return Inspection("vhdx", None)
    if head[:4] == b"KDMV" and len(head) >= 20:
        capacity_sectors, = struct.unpack("<Q", head[12:20])
        return Inspection("vmdk", capacity_sectors * 512)
    if len(head) >= 0x178 and head[0x40:0x44] == b"\x7f\x10\xda\xbe":
        disk_size, = struct.unpack("<Q", head[0x170:0x178])
        return Inspection("vdi", disk_size)
    if len(tail) >= 512 and tail[-512:-504] == b"conectix":
        current_size, = struct.unpack(">Q", tail[-512 + 48:-512 + 56])
        return Inspection("vhd", current_size)
    if len(head) >= 0x8006 and head[0x8001:0x8006] == b"CD001":
        return Inspection("iso", size)
    return Inspection("raw", size)


def check_declared(declared: str, found: Inspection) -> str | None:
    """Why the bytes do not match the declared disk format, or None when they do."""
    if found.problem:
        return found.problem
    if declared == found.format:
        return None
    if declared == "iso" and found.format == "raw":
        return None  # a hybrid or unusual ISO without a primary volume descriptor at 32 KiB
    if declared == "raw" and found.format == "iso":
        return None  # an ISO is a raw image of a disc
    return f"diskFormat is {declared} but the data is {found.format}"
