"""Disk format inspection with the library Glance and Nova use: oslo.utils' format_inspector.

A declared disk format cannot be trusted. CDI hands whatever bytes it downloads to qemu-img, so a "raw"
image that is really a qcow2 with a backing file, or a VMDK descriptor naming a host file, would make
qemu-img read files of the importer pod (OSSA-2023-002, OSSA-2024-001, CVE-2024-40767). Every inspector
sees each chunk once while the bytes stream to the store; the verdict comes at the end of the stream,
before anything becomes visible. Glance's rules, in order:

1. exactly one format must match: bytes that are two formats at once are refused whatever was declared
   (one exception: a hybrid ISO, an ISO with an MBR in its system area, declared `iso`);
2. the matched inspector's `safety_check()` must pass; on top of it a VMDK may not name a parent disk
   (`parentFileNameHint`, a backing file that Glance and Nova only catch with a later `qemu-img info`),
   and QED and LUKS are never accepted;
3. the detected format must be the declared one, with Glance's exception of a GPT/MBR disk declared raw,
   and Kova's of a fixed VHD (a raw disk with a 512-byte footer, as Azure and Hyper-V write it), which
   oslo alone reports as raw.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, cast

from oslo_utils.imageutils import format_inspector as fi

from kova.api.errors import Refusal

UNSAFE = "UnsafeImage"
INVALID = "InvalidDiskFormat"
VHD_FOOTER = 512
_NEVER = {"qed": "QED images are not accepted (no hypervisor supports them safely)",
          "luks": "LUKS-encrypted images are not accepted (Glance has no such disk format)"}


class Refused(Refusal):
    """The bytes are not an image Glance would accept; `reason` is UnsafeImage or InvalidDiskFormat."""


@dataclass(frozen=True)
class Verdict:
    format: str  # what the bytes are: raw, qcow2, vmdk, vhd, vhdx, vdi, iso, or gpt (a partitioned raw disk)
    virtual_size: int | None  # bytes of the disk the image unpacks to, from its header


def fixed_vhd_size(footer: bytes, size: int) -> int | None:
    """The disk size a fixed VHD's footer states, if `footer` (the last 512 bytes of `size` bytes) is one.

    A fixed VHD is the raw disk followed by a 512-byte big-endian footer: cookie `conectix`, disk type 2
    (fixed) at 60, current size at 48, and a one's-complement checksum at 64 (Microsoft's VHD spec)."""
    if len(footer) != VHD_FOOTER or footer[:8] != b"conectix":
        return None
    current_size, = struct.unpack(">Q", footer[48:56])
    disk_type, checksum = struct.unpack(">II", footer[60:68])
    computed = ~sum(footer[:64] + bytes(4) + footer[68:]) & 0xFFFFFFFF
    if disk_type != 2 or checksum != computed or current_size + VHD_FOOTER != size:
        return None
    return int(current_size)


class StreamInspector:
    """Wraps the chunks of an image as they stream by; `verdict()` once the stream has ended."""

    def __init__(self) -> None:
        self.size = 0
        self.tail = b""  # the last 512 bytes: a fixed VHD's footer, if it is one
        self._wrapper: fi.InspectWrapper | None = None

    def wrap(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        # InspectWrapper iterates its source with next(): any iterator of chunks will do (typed as IO).
        self._wrapper = fi.InspectWrapper(cast(IO[bytes], self._watch(chunks)))
        return self._wrapper

    def _watch(self, chunks: Iterator[bytes]) -> Iterator[bytes]:
        for chunk in chunks:
            self.size += len(chunk)
            self.tail = chunk[-VHD_FOOTER:] if len(chunk) >= VHD_FOOTER else (self.tail + chunk)[-VHD_FOOTER:]
            yield chunk

    def verdict(self, declared: str) -> Verdict:
        """What the bytes are, or Refused. Call after the wrapped stream is exhausted."""
        assert self._wrapper is not None, "wrap() the stream first"
        self._wrapper.close()  # marks the end of the stream; inspectors still waiting for data do not match
        matches = self._wrapper.formats or []
        names = sorted(str(m) for m in matches)
        if len(matches) > 1 and not (declared == "iso" and names == ["gpt", "iso"]):
            raise Refused(UNSAFE, f"the data is several formats at once ({', '.join(names)}); Glance refuses "
                                  "such images since OSSA-2024-001, whatever format is declared")
        for inspector in matches:
            _check_safety(inspector)
        found = next(m for m in matches if str(m) == "iso") if len(matches) > 1 else matches[0]
        name = str(found)
        if name == declared:
            return Verdict(name, found.virtual_size or (self.size if name == "raw" else None))
        if declared == "raw" and name == "gpt":
            return Verdict("gpt", self.size)  # Glance: a partitioned disk is a raw image
        if declared == "vhd" and name in ("raw", "gpt") and (vhd := fixed_vhd_size(self.tail, self.size)):
            return Verdict("vhd", vhd)
        raise Refused(INVALID, f"diskFormat is {declared} but the data is {name}")


def _check_safety(inspector: fi.FileInspector) -> None:
    name = str(inspector)
    if name in _NEVER:
        raise Refused(UNSAFE, _NEVER[name])
    try:
        inspector.safety_check()
    except fi.SafetyCheckFailed as e:
        failures = "; ".join(f"{check}: {failure}" for check, failure in sorted(e.failures.items()))
        subformat = getattr(inspector, "vmdktype", None)  # which VMDK: monolithicflat names host files
        detail = f", createType {subformat}" if isinstance(subformat, str) else ""
        raise Refused(UNSAFE, f"{name} image fails Glance's safety checks ({failures}{detail})") from e
    except fi.ImageFormatError as e:
        raise Refused(UNSAFE, f"{name} image cannot be checked: {e}") from e
    if isinstance(inspector, fi.VMDKInspector) and "parentfilenamehint" in (inspector.desc_text or ""):
        raise Refused(UNSAFE, "vmdk image names a parent disk (parentFileNameHint), a backing file that "
                              "qemu-img would open")
