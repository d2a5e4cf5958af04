"""Kubernetes quantities and sizes: one parser, one rounding to GiB."""

from __future__ import annotations

import re
from decimal import ROUND_CEILING, Decimal, InvalidOperation

GiB = 1 << 30
UNITS = {"": 1, "k": 10**3, "K": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "P": 10**15, "E": 10**18,
         "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30, "Ti": 1 << 40, "Pi": 1 << 50, "Ei": 1 << 60}
_QUANTITY = re.compile(r"([0-9]+(?:\.[0-9]*)?|\.[0-9]+)([KMGTPE]i|[kKMGTPE])?")


class InvalidQuantity(ValueError):
    """Text that is not a size: bytes, or a quantity such as `10Gi`, `2G` or `1.5Ti`."""


def parse_size(text: str) -> int:
    """Bytes (rounded up) from `1099511627776` or a Kubernetes quantity such as `10Gi`, `2G` or `1.5Ti`."""
    m = _QUANTITY.fullmatch(str(text).strip())
    if not m:
        raise InvalidQuantity(f"{text!r} is not a size: bytes, or a quantity such as 10Gi or 2G")
    try:
        value = Decimal(m.group(1)) * UNITS[m.group(2) or ""]
    except InvalidOperation:
        raise InvalidQuantity(f"{text!r} is not a size: bytes, or a quantity such as 10Gi or 2G") from None
    return int(value.to_integral_value(rounding=ROUND_CEILING))


def gib_ceil(size: int) -> int:
    """Whole GiB that hold `size` bytes."""
    return -(-size // GiB)


def gib(text: str) -> int:
    """GiB (rounded up) from a quantity such as `10Gi`, `2G` or `1073741824`."""
    return gib_ceil(parse_size(text))
