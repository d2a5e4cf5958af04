"""Build the disk image corpus of this folder: tests/corpus/<file>.img.gz, one per image that cases.py names.

Run it by hand, once, when the corpus changes (the tests only read the .gz files):

    python3 tests/corpus/make_corpus.py

It needs qemu-img (qemu-utils), xorriso, sgdisk (gdisk) and sfdisk (fdisk); it works in a
temporary folder, touches no network and reads or writes no host file: the host paths that the unsafe
images name (/etc/hostname, /etc/passwd) are only written into them, never opened. Every image is small
(virtual size 1 or 2 MiB, 4 KiB qcow2 and QED clusters) and gzip-compressed with mtime 0. The qcow2, QED,
ISO and partition-table images come out byte for byte the same on every run; VMDK (CID), VHD (timestamp,
UUID), VHDX (GUIDs), VDI (UUIDs) and LUKS (salts, keys) carry random or time-stamped fields from qemu-img.

Safe means: oslo.utils' format_inspector (what Glance applies since OSSA-2023-002, OSSA-2024-001 and
OSSA-2024-002 / CVE-2024-40767) finds exactly one format and its safety_check() passes, except where a comment says
otherwise.
"""

from __future__ import annotations

import gzip
import os
import random
import shutil
import struct
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

HERE = Path(__file__).resolve().parent
MIB = 1 << 20
SECRET = "kova"  # LUKS passphrase (the image is never opened)
# A minimal environment: the tools on PATH (sgdisk and sfdisk live in sbin), C locale, fixed ISO dates.
ENV = {
    "PATH": os.pathsep.join([os.environ.get("PATH", "/usr/bin:/bin"), "/usr/sbin", "/sbin"]),
    "LC_ALL": "C",
    "SOURCE_DATE_EPOCH": "1704067200",  # 2024-01-01: xorriso stamps the ISO's dates with it
}
TOOLS = ("qemu-img", "xorriso", "sgdisk", "sfdisk")
DISK_GUID = "4B6F7661-0000-4000-8000-000000000001"
PART_GUID = "4B6F7661-0000-4000-8000-000000000002"
VMDK_GD_AT_END = 0xFFFFFFFFFFFFFFFF


class Builder:
    """Makes each image once in a temporary folder; the case functions below ask it for what they need."""

    def __init__(self, work: Path) -> None:
        self.work = work
        self.made: dict[str, bytes] = {}

    def run(self, *args: str, stdin: str | None = None) -> None:
        """Run a tool in the work folder; its chatter is shown only when it fails."""
        try:
            subprocess.run(args, cwd=self.work, env=ENV, input=stdin, text=True, check=True, capture_output=True)
        except subprocess.CalledProcessError as e:
            print(e.stdout, e.stderr, sep="", file=sys.stderr)
            raise

    def read(self, name: str) -> bytes:
        return (self.work / name).read_bytes()

    def raw_source(self) -> str:
        """A 1 MiB raw disk: 4 KiB of seeded pseudo-random bytes at 0, a line of text at 512 KiB, zeros."""
        path = self.work / "source.raw"
        if not path.exists():
            data = bytearray(MIB)
            data[:4096] = random.Random(0x4B6F7661).randbytes(4096)
            text = b"Kova format corpus: a raw disk with a little data.\n" * 8
            data[512 * 1024:512 * 1024 + len(text)] = text
            # Nothing that a format inspector could take for a header or a boot sector.
            assert data[510:512] != b"\x55\xaa" and not data[:512].isascii()
            path.write_bytes(bytes(data))
        return path.name

    def convert(self, name: str, fmt: str, *options: str) -> bytes:
        """`qemu-img convert` of the raw source to `fmt`, so every format carries the same few KiB of data."""
        args = ["qemu-img", "convert", "-f", "raw", "-O", fmt]
        if options:
            args += ["-o", ",".join(options)]
        self.run(*args, self.raw_source(), name)
        return self.read(name)

    def iso_dir(self) -> str:
        folder = self.work / "iso-root"
        if not folder.exists():
            folder.mkdir()
            readme = folder / "README.TXT"
            readme.write_text("Kova format corpus: a small ISO 9660 image.\n")
            epoch = int(ENV["SOURCE_DATE_EPOCH"])
            for path in (readme, folder):  # xorriso records the files' own times
                os.utime(path, (epoch, epoch))
        return folder.name

    def gpt_disk(self) -> bytes:
        """2 MiB, GPT with one Linux partition; fixed GUIDs so the bytes are the same on every run."""
        if "gpt" not in self.made:
            (self.work / "gpt.raw").write_bytes(bytes(2 * MIB))
            self.run("sgdisk", "-o", "-n", "1:2048:0", "-t", "1:8300", "-c", "1:kova",
                     "-U", DISK_GUID, "-u", f"1:{PART_GUID}", "gpt.raw")
            self.made["gpt"] = self.read("gpt.raw")
        return self.made["gpt"]

    def mbr_disk(self) -> bytes:
        """2 MiB, DOS partition table (fixed disk id) with one Linux partition from sector 2048."""
        if "mbr" not in self.made:
            (self.work / "mbr.raw").write_bytes(bytes(2 * MIB))
            self.run("sfdisk", "-q", "mbr.raw", stdin="label: dos\nlabel-id: 0x4b6f7661\nstart=2048, type=83\n")
            self.made["mbr"] = self.read("mbr.raw")
        return self.made["mbr"]

    def qcow2(self, compat: str) -> bytes:
        key = f"qcow2-{compat}"
        if key not in self.made:
            self.made[key] = self.convert(f"{key}.qcow2", "qcow2", f"compat={compat}", "cluster_size=4096")
        return self.made[key]

    def vmdk_stream(self) -> bytes:
        if "vmdk-stream" not in self.made:
            self.made["vmdk-stream"] = self.convert("stream.vmdk", "vmdk", "subformat=streamOptimized")
        return self.made["vmdk-stream"]


