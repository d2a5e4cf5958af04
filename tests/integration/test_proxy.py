"""`kova api` behind a proxy: X-Forwarded-* and Forwarded say the catalog's scheme and host only when the
TCP peer is in KOVA_API_TRUSTED_PROXIES (chart: api.trustedProxies). The forwarded host is only a string
put into the answers; every request here goes to 127.0.0.1."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from kova.adapters import env
from kova.openstack.front import TRUSTED_PROXIES
from tests.cloud.bench import LocalCloud
from tests.conftest import tenant_token
from tests.integration.test_chart import find, render

pytestmark = pytest.mark.integration
EVIL = {"X-Forwarded-Host": "evil.example", "X-Forwarded-Proto": "https"}


@pytest.fixture(scope="module")
def apis(cloud: LocalCloud) -> Iterator[dict[str, str]]:
    """Two `kova api`s with the chart's account: one trusting no proxy (the default), one trusting the
    loopback address the tests connect from."""
    kubeconfig = cloud.api_kubeconfig()
    procs = {"untrusted": cloud.start_api(kubeconfig, "api-untrusted", extra_env={TRUSTED_PROXIES: ""}),
             "trusted": cloud.start_api(kubeconfig, "api-trusted", extra_env={TRUSTED_PROXIES: "127.0.0.1/32"})}
    yield {k: f"http://127.0.0.1:{p.ports['http']}" for k, p in procs.items()}
    for p in procs.values():
        p.popen.terminate()
        p.popen.wait(timeout=30)


def call(url: str, headers: dict[str, str], body: Any = None) -> tuple[Any, dict[str, str]]:
    req = urllib.request.Request(url, method="GET" if body is None else "POST", headers={
        **headers, **({"Content-Type": "application/json"} if body is not None else {})},
        data=None if body is None else json.dumps(body).encode())
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:  # the version documents answer 300 Multiple Choices
        if e.code != 300:
            raise
        return json.loads(e.read()), dict(e.headers)


def identity_link(api: str, headers: dict[str, str]) -> str:
    return str(call(f"{api}/identity/v3", headers)[0]["version"]["links"][0]["href"])


def test_forwarding_headers_count_only_from_a_trusted_proxy(apis: dict[str, str]) -> None:
    untrusted, trusted = apis["untrusted"], apis["trusted"]
    assert identity_link(untrusted, EVIL) == f"{untrusted}/identity/v3/"
    assert identity_link(trusted, EVIL) == "https://evil.example/identity/v3/"
    assert identity_link(trusted, {}) == f"{trusted}/identity/v3/"
    # The nearest proxy's value (the last); a host with a path or an unknown scheme is ignored.
    assert identity_link(trusted, {"X-Forwarded-Host": "evil.example, cloud.example"}) == \
        "http://cloud.example/identity/v3/"
    assert identity_link(trusted, {"X-Forwarded-Host": "evil.example/phish", "X-Forwarded-Proto": "ftp"}) == \
        f"{trusted}/identity/v3/"
    # RFC 7239, from a proxy that sends no X-Forwarded-* header; with one, Forwarded is the client's.
    forwarded = {"Forwarded": 'for=192.0.2.1;proto=https;host="cloud.example:8443"'}
    assert identity_link(trusted, forwarded) == "https://cloud.example:8443/identity/v3/"
    assert identity_link(untrusted, forwarded) == f"{untrusted}/identity/v3/"
    assert identity_link(trusted, {**forwarded, "X-Forwarded-For": "192.0.2.1"}) == f"{trusted}/identity/v3/"
    # Glance's version document (no token needed) follows the same base.
    versions, _ = call(f"{trusted}/projects/p/image/versions", EVIL)
    assert versions["versions"][0]["links"][0]["href"] == "https://evil.example/projects/p/image/v2/"


def test_the_catalog_and_glance_locations_name_the_trusted_proxys_url(apis: dict[str, str], cloud: LocalCloud,
                                                                       namespace: str) -> None:
    token = tenant_token(cloud, namespace)
    auth = {"auth": {"identity": {"methods": ["token"], "token": {"id": token}},
                     "scope": {"project": {"name": namespace}}}}
    for which, base in (("untrusted", apis["untrusted"]), ("trusted", "https://evil.example")):
        api = apis[which]
        body, headers = call(f"{api}/identity/v3/auth/tokens", EVIL, auth)
        assert headers["X-Subject-Token"] == token
        urls = {e["url"] for s in body["token"]["catalog"] for e in s["endpoints"]}
        assert urls == {f"{base}/identity", f"{base}/projects/{namespace}/image",
                        f"{base}/projects/{namespace}/compute/v2.1"}, which
        image, headers = call(f"{api}/projects/{namespace}/image/v2/images", {**EVIL, "X-Auth-Token": token},
                              {"name": f"proxied-{which}", "disk_format": "qcow2", "container_format": "bare"})
        assert headers["Location"] == f"{base}/projects/{namespace}/image/v2/images/{image['id']}", which


def test_the_charts_trusted_proxies_reach_kova_api() -> None:
    def setting(*sets: str) -> str:
        container = find(render(*sets), "Deployment", "kova-api")["spec"]["template"]["spec"]["containers"][0]
        return str({e["name"]: e.get("value") for e in container["env"]}[TRUSTED_PROXIES])

    assert setting() == "" and env.networks(TRUSTED_PROXIES, {TRUSTED_PROXIES: setting()}) == ()
    given = setting("api.trustedProxies={10.244.0.0/16,fd00::/8,192.0.2.7}")
    assert [str(n) for n in env.networks(TRUSTED_PROXIES, {TRUSTED_PROXIES: given})] == [
        "10.244.0.0/16", "fd00::/8", "192.0.2.7/32"]
    with pytest.raises(AssertionError, match="schema"):
        render("api.trustedProxies={ingress.example}")  # an address, not a name: the peer is an address
