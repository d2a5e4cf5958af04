"""Tenant bytes are read and parsed in a worker process that holds no Kubernetes credentials (kova.adapters.worker):
the operator's and `kova api`'s own workers, and what happens when one dies mid-import."""

from __future__ import annotations

import hashlib
import os
import signal
from pathlib import Path

import pytest

from tests.cloud.bench import LocalCloud, worker_of
from tests.conftest import Kubectl, Operator, wait_for
from tests.httpsource import Source
from tests.integration.test_e2e import disk, image, store_keys, wait_image

pytestmark = pytest.mark.integration


def environ(pid: int) -> dict[str, str]:
    raw = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    return dict(item.decode().split("=", 1) for item in raw if b"=" in item)


def assert_no_credentials(parent: int) -> int:
    pid = worker_of(parent)
    assert pid is not None, f"process {parent} has no import worker"
    assert "KUBECONFIG" in environ(parent), "the parent talks to kube-apiserver with its own account"
    leaked = {k for k in environ(pid) if k == "KUBECONFIG" or k.startswith("KUBERNETES_")}
    assert not leaked, f"the worker has Kubernetes credentials in its environment: {leaked}"
    cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    assert "kubeconfig" not in cmdline and "token" not in cmdline, cmdline
    return pid


def test_the_operator_imports_in_a_worker_without_credentials_that_may_die(cloud: LocalCloud, operator: Operator,
                                                                          source: Source, kubectl: Kubectl) -> None:
    assert operator.proc is not None
    first = assert_no_credentials(operator.proc.popen.pid)
    # A slow source, so that the import is caught in the middle.
    data = disk("worker", 8)
    kubectl.apply(image("os", source.add(f"/{kubectl.namespace}/slow", data, seconds_per_mib=0.5)))
    uid = wait_for(lambda: (o := kubectl.get("image", "os")) and o.get("status", {}).get("status") == "importing"
                   and o["metadata"]["uid"], 30, "importing")
    wait_for(lambda: store_keys(cloud, uid)[2], 60, "an open multipart upload")
    os.kill(first, signal.SIGKILL)  # as a parser crash on hostile bytes would end it
    # The import meets a passing failure, a new worker starts, and the image is imported again, whole.
    active = wait_image(kubectl, "os", "active", timeout=120)
    assert active["status"]["size"] == len(data)
    assert active["status"]["osHashValue"] == hashlib.sha512(data).hexdigest()
    assert store_keys(cloud, uid) == (True, True, []), "the dead worker's upload is aborted, none is left open"
    second = assert_no_credentials(operator.proc.popen.pid)
    assert second != first
    assert "the import worker went away" in operator.log() or "import worker exited" in operator.log()


def test_kova_api_uploads_through_a_worker_without_credentials(cloud: LocalCloud) -> None:
    proc = cloud.start_api(cloud.api_kubeconfig(), name="api-worker",
                           extra_env={"KUBECONFIG": str(cloud.api_kubeconfig())})
    try:
        assert_no_credentials(proc.popen.pid)
    finally:
        proc.popen.terminate()
        proc.popen.wait(timeout=30)