def with_footer(stream: bytes, patch: Callable[[bytearray], None] | None = None) -> bytes:
    """qemu's streamOptimized VMDK rewritten into VMware's layout: the header's grain directory offset says
    GD_AT_END, and the file ends with a footer marker, a footer (a copy of the header with the real grain
    directory offset, which takes precedence over the header) and an end-of-stream marker. qemu reads it."""
    header = bytearray(stream[:512])
    out = bytearray(stream)
    struct.pack_into("<Q", out, 56, VMDK_GD_AT_END)
    if patch:
        patch(header)
    marker = struct.pack("<QII", 1, 0, 3).ljust(512, b"\0")  # 1 sector of metadata follows; type 3 = footer
    return bytes(out + marker + header + bytes(512))  # the last sector: end-of-stream marker (type 0)


# --- usable images -------------------------------------------------------------------------------------------

def raw(b: Builder) -> bytes:
    # 1 MiB of plain data, no header of any kind: oslo finds "raw", virtual size = length. Safe.
    return b.read(b.raw_source())


def qcow2_v2(b: Builder) -> bytes:
    # qemu-img convert -O qcow2 -o compat=0.10: a version 2 header, no backing file. Safe.
    return b.qcow2("0.10")


def qcow2_v3(b: Builder) -> bytes:
    # qemu-img convert -O qcow2 -o compat=1.1: version 3, no incompatible feature bits. Safe.
    return b.qcow2("1.1")


def vmdk_sparse(b: Builder) -> bytes:
    # qemu-img convert -O vmdk (monolithicSparse): KDMV header, descriptor with one SPARSE extent in itself. Safe.
    return b.convert("sparse.vmdk", "vmdk", "subformat=monolithicSparse")


def vmdk_stream(b: Builder) -> bytes:
    # qemu-img convert -O vmdk -o subformat=streamOptimized: qemu writes the grain directory up front (no footer).
    return b.vmdk_stream()


def vmdk_stream_footer(b: Builder) -> bytes:
    # The same streamOptimized VMDK in VMware's layout (header says GD_AT_END, footer at the end) with a
    # footer that agrees with the header: oslo's footer check passes. Safe; the control for the next case.
    return with_footer(b.vmdk_stream())


def vhd_dynamic(b: Builder) -> bytes:
    # qemu-img convert -O vpc -o subformat=dynamic: the "conectix" footer is copied at offset 0. Safe.
    return b.convert("dynamic.vhd", "vpc", "subformat=dynamic", "force_size=on")


