"""The local cloud itself: real API server semantics, GC, MinIO, the KubeVirt/CDI schemas and simulator."""

from __future__ import annotations

import datetime as dt
import hashlib
import io
import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cloud.bench import REPO, S3_BUCKET, LocalCloud
from tests.conftest import Kubectl, http_status, wait_for

pytestmark = pytest.mark.integration


def vm_manifest(name: str, **spec_extra: object) -> dict[str, object]:
    return {
        "apiVersion": "kubevirt.io/v1", "kind": "VirtualMachine", "metadata": {"name": name},
        "spec": {"runStrategy": "Always", **spec_extra, "template": {"spec": {
            "domain": {"cpu": {"cores": 1}, "memory": {"guest": "128Mi"},
                       "devices": {"disks": [{"name": "root", "disk": {"bus": "virtio"}}]}},
            "volumes": [{"name": "root", "dataVolume": {"name": f"{name}-dv"}}]}}},
    }


def dv_manifest(name: str, source: dict[str, object]) -> dict[str, object]:
    return {"apiVersion": "cdi.kubevirt.io/v1beta1", "kind": "DataVolume", "metadata": {"name": name},
            "spec": {"source": source, "storage": {"resources": {"requests": {"storage": "1Gi"}}}}}


def put_object(cloud: LocalCloud, key: str, data: bytes) -> None:
    cloud.s3_client().put_object(S3_BUCKET, key, io.BytesIO(data), len(data))


def presigned(cloud: LocalCloud, key: str, ttl: dt.timedelta = dt.timedelta(minutes=10)) -> str:
    return str(cloud.s3_client().presigned_get_object(S3_BUCKET, key, expires=ttl))


def test_api_server_is_ready_and_speaks_for_its_version(cloud: LocalCloud) -> None:
    assert cloud.kubectl("get", "--raw", "/readyz") == "ok"
    version = json.loads(cloud.kubectl("version", "-o", "json"))
    assert version["serverVersion"]["gitVersion"].startswith("v1.37.")
    assert version["clientVersion"]["gitVersion"] == version["serverVersion"]["gitVersion"]


def test_kubevirt_and_cdi_crds_are_listed(cloud: LocalCloud) -> None:
    names = cloud.kubectl("get", "crd", "-o", "name").split()
    for crd in ("virtualmachines.kubevirt.io", "virtualmachineinstances.kubevirt.io",
                "datavolumes.cdi.kubevirt.io"):
        assert f"customresourcedefinition.apiextensions.k8s.io/{crd}" in names


def test_generated_kubevirt_crds_are_up_to_date() -> None:
    from tests.cloud import kubevirt_crds

    assert kubevirt_crds.OUTPUT.read_text() == kubevirt_crds.render(), \
        "tests/cloud/crds is stale: run `python -m tests.cloud.kubevirt_crds`"


def test_server_rejects_a_misspelled_vm_field(kubectl: Kubectl) -> None:
    bad = vm_manifest("typo", runStrategyy="Always")
    out = kubectl.apply(bad, check=False)
    assert 'unknown field "spec.runStrategyy"' in out
    assert kubectl.get("vm", "typo") is None


def test_server_rejects_a_mistyped_vm_field(kubectl: Kubectl) -> None:
    bad = vm_manifest("mistyped")
    bad["spec"]["template"]["spec"]["domain"]["cpu"]["cores"] = "two"  # type: ignore[index]
    out = kubectl.apply(bad, check=False)
    assert "spec.template.spec.domain.cpu.cores" in out and "integer" in out
    assert kubectl.get("vm", "mistyped") is None
    good = vm_manifest("fine", runStrategy="Halted")
    kubectl.apply(good)
    assert kubectl.get("vm", "fine") is not None


def test_garbage_collector_deletes_children_of_a_deleted_owner(kubectl: Kubectl) -> None:
    kubectl("create", "configmap", "owner")
    owner = kubectl.get("configmap", "owner")
    assert owner is not None
    kubectl.apply({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "child", "ownerReferences": [
        {"apiVersion": "v1", "kind": "ConfigMap", "name": "owner", "uid": owner["metadata"]["uid"]}]}})
    kubectl("delete", "configmap", "owner")
    wait_for(lambda: kubectl.get("configmap", "child") is None, 30, "the child to be collected")


def test_minio_put_and_get(cloud: LocalCloud) -> None:
    data = os.urandom(3 * 1024 * 1024 + 17)
    put_object(cloud, "bench/roundtrip", data)
    resp = cloud.s3_client().get_object(S3_BUCKET, "bench/roundtrip")
    try:
        assert resp.read() == data
    finally:
        resp.close()
        resp.release_conn()


