"""Nova's microversions (2.1 to 2.100): which one a request asks for, and how the answer says it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache, total_ordering

from kova.api.errors import StatusError

HEADER = "OpenStack-API-Version"
LEGACY_HEADER = "X-OpenStack-Nova-API-Version"


@total_ordering
@dataclass(frozen=True)
class Version:
    major: int
    minor: int

    def __lt__(self, other: object) -> bool:
        if not isinstance(other, Version):
            return NotImplemented
        return (self.major, self.minor) < (other.major, other.minor)

    def __str__(self) -> str:
        return f"{self.major}.{self.minor}"

    def at_least(self, text: str) -> bool:
        return self >= _constant(text)


MIN = Version(2, 1)
MAX = Version(2, 100)


class NotAcceptable(StatusError):
    """406: a version this API does not serve."""


def parse_number(text: str) -> Version:
    # Nova's APIVersionRequest: no leading zeros, ASCII digits only.
    match = re.fullmatch(r"([1-9][0-9]*)\.([1-9][0-9]*|0)", text.strip())
    if match is None:
        raise StatusError(400, f"Invalid API version request: {text!r}")
    return Version(int(match[1]), int(match[2]))


@lru_cache(maxsize=256)
def _constant(text: str) -> Version:
    """parse_number of the versions the views compare with ("2.47", "2.100"...): once each, not per server."""
    return parse_number(text)


def requested(headers: Mapping[str, str]) -> Version:
    """The version asked for: `OpenStack-API-Version: compute X` first, then the legacy header; none: 2.1.
    `latest` means 2.100; a version outside 2.1 to 2.100 is refused with 406, as Nova refuses it."""
    text: str | None = None
    for item in (headers.get(HEADER) or "").split(","):
        service, _, value = item.strip().partition(" ")
        if service.lower() == "compute" and value.strip():
            text = value.strip()
    if text is None:
        text = headers.get(LEGACY_HEADER)
    if not text:
        return MIN
    if text.lower() == "latest":
        return MAX
    version = parse_number(text)
    if not MIN <= version <= MAX:
        raise NotAcceptable(406, f"Version {version} is not supported by the API. Minimum is {MIN} and "
                                 f"maximum is {MAX}.")
    return version


def answer_headers(version: Version) -> dict[str, str]:
    return {HEADER: f"compute {version}", LEGACY_HEADER: str(version), "Vary": f"{HEADER}, {LEGACY_HEADER}"}
