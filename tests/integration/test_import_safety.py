"""Safe import on the local cloud, through kubectl, as a tenant would try it: the whole disk-image corpus
at once, sources the import filter refuses (never connected to), and the size cap."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import SIZE_CAP, Kubectl, Operator, condition, wait_for
from tests.corpus.cases import CASES, load
from tests.httpsource import Listener, Source
from tests.integration.test_e2e import image, store_keys, wait_image

pytestmark = pytest.mark.integration
CAP = 64 << 20
assert SIZE_CAP == "64Mi"


def assert_killed(cloud: LocalCloud, kubectl: Kubectl, name: str, reason: str) -> dict[str, Any]:
    img = wait_image(kubectl, name, "killed")
    ready = condition(img)
    assert (ready["status"], ready["reason"]) == ("False", reason), ready
    assert condition(img, "Stalled")["status"] == "True"
    assert img["status"]["message"] == ready["message"] and ready["message"]
    assert any(e["reason"] == reason and e["type"] == "Warning" for e in kubectl.events(name))
    assert store_keys(cloud, img["metadata"]["uid"]) == (False, False, []), "nothing may stay in the store"
    return img


def test_disk_image_corpus_through_the_operator(cloud: LocalCloud, operator: Operator, source: Source,
                                                kubectl: Kubectl) -> None:
    """Every corpus case as an Image: the usable ones become active with the inspector's format and virtual
    size, the unsafe and unusable ones are killed with the reason and the inspector's words."""
    manifests = []
    for case in CASES:
        url = source.add(f"/{kubectl.namespace}/{case.name}", load(case))
        manifests.append(image(case.name, url, diskFormat=case.declared))
    kubectl.apply(manifests)
    for case in CASES:
        if case.outcome == "active":
            img = wait_image(kubectl, case.name, "active")
            status = img["status"]
            assert (status["detectedFormat"], status.get("virtualSize")) == (case.detected, case.virtual_size), \
                case.stands_for
            assert status["size"] == len(load(case))
        else:
            assert case.reason is not None
            assert_killed(cloud, kubectl, case.name, case.reason)
    described = kubectl("describe", "image", "vmdk-flat-host-file-as-raw")
    assert "UnsafeImage" in described and "Warning" in described


def test_refused_sources_are_never_connected_to(cloud: LocalCloud, operator: Operator, kubectl: Kubectl) -> None:
    """An Image pointing at the operator's own metrics (the SSRF a new user found), at a loopback listener
    that counts connections, or at the link-local metadata address by a decimal spelling, is killed with
    SourceNotAllowed; the listener sees no connection. (The metadata address is refused before any
    connection is attempted, so nothing leaves the machine.)"""
    assert operator.proc is not None
    ears = Listener()
    try:
        kubectl.apply([image("metrics", f"http://127.0.0.1:{operator.proc.ports['metrics']}/metrics"),
                       image("listener", ears.url("/disk.qcow2")),
                       image("localhost", f"http://localhost:{ears.port}/disk.qcow2"),
                       image("metadata", "http://2852039166/latest/meta-data/")])
        for name in ("metrics", "listener", "localhost", "metadata"):
            img = assert_killed(cloud, kubectl, name, "SourceNotAllowed")
            assert "KOVA_IMPORT_ALLOWED_HOSTS" in img["status"]["message"]
        assert "169.254.169.254 is a link-local address" in kubectl.status("image", "metadata")["message"]
        assert ears.connections == 0
    finally:
        ears.close()


def test_size_cap(cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    """KOVA_IMAGE_SIZE_CAP (64Mi here): a source that announces more is refused before its body is read;
    a chunked source that never ends is cut off at the cap. Nothing is kept in either case."""
    block = b"\x5a" * (1 << 20)
    announced = source.add(f"/{kubectl.namespace}/announced", block, claimed_length=CAP + 1)
    endless = source.add(f"/{kubectl.namespace}/endless", block, endless=True)
    kubectl.apply([image("announced", announced, diskFormat="raw"), image("endless", endless, diskFormat="raw")])
    for name in ("announced", "endless"):
        img = assert_killed(cloud, kubectl, name, "SizeExceeded")
        assert str(CAP) in img["status"]["message"]
    route = source.routes[f"/{kubectl.namespace}/endless"]
    # Cut off at the cap: past it, the source only got to send what the kernel buffered for the socket
    # pair before the import hung up (the receiver's buffer autotunes up to tcp_rmem's maximum: 32 MiB
    # here; 6-25 MiB measured), plus the chunk in flight. Without the cap it would never stop.
    readings = [route.sent]

    def stopped() -> bool:
        time.sleep(0.5)
        readings.append(route.sent)
        return readings[-1] == readings[-2]
    wait_for(stopped, 10, "the endless source to be hung up on")
    slack = max_buffer("tcp_rmem") + max_buffer("tcp_wmem") + (2 << 20)
    assert CAP < route.sent <= CAP + slack, (route.sent - CAP) / (1 << 20)


def max_buffer(name: str) -> int:
    return int(Path(f"/proc/sys/net/ipv4/{name}").read_text().split()[2])
