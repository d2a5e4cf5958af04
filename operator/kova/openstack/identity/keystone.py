"""Keystone v3, as much of it as OpenStack clients need to find and call Kova: pure functions.

A Kubernetes bearer token is the credential (as the `token` method's id, as a `password`, or as an
application credential's secret whose id is the namespace). The project is a namespace; the user is who
kube-apiserver says the token belongs to; the roles are what RBAC lets the token do with Images there.
`X-Subject-Token` is the Kubernetes token itself, so every later call carries it to kube-apiserver.
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
    project: str | None  # a namespace; None: the token's own (a ServiceAccount's namespace)
    methods: tuple[str, ...]


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
        token = ((identity.get("password") or {}).get("user") or {}).get("password")
    elif "application_credential" in methods:
        app = identity.get("application_credential") or {}
        token, project = app.get("secret"), app.get("id") or app.get("name")
    if not token:
        raise AuthError("a Kubernetes token is the credential: give it as the token id, the password, or an "
                        "application credential's secret")
    scope = auth.get("scope") or {}
    if isinstance(scope, Mapping) and "project" in scope:
        project = scope["project"].get("name") or scope["project"].get("id")
    return Credential(token, project, methods)


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
    """Endpoints with both `region` (Tempest) and `region_id` (keystoneauth); image URLs carry the project."""
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


def token_body(cred: Credential, user: Mapping[str, Any], project: str, roles: list[str], base_url: str,
               now: dt.datetime) -> dict[str, Any]:
    name = str(user.get("username") or "unknown")
    return {"token": {
        "methods": list(cred.methods), "issued_at": _iso(now), "expires_at": _iso(expires_at(cred.token, now)),
        "audit_ids": [hashlib.sha256(cred.token.encode()).hexdigest()[:22]],
        "user": {"id": str(user.get("uid") or hashlib.sha1(name.encode()).hexdigest()), "name": name,
                 "domain": DOMAIN, "password_expires_at": None},
        "project": {"id": project, "name": project, "domain": DOMAIN},
        "roles": [{"id": r, "name": r} for r in roles],
        "catalog": catalog(base_url, project),
        "is_domain": False}}


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


def roles(can_create: bool, can_list: bool) -> list[str]:
    """Keystone roles from what RBAC lets the token do with Images in the project: `member` (and `reader`)
    for one that may create them, `reader` for one that may only list them, none otherwise (refused)."""
    if can_create:
        return ["member", "reader"]
    return ["reader"] if can_list else []
