"""The import filter (SSRF): address classification and rules as pure functions, and the fetcher against
loopback listeners that count the connections they receive. No test here sends a packet off 127.0.0.0/8:
non-loopback addresses only ever reach the pure functions, or a fake resolver whose answers are refused."""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator

import pytest

from kova.adapters.http import Fetcher
from kova.image.filter import (
    ImportFilter,
    NotAllowed,
    Rule,
    check,
    embedded_ipv4,
    non_public,
    parse_ip,
    refusal_before_resolving,
)
from tests.httpsource import Listener


# ---------------------------------------------------------------------------------------------- pure
@pytest.mark.parametrize(("address", "kind"), [
    ("127.0.0.1", "loopback"), ("127.255.0.9", "loopback"), ("::1", "loopback"),
    ("169.254.169.254", "link-local"), ("fe80::1", "link-local"),
    ("0.0.0.0", "unspecified"), ("::", "unspecified"),
    ("224.0.0.251", "multicast"), ("ff02::1", "multicast"),
    ("10.1.2.3", "private"), ("172.16.0.1", "private"), ("172.31.255.255", "private"), ("192.168.1.1", "private"),
    ("fd00::1", "private"), ("100.64.0.1", "non-public"),
    ("::ffff:127.0.0.1", "loopback (inside ::ffff:7f00:1)"),
    ("::ffff:169.254.169.254", "link-local (inside ::ffff:a9fe:a9fe)"),
    ("2002:a9fe:a9fe::1", "link-local (inside 2002:a9fe:a9fe::1)"),  # 6to4 of the metadata service
    ("64:ff9b::a00:1", "private (inside 64:ff9b::a00:1)"),  # NAT64 of 10.0.0.1
    ("8.8.8.8", None), ("2606:4700::1111", None), ("172.32.0.1", None), ("::ffff:8.8.8.8", None),
])
def test_address_classification(address: str, kind: str | None) -> None:
    assert non_public(ipaddress.ip_address(address)) == kind


@pytest.mark.parametrize(("spelling", "address"), [
    ("2130706433", "127.0.0.1"), ("0177.0.0.1", "127.0.0.1"), ("0x7f.0.0.1", "127.0.0.1"), ("0x7f000001", "127.0.0.1"),
    ("127.1", "127.0.0.1"), ("017700000001", "127.0.0.1"), ("0251.0376.0251.0376", "169.254.169.254"),
    ("2852039166", "169.254.169.254"), ("[::ffff:a9fe:a9fe]", "::ffff:a9fe:a9fe"), ("[::1]", "::1"),
    ("example.org", None), ("0x7f.example", None), ("1.2.3.4.5", None), ("256.1.1.1.1", None),
])
def test_ip_spellings_are_normalised_without_resolving(spelling: str, address: str | None) -> None:
    parsed = parse_ip(spelling)
    assert (str(parsed) if parsed else None) == address


def test_embedded_ipv4_forms() -> None:
    assert embedded_ipv4(ipaddress.ip_address("2001:0:4136:e378:8000:63bf:3fff:fdd2")) == \
        ipaddress.ip_address("192.0.2.45")  # Teredo (RFC 4380's example)
    assert embedded_ipv4(ipaddress.ip_address("2001:db8::1")) is None
    assert embedded_ipv4(ipaddress.ip_address("10.0.0.1")) is None


def never_resolve(host: str, port: int) -> list[str]:
    raise AssertionError(f"{host} should not have been resolved")


def fixed(*answers: str) -> object:
    def resolve(host: str, port: int) -> list[str]:
        return list(answers)
    return resolve


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/", "http://[fd00:ec2::254]/", "http://2852039166/",
    "http://0251.0376.0251.0376/", "http://[::ffff:169.254.169.254]/", "http://127.0.0.1:9090/metrics",
    "http://0.0.0.0:8080/", "http://10.0.0.1/", "http://[::]/", "http://[fe80::1%25eth0]/",
])
def test_default_filter_refuses_non_public_literals(url: str) -> None:
    with pytest.raises(NotAllowed, match="address; allow it with KOVA_IMPORT_ALLOWED_HOSTS"):
        check(url, ImportFilter(), never_resolve)


def test_names_are_resolved_once_and_every_answer_checked() -> None:
    calls: list[str] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return ["10.0.0.7", "192.168.0.1"]
    with pytest.raises(NotAllowed, match=r"10\.0\.0\.7 is a private address.*192\.168\.0\.1 is a private"):
        check("https://images.internal/disk.qcow2", ImportFilter(), resolve)
    assert calls == ["images.internal"]
    # A name with a public and a private answer: the connection goes to the public, checked one.
    target = check("https://mirror.example/x", ImportFilter(), fixed("10.0.0.7", "93.184.215.14"))  # type: ignore[arg-type]
    assert (str(target.ip), target.host, target.port, target.path) == ("93.184.215.14", "mirror.example", 443, "/x")


