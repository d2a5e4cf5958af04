"""Keystone v3 as OpenStack clients need it to reach Nova: the compute endpoint, unscoped tokens, scopes and
their domain, the projects a token may work in, the catalog of a token and the Default domain."""

from __future__ import annotations

import asyncio
import base64
import datetime as dt
import json
from typing import Any, cast

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient, TestServer, make_mocked_request

from kova.adapters.kubeapi import ApiError
from kova.openstack.identity import keystone
from kova.openstack.identity.handlers import ACCESS_CHECKS, IdentityHandlers

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
DEFAULT = {"id": "default", "name": "Default"}


def jwt(claims: dict[str, Any]) -> str:
    body = base64.urlsafe_b64encode(json.dumps(claims).encode()).decode().rstrip("=")
    return f"e30.{body}.sig"


SA_TOKEN = jwt({"sub": "system:serviceaccount:team-a:cli", "kubernetes.io": {"namespace": "team-a"}})
OIDC_TOKEN = jwt({"sub": "alice", "iss": "https://sso.example"})  # no namespace: not a ServiceAccount's


def auth(token: str, scope: Any = None, method: str = "token") -> dict[str, Any]:
    identity = ({"methods": ["token"], "token": {"id": token}} if method == "token" else
                {"methods": ["password"], "password": {"user": {"name": "x", "password": token,
                                                                "domain": {"name": "Default"}}}})
    return {"auth": {"identity": identity, **({"scope": scope} if scope is not None else {})}}


def test_the_catalog_has_nova_at_its_versioned_url() -> None:
    services = {s["type"]: s for s in keystone.catalog("https://cloud.example/", "team-a")}
    assert set(services) == {"identity", "image", "compute"}
    compute = services["compute"]
    assert compute["name"] == "nova"
    assert sorted(e["interface"] for e in compute["endpoints"]) == ["admin", "internal", "public"]
    for endpoint in compute["endpoints"]:
        assert endpoint["url"] == "https://cloud.example/projects/team-a/compute/v2.1"
        assert endpoint["region"] == endpoint["region_id"] == "RegionOne"
    ids = [e["id"] for s in services.values() for e in s["endpoints"]]
    assert len(set(ids)) == len(ids) == 9
    assert services["image"]["endpoints"][0]["url"] == "https://cloud.example/projects/team-a/image"


def test_a_scoped_token_carries_the_compute_endpoint() -> None:
    cred = keystone.credential(auth(SA_TOKEN, {"project": {"name": "team-a", "domain": {"name": "Default"}}}))
    body = keystone.token_body(cred, {"username": "u", "uid": "uid-1"}, "team-a", ["member", "reader"],
                               "http://h:1", NOW)["token"]
    assert body["project"] == {"id": "team-a", "name": "team-a", "domain": DEFAULT}
    assert {s["type"] for s in body["catalog"]} == {"identity", "image", "compute"}
    assert body["user"]["id"] == "uid-1" and body["roles"] == [{"id": "member", "name": "member"},
                                                               {"id": "reader", "name": "reader"}]


def test_an_unscoped_token_says_who_and_until_when_and_nothing_else() -> None:
    cred = keystone.credential(auth(OIDC_TOKEN, method="password"))
    assert keystone.scoped_project(cred) is None
    body = keystone.unscoped_token_body(cred, {"username": "alice"}, NOW)
    token = body["token"]
    assert set(token) == {"methods", "issued_at", "expires_at", "audit_ids", "user"}
    assert token["methods"] == ["password"] and token["issued_at"] == "2026-01-01T00:00:00.000000Z"
    assert token["expires_at"] == "2026-01-01T01:00:00.000000Z"
    assert token["user"]["name"] == "alice" and token["user"]["domain"] == DEFAULT
    assert token["user"]["id"] == keystone.user_id({"username": "alice"})  # the id /users/{id}/projects takes


def test_a_serviceaccount_token_without_a_scope_is_scoped_to_its_namespace_unless_it_asks_for_none() -> None:
    assert keystone.scoped_project(keystone.credential(auth(SA_TOKEN))) == "team-a"
    assert keystone.scoped_project(keystone.credential(auth(SA_TOKEN, {}))) == "team-a"
    # keystoneauth's `unscoped=True` sends the string "unscoped".
    assert keystone.scoped_project(keystone.credential(auth(SA_TOKEN, "unscoped"))) is None
    assert keystone.scoped_project(keystone.credential(auth(SA_TOKEN, {"project": {"id": "team-b"}}))) == "team-b"


