"""Faults, as tests: the operator SIGKILLed again and again in the middle of a burst, MinIO gone during
imports until each says it will be retried, kube-apiserver restarted. Everything converges,
with no duplicate, no orphan and no active image with wrong bytes."""

from __future__ import annotations

import hashlib
import json
import random
import time
import urllib.error
import urllib.request
from typing import Any

import pytest

from kova.adapters.store import blob_key, sign_link
from tests.cloud.bench import S3_BUCKET, LocalCloud
from tests.conftest import Kubectl, Operator, condition, set_quota, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, flavor, image, instance, store_keys, unique, wait_instance
from tests.integration.test_openstack import glance_call, qcow2

pytestmark = pytest.mark.integration


def items(kubectl: Kubectl, kind: str) -> list[dict[str, Any]]:
    return list(json.loads(kubectl("get", kind, "-o", "json"))["items"])


def assert_image_bytes(cloud: LocalCloud, img: dict[str, Any], data: bytes) -> None:
    """An active image holds exactly the source's bytes, and its status says so."""
    uid = img["metadata"]["uid"]
    stored = cloud.s3_client().get_object(S3_BUCKET, blob_key(uid)).read()
    digest = hashlib.sha512(data).hexdigest()
    assert (hashlib.sha512(stored).hexdigest(), img["status"]["osHashValue"]) == (digest, digest)
    assert store_keys(cloud, uid) == (True, True, []), "no multipart upload may stay open"


def test_operator_sigkilled_twenty_times_during_a_burst(cloud: LocalCloud, operator: Operator, source: Source,
                                                        kubectl: Kubectl) -> None:
    fl = unique(kubectl, "chaos")
    kubectl.apply([flavor(fl), image("base", source.add(f"/{kubectl.namespace}/base", disk("base")))])
    kubectl("wait", "--for=condition=Ready", "--timeout=60s", "image/base")
    set_quota(kubectl, instances=-1, cores=-1, ram=-1)  # a hundred servers: over Nova's default quotas
    data = {f"img{i}": disk(f"chaos-{i}", 6) for i in range(10)}
    kubectl.apply([image(n, source.add(f"/{kubectl.namespace}/{n}", d, seconds_per_mib=0.3))
                   for n, d in data.items()] + [instance(f"vm{i:03d}", fl, "base") for i in range(100)])
    rng = random.Random(7)
    try:
        for _ in range(20):
            time.sleep(rng.uniform(0.1, 1.5))
            operator.kill()
            operator.start()
    finally:
        if operator.proc is None or operator.proc.popen.poll() is not None:
            operator.start()
    wait_for(lambda: all(i.get("status", {}).get("status") == "ACTIVE" for i in items(kubectl, "instances"))
             and len(items(kubectl, "instances")) == 100, 240, "all 100 Instances to be ACTIVE", interval=2)
    wait_for(lambda: all(i.get("status", {}).get("status") == "active" for i in items(kubectl, "images")), 120,
             "every Image to be active", interval=1)
    images = {i["metadata"]["name"]: i for i in items(kubectl, "images")}
    for name, payload in data.items():
        assert_image_bytes(cloud, images[name], payload)
    # Exactly one DataVolume and one VirtualMachine per Instance, each owned by it: no duplicate, no orphan.
    owners = {i["metadata"]["uid"]: i["metadata"]["name"] for i in items(kubectl, "instances")}
    for kind, suffix in (("dv", "-root"), ("vm", "")):
        children = items(kubectl, kind)
        assert sorted(c["metadata"]["name"] for c in children) == sorted(n + suffix for n in owners.values())
        for child in children:
            ref = child["metadata"]["ownerReferences"][0]
            assert owners[ref["uid"]] + suffix == child["metadata"]["name"]
    # No finalizer stuck: everything can be deleted, the Images' data with them.
    uids = [i["metadata"]["uid"] for i in images.values()]
    kubectl("delete", "instances,images", "--all", "--wait=false")
    wait_for(lambda: not items(kubectl, "images") and not items(kubectl, "instances"), 60, "everything gone")
    for uid in uids:
        assert store_keys(cloud, uid) == (False, False, [])


