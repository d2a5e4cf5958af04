"""Nova's createImage over KubeVirt's VirtualMachineExport, as pure functions: when a snapshot may start,
the export and its token Secret, and where the export serves the disk. The controller moves the bytes
(kova.controllers.image)."""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from kova.api.errors import Refusal
from kova.api.models import GlanceStatus, NovaStatus
from kova.api.resources import MANAGED_BY, VIRTUAL_MACHINE_EXPORTS, owner_reference

EXPORT_TTL = "2h"  # KubeVirt removes a forgotten export after this (its own default)
SNAPSHOT_OF = "image.kova.dev/snapshot-of"
# An Image made from an Instance stops that Instance until its data is in: these words end that.
_OVER = {GlanceStatus.active.value, GlanceStatus.killed.value, GlanceStatus.deactivated.value, "deleted"}


def export_name(image: str, suffix: str) -> str:
    return f"{image[:200]}-snap-{suffix}"


def snapshot_running(body: dict[str, Any] | None) -> bool:
    """An Image whose source is an Instance, still waiting for its data (its Instance stays stopped)."""
    if body is None or body["metadata"].get("deletionTimestamp"):
        return False
    return ((body.get("status") or {}).get("status")) not in _OVER


def source_state(instance: dict[str, Any] | None, name: str, namespace: str) -> Refusal | str | None:
    """Whether the Instance can be snapshotted now: a Refusal (the Image is killed), a message to wait
    with, or None (go)."""
    if instance is None:
        return Refusal("InstanceNotFound", f"Instance {name} does not exist in {namespace}")
    status = instance.get("status") or {}
    if (instance.get("spec") or {}).get("locked"):
        # Nova refuses createImage on a locked server (409): it is neither stopped nor copied.
        return Refusal("InstanceLocked", f"Instance {name} is locked: unlock it (spec.locked: false) to take an "
                                         "image of it")
    if status.get("status") == NovaStatus.error.value:
        fault = (status.get("fault") or {}).get("message", "")
        return Refusal("InstanceError", f"Instance {name} is in ERROR: {fault}")
    if status.get("status") in (None, NovaStatus.build.value) or not status.get("virtualMachine"):
        return f"waiting for Instance {name} to finish building"
    return None


def export_objects(image: dict[str, Any], export: str, vm: str, instance: str,
                   token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """The token Secret (Kova generates the token, so it never reads a Secret) and the export, both owned by
    the Image: gone with it whatever happens to the copy."""
    namespace = image["metadata"]["namespace"]
    owner = owner_reference(image)
    labels = {**MANAGED_BY, SNAPSHOT_OF: instance}
    secret = {"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
              "metadata": {"name": export, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
              "stringData": {"token": token}}
    vmexport = {"apiVersion": VIRTUAL_MACHINE_EXPORTS.api_version, "kind": "VirtualMachineExport",
                "metadata": {"name": export, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
                "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": vm},
                         "tokenSecretRef": export, "ttlDuration": EXPORT_TTL}}
    return secret, vmexport


def export_link(export: dict[str, Any], volume: str) -> tuple[str, str] | None:
    """(raw URL, CA) of `volume` in a Ready export's internal link, or None while it is not ready."""
    status = export.get("status") or {}
    internal = (status.get("links") or {}).get("internal") or {}
    if status.get("phase") != "Ready" or not internal:
        return None
    volumes = internal.get("volumes") or []
    chosen = next((v for v in volumes if v.get("name") == volume), volumes[0] if len(volumes) == 1 else None)
    url = next((f["url"] for f in (chosen or {}).get("formats") or [] if f.get("format") == "raw"), None)
    return (url, internal.get("cert") or "") if url else None


def export_service(url: str) -> tuple[str, str] | None:
    """(namespace, Service) of an internal export link, `https://<service>.<namespace>.svc/...`."""
    host = (urlsplit(url).hostname or "").split(".")
    return (host[1], host[0]) if len(host) == 3 and host[2] == "svc" else None


def export_address(service: dict[str, Any] | None, pods: list[dict[str, Any]]) -> tuple[str, int] | None:
    """A ready pod behind the export's Service (its selector's pods) and the Service's target port: Kova
    connects there and verifies the certificate for the Service's name, so it needs neither cluster DNS nor a
    route to the Service's virtual IP (an operator outside the cluster reaches the pod the same way)."""
    ports = ((service or {}).get("spec") or {}).get("ports") or []
    target = ports[0].get("targetPort") if ports else None
    if not isinstance(target, int):
        return None
    for pod in pods:
        status = pod.get("status") or {}
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions") or [])
        if ready and status.get("podIP") and not pod["metadata"].get("deletionTimestamp"):
            return str(status["podIP"]), target
    return None
