"""The Kubernetes adapter: the few API calls Kova makes, on the official async client.

Everything returns plain dicts. Not-found comes back as None; other API errors propagate, so a handler
fails and Kopf retries it (an error swallowed here would make Kopf record a success).
"""

from __future__ import annotations

import json
import os
import socket
import urllib.request
from typing import Any, cast
from urllib.parse import urlsplit

from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

from kova.api import clock
from kova.api.errors import StatusError
from kova.api.resources import SUBRESOURCES, Resource

FIELD_MANAGER = "kova"


class Refused(StatusError):
    """virt-api answered 4xx to an action (409: not in a state for it; 404: no such VMI)."""


class Kube:
    def __init__(self, api: client.ApiClient) -> None:
        self.api_client = api
        self.custom = client.CustomObjectsApi(api)
        self.core = client.CoreV1Api(api)

    @classmethod
    async def connect(cls, kubeconfig: str | None = None) -> Kube:
        configuration = client.Configuration()
        if os.environ.get("KUBERNETES_SERVICE_HOST") and not os.environ.get("KUBECONFIG") and not kubeconfig:
            config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
        else:
            await config.load_kube_config(  # type: ignore[no-untyped-call]
                config_file=kubeconfig, client_configuration=configuration)
        # The client's aiohttp session would look up the proxy variables and ~/.netrc on a thread for every
        # request (trust_env): a thread hop per API call. The proxy, if any, is looked up once, here.
        configuration.client_session_kwargs = {"trust_env": False}
        if not configuration.proxy:
            target = urlsplit(configuration.host)
            proxy = urllib.request.getproxies().get(target.scheme)
            if proxy and not urllib.request.proxy_bypass(target.hostname or ""):
                configuration.proxy = proxy
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api_client.close()  # type: ignore[no-untyped-call]

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
            if not res.group:  # the core group (a Service): not a custom object path
                path = f"/api/{res.version}/" + (f"namespaces/{namespace}/" if res.namespaced else "")
                resp = await self._call("GET", f"{path}{res.plural}/{name}")
                try:
                    return cast(dict[str, Any], json.loads(await resp.read()))
                finally:
                    resp.release()
            if res.namespaced:
                obj = await self.custom.get_namespaced_custom_object(
                    res.group, res.version, namespace or "", res.plural, name)
            else:
                obj = await self.custom.get_cluster_custom_object(res.group, res.version, res.plural, name)
        except ApiException as e:
            if e.status == 404:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def create(self, res: Resource, body: dict[str, Any]) -> dict[str, Any] | None:
        """Create; None when it already exists (a create that meets 409 is not an error)."""
        try:
            if res.namespaced:
                obj = await self.custom.create_namespaced_custom_object(
                    res.group, res.version, body["metadata"]["namespace"], res.plural, body,
                    field_manager=FIELD_MANAGER, field_validation="Strict")
            else:
                obj = await self.custom.create_cluster_custom_object(
                    res.group, res.version, res.plural, body, field_manager=FIELD_MANAGER, field_validation="Strict")
        except ApiException as e:
            if e.status == 409:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def apply(self, res: Resource, body: dict[str, Any]) -> dict[str, Any] | None:
        """Server-side apply: the child is put back to what Kova wants, whoever changed it. Returns the
        object, or None when the apply created it (the client does not decode the 201 answer)."""
        md = body["metadata"]
        if not res.group:  # the core group (a ResourceQuota): the custom-objects client cannot address it
            resp = await self._call(
                "PATCH", f"/api/{res.version}/namespaces/{md['namespace']}/{res.plural}/{md['name']}",
                query=[("fieldManager", FIELD_MANAGER), ("force", "true"), ("fieldValidation", "Strict")],
                body=body, content_type="application/apply-patch+yaml")
            try:
                return cast(dict[str, Any], json.loads(await resp.read()))
            finally:
                resp.release()
        if not res.namespaced:
            obj = await self.custom.patch_cluster_custom_object(
                res.group, res.version, res.plural, md["name"], body, field_manager=FIELD_MANAGER, force=True,
                field_validation="Strict", _content_type="application/apply-patch+yaml")
            return cast(dict[str, Any] | None, obj)
        obj = await self.custom.patch_namespaced_custom_object(
            res.group, res.version, md["namespace"], res.plural, md["name"], body,
            field_manager=FIELD_MANAGER, force=True, field_validation="Strict",
            _content_type="application/apply-patch+yaml")
        return cast(dict[str, Any] | None, obj)

    async def patch(self, res: Resource, name: str, namespace: str, body: dict[str, Any]) -> bool:
        """A merge patch of a namespaced custom object; False when it is gone (a patch never creates)."""
        try:
            await self.custom.patch_namespaced_custom_object(res.group, res.version, namespace, res.plural, name,
                                                             body, field_manager=FIELD_MANAGER)
        except ApiException as e:
            if e.status == 404:
                return False
            raise
        return True

    async def delete(self, res: Resource, name: str, namespace: str | None, uid: str | None = None) -> None:
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid),
                                      propagation_policy="Background") if uid else None
        try:
            if res.namespaced:
                await self.custom.delete_namespaced_custom_object(
                    res.group, res.version, namespace or "", res.plural, name, body=body)
            else:
                await self.custom.delete_cluster_custom_object(res.group, res.version, res.plural, name, body=body)
        except ApiException as e:
            if e.status not in (404, 409):
                raise

    async def list_core(self, res: Resource, namespace: str | None, *, watch: bool = False,
                        _request_timeout: float | None = None, **query: Any) -> Any:
        """List (a dict) or watch (the streaming aiohttp response) a core-group kind with the query the
        custom-object calls take (label_selector, resource_version, _continue, ...), so one informer serves
        both."""
        path = f"/api/{res.version}/" + (f"namespaces/{namespace}/" if namespace else "") + res.plural
        params = [(_camel(k.removeprefix("_")), v) for k, v in query.items() if v is not None]
        if watch:
            params.append(("watch", "true"))
        resp = await self._call("GET", path, query=params, request_timeout=_request_timeout)
        if watch:
            return resp
        try:
            return json.loads(await resp.read())
        finally:
            resp.release()

    async def list_objects(self, res: Resource, namespace: str, label_selector: str) -> list[dict[str, Any]]:
        """One list of `res` in `namespace` by label, read once (not watched)."""
        prefix = f"/apis/{res.group}/{res.version}" if res.group else f"/api/{res.version}"
        resp = await self._call("GET", f"{prefix}/namespaces/{namespace}/{res.plural}",
                                query=[("labelSelector", label_selector)])
        try:
            items: list[dict[str, Any]] = json.loads(await resp.read())["items"]
            return items
        finally:
            resp.release()

    async def _call(self, method: str, path: str, *, query: list[tuple[str, Any]] | None = None, body: Any = None,
                    content_type: str = "application/json", request_timeout: float | None = None) -> Any:
        """A request the generated client has no method for; raises ApiException on 4xx/5xx like the others."""
        params = await self.api_client.param_serialize(
            method=method, resource_path=path, query_params=query or [], body=body, auth_settings=["BearerToken"],
            header_params={"Accept": "application/json", "Content-Type": content_type})
        resp = await self.api_client.call_api(*params, _request_timeout=request_timeout, _preload_content=False)
        if resp.status >= 400:
            text = (await resp.read()).decode(errors="replace")  # type: ignore[no-untyped-call]
            resp.response.release()
            # The body too: its Status (reason, causes such as NamespaceTerminating) is what callers read.
            raise ApiException(status=resp.status, reason=text[:1000], body=text)
        return resp.response

    async def put_subresource(self, res: Resource, name: str, namespace: str, action: str) -> None:
        """PUT one of KubeVirt's actions (`pause`, `unpause`, `softreboot` on a VMI, `restart` on a VM), served
        by virt-api behind the API server; a 4xx answer is `Refused` with virt-api's message."""
        path = f"{SUBRESOURCES}/namespaces/{namespace}/{res.plural}/{name}/{action}"
        try:
            resp = await self._call("PUT", path, body={})
        except ApiException as e:
            if e.status is not None and 400 <= e.status < 500 and e.status not in (401, 403):
                raise Refused(e.status, _message(e.reason)) from e
            raise
        resp.release()

    async def resize_claim(self, name: str, namespace: str, gib: int) -> None:
        """Grow a PersistentVolumeClaim (the storage class must allow expansion; the API server refuses a
        shrink)."""
        await self.core.patch_namespaced_persistent_volume_claim(
            name, namespace, {"spec": {"resources": {"requests": {"storage": f"{gib}Gi"}}}},
            field_manager=FIELD_MANAGER, _content_type="application/merge-patch+json")

    async def create_secret(self, body: dict[str, Any]) -> bool:
        """Create a Secret. Kova writes the few it needs (export tokens it generated) and never reads any."""
        secret = client.V1Secret.from_dict(body)
        assert secret is not None
        try:
            await self.core.create_namespaced_secret(body["metadata"]["namespace"], secret,
                                                     field_manager=FIELD_MANAGER)
        except ApiException as e:
            if e.status == 409:  # it exists: not Kova's to overwrite (nor to read)
                return False
            raise
        return True

    async def delete_secret(self, name: str, namespace: str) -> None:
        try:
            await self.core.delete_namespaced_secret(name, namespace)
        except ApiException as e:
            if e.status != 404:
                raise

    async def patch_status(self, res: Resource, name: str, namespace: str | None, status: dict[str, Any],
                           resource_version: str | None = None) -> dict[str, Any] | None:
        """Merge-patch the status; returns the object as the server has it now (None: it is gone). With a
        resourceVersion, the server refuses (409) if the object changed since."""
        body: dict[str, Any] = {"status": status}
        if resource_version:
            body["metadata"] = {"resourceVersion": resource_version}
        try:
            if res.namespaced:
                obj = await self.custom.patch_namespaced_custom_object_status(
                    res.group, res.version, namespace or "", res.plural, name, body)
            else:
                obj = await self.custom.patch_cluster_custom_object_status(res.group, res.version, res.plural,
                                                                           name, body)
        except ApiException as e:
            if e.status != 404:  # gone meanwhile: nothing left to describe
                raise
            return None
        return cast(dict[str, Any], obj)

    async def post_event(self, obj: dict[str, Any], *, type: str, reason: str, message: str) -> None:
        """A core/v1 Event about `obj`, as `kubectl describe` and `kubectl get events` show them (cluster-scoped
        objects' Events go to `default`, as Kopf and kubectl do)."""
        md = obj["metadata"]
        now = clock.utcnow()
        event = client.CoreV1Event.from_dict({
            "metadata": {"generateName": f"{md['name']}.", "namespace": md.get("namespace") or "default"},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": md["name"],
                               "namespace": md.get("namespace"), "uid": md.get("uid")},
            "type": type, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "reportingInstance": socket.gethostname(), "firstTimestamp": now, "lastTimestamp": now, "count": 1})
        assert event is not None  # from_dict returns None only for None
        await self.core.create_namespaced_event(md.get("namespace") or "default", event)


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(w.title() for w in rest)


def _message(text: str | None) -> str:
    """The message of a Status answer, or the text as it came (virt-api answers plain text too)."""
    try:
        return str(json.loads(text or "").get("message") or text)
    except (ValueError, AttributeError):
        return (text or "").strip()
