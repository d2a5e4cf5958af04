"""Keystone as OpenStack clients use it to find Nova, against `kova api` on the local cloud: the projects a
tenant may work in (and no other tenant's), the catalog with its compute endpoint, unscoped tokens scoped
afterwards, and the Default domain. The tenants are ServiceAccounts bound to `edit` in their namespace."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openstack
import pytest
from keystoneauth1 import session as ks_session
from keystoneauth1.identity import v3

from tests.cloud.bench import LocalCloud
from tests.conftest import tenant_token
from tests.integration.test_openstack import Cli


def call(url: str, token: str | None = None, body: Any = None) -> tuple[int, Any, dict[str, str]]:
    """(status, JSON body, headers) of a GET, or of a POST when there is a body."""
    headers = {"X-Auth-Token": token} if token else {}
    data = json.dumps(body).encode() if body is not None else None
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(url, data=data, headers=headers, method="POST" if data is not None else "GET")
    try:
        with urllib.request.urlopen(req, timeout=60) as resp:
            return int(resp.status), json.loads(resp.read()), dict(resp.headers)
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read() or b"null"), dict(e.headers)


@pytest.fixture
def other(cloud: LocalCloud, namespace: str) -> Iterator[str]:
    """Another tenant's namespace."""
    name = f"{namespace[:50]}-b"
    cloud.kubectl("create", "namespace", name)
    yield name
    cloud.kubectl("delete", "namespace", name, "--wait=false", check=False)


def test_a_tenant_lists_its_projects_and_not_another_tenants(api: str, cloud: LocalCloud, namespace: str,
                                                             other: str, tmp_path: Path) -> None:
    token, stranger = tenant_token(cloud, namespace), tenant_token(cloud, other)
    reader = tenant_token(cloud, other, role="view", name="reader-from-a")  # view in other, nothing else
    nobody = tenant_token(cloud, namespace, role="none")
    conn = openstack.connect(auth_type="password", auth={
        "auth_url": f"{api}/identity/v3", "username": "someone", "password": token, "project_name": namespace,
        "user_domain_name": "Default", "project_domain_name": "Default"}, region_name="RegionOne")
    mine = [p.id for p in conn.identity.user_projects(conn.current_user_id)]
    assert mine == [namespace]
    status, doc, _ = call(f"{api}/identity/v3/auth/projects", token)
    assert status == 200 and [p["id"] for p in doc["projects"]] == [namespace]
    assert doc["projects"][0]["domain_id"] == "default"
    status, doc, _ = call(f"{api}/identity/v3/auth/projects", stranger)
    assert [p["id"] for p in doc["projects"]] == [other]
    assert [p["id"] for p in call(f"{api}/identity/v3/auth/projects", reader)[1]["projects"]] == [other]
    assert call(f"{api}/identity/v3/auth/projects", nobody)[1]["projects"] == []
    assert call(f"{api}/identity/v3/auth/projects", "not-a-token")[0] == 401
    # Keystone lets a user list only their own projects.
    theirs = call(f"{api}/identity/v3/auth/tokens", body={"auth": {"identity": {
        "methods": ["token"], "token": {"id": stranger}}}})[1]["token"]["user"]["id"]
    assert theirs != conn.current_user_id
    assert call(f"{api}/identity/v3/users/{theirs}/projects", token)[0] == 403
    # The `openstack` CLI's own list.
    listed = Cli(api, token, namespace, tmp_path).json("project", "list", "--my-projects")
    assert [p["Name"] for p in listed] == [namespace]
    # Without --my-projects the CLI asks for every project; Keystone's 403 sends it to the caller's own.
    assert [p["Name"] for p in Cli(api, token, namespace, tmp_path).json("project", "list")] == [namespace]


def test_a_tenant_sees_more_than_one_project_with_its_own_first(api: str, cloud: LocalCloud, namespace: str,
                                                                other: str) -> None:
    token = tenant_token(cloud, namespace)
    cloud.kubectl("-n", other, "create", "rolebinding", "guest", "--clusterrole=view",
                  f"--serviceaccount={namespace}:os-edit")
    status, doc, _ = call(f"{api}/identity/v3/auth/projects", token)
    assert status == 200 and [p["id"] for p in doc["projects"]] == [namespace, other]