@pytest.mark.parametrize("project", [
    {"id": "team-b"},
    {"name": "team-b"},  # without a domain, as Kova always took it
    {"name": "team-b", "domain": {"name": "Default"}},
    {"name": "team-b", "domain": {"name": "default"}},  # `--os-project-domain-name default`
    {"name": "team-b", "domain": {"id": "default"}},
    {"id": "team-b", "name": "team-b", "domain": {"id": "default"}},
])
def test_a_project_scope_by_id_or_by_name_in_default(project: dict[str, Any]) -> None:
    cred = keystone.credential(auth(OIDC_TOKEN, {"project": project}))
    assert keystone.scoped_project(cred) == "team-b"


@pytest.mark.parametrize("scope", [
    {"project": {"name": "team-b", "domain": {"name": "Engineering"}}},
    {"project": {"name": "team-b", "domain": {"id": "Default"}}},  # ids are not names
    {"project": {"id": "team-b", "domain": {"id": "e2f5"}}},
    {"project": {"name": "team-b", "domain": "Default"}},
    {"project": {"domain": {"id": "default"}}},  # which project?
    {"project": {"name": ""}},
    {"domain": {"id": "default"}},  # domain-scoped: no role on a domain
    {"system": {"all": True}},
    {"OS-TRUST:trust": {"id": "t"}},
    "everything",
])
def test_other_scopes_are_refused(scope: Any) -> None:
    with pytest.raises(keystone.AuthError):
        keystone.credential(auth(SA_TOKEN, scope))


def test_a_password_user_in_another_domain_is_refused() -> None:
    body = auth(SA_TOKEN, method="password")
    body["auth"]["identity"]["password"]["user"]["domain"] = {"name": "Engineering"}
    with pytest.raises(keystone.AuthError):
        keystone.credential(body)
    body["auth"]["identity"]["password"]["user"]["domain"] = {"id": "default"}
    assert keystone.credential(body).token == SA_TOKEN


def test_project_list_puts_a_serviceaccounts_own_namespace_first() -> None:
    assert keystone.projects_first_own(["zeta", "team-a", "alpha"], "team-a") == ["team-a", "alpha", "zeta"]
    assert keystone.projects_first_own(["zeta", "alpha"], "team-a") == ["alpha", "zeta"]  # no rights in its own
    assert keystone.projects_first_own(["b", "a"], None) == ["a", "b"]
    doc = keystone.project_list(["team-a"], "http://h/identity/v3/auth/projects")
    assert doc["links"] == {"self": "http://h/identity/v3/auth/projects", "previous": None, "next": None}
    assert [(p["id"], p["name"], p["domain_id"], p["enabled"]) for p in doc["projects"]] == [
        ("team-a", "team-a", "default", True)]


def test_a_user_lists_only_their_own_projects_by_user_id() -> None:
    user = {"username": "system:serviceaccount:team-a:cli", "uid": "sa-uid"}
    assert keystone.may_list_projects_of(user, "sa-uid") and keystone.may_list_projects_of(user, None)
    assert not keystone.may_list_projects_of(user, "someone-else")


def test_the_catalog_document_of_a_token() -> None:
    scoped = keystone.catalog_body("http://h:1/", "team-a")
    assert {s["type"] for s in scoped["catalog"]} == {"identity", "image", "compute"}
    assert scoped["links"]["self"] == "http://h:1/identity/v3/auth/catalog"
    assert keystone.catalog_body("http://h:1", None)["catalog"] == []


def test_default_is_the_only_domain() -> None:
    default = keystone.domain("http://h:1", "default")
    assert default is not None
    assert (default["id"], default["name"], default["enabled"]) == ("default", "Default", True)
    assert keystone.domain("http://h:1", "Default") is None  # an id is not a name
    assert default["links"]["self"] == "http://h:1/identity/v3/domains/default"
    assert [d["id"] for d in keystone.domains("http://h:1", None)["domains"]] == ["default"]
    assert [d["id"] for d in keystone.domains("http://h:1", "Default")["domains"]] == ["default"]
    assert keystone.domains("http://h:1", "Engineering")["domains"] == []


