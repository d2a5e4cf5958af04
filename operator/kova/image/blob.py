"""What the verified pipeline records about an image's bytes (the store keeps it beside them)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Blob:
    """What was verified about an image's bytes while they streamed into the store."""

    size: int
    md5: str
    sha512: str
    sha256: str | None
    disk_format: str
    virtual_size: int | None
    source: str
