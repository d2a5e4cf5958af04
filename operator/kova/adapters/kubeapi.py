"""kube-apiserver as the caller of the OpenStack facade: every request carries the caller's own bearer
token, so Kubernetes RBAC decides what the caller may read and write (STYLE 14: no confused deputy)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from typing import Any

import aiohttp

from kova.api.errors import StatusError
from kova.api.models import IMAGE, VERSION

IMAGES_PATH = f"/apis/{IMAGE.group}/{VERSION}"


class ApiError(StatusError):
    """kube-apiserver's answer to the caller: 401, 403, 404, 409, 422..."""


@dataclass(frozen=True)
class Cluster:
    server: str
    ssl: ssl.SSLContext | bool

    @classmethod
    def of(cls, configuration: Any) -> Cluster:
        """The API server's address and CA, from the client configuration Kova loaded for its own account
        (in-cluster or kubeconfig): only those, since the facade's calls carry each caller's token."""
        if not configuration.verify_ssl:
            return cls(configuration.host, False)
        return cls(configuration.host, ssl.create_default_context(cafile=configuration.ssl_ca_cert))


class Apiserver:
    """One connection pool to kube-apiserver, shared by all callers."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.session = aiohttp.ClientSession(connector=aiohttp.TCPConnector(ssl=cluster.ssl, limit=64),
                                             timeout=aiohttp.ClientTimeout(total=30))

    async def close(self) -> None:
        await self.session.close()

    def caller(self, token: str) -> Caller:
        return Caller(self, token)


class Caller:
    def __init__(self, api: Apiserver, token: str) -> None:
        self.api, self.token = api, token

    async def request(self, method: str, path: str, *, body: Any = None, params: dict[str, str] | None = None,
                      content_type: str = "application/json") -> Any:
        headers = {"Authorization": f"Bearer {self.token}", "Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = content_type
        async with self.api.session.request(method, self.api.cluster.server + path, json=body, params=params,
                                            headers=headers) as resp:
            data = await resp.json(content_type=None) if resp.content_length != 0 else None
            if resp.status >= 400:
                message = (data or {}).get("message") if isinstance(data, dict) else None
                raise ApiError(resp.status, message or resp.reason or str(resp.status))
            return data

    # ----- who is calling, and what may they do -----
    async def whoami(self) -> dict[str, Any]:
        """The user behind the token (SelfSubjectReview): username, uid, groups. 401 for a bad token."""
        review = await self.request("POST", "/apis/authentication.k8s.io/v1/selfsubjectreviews", body={
            "apiVersion": "authentication.k8s.io/v1", "kind": "SelfSubjectReview"})
        return dict(review.get("status", {}).get("userInfo") or {})

    async def can(self, verb: str, namespace: str, resource: str = IMAGE.plural, subresource: str = "",
                  group: str = IMAGE.group) -> bool:
        """A SelfSubjectAccessReview: Kubernetes says what this token may do (images/file included, a
        subresource that exists only in RBAC rules, as KubeVirt's virt-api checks its own)."""
        review = await self.request("POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", body={
            "apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview",
            "spec": {"resourceAttributes": {"group": group, "resource": resource, "verb": verb,
                                            "namespace": namespace, "subresource": subresource}}})
        return bool(review.get("status", {}).get("allowed"))

    # ----- Images, as the caller -----
    async def images(self, namespace: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"limit": "500", **({"continue": token} if token else {})}
            page = await self.request("GET", f"{IMAGES_PATH}/namespaces/{namespace}/{IMAGE.plural}", params=params)
            out += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return out

    async def image(self, namespace: str, name: str) -> dict[str, Any] | None:
        try:
            return dict(await self.request("GET", f"{IMAGES_PATH}/namespaces/{namespace}/{IMAGE.plural}/{name}"))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create_image(self, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("POST", f"{IMAGES_PATH}/namespaces/{namespace}/{IMAGE.plural}", body=body,
                                       params={"fieldValidation": "Strict"}))

    async def patch_image(self, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("PATCH", f"{IMAGES_PATH}/namespaces/{namespace}/{IMAGE.plural}/{name}",
                                       body=patch, content_type="application/merge-patch+json"))

    async def delete_image(self, namespace: str, name: str, uid: str) -> None:
        await self.request("DELETE", f"{IMAGES_PATH}/namespaces/{namespace}/{IMAGE.plural}/{name}", body={
            "apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}})


    # ----- any namespaced kind, as the caller (the compute API's Instances, KeyPairs, ServerGroups...) -----
    async def objects(self, group: str, plural: str, namespace: str, version: str = VERSION) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        token = ""
        while True:
            params = {"limit": "500", **({"continue": token} if token else {})}
            page = await self.request("GET", _path(group, version, plural, namespace), params=params)
            out += page.get("items") or []
            token = (page.get("metadata") or {}).get("continue") or ""
            if not token:
                return out

    async def get(self, group: str, plural: str, namespace: str, name: str,
                  version: str = VERSION) -> dict[str, Any] | None:
        try:
            return dict(await self.request("GET", _path(group, version, plural, namespace, name)))
        except ApiError as e:
            if e.status == 404:
                return None
            raise

    async def create(self, group: str, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        return dict(await self.request("POST", _path(group, VERSION, plural, namespace), body=body,
                                       params={"fieldValidation": "Strict"}))

    async def patch(self, group: str, plural: str, namespace: str, name: str, patch: dict[str, Any],
                    uid: str | None = None) -> dict[str, Any]:
        """A merge patch; with `uid`, only of that object (a JSON merge patch cannot carry preconditions, so
        metadata.uid in the patch makes the API server refuse another object of the same name)."""
        if uid is not None:
            patch = {**patch, "metadata": {**(patch.get("metadata") or {}), "uid": uid}}
        return dict(await self.request("PATCH", _path(group, VERSION, plural, namespace, name), body=patch,
                                       content_type="application/merge-patch+json"))

    async def replace(self, group: str, plural: str, namespace: str, body: dict[str, Any]) -> dict[str, Any]:
        """A PUT of the whole object: its metadata.resourceVersion makes the API server refuse it (409) when
        someone wrote the object since it was read."""
        return dict(await self.request("PUT", _path(group, VERSION, plural, namespace, body["metadata"]["name"]),
                                       body=body, params={"fieldValidation": "Strict"}))

    async def delete(self, group: str, plural: str, namespace: str, name: str, uid: str) -> None:
        await self.request("DELETE", _path(group, VERSION, plural, namespace, name), body={
            "apiVersion": "v1", "kind": "DeleteOptions", "preconditions": {"uid": uid}})


def _path(group: str, version: str, plural: str, namespace: str, name: str | None = None) -> str:
    """The object's or collection's path; namespace "" for a cluster-scoped kind."""
    prefix = f"/api/{version}" if group == "" else f"/apis/{group}/{version}"
    scope = f"/namespaces/{namespace}" if namespace else ""
    return f"{prefix}{scope}/{plural}" + (f"/{name}" if name else "")
