"""The storage the local cloud has no disks for: a CSI driver `local.sim.kova.dev` (StorageClass `sim-local`,
the default) with its external-provisioner, external-resizer and kubelet's file-system resize.

Provisioning: a claim of the class with no volume gets a PersistentVolume `pvc-<claim uid>` made for it
(capacity = request, the claim's access and volume modes, reclaim policy Delete, `claimRef` to the claim),
both bound (`spec.volumeName`, phases Bound) as external-provisioner and the PV binder leave them. A volume
whose claim is gone is deleted with its data (reclaim policy Delete). The data of a claim is the file
`<volumes>/<namespace>/<claim>.img`, written by the importer's payload (tests/cloud/importer.py).

Expansion: a grown request goes Resizing → FileSystemResizePending → the new capacity; the file keeps its
bytes (a sparse file of GiBs would only slow tests down).

A second driver, `clone.sim.kova.dev` (StorageClass `sim-clone`), is storage that clones on its own side, as
Ceph RBD, NetApp or Portworx do: it has a CSIDriver object, so CDI fills its claims with populators (a prime
claim `prime-<uid>` imported, then its volume rebound to the DataVolume's claim), and its StorageProfile says
`csi-clone`, so CDI clones a claim of it as a CSI clone (CSIClonePhase: a claim `tmp-pvc-<target uid>` in the
source's namespace with `dataSourceRef` to the source; PrepClaimPhase grows it, with a `prep-<uid>` pod to
finish the file system's resize; RebindPhase moves its volume to the target). What this driver plays:

- A claim with `dataSourceRef` to a claim (kind PersistentVolumeClaim, core group): a clone, made after a copy
  cost of `CLONE_DELAY` plus the source's data at `CLONE_RATE` bytes a second (storage-side: no host reads
  it). A target smaller than its source is refused as external-provisioner refuses it (Warning
  `ProvisioningFailed`, the claim stays Pending) and as CDI's webhook refuses a DataVolume clone.
- A claim filled by a populator (`dataSourceRef` to a kind of another group) is not provisioned: the PV
  binder binds it once a volume's `claimRef` names it (the populator's rebind), and the claim the volume left
  goes `Lost`, which tells CDI the rebind is done.
- A volume's data follows it: the PV's annotation `sim.kova.dev/data` names the claim file that holds it, and
  the file is moved when the volume is rebound (a real volume's blocks do not move; the claim files here are
  named by claim).

Modelled on kubernetes-csi external-provisioner (controller.go: provisionClaimOperation, getPVCSource) and
external-resizer, and on the PV controller's binding (pkg/controller/volume/persistentvolume: syncUnboundClaim,
syncBoundClaim) in Kubernetes v1.37.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kubernetes.client.exceptions import ApiException

from tests.cloud.cloner import extents
from tests.cloud.kubelet import quantity

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("csi")
DRIVER = "local.sim.kova.dev"
STORAGE_CLASS = "sim-local"
CLONE_DRIVER = "clone.sim.kova.dev"
CLONE_CLASS = "sim-clone"
DRIVERS = {STORAGE_CLASS: DRIVER, CLONE_CLASS: CLONE_DRIVER}
DATA_ANNOTATION = "sim.kova.dev/data"  # namespace/claim: the claim file that holds the volume's data
CLONE_DELAY = 1.0  # seconds a CSI clone takes besides its data
CLONE_RATE = float(4 << 30)  # bytes of data a second the storage copies on its own side
COMPONENT = "clone.sim.kova.dev_csi-provisioner"  # external-provisioner's event source: <driver>_<identity>
SNAPSHOT_GROUP = "snapshot.storage.k8s.io"
SNAPSHOTS = ".snapshots"  # the folder of the snapshots' data: <volumes>/.snapshots/<content>.img
# VolumeSnapshotContent: the snapshot-controller's finalizer (the sidecar removes it once the snapshot is gone)
# and its annotations saying a CreateSnapshot is in flight or the content is to be deleted.
CONTENT_FINALIZER = "snapshot.storage.kubernetes.io/volumesnapshotcontent-bound-protection"
BEING_CREATED = "snapshot.storage.kubernetes.io/volumesnapshot-being-created"
BEING_DELETED = "snapshot.storage.kubernetes.io/volumesnapshot-being-deleted"


def condition(type_: str) -> dict[str, str]:
    from tests.cloud.kubelet import now

    return {"type": type_, "status": "True", "lastTransitionTime": now(), "lastProbeTime": now()}


def volume_name(pvc: dict[str, Any]) -> str:
    return f"pvc-{pvc['metadata']['uid']}"


def data_file(sim: Simulator, ref: str) -> Path:
    namespace, claim = ref.split("/", 1)
    return Path(sim.volumes) / namespace / f"{claim}.img"


def source_of(pvc: dict[str, Any]) -> tuple[str, str] | None:
    """What a new claim is made from, as external-provisioner reads its data source: (kind, name) of a claim to
    clone or a VolumeSnapshot to restore; None for an empty volume."""
    ref = pvc["spec"].get("dataSourceRef") or pvc["spec"].get("dataSource") or {}
    group, kind = ref.get("apiGroup") or "", ref.get("kind")
    if (group, kind) in (("", "PersistentVolumeClaim"), (SNAPSHOT_GROUP, "VolumeSnapshot")):
        return str(kind), str(ref["name"])
    return None


def populated(pvc: dict[str, Any]) -> bool:
    """A claim a volume populator fills (a data source of another API group): no provisioner makes its volume."""
    ref = pvc["spec"].get("dataSourceRef") or {}
    return bool(ref.get("apiGroup")) and source_of(pvc) is None


def reconcile(sim: Simulator) -> None:
    claims = {(c["metadata"]["namespace"], c["metadata"]["name"]): c for c in sim.cached("persistentvolumeclaims")}
    volumes = {v["metadata"]["name"]: v for v in sim.cached("persistentvolumes")}
    for pvc in claims.values():
        sc = pvc["spec"].get("storageClassName")
        if sc not in DRIVERS or pvc["metadata"].get("deletionTimestamp"):
            continue
        try:
            phase = (pvc.get("status") or {}).get("phase")
            if phase == "Lost":
                continue
            if phase == "Bound":
                pv = volumes.get(pvc["spec"].get("volumeName") or "")
                if pv is not None and (pv["spec"].get("claimRef") or {}).get("uid") != pvc["metadata"]["uid"]:
                    lost(sim, pvc)
                    continue
                requested = pvc["spec"]["resources"]["requests"]["storage"]
                if quantity(requested) > quantity(((pvc.get("status") or {}).get("capacity") or {}).get("storage", 0)):
                    expand(sim, pvc, requested)
            elif populated(pvc):
                bind_rebound(sim, pvc, volumes)
            else:
                provision(sim, pvc, claims)
        except ApiException as e:
            if e.status not in (404, 409) and not (e.status == 403 and "NamespaceTerminating" in str(e.body)):
                raise
    for pv in volumes.values():
        ref = pv["spec"].get("claimRef") or {}
        if pv["spec"].get("csi", {}).get("driver") not in DRIVERS.values() or pv["metadata"].get("deletionTimestamp"):
            continue
        claim = claims.get((ref.get("namespace", ""), ref.get("name", "")))
        if claim is None or claim["metadata"]["uid"] != ref.get("uid"):
            delete(sim, pv)
    snapshots(sim)


def about(pvc: dict[str, Any]) -> dict[str, Any]:
    """The claim as an event's object (a listed item carries no kind)."""
    return {**pvc, "apiVersion": "v1", "kind": "PersistentVolumeClaim"}


