"""The base URL `kova api` puts into its catalog, links and Locations: forwarding headers count only from a
trusted proxy (KOVA_API_TRUSTED_PROXIES), and then only the nearest proxy's well-formed values."""

from __future__ import annotations

import ipaddress
from typing import Any, cast
from unittest import mock

import pytest
from aiohttp.test_utils import make_mocked_request
from multidict import CIMultiDict

from kova.adapters import env
from kova.openstack.front import TRUSTED_PROXIES, Front, base_url

LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"),)
PROXIES = (ipaddress.ip_network("10.0.0.0/8"), ipaddress.ip_network("fd00::/8"))
EVIL = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


def url(headers: dict[str, str] | list[tuple[str, str]] | None = None, peer: str | None = "10.1.2.3",
        trusted: tuple[Any, ...] = PROXIES, public_url: str | None = None, scheme: str = "http",
        host: str = "kova-api:8780", forwarded: tuple[dict[str, str], ...] = ()) -> str:
    return base_url(public_url, peer, scheme, host, CIMultiDict(headers or {}), forwarded, trusted)


def test_without_trusted_proxies_the_url_is_the_requests_own() -> None:
    assert url() == "http://kova-api:8780"
    assert url(EVIL, trusted=()) == "http://kova-api:8780"
    assert url(EVIL, trusted=(), scheme="https") == "https://kova-api:8780"


def test_a_trusted_peer_says_the_scheme_and_host() -> None:
    assert url(EVIL) == "https://evil.example"
    assert url({"x-forwarded-host": "cloud.example:8443"}) == "http://cloud.example:8443"  # any case
    assert url({"X-Forwarded-Proto": "HTTPS"}) == "https://kova-api:8780"  # only what it says
    assert url({"X-Forwarded-Host": "10.0.0.1:443"}) == "http://10.0.0.1:443"


@pytest.mark.parametrize("peer", ["10.255.0.9x", "192.168.1.1", "11.0.0.1", "fe80::1", "", None, "/run/kova.sock"])
def test_an_untrusted_peer_is_not_believed(peer: str | None) -> None:
    assert url(EVIL, peer=peer) == "http://kova-api:8780"
    assert url(forwarded=({"proto": "https", "host": "evil.example"},), peer=peer) == "http://kova-api:8780"


@pytest.mark.parametrize(("peer", "trusted"), [
    ("fd00::7", True), ("fd12:3456::1", True), ("fe00::1", False),
    ("::ffff:10.0.0.1", True),  # an IPv4 proxy on a dual-stack socket
    ("::ffff:192.168.0.1", False),
    ("fd00::1%eth0", True),  # with its zone
    ("::1", False), ("::", False),
])
def test_ipv6_peers(peer: str, trusted: bool) -> None:
    assert url(EVIL, peer=peer) == ("https://evil.example" if trusted else "http://kova-api:8780")


def test_an_ipv4_network_never_matches_an_ipv6_peer_by_its_bits() -> None:
    assert url(EVIL, peer="::a00:1", trusted=(ipaddress.ip_network("10.0.0.0/8"),)) == "http://kova-api:8780"
    assert url(EVIL, peer="::1", trusted=(ipaddress.ip_network("::1/128"),)) == "https://evil.example"
    assert url(EVIL, peer="0.0.0.1", trusted=(ipaddress.ip_network("::/64"),)) == "http://kova-api:8780"


@pytest.mark.parametrize("host", [
    "evil.example/phish", "evil.example/", "user@evil.example", "evil.example?x=1", "evil.example#x",
    "evil example", "evil.example:0", "evil.example:65536", "evil.example:http", "evil.example:", "",
    "[::1", "[not:v6:at:all:g]", "::1", "[::1]x", "-evil.example", "evil..example", "evil.example.",
    "https://evil.example", "evil.example\r\nX-Other: 1", "a" * 64 + ".example", "é.example",
])
def test_a_forwarded_host_that_is_not_a_bare_host_and_port_is_ignored(host: str) -> None:
    assert url({"X-Forwarded-Host": host, "X-Forwarded-Proto": "https"}) == "https://kova-api:8780"


@pytest.mark.parametrize("host", ["[::1]", "[fd00::1]:8780", "[::ffff:10.0.0.1]", "a-b.c-d.example:1",
                                  "EVIL.example", "localhost"])
def test_hosts_that_are_taken(host: str) -> None:
    assert url({"X-Forwarded-Host": host}) == f"http://{host}"


@pytest.mark.parametrize("proto", ["ftp", "javascript", "", "https://", "http s", "wss", "on"])
def test_a_scheme_other_than_http_or_https_is_ignored(proto: str) -> None:
    assert url({"X-Forwarded-Proto": proto, "X-Forwarded-Host": "cloud.example"}) == "http://cloud.example"
    assert url({"X-Forwarded-Proto": proto}, scheme="https") == "https://kova-api:8780"


def test_of_several_values_the_nearest_proxys_counts_the_last() -> None:
    """What the client wrote comes first; the trusted proxy appends (or sets) the last value."""
    assert url({"X-Forwarded-Host": "evil.example, cloud.example", "X-Forwarded-Proto": "http,https"}) == \
        "https://cloud.example"
    assert url([("X-Forwarded-Host", "evil.example"), ("X-Forwarded-Host", "cloud.example"),
                ("X-Forwarded-Proto", "https"), ("X-Forwarded-Proto", "http")]) == "http://cloud.example"
    # A bad last value is not replaced by an earlier one: that came from someone the proxy does not vouch for.
    assert url({"X-Forwarded-Host": "cloud.example, evil.example/x", "X-Forwarded-Proto": "https, "}) == \
        "http://kova-api:8780"


