"""Write small, valid qcow2 (version 3) images by code, for tests and the demo (no qemu-img needed).

Layout, in 64 KiB clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1 table, 4 L2 table, then
the data clusters, which hold `data` from guest offset 0. `qemu-img check` accepts the result.
"""

from __future__ import annotations

import struct
import zlib
from typing import BinaryIO

CLUSTER_BITS = 16
CLUSTER = 1 << CLUSTER_BITS
COPIED = 1 << 63


def make_qcow2(virtual_size: int, data: bytes = b"", backing_file: str | None = None) -> bytes:
    l2_entries = CLUSTER // 8
    data_clusters = (len(data) + CLUSTER - 1) // CLUSTER
    if data_clusters > l2_entries:
        raise ValueError("this writer maps data through one L2 table (32 MiB at most)")
    l1_size = max(1, -(-virtual_size // (CLUSTER * l2_entries)))
    total_clusters = 5 + data_clusters + (1 if backing_file else 0)
    out = bytearray(total_clusters * CLUSTER)
    backing_offset, backing_size = 0, 0
    if backing_file:
        backing_offset = (5 + data_clusters) * CLUSTER
        backing_size = len(backing_file.encode())
        out[backing_offset:backing_offset + backing_size] = backing_file.encode()
    header = struct.pack(
        ">4sIQIIQIIQQIIQQQQII",
        b"QFI\xfb", 3, backing_offset, backing_size, CLUSTER_BITS, virtual_size, 0,  # magic..crypt
        l1_size, 3 * CLUSTER,  # L1 table
        1 * CLUSTER, 1,  # refcount table
        0, 0,  # snapshots
        0, 0, 0,  # incompatible, compatible, autoclear features
        4, 104)  # refcount_order (16-bit), header_length
    out[:len(header)] = header
    struct.pack_into(">Q", out, 1 * CLUSTER, 2 * CLUSTER)  # refcount table → block
    for cluster in range(total_clusters):
        struct.pack_into(">H", out, 2 * CLUSTER + 2 * cluster, 1)
    if data_clusters:
        struct.pack_into(">Q", out, 3 * CLUSTER, (4 * CLUSTER) | COPIED)  # L1[0] → L2
        for i in range(data_clusters):
            struct.pack_into(">Q", out, 4 * CLUSTER + 8 * i, ((5 + i) * CLUSTER) | COPIED)
        out[5 * CLUSTER:5 * CLUSTER + len(data)] = data
    return bytes(out)


class NotQcow2(ValueError):
    pass


def qcow2_to_raw(src: BinaryIO, dst: BinaryIO) -> int:
    """Convert a qcow2 image to a raw disk, as `qemu-img convert -O raw` does for CDI's importer: the guest
    view from offset 0 to the virtual size, unallocated and zero clusters left as holes (a sparse file).
    Versions 2 and 3, uncompressed and deflate-compressed clusters; a backing file, encryption or an
    incompatible feature is refused (CDI's importer refuses images with a backing file too). Returns the
    virtual size."""
    head = src.read(104)
    if len(head) < 72 or head[:4] != b"QFI\xfb":
        raise NotQcow2("not a qcow2 image")
    (_, version, backing_offset, _, cluster_bits, size, crypt, l1_size, l1_offset) = struct.unpack(
        ">4sIQIIQIIQ", head[:48])
    if version not in (2, 3):
        raise NotQcow2(f"qcow2 version {version} is not supported")
    if backing_offset:
        raise NotQcow2("image has a backing file")
    if crypt:
        raise NotQcow2("image is encrypted")
    if version == 3:
        incompatible = struct.unpack(">Q", head[72:80])[0]
        if incompatible & ~0b10:  # only "corrupt"-free, "dirty" (bit 0 is dirty: refused too, it needs a repair)
            raise NotQcow2(f"incompatible features {incompatible:#x}")
    cluster = 1 << cluster_bits
    l2_entries = cluster // 8
    src.seek(l1_offset)
    l1 = struct.unpack(f">{l1_size}Q", src.read(8 * l1_size))
    dst.truncate(size)
    for i, l1_entry in enumerate(l1):
        l2_offset = l1_entry & 0x00FFFFFFFFFFFE00
        if not l2_offset:
            continue
        src.seek(l2_offset)
        l2 = struct.unpack(f">{l2_entries}Q", src.read(cluster))
        for j, entry in enumerate(l2):
            guest = (i * l2_entries + j) * cluster
            if guest >= size or not entry:
                continue
            if entry & (1 << 62):  # compressed: offset and sector count packed by cluster_bits
                x = 62 - (cluster_bits - 8)
                offset = entry & ((1 << x) - 1)
                sectors = ((entry >> x) & ((1 << (cluster_bits - 8)) - 1)) + 1
                src.seek(offset)
                data = zlib.decompressobj(-12).decompress(src.read(sectors * 512 - (offset & 511)), cluster)
            else:
                offset = entry & 0x00FFFFFFFFFFFE00
                if (entry & 1) or not offset:  # a zero cluster: a hole
                    continue
                src.seek(offset)
                data = src.read(cluster)
            data = data[:size - guest]
            if data.count(0) != len(data):
                dst.seek(guest)
                dst.write(data)
    return size
