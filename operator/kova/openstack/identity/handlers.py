"""Keystone v3's handlers: versions, tokens (issued for and validated against kube-apiserver), projects,
the catalog and the domain. The documents and rules are kova.openstack.identity.keystone's."""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import Sequence
from typing import Any

from aiohttp import web
from kubernetes.aio.client.exceptions import ApiException

from kova.adapters.env import IPNetwork
from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.api import clock
from kova.api.resources import DNS_LABEL, NAMESPACES
from kova.openstack.front import AUTH_TTL, Front
from kova.openstack.identity import keystone

UNAUTHENTICATED = "The request you have made requires authentication."
ACCESS_CHECKS = 16  # SelfSubjectAccessReviews in flight at once for one project list


class IdentityHandlers(Front):
    def __init__(self, apiserver: Apiserver, rt: Runtime, public_url: str | None = None,
                 trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        super().__init__(apiserver, rt, public_url, trusted_proxies)
        # token hash → (expiry, the namespaces it may work in): one review per namespace per AUTH_TTL, and
        # callers asking at once share it (a Future, not its result).
        self._projects: dict[str, tuple[float, asyncio.Future[list[str]]]] = {}

    async def identity_versions(self, request: web.Request) -> web.Response:
        return web.json_response(keystone.versions(self.base(request)), status=300)

    async def identity_v3(self, request: web.Request) -> web.Response:
        return web.json_response({"version": keystone.version(self.base(request))})

    async def issue_token(self, request: web.Request) -> web.Response:
        try:
            cred = keystone.credential(await request.json())
        except (ValueError, keystone.AuthError) as e:
            return _keystone_error(401, str(e) or "The request you have made requires authentication.")
        return await self._token_answer(request, cred, status=201)

    async def validate_token(self, request: web.Request) -> web.Response:
        subject = request.headers.get("X-Subject-Token")
        if not request.headers.get("X-Auth-Token") or not subject:
            return _keystone_error(401, UNAUTHENTICATED)
        cred = keystone.Credential(subject, None, ("token",))  # its project: a ServiceAccount token's own, or none
        answer = await self._token_answer(request, cred, status=200)
        if request.method == "HEAD":
            return web.Response(status=answer.status, headers={"X-Subject-Token": subject})
        return answer

    async def _token_answer(self, request: web.Request, cred: keystone.Credential, status: int) -> web.Response:
        caller = self.apiserver.caller(cred.token)
        try:
            user = await caller.whoami()
            project = keystone.scoped_project(cred)
            if project is None:
                return web.json_response(keystone.unscoped_token_body(cred, user, clock.now()), status=status,
                                         headers={"X-Subject-Token": cred.token})
            can_create = await caller.can("create", project)
            roles = keystone.roles(can_create, can_create or await caller.can("list", project),
                                   admin=await self.is_admin(caller))
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        if not roles:
            return _keystone_error(401, f"the token may neither create nor list Images in namespace {project}")
        body = keystone.token_body(cred, user, project, roles, self.base(request), clock.now())
        return web.json_response(body, status=status, headers={"X-Subject-Token": cred.token})

    async def projects(self, request: web.Request) -> web.Response:
        """Projects are namespaces. Clients look one up by name before sharing an image with it (`openstack
        image add project`); like Glance, Kova does not ask whether that project exists, and an authenticated
        caller learns nothing about the cluster's namespaces from the answer."""
        try:
            await self._user(request)
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        name = request.match_info.get("id") or request.query.get("name")
        if name is None:
            # Keystone's answer to a non-admin listing every project; `openstack project list` then falls back
            # to the caller's own projects (/v3/users/{id}/projects), the namespaces it may work in.
            return _keystone_error(403, "You are not authorized to perform the requested action: "
                                        "identity:list_projects.")
        if not DNS_LABEL.match(name):
            return _keystone_error(404, f"Could not find project: {name}.")
        project = keystone.project(name)
        if "id" in request.match_info:
            return web.json_response({"project": project})
        return web.json_response({"projects": [project], "links": {"self": None, "next": None, "previous": None}})

    async def auth_projects(self, request: web.Request) -> web.Response:
        """GET /v3/auth/projects, and /v3/users/{user_id}/projects for the caller's own id (Keystone lets
        a user list only their own): the namespaces where the token may list Images."""
        token = request.headers.get("X-Auth-Token") or ""
        try:
            user = await self._user(request)
            if not keystone.may_list_projects_of(user, request.match_info.get("user_id")):
                return _keystone_error(403, "You are not authorized to perform the requested action: "
                                            "identity:list_user_projects.")
            allowed = await self._workable(token)
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        except ApiException as e:  # the API's own account could not list the namespaces
            return _keystone_error(503, f"cannot list the namespaces: {e.status} {e.reason}")
        names = keystone.projects_first_own(allowed, keystone.token_namespace(token))
        return web.json_response(keystone.project_list(names, f"{self.base(request)}{request.rel_url}"))

    async def _workable(self, token: str) -> list[str]:
        key = hashlib.sha256(token.encode()).hexdigest()
        now = time.monotonic()
        known = self._projects.get(key)
        if known is None or known[0] < now or _failed(known[1]):  # a failure is not remembered
            known = self._projects[key] = (now + AUTH_TTL, asyncio.ensure_future(self._check_namespaces(token)))
            if len(self._projects) > 10_000:
                self._projects = {k: v for k, v in self._projects.items() if v[0] >= now}
        return await asyncio.shield(known[1])  # one caller going away does not cancel the others' answer

    async def _check_namespaces(self, token: str) -> list[str]:
        """The namespaces (listed by the API's own account) where the token may list Images (asked with the
        token itself, so RBAC, not Kova, decides)."""
        names: list[str] = []
        page = ""
        while True:  # in pages, as kubectl lists
            listed: dict[str, Any] = await self.rt.kube.list_core(NAMESPACES, None, limit=500, _continue=page or None)
            names += [str(ns["metadata"]["name"]) for ns in listed.get("items") or []]
            page = (listed.get("metadata") or {}).get("continue") or ""
            if not page:
                break
        caller, slots = self.apiserver.caller(token), asyncio.Semaphore(ACCESS_CHECKS)
        allowed = await asyncio.gather(*(self._can_list(caller, slots, ns) for ns in names))
        return [ns for ns, ok in zip(names, allowed, strict=True) if ok]

    @staticmethod
    async def _can_list(caller: Caller, slots: asyncio.Semaphore, namespace: str) -> bool:
        async with slots:
            return await caller.can("list", namespace)

    async def auth_catalog(self, request: web.Request) -> web.Response:
        """GET /v3/auth/catalog: the X-Auth-Token's scope's catalog (see the module's doc: the token's own
        namespace for a ServiceAccount token; an empty one for an unscoped token)."""
        try:
            await self._user(request)
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        token = request.headers["X-Auth-Token"]
        return web.json_response(keystone.catalog_body(self.base(request), keystone.token_namespace(token)))

    async def domains(self, request: web.Request) -> web.Response:
        """GET /v3/domains[?name=] and /v3/domains/{id}: Default, which any valid token may read."""
        try:
            await self._user(request)
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        if "id" not in request.match_info:
            return web.json_response(keystone.domains(self.base(request), request.query.get("name")))
        found = keystone.domain(self.base(request), request.match_info["id"])
        if found is None:
            return _keystone_error(404, f"Could not find domain: {request.match_info['id']}.")
        return web.json_response({"domain": found})

    async def _user(self, request: web.Request) -> dict[str, Any]:
        """Who the X-Auth-Token is (kube-apiserver's word); 401 without one, rather than ask as anonymous."""
        token = request.headers.get("X-Auth-Token")
        if not token:
            raise ApiError(401, UNAUTHENTICATED)
        return await self.apiserver.caller(token).whoami()


def _failed(answer: asyncio.Future[list[str]]) -> bool:
    return answer.done() and (answer.cancelled() or answer.exception() is not None)


def _keystone_error(status: int, message: str) -> web.Response:
    title = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}.get(status, "Error")
    return web.json_response({"error": {"code": status, "message": message, "title": title}}, status=status)


