"""Keystone v3's handlers: versions, tokens (issued for and validated against kube-apiserver) and projects.
The documents and rules are kova.openstack.identity.keystone's."""

from __future__ import annotations

from aiohttp import web

from kova.adapters.kubeapi import ApiError
from kova.api import clock
from kova.api.resources import DNS_LABEL
from kova.openstack.front import Front
from kova.openstack.identity import keystone


class IdentityHandlers(Front):
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
            return _keystone_error(401, "The request you have made requires authentication.")
        cred = keystone.Credential(subject, None, ("token",))  # its project: a ServiceAccount token's own
        answer = await self._token_answer(request, cred, status=200)
        if request.method == "HEAD":
            return web.Response(status=answer.status, headers={"X-Subject-Token": subject})
        return answer

    async def _token_answer(self, request: web.Request, cred: keystone.Credential, status: int) -> web.Response:
        caller = self.apiserver.caller(cred.token)
        try:
            user = await caller.whoami()
            project = cred.project or keystone.token_namespace(cred.token)
            if not project:
                return _keystone_error(401, "say which project (namespace) the token is for: scope.project.name")
            can_create = await caller.can("create", project)
            roles = keystone.roles(can_create, can_create or await caller.can("list", project))
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
            await self.apiserver.caller(request.headers.get("X-Auth-Token") or "").whoami()
        except ApiError as e:
            return _keystone_error(401 if e.status in (401, 403) else 503, e.message)
        name = request.match_info.get("id") or request.query.get("name")
        if name is None:
            return web.json_response({"projects": [], "links": {"self": None, "next": None, "previous": None}})
        if not DNS_LABEL.match(name):
            return _keystone_error(404, f"Could not find project: {name}.")
        project = keystone.project(name)
        if "id" in request.match_info:
            return web.json_response({"project": project})
        return web.json_response({"projects": [project], "links": {"self": None, "next": None, "previous": None}})

def _keystone_error(status: int, message: str) -> web.Response:
    title = {401: "Unauthorized", 403: "Forbidden", 404: "Not Found", 503: "Service Unavailable"}.get(status, "Error")
    return web.json_response({"error": {"code": status, "message": message, "title": title}}, status=status)