# ----- the handlers, over a fake kube-apiserver -----

class FakeCaller:
    def __init__(self, api: FakeApiserver, token: str) -> None:
        self.api, self.token = api, token

    async def whoami(self) -> dict[str, Any]:
        if self.token not in self.api.users:
            raise ApiError(401, "Unauthorized")
        return self.api.users[self.token]

    async def can(self, verb: str, namespace: str) -> bool:
        self.api.reviews += 1
        self.api.in_flight += 1
        self.api.most = max(self.api.most, self.api.in_flight)
        await asyncio.sleep(0.001)
        self.api.in_flight -= 1
        return verb == "list" and namespace in self.api.rights.get(self.token, ())


class FakeApiserver:
    def __init__(self) -> None:
        self.users = {SA_TOKEN: {"username": "system:serviceaccount:team-a:cli", "uid": "sa-uid"},
                      OIDC_TOKEN: {"username": "alice"}}
        self.rights = {SA_TOKEN: {"team-a", "shared"}, OIDC_TOKEN: {f"ns-{i:03}" for i in range(0, 97, 7)}}
        self.reviews = self.in_flight = self.most = 0

    def caller(self, token: str) -> FakeCaller:
        return FakeCaller(self, token)


class FakeKube:
    """The API's own account: 100 namespaces, in pages of 40."""

    def __init__(self) -> None:
        self.names = ["team-a", "team-b", "shared"] + [f"ns-{i:03}" for i in range(97)]

    async def list_core(self, res: Any, namespace: str | None, **query: Any) -> dict[str, Any]:
        assert res.plural == "namespaces" and namespace is None
        start = int(query.get("_continue") or 0)
        rest = str(start + 40) if start + 40 < len(self.names) else None
        return {"items": [{"metadata": {"name": n}} for n in self.names[start:start + 40]],
                "metadata": {"continue": rest}}


def handlers() -> tuple[IdentityHandlers, FakeApiserver]:
    api = FakeApiserver()
    rt = type("Rt", (), {"kube": FakeKube()})()
    return IdentityHandlers(cast(Any, api), cast(Any, rt)), api


def get(handler: Any, path: str, token: str | None, **match: str) -> tuple[int, Any]:
    request = make_mocked_request("GET", path, headers={"X-Auth-Token": token} if token else {},
                                  match_info=match)
    response = asyncio.run(handler(request))
    return response.status, json.loads(response.body)


def test_a_token_lists_the_namespaces_where_it_may_list_images() -> None:
    identity, api = handlers()
    status, doc = get(identity.auth_projects, "/identity/v3/auth/projects", SA_TOKEN)
    assert status == 200 and [p["id"] for p in doc["projects"]] == ["team-a", "shared"]
    assert api.reviews == 100 and api.most == ACCESS_CHECKS  # concurrent, and bounded
    status, doc = get(identity.auth_projects, "/identity/v3/users/sa-uid/projects", SA_TOKEN, user_id="sa-uid")
    assert status == 200 and [p["id"] for p in doc["projects"]] == ["team-a", "shared"]
    assert api.reviews == 100  # remembered for AUTH_TTL
    status, doc = get(identity.auth_projects, "/identity/v3/auth/projects", OIDC_TOKEN)
    assert [p["id"] for p in doc["projects"]] == sorted(api.rights[OIDC_TOKEN])
    assert api.reviews == 200  # another token is asked about on its own


def test_a_user_lists_only_their_own_projects() -> None:
    identity, api = handlers()
    status, doc = get(identity.auth_projects, "/identity/v3/users/x/projects", SA_TOKEN, user_id="someone-else")
    assert status == 403 and doc["error"]["code"] == 403
    assert api.reviews == 0
    alice = keystone.user_id({"username": "alice"})
    status, doc = get(identity.auth_projects, f"/identity/v3/users/{alice}/projects", OIDC_TOKEN, user_id=alice)
    assert status == 200 and doc["projects"]


@pytest.mark.parametrize("token", [None, "not-a-token"])
def test_without_a_valid_token_nothing_is_listed(token: str | None) -> None:
    identity, api = handlers()
    assert get(identity.auth_projects, "/identity/v3/auth/projects", token)[0] == 401
    assert get(identity.auth_catalog, "/identity/v3/auth/catalog", token)[0] == 401
    assert get(identity.domains, "/identity/v3/domains", token)[0] == 401
    assert get(identity.domains, "/identity/v3/domains/default", token, id="default")[0] == 401
    assert api.reviews == 0