def vhd_fixed(b: Builder) -> bytes:
    # qemu-img convert -O vpc -o subformat=fixed: the raw data, then a 512-byte "conectix" footer. oslo
    # inspects from the front only and calls it raw (size = length); qemu probes it as raw too. Safe.
    return b.convert("fixed.vhd", "vpc", "subformat=fixed", "force_size=on")


def vhdx(b: Builder) -> bytes:
    # qemu-img convert -O vhdx, smallest log and block size (the file is 8 MiB of mostly zeros). Safe.
    return b.convert("disk.vhdx", "vhdx", "log_size=1M", "block_size=1M")


def vdi(b: Builder) -> bytes:
    # qemu-img convert -O vdi (dynamic). Safe.
    return b.convert("disk.vdi", "vdi")


def iso(b: Builder) -> bytes:
    # xorriso -as mkisofs of a folder with one file; the 32 KiB system area stays zero. Safe.
    b.run("xorriso", "-as", "mkisofs", "-quiet", "-V", "KOVA", "-o", "plain.iso", b.iso_dir())
    return b.read("plain.iso")


def iso_hybrid(b: Builder) -> bytes:
    # xorriso --protective-msdos-label: the ISO's system area carries an MBR whose one partition (type 0xcd,
    # from LBA 1) covers the image, so oslo matches both iso and gpt, and gpt's MBR check passes. Glance and
    # Kova take an ISO that is also an MBR/GPT disk as the ISO (bootable hybrid ISOs are common).
    b.run("xorriso", "-as", "mkisofs", "-quiet", "-V", "KOVA", "--protective-msdos-label", "-o", "hybrid.iso",
          b.iso_dir())
    return b.read("hybrid.iso")


def gpt(b: Builder) -> bytes:
    # sgdisk on a 2 MiB raw file: protective MBR (one 0xEE entry from LBA 1) and a GPT. oslo says gpt, whose
    # check passes; Glance accepts gpt inside an image declared raw. Safe.
    return b.gpt_disk()


def mbr(b: Builder) -> bytes:
    # sfdisk on a 2 MiB raw file: a DOS label, one partition. oslo's gpt inspector covers MBR too. Safe.
    return b.mbr_disk()


# --- unsafe images -------------------------------------------------------------------------------------------

def qcow2_backing_file(b: Builder) -> bytes:
    # qemu-img create -u -b /etc/hostname -F raw: a qcow2 whose unwritten clusters read from a host file
    # (oslo's backing_file check; declared raw, CVE-2024-40767 / OSSA-2024-002). -u: the name is written into
    # the header, the file is not opened. Unsafe.
    b.run("qemu-img", "create", "-q", "-u", "-f", "qcow2", "-o", "cluster_size=4096",
          "-b", "/etc/hostname", "-F", "raw", "backing.qcow2", "1M")
    return b.read("backing.qcow2")


def qcow2_data_file(b: Builder) -> bytes:
    # qemu-img create -o data_file=data.raw (compat 1.1), then qemu-img amend -o data_file=/etc/passwd, which
    # rewrites the header extension without opening the new name: guest data lives in a host file
    # (CVE-2024-32498, OSSA-2024-001). Incompatible feature bit 2 is set. Unsafe.
    b.run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "compat=1.1,cluster_size=4096,data_file=data.raw",
          "datafile.qcow2", "1M")
    b.run("qemu-img", "amend", "-f", "qcow2", "-o", "data_file=/etc/passwd", "datafile.qcow2")
    return b.read("datafile.qcow2")


def qcow2_unknown_feature(b: Builder) -> bytes:
    # The qcow2 v3 above with incompatible feature bit 5 set (header offset 72, 8 bytes big-endian): no qemu
    # knows it, so what the image means is unknown; qemu-img refuses to open it, oslo's unknown_features
    # check fails. Unsafe.
    data = bytearray(b.qcow2("1.1"))
    assert struct.unpack_from(">Q", data, 72)[0] == 0
    struct.pack_into(">Q", data, 72, 1 << 5)
    return bytes(data)