@pytest.mark.parametrize(("url", "message"), [
    ("ftp://example.org/disk.img", "scheme 'ftp' is not allowed"),
    ("file:///etc/passwd", "scheme 'file' is not allowed"),
    ("gopher://example.org/", "scheme 'gopher' is not allowed"),
    ("http:///nohost", "no host"),
    ("http://example.org:99999/", "Port out of range"),
])
def test_urls_refused_before_resolving(url: str, message: str) -> None:
    with pytest.raises(NotAllowed, match=message):
        check(url, ImportFilter(), never_resolve)


def test_allowed_schemes_and_ports() -> None:
    rules = ImportFilter.parse(schemes="https", ports="443,8443")
    with pytest.raises(NotAllowed, match="scheme 'http' is not allowed"):
        check("http://example.org/", rules, never_resolve)
    with pytest.raises(NotAllowed, match="port 444 is not allowed"):
        check("https://example.org:444/", rules, never_resolve)
    assert check("https://example.org:8443/a?b=c", rules, fixed("93.184.215.14")).path == "/a?b=c"  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="not supported"):
        ImportFilter.parse(schemes="http,ftp")


@pytest.mark.parametrize(("text", "host", "network", "port"), [
    ("mirror.example", "mirror.example", None, None), ("Mirror.Example.:8080", "mirror.example", None, 8080),
    ("10.0.0.0/8", None, "10.0.0.0/8", None), ("10.1.2.3", None, "10.1.2.3/32", None),
    ("10.1.2.3:80", None, "10.1.2.3/32", 80), ("[fd00::1]:443", None, "fd00::1/128", 443),
    ("fd00::/8", None, "fd00::/8", None), ("::1", None, "::1/128", None), ("2130706433", None, "127.0.0.1/32", None),
])
def test_rule_parsing(text: str, host: str | None, network: str | None, port: int | None) -> None:
    rule = Rule.parse(text)
    assert (rule.host, str(rule.network) if rule.network else None, rule.port) == (host, network, port)


@pytest.mark.parametrize("text", ["a b", "host:port", "host:0", "10.0.0.0/33", "[::1]:70000", "http://x"])
def test_bad_rules_are_refused_at_start(text: str) -> None:
    with pytest.raises(ValueError):
        ImportFilter.from_env({"KOVA_IMPORT_ALLOWED_HOSTS": text})


def test_most_specific_entry_decides_and_deny_wins_ties() -> None:
    ip = ipaddress.ip_address
    rules = ImportFilter.parse(allowed="10.0.0.0/8,mirror.internal,192.168.1.5:8080",
                               denied="10.9.0.0/16,8.8.8.8,0.0.0.0/0,192.168.1.5")
    assert rules.refusal("x", ip("10.1.1.1"), 80) is None  # the allow entry opens a private range
    assert "denied by KOVA_IMPORT_DENIED_HOSTS entry '10.9.0.0/16'" in (rules.refusal("x", ip("10.9.1.1"), 80) or "")
    assert rules.refusal("x", ip("8.8.8.8"), 443) is not None  # a denied public address
    assert rules.refusal("x", ip("1.1.1.1"), 443) is not None  # 0.0.0.0/0: only what is allowed
    assert rules.refusal("mirror.internal", ip("172.16.0.9"), 443) is None  # a host name is most specific
    assert rules.refusal("x", ip("192.168.1.5"), 8080) is None  # host:port beats host
    assert rules.refusal("x", ip("192.168.1.5"), 80) is not None
    tie = ImportFilter.parse(allowed="10.0.0.0/8", denied="10.0.0.0/8")
    assert tie.refusal("x", ip("10.0.0.1"), 80) is not None
    public = ImportFilter()
    assert public.refusal("x", ip("93.184.215.14"), 443) is None
    assert public.refusal("x", ip("::ffff:10.0.0.1"), 443) is not None


def test_settings_from_the_environment() -> None:
    rules = ImportFilter.from_env({"KOVA_IMPORT_ALLOWED_SCHEMES": "https", "KOVA_IMPORT_ALLOWED_PORTS": "443",
                                   "KOVA_IMPORT_ALLOWED_HOSTS": "127.0.0.1:8321, mirror.lan",
                                   "KOVA_IMPORT_DENIED_HOSTS": "203.0.113.0/24"})
    assert rules.schemes == {"https"} and rules.ports == {443}
    assert [r.text.strip() for r in rules.allowed] == ["127.0.0.1:8321", "mirror.lan"]
    assert ImportFilter.from_env({}) == ImportFilter()


# ---------------------------------------------------------------------------------------------- loopback
@pytest.fixture
def listener() -> Iterator[Listener]:
    ears = Listener()
    yield ears
    ears.close()


