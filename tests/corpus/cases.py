"""The disk image corpus as a table: each row is one image (tests/corpus/<file>) uploaded under one declared
disk format, and what the import must make of it.

outcome "active": the image is usable; `detected` and `virtual_size` are what the inspector must report
(virtual_size as oslo.utils' format_inspector reports it: raw and gpt, the file length; iso, the volume size
in the primary volume descriptor; fixed VHD, the footer's current size; the others, their header's size).
outcome "killed": `reason` is "UnsafeImage" (a safety check fails, or the bytes are more than one format) or
"InvalidDiskFormat" (a safe image whose format is not the declared one).

make_corpus.py says how each image was made and why it is (un)safe.
"""

from __future__ import annotations

import gzip
from dataclasses import dataclass
from pathlib import Path

ACTIVE = "active"
KILLED = "killed"
UNSAFE = "UnsafeImage"
INVALID = "InvalidDiskFormat"
MIB = 1 << 20
ISO_SIZE = 376832  # 184 blocks of 2 KiB, from xorriso; the file is exactly that long


@dataclass(frozen=True)
class Case:
    name: str
    file: str
    declared: str
    outcome: str
    reason: str | None
    detected: str | None
    virtual_size: int | None
    stands_for: str


def _file(image: str) -> str:
    return f"{image}.img.gz"


def _active(image: str, declared: str, detected: str, virtual_size: int, stands_for: str) -> Case:
    return Case(f"{image}-as-{declared}", _file(image), declared, ACTIVE, None, detected, virtual_size, stands_for)


def _killed(image: str, declared: str, reason: str, stands_for: str) -> Case:
    return Case(f"{image}-as-{declared}", _file(image), declared, KILLED, reason, None, None, stands_for)


def _unsafe(image: str, declared: list[str], stands_for: str) -> list[Case]:
    return [_killed(image, d, UNSAFE, stands_for) for d in declared]


CASES: list[Case] = [
    # Usable images, declared as what they are.
    _active("raw", "raw", "raw", MIB, "raw disk: no header, virtual size is the file length"),
    _active("qcow2-v2", "qcow2", "qcow2", MIB, "qcow2 version 2 (compat=0.10)"),
    _active("qcow2-v3", "qcow2", "qcow2", MIB, "qcow2 version 3 (compat=1.1), no incompatible features"),
    _active("vmdk-sparse", "vmdk", "vmdk", MIB, "VMDK monolithicSparse, a subformat oslo allows"),
    _active("vmdk-stream", "vmdk", "vmdk", MIB, "VMDK streamOptimized as qemu-img writes it (no footer)"),
    _active("vmdk-stream-footer", "vmdk", "vmdk", MIB,
           "VMDK streamOptimized, VMware layout: footer agrees with header (the footer check passes)"),
    _active("vhd-dynamic", "vhd", "vhd", MIB, "dynamic VHD (footer copy at offset 0)"),
    _active("vhd-fixed", "vhd", "vhd", MIB,
           "fixed VHD: raw data and a 512-byte footer at the end; size is the footer's current size"),
    _active("vhd-fixed", "raw", "raw", MIB + 512,
           "fixed VHD declared raw: oslo reads it as raw, virtual size is the file length"),
    _active("vhdx", "vhdx", "vhdx", MIB, "VHDX"),
    _active("vdi", "vdi", "vdi", MIB, "VDI (VirtualBox)"),
    _active("iso", "iso", "iso", ISO_SIZE, "ISO 9660, size from its primary volume descriptor"),
    _active("iso-hybrid", "iso", "iso", ISO_SIZE,
           "OSSA-2024-001 multiple formats: a hybrid ISO (ISO and MBR) is taken as the ISO"),
    _active("gpt", "raw", "gpt", 2 * MIB, "GPT disk declared raw: Glance's gpt-inside-raw exception"),
    _active("mbr", "raw", "gpt", 2 * MIB,
           "MBR (DOS label) disk declared raw: oslo's gpt inspector, gpt-inside-raw exception"),
    # Unsafe images: refused under their own format and when declared raw (or another format).
    *_unsafe("qcow2-backing-file", ["qcow2", "raw"],
            "qcow2 backing_file safety check (backing file /etc/hostname); declared raw, CVE-2024-40767"),
    *_unsafe("qcow2-data-file", ["qcow2", "raw"],
            "OSSA-2024-001 (CVE-2024-32498): qcow2 external data_file naming a host file"),
    *_unsafe("qcow2-unknown-feature", ["qcow2", "raw"],
            "qcow2 unknown_features safety check: incompatible feature bit 5 set"),
    *_unsafe("vmdk-flat-host-file", ["vmdk", "raw"],
            "OSSA-2023-002 (CVE-2022-47951): VMDK FLAT extent naming a host file; declared raw, CVE-2024-40767"),
    *_unsafe("vmdk-parent", ["vmdk", "raw"],
            "VMDK with a parent (parentFileNameHint): a backing file; oslo's safety_check passes it, Kova refuses"),
    *_unsafe("vmdk-stream-bad-footer", ["vmdk", "raw"],
            "OSSA-2024-001: streamOptimized VMDK whose footer names a different descriptor than its header"),
    *_unsafe("qed", ["qcow2", "raw"], "QED: a format oslo detects only to ban (banned safety check)"),
    *_unsafe("luks", ["raw", "qcow2"],
            "LUKS v1 encrypted disk: contents cannot be inspected (oslo's own safety_check passes it)"),
    *_unsafe("gpt-hybrid-mbr", ["raw"], "GPT mbr safety check: hybrid MBR, 0xEE plus an extra partition"),
    *_unsafe("gpt-bad-pmbr-start", ["raw"], "GPT mbr safety check: protective 0xEE entry not starting at LBA 1"),
    *_unsafe("iso-qcow2", ["iso", "qcow2", "raw"],
            "OSSA-2024-001 multiple formats: ISO that is also qcow2 (header in the system area)"),
    *_unsafe("qcow2-mbr", ["qcow2", "raw"],
            "OSSA-2024-001 multiple formats: qcow2 that is also an MBR disk (partition table in cluster 0)"),
    # Safe images declared as a format they are not.
    _killed("qcow2-v3", "raw", INVALID, "format check: a qcow2 declared raw"),
    _killed("raw", "qcow2", INVALID, "format check: a raw disk declared qcow2"),
    _killed("vmdk-sparse", "qcow2", INVALID, "format check: a VMDK declared qcow2"),
    _killed("vhdx", "vhd", INVALID, "format check: a VHDX declared vhd"),
    _killed("iso", "raw", INVALID, "format check: an ISO declared raw"),
    _killed("vdi", "vmdk", INVALID, "format check: a VDI declared vmdk"),
    _killed("vhd-dynamic", "vhdx", INVALID, "format check: a VHD declared vhdx"),
]


def load(case: Case) -> bytes:
    """The image's bytes, uncompressed."""
    return gzip.decompress((Path(__file__).parent / case.file).read_bytes())