def test_simulator_imports_a_real_object_and_runs_the_vm(cloud: LocalCloud, kubectl: Kubectl) -> None:
    data = os.urandom(5 * 1024 * 1024)
    key = f"bench/{kubectl.namespace}/disk.img"
    put_object(cloud, key, data)
    url = presigned(cloud, key)
    kubectl.apply(dv_manifest("vm1-dv", {"http": {"url": url, "checksum":
                                                  f"sha512:{hashlib.sha512(data).hexdigest()}"}}))
    before = (kubectl.get("dv", "vm1-dv") or {})["metadata"]["resourceVersion"]
    kubectl.apply(vm_manifest("vm1"))
    # Every version of the VM from a watch (polling could miss a short state on a loaded machine).
    seen: set[str] = set()
    for vm in cloud.watch(f"/apis/kubevirt.io/v1/namespaces/{kubectl.namespace}/virtualmachines"
                          "?fieldSelector=metadata.name%3Dvm1", before, timeout=60):
        seen.add(vm.get("status", {}).get("printableStatus", ""))
        if "Running" in seen:
            break
    else:
        raise AssertionError(f"the VM did not run; states seen: {seen}")
    assert "Provisioning" in seen or "Starting" in seen
    assert kubectl.status("dv", "vm1-dv")["phase"] == "Succeeded"
    volume = cloud.workdir / "volumes" / str(kubectl.namespace) / "vm1-dv.img"
    assert volume.read_bytes() == data, "the simulator must have really downloaded the object"
    vmi = kubectl.get("vmi", "vm1")
    assert vmi is not None and vmi["status"]["phase"] == "Running"
    assert vmi["status"]["interfaces"][0]["ipAddress"].startswith("10.244.")
    assert vmi["metadata"]["ownerReferences"][0]["kind"] == "VirtualMachine"
    kubectl("patch", "vm", "vm1", "--type=merge", "-p", '{"spec":{"runStrategy":"Halted"}}')
    wait_for(lambda: kubectl.status("vm", "vm1").get("printableStatus") == "Stopped", 30, "the VM to stop")
    assert kubectl.get("vmi", "vm1") is None


def test_simulator_imports_from_s3_with_a_secret(cloud: LocalCloud, kubectl: Kubectl) -> None:
    data = os.urandom(1024 * 1024)
    key = f"bench/{kubectl.namespace}/s3.img"
    put_object(cloud, key, data)
    kubectl("create", "secret", "generic", "s3", f"--from-literal=accessKeyId={cloud.s3_access_key}",
            f"--from-literal=secretKey={cloud.s3_secret_key}")
    kubectl("create", "secret", "generic", "wrong", "--from-literal=accessKeyId=nobody",
            "--from-literal=secretKey=nothing-at-all")
    s3_url = f"http://{cloud.s3_endpoint}/{S3_BUCKET}/{key}"
    kubectl.apply(dv_manifest("good", {"s3": {"url": s3_url, "secretRef": "s3"}}))
    kubectl.apply(dv_manifest("badcreds", {"s3": {"url": s3_url, "secretRef": "wrong"}}))
    wait_for(lambda: kubectl.status("dv", "good").get("phase") == "Succeeded", 30, "the s3 import")
    assert (cloud.workdir / "volumes" / str(kubectl.namespace) / "good.img").read_bytes() == data
    # Real CDI never fails an import it cannot read: kubelet restarts the importer, the DataVolume says why.
    status = wait_for(lambda: (s := kubectl.status("dv", "badcreds")).get("restartCount", 0) >= 1 and s, 60,
                      "the refused import to be retried")
    assert status["phase"] == "ImportInProgress"


def running(status: dict[str, object]) -> dict[str, str]:
    return next((c for c in status.get("conditions") or [] if c["type"] == "Running"), {})  # type: ignore[union-attr]