def provision(sim: Simulator, pvc: dict[str, Any], claims: dict[tuple[str, str], dict[str, Any]]) -> None:
    md, spec = pvc["metadata"], pvc["spec"]
    name = spec.get("volumeName") or volume_name(pvc)
    requested = spec["resources"]["requests"]["storage"]
    sc = spec["storageClassName"]
    source = source_of(pvc)
    data = f"{md['namespace']}/{md['name']}"
    if sim.get_cached("persistentvolumes", "", name) is None:
        if source is not None and not clone(sim, pvc, source, claims, requested):
            return
        body = {"apiVersion": "v1", "kind": "PersistentVolume",
                "metadata": {"name": name, "annotations": {"pv.kubernetes.io/provisioned-by": DRIVERS[sc],
                                                           DATA_ANNOTATION: data}},
                "spec": {"capacity": {"storage": requested},
                         "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                         "persistentVolumeReclaimPolicy": "Delete", "storageClassName": sc,
                         "volumeMode": spec.get("volumeMode") or "Filesystem",
                         "claimRef": {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "namespace": md["namespace"],
                                      "name": md["name"], "uid": md["uid"]},
                         "csi": {"driver": DRIVERS[sc], "volumeHandle": f"{md['namespace']}/{md['name']}/{md['uid']}"}}}
        try:
            sim.remember("persistentvolumes", sim.rest("POST", "/api/v1/persistentvolumes", body, "application/json"))
        except ApiException as e:
            if e.status != 409:
                raise
        sim.rest("PATCH", f"/api/v1/persistentvolumes/{name}/status", {"status": {"phase": "Bound"}})
    bind(sim, pvc, name, requested, DRIVERS[sc])
    log.info("pvc %s/%s bound to %s (%s%s)", md["namespace"], md["name"], name, requested,
             f", from {source[0]} {source[1]}" if source else "")


