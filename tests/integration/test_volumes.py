"""Volumes (Cinder's model on claims) through kubectl: made blank, from an image and from another volume by
the real CDI, extended, and the refusals of the API server."""

from __future__ import annotations

import io
import json
import tempfile
from typing import Any

import pytest

from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, Operator, condition, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, image, wait_image
from tests.qcow2 import qcow2_to_raw

pytestmark = pytest.mark.integration


def volume(name: str, size: int, **spec: Any) -> dict[str, Any]:
    return {"apiVersion": "compute.kova.dev/v1alpha1", "kind": "Volume", "metadata": {"name": name},
            "spec": {"size": size, **spec}}


def wait_volume(kubectl: Kubectl, name: str, word: str, timeout: float = 90) -> dict[str, Any]:
    return wait_for(lambda: (o := kubectl.get("volume", name)) and (o.get("status") or {}).get("status") == word
                    and o["status"].get("observedGeneration") == o["metadata"]["generation"] and o,
                    timeout, f"volume {name} to be {word}")


def test_volumes_blank_from_an_image_and_from_a_volume_then_extended(
        cloud: LocalCloud, operator: Operator, source: Source, kubectl: Kubectl) -> None:
    data = disk("vol")
    kubectl.apply([image("os", source.add(f"/{kubectl.namespace}/vol.qcow2", data))])
    wait_image(kubectl, "os", "active")
    kubectl.apply([volume("blank", 1, description="scratch"), volume("root", 1, source={"image": "os"})])
    blank = wait_volume(kubectl, "blank", "available")
    assert (blank["status"]["size"], blank["status"]["claim"], blank["status"]["storageClass"]) == (
        1, "volume-blank", "sim-local")
    assert condition(blank)["status"] == "True"
    pvc = kubectl.get("pvc", "volume-blank")
    assert pvc is not None and pvc["metadata"]["ownerReferences"][0]["kind"] == "DataVolume"
    wait_volume(kubectl, "root", "available")
    volumes = cloud.workdir / "volumes" / str(kubectl.namespace)
    with tempfile.TemporaryFile() as raw:  # the image's disk, as CDI's importer writes it
        qcow2_to_raw(io.BytesIO(data), raw)
        raw.seek(0)
        assert (volumes / "volume-root.img").read_bytes() == raw.read()
    # A volume cloned from another: CDI's host-assisted copy in the namespace.
    kubectl.apply([volume("copy", 2, source={"volume": "root"})])
    wait_volume(kubectl, "copy", "available", timeout=120)
    assert (volumes / "volume-copy.img").read_bytes() == (volumes / "volume-root.img").read_bytes()
    # Extend: extending while the claim grows, then available at the new size.
    kubectl("patch", "volume", "blank", "--type=merge", "-p", '{"spec":{"size":3}}')
    wait_for(lambda: (kubectl.get("volume", "blank") or {}).get("status", {}).get("status") == "extending", 30,
             "the volume to say extending")
    grown = wait_volume(kubectl, "blank", "available")
    assert grown["status"]["size"] == 3
    assert (kubectl.get("pvc", "volume-blank") or {})["status"]["capacity"]["storage"] == "3Gi"


def test_what_cinder_refuses_is_refused(operator: Operator, source: Source, kubectl: Kubectl) -> None:
    kubectl.apply([volume("small", 2)])
    wait_volume(kubectl, "small", "available")
    out = kubectl("patch", "volume", "small", "--type=merge", "-p", '{"spec":{"size":1}}', check=False)
    assert "a volume cannot shrink" in out
    out = kubectl("apply", "-f", "-", check=False, input=json.dumps(
        volume("two", 1, source={"image": "os", "volume": "small"})))
    assert "a volume has one source at most" in out
    kubectl.apply([image("big", source.add(f"/{kubectl.namespace}/big.qcow2", disk("big")))])
    wait_image(kubectl, "big", "active")
    # 64 MiB of disk fits in 1 GiB; a volume from an image the namespace cannot see waits as if it were missing.
    kubectl.apply([volume("hidden", 1, source={"image": "nowhere/secret"})])
    hidden = wait_for(lambda: ((o := kubectl.get("volume", "hidden")) or {}).get("status", {}).get("status") and o,
                      30, "the volume to say why it waits")
    assert hidden["status"]["status"] == "creating" and condition(hidden)["reason"] == "WaitingForImage"
    assert kubectl.get("dv", "volume-hidden") is None
