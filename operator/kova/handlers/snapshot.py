"""Nova's createImage: an Image whose source is an Instance, filled from KubeVirt's export of its root disk.

KubeVirt serves a stopped VirtualMachine's volumes over HTTPS (VirtualMachineExport). Kova generates the
export's token itself and hands it over in a Secret it creates, so it never needs to read a Secret. The
export link is then read through the same verified import as a web-download (hashes, format inspection,
size cap, nothing visible before it is verified). The Instance is stopped while its disk is exported, as in
Nova's cold snapshot (kova.compute.lifecycle), and started again once the Image has its data. The export
and its Secret are owned by the Image and deleted when the copy is done.
"""

from __future__ import annotations

import asyncio
import secrets
from typing import Any

import kopf

from kova.builders import MANAGED_BY, owner_reference, parse_image_ref
from kova.handlers.image import Log, import_from, kill, reconcile
from kova.image.fetch import ExportFetcher
from kova.kube import VIRTUAL_MACHINE_EXPORTS
from kova.models import SnapshotOrigin
from kova.runtime import IMAGES, INSTANCES, Runtime

POLL = 2.0  # seconds between looks at an export that is not ready yet
EXPORT_TTL = "2h"  # KubeVirt removes a forgotten export after this (its own default)


def export_name(image: str, suffix: str) -> str:
    return f"{image[:200]}-snap-{suffix}"


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


async def run(rt: Runtime, obj: dict[str, Any], stopped: kopf.DaemonStopped, logger: Log) -> bool:
    """One attempt at a snapshot; True when it should be tried again later."""
    md, spec = obj["metadata"], obj.get("spec") or {}
    namespace, name = md["namespace"], md["name"]
    instance_name = spec["source"]["instance"]
    inst = await rt.kube.get(INSTANCES, instance_name, namespace)
    if inst is None:
        await kill(rt, namespace, name, "InstanceNotFound", f"Instance {instance_name} does not exist in {namespace}")
        return False
    ist = inst.get("status") or {}
    if ist.get("status") == "ERROR":
        await kill(rt, namespace, name, "InstanceError", f"Instance {instance_name} is in ERROR: "
                                                         f"{(ist.get('fault') or {}).get('message', '')}")
        return False
    if ist.get("status") in (None, "BUILD") or not ist.get("virtualMachine"):
        await reconcile(rt, namespace, name, queued_message=f"waiting for Instance {instance_name} to finish "
                                                            "building")
        return True
    origin = SnapshotOrigin(instance_uuid=inst["metadata"]["uid"], base_image_ref=await _image_uid(rt, inst))
    previous = (obj.get("status") or {}).get("snapshot") or {}
    if previous.get("export"):
        # Left by an attempt that died: its token was never stored anywhere, so it cannot be read. A new one.
        await _remove(rt, namespace, previous["export"])
    suffix = secrets.token_hex(4)
    export = export_name(name, suffix)
    origin.export = export
    written = await rt.kube.patch_status(IMAGES, name, namespace, {"snapshot": origin.dump()})
    rt.writes.wrote_status(obj, written)
    token = secrets.token_urlsafe(32)
    owner = owner_reference(obj)
    labels = {**MANAGED_BY, "image.kova.dev/snapshot-of": instance_name}
    await rt.kube.create_secret({"apiVersion": "v1", "kind": "Secret", "type": "Opaque",
                                 "metadata": {"name": export, "namespace": namespace, "labels": labels,
                                              "ownerReferences": [owner]},
                                 "stringData": {"token": token}})
    try:
        await rt.kube.create(VIRTUAL_MACHINE_EXPORTS, {
            "apiVersion": VIRTUAL_MACHINE_EXPORTS.api_version, "kind": "VirtualMachineExport",
            "metadata": {"name": export, "namespace": namespace, "labels": labels, "ownerReferences": [owner]},
            "spec": {"source": {"apiGroup": "kubevirt.io", "kind": "VirtualMachine", "name": ist["virtualMachine"]},
                     "tokenSecretRef": export, "ttlDuration": EXPORT_TTL}})
        link = await _ready(rt, namespace, name, export, ist.get("dataVolume") or "", instance_name, stopped)
        if link is None:
            return False
        url, ca = link
        logger.info("reading the export of Instance %s from %s", instance_name, url.split("?")[0])
        return await import_from(rt, obj, stopped, logger, url, spec.get("diskFormat") or "raw", None,
                                 ExportFetcher(ca_pem=ca, token=token))
    finally:
        await _remove(rt, namespace, export)


async def _ready(rt: Runtime, namespace: str, name: str, export: str, volume: str, instance: str,
                 stopped: kopf.DaemonStopped) -> tuple[str, str] | None:
    """Wait for KubeVirt to serve the export (the Instance stops for it); None when told to stop."""
    said = False
    while not stopped:
        obj = await rt.kube.get(VIRTUAL_MACHINE_EXPORTS, export, namespace)
        link = export_link(obj or {}, volume)
        if link is not None:
            return link
        if not said:
            phase = ((obj or {}).get("status") or {}).get("phase") or "Pending"
            await reconcile(rt, namespace, name, queued_message=f"waiting for KubeVirt to export the root disk of "
                                                                f"Instance {instance} ({phase}; the instance stops "
                                                                "for the copy)")
            said = True
        await asyncio.sleep(POLL)
    return None


async def _remove(rt: Runtime, namespace: str, export: str) -> None:
    await rt.kube.delete(VIRTUAL_MACHINE_EXPORTS, export, namespace)
    await rt.kube.delete_secret(export, namespace)


async def _image_uid(rt: Runtime, inst: dict[str, Any]) -> str | None:
    ref = (inst.get("status") or {}).get("imageRef") or (inst.get("spec") or {}).get("imageRef")
    if not ref:
        return None
    image_ns, image_name = parse_image_ref(ref, inst["metadata"]["namespace"])
    image = await rt.kube.get(IMAGES, image_name, image_ns)
    return image["metadata"]["uid"] if image else None