@pytest.mark.parametrize("case", ["missing-object", "expired-url"])
def test_cdi_retries_an_import_it_cannot_read(cloud: LocalCloud, kubectl: Kubectl, case: str) -> None:
    """A fixture of record: what CDI v1.65.0 makes of an importer that gets 404 or 403. The importer exits 1
    with its message (cmd/cdi-importer/importer.go errorCannotConnectDataSource, pkg/importer/http-datasource.go);
    kubelet restarts the pod (restartPolicy OnFailure); the import controller copies the container's state to
    the claim's annotations (pkg/controller/import-controller.go updatePvcFromPod, pkg/controller/util.go
    setAnnotationsFromPodWithPrefix) and the DataVolume controller to `restartCount` and the Running condition
    (pkg/controller/datavolume/controller-base.go). The DataVolume never becomes Failed (CDI PR #1099)."""
    data = b"not the bytes you are looking for" * 1000
    key = f"bench/{kubectl.namespace}/{case}"
    if case == "expired-url":
        put_object(cloud, key, data)
    url = presigned(cloud, key, dt.timedelta(seconds=1) if case == "expired-url" else dt.timedelta(minutes=5))
    if case == "expired-url":
        wait_for(lambda: http_status(url) == 403, 10, "the one-second link to expire")
    kubectl.apply(dv_manifest("vm-dv", {"http": {"url": url}}))
    kubectl.apply(vm_manifest("vm"))
    status = wait_for(lambda: (s := kubectl.status("dv", "vm-dv")).get("restartCount", 0) >= 2
                      and running(s).get("reason") == "Error" and s, 60, "two restarts")
    code = {"missing-object": "404 Not Found", "expired-url": "403 Forbidden"}[case]
    assert status["phase"] == "ImportInProgress", status
    assert running(status)["status"] == "False"
    assert running(status)["message"] == ("Unable to connect to http data source: expected status code 200, got "
                                          f"{code[:3]}. Status: {code}")
    assert_not_started(kubectl, "vm")


def test_cdi_fails_an_import_whose_checksum_does_not_match(cloud: LocalCloud, kubectl: Kubectl) -> None:
    """A fixture of record: a checksum that does not match is final in CDI v1.65.0. The importer exits 0 with
    a JSON termination message (cmd/cdi-importer/importer.go, ErrChecksumMismatch in pkg/importer/checksum.go);
    the import controller marks the claim fatal (pkg/controller/import-controller.go updatePvcFromPod:
    reason ChecksumError) and the DataVolume is Failed."""
    data = b"not the bytes you are looking for" * 1000
    key = f"bench/{kubectl.namespace}/wrong-checksum"
    put_object(cloud, key, data)
    checksum = f"sha256:{hashlib.sha256(b'other').hexdigest()}"
    kubectl.apply(dv_manifest("vm-dv", {"http": {"url": presigned(cloud, key), "checksum": checksum}}))
    kubectl.apply(vm_manifest("vm"))
    status = wait_for(lambda: (s := kubectl.status("dv", "vm-dv")).get("phase") == "Failed" and s, 60, "Failed")
    assert running(status)["reason"] == "ChecksumError" and "checksum mismatch" in running(status)["message"]
    assert not (cloud.workdir / "volumes" / str(kubectl.namespace) / "vm-dv.img").exists(), "the data is removed"
    assert_not_started(kubectl, "vm", disk_failed=True)


def test_cdi_converts_a_qcow2_image_to_raw(cloud: LocalCloud, kubectl: Kubectl) -> None:
    """CDI's importer writes a raw disk whatever the image's format (qemu-img convert -O raw)."""
    from tests.qcow2 import make_qcow2

    guest = os.urandom(300 * 1024)
    image = make_qcow2(64 << 20, guest)
    key = f"bench/{kubectl.namespace}/disk.qcow2"
    put_object(cloud, key, image)
    kubectl.apply(dv_manifest("dv", {"http": {"url": presigned(cloud, key), "checksum":
                                              f"sha512:{hashlib.sha512(image).hexdigest()}"}}))
    wait_for(lambda: kubectl.status("dv", "dv").get("phase") == "Succeeded", 60, "the import")
    disk = (cloud.workdir / "volumes" / str(kubectl.namespace) / "dv.img").read_bytes()
    assert len(disk) == 64 << 20 and disk[:len(guest)] == guest and not disk[len(guest):].strip(b"\0")


def assert_not_started(kubectl: Kubectl, vm: str, disk_failed: bool = False) -> None:
    """virt-controller makes the VMI at once but no launcher pod while a DataVolume is not populated (its VMI
    controller's volume readiness check, pkg/virt-controller/watch/vmi): the VMI stays Pending. Once the
    DataVolume is Failed, virt-controller fails the VMI it has not processed (lifecycle.go: hasFailedDataVolume),
    whenever its next sync comes."""
    vmi = kubectl.get("vmi", vm)
    allowed = {"Pending", "Failed"} if disk_failed else {"Pending"}
    assert vmi is None or (vmi.get("status") or {}).get("phase", "Pending") in allowed, vmi
    pods = json.loads(kubectl("get", "pods", "-l", f"vm.kubevirt.io/name={vm}", "-o", "json"))["items"]
    assert not pods, "no launcher pod for a VM whose disk is not imported"