def test_the_catalog_of_the_token_and_the_domain() -> None:
    identity, _ = handlers()
    status, doc = get(identity.auth_catalog, "/identity/v3/auth/catalog", SA_TOKEN)
    compute = next(s for s in doc["catalog"] if s["type"] == "compute")
    assert status == 200 and compute["endpoints"][0]["url"].endswith("/projects/team-a/compute/v2.1")
    assert get(identity.auth_catalog, "/identity/v3/auth/catalog", OIDC_TOKEN)[1]["catalog"] == []
    status, doc = get(identity.domains, "/identity/v3/domains/default", OIDC_TOKEN, id="default")
    assert status == 200 and doc["domain"]["name"] == "Default"
    assert get(identity.domains, "/identity/v3/domains/other", OIDC_TOKEN, id="other")[0] == 404
    status, doc = get(identity.domains, "/identity/v3/domains?name=Default", OIDC_TOKEN)
    assert [d["id"] for d in doc["domains"]] == ["default"]
    assert get(identity.domains, "/identity/v3/domains?name=Other", OIDC_TOKEN)[1]["domains"] == []


def tokens(identity: IdentityHandlers, body: Any = None, subject: str | None = None) -> tuple[int, Any, str | None]:
    """POST /v3/auth/tokens with `body`, or GET it (validate) for `subject`, on a loopback test server."""
    async def run() -> tuple[int, Any, str | None]:
        app = web.Application()
        app.router.add_post("/identity/v3/auth/tokens", identity.issue_token)
        app.router.add_get("/identity/v3/auth/tokens", identity.validate_token)
        async with TestClient(TestServer(app, host="127.0.0.1")) as client:
            if subject is None:
                resp = await client.post("/identity/v3/auth/tokens", json=body)
            else:
                resp = await client.get("/identity/v3/auth/tokens",
                                        headers={"X-Auth-Token": subject, "X-Subject-Token": subject})
            return resp.status, await resp.json(), resp.headers.get("X-Subject-Token")
    return asyncio.run(run())


def test_a_token_that_is_no_serviceaccounts_gets_an_unscoped_token_then_a_scoped_one() -> None:
    identity, _ = handlers()
    status, doc, subject = tokens(identity, auth(OIDC_TOKEN))
    assert status == 201 and subject == OIDC_TOKEN
    assert "project" not in doc["token"] and "catalog" not in doc["token"] and "roles" not in doc["token"]
    assert doc["token"]["user"]["name"] == "alice"
    status, doc, _ = tokens(identity, subject=OIDC_TOKEN)  # validated: still unscoped
    assert status == 200 and "project" not in doc["token"]
    status, doc, _ = tokens(identity, auth(OIDC_TOKEN, {"project": {"name": "ns-007", "domain": {"id": "default"}}}))
    assert status == 201 and doc["token"]["project"]["id"] == "ns-007" and doc["token"]["roles"][0]["name"] == "reader"
    assert any(s["type"] == "compute" for s in doc["token"]["catalog"])
    # Scoped to a namespace where it may do nothing, or in another domain: refused.
    assert tokens(identity, auth(OIDC_TOKEN, {"project": {"name": "team-a"}}))[0] == 401
    status, doc, _ = tokens(identity, auth(OIDC_TOKEN, {"project": {"name": "ns-007", "domain": {"name": "Other"}}}))
    assert status == 401 and "Other" in doc["error"]["message"]
    assert tokens(identity, auth("not-a-token"))[0] == 401


def test_a_serviceaccount_token_without_a_scope_still_gets_its_own_namespace() -> None:
    identity, _ = handlers()
    status, doc, _ = tokens(identity, auth(SA_TOKEN))
    assert status == 201 and doc["token"]["project"]["id"] == "team-a"
    status, doc, _ = tokens(identity, subject=SA_TOKEN)
    assert status == 200 and doc["token"]["project"]["id"] == "team-a"
    status, doc, _ = tokens(identity, auth(SA_TOKEN, "unscoped"))
    assert status == 201 and "project" not in doc["token"]