def vmdk_flat_host_file(b: Builder) -> bytes:
    # qemu-img create -o subformat=monolithicFlat makes a text-only descriptor plus a -flat file; the
    # descriptor's FLAT extent is then pointed at /etc/passwd: the guest disk would be a host file
    # (OSSA-2023-002, CVE-2022-47951; declared raw, CVE-2024-40767 / OSSA-2024-002). The file is 337 bytes of
    # text. oslo refuses it as an unsupported subformat before its extent check (no "/" in an extent name)
    # would. Unsafe.
    b.run("qemu-img", "create", "-q", "-f", "vmdk", "-o", "subformat=monolithicFlat", "flat.vmdk", "1M")
    text = b.read("flat.vmdk")
    assert b'FLAT "flat-flat.vmdk" 0' in text
    return text.replace(b'"flat-flat.vmdk"', b'"/etc/passwd"')


def vmdk_parent(b: Builder) -> bytes:
    # qemu-img create -f vmdk -b base.vmdk -F vmdk: a monolithicSparse child whose descriptor says
    # parentCID=... and parentFileNameHint="base.vmdk", so qemu opens a second file (a backing file, like
    # qcow2's). oslo's safety_check PASSES this one: its descriptor check only looks at extent lines, and
    # parentFileNameHint is a plain header field. Kova refuses it itself. Unsafe.
    b.run("qemu-img", "create", "-q", "-f", "vmdk", "base.vmdk", "1M")
    b.run("qemu-img", "create", "-q", "-f", "vmdk", "-b", "base.vmdk", "-F", "vmdk", "child.vmdk")
    data = b.read("child.vmdk")
    assert b'parentFileNameHint="base.vmdk"' in data
    return data


def vmdk_stream_bad_footer(b: Builder) -> bytes:
    # The footer VMDK above with the footer's descriptor size (header offset 36) changed from the header's:
    # the footer takes precedence in qemu, so a streaming inspector that read the header saw a different
    # image (OSSA-2024-001). oslo's footer check fails. Unsafe.
    def shrink_descriptor(footer: bytearray) -> None:
        assert struct.unpack_from("<Q", footer, 36)[0] > 1
        struct.pack_into("<Q", footer, 36, 1)

    return with_footer(b.vmdk_stream(), shrink_descriptor)


def qed(b: Builder) -> bytes:
    # qemu-img convert -O qed: a format oslo recognises only to ban it (it also has backing files). Unsafe.
    return b.convert("disk.qed", "qed", "cluster_size=4096")


def luks(b: Builder) -> bytes:
    # qemu-img create -f luks (LUKS version 1, aes-128-cbc-essiv so the one key slot is 64 KB): an encrypted
    # disk, whose contents cannot be inspected without the passphrase. oslo's own safety_check PASSES it (its
    # checks: LUKS version 1, and the passphrase if one is given; none is); Glance has no "luks" disk format
    # and Kova refuses it as unsafe. The payload is left sparse (never written), so the file compresses to
    # little more than the key slot. Unsafe.
    # qemu times PBKDF2 to pick an iteration count and gives up ("Unable to get accurate CPU usage") when a
    # round takes less than a clock tick, as it can on a fast machine: try again.
    for attempt in range(5):
        try:
            b.run("qemu-img", "create", "-q", "-f", "luks", "--object", f"secret,id=s0,data={SECRET}",
                  "-o", "key-secret=s0,iter-time=10,cipher-alg=aes-128,cipher-mode=cbc,ivgen-alg=essiv,"
                        "ivgen-hash-alg=sha256", "disk.luks", "1M")
            break
        except subprocess.CalledProcessError:
            if attempt == 4:
                raise
    return b.read("disk.luks")


def gpt_hybrid_mbr(b: Builder) -> bytes:
    # The GPT disk above after `sgdisk -h 1`: a hybrid MBR, the 0xEE entry plus an MBR entry for partition 1,
    # so MBR-only and GPT readers see different disks. oslo: "GPT MBR defines invalid extra partitions". Unsafe.
    (b.work / "hybrid.raw").write_bytes(b.gpt_disk())
    b.run("sgdisk", "-h", "1", "hybrid.raw")
    return b.read("hybrid.raw")