def test_forwarded_rfc_7239() -> None:
    assert url(forwarded=({"for": "192.0.2.60", "proto": "https", "host": "cloud.example"},)) == \
        "https://cloud.example"
    # The last element is the nearest proxy's; one without proto or host leaves the request's own.
    assert url(forwarded=({"proto": "https", "host": "evil.example"}, {"for": "192.0.2.60"})) == \
        "http://kova-api:8780"
    assert url(forwarded=({"host": "evil.example"}, {"proto": "https", "host": "cloud.example"})) == \
        "https://cloud.example"
    assert url(forwarded=({"proto": "gopher", "host": "cloud.example/x"},)) == "http://kova-api:8780"


@pytest.mark.parametrize("header", ["X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port"])
def test_forwarded_counts_only_without_any_x_forwarded_header(header: str) -> None:
    """A proxy that writes X-Forwarded-* (ingress-nginx, Traefik, Envoy, cloud load balancers) passes a
    client's Forwarded header through: with one of them present, Forwarded is the client's word."""
    said = url({header: {"X-Forwarded-Proto": "http", "X-Forwarded-Host": "cloud.example"}.get(header, "1")},
               forwarded=({"proto": "https", "host": "evil.example"},))
    assert "evil.example" not in said and not said.startswith("https:")


def test_the_public_url_wins_over_everything() -> None:
    assert url(EVIL, public_url="https://cloud.example/") == "https://cloud.example"
    assert url(EVIL, public_url="https://cloud.example:8443/base", trusted=()) == "https://cloud.example:8443/base"


def request(headers: dict[str, str] | list[tuple[str, str]], peer: str | None) -> Any:
    transport = mock.Mock()
    transport.get_extra_info.side_effect = lambda key, default=None: {
        "peername": (peer, 40000) if peer else None, "sockname": ("127.0.0.1", 8780)}.get(key, default)
    return make_mocked_request("GET", "/identity/v3", headers=CIMultiDict([("Host", "127.0.0.1:8780"),
                                                                          *CIMultiDict(headers).items()]),
                               transport=transport)


def front(*trusted: str, public_url: str | None = None) -> Front:
    networks = env.networks(TRUSTED_PROXIES, {TRUSTED_PROXIES: ",".join(trusted)})
    return Front(cast(Any, None), cast(Any, None), public_url, networks)


def test_front_reads_the_peer_and_aiohttps_parse_of_forwarded() -> None:
    assert front("127.0.0.1/32").base(request(EVIL, "127.0.0.1")) == "https://evil.example"
    assert front().base(request(EVIL, "127.0.0.1")) == "http://127.0.0.1:8780"
    assert front("10.0.0.0/8").base(request(EVIL, "127.0.0.1")) == "http://127.0.0.1:8780"
    assert front("::1").base(request(EVIL, "::1")) == "https://evil.example"
    assert front("127.0.0.1").base(request(EVIL, None)) == "http://127.0.0.1:8780"
    assert front("127.0.0.1", public_url="https://cloud.example").base(request(EVIL, "127.0.0.1")) == \
        "https://cloud.example"
    # Forwarded: quoted strings (an IPv6 host must be quoted), several header lines, the last element.
    forwarded = [("Forwarded", 'for="[2001:db8::1]";proto=http;host=evil.example'),
                 ("Forwarded", 'for=192.0.2.1, for=10.0.0.2;proto=https;host="[fd00::1]:8443"')]
    assert front("127.0.0.1").base(request(forwarded, "127.0.0.1")) == "https://[fd00::1]:8443"
    assert front().base(request(forwarded, "127.0.0.1")) == "http://127.0.0.1:8780"
    garbled = [("Forwarded", 'proto=https;host=cloud.example, proto=https;host="evil.example'),
               ("X-Unrelated", "1")]
    assert front("127.0.0.1").base(request(garbled, "127.0.0.1")) == "https://127.0.0.1:8780"


def test_trusted_proxies_setting() -> None:
    def parse(text: str) -> list[str]:
        return [str(n) for n in env.networks(TRUSTED_PROXIES, {TRUSTED_PROXIES: text})]

    assert parse("") == [] and env.networks(TRUSTED_PROXIES, {}) == ()
    assert parse("127.0.0.1, 10.0.0.0/8,,fd00::/8 ,::1") == ["127.0.0.1/32", "10.0.0.0/8", "fd00::/8", "::1/128"]
    assert parse("10.1.2.3/8") == ["10.0.0.0/8"]  # as the import filter reads a CIDR


@pytest.mark.parametrize(("text", "said"), [
    ("10.0.0.0/33", "is not a comma-separated list of IP addresses or networks"),
    ("127.0.0.1,ingress.example", ": ingress.example is not an IP address or network"),
    ("ingress.example, 10.0.0.0/8, 300.1.1.1", ": ingress.example, 300.1.1.1 are not IP addresses or networks"),
    ("fd00::/129", "KOVA_API_TRUSTED_PROXIES='fd00::/129'"),
])
def test_a_bad_trusted_proxy_is_named(text: str, said: str) -> None:
    with pytest.raises(env.BadSetting, match=r"^KOVA_API_TRUSTED_PROXIES=") as caught:
        env.networks(TRUSTED_PROXIES, {TRUSTED_PROXIES: text})
    assert said in str(caught.value) and "\n" not in str(caught.value)