def bind(sim: Simulator, pvc: dict[str, Any], volume: str, capacity: str, driver: str) -> None:
    """The PV binder's half: the claim names its volume and is Bound with the volume's capacity."""
    md, spec = pvc["metadata"], pvc["spec"]
    if spec.get("volumeName") != volume:
        sim.remember("persistentvolumeclaims", sim.rest(
            "PATCH", f"/api/v1/namespaces/{md['namespace']}/persistentvolumeclaims/{md['name']}",
            {"metadata": {"annotations": {"pv.kubernetes.io/bind-completed": "yes",
                                          "pv.kubernetes.io/bound-by-controller": "yes",
                                          "volume.kubernetes.io/storage-provisioner": driver}},
             "spec": {"volumeName": volume}}))
    sim.patch_claim_status(pvc, {"phase": "Bound", "accessModes": spec.get("accessModes") or ["ReadWriteOnce"],
                                 "capacity": {"storage": capacity}})


def clone(sim: Simulator, pvc: dict[str, Any], source: tuple[str, str],
          claims: dict[tuple[str, str], dict[str, Any]], requested: str) -> bool:
    """A CSI clone of a claim, or a volume restored from a snapshot, into the claim's new volume: refused when
    the source is not ready or the target is smaller (external-provisioner checks both before it calls
    CreateVolume), done once its copy cost has passed. True: done."""
    md = pvc["metadata"]
    ns, (kind, name) = md["namespace"], source
    handle = f"error getting handle for DataSource Type {kind} by Name {name}"
    if kind == "PersistentVolumeClaim":
        claim = claims.get((ns, name))
        if claim is None or (claim.get("status") or {}).get("phase") != "Bound":
            refuse(sim, pvc, f'{handle}: error getting PVC {name} (namespace {ns}) from api server: '
                             f'persistentvolumeclaims "{name}" not found or not bound')
            return False
        have = quantity(((claim.get("status") or {}).get("capacity") or {}).get("storage", 0))
        pv = sim.get_cached("persistentvolumes", "", claim["spec"].get("volumeName") or "")
        src = data_file(sim, ((pv or {}).get("metadata", {}).get("annotations") or {}).get(
            DATA_ANNOTATION, f"{ns}/{name}"))
        what = "source PVC"
    else:
        snap = sim.get_cached("volumesnapshots", ns, name)
        bound = ((snap or {}).get("status") or {}).get("boundVolumeSnapshotContentName") or ""
        content = sim.get_cached("volumesnapshotcontents", "", bound)
        if content is None or not (content.get("status") or {}).get("readyToUse"):
            refuse(sim, pvc, f"{handle}: snapshot {name} is not Ready")
            return False
        have = float(content["status"].get("restoreSize") or 0)
        src, what = data_file(sim, f"{SNAPSHOTS}/{bound}"), "source snapshot"
    if quantity(requested) < have:
        refuse(sim, pvc, f"{handle}: requested volume size {int(quantity(requested))} is less than the size "
                         f"{int(have)} for the {what} {name}")
        return False
    key = f"clone/{md['uid']}"
    if key not in sim.last_step:
        sim.last_step[key] = time.monotonic()
        sim.event(about(pvc), "Provisioning",
                  f'External provisioner is provisioning volume for claim "{ns}/{md["name"]}"', COMPONENT)
    return copied(sim, key, src, data_file(sim, f"{ns}/{md['name']}"))


