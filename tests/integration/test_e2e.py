"""Kova end to end on the local cloud, through kubectl apply, as a user drives it."""

from __future__ import annotations

import hashlib
import io
import json
import os
import tempfile
import threading
from typing import Any

import pytest

from kova.adapters.store import blob_key, record_key
from tests.cloud.bench import S3_BUCKET, LocalCloud
from tests.conftest import Kubectl, Operator, condition, http_status, sample, scrape, set_quota, wait_for
from tests.httpsource import Source
from tests.qcow2 import make_qcow2, qcow2_to_raw

pytestmark = pytest.mark.integration
GiB = 1 << 30


def flavor(name: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Flavor", "metadata": {"name": name},
            "spec": {"vcpus": 1, "ram": 512, "disk": 1, **spec}}


def image(name: str, url: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": name},
            "spec": {"diskFormat": "qcow2", "source": {"url": url}, **spec}}


def instance(name: str, flavor_ref: str, image_ref: str, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Instance", "metadata": {"name": name},
            "spec": {"flavorRef": flavor_ref, "imageRef": image_ref, **spec}}


def unique(kubectl: Kubectl, base: str) -> str:
    """Flavors are cluster-scoped: name them per test."""
    return f"{base}-{kubectl.namespace}"[:63]


def disk(tag: str, mib: int = 1) -> bytes:
    # 64 MiB of guest disk: CDI converts the image to raw, so a snapshot of a server booted from it is that big.
    return make_qcow2(64 << 20, (tag.encode() + os.urandom(64)) * (mib * 1024 * 1024 // (len(tag) + 64)))


def store_keys(cloud: LocalCloud, uid: str) -> tuple[bool, bool, list[str]]:
    """(blob present, record present, open multipart uploads) for one image."""
    client = cloud.s3_client()
    names = {o.object_name for o in client.list_objects(S3_BUCKET, prefix=f"images/{uid}")}
    uploads = client._list_multipart_uploads(S3_BUCKET, prefix=blob_key(uid)).uploads
    return blob_key(uid) in names, record_key(uid) in names, [u.upload_id for u in uploads]


def wait_image(kubectl: Kubectl, name: str, word: str, timeout: float = 60) -> dict[str, Any]:
    return wait_for(lambda: (o := kubectl.get("image", name)) and o.get("status", {}).get("status") == word and o,
                    timeout, f"image {name} to be {word}")


def wait_instance(kubectl: Kubectl, name: str, word: str, timeout: float = 60) -> dict[str, Any]:
    try:
        return wait_for(lambda: (o := kubectl.get("instance", name)) and o.get("status", {}).get("status") == word
                        and o.get("status", {}).get("observedGeneration") == o["metadata"]["generation"] and o,
                        timeout, f"instance {name} to be {word}")
    except AssertionError as e:  # say where it stopped: its status, and its VirtualMachine's (as the admin)
        last = kubectl.get("instance", name) or {}
        vm = kubectl.cloud.kubectl("get", "vm", name, "-n", str(kubectl.namespace), "-o",
                                   "jsonpath={.status}", check=False)
        raise AssertionError(f"{e}\ninstance status: {last.get('status')}\nvm status: {vm[-3000:]}") from None


def assert_ready_and_current(obj: dict[str, Any]) -> None:
    ready = condition(obj)
    assert ready["status"] == "True", obj["status"]
    assert obj["status"]["observedGeneration"] == obj["metadata"]["generation"]
    assert ready["observedGeneration"] == obj["metadata"]["generation"]


def test_happy_path_boots_an_imported_image(cloud: LocalCloud, operator: Operator, source: Source,
                                            kubectl: Kubectl) -> None:
    data = disk("happy", 2)
    url = source.add(f"/{kubectl.namespace}/happy.qcow2", data)
    fl = unique(kubectl, "m1")
    kubectl.apply([flavor(fl, vcpus=2, ram=1024, disk=3),
                   image("os", url, minDisk=1, source={"url": url,
                                                       "checksum": f"sha256:{hashlib.sha256(data).hexdigest()}"}),
                   instance("vm1", fl, "os", userData="#cloud-config\nhostname: vm1\n", metadata={"role": "web"})])
    kubectl("wait", "--for=condition=Ready", "--timeout=90s", f"flavor/{fl}", "image/os", "instance/vm1")
    img = kubectl.get("image", "os")
    assert img is not None
    st = img["status"]
    assert (st["status"], st["size"], st["checksum"], st["osHashAlgo"], st["osHashValue"]) == (
        "active", len(data), hashlib.md5(data).hexdigest(), "sha512", hashlib.sha512(data).hexdigest())
    assert st["virtualSize"] == 64 << 20 and st["detectedFormat"] == "qcow2"
    assert st["location"] == f"s3://{S3_BUCKET}/images/{img['metadata']['uid']}"
    stored = cloud.s3_client().get_object(S3_BUCKET, blob_key(img["metadata"]["uid"]))
    assert stored.read() == data
    inst = kubectl.get("instance", "vm1")
    assert inst is not None
    for obj in (img, inst, kubectl.get("flavor", fl)):
        assert_ready_and_current(obj or {})
    assert inst["status"]["status"] == "ACTIVE" and inst["status"]["powerState"] == "Running"
    assert inst["status"]["addresses"][0]["ip"].startswith("10.244.")
    vm = kubectl.get("vm", "vm1")
    dv = kubectl.get("dv", "vm1-root")
    assert vm is not None and dv is not None
    for child in (vm, dv):
        ref = child["metadata"]["ownerReferences"][0]
        assert (ref["kind"], ref["name"], ref["controller"]) == ("Instance", "vm1", True)
    vmi = kubectl.get("vmi", "vm1")
    assert vmi is not None and vmi["metadata"]["annotations"]["compute.kova.dev/server-metadata"] == '{"role": "web"}'
    domain = vm["spec"]["template"]["spec"]["domain"]
    assert domain["cpu"]["cores"] == 2 and domain["memory"]["guest"] == "1024Mi"
    assert dv["spec"]["storage"]["resources"]["requests"]["storage"] == "3Gi"
    assert dv["spec"]["source"]["http"]["checksum"] == f"sha512:{hashlib.sha512(data).hexdigest()}"
    # The disk CDI's importer wrote is the image's guest view, converted to raw: the whole chain carried it.
    with tempfile.TemporaryFile() as raw:
        qcow2_to_raw(io.BytesIO(data), raw)
        raw.seek(0)
        assert (cloud.workdir / "volumes" / str(kubectl.namespace) / "vm1-root.img").read_bytes() == raw.read()
    reasons = {e["reason"] for e in kubectl.events("vm1")}
    assert {"Spawning", "Active"} <= reasons


@pytest.mark.parametrize("case", ["wrong-hash", "url-404", "content-length", "declared-raw"])
def test_bad_source_kills_the_image_and_stores_nothing(cloud: LocalCloud, operator: Operator, source: Source,
                                                      kubectl: Kubectl, case: str) -> None:
    data = disk(case)
    path = f"/{kubectl.namespace}/{case}"
    spec: dict[str, Any] = {}
    if case == "wrong-hash":
        url = source.add(path, data)
        spec["source"] = {"url": url, "checksum": "sha512:" + hashlib.sha512(b"something else").hexdigest()}
    elif case == "url-404":
        url = source.base + path
    elif case == "content-length":
        url = source.add(path, data, claimed_length=len(data) + 4096)
    else:
        url = source.add(path, data)
        spec["diskFormat"] = "raw"
    kubectl.apply(image("bad", url, **spec))
    img = wait_image(kubectl, "bad", "killed")
    reason = {"wrong-hash": "ChecksumMismatch", "url-404": "SourceNotFound", "content-length": "SizeMismatch",
              "declared-raw": "InvalidDiskFormat"}[case]
    ready = condition(img)
    assert (ready["status"], ready["reason"]) == ("False", reason)
    assert condition(img, "Stalled")["status"] == "True"
    assert img["status"]["message"] and img["status"].get("checksum") is None
    assert any(e["reason"] == reason and e["type"] == "Warning" for e in kubectl.events("bad"))
    assert store_keys(cloud, img["metadata"]["uid"]) == (False, False, [])


def test_instance_waits_for_a_flavor_created_later(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    url = source.add(f"/{kubectl.namespace}/os", disk("late-flavor"))
    fl = unique(kubectl, "late")
    kubectl.apply([image("os", url), instance("vm", fl, "os")])
    waiting = wait_for(lambda: condition(kubectl.get("instance", "vm"), "Reconciling").get("reason")
                       == "WaitingForFlavor" and kubectl.get("instance", "vm"), 30, "WaitingForFlavor")
    assert waiting["status"]["status"] == "BUILD" and condition(waiting)["status"] == "False"
    kubectl.apply(flavor(fl))
    wait_instance(kubectl, "vm", "ACTIVE")


def test_instance_waits_for_its_image_to_become_active(operator: Operator, source: Source,
                                                       kubectl: Kubectl) -> None:
    fl = unique(kubectl, "f")
    url = source.add(f"/{kubectl.namespace}/slow", disk("slow", 4), seconds_per_mib=0.5)
    kubectl.apply([flavor(fl), image("os", url), instance("vm", fl, "os")])
    wait_for(lambda: kubectl.status("image", "os").get("status") == "importing", 30, "importing")
    inst = kubectl.get("instance", "vm")
    assert inst is not None and inst["status"]["status"] == "BUILD"
    assert condition(inst, "Reconciling")["reason"] == "WaitingForImage"
    assert kubectl.get("dv", "vm-root") is None
    wait_instance(kubectl, "vm", "ACTIVE", timeout=90)


def test_power_off_and_on(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    fl = unique(kubectl, "f")
    url = source.add(f"/{kubectl.namespace}/os", disk("power"))
    kubectl.apply([flavor(fl), image("os", url), instance("vm", fl, "os")])
    wait_instance(kubectl, "vm", "ACTIVE")
    kubectl("patch", "instance", "vm", "--type=merge", "-p", '{"spec":{"powerState":"Stopped"}}')
    off = wait_instance(kubectl, "vm", "SHUTOFF")
    assert off["status"]["powerState"] == "Shutdown" and condition(off)["status"] == "True"
    assert (kubectl.get("vm", "vm") or {})["spec"]["runStrategy"] == "Halted"
    assert kubectl.get("vmi", "vm") is None
    kubectl("patch", "instance", "vm", "--type=merge", "-p", '{"spec":{"powerState":"Running"}}')
    on = wait_instance(kubectl, "vm", "ACTIVE")
    assert on["metadata"]["generation"] == 3 and on["status"]["addresses"]


def test_deleting_an_instance_removes_its_children(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    fl = unique(kubectl, "f")
    url = source.add(f"/{kubectl.namespace}/os", disk("delete"))
    kubectl.apply([flavor(fl), image("os", url), instance("vm", fl, "os")])
    wait_instance(kubectl, "vm", "ACTIVE")
    assert kubectl.get("vmi", "vm") is not None
    kubectl("delete", "instance", "vm", "--wait=true", "--timeout=30s")
    wait_for(lambda: all(kubectl.get(kind, name) is None for kind, name in
                         (("vm", "vm"), ("vmi", "vm"), ("dv", "vm-root"))), 30, "children to be collected")


def test_deleting_an_image_removes_its_data(cloud: LocalCloud, operator: Operator, source: Source,
                                            kubectl: Kubectl) -> None:
    url = source.add(f"/{kubectl.namespace}/os", disk("gone"))
    kubectl.apply(image("os", url))
    uid = wait_image(kubectl, "os", "active")["metadata"]["uid"]
    assert store_keys(cloud, uid) == (True, True, [])
    kubectl("delete", "image", "os", "--timeout=30s")
    assert kubectl.get("image", "os") is None
    assert store_keys(cloud, uid) == (False, False, [])


def test_protected_image_cannot_be_deleted(cloud: LocalCloud, operator: Operator, source: Source,
                                           kubectl: Kubectl) -> None:
    url = source.add(f"/{kubectl.namespace}/os", disk("protected"))
    kubectl.apply(image("os", url, protected=True))
    uid = wait_image(kubectl, "os", "active")["metadata"]["uid"]
    out = kubectl("delete", "image", "os", check=False)
    assert "is protected: set spec.protected to false before deleting it" in out
    img = kubectl.get("image", "os")
    assert img is not None and not img["metadata"].get("deletionTimestamp")
    assert store_keys(cloud, uid)[:2] == (True, True)
    kubectl("patch", "image", "os", "--type=merge", "-p", '{"spec":{"protected":false}}')
    kubectl("delete", "image", "os", "--timeout=30s")
    assert store_keys(cloud, uid) == (False, False, [])


def test_finalizer_keeps_a_protected_image_when_the_policy_is_absent(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    """Defence in depth: with the admission policy unbound, the data still survives a delete."""
    url = source.add(f"/{kubectl.namespace}/os", disk("finalizer"))
    kubectl.apply(image("os", url, protected=True))
    uid = wait_image(kubectl, "os", "active")["metadata"]["uid"]
    cloud.kubectl("delete", "validatingadmissionpolicybinding", "kova-protected-images")
    try:
        # The admission plugin learns of the removed binding from a watch: retry until it has.
        wait_for(lambda: "forbidden" not in kubectl("delete", "image", "os", "--wait=false", check=False), 30,
                 "the policy binding to be gone")
        wait_for(lambda: any(e["reason"] == "DeletionRefused" for e in kubectl.events("os")), 30, "refusal")
        assert store_keys(cloud, uid)[:2] == (True, True)
        kubectl("patch", "image", "os", "--type=merge", "-p", '{"spec":{"protected":false}}')
        wait_for(lambda: kubectl.get("image", "os") is None, 30, "the image to go once unprotected")
        assert store_keys(cloud, uid) == (False, False, [])
    finally:
        cloud.kubectl("apply", "--server-side", "-f", "crds/protected-images.policy.yaml")


def test_image_of_another_namespace_must_be_visible(cloud: LocalCloud, operator: Operator, source: Source,
                                                    kubectl: Kubectl) -> None:
    other = Kubectl(cloud, f"{kubectl.namespace}-lib")
    cloud.kubectl("create", "namespace", str(other.namespace))
    try:
        url = source.add(f"/{kubectl.namespace}/lib", disk("visibility"))
        other.apply([image("private-os", url), image("public-os", url, visibility="public")])
        wait_image(other, "private-os", "active")
        wait_image(other, "public-os", "active")
        fl = unique(kubectl, "f")
        kubectl.apply([flavor(fl), instance("denied", fl, f"{other.namespace}/private-os"),
                       instance("allowed", fl, f"{other.namespace}/public-os")])
        wait_instance(kubectl, "allowed", "ACTIVE")
        # Not visible is said as not there (tests/integration/test_isolation.py): it waits, and boots nothing.
        denied = wait_instance(kubectl, "denied", "BUILD")
        assert condition(denied)["reason"] == "WaitingForImage"
        assert condition(denied)["message"] == f"Image {other.namespace}/private-os does not exist (yet)"
        assert kubectl.get("vm", "denied") is None and kubectl.get("dv", "denied-root") is None
    finally:
        cloud.kubectl("delete", "namespace", str(other.namespace), "--wait=false")


def test_flavor_too_small_for_the_image(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    url = source.add(f"/{kubectl.namespace}/os", disk("small"))
    fl = unique(kubectl, "f")
    kubectl.apply([flavor(fl, ram=512), image("os", url, minRam=2048), instance("vm", fl, "os")])
    err = wait_instance(kubectl, "vm", "ERROR")
    assert condition(err)["reason"] == "FlavorTooSmall" and "minRam 2048" in err["status"]["fault"]["message"]
    assert kubectl.get("vm", "vm") is None


def test_unschedulable_instance_is_an_error(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    url = source.add(f"/{kubectl.namespace}/os", disk("huge"))
    fl = unique(kubectl, "huge")
    set_quota(kubectl, ram=-1)  # 512 GiB is over Nova's default ram quota: the scheduler is what is tested here
    kubectl.apply([flavor(fl, vcpus=2, ram=512 * 1024), image("os", url), instance("vm", fl, "os")])
    err = wait_instance(kubectl, "vm", "ERROR")
    assert condition(err)["reason"] == "NoValidHost" and err["status"]["fault"]["code"] == 500
    assert err["status"]["fault"]["message"].startswith("No valid host was found.")


def test_operator_killed_mid_import_converges(cloud: LocalCloud, operator: Operator, source: Source,
                                              kubectl: Kubectl) -> None:
    data = disk("restart", 24)
    url = source.add(f"/{kubectl.namespace}/big", data, seconds_per_mib=0.25)
    kubectl.apply(image("os", url))
    uid = wait_for(lambda: (o := kubectl.get("image", "os")) and o.get("status", {}).get("status") == "importing"
                   and o["metadata"]["uid"], 30, "importing")
    # Wait until at least one part is in the store, then kill the operator without warning.
    wait_for(lambda: store_keys(cloud, uid)[2], 60, "an open multipart upload")
    operator.kill()
    blob, record, uploads = store_keys(cloud, uid)
    assert (blob, record) == (False, False) and uploads, "the dead import left an open upload behind"
    operator.start()
    img = wait_image(kubectl, "os", "active", timeout=120)
    assert img["status"]["osHashValue"] == hashlib.sha512(data).hexdigest()
    assert img["status"]["size"] == len(data)
    assert store_keys(cloud, uid) == (True, True, []), "the orphan upload must be gone"
    stored = cloud.s3_client().get_object(S3_BUCKET, blob_key(uid))
    assert hashlib.sha512(stored.read()).hexdigest() == hashlib.sha512(data).hexdigest()


def test_crd_validation_rejects_bad_specs(operator: Operator, kubectl: Kubectl) -> None:
    out = kubectl.apply(image("bad", "ftp://example/x", diskFormat="floppy"), check=False)
    assert "spec.diskFormat" in out and "spec.source.url" in out
    kubectl.apply(flavor(unique(kubectl, "fixed")))
    out = kubectl("patch", "flavor", unique(kubectl, "fixed"), "--type=merge", "-p", '{"spec":{"vcpus":4}}',
                  check=False)
    assert "immutable" in out
    listed = json.loads(kubectl("get", "kova", "-o", "json"))["items"]  # the `kova` category
    assert unique(kubectl, "fixed") in {i["metadata"]["name"] for i in listed if i["kind"] == "Flavor"}
    assert kubectl.get("image", "bad") is None, "the invalid Image was not stored"
    # source is url (with a diskFormat) or upload, never both or neither; a checksum goes with a url.
    no_format = image("nofmt", "http://example/x")
    del no_format["spec"]["diskFormat"]
    assert "diskFormat is required to import from a url" in kubectl.apply(no_format, check=False)
    both = image("both", "http://example/x")
    both["spec"]["source"]["upload"] = {}
    assert "exactly one of url" in kubectl.apply(both, check=False)
    upload_sum = image("upsum", "http://example/x")
    upload_sum["spec"]["source"] = {"upload": {}, "checksum": "md5:00"}
    assert "checksum goes with url" in kubectl.apply(upload_sum, check=False)
    # An Image waiting for an upload says so, and the operator does not try to import it.
    waiting = image("waits", "http://example/x")
    waiting["spec"]["source"] = {"upload": {}}
    kubectl.apply(waiting)
    status = wait_for(lambda: (s := kubectl.status("image", "waits")).get("status") and s, 30, "a status")
    assert status["status"] == "queued" and "PUT /v2/images/" in condition({"status": status},
                                                                           "Reconciling")["message"]


def test_expired_image_link_is_renewed(cloud: LocalCloud, operator: Operator, source: Source,
                                       kubectl: Kubectl) -> None:
    """The importer runs only after the DataVolume's presigned link expired (no node ran it meanwhile): it
    gets 403, and real CDI retries that forever (restartCount, the Running condition; never Failed). Kova
    sees the failed attempt on an expired link and makes a new DataVolume with a new link."""
    url = source.add(f"/{kubectl.namespace}/os", disk("renew"))
    fl = unique(kubectl, "f")
    kubectl.apply([flavor(fl), image("os", url)])
    wait_image(kubectl, "os", "active")
    simulator = next(p for p in cloud.procs if p.name == "simulator" and p.popen.poll() is None)
    operator.stop()
    simulator.popen.terminate()  # the nodes' kubelet: no pod runs for a while
    simulator.popen.wait()
    try:
        operator.start(KOVA_PRESIGN_TTL="3")
        kubectl.apply(instance("vm", fl, "os"))
        first = wait_for(lambda: kubectl.get("dv", "vm-root"), 30, "the DataVolume")
        link = first["spec"]["source"]["http"]["url"]
        wait_for(lambda: http_status(link) == 403, 30, "the link to expire before the importer runs")
        cloud.start_simulator()
        retried = wait_for(lambda: (d := kubectl.get("dv", "vm-root")) and (
            d["metadata"]["uid"] != first["metadata"]["uid"] or d.get("status", {}).get("restartCount")) and d,
            60, "the importer to fail once, or Kova to replace the DataVolume")
        if retried["metadata"]["uid"] == first["metadata"]["uid"]:  # seen between the failure and the renewal
            running = next(c for c in retried["status"]["conditions"] if c["type"] == "Running")
            assert retried["status"]["phase"] == "ImportInProgress" and "got 403" in running["message"], retried
        wait_for(lambda: (d := kubectl.get("dv", "vm-root")) and d["metadata"]["uid"] != first["metadata"]["uid"],
                 60, "a new DataVolume with a new link")
        wait_instance(kubectl, "vm", "ACTIVE", timeout=60)
    finally:
        if not any(p.name == "simulator" and p.popen.poll() is None for p in cloud.procs):
            cloud.start_simulator()
        operator.stop()
        operator.start()


def test_deactivated_image_refuses_new_boots_only(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    url = source.add(f"/{kubectl.namespace}/os", disk("deactivate"))
    fl = unique(kubectl, "f")
    kubectl.apply([flavor(fl), image("os", url), instance("old", fl, "os")])
    wait_instance(kubectl, "old", "ACTIVE")
    kubectl("patch", "image", "os", "--type=merge", "-p", '{"spec":{"deactivated":true}}')
    off = wait_image(kubectl, "os", "deactivated")
    assert condition(off)["status"] == "True" and off["status"]["observedGeneration"] == 2
    kubectl.apply(instance("new", fl, "os"))
    refused = wait_instance(kubectl, "new", "ERROR")
    assert condition(refused)["reason"] == "ImageDeactivated" and refused["status"]["fault"]["code"] == 403
    assert kubectl.get("dv", "new-root") is None
    kubectl("patch", "instance", "old", "--type=merge", "-p", '{"spec":{"powerState":"Stopped"}}')
    wait_instance(kubectl, "old", "SHUTOFF")  # an existing instance is still served
    kubectl("patch", "image", "os", "--type=merge", "-p", '{"spec":{"deactivated":false}}')
    wait_image(kubectl, "os", "active")


def test_flavor_with_unknown_extra_spec_value_says_so(operator: Operator, kubectl: Kubectl) -> None:
    name = unique(kubectl, "bad-specs")
    kubectl.apply(flavor(name, extraSpecs={"hw:cpu_policy": "exclusive"}))
    bad = wait_for(lambda: (f := kubectl.get("flavor", name)) and condition(f).get("reason") == "InvalidExtraSpecs"
                   and f, 30, "the flavor to be refused")
    assert condition(bad)["status"] == "False" and "exclusive" in condition(bad)["message"]
    assert condition(bad, "Stalled")["status"] == "True"
    events = Kubectl(kubectl.cloud, "default").events(name)
    assert any(e["reason"] == "InvalidExtraSpecs" and e["type"] == "Warning" for e in events), events
    kubectl("patch", "flavor", name, "--type=merge", "-p", '{"spec":{"extraSpecs":{"hw:cpu_policy":"dedicated"}}}')
    wait_for(lambda: condition(kubectl.get("flavor", name)).get("status") == "True", 30, "the fixed flavor")


def test_passing_source_failure_is_retried(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    data = disk("retry")
    url = source.add(f"/{kubectl.namespace}/flaky", data, unavailable_first=1)
    kubectl.apply(image("os", url))
    retrying = wait_for(lambda: "retried" in (m := condition(kubectl.get("image", "os"), "Reconciling")
                                              ).get("message", "") and m, 30, "the retry to be announced")
    assert "HTTP 503" in retrying["message"]
    img = wait_image(kubectl, "os", "active")  # the operator's retry delay is 1 s in tests
    assert img["status"]["osHashValue"] == hashlib.sha512(data).hexdigest()
    assert source.routes[f"/{kubectl.namespace}/flaky"].hits == 2


def test_imports_beyond_the_limit_wait_in_queued(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    """KOVA_MAX_CONCURRENT_IMPORTS (4 by default): the fifth and sixth Image wait in `queued`, saying why,
    and import once a slot is free."""
    assert operator.proc is not None
    proc = operator.proc
    # The operator's own count of running imports, read every 20 ms in the background: kubectl, a few
    # times a second and one Image after the other, could miss a fifth import that ran only briefly.
    gauge: list[float] = []
    failed: list[Exception] = []
    done = threading.Event()

    def watch() -> None:
        while not done.wait(0.02):
            try:
                gauge.append(sample(scrape(proc), "kova_imports_in_flight"))
            except Exception as e:  # reported below: a sampler that died would make the maximum meaningless
                failed.append(e)
                return
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    names = [f"slot{i}" for i in range(6)]
    try:
        kubectl.apply([image(n, source.add(f"/{kubectl.namespace}/{n}", disk(n, 3), seconds_per_mib=1.0))
                       for n in names])
        waiting: set[str] = set()

        def all_active() -> bool:
            statuses = {n: kubectl.status("image", n) for n in names}
            waiting.update(n for n, s in statuses.items() if s.get("status") == "queued" and "waiting for an "
                           "import slot" in (condition({"status": s}, "Reconciling").get("message") or ""))
            return all(s.get("status") == "active" for s in statuses.values())
        wait_for(all_active, 120, "all six Images to be active", interval=0.3)
    finally:
        done.set()
        watcher.join(timeout=30)
    assert not watcher.is_alive() and not failed, f"the metrics sampler failed: {failed}"
    assert len(gauge) >= 50, f"too few samples of kova_imports_in_flight: {len(gauge)}"
    assert max(gauge) == 4, f"kova_imports_in_flight peaked at {max(gauge)}, not at the limit of 4"
    assert len(waiting) >= 2, waiting
