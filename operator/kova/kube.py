"""The Kubernetes adapter: the few API calls Kova makes, on the official async client.

Everything returns plain dicts. Not-found comes back as None; other API errors propagate, so a handler
fails and Kopf retries it (an error swallowed here would make Kopf record a success).
"""

from __future__ import annotations

import datetime as dt
import os
import socket
from dataclasses import dataclass
from typing import Any, cast

from kubernetes.aio import client, config
from kubernetes.aio.client.exceptions import ApiException

FIELD_MANAGER = "kova"


@dataclass(frozen=True)
class Resource:
    group: str
    version: str
    plural: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}"


VIRTUAL_MACHINES = Resource("kubevirt.io", "v1", "virtualmachines")
VIRTUAL_MACHINE_INSTANCES = Resource("kubevirt.io", "v1", "virtualmachineinstances")
DATA_VOLUMES = Resource("cdi.kubevirt.io", "v1beta1", "datavolumes")


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
        return cls(client.ApiClient(configuration))

    async def close(self) -> None:
        await self.api_client.close()  # type: ignore[no-untyped-call]

    async def get(self, res: Resource, name: str, namespace: str | None = None) -> dict[str, Any] | None:
        try:
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
            obj = await self.custom.create_namespaced_custom_object(
                res.group, res.version, body["metadata"]["namespace"], res.plural, body,
                field_manager=FIELD_MANAGER, field_validation="Strict")
        except ApiException as e:
            if e.status == 409:
                return None
            raise
        return cast(dict[str, Any], obj)

    async def apply(self, res: Resource, body: dict[str, Any]) -> dict[str, Any] | None:
        """Server-side apply: the child is put back to what Kova wants, whoever changed it. Returns the
        object, or None when the apply created it (the client does not decode the 201 answer)."""
        md = body["metadata"]
        obj = await self.custom.patch_namespaced_custom_object(
            res.group, res.version, md["namespace"], res.plural, md["name"], body,
            field_manager=FIELD_MANAGER, force=True, field_validation="Strict",
            _content_type="application/apply-patch+yaml")
        return cast(dict[str, Any] | None, obj)

    async def delete(self, res: Resource, name: str, namespace: str, uid: str | None = None) -> None:
        body = client.V1DeleteOptions(preconditions=client.V1Preconditions(uid=uid),
                                      propagation_policy="Background") if uid else None
        try:
            await self.custom.delete_namespaced_custom_object(
                res.group, res.version, namespace, res.plural, name, body=body)
        except ApiException as e:
            if e.status not in (404, 409):
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
        now = dt.datetime.now(dt.UTC).isoformat()
        event = client.CoreV1Event.from_dict({
            "metadata": {"generateName": f"{md['name']}.", "namespace": md.get("namespace") or "default"},
            "involvedObject": {"apiVersion": obj.get("apiVersion"), "kind": obj.get("kind"), "name": md["name"],
                               "namespace": md.get("namespace"), "uid": md.get("uid")},
            "type": type, "reason": reason, "message": message[:1024],
            "source": {"component": FIELD_MANAGER}, "reportingComponent": FIELD_MANAGER,
            "reportingInstance": socket.gethostname(), "firstTimestamp": now, "lastTimestamp": now, "count": 1})
        assert event is not None  # from_dict returns None only for None
        await self.core.create_namespaced_event(md.get("namespace") or "default", event)
