"""Keystone v3, as much of it as OpenStack clients need to find and call Kova: pure functions.

A Kubernetes bearer token is the credential (as the `token` method's id, as a `password`, or as an
application credential's secret whose id is the namespace). The project is a namespace; the user is who
kube-apiserver says the token belongs to; the roles are what RBAC lets the token do with Images there.
`X-Subject-Token` is the Kubernetes token itself, so every later call carries it to kube-apiserver, and a
token's scope cannot be read back from it: a ServiceAccount token's is its own namespace, any other token's
is none (unscoped), whatever project it was last scoped to.

There is one domain, Default; every project is in it.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

REGION = "RegionOne"
DOMAIN = {"id": "default", "name": "Default"}
DEFAULT_LIFETIME = dt.timedelta(hours=1)


class AuthError(Exception):
    """401: no usable credential in the request."""


@dataclass(frozen=True)
class Credential:
    token: str
    project: str | None  # a namespace; None: the token's own (a ServiceAccount's namespace), if any
    methods: tuple[str, ...]
    unscoped: bool = False  # `"scope": "unscoped"`: no project, even a ServiceAccount's own


def is_default_domain(ref: Any) -> bool:
    """Whether a `domain` reference ({"id": ...} or {"name": ...}) names Default. The name is compared
    without case, as Keystone on MySQL does: `--os-project-domain-name default` is common in guides."""
    if not isinstance(ref, Mapping):
        return False
    if "id" in ref:
        return bool(ref["id"] == DOMAIN["id"])
    return isinstance(ref.get("name"), str) and ref["name"].lower() == DOMAIN["name"].lower()


def credential(body: Any) -> Credential:
    """The Kubernetes token and the project scope of a POST /v3/auth/tokens body."""
    try:
        auth = body["auth"]
        identity = auth["identity"]
        methods = tuple(identity["methods"])
    except (KeyError, TypeError) as e:
        raise AuthError("Expecting to find auth.identity.methods in the request") from e
    token: str | None = None
    project: str | None = None
    if "token" in methods:
        token = (identity.get("token") or {}).get("id")
    elif "password" in methods:
        user = (identity.get("password") or {}).get("user") or {}
        if "domain" in user and not is_default_domain(user["domain"]):
            raise AuthError("The request you have made requires authentication.")  # Keystone: no such user
        token = user.get("password")
    elif "application_credential" in methods:
        app = identity.get("application_credential") or {}
        token, project = app.get("secret"), app.get("id") or app.get("name")
    if not token:
        raise AuthError("a Kubernetes token is the credential: give it as the token id, the password, or an "
                        "application credential's secret")
    scope = auth.get("scope")
    if scope == "unscoped":
        return Credential(token, None, methods, unscoped=True)
    if scope:
        project = scope_project(scope)
    return Credential(token, project, methods)


def scope_project(scope: Any) -> str:
    """The namespace a token's `scope` names: `project` by id, or by name (in Default when a domain is
    given). Another domain, a domain or system scope, or a trust: 401, as Keystone answers a user who has
    no role there."""
    project = scope.get("project") if isinstance(scope, Mapping) else None
    if not isinstance(project, Mapping):
        raise AuthError("Kova gives project-scoped tokens only (a project is a Kubernetes namespace): "
                        "scope.project.id or scope.project.name")
    if "domain" in project and not is_default_domain(project["domain"]):
        raise AuthError(f"Could not find domain: {_domain_said(project['domain'])}: every project is in "
                        "domain Default")
    name = project.get("id") or project.get("name")
    if not isinstance(name, str) or not name:
        raise AuthError("Expecting to find scope.project.id or scope.project.name in the request")
    return name


def _domain_said(ref: Any) -> str:
    return str(ref.get("id") or ref.get("name")) if isinstance(ref, Mapping) else repr(ref)


def scoped_project(cred: Credential) -> str | None:
    """The project a token is issued for: the one asked; without one, a ServiceAccount token's own
    namespace (keystoneauth's v3token and clients without a project rely on it); else none (unscoped)."""
    if cred.unscoped:
        return None
    return cred.project or token_namespace(cred.token)


def token_namespace(token: str) -> str | None:
    """The namespace a ServiceAccount token belongs to (its JWT claims), if it says."""
    claims = _claims(token)
    k8s = claims.get("kubernetes.io") or {}
    if isinstance(k8s, dict) and k8s.get("namespace"):
        return str(k8s["namespace"])
    sub = str(claims.get("sub") or "")
    parts = sub.split(":")
    return parts[2] if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"] else None


def _claims(token: str) -> dict[str, Any]:
    try:
        payload = token.split(".")[1]
        return dict(json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4))))
    except (IndexError, ValueError):
        return {}


def expires_at(token: str, now: dt.datetime) -> dt.datetime:
    """The JWT's `exp` (informational: kube-apiserver remains the judge), or an hour from now."""
    exp = _claims(token).get("exp")
    if isinstance(exp, (int, float)):
        return dt.datetime.fromtimestamp(exp, dt.UTC)
    return now + DEFAULT_LIFETIME


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z")