def _listening(pid: int) -> list[str]:
    """Addresses the process listens on (from /proc: no tool needed)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    out = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                out.append(fields[1])
    return out


def test_every_process_listens_on_loopback_only(cloud: LocalCloud) -> None:
    loopback_v4 = "0100007F"  # 127.0.0.1 in /proc's byte order
    loopback_v6 = "00000000000000000000000001000000"
    live = [p for p in cloud.procs if p.popen.poll() is None]  # tests may have stopped some (the operator)
    assert {"etcd", "kube-apiserver", "kube-controller-manager", "minio"} <= {p.name for p in live}
    for proc in live:
        for addr in _listening(proc.popen.pid):
            host = addr.split(":")[0]
            assert host in (loopback_v4, loopback_v6), f"{proc.name} listens on {addr}"


def test_killing_the_launcher_leaves_no_process_behind(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    launcher = subprocess.Popen([sys.executable, "-m", "tests.cloud", "up", "--dir", str(tmp_path),
                                 "--no-simulator"], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    wait_for(lambda: (tmp_path / "ready").exists() or launcher.poll() is not None, 120, "the cloud")
    assert launcher.poll() is None, launcher.stderr.read() if launcher.stderr else ""
    children = _children(launcher.pid)
    assert len(children) >= 4  # etcd, kube-apiserver, kube-controller-manager, minio
    os.kill(launcher.pid, signal.SIGKILL)  # no chance to clean up: only PDEATHSIG can help
    launcher.wait()

    def all_gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() and "zombie" not in _state(pid) for pid in children)

    wait_for(all_gone, 20, "the children to die with their parent")


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (from /proc, no procps needed)."""
    out = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue
        if ppid == pid:
            out.append(int(stat.parent.name))
    return out


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text().split("State:")[1].split("\n")[0].lower()
    except (OSError, IndexError):
        return "zombie"


def test_memory_bench_runs_and_imports_stay_small(tmp_path: Path) -> None:
    """`make bench`'s memory part at a small size (128 MiB read by each import of a source announcing 900 GiB,
    then stopped): it runs to the end, and neither process grows by more than its target."""
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'operator'}", "KOVA_BENCH_HUGE_MIB": "128",
           "KOVA_BENCH_JSON": str(out)}
    subprocess.run([sys.executable, "-m", "bench.memory_bench"], cwd=REPO, env=env, check=True,
                   capture_output=True, timeout=600)
    figures = json.loads(out.read_text())
    for who, target in (("operator", 250), ("api", 100)):
        f = figures[who]
        assert f["alive"] and (f["peak"] - f["before"]) / (1 << 20) <= target, (who, f)


def test_compute_api_bench_runs_and_its_figures_are_sane(tmp_path: Path) -> None:
    """`make bench`'s compute API part at a small size (one boot each way, 20 servers listed, 5 requests each):
    it runs to the end, both boots reach ACTIVE in the order the watch saw, and every list returns every server.
    Nothing about how fast."""
    out = tmp_path / "figures.json"
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'operator'}", "KOVA_API_BENCH_N": "1",
           "KOVA_API_BENCH_LIST_N": "20", "KOVA_API_BENCH_REQUESTS": "5", "KOVA_API_BENCH_JSON": str(out)}
    res = subprocess.run([sys.executable, "-m", "bench.compute_api_bench"], cwd=REPO, env=env, capture_output=True,
                         text=True, timeout=280)
    assert res.returncode == 0, res.stdout[-3000:] + res.stderr[-3000:]
    for line in ("openstack server create --wait", "kubectl apply + kubectl wait", "GET /servers/detail",
                 "GET /servers (compute 2.100)", "kubectl get instances -o json"):
        assert line in res.stdout, res.stdout
    figures = json.loads(out.read_text())
    for way in ("openstack", "kubectl"):
        boot = figures["boot"][way]
        assert len(boot["samples"]) == 1, boot
        # From the command's start: the Instance was created, then ACTIVE, and the command returned after the create.
        assert 0 < boot["created"] < boot["active"] and boot["created"] < boot["median"] == boot["max"], (way, boot)
    assert 0 < figures["boot_ratio"] < float("inf")
    assert figures["statuses"] == {"ACTIVE": 2, "BUILD": 18}, figures["statuses"]
    for way in ("detail", "brief", "kubectl", "kube_list"):
        listed = figures["list"][way]
        assert listed["n"] == 5 and listed["servers"] == [20] and 0 < listed["p50"] <= listed["p95"], (way, listed)
    assert 0 < figures["list_ratio"] < float("inf")