def copied(sim: Simulator, key: str, src: Path, dst: Path) -> bool:
    """The storage's copy of `src` into `dst`, made once its cost (from the first call for `key`) has passed."""
    sim.last_step.setdefault(key, time.monotonic())
    size, parts = extents(src) if src.exists() else (0, [])
    if time.monotonic() - sim.last_step[key] < CLONE_DELAY + sum(n for _, n in parts) / CLONE_RATE:
        return False
    if src.exists():
        copy_sparse(src, dst, size, parts)
    return True


def snapshots(sim: Simulator) -> None:
    """csi-snapshotter's half for the clone driver: a VolumeSnapshotContent the snapshot-controller made is cut
    (its volume's data copied at the copy cost) and made ready with its handle, time and restore size; one to
    be deleted loses its data, then the finalizer that held it."""
    for content in sim.cached("volumesnapshotcontents"):
        spec, md = content.get("spec") or {}, content["metadata"]
        if spec.get("driver") != CLONE_DRIVER:
            continue
        try:
            if md.get("deletionTimestamp"):
                if BEING_DELETED in (md.get("annotations") or {}) and CONTENT_FINALIZER in (md.get("finalizers") or []):
                    data_file(sim, f"{SNAPSHOTS}/{md['name']}").unlink(missing_ok=True)
                    sim.rest("PATCH", f"/apis/{SNAPSHOT_GROUP}/v1/volumesnapshotcontents/{md['name']}",
                             {"metadata": {"finalizers": [f for f in md["finalizers"] if f != CONTENT_FINALIZER]}})
                    log.info("snapshot %s deleted", md["name"])
            elif (spec.get("source") or {}).get("volumeHandle") and not content.get("status"):
                cut(sim, content)
        except ApiException as e:
            if e.status not in (404, 409):
                raise


def cut(sim: Simulator, content: dict[str, Any]) -> None:
    md, handle = content["metadata"], content["spec"]["source"]["volumeHandle"]
    pv = next((v for v in sim.cached("persistentvolumes") if v["spec"].get("csi", {}).get("volumeHandle") == handle),
              None)
    if pv is None:
        return
    path = f"/apis/{SNAPSHOT_GROUP}/v1/volumesnapshotcontents/{md['name']}"
    if BEING_CREATED not in (md.get("annotations") or {}):
        sim.rest("PATCH", path, {"metadata": {"annotations": {BEING_CREATED: "yes"}}})
    data = (pv["metadata"].get("annotations") or {}).get(DATA_ANNOTATION, "")
    if not copied(sim, f"snapshot/{md['uid']}", data_file(sim, data) if data else Path("/nonexistent"),
                  data_file(sim, f"{SNAPSHOTS}/{md['name']}")):
        return
    size = int(quantity(pv["spec"]["capacity"]["storage"]))
    sim.rest("PATCH", f"{path}/status", {"status": {
        "snapshotHandle": md["name"], "creationTime": time.time_ns(), "readyToUse": True, "restoreSize": size}})
    sim.rest("PATCH", path, {"metadata": {"annotations": {BEING_CREATED: None}}})
    log.info("snapshot %s of %s cut (%d bytes)", md["name"], data, size)