def catalog(base_url: str, project: str) -> list[dict[str, Any]]:
    """Endpoints with both `region` (Tempest) and `region_id` (keystoneauth); image and compute URLs carry
    the project. The compute URL ends in its version: gophercloud calls it as it is, adding no version."""
    def endpoints(url: str, service: str) -> list[dict[str, Any]]:
        return [{"id": hashlib.sha1(f"{service}-{i}-{url}".encode()).hexdigest()[:32], "interface": i,
                 "region": REGION, "region_id": REGION, "url": url} for i in ("public", "internal", "admin")]
    base = base_url.rstrip("/")
    return [{"type": "identity", "name": "keystone", "id": "identity",
             "endpoints": endpoints(f"{base}/identity", "identity")},
            {"type": "image", "name": "glance", "id": "image",
             "endpoints": endpoints(f"{base}/projects/{project}/image", "image")},
            {"type": "compute", "name": "nova", "id": "compute",
             "endpoints": endpoints(f"{base}/projects/{project}/compute/v2.1", "compute")}]


def catalog_body(base_url: str, project: str | None) -> dict[str, Any]:
    """GET /v3/auth/catalog: the catalog of the token's project; an unscoped token's is empty."""
    base = base_url.rstrip("/")
    return {"catalog": catalog(base, project) if project else [],
            "links": {"self": f"{base}/identity/v3/auth/catalog", "previous": None, "next": None}}


def user_id(user: Mapping[str, Any]) -> str:
    """The Keystone user id of whom kube-apiserver says a token is (a SelfSubjectReview's userInfo)."""
    return str(user.get("uid") or hashlib.sha1(_username(user).encode()).hexdigest())


def _username(user: Mapping[str, Any]) -> str:
    return str(user.get("username") or "unknown")


def token_body(cred: Credential, user: Mapping[str, Any], project: str, roles: list[str], base_url: str,
               now: dt.datetime) -> dict[str, Any]:
    body = unscoped_token_body(cred, user, now)
    body["token"].update({"project": {"id": project, "name": project, "domain": DOMAIN},
                          "roles": [{"id": r, "name": r} for r in roles],
                          "catalog": catalog(base_url, project),
                          "is_domain": False})
    return body


def unscoped_token_body(cred: Credential, user: Mapping[str, Any], now: dt.datetime) -> dict[str, Any]:
    """A token without a scope, as Keystone's: who and until when, no project, roles or catalog (a client
    lists the projects it may scope to, then asks for a token scoped to one)."""
    return {"token": {
        "methods": list(cred.methods), "issued_at": _iso(now), "expires_at": _iso(expires_at(cred.token, now)),
        "audit_ids": [hashlib.sha256(cred.token.encode()).hexdigest()[:22]],
        "user": {"id": user_id(user), "name": _username(user), "domain": DOMAIN, "password_expires_at": None}}}


def versions(base_url: str) -> dict[str, Any]:
    return {"versions": {"values": [version(base_url)]}}


def version(base_url: str) -> dict[str, Any]:
    return {"id": "v3.14", "status": "stable", "updated": "2020-04-07T00:00:00Z",
            "links": [{"rel": "self", "href": f"{base_url.rstrip('/')}/identity/v3/"}],
            "media-types": [{"base": "application/json", "type": "application/vnd.openstack.identity-v3+json"}]}


def project(name: str) -> dict[str, Any]:
    return {"id": name, "name": name, "domain_id": DOMAIN["id"], "enabled": True, "is_domain": False,
            "parent_id": DOMAIN["id"], "description": f"Kubernetes namespace {name}", "tags": [],
            "links": {"self": None}}


def projects_first_own(allowed: list[str], own: str | None) -> list[str]:
    """The projects a token may work in (the namespaces where it may list Images), a ServiceAccount
    token's own namespace first (clients that take the first project take that one), the rest by name."""
    return sorted(set(allowed), key=lambda name: (name != own, name))


def project_list(names: list[str], self_url: str) -> dict[str, Any]:
    return {"projects": [project(n) for n in names], "links": {"self": self_url, "previous": None, "next": None}}


def may_list_projects_of(user: Mapping[str, Any], asked: str | None) -> bool:
    """GET /v3/users/{asked}/projects: Keystone lets a user list their own projects only (no asked id:
    /v3/auth/projects, the token's own)."""
    return asked is None or asked == user_id(user)


def domain(base_url: str, domain_id: str = DOMAIN["id"]) -> dict[str, Any] | None:
    """The domain of that id: Default, the only one."""
    if domain_id != DOMAIN["id"]:
        return None
    return {**DOMAIN, "description": "The only domain: every project (namespace) is in it", "enabled": True,
            "tags": [], "options": {}, "links": {"self": f"{base_url.rstrip('/')}/identity/v3/domains/default"}}


def domains(base_url: str, name: str | None) -> dict[str, Any]:
    """GET /v3/domains[?name=]: Default, when no name or its own is asked."""
    default = domain(base_url)
    found = [default] if default and (name is None or is_default_domain({"name": name})) else []
    return {"domains": found, "links": {"self": f"{base_url.rstrip('/')}/identity/v3/domains", "previous": None,
                                        "next": None}}


def roles(can_create: bool, can_list: bool, admin: bool = False) -> list[str]:
    """Keystone roles from what RBAC lets the token do with Images in the project: `admin` (with `member` and
    `reader`) for a holder of kova-admin, in every project; `member` (and `reader`) for one that may create
    them, `reader` for one that may only list them, none otherwise (refused)."""
    if admin:
        return ["admin", "member", "reader"]
    if can_create:
        return ["member", "reader"]
    return ["reader"] if can_list else []