def test_the_catalog_has_compute_at_v2_1(api: str, cloud: LocalCloud, namespace: str) -> None:
    token = tenant_token(cloud, namespace)
    status, doc, _ = call(f"{api}/identity/v3/auth/catalog", token)
    assert status == 200
    compute = next(s for s in doc["catalog"] if s["type"] == "compute")
    assert compute["name"] == "nova"
    assert {(e["interface"], e["url"], e["region"], e["region_id"]) for e in compute["endpoints"]} == {
        (i, f"{api}/projects/{namespace}/compute/v2.1", "RegionOne", "RegionOne")
        for i in ("public", "internal", "admin")}
    assert call(f"{api}/identity/v3/auth/catalog")[0] == 401
    # keystoneauth finds it in the token's catalog, as novaclient and openstacksdk look it up.
    sess = ks_session.Session(auth=v3.Token(auth_url=f"{api}/identity/v3", token=token))
    assert sess.get_endpoint(service_type="compute", interface="public", region_name="RegionOne") == \
        f"{api}/projects/{namespace}/compute/v2.1"


def test_an_unscoped_token_then_one_scoped_by_name_in_default(api: str, cloud: LocalCloud, namespace: str) -> None:
    token = tenant_token(cloud, namespace)
    auth_url = f"{api}/identity/v3"
    unscoped = v3.Token(auth_url=auth_url, token=token, unscoped=True)
    access = unscoped.get_access(ks_session.Session(auth=unscoped))
    assert not access.scoped and access.project_id is None and access.user_id
    assert not access.service_catalog.get_endpoints() and not access.role_names
    status, doc, headers = call(f"{auth_url}/auth/tokens", body={"auth": {
        "identity": {"methods": ["token"], "token": {"id": token}}, "scope": "unscoped"}})
    assert status == 201 and set(doc["token"]) == {"methods", "issued_at", "expires_at", "audit_ids", "user"}
    assert headers["X-Subject-Token"] == token
    # With it, the projects it may scope to; then a token scoped to one by name, in domain Default.
    sess = ks_session.Session(auth=unscoped)
    listed = sess.get("/auth/projects", endpoint_filter={"service_type": "identity", "interface": "public"},
                      endpoint_override=auth_url).json()["projects"]
    assert [p["name"] for p in listed] == [namespace]
    for domain in ({"project_domain_name": "Default"}, {"project_domain_id": "default"}):
        scoped = v3.Token(auth_url=auth_url, token=access.auth_token, project_name=namespace, **domain)
        got = scoped.get_access(ks_session.Session(auth=scoped))
        assert got.project_id == namespace and got.project_domain_id == "default"
        assert set(got.role_names) == {"member", "reader"}
        assert got.service_catalog.url_for(service_type="compute", interface="public") == \
            f"{api}/projects/{namespace}/compute/v2.1"
    # The same project in another domain is not one Keystone knows.
    status, doc, _ = call(f"{auth_url}/auth/tokens", body={"auth": {
        "identity": {"methods": ["token"], "token": {"id": token}},
        "scope": {"project": {"name": namespace, "domain": {"name": "Engineering"}}}}})
    assert status == 401 and doc["error"]["code"] == 401


def test_the_default_domain(api: str, cloud: LocalCloud, namespace: str) -> None:
    token = tenant_token(cloud, namespace)
    conn = openstack.connect(auth_type="v3token", auth={"auth_url": f"{api}/identity/v3", "token": token},
                             region_name="RegionOne")
    assert conn.current_project_id == namespace  # a ServiceAccount token's own namespace, asked for none
    default = conn.identity.get_domain("default")
    assert (default.id, default.name, default.is_enabled) == ("default", "Default", True)
    found = conn.identity.find_domain("Default")
    assert found is not None and found.id == "default"
    assert [d.id for d in conn.identity.domains()] == ["default"]
    status, doc, _ = call(f"{api}/identity/v3/domains?name=Default", token)
    assert status == 200 and [d["id"] for d in doc["domains"]] == ["default"]
    assert call(f"{api}/identity/v3/domains/default")[0] == 401
    assert call(f"{api}/identity/v3/domains", "not-a-token")[0] == 401