def gpt_bad_pmbr_start(b: Builder) -> bytes:
    # The GPT disk above with its protective MBR's 0xEE entry starting at LBA 2048 instead of 1 (byte patch at
    # 446 + 8). oslo: "GPT MBR has invalid start LBA". Unsafe.
    data = bytearray(b.gpt_disk())
    assert data[446 + 4] == 0xEE and struct.unpack_from("<I", data, 446 + 8)[0] == 1
    struct.pack_into("<I", data, 446 + 8, 2048)
    return bytes(data)


def iso_qcow2(b: Builder) -> bytes:
    # An empty 1 MiB qcow2 (12 KiB with 4 KiB clusters) copied into the ISO's 32 KiB system area with
    # xorriso -G: the same file is an ISO (primary volume descriptor at 32 KiB) and a qcow2 (magic at 0), and
    # which one a reader sees depends on who probes (OSSA-2024-001, multiple formats). Unsafe.
    b.run("qemu-img", "create", "-q", "-f", "qcow2", "-o", "cluster_size=4096", "inner.qcow2", "1M")
    assert len(b.read("inner.qcow2")) <= 32 * 1024
    b.run("xorriso", "-as", "mkisofs", "-quiet", "-V", "KOVA", "-G", "inner.qcow2", "-o", "polyglot.iso",
          b.iso_dir())
    return b.read("polyglot.iso")


def qcow2_mbr(b: Builder) -> bytes:
    # The qcow2 v3 above with the MBR disk's disk id, partition table and 0x55AA signature (bytes 440..512)
    # copied into the unused rest of its header cluster: qemu still reads a qcow2, oslo matches qcow2 and gpt
    # (OSSA-2024-001, multiple formats). Unsafe.
    data = bytearray(b.qcow2("1.1"))
    assert data[112:512] == bytes(400)  # after the 112-byte header and its (empty) extension list
    data[440:512] = b.mbr_disk()[440:512]
    return bytes(data)


# File stem (tests/corpus/<stem>.img.gz) → how to make it.
IMAGES: dict[str, Callable[[Builder], bytes]] = {
    "raw": raw,
    "qcow2-v2": qcow2_v2,
    "qcow2-v3": qcow2_v3,
    "vmdk-sparse": vmdk_sparse,
    "vmdk-stream": vmdk_stream,
    "vmdk-stream-footer": vmdk_stream_footer,
    "vhd-dynamic": vhd_dynamic,
    "vhd-fixed": vhd_fixed,
    "vhdx": vhdx,
    "vdi": vdi,
    "iso": iso,
    "iso-hybrid": iso_hybrid,
    "gpt": gpt,
    "mbr": mbr,
    "qcow2-backing-file": qcow2_backing_file,
    "qcow2-data-file": qcow2_data_file,
    "qcow2-unknown-feature": qcow2_unknown_feature,
    "vmdk-flat-host-file": vmdk_flat_host_file,
    "vmdk-parent": vmdk_parent,
    "vmdk-stream-bad-footer": vmdk_stream_bad_footer,
    "qed": qed,
    "luks": luks,
    "gpt-hybrid-mbr": gpt_hybrid_mbr,
    "gpt-bad-pmbr-start": gpt_bad_pmbr_start,
    "iso-qcow2": iso_qcow2,
    "qcow2-mbr": qcow2_mbr,
}


def main() -> int:
    missing = [tool for tool in TOOLS if shutil.which(tool, path=ENV["PATH"]) is None]
    if missing:
        print(f"missing tools: {', '.join(missing)} (apt-get install qemu-utils xorriso gdisk fdisk)",
              file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="kova-corpus-") as tmp:
        builder = Builder(Path(tmp))
        written = set()
        for stem, make in IMAGES.items():
            data = make(builder)
            target = HERE / f"{stem}.img.gz"
            target.write_bytes(gzip.compress(data, compresslevel=9, mtime=0))
            written.add(target.name)
            print(f"{target.name:32} {len(data):>9} bytes, {target.stat().st_size:>7} gzipped")
    for stale in sorted(HERE.glob("*.img.gz")):
        if stale.name not in written:
            print(f"removing {stale.name}, which no case makes any more")
            stale.unlink()
    return 0


if __name__ == "__main__":
    sys.exit(main())
