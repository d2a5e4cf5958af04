"""Settings from environment variables: a bad value stops the start with the variable's name and what it
takes, instead of a traceback from deep inside (or a silent default)."""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Callable, Mapping
from typing import TypeVar

from kova.api.quantity import InvalidQuantity, parse_size
from kova.api.resources import DNS_LABEL

T = TypeVar("T")
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network


class BadSetting(RuntimeError):
    """An environment variable whose value Kova cannot use."""


def get(name: str, parse: Callable[[str], T], default: T, what: str, env: Mapping[str, str] | None = None) -> T:
    """The parsed value of `name`, or `default` when it is unset or empty."""
    text = (os.environ if env is None else env).get(name, "").strip()
    if not text:
        return default
    try:
        return parse(text)
    except (ValueError, InvalidQuantity) as e:
        raise BadSetting(f"{name}={text!r} is not {what}" + (f": {e}" if str(e) and "invalid literal" not in str(e)
                                                               and text not in str(e) else "")) from None


def integer(name: str, default: int, minimum: int | None = None, env: Mapping[str, str] | None = None) -> int:
    value = get(name, int, default, "a whole number", env)
    if minimum is not None and value < minimum:
        raise BadSetting(f"{name}={value} is below its minimum of {minimum}")
    return value


def number(name: str, default: float, minimum: float = 0.0, env: Mapping[str, str] | None = None) -> float:
    value = get(name, float, default, "a number", env)
    if value < minimum or value != value:  # NaN compares unequal to itself
        raise BadSetting(f"{name}={value} is below its minimum of {minimum}")
    return value


def size(name: str, default: int, env: Mapping[str, str] | None = None) -> int:
    return get(name, parse_size, default, "a size: bytes, or a quantity such as 100Gi", env)


def flag(name: str, default: bool, env: Mapping[str, str] | None = None) -> bool:
    def parse(text: str) -> bool:
        low = text.lower()
        if low in ("1", "true", "yes", "on"):
            return True
        if low in ("0", "false", "no", "off"):
            return False
        raise ValueError(text)
    return get(name, parse, default, "true or false", env)


def names(name: str, env: Mapping[str, str] | None = None) -> frozenset[str]:
    """A comma-separated list of namespace names (DNS labels), empty when unset."""
    def parse(text: str) -> frozenset[str]:
        found = frozenset(n.strip() for n in text.split(",") if n.strip())
        bad = sorted(n for n in found if not DNS_LABEL.match(n))
        if bad:
            raise ValueError(f"{', '.join(bad)} is not a namespace name")
        return found
    return get(name, parse, frozenset(), "a comma-separated list of namespaces", env)


def numbers(name: str, env: Mapping[str, str] | None = None) -> list[float] | None:
    """A comma-separated list of non-negative numbers (seconds), or None when unset."""
    def parse(text: str) -> list[float]:
        values = [float(x) for x in text.split(",")]
        if any(v < 0 or v != v for v in values):
            raise ValueError("negative")
        return values
    return get(name, parse, None, "a comma-separated list of seconds such as 1,2,5", env)


def networks(name: str, env: Mapping[str, str] | None = None) -> tuple[IPNetwork, ...]:
    """A comma-separated list of IP addresses and networks (CIDR), IPv4 or IPv6, empty when unset. An address
    is a network of one (/32, /128); bits past the prefix are dropped, as the import filter does
    (10.1.2.3/8 is 10.0.0.0/8). A host name is refused: what it is checked against is a peer's address."""
    def parse(text: str) -> tuple[IPNetwork, ...]:
        found: list[IPNetwork] = []
        bad: list[str] = []
        for entry in (e.strip() for e in text.split(",")):
            if not entry:
                continue
            try:
                found.append(ipaddress.ip_network(entry, strict=False))
            except ValueError:
                bad.append(entry)
        if bad:
            raise ValueError(f"{bad[0]} is not an IP address or network" if len(bad) == 1
                             else f"{', '.join(bad)} are not IP addresses or networks")
        return tuple(found)
    return get(name, parse, (), "a comma-separated list of IP addresses or networks such as 10.0.0.0/8,fd00::/8", env)