def test_store_outage_and_api_server_restart(cloud: LocalCloud, operator: Operator, source: Source,
                                             kubectl: Kubectl) -> None:
    data = {f"out{i}": disk(f"outage-{i}", 8) for i in range(3)}
    kubectl.apply([image(n, source.add(f"/{kubectl.namespace}/{n}", d, seconds_per_mib=0.25))
                   for n, d in data.items()])
    wait_for(lambda: any(kubectl.status("image", n).get("status") == "importing" for n in data), 30,
             "an import to be under way")
    cloud.stop_part("minio")
    try:
        # The outage lasts until every import has failed against the store and its Image says it will be
        # tried again: what the operator does while the store is gone, seen rather than slept through.
        retrying: set[str] = set()
        messages: dict[str, str] = {}

        def all_retrying() -> bool:
            for n in data:
                status = kubectl.status("image", n)
                assert status.get("status") != "active", f"{n} became active while the store is gone"
                messages[n] = condition({"status": status}, "Reconciling").get("message") or ""
                if messages[n].startswith("import will be retried: object store"):
                    retrying.add(n)
            return retrying == set(data)
        try:
            wait_for(all_retrying, 180, "every import to fail against the stopped store and say it will be "
                     "retried", interval=0.5)
        except AssertionError as e:
            raise AssertionError(f"{e}; seen retrying: {sorted(retrying)}; last messages: {messages}") from None
    finally:
        cloud.start_part("minio")
    for n, payload in data.items():
        img = wait_for(lambda n=n: (o := kubectl.get("image", n)) and o["status"].get("status") == "active" and o,
                       120, f"{n} to be active after the outage")
        assert_image_bytes(cloud, img, payload)
    # kube-apiserver restarted: the operator's watches come back and new work is done.
    cloud.stop_part("kube-apiserver")
    cloud.start_part("kube-apiserver")
    fl = unique(kubectl, "after-restart")
    kubectl.apply([flavor(fl), instance("vm1", fl, "out0")])
    wait_instance(kubectl, "vm1", "ACTIVE", timeout=120)


def test_a_store_that_is_down_stops_no_other_image(cloud: LocalCloud, operator: Operator, api: str, source: Source,
                                                   kubectl: Kubectl) -> None:
    """The file store's volume gone: an image held there stays active and says why its status is not renewed,
    while an image imported into MinIO meanwhile becomes active as usual; back, the file image is read again."""
    ns = kubectl.namespace
    token = tenant_token(cloud, ns)
    data = qcow2("down-store", kib=512)
    on_file = glance_call(api, token, ns, "POST", "/images", {"name": "on-file", "disk_format": "qcow2",
                                                              "container_format": "bare"})
    req = urllib.request.Request(f"{api}/projects/{ns}/image/v2/images/{on_file['id']}/file", method="PUT", data=data,
                                 headers={"X-Auth-Token": token, "Content-Type": "application/octet-stream",
                                          "x-image-meta-store": "file"})
    urllib.request.urlopen(req, timeout=60).close()
    assert kubectl.status("image", "on-file")["stores"] == ["file"]
    away = cloud.file_store.with_name("file-store.away")
    cloud.file_store.rename(away)
    cloud.file_store.write_text("not a directory: the store's volume is gone")
    try:
        kubectl("annotate", "image", "on-file", "chaos/poke=1")  # an update: the operator reconciles it
        ready = wait_for(lambda: (c := condition(kubectl.get("image", "on-file"))).get("reason") ==
                         "StoreUnreachable" and c, 30, "the file image to say its store does not answer")
        assert ready["status"] == "True" and "store file did not answer" in ready["message"]
        shown = kubectl.status("image", "on-file")
        assert (shown["status"], shown["stores"], shown["size"]) == ("active", ["file"], len(data))
        # Its importers' link says the store does not answer (503, which CDI retries), not that the image is gone.
        expires = int(time.time()) + 60
        link = (f"{api}/stores/file/images/{on_file['id']}?expires={expires}&signature="
                f"{sign_link(cloud.link_key.encode(), 'file', on_file['id'], expires)}")
        with pytest.raises(urllib.error.HTTPError) as e:
            urllib.request.urlopen(link, timeout=30)
        assert e.value.code == 503 and b"Store file does not answer" in e.value.read()
        # Another image is imported into the default store (MinIO) as if nothing were wrong.
        kubectl.apply([image("meanwhile", source.add(f"/{ns}/meanwhile", disk("meanwhile")))])
        kubectl("wait", "--for=condition=Ready", "--timeout=60s", "image/meanwhile")
        assert kubectl.status("image", "meanwhile")["stores"] == ["s3"]
    finally:
        cloud.file_store.unlink()
        away.rename(cloud.file_store)
    kubectl("annotate", "image", "on-file", "chaos/poke=2", "--overwrite")
    back = wait_for(lambda: (c := condition(kubectl.get("image", "on-file"))).get("reason") == "Active" and c, 30,
                    "the file image to be read again")
    assert back["message"] == f"{len(data)} bytes stored"
    with urllib.request.urlopen(link, timeout=30) as answer:
        assert answer.read() == data
