"""The storage the local cloud has no disks for: a CSI driver `local.sim.kova.dev` (StorageClass `sim-local`,
the default) with its external-provisioner, external-resizer and kubelet's file-system resize.

Provisioning: a claim of the class with no volume gets a PersistentVolume `pvc-<claim uid>` made for it
(capacity = request, the claim's access and volume modes, reclaim policy Delete, `claimRef` to the claim),
both bound (`spec.volumeName`, phases Bound) as external-provisioner and the PV binder leave them. A volume
whose claim is gone is deleted with its data (reclaim policy Delete). The data of a claim is the file
`<volumes>/<namespace>/<claim>.img`, written by the importer's payload (tests/cloud/importer.py).

Expansion: a grown request goes Resizing → FileSystemResizePending → the new capacity; the file keeps its
bytes (a sparse file of GiBs would only slow tests down).

Modelled on kubernetes-csi external-provisioner (controller.go: provisionClaimOperation) and
external-resizer, and on the PV controller's binding (pkg/controller/volume/persistentvolume) in Kubernetes
v1.37.
"""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud.kubelet import quantity

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("csi")
DRIVER = "local.sim.kova.dev"
STORAGE_CLASS = "sim-local"


def condition(type_: str) -> dict[str, str]:
    from tests.cloud.kubelet import now

    return {"type": type_, "status": "True", "lastTransitionTime": now(), "lastProbeTime": now()}


def volume_name(pvc: dict[str, Any]) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def reconcile(sim: Simulator) -> None:
    claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in sim.cached("persistentvolumeclaims")}
    for pvc in claims.values():
        if pvc["spec"].get("storageClassName") != STORAGE_CLASS or pvc["metadata"].get("deletionTimestamp"):
            continue
        try:
            if (pvc.get("status") or {}).get("phase") != "Bound":
                provision(sim, pvc)
            else:
                requested = pvc["spec"]["resources"]["requests"]["storage"]
                if quantity(requested) > quantity(((pvc.get("status") or {}).get("capacity") or {}).get("storage", 0)):
                    expand(sim, pvc, requested)
        except ApiException as e:
            if e.status not in (404, 409) and not (e.status == 403 and "NamespaceTerminating" in str(e.body)):
                raise
    for pv in sim.cached("persistentvolumes"):
        ref = pv["spec"].get("claimRef") or {}
        if pv["spec"].get("csi", {}).get("driver") != DRIVER or pv["metadata"].get("deletionTimestamp"):
            continue
        claim = claims.get((ref.get("namespace", ""), ref.get("name", "")))
        if claim is None or claim["metadata"]["uid"] != ref.get("uid"):
            delete(sim, pv)


def provision(sim: Simulator, pvc: dict[str, Any]) -> None:
    md, spec = pvc["metadata"], pvc["spec"]
    name = spec.get("volumeName") or volume_name(pvc)
    requested = spec["resources"]["requests"]["storage"]
    if sim.get_cached("persistentvolumes", "", name) is None:
        body = {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVER}},
                "spec": {"capacity": {"storage": requested},
                         "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": STORAGE_CLASS,
                         "volumeMode": spec.get("volumeMode") or "Filesystem",
                         "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                                      "name": md["name"], "uid": md["uid"]},
                         "csi": {"driver": DRIVER, "volumeHandle": f"{md['namespace']}/{md['name']}/{md['uid']}"}}}
        try:
            sim.remember("persistentvolumes", sim.rest("POST", "/api/v1/persistentvolumes", body, "application/json"))
        except ApiException as e:
            if e.status != 409:
                raise
        sim.rest("PATCH", f"/api/v1/persistentvolumes/{name}/status", {"status": {"phase": "Bound"}})
    if not spec.get("volumeName"):
        sim.remember("persistentvolumeclaims", sim.rest(
            "PATCH", f"/api/v1/namespaces/{md['namespace']}/persistentvolumeclaims/{md['name']}",
            {"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                          "pv.kubernetes.io/bound-by-controller": "yes",
                                          "volume.kubernetes.io/storage-provisioner": DRIVER}},
             "spec": {"volumeName": name}}))
    sim.patch_claim_status(pvc, {"phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                                 "capacity": {"storage": requested}})
    log.info("pvc %s/%s bound to %s (%s)", md["namespace"], md["name"], name, requested)


def delete(sim: Simulator, pv: dict[str, Any]) -> None:
    """Reclaim policy Delete: the volume and its data go once its claim is gone."""
    ref = pv["spec"].get("claimRef") or {}
    (sim.volumes / ref.get("namespace", "-") / f"{ref.get('name', '-')}.img").unlink(missing_ok=True)
    name = pv["metadata"]["name"]
    try:
        sim.rest("PATCH", f"/api/v1/persistentvolumes/{name}", {"metadata": {"finalizers": None}})
        sim.rest("DELETE", f"/api/v1/persistentvolumes/{name}", {}, "application/json")
    except ApiException as e:
        if e.status != 404:
            raise
    sim.forget("persistentvolumes", pv)
    log.info("pv %s deleted (claim %s/%s gone)", name, ref.get("namespace"), ref.get("name"))


def expand(sim: Simulator, pvc: dict[str, Any], requested: str) -> None:
    """external-resizer, then kubelet: the claim's capacity grows in steps."""
    key = f"resize/{pvc['metadata']['uid']}"
    types = {c.get("type") for c in pvc.get("status", {}).get("conditions") or []}
    if not types & {"Resizing", "FileSystemResizePending"}:
        sim.last_step[key] = time.monotonic()
        sim.patch_claim_status(pvc, {
            "conditions": [condition("Resizing")], "allocatedResources": {"storage": requested},
            "allocatedResourceStatuses": {"storage": "ControllerResizeInProgress"}})
    elif "Resizing" in types and sim.due(key):
        sim.patch_claim_status(pvc, {
            "conditions": [{**condition("FileSystemResizePending"), "message": "Waiting for user to (re-)start a "
                            "pod to finish file system resize of volume on node."}],
            "allocatedResourceStatuses": {"storage": "NodeResizePending"}})
    elif "FileSystemResizePending" in types and sim.due(key):
        sim.patch_claim_status(pvc, {"capacity": {"storage": requested}, "conditions": None,
                                     "allocatedResourceStatuses": None})
        name = (pvc["spec"].get("volumeName") or "")
        if name:
            sim.rest("PATCH", f"/api/v1/persistentvolumes/{name}", {"spec": {"capacity": {"storage": requested}}})
        log.info("pvc %s/%s expanded to %s", pvc["metadata"]["namespace"], pvc["metadata"]["name"], requested)
