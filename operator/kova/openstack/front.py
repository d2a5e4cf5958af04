"""What every service of `kova api` shares: the clients, the public base URL, and the caller (the token of
each request and the project it names, checked once per AUTH_TTL with a SelfSubjectAccessReview)."""

from __future__ import annotations

import hashlib
import json
import time
from typing import Any

from aiohttp import web

from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.api.errors import StatusError

AUTH_TTL = 30.0  # seconds a token's access to a project is remembered (one SelfSubjectAccessReview)


class Front:
    def __init__(self, apiserver: Apiserver, rt: Runtime, public_url: str | None = None) -> None:
        self.apiserver, self.rt, self.public_url = apiserver, rt, public_url
        self._access: dict[tuple[str, str], tuple[float, bool]] = {}

    def base(self, request: web.Request) -> str:
        return (self.public_url or f"{request.scheme}://{request.host}").rstrip("/")

    async def caller(self, request: web.Request) -> tuple[Caller, str]:
        """The caller's token and project; 401 without a token that kube-apiserver takes, 403 when the
        token may not even list Images in the project's namespace."""
        token = request.headers.get("X-Auth-Token") or ""
        if not token:
            raise StatusError(401, "This server could not verify that you are authorized to access the document "
                                   "you requested.")
        project = request.match_info["project"]
        key = (hashlib.sha256(token.encode()).hexdigest(), project)
        now = time.monotonic()
        known = self._access.get(key)
        caller = self.apiserver.caller(token)
        if known is None or known[0] < now:
            try:
                allowed = await caller.can("list", project)
            except ApiError as e:
                raise StatusError(401 if e.status == 401 else 503, e.message) from e
            known = self._access[key] = (now + AUTH_TTL, allowed)
            if len(self._access) > 10_000:
                self._access = {k: v for k, v in self._access.items() if v[0] >= now}
        if not known[1]:
            raise StatusError(403, f"You are not authorized to list images in project {project}.")
        return caller, project


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except ValueError as e:
        raise StatusError(400, f"Malformed JSON in request body: {e}") from e
