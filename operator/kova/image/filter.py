"""Web-download that a tenant cannot turn against the cluster (SSRF), like Glance's import filtering.

A tenant names the URL and the operator fetches it from inside the cluster, so without a filter an Image
could read the operator's metrics, the cloud's metadata service (169.254.169.254) or any internal service,
and keep the answer as an image to boot or download. Every hop is checked before a connection is opened:

- the scheme and the port must be allowed;
- the host is resolved once, each address is checked, and the connection goes to the checked address
  (Host header and TLS name still the URL's), so a DNS answer that changes in between is never used;
- redirects are followed hop by hop (kova.adapters.http), each hop checked the same way.

Addresses are refused by default when they are not public: loopback, link-local, private, unspecified,
multicast, reserved (also inside IPv4-mapped, 6to4, Teredo and NAT64 IPv6 addresses). Operators add
entries to `KOVA_IMPORT_ALLOWED_HOSTS` and `KOVA_IMPORT_DENIED_HOSTS`: `host`, `host:port` or a CIDR.
The most specific entry that matches decides (a host name or a single address before a network, a longer
prefix before a shorter one, an entry with a port before one without); on a tie the denial wins. Any
entry is more specific than the default ranges, so an allow entry opens a private address, and
`KOVA_IMPORT_DENIED_HOSTS=0.0.0.0/0,::/0` with an allow list admits only the allowed hosts.
"""

from __future__ import annotations

import ipaddress
import re
import socket  # inet_aton only: parsing, no lookup
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from urllib.parse import urlsplit

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network
Resolver = Callable[[str, int], list[str]]
DEFAULT_PORTS = {"http": 80, "https": 443}
_NAT64 = ipaddress.ip_network("64:ff9b::/96")
_LEGACY_IPV4 = re.compile(r"^(0x[0-9a-f]*|[0-9]+)(\.(0x[0-9a-f]*|[0-9]+)){0,3}$", re.IGNORECASE)


class NotAllowed(Exception):
    """The URL, or a hop it redirects to, is refused by the import filter (nothing was connected to)."""


