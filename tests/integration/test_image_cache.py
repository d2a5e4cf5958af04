"""The golden-image cache end to end, through kubectl: root disks cloned by the real CDI (cdi-controller, and
cdi-apiserver's clone authorization) from one import per image and StorageClass; reads counted at MinIO."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

from kova.adapters.store import blob_key
from kova.image import cache
from tests.cloud import csi
from tests.cloud.bench import LocalCloud
from tests.cloud.kubelet import quantity
from tests.conftest import Kubectl, Operator, sample, scrape, set_quota, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, unique, wait_image, wait_instance
from tests.integration.test_isolation import Tenant, install_tenant_roles
from tests.integration.test_volumes import volume, wait_volume

pytestmark = pytest.mark.integration
CACHE_NS = "kova-image-cache"


class Cached:
    """The session's operator with the image cache on (the chart's default), bounded as a test asks."""

    def __init__(self, operator: Operator) -> None:
        self.operator = operator
        self.restart()

    def restart(self, **env: str) -> None:
        self.operator.stop()
        self.operator.start(KOVA_IMAGE_CACHE_NAMESPACE=CACHE_NS, **env)

    def metrics(self) -> str:
        assert self.operator.proc is not None
        return scrape(self.operator.proc)


@pytest.fixture
def cached(operator: Operator) -> Iterator[Cached]:
    yield Cached(operator)
    operator.stop()
    operator.start()  # back to the session's settings


def entries_of(cloud: LocalCloud, uid: str) -> list[dict[str, Any]]:
    out = cloud.kubectl("-n", CACHE_NS, "get", "dv", "-l", f"{cache.IMAGE_UID_LABEL}={uid}", "-o", "json")
    return list(json.loads(out)["items"])


def boot_image(kubectl: Kubectl, source: Source, name: str) -> dict[str, Any]:
    url = source.add(f"/{kubectl.namespace}/{name}.qcow2", disk(name))
    kubectl.apply([image(name, url)])
    return wait_image(kubectl, name, "active")


def test_ten_servers_of_one_image_read_the_store_once(cloud: LocalCloud, cached: Cached, source: Source,
                                                      kubectl: Kubectl) -> None:
    img = boot_image(kubectl, source, "golden")
    uid = img["metadata"]["uid"]
    fl = unique(kubectl, "c1")
    set_quota(kubectl, instances=11)
    before = cached.metrics()
    # A burst of first boots: all at once, before any entry exists.
    kubectl.apply([flavor(fl, disk=2), *(instance(f"vm{i}", fl, "golden") for i in range(10))])
    waiting = wait_for(lambda: (o := kubectl.get("instance", "vm0")) and
                       (o.get("status") or {}).get("conditions") and o, 30, "vm0 to say what it waits for")
    for i in range(10):
        wait_instance(kubectl, f"vm{i}", "ACTIVE", timeout=180)
    [entry] = entries_of(cloud, uid)  # one entry for the burst
    assert entry["metadata"]["name"] == cache.entry_name(uid, "sim-local")
    assert entry["status"]["phase"] == "Succeeded"
    assert any(e["reason"] == "CachingImage" for e in kubectl.events("vm0")) or \
        "CachingImage" in str(waiting["status"])
    # The store was read once, by the entry's import: every root disk is a clone of it.
    wait_for(lambda: cloud.s3_reads(blob_key(uid)) >= 1, 10, "MinIO's audit of the entry's read")
    assert cloud.s3_reads(blob_key(uid)) == 1
    for i in range(10):
        dv = kubectl.get("dv", f"vm{i}-root")
        assert dv is not None and dv["spec"]["sourceRef"] == {
            "kind": "DataSource", "namespace": CACHE_NS, "name": entry["metadata"]["name"]}
        assert dv["status"]["phase"] == "Succeeded"
        assert dv["spec"]["storage"]["resources"]["requests"]["storage"] == "2Gi"
    # Each root disk holds the image's disk, as a direct import would have written it.
    volumes = cloud.workdir / "volumes"
    golden = (volumes / CACHE_NS / f"{entry['metadata']['name']}.img").read_bytes()
    assert all((volumes / str(kubectl.namespace) / f"vm{i}-root.img").read_bytes() == golden for i in range(10))
    listed = wait_for(lambda: (kubectl.get("image", "golden") or {}).get("status", {}).get("cache"), 30,
                      "the image to list its cache entry")
    assert [(e["storageClass"], e["entry"], e["state"]) for e in listed] == [
        ("sim-local", entry["metadata"]["name"], "ready")]
    after = cached.metrics()
    looked = sum(sample(after, "kova_image_cache_lookups_total", f'{{result="{r}"}}') -
                 sample(before, "kova_image_cache_lookups_total", f'{{result="{r}"}}') for r in ("hit", "miss"))
    assert looked == 10
    # The next boot is a hit: no import, no read.
    kubectl.apply([instance("late", fl, "golden")])
    wait_instance(kubectl, "late", "ACTIVE", timeout=120)
    assert cloud.s3_reads(blob_key(uid)) == 1
    hits = '{result="hit"}'
    assert sample(cached.metrics(), "kova_image_cache_lookups_total", hits) == sample(
        after, "kova_image_cache_lookups_total", hits) + 1


def test_a_tenant_cannot_clone_or_read_the_cache(cloud: LocalCloud, cached: Cached, source: Source,
                                                 kubectl: Kubectl) -> None:
    img = boot_image(kubectl, source, "private")
    fl = unique(kubectl, "c2")
    kubectl.apply([flavor(fl), instance("vm", fl, "private")])
    wait_instance(kubectl, "vm", "ACTIVE", timeout=120)
    name = cache.entry_name(img["metadata"]["uid"], "sim-local")
    tenant = Tenant(cloud, str(kubectl.namespace))
    steal = {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": "stolen"},
             "spec": {"sourceRef": {"kind": "DataSource", "namespace": CACHE_NS, "name": name},
                      "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}
    out = tenant("create", "-f", "-", input=json.dumps(steal), check=False)
    assert f"insufficient permissions in clone source namespace {CACHE_NS}" in out, out
    assert tenant.get("dv", "stolen") is None
    out = tenant("get", "dv", "-n", CACHE_NS, check=False)
    assert "Forbidden" in out or "forbidden" in out, out


def test_least_recently_used_entries_go_and_an_image_deleted_takes_its_own(
        cloud: LocalCloud, cached: Cached, source: Source, kubectl: Kubectl) -> None:
    cached.restart(KOVA_IMAGE_CACHE_MAX_ENTRIES="1", KOVA_IMAGE_CACHE_MIN_AGE="0")
    first, second = boot_image(kubectl, source, "first"), boot_image(kubectl, source, "second")
    fl = unique(kubectl, "c3")
    kubectl.apply([flavor(fl), instance("a", fl, "first")])
    wait_instance(kubectl, "a", "ACTIVE", timeout=120)
    assert len(entries_of(cloud, first["metadata"]["uid"])) == 1
    kubectl.apply([instance("b", fl, "second")])
    wait_instance(kubectl, "b", "ACTIVE", timeout=120)
    # Over one entry: the least recently used one went, its DataSource with it; the servers are untouched.
    wait_for(lambda: not entries_of(cloud, first["metadata"]["uid"]), 90, "the older entry to be evicted")
    assert len(entries_of(cloud, second["metadata"]["uid"])) == 1
    wait_for(lambda: cloud.kubectl("-n", CACHE_NS, "get", "datasource", cache.entry_name(
        first["metadata"]["uid"], "sim-local"), check=False).find("NotFound") >= 0, 30, "its DataSource gone")
    assert (kubectl.get("instance", "a") or {})["status"]["status"] == "ACTIVE"
    # A deleted image takes its entry at once, whatever the bounds.
    cached.restart(KOVA_IMAGE_CACHE_MIN_AGE="86400")
    kubectl("delete", "instance", "b")
    kubectl("delete", "image", "second")
    wait_for(lambda: not entries_of(cloud, second["metadata"]["uid"]), 90, "the deleted image's entry to go")


def test_storage_that_clones_itself_gets_csi_clones_of_the_cache(
        cloud: LocalCloud, cached: Cached, source: Source, kubectl: Kubectl) -> None:
    """On a class whose StorageProfile says csi-clone (the simulator's `sim-clone`, with a CSIDriver), CDI fills
    the entry with its import populator and clones it on the storage's side: the phases CDI reports are the
    CSI clone's, the data is the entry's, and the store is read once for both volumes. Volumes cloned from a
    volume and restored from a VolumeSnapshot on that storage; a clone smaller than its source refused."""
    img = boot_image(kubectl, source, "cow")
    uid = img["metadata"]["uid"]
    install_tenant_roles(cloud)
    tenant = Tenant(cloud, str(kubectl.namespace))
    tenant.apply([volume("a", 2, volumeType=csi.CLONE_CLASS, source={"image": "cow"}),
                  volume("b", 1, volumeType=csi.CLONE_CLASS, source={"image": "cow"})])
    for name in ("a", "b"):
        wait_volume(kubectl, name, "available", timeout=120)
    [entry] = entries_of(cloud, uid)
    name = entry["metadata"]["name"]
    assert name == cache.entry_name(uid, csi.CLONE_CLASS)
    # The entry was filled by CDI's import populator: its prime claim imported, then rebound and gone.
    claim = json.loads(cloud.kubectl("-n", CACHE_NS, "get", "pvc", name, "-o", "json"))
    assert claim["spec"]["dataSourceRef"]["kind"] == "VolumeImportSource"
    assert claim["spec"]["storageClassName"] == csi.CLONE_CLASS
    wait_for(lambda: "prime-" not in cloud.kubectl("-n", CACHE_NS, "get", "pvc", "-o", "name"), 30,
             "the prime claim to go")
    wait_for(lambda: cloud.s3_reads(blob_key(uid)) >= 1, 10, "MinIO's audit of the entry's read")
    assert cloud.s3_reads(blob_key(uid)) == 1
    volumes = cloud.workdir / "volumes"
    golden = (volumes / CACHE_NS / f"{name}.img").read_bytes()
    for vol, gib in (("a", 2), ("b", 1)):
        dv = kubectl.get("dv", f"volume-{vol}") or {}
        assert dv["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"] == "csi-clone"
        reasons = [e["reason"] for e in kubectl.events(f"volume-{vol}")]
        assert "CSICloneInProgress" in reasons and "CloneSucceeded" in reasons, reasons
        assert "CloneInProgress" not in reasons  # no host-assisted copy
        # Grown past the entry by CDI's prep claim (CDI asks a little more: its file system's overhead).
        pvc = kubectl.get("pvc", f"volume-{vol}") or {}
        assert quantity(pvc["status"]["capacity"]["storage"]) >= gib << 30
        assert (kubectl.get("volume", vol) or {})["status"]["size"] == gib
        assert (volumes / str(kubectl.namespace) / f"volume-{vol}.img").read_bytes() == golden
    # A volume cloned from a volume on that class: a CSI clone in the namespace.
    tenant.apply([volume("c", 2, volumeType=csi.CLONE_CLASS, source={"volume": "a"})])
    wait_volume(kubectl, "c", "available", timeout=120)
    assert (kubectl.get("dv", "volume-c") or {})["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"] == "csi-clone"
    assert (volumes / str(kubectl.namespace) / "volume-c.img").read_bytes() == golden
    # A VolumeSnapshot of a volume, cut by the storage (the real snapshot-controller binds it), and a volume
    # restored from it. The tenant holds the rights on snapshots a cluster administrator grants.
    ns = str(kubectl.namespace)
    kubectl("create", "role", "snapshots", "--verb=get,list,watch,create,delete",
            "--resource=volumesnapshots.snapshot.storage.k8s.io")
    kubectl("create", "rolebinding", "snapshots", "--role=snapshots", f"--serviceaccount={ns}:os-edit")
    tenant.apply([{"apiVersion": "snapshot.storage.k8s.io/v1", "kind": "VolumeSnapshot", "metadata": {"name": "snap"},
                   "spec": {"volumeSnapshotClassName": csi.CLONE_CLASS,
                            "source": {"persistentVolumeClaimName": "volume-a"}}}])
    snap = wait_for(lambda: ((o := kubectl.get("volumesnapshot", "snap")) or {}).get("status", {}).get("readyToUse")
                    and o, 60, "the snapshot to be ready to use")
    content = snap["status"]["boundVolumeSnapshotContentName"]
    assert (volumes / csi.SNAPSHOTS / f"{content}.img").read_bytes() == golden
    tenant.apply([volume("d", 3, volumeType=csi.CLONE_CLASS, source={"snapshot": "snap"})])
    wait_volume(kubectl, "d", "available", timeout=120)
    assert (kubectl.get("dv", "volume-d") or {})["metadata"]["annotations"]["cdi.kubevirt.io/cloneType"] == "snapshot"
    assert "CloneFromSnapshotSourceInProgress" in [e["reason"] for e in kubectl.events("volume-d")]
    # Restored at the snapshot's size (CDI's restoreSize), then grown to the 3 GiB asked; the data is kept.
    assert (kubectl.get("volume", "d") or {})["status"]["size"] == 3
    assert (volumes / ns / "volume-d.img").read_bytes() == golden
    # Deleted: the storage's snapshot goes with its content (deletionPolicy Delete).
    tenant("delete", "volumesnapshot", "snap", "--wait=false")
    wait_for(lambda: not (volumes / csi.SNAPSHOTS / f"{content}.img").exists() and
             "NotFound" in cloud.kubectl("get", "volumesnapshotcontent", content, check=False), 60,
             "the snapshot's content and data to go")
    # A server boots from that CSI-cloned volume.
    fl = unique(kubectl, "c4")
    kubectl.apply([flavor(fl)])  # the administrator's
    srv = instance("srv", fl, "cow", bootVolume={"volume": "c"})
    del srv["spec"]["imageRef"]
    tenant.apply([srv])
    assert wait_instance(kubectl, "srv", "ACTIVE", timeout=90)["status"]["dataVolume"] == "volume-c"
    # The storage refuses a clone smaller than its source, as external-provisioner does; nothing is made.
    small = {"apiVersion": "v1", "kind": "PersistentVolumeClaim", "metadata": {"name": "small"},
             "spec": {"storageClassName": csi.CLONE_CLASS, "accessModes": ["ReadWriteOnce"],
                      "resources": {"requests": {"storage": "1Gi"}},
                      "dataSource": {"kind": "PersistentVolumeClaim", "name": "volume-a"}}}
    tenant("create", "-f", "-", input=json.dumps(small))
    refused = wait_for(lambda: next((e for e in kubectl.events("small") if e["reason"] == "ProvisioningFailed"), None),
                       30, "the clone to be refused")
    have = int(quantity((kubectl.get("pvc", "volume-a") or {})["status"]["capacity"]["storage"]))
    assert f"requested volume size {1 << 30} is less than the size {have} for the source PVC volume-a" in \
        refused["message"]
    assert (kubectl.get("pvc", "small") or {})["status"]["phase"] == "Pending"
    assert not (volumes / str(kubectl.namespace) / "small.img").exists()