def copy_sparse(src: Path, dst: Path, size: int, parts: list[tuple[int, int]]) -> None:
    """The source's bytes, its holes kept (a clone of a sparse 1 GiB disk writes only its data)."""
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_suffix(".clone")
    with src.open("rb") as f, tmp.open("wb") as out:
        for offset, length in parts:
            f.seek(offset)
            out.seek(offset)
            left = length
            while left:
                chunk = f.read(min(left, 1 << 20))
                if not chunk:
                    break
                out.write(chunk)
                left -= len(chunk)
        out.truncate(size)
    os.replace(tmp, dst)


def refuse(sim: Simulator, pvc: dict[str, Any], why: str) -> None:
    """external-provisioner's Warning, once per claim and reason: the claim stays Pending."""
    md = pvc["metadata"]
    key = f"{md['uid']}/ProvisioningFailed/{why}"
    if key in sim.warned:
        return
    sim.warned.add(key)
    sc = pvc["spec"]["storageClassName"]
    sim.event(about(pvc), "ProvisioningFailed", f'failed to provision volume with StorageClass "{sc}": {why}',
              COMPONENT, "Warning")
    log.info("pvc %s/%s not provisioned: %s", md["namespace"], md["name"], why)


def follow(sim: Simulator, pv: dict[str, Any]) -> None:
    """A rebound volume's data moves to its new claim's file."""
    ref = pv["spec"].get("claimRef") or {}
    want = f"{ref.get('namespace')}/{ref.get('name')}"
    have = (pv["metadata"].get("annotations") or {}).get(DATA_ANNOTATION)
    if not have or have == want:
        return
    src, dst = data_file(sim, have), data_file(sim, want)
    if src.exists():
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.replace(src, dst)
    sim.remember("persistentvolumes", sim.rest("PATCH", f"/api/v1/persistentvolumes/{pv['metadata']['name']}",
                                               {"metadata": {"annotations": {DATA_ANNOTATION: want}}}))
    log.info("pv %s rebound: its data moved from %s to %s", pv["metadata"]["name"], have, want)


def bind_rebound(sim: Simulator, pvc: dict[str, Any], volumes: dict[str, dict[str, Any]]) -> None:
    """A populator's claim: bound to the volume once the populator rebinds one to it (claimRef with its uid)."""
    pv = next((v for v in volumes.values() if (v["spec"].get("claimRef") or {}).get("uid") == pvc["metadata"]["uid"]),
              None)
    if pv is None:
        return
    follow(sim, pv)
    bind(sim, pvc, pv["metadata"]["name"], pv["spec"]["capacity"]["storage"], pv["spec"]["csi"]["driver"])
    log.info("pvc %s/%s bound to %s, rebound by its populator", pvc["metadata"]["namespace"],
             pvc["metadata"]["name"], pv["metadata"]["name"])


def lost(sim: Simulator, pvc: dict[str, Any]) -> None:
    """The claim a volume was rebound away from (a populator's prime or tmp claim): Lost, as the PV binder says."""
    sim.event(about(pvc), "ClaimLost", "Bound claim has lost its PersistentVolume. Data on the volume is lost!",
              "persistentvolume-controller", "Warning")
    sim.patch_claim_status(pvc, {"phase": "Lost"})


def delete(sim: Simulator, pv: dict[str, Any]) -> None:
    """Reclaim policy Delete: the volume and its data go once its claim is gone."""
    ref = pv["spec"].get("claimRef") or {}
    data = (pv["metadata"].get("annotations") or {}).get(DATA_ANNOTATION) or \
        f"{ref.get('namespace', '-')}/{ref.get('name', '-')}"
    data_file(sim, data).unlink(missing_ok=True)
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
