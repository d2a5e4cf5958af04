"""`make demo`: the local cloud, the operator, and examples/ applied with kubectl, until all is Ready; then
`kova api` with a clouds.yaml (.cache/demo/clouds.yaml, cloud `kova-demo`) that the `openstack` CLI uses.

It serves a small qcow2 (made by tests/qcow2.py) on 127.0.0.1:8321, the URL examples/image.yaml names,
then prints what a user would look at. `--keep` leaves everything running until Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import threading
import time
from functools import partial
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import yaml

from tests.cloud.bench import REPO, LocalCloud, binary
from tests.qcow2 import make_qcow2

DEMO_PORT = 8321


def serve_demo_image(folder: str) -> ThreadingHTTPServer:
    payload = b"Kova demo disk. " * 65536  # 1 MiB of data inside a 1 GiB virtual disk
    with open(f"{folder}/demo-os.qcow2", "wb") as f:
        f.write(make_qcow2(1 << 30, payload))
    class Quiet(SimpleHTTPRequestHandler):
        def log_message(self, *args: object) -> None:
            pass

    handler = partial(Quiet, directory=folder)
    try:
        server = ThreadingHTTPServer(("127.0.0.1", DEMO_PORT), handler)
    except OSError as e:
        sys.exit(f"port {DEMO_PORT} is taken ({e}); examples/image.yaml downloads from it")
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


OPENSTACK = str(Path(sys.executable).parent / "openstack")


def start_openstack_api(cloud: LocalCloud, workdir: Path) -> Path:
    """`kova api` on loopback, and a clouds.yaml (cloud `kova-demo`) with a token of a ServiceAccount that
    may edit the `default` namespace; `openstack image list` and `openstack server list` through it show the
    demo image and server."""
    proc = cloud.start_api(cloud.api_kubeconfig())
    token = cloud.tenant_token("default", "edit", name="demo")
    clouds = workdir / "clouds.yaml"
    clouds.write_text(yaml.safe_dump({"clouds": {"kova-demo": {
        "auth_type": "v3token", "region_name": "RegionOne", "identity_api_version": 3,
        "auth": {"auth_url": f"http://127.0.0.1:{proc.ports['http']}/identity/v3", "token": token,
                 "project_name": "default", "project_domain_name": "Default"}}}}))
    for what in (("image", "list"), ("server", "list")):
        print(f"\n$ OS_CLIENT_CONFIG_FILE={clouds.relative_to(REPO)} openstack --os-cloud kova-demo {' '.join(what)}")
        listed = subprocess.run([OPENSTACK, "--os-cloud", "kova-demo", *what], capture_output=True, text=True,
                                env={**os.environ, "OS_CLIENT_CONFIG_FILE": str(clouds)}, stdin=subprocess.DEVNULL,
                                timeout=120)
        print(listed.stdout or listed.stderr)
    return clouds


def main() -> int:
    parser = argparse.ArgumentParser(prog="make demo")
    parser.add_argument("--keep", action="store_true", help="keep the cloud and operator running")
    args = parser.parse_args()
    workdir = REPO / ".cache" / "demo"
    shutil.rmtree(workdir, ignore_errors=True)
    started = time.monotonic()
    www = workdir / "www"
    www.mkdir(parents=True)
    server = serve_demo_image(str(www))
    print("starting the local cloud (etcd, kube-apiserver, controller-manager, MinIO, KubeVirt/CDI simulator)")
    with LocalCloud(workdir) as cloud:
        cloud.install_kova_crds()
        # The image cache's namespace, as the chart makes it: root disks are clones of one import per image.
        cloud.kubectl("create", "namespace", "kova-image-cache")
        # The demo image is served on loopback, which the import filter refuses unless it is allowed.
        cloud.start_operator(extra_env={"KOVA_IMPORT_ALLOWED_HOSTS": f"127.0.0.1:{DEMO_PORT}"})
        print(f"cloud and operator up in {time.monotonic() - started:.0f}s; logs in {cloud.logs}\n")
        print("$ kubectl apply -f examples/")
        print(cloud.kubectl("apply", "-f", str(REPO / "examples")))
        print("$ kubectl wait --for=condition=Ready flavor/m1.tiny image/demo-os instance/web-1")
        print(cloud.kubectl("wait", "--for=condition=Ready", "--timeout=180s", "-n", "default",
                            "flavor/m1.tiny", "image/demo-os", "instance/web-1"))
        print("$ kubectl wait --for=jsonpath='{.status.status}'=in-use volume/data")
        print(cloud.kubectl("wait", "--for=jsonpath={.status.status}=in-use", "--timeout=60s", "-n", "default",
                            "volume/data"))
        print("$ kubectl get flavors,images,instances,volumes -o wide")
        print(cloud.kubectl("get", "flavors,images,instances,volumes", "-o", "wide", "-n", "default"))
        print("$ kubectl get instance web-1 -o jsonpath='{.status.volumeAttachments}'   # the hot-plugged volume")
        print(cloud.kubectl("get", "instance", "web-1", "-n", "default", "-o",
                            "jsonpath={.status.volumeAttachments}") + "\n")
        print("$ kubectl get virtualmachines,virtualmachineinstances,datavolumes -o wide")
        print(cloud.kubectl("get", "vm,vmi,dv", "-o", "wide", "-n", "default"))
        print("$ kubectl get datavolumes,datasources -n kova-image-cache   # the image cache: one import, cloned")
        print(cloud.kubectl("get", "dv,datasources", "-n", "kova-image-cache"))
        print("$ kubectl describe instance web-1 | tail (events)")
        print("\n".join(cloud.kubectl("describe", "instance", "web-1", "-n", "default").splitlines()[-8:]))
        clouds = start_openstack_api(cloud, workdir)
        print(f"\ndemo done in {time.monotonic() - started:.0f}s")
        cli = f"OS_CLIENT_CONFIG_FILE={clouds} {OPENSTACK} --os-cloud kova-demo"
        print(f"\nA server through Nova's API, to paste while the cloud runs (`.venv/bin/python -m tests.demo --keep`):"
              f"\n  {cli} server create --flavor m1.tiny --image demo-os --network pod --wait web-2")
        if args.keep:
            print(f"\nOpenStack clients work too, while this runs:\n  {cli} image list\n  {cli} server list --long")
            print(f"\nstill running; in another shell:\n  source {workdir / 'env'}\n"
                  f"  {binary('kubectl')} get instances -A\nCtrl-C stops it")
            with contextlib.suppress(KeyboardInterrupt):
                threading.Event().wait()
    server.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
