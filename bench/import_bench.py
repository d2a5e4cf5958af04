"""`make bench`: Glance-style import throughput and memory, against a plain PUT, in the same run.

For each size: a file of random bytes is served over loopback HTTP; (1) it is PUT straight into MinIO
with minio-py (the baseline: no HTTP source, no hashing, no inspection), then (2) Kova's importer moves it
from the HTTP URL into MinIO, computing md5 + sha512 and inspecting the format (oslo's format_inspector),
in a child process whose peak RSS (VmHWM) is read from /proc. Figures and ratios are printed; nothing is asserted here.

    KOVA_BENCH_SIZES=256,1024 make bench     # sizes in MiB (default 256 and 1024)
"""

from __future__ import annotations

import hashlib
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from tests.cloud.bench import REPO, S3_BUCKET, LocalCloud

from kova.image.formats import StreamInspector

MiB = 1024 * 1024


class Quiet(SimpleHTTPRequestHandler):
    """Serves files with sendfile(2): the source is a remote server in real life, so its CPU should not
    be taken from the importer being measured on this 2-core machine."""

    def copyfile(self, source: Any, outputfile: Any) -> None:
        self.connection.sendfile(source)

    def log_message(self, *args: object) -> None:
        pass


def make_file(path: Path, size: int) -> None:
    with path.open("wb") as f:
        block = os.urandom(16 * MiB)
        for done in range(0, size, len(block)):
            f.write(block[: min(len(block), size - done)])


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def plain_put(cloud: LocalCloud, path: Path, key: str) -> tuple[float, float]:
    """(wall seconds, client CPU seconds) of a plain multipart PUT of the file."""
    client = cloud.s3_client()
    cpu, start = cpu_seconds(), time.perf_counter()
    client.fput_object(S3_BUCKET, key, str(path), part_size=16 * MiB)
    return time.perf_counter() - start, cpu_seconds() - cpu


def process_cpu(pid: int) -> float:
    """CPU seconds (user + system) a process has used, from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def hash_floor(path: Path) -> float:
    """MiB/s of md5 + sha512 over the file on one core: what Glance's two hashes cost by themselves."""
    md5, sha512 = hashlib.md5(), hashlib.sha512()
    start = time.perf_counter()
    with path.open("rb") as f:
        while chunk := f.read(MiB):
            md5.update(chunk)
            sha512.update(chunk)
    return path.stat().st_size / MiB / (time.perf_counter() - start)


def inspect_floor(path: Path) -> float:
    """MiB/s of Glance's format inspection (oslo's format_inspector, every inspector) over the file on one
    core: what the safety checks cost by themselves, to compare with the hashes."""
    def chunks() -> Iterator[bytes]:
        with path.open("rb") as f:
            while chunk := f.read(MiB):
                yield chunk
    inspector = StreamInspector()
    start = time.perf_counter()
    for _ in inspector.wrap(chunks()):
        pass
    inspector.verdict("raw")
    return path.stat().st_size / MiB / (time.perf_counter() - start)


def kova_import(cloud: LocalCloud, url: str, uid: str) -> dict[str, float]:
    out = subprocess.run([sys.executable, "-m", "bench.import_worker", url, uid], check=True, capture_output=True,
                         text=True, env={**os.environ, **cloud.env(), "PYTHONPATH": str(REPO / "operator")})
    return dict(json.loads(out.stdout))


def main() -> int:
    sizes = [int(s) * MiB for s in os.environ.get("KOVA_BENCH_SIZES", "256,1024").split(",")]
    workdir = Path(tempfile.mkdtemp(prefix="kova-bench-"))
    cloud = LocalCloud(workdir / "cloud").start_store()
    www = workdir / "www"
    www.mkdir()
    server = ThreadingHTTPServer(("127.0.0.1", 0), partial(Quiet, directory=str(www)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    rows = []
    try:
        for size in sizes:
            path = www / f"disk-{size // MiB}.raw"
            make_file(path, size)
            minio = cloud.procs[0].popen.pid
            store_cpu = process_cpu(minio)
            put_s, put_cpu = plain_put(cloud, path, f"bench/plain-{size}")
            put_store_cpu = process_cpu(minio) - store_cpu
            url = f"http://127.0.0.1:{server.server_address[1]}/{path.name}"
            store_cpu = process_cpu(minio)
            result = kova_import(cloud, url, f"bench-{size}")
            import_store_cpu = process_cpu(minio) - store_cpu
            mib = size / MiB
            rows.append({"size_mib": mib, "put_mib_s": mib / put_s, "import_mib_s": mib / result["seconds"],
                         "ratio": put_s / result["seconds"], "rss_base_mib": result["rss_before"] / MiB,
                         "rss_peak_mib": result["rss_peak"] / MiB,
                         "rss_growth_mib": (result["rss_peak"] - result["rss_before"]) / MiB,
                         "put_cpu_gib": put_cpu / (size / (1 << 30)),
                         "put_store_cpu_gib": put_store_cpu / (size / (1 << 30)),
                         "import_store_cpu_gib": import_store_cpu / (size / (1 << 30)),
                         "import_cpu_gib": result["cpu"] / (size / (1 << 30)),
                         "hash_mib_s": hash_floor(path), "inspect_mib_s": inspect_floor(path)})
            path.unlink()
            client = cloud.s3_client()
            for key in (f"bench/plain-{size}", f"images/bench-{size}", f"images/bench-{size}.json"):
                client.remove_object(S3_BUCKET, key)
    finally:
        server.shutdown()
        cloud.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"{'size':>8} {'plain PUT':>12} {'kova import':>12} {'ratio':>6} {'RSS base':>9} {'RSS peak':>9} "
          f"{'growth':>8}")
    for r in rows:
        print(f"{r['size_mib']:>5.0f}MiB {r['put_mib_s']:>8.0f}MiB/s {r['import_mib_s']:>8.0f}MiB/s "
              f"{r['ratio']:>5.2f}x {r['rss_base_mib']:>6.0f}MiB {r['rss_peak_mib']:>6.0f}MiB "
              f"{r['rss_growth_mib']:>5.0f}MiB")
    print("\nCPU seconds per GiB, client + MinIO:")
    for r in rows:
        print(f"{r['size_mib']:>5.0f}MiB  plain PUT {r['put_cpu_gib']:.2f}s + {r['put_store_cpu_gib']:.2f}s   "
              f"kova import {r['import_cpu_gib']:.2f}s + {r['import_store_cpu_gib']:.2f}s   "
              f"(alone on one core: md5+sha512 {r['hash_mib_s']:.0f} MiB/s, "
              f"format inspection {r['inspect_mib_s']:.0f} MiB/s)")
    print(f"\nmachine: {os.cpu_count()} CPUs shared by MinIO, the HTTP source and the importer")
    print("targets: import >= 0.9x plain PUT; RSS growth <= 100 MiB and independent of size")
    return 0


if __name__ == "__main__":
    sys.exit(main())
