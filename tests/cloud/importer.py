"""The payload of CDI's importer pod (cmd/cdi-importer in CDI v1.65.0), for the simulated kubelet: the real
cdi-controller makes the pod, this does what its container would.

It reads what the pod's environment says, as the importer does: `IMPORTER_SOURCE` (`http`, `s3`, `none`
for a blank disk), `IMPORTER_ENDPOINT`, `IMPORTER_CHECKSUM` (`sha256:`/`sha512:`/`md5:` hex), the
credentials `IMPORTER_ACCESS_KEY_ID` / `IMPORTER_SECRET_KEY` (from the Secret their `valueFrom` names),
`IMPORTER_IMAGE_SIZE`. The disk lands in the file that stands for the claim the pod mounts as
`cdi-data-vol` (`<volumes>/<namespace>/<claim>.img`), converted to raw as `qemu-img convert` would: a
qcow2 image becomes its guest view (tests/qcow2.py `qcow2_to_raw`, sparse); anything else is kept as it
is (raw, ISO). A blank disk is a sparse file of the requested size.

Failure modes of the real importer, with its words (CDI `cmd/cdi-importer/importer.go`,
`pkg/importer/http-datasource.go`, `pkg/importer/checksum.go`, `pkg/importer/data-processor.go`):
- a non-2xx answer: exit 1, "Unable to connect to http data source: expected status code 200, got 403.
  Status: 403 Forbidden" (kubelet restarts the pod; CDI keeps the DataVolume ImportInProgress);
- a checksum that does not match: exit 0 with the JSON termination message "Unable to process data:
  checksum mismatch ..." (CDI marks the import fatal: the DataVolume Failed, reason ChecksumError);
- an image larger than the claim: exit 1, "Unable to process data: Virtual image size N is larger than the
  reported available storage M. A larger PVC is required." (CDI says "DataVolume too small to contain image").
Success: exit 0 with {"scratchSpaceRequired": false, "preallocationApplied": false, "message": "Import Complete"}.
"""

from __future__ import annotations

import base64
import hashlib
import http.client
import json
import logging
import math
import os
import threading
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from tests.cloud.kubelet import quantity
from tests.qcow2 import NotQcow2, qcow2_to_raw

if TYPE_CHECKING:
    from tests.cloud.sim import Simulator

log = logging.getLogger("importer")
DATA_VOLUME = "cdi-data-vol"  # the importer pod's volume for the target claim (CDI's DataVolName)
ALIGN = 1 << 20  # CDI's DefaultAlignBlockSize
FILESYSTEM_OVERHEAD = 0.06  # CDI's default for Filesystem claims (CDIConfig filesystemOverhead.global)


def env_of(sim: Simulator, pod: dict[str, Any]) -> dict[str, str]:
    """The first container's environment, with `valueFrom.secretKeyRef` resolved as kubelet resolves it."""
    ns = pod["metadata"]["namespace"]
    out: dict[str, str] = {}
    for var in pod["spec"]["containers"][0].get("env") or []:
        ref = (var.get("valueFrom") or {}).get("secretKeyRef")
        if ref:
            secret = sim.rest("GET", f"/api/v1/namespaces/{ns}/secrets/{ref['name']}")
            value = (secret.get("data") or {}).get(ref["key"])
            if value is not None:
                out[var["name"]] = base64.b64decode(value).decode()
        else:
            out[var["name"]] = var.get("value", "")
    return out


def claim_of(pod: dict[str, Any]) -> str:
    for volume in pod["spec"].get("volumes") or []:
        if volume.get("name") == DATA_VOLUME:
            return str(volume["persistentVolumeClaim"]["claimName"])
    raise RuntimeError("the importer pod mounts no cdi-data-vol claim")


