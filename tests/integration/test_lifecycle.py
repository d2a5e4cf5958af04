"""Nova's server actions end to end, through kubectl on the local cloud: every action's status words in the
order Nova shows them, KubeVirt doing the work (virt-api's subresources behind the API server, PVC
expansion, VirtualMachineExport), refusals, and `kubectl wait --for=condition=Ready` after each."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud, binary
from tests.cloud.kubelet import quantity
from tests.conftest import Kubectl, Operator, condition, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import flavor, image, instance, unique, wait_image, wait_instance

pytestmark = pytest.mark.integration


class Words:
    """Every status word and task state the Instance shows, in order, from a watch (`kubectl get -w`)."""

    def __init__(self, kubectl: Kubectl, name: str) -> None:
        cloud = kubectl.cloud
        self.seen: list[str] = []
        self.proc = subprocess.Popen(
            [binary("kubectl"), f"--kubeconfig={cloud.kubeconfig}", "-n", str(kubectl.namespace), "get",
             "instance", name, "--watch", "-o", "jsonpath={.status.status}/{.status.taskState}{\"\\n\"}"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            word = line.strip().rstrip("/")
            if word and (not self.seen or self.seen[-1] != word):
                self.seen.append(word)

    def words(self) -> list[str]:
        """Status words only, repeats folded."""
        out: list[str] = []
        for w in (s.split("/")[0] for s in self.seen):
            if not out or out[-1] != w:
                out.append(w)
        return out

    def since(self, word: str) -> list[str]:
        words = self.words()
        return words[len(words) - 1 - words[::-1].index(word):] if word in words else []

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)


@pytest.fixture
def words(kubectl: Kubectl) -> Iterator[Any]:
    watches: list[Words] = []

    def start(name: str) -> Words:
        watches.append(Words(kubectl, name))
        return watches[-1]
    yield start
    for w in watches:
        w.close()


def raw_disk(tag: str, mib: int = 1) -> bytes:
    return (tag.encode() + os.urandom(4096 - len(tag)))[:4096] * (mib * 256)


def patch(kubectl: Kubectl, name: str, spec: dict[str, Any], check: bool = True) -> str:
    return kubectl("patch", "instance", name, "--type=merge", "-p", json.dumps({"spec": spec}), check=check)


def ready(kubectl: Kubectl, name: str) -> None:
    kubectl("wait", "--for=condition=Ready", "--timeout=60s", f"instance/{name}")


def actions(kubectl: Kubectl, name: str) -> list[tuple[str, str | None]]:
    return [(a["action"], a.get("result")) for a in kubectl.status("instance", name).get("actions", [])]


def boot(kubectl: Kubectl, source: Source, name: str, fl: str, data: bytes, **spec: Any) -> dict[str, Any]:
    url = source.add(f"/{kubectl.namespace}/{name}.raw", data)
    kubectl.apply([image(f"{name}-os", url, diskFormat="raw"), instance(name, fl, f"{name}-os", **spec)])
    return wait_instance(kubectl, name, "ACTIVE", timeout=90)


def test_pause_suspend_stop_and_back(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl,
                                     words: Any) -> None:
    fl = unique(kubectl, "p")
    kubectl.apply(flavor(fl))
    boot(kubectl, source, "srv", fl, raw_disk("power"))
    w = words("srv")
    for state, word, back in (("Paused", "PAUSED", "unpause"), ("Suspended", "SUSPENDED", "resume"),
                              ("Stopped", "SHUTOFF", "start")):
        patch(kubectl, "srv", {"powerState": state})
        wait_instance(kubectl, "srv", word)
        ready(kubectl, "srv")
        vmi = kubectl.get("vmi", "srv")
        if state == "Paused":  # virt-api paused the VMI; KubeVirt says so on the VM too
            assert vmi is not None and condition(vmi, "Paused")["status"] == "True"
            assert kubectl.status("vm", "srv")["printableStatus"] == "Paused"
        else:  # suspend and stop free the resources: no VMI
            assert vmi is None
        patch(kubectl, "srv", {"powerState": "Running"})
        wait_instance(kubectl, "srv", "ACTIVE")
        ready(kubectl, "srv")
        assert actions(kubectl, "srv")[-1] == (back, "Success")
        assert w.since(word) and w.since(word)[-1] == "ACTIVE"
    assert [a for a, _ in actions(kubectl, "srv")] == ["create", "pause", "unpause", "suspend", "resume", "stop",
                                                       "start"]
    seen = wait_for(lambda: w.words()[-1] == "ACTIVE" and w.words(), 10, "the watch")
    assert [word for word in seen if word not in ("ACTIVE", "SHUTOFF")] == ["PAUSED", "SUSPENDED"]
    assert seen.index("SHUTOFF") > seen.index("SUSPENDED")
    # Nova answers 409 to pause a stopped server; the API server does, before anything happens.
    patch(kubectl, "srv", {"powerState": "Stopped"})
    wait_instance(kubectl, "srv", "SHUTOFF")
    refused = patch(kubectl, "srv", {"powerState": "Paused"}, check=False)
    assert "Nova answers 409" in refused


def test_soft_and_hard_reboot(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl,
                              words: Any) -> None:
    fl = unique(kubectl, "r")
    kubectl.apply(flavor(fl))
    boot(kubectl, source, "srv", fl, raw_disk("reboot"))
    w = words("srv")
    first = kubectl.get("vmi", "srv")
    assert first is not None
    patch(kubectl, "srv", {"rebootRequest": {"type": "SOFT", "token": "1"}})
    wait_for(lambda: kubectl.status("instance", "srv").get("requests", {}).get("reboot") == "1", 30, "the reboot")
    wait_instance(kubectl, "srv", "ACTIVE")
    ready(kubectl, "srv")
    assert "REBOOT" in w.words() and w.since("REBOOT")[-1] == "ACTIVE"
    same = kubectl.get("vmi", "srv")
    assert same is not None and same["metadata"]["uid"] == first["metadata"]["uid"]  # the guest rebooted
    patch(kubectl, "srv", {"rebootRequest": {"type": "HARD", "token": "2"}})
    wait_for(lambda: "HARD_REBOOT" in w.words(), 30, "HARD_REBOOT")
    wait_instance(kubectl, "srv", "ACTIVE")
    ready(kubectl, "srv")
    new = kubectl.get("vmi", "srv")
    assert new is not None and new["metadata"]["uid"] != first["metadata"]["uid"]  # a new VMI
    assert actions(kubectl, "srv")[-2:] == [("reboot", "Success"), ("reboot", "Success")]
    # A SOFT reboot of a stopped server is refused (409) and over; the server stays Ready.
    patch(kubectl, "srv", {"powerState": "Stopped"})
    wait_instance(kubectl, "srv", "SHUTOFF")
    patch(kubectl, "srv", {"rebootRequest": {"type": "SOFT", "token": "3"}})
    wait_for(lambda: actions(kubectl, "srv")[-1] == ("reboot", "Error"), 30, "the refusal")
    ready(kubectl, "srv")
    assert any(e["reason"] == "RebootRefused" and e["type"] == "Warning" for e in kubectl.events("srv"))


def test_locked_instance_refuses_actions_and_deletion(cloud: LocalCloud, operator: Operator, source: Source,
                                                      kubectl: Kubectl) -> None:
    fl = unique(kubectl, "l")
    kubectl.apply(flavor(fl))
    boot(kubectl, source, "srv", fl, raw_disk("lock"))
    patch(kubectl, "srv", {"locked": True, "lockedReason": "audit"})
    wait_for(lambda: actions(kubectl, "srv")[-1] == ("lock", "Success"), 30, "the lock in the history")
    for change in ({"powerState": "Stopped"}, {"flavorRef": "other"}, {"imageRef": "other"},
                   {"rebootRequest": {"token": "x"}}):
        out = patch(kubectl, "srv", change, check=False)
        assert "the instance is locked" in out, out
    out = kubectl("delete", "instance", "srv", "--wait=false", check=False)
    assert "is locked" in out and kubectl.get("instance", "srv") is not None
    assert "lockedReason" not in patch(kubectl, "srv", {"lockedReason": "still auditing"})  # allowed
    patch(kubectl, "srv", {"locked": False, "powerState": "Stopped"})  # unlocking in the same change is allowed
    wait_instance(kubectl, "srv", "SHUTOFF")
    assert [a for a, _ in actions(kubectl, "srv")][-3:] == ["lock", "unlock", "stop"]


def test_resize_confirm_then_revert(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl,
                                    words: Any) -> None:
    small, large, larger = unique(kubectl, "s"), unique(kubectl, "lg"), unique(kubectl, "xl")
    kubectl.apply([flavor(small, vcpus=1, ram=512, disk=1), flavor(large, vcpus=2, ram=1024, disk=2),
                   flavor(larger, vcpus=4, ram=2048, disk=2)])
    boot(kubectl, source, "srv", small, raw_disk("resize"))
    w = words("srv")
    first = kubectl.get("vmi", "srv")
    assert first is not None
    patch(kubectl, "srv", {"flavorRef": large})
    verify = wait_instance(kubectl, "srv", "VERIFY_RESIZE", timeout=60)
    ready(kubectl, "srv")
    assert w.since("RESIZE")[:2] == ["RESIZE", "VERIFY_RESIZE"]
    assert verify["status"]["flavor"]["name"] == large and verify["status"]["resize"]["oldFlavor"]["name"] == small
    pvc = kubectl.get("pvc", "srv-root")
    assert pvc is not None and pvc["status"]["capacity"]["storage"] == "2Gi"  # the root disk grew
    vmi = kubectl.get("vmi", "srv")
    assert vmi is not None and vmi["metadata"]["uid"] != first["metadata"]["uid"]
    # The API server keeps quantities in their canonical form: 1024Mi is "1Gi" on the VMI virt-controller made.
    assert (vmi["spec"]["domain"]["cpu"]["cores"], quantity(vmi["spec"]["domain"]["memory"]["guest"])) == (2, 1 << 30)
    patch(kubectl, "srv", {"resizeRequest": {"action": "Confirm", "token": "c1"}})
    wait_instance(kubectl, "srv", "ACTIVE")
    ready(kubectl, "srv")
    assert kubectl.status("instance", "srv").get("resize") is None
    assert [a for a, _ in actions(kubectl, "srv")][-2:] == ["resize", "confirmResize"]
    # Now resize again and revert by setting flavorRef back: the old size comes back.
    patch(kubectl, "srv", {"flavorRef": larger})
    wait_instance(kubectl, "srv", "VERIFY_RESIZE")
    assert (kubectl.get("vmi", "srv") or {})["spec"]["domain"]["cpu"]["cores"] == 4
    patch(kubectl, "srv", {"flavorRef": large})
    reverted = wait_instance(kubectl, "srv", "ACTIVE")
    ready(kubectl, "srv")
    assert reverted["status"]["flavor"]["name"] == large
    assert (kubectl.get("vmi", "srv") or {})["spec"]["domain"]["cpu"]["cores"] == 2
    assert w.since("VERIFY_RESIZE")[:3] == ["VERIFY_RESIZE", "REVERT_RESIZE", "ACTIVE"]
    assert actions(kubectl, "srv")[-1] == ("revertResize", "Success")


def test_resize_to_a_flavor_too_small_is_refused(cloud: LocalCloud, operator: Operator, source: Source,
                                                 kubectl: Kubectl) -> None:
    fl, tiny, shrink = unique(kubectl, "f"), unique(kubectl, "tiny"), unique(kubectl, "shrink")
    kubectl.apply([flavor(fl, ram=1024, disk=2), flavor(tiny, ram=256, disk=2), flavor(shrink, ram=1024, disk=1)])
    url = source.add(f"/{kubectl.namespace}/big.raw", raw_disk("min"))
    kubectl.apply([image("os", url, diskFormat="raw", minRam=512), instance("srv", fl, "os")])
    wait_instance(kubectl, "srv", "ACTIVE", timeout=90)
    vm_before = (kubectl.get("vm", "srv") or {})["spec"]
    for target, reason in ((tiny, "FlavorTooSmall"), (shrink, "ResizeDiskShrink")):
        patch(kubectl, "srv", {"flavorRef": target})
        inst = wait_for(lambda r=reason: (o := kubectl.get("instance", "srv")) and condition(o, "Stalled").get(
            "reason") == r and o, 30, f"the refusal {reason}")
        assert inst["status"]["status"] == "ACTIVE" and inst["status"]["flavor"]["name"] == fl
        assert (kubectl.get("vm", "srv") or {})["spec"] == vm_before  # nothing changed
        assert any(e["reason"] == reason for e in kubectl.events("srv"))
    patch(kubectl, "srv", {"flavorRef": fl})
    ready(kubectl, "srv")


def test_rebuild_onto_another_image(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl,
                                    words: Any) -> None:
    fl = unique(kubectl, "b")
    kubectl.apply(flavor(fl))
    boot(kubectl, source, "srv", fl, raw_disk("before"), metadata={"role": "db"})
    w = words("srv")
    after = raw_disk("after")
    kubectl.apply(image("next", source.add(f"/{kubectl.namespace}/next.raw", after), diskFormat="raw"))
    uid = wait_image(kubectl, "next", "active")["metadata"]["uid"]
    patch(kubectl, "srv", {"imageRef": "next"})
    inst = wait_for(lambda: (o := kubectl.get("instance", "srv")) and o["status"].get("imageRef") == "next"
                    and o["status"]["status"] == "ACTIVE" and o, 90, "the rebuild")
    ready(kubectl, "srv")
    assert w.since("REBUILD")[-1] == "ACTIVE", w.seen
    assert actions(kubectl, "srv")[-1] == ("rebuild", "Success"), kubectl.status("instance", "srv")["actions"]
    dv = kubectl.get("dv", "srv-root")
    assert dv is not None and dv["metadata"]["annotations"]["compute.kova.dev/image-uid"] == uid
    assert (cloud.workdir / "volumes" / str(kubectl.namespace) / "srv-root.img").read_bytes() == after
    vm = kubectl.get("vm", "srv")
    assert vm is not None and vm["metadata"]["annotations"]["compute.kova.dev/server-metadata"] == '{"role": "db"}'
    assert inst["status"]["imageChecksum"] == hashlib.sha512(after).hexdigest()


def test_snapshot_becomes_an_image_that_boots_with_the_same_bytes(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl, words: Any) -> None:
    fl = unique(kubectl, "snap")
    kubectl.apply(flavor(fl))
    data = raw_disk("snapshot", 2)
    origin = boot(kubectl, source, "srv", fl, data)
    w = words("srv")
    kubectl.apply({"apiVersion": "image.kova.dev/v1alpha1", "kind": "Image", "metadata": {"name": "srv-snap"},
                   "spec": {"source": {"instance": "srv"}}})
    snap = wait_image(kubectl, "srv-snap", "active", timeout=90)
    assert snap["status"]["osHashValue"] == hashlib.sha512(data).hexdigest() and snap["status"]["size"] == len(data)
    assert snap["status"]["snapshot"]["instanceUuid"] == origin["metadata"]["uid"]
    assert snap["status"]["snapshot"]["baseImageRef"] == (kubectl.get("image", "srv-os") or {})["metadata"]["uid"]
    assert any(s.endswith("/image_pending_upload") or s.endswith("/image_uploading") for s in w.seen)
    wait_instance(kubectl, "srv", "ACTIVE")  # started again after the copy
    ready(kubectl, "srv")
    # The export and its token are gone with the copy; Kova never read a Secret to make it.
    assert not json.loads(kubectl("get", "virtualmachineexports", "-o", "json"))["items"]
    assert not [s for s in json.loads(kubectl("get", "secrets", "-o", "json"))["items"]
                if s["metadata"]["name"].startswith("srv-snap-snap-")]
    kubectl.apply(instance("clone", fl, "srv-snap"))
    wait_instance(kubectl, "clone", "ACTIVE", timeout=90)
    assert (cloud.workdir / "volumes" / str(kubectl.namespace) / "clone-root.img").read_bytes() == data
