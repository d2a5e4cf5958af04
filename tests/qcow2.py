"""Write small, valid qcow2 (version 3) images by code, for tests and the demo (no qemu-img needed).

Layout, in 64 KiB clusters: 0 header, 1 refcount table, 2 refcount block, 3 L1 table, 4 L2 table, then
the data clusters, which hold `data` from guest offset 0. `qemu-img check` accepts the result.
"""

from __future__ import annotations

import struct

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