def run(sim: Simulator, stopped: threading.Event, pod: dict[str, Any]) -> tuple[int, str]:
    """One run of the importer container: (exit code, termination message)."""
    env = env_of(sim, pod)
    ns = pod["metadata"]["namespace"]
    claim = claim_of(pod)
    target = sim.volumes / ns / f"{claim}.img"
    target.parent.mkdir(parents=True, exist_ok=True)
    pvc = sim.rest("GET", f"/api/v1/namespaces/{ns}/persistentvolumeclaims/{claim}")
    capacity = int(quantity((pvc.get("status") or {}).get("capacity", {}).get("storage", "0")))
    # CDI's util.GetUsableSpace: the claim's capacity without the overhead it was asked with, block-aligned.
    available = math.ceil(capacity / (1 + FILESYSTEM_OVERHEAD)) // ALIGN * ALIGN
    source = env.get("IMPORTER_SOURCE", "")
    if source == "none":
        size = int(quantity(env.get("IMPORTER_IMAGE_SIZE") or "0"))
        with target.open("wb") as f:
            f.truncate(min(size, available))
        return 0, complete()
    part = target.with_suffix(".part")
    digest, expected = None, ""
    try:
        digest, expected = checksum(env.get("IMPORTER_CHECKSUM", ""))
        if source == "http":
            fetch_http(env["IMPORTER_ENDPOINT"], part, digest)
        elif source == "s3":
            fetch_s3(env, part, digest)
        else:
            return 1, f"Unknown data source: {source}"
    except ConnectFailed as e:
        part.unlink(missing_ok=True)
        return 1, f"Unable to connect to {source} data source: {e}"
    if digest is not None and digest.hexdigest() != expected:
        part.unlink(missing_ok=True)
        target.unlink(missing_ok=True)
        message = (f"Unable to process data: checksum mismatch: expected {env['IMPORTER_CHECKSUM']}, "
                   f"got {digest.name}:{digest.hexdigest()}")
        return 0, json.dumps({"message": message})
    try:
        virtual = convert(part, target)
    except NotQcow2 as e:
        return 1, f"Unable to process data: Image is invalid: {e}"
    finally:
        part.unlink(missing_ok=True)
    if virtual > available:
        target.unlink(missing_ok=True)
        return 1, (f"Unable to process data: Virtual image size {virtual} is larger than the reported available "
                   f"storage {available}. A larger PVC is required.")
    log.info("imported %s/%s: %d bytes virtual", ns, claim, virtual)
    return 0, complete()


def complete() -> str:
    return json.dumps({"scratchSpaceRequired": False, "preallocationApplied": False, "message": "Import Complete"})


class ConnectFailed(Exception):
    pass


def checksum(value: str) -> tuple[Any, str]:
    if not value:
        return None, ""
    algo, _, hexdigest = value.partition(":")
    if algo not in ("md5", "sha1", "sha256", "sha512"):
        raise ConnectFailed(f"invalid checksum: unsupported algorithm {algo!r}")
    return hashlib.new(algo), hexdigest.lower()


def copy(stream: Any, part: Path, digest: Any) -> None:
    with part.open("wb") as out:
        while chunk := stream.read(1 << 20):
            out.write(chunk)
            if digest is not None:
                digest.update(chunk)


def fetch_http(url: str, part: Path, digest: Any) -> None:
    try:
        with urllib.request.urlopen(url, timeout=30) as resp:
            copy(resp, part, digest)
    except urllib.error.HTTPError as e:
        status = f"{e.code} {http.client.responses.get(e.code, '')}".strip()
        raise ConnectFailed(f"expected status code 200, got {e.code}. Status: {status}") from e
    except (urllib.error.URLError, OSError) as e:
        raise ConnectFailed(f"HTTP request errored: Get \"{url}\": {getattr(e, 'reason', e)}") from e


def fetch_s3(env: dict[str, str], part: Path, digest: Any) -> None:
    from minio import Minio
    from minio.error import S3Error

    url = urllib.parse.urlsplit(env["IMPORTER_ENDPOINT"])
    bucket, _, key = url.path.lstrip("/").partition("/")
    store = Minio(url.netloc, access_key=env.get("IMPORTER_ACCESS_KEY_ID", ""),
                  secret_key=env.get("IMPORTER_SECRET_KEY", ""), secure=url.scheme == "https")
    try:
        resp = store.get_object(bucket, key)
    except S3Error as e:
        raise ConnectFailed(f"could not get s3 object: {e.code}: {e.message}") from e
    try:
        copy(resp, part, digest)
    finally:
        resp.close()
        resp.release_conn()


def convert(part: Path, target: Path) -> int:
    """qemu-img convert -O raw: a qcow2 image to its guest view, anything else as it is. The virtual size."""
    with part.open("rb") as f:
        magic = f.read(4)
        if magic == b"QFI\xfb":
            f.seek(0)
            with target.open("wb") as out:
                return qcow2_to_raw(f, out)
    os.replace(part, target)
    return target.stat().st_size
