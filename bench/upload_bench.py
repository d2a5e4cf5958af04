"""`make bench`, second part: Glance's image-upload through `kova api` against a plain PUT, in the same run.

On the local cloud (kube-apiserver for the Image, MinIO for the bytes), a file of random bytes is (1) PUT
straight into MinIO with minio-py, then (2) sent as `PUT /v2/images/{id}/file` to `kova api`, which streams
it through its import worker and the verified pipeline (md5 + sha512, format inspection, size cap) into
MinIO, then (3) staged (`PUT /v2/images/{id}/stage`, the same pipeline) and imported with glance-direct
(`POST /v2/images/{id}/import`), timed until the image is active, then (4) sent as `PUT file` to the local
cloud's `file` store (`x-image-meta-store: file`, a directory): the same pipeline, another store. The RSS
before and the peak (VmHWM) of
`kova api` and its worker together are read from /proc.
Nothing is asserted; figures and ratios are printed.

    KOVA_BENCH_UPLOAD_MIB=1024 make bench     # default 1024
"""

from __future__ import annotations

import http.client
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from tests.cloud.bench import S3_BUCKET, LocalCloud, worker_of

from bench.import_bench import MiB, make_file, plain_put, process_cpu


def vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def upload(port: int, token: str, namespace: str, path: Path, stage: bool = False,
           store: str | None = None) -> tuple[str, float]:
    """(image id, wall seconds of the PUT file; with `stage`, of the stage and the import until active); into
    `store` when given (else the default, MinIO)."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    prefix = f"/projects/{namespace}/image/v2"
    conn.request("POST", f"{prefix}/images", body=json.dumps({"name": "bench", "disk_format": "raw",
                                                               "container_format": "bare"}),
                 headers={"X-Auth-Token": token, "Content-Type": "application/json"})
    resp = conn.getresponse()
    image = json.loads(resp.read())
    assert resp.status == 201, image
    size = path.stat().st_size
    start = time.perf_counter()
    with path.open("rb") as f:
        conn.request("PUT", f"{prefix}/images/{image['id']}/{'stage' if stage else 'file'}", body=f, headers={
            "X-Auth-Token": token, "Content-Type": "application/octet-stream", "Content-Length": str(size),
            **({"x-image-meta-store": store} if store else {})})
        resp = conn.getresponse()
        answer = resp.read()
    assert resp.status == 204, answer
    if stage:
        conn.request("POST", f"{prefix}/images/{image['id']}/import",
                     body=json.dumps({"method": {"name": "glance-direct"}}),
                     headers={"X-Auth-Token": token, "Content-Type": "application/json"})
        resp = conn.getresponse()
        answer = resp.read()
        assert resp.status == 202, answer
        while True:  # Glance's import is asynchronous: done when the image is active
            conn.request("GET", f"{prefix}/images/{image['id']}", headers={"X-Auth-Token": token})
            resp = conn.getresponse()
            if json.loads(resp.read())["status"] == "active":
                break
            time.sleep(0.05)
    seconds = time.perf_counter() - start
    return str(image["id"]), seconds


def main() -> int:
    size = int(os.environ.get("KOVA_BENCH_UPLOAD_MIB", "1024")) * MiB
    workdir = Path(tempfile.mkdtemp(prefix="kova-upload-bench-"))
    cloud = LocalCloud(workdir / "cloud", with_simulator=False).start()
    try:
        cloud.install_kova_crds()
        api = cloud.start_api(cloud.api_kubeconfig())
        cloud.kubectl("create", "namespace", "bench")
        token = cloud.tenant_token("bench", "edit")
        path = workdir / "disk.raw"
        make_file(path, size)
        minio = cloud.procs[[p.name for p in cloud.procs].index("minio")].popen.pid
        store_cpu = process_cpu(minio)
        put_s, put_cpu = plain_put(cloud, path, "bench/plain")
        put_store = process_cpu(minio) - store_cpu
        # kova api and its import worker (kova.adapters.worker), which hashes, inspects and stores the bytes.
        pids = [api.popen.pid, worker_of(api.popen.pid) or api.popen.pid]
        rss_before, api_cpu = sum(vm(p, "VmRSS") for p in pids), sum(process_cpu(p) for p in pids)
        store_cpu = process_cpu(minio)
        image_id, up_s = upload(api.ports["http"], token, "bench", path)
        api_cpu, up_store = sum(process_cpu(p) for p in pids) - api_cpu, process_cpu(minio) - store_cpu
        peak = sum(vm(p, "VmHWM") for p in pids)
        obj = cloud.s3_client().stat_object(S3_BUCKET, f"images/{image_id}")
        assert obj.size == size
        stage_cpu, store_cpu = sum(process_cpu(p) for p in pids), process_cpu(minio)
        staged_id, stage_s = upload(api.ports["http"], token, "bench", path, stage=True)
        stage_cpu, stage_store = sum(process_cpu(p) for p in pids) - stage_cpu, process_cpu(minio) - store_cpu
        assert cloud.s3_client().stat_object(S3_BUCKET, f"images/{staged_id}").size == size
        file_cpu = sum(process_cpu(p) for p in pids)
        file_id, file_s = upload(api.ports["http"], token, "bench", path, store="file")
        file_cpu = sum(process_cpu(p) for p in pids) - file_cpu
        assert (cloud.file_store / "images" / file_id).stat().st_size == size
    finally:
        cloud.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    mib, gib = size / MiB, size / (1 << 30)
    print(f"\nimage upload through kova api, {mib:.0f} MiB of random bytes as raw:")
    print(f"  plain PUT to MinIO      {mib / put_s:6.0f} MiB/s   client {put_cpu / gib:.2f} CPU-s/GiB, "
          f"MinIO {put_store / gib:.2f} CPU-s/GiB")
    print(f"  PUT /v2/images/ID/file  {mib / up_s:6.0f} MiB/s   kova api + worker {api_cpu / gib:.2f} CPU-s/GiB, "
          f"MinIO {up_store / gib:.2f} CPU-s/GiB")
    print(f"  stage + glance-direct   {mib / stage_s:6.0f} MiB/s   kova api + worker {stage_cpu / gib:.2f} "
          f"CPU-s/GiB, MinIO {stage_store / gib:.2f} CPU-s/GiB (until active)")
    print(f"  PUT file, file store    {mib / file_s:6.0f} MiB/s   kova api + worker {file_cpu / gib:.2f} CPU-s/GiB "
          "(a directory on this machine's disk)")
    print(f"  ratio {put_s / up_s:.2f}x of the plain PUT; stage + import {put_s / stage_s:.2f}x of the plain PUT, "
          f"{up_s / stage_s:.2f}x of PUT file; file store {up_s / file_s:.2f}x of the S3 store's PUT file")
    print(f"  kova api + worker RSS {rss_before / MiB:.0f} MiB before, peak {peak / MiB:.0f} MiB: growth "
          f"{(peak - rss_before) / MiB:.0f} MiB (target <= 100 MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