def test_a_refused_loopback_target_is_never_connected_to(listener: Listener) -> None:
    for url in (listener.url(), f"http://localhost:{listener.port}/disk", f"http://2130706433:{listener.port}/",
                f"http://0x7f.1:{listener.port}/", f"http://[::ffff:127.0.0.1]:{listener.port}/"):
        with pytest.raises(NotAllowed):
            Fetcher().open(url)
    assert listener.connections == 0


def test_an_allowed_target_is_fetched_with_its_host_header(listener: Listener) -> None:
    rules = ImportFilter.parse(allowed=f"127.0.0.1:{listener.port}")
    resp = Fetcher(rules).open(listener.url())
    assert (resp.status, resp.read()) == (200, b"disk")
    resp.release_conn()
    # Another port of the same address is not covered by a host:port entry.
    with pytest.raises(NotAllowed):
        Fetcher(rules).open(f"http://127.0.0.1:{listener.port % 65535 + 1}/")
    # A name: resolved by the fetcher, connected to by address, the Host header still the name.
    named = ImportFilter.parse(allowed=f"disks.test:{listener.port}")
    resp = Fetcher(named, resolve=fixed("127.0.0.1")).open(f"http://disks.test:{listener.port}/disk")  # type: ignore[arg-type]
    assert resp.read() == b"disk"
    assert listener.hosts[-1] == f"disks.test:{listener.port}"


def test_each_redirect_hop_is_checked() -> None:
    inner = Listener()  # not allowed: the redirect must not reach it
    outer = Listener(redirect_to=inner.url("/secret"))
    try:
        rules = ImportFilter.parse(allowed=f"127.0.0.1:{outer.port}")
        with pytest.raises(NotAllowed, match=f"127.0.0.1:{inner.port}/secret: 127.0.0.1 is a loopback address"):
            Fetcher(rules).open(outer.url())
        assert (outer.connections, inner.connections) == (1, 0)
        # Allowed, the hop is followed.
        both = ImportFilter.parse(allowed=f"127.0.0.1:{outer.port},127.0.0.1:{inner.port}")
        assert Fetcher(both).open(outer.url()).read() == b"disk"
        assert inner.connections == 1
    finally:
        inner.close()
        outer.close()


def test_redirect_loops_stop_after_five_hops() -> None:
    looping = Listener(redirect_to="/again")
    try:
        rules = ImportFilter.parse(allowed=f"127.0.0.1:{looping.port}")
        with pytest.raises(NotAllowed, match="more than 5 redirects"):
            Fetcher(rules).open(looping.url())
        assert len(looping.hosts) == 6
    finally:
        looping.close()


def test_dns_answers_are_used_once_no_rebinding() -> None:
    """The name is resolved once per hop and the checked address is the one connected to: a resolver
    that answers a public address first and loopback afterwards (DNS rebinding) never gets its second
    answer used."""
    allowed = Listener("127.0.0.1")
    rebound = Listener("127.0.0.2")
    answers = iter(["127.0.0.1", "127.0.0.2", "127.0.0.2"])
    calls = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append(host)
        return [next(answers)]
    try:
        rules = ImportFilter.parse(allowed=f"127.0.0.1/32,rebind.test:{allowed.port}", denied="127.0.0.2")
        resp = Fetcher(rules, resolve=resolve).open(f"http://rebind.test:{allowed.port}/disk")
        assert resp.read() == b"disk"
        assert (calls, allowed.connections, rebound.connections) == (["rebind.test"], 1, 0)
    finally:
        allowed.close()
        rebound.close()


def test_the_source_bytes_are_taken_as_sent_never_decoded() -> None:
    """A source that answers gzip anyway: the image is the bytes it sent (hashes and format checks are of
    them), and a small gzip bomb is never inflated."""
    import gzip

    bomb = gzip.compress(b"\0" * (64 << 20))  # 64 MiB of zeros in ~64 KiB
    source = Listener(body=bomb, headers={"Content-Encoding": "gzip"})
    try:
        resp = Fetcher(ImportFilter.parse(allowed=f"127.0.0.1:{source.port}")).open(source.url())
        got = resp.read(len(bomb) + 1)
        assert got == bomb and len(got) < 1 << 20
        assert source.accept_encodings == ["identity"]
    finally:
        source.close()


def test_the_image_api_refuses_what_the_filter_refuses_before_any_lookup() -> None:
    rules = ImportFilter.parse(allowed="127.0.0.1:8080")
    assert refusal_before_resolving("http://127.0.0.1:8080/disk", rules) is None
    assert refusal_before_resolving("https://images.example.org/disk", rules) is None  # checked on every hop
    for url, words in (("http://169.254.169.254/latest/meta-data/", "link-local"),
                       ("http://127.0.0.1:9000/", "loopback"), ("ftp://x/disk", "scheme"),
                       ("http://[::ffff:10.0.0.1]/", "private")):
        refusal = refusal_before_resolving(url, rules)
        assert refusal is not None and words in refusal, (url, refusal)