# ---------------------------------------------------------------------------------------------- addresses
def parse_ip(host: str) -> IPAddress | None:
    """`host` as an IP address if it spells one, including the legacy IPv4 forms that the C resolver
    accepts (`2130706433`, `0177.0.0.1`, `0x7f.1`, `127.1`); None for a host name. Nothing is resolved."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    if _LEGACY_IPV4.match(host):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(host))
        except OSError:
            return None
    return None


def embedded_ipv4(ip: IPAddress) -> ipaddress.IPv4Address | None:
    """The IPv4 address an IPv6 address carries to an IPv4 host (mapped, 6to4, Teredo, NAT64), if any."""
    if isinstance(ip, ipaddress.IPv4Address):
        return None
    if ip.ipv4_mapped:
        return ip.ipv4_mapped
    if ip.sixtofour:
        return ip.sixtofour
    if ip.teredo:
        return ip.teredo[1]
    if ip in _NAT64:
        return ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF)
    return None


def non_public(ip: IPAddress) -> str | None:
    """What kind of non-public address `ip` is (refused unless allowed), or None for a public one."""
    inner = embedded_ipv4(ip)
    if inner is not None:
        kind = non_public(inner)
        return f"{kind} (inside {ip})" if kind else None
    for kind, test in (("unspecified", ip.is_unspecified), ("loopback", ip.is_loopback),
                       ("link-local", ip.is_link_local), ("multicast", ip.is_multicast),
                       ("private", ip.is_private), ("reserved", ip.is_reserved)):
        if test:
            return kind
    return None if ip.is_global else "non-public"


# ---------------------------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class Rule:
    """One allow or deny entry: a host name, an address or a network, with or without a port."""

    text: str
    host: str | None = None
    network: IPNetwork | None = None
    port: int | None = None

    @classmethod
    def parse(cls, text: str) -> Rule:
        entry = text.strip().lower()
        port = None
        if "/" in entry:
            return cls(text, network=ipaddress.ip_network(entry, strict=False))
        if entry.startswith("["):  # [v6]:port or [v6]
            address, _, rest = entry[1:].partition("]")
            port = int(rest[1:]) if rest.startswith(":") else None
            entry = address
        elif entry.count(":") == 1:  # host:port or v4:port (a bare IPv6 address has several colons)
            entry, _, port_text = entry.partition(":")
            port = int(port_text)
        if port is not None and not 0 < port < 65536:
            raise ValueError(f"port out of range in {text!r}")
        ip = parse_ip(entry)
        if ip is not None:
            return cls(text, network=ipaddress.ip_network(ip), port=port)
        if not entry or not re.fullmatch(r"[a-z0-9_.-]+", entry):
            raise ValueError(f"{text!r} is not a host, host:port or CIDR entry")
        return cls(text, host=entry.rstrip("."), port=port)

    def matches(self, host: str, ip: IPAddress, port: int) -> bool:
        if self.port is not None and self.port != port:
            return False
        if self.host is not None:
            return self.host == host
        assert self.network is not None
        return ip.version == self.network.version and ip in self.network

    @property
    def specificity(self) -> tuple[float, int]:
        exact = 1.0 if self.network is None else self.network.prefixlen / self.network.max_prefixlen
        return (exact, self.port is not None)


def _rules(text: str) -> tuple[Rule, ...]:
    return tuple(Rule.parse(item) for item in text.split(",") if item.strip())


@dataclass(frozen=True)
class ImportFilter:
    schemes: frozenset[str] = frozenset(DEFAULT_PORTS)
    ports: frozenset[int] | None = None  # None: any port
    allowed: tuple[Rule, ...] = ()
    denied: tuple[Rule, ...] = ()

    @classmethod
    def parse(cls, schemes: str = "http,https", ports: str = "", allowed: str = "", denied: str = "") -> ImportFilter:
        wanted = frozenset(s.strip().lower() for s in schemes.split(",") if s.strip())
        unknown = wanted - set(DEFAULT_PORTS)
        if unknown:
            raise ValueError(f"import schemes {sorted(unknown)} are not supported (http, https)")
        port_set = frozenset(int(p) for p in ports.split(",") if p.strip()) or None
        return cls(wanted, port_set, _rules(allowed), _rules(denied))

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> ImportFilter:
        """Raises ValueError naming what is wrong."""
        return cls.parse(env.get("KOVA_IMPORT_ALLOWED_SCHEMES", "http,https"),
                         env.get("KOVA_IMPORT_ALLOWED_PORTS", ""), env.get("KOVA_IMPORT_ALLOWED_HOSTS", ""),
                         env.get("KOVA_IMPORT_DENIED_HOSTS", ""))

    def refusal(self, host: str, ip: IPAddress, port: int) -> str | None:
        """Why a connection to `ip`:`port` for `host` is refused, or None when it is allowed."""
        matches = [(rule.specificity, deny, rule) for deny, rules in ((False, self.allowed), (True, self.denied))
                   for rule in rules if rule.matches(host, ip, port)]
        if matches:
            _, deny, rule = max(matches, key=lambda m: (m[0], m[1]))  # most specific; on a tie, deny
            return f"{ip} is denied by KOVA_IMPORT_DENIED_HOSTS entry {rule.text!r}" if deny else None
        kind = non_public(ip)
        if kind:
            return f"{ip} is a {kind} address; allow it with KOVA_IMPORT_ALLOWED_HOSTS if it is meant to be reached"
        return None


# ---------------------------------------------------------------------------------------------- hops
@dataclass(frozen=True)
class Target:
    """A checked hop: connect to `ip`:`port`, while speaking to `host` (Host header, TLS name)."""

    url: str
    scheme: str
    host: str
    ip: IPAddress
    port: int
    path: str


def check(url: str, rules: ImportFilter, resolve: Resolver) -> Target:
    """Check one hop; resolves the host name once. Raises NotAllowed, or OSError when resolution fails."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in rules.schemes:
        raise NotAllowed(f"{url}: scheme {scheme or '(none)'!r} is not allowed "
                         f"(KOVA_IMPORT_ALLOWED_SCHEMES={','.join(sorted(rules.schemes))})")
    try:
        port = parts.port or DEFAULT_PORTS[scheme]
    except ValueError as e:
        raise NotAllowed(f"{url}: {e}") from e
    host = (parts.hostname or "").rstrip(".")
    if not host:
        raise NotAllowed(f"{url}: no host")
    if rules.ports is not None and port not in rules.ports:
        raise NotAllowed(f"{url}: port {port} is not allowed "
                         f"(KOVA_IMPORT_ALLOWED_PORTS={','.join(map(str, sorted(rules.ports)))})")
    literal = parse_ip(host)
    addresses = [literal] if literal else [ipaddress.ip_address(a.split("%")[0]) for a in resolve(host, port)]
    refusals = []
    for ip in addresses:
        why = rules.refusal(host, ip, port)
        if why is None:
            path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
            return Target(url, scheme, host, ip, port, path)
        refusals.append(why)
    raise NotAllowed(f"{url}: " + ("; ".join(refusals) if refusals else f"{host} has no address"))




class _Unresolved(Exception):
    pass


def refusal_before_resolving(url: str, rules: ImportFilter) -> str | None:
    """What the filter already says of a URL without looking its host up (scheme, port, an address written
    in it): the image API refuses those at once, as Glance does. A host name is checked on every hop of the
    import itself, so nothing is resolved here."""
    def unresolved(host: str, port: int) -> list[str]:
        raise _Unresolved(host)
    try:
        check(url, rules, unresolved)
    except NotAllowed as e:
        return str(e)
    except _Unresolved:
        return None
    return None
