"""`kova`: the operator's command line.

    kova run [--namespace NS ...] [--liveness URL]   run the operator (Kopf) with a liveness endpoint
    kova api [--listen ADDR:PORT] [--public-url URL]  the OpenStack API: Keystone v3 and Glance v2
    kova image upload NAME FILE --disk-format F      upload through kova api (token: kubeconfig or $KOVA_TOKEN);
        [--stage | --resume]                         staged then imported; --resume continues an interrupted stage
    kova image download NAME -o FILE                 download through kova api
    kova worker --socket PATH                        the import worker (no Kubernetes credentials)
    kova crds [--out DIR]                            print (or write) the CRDs generated from the models
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import sys
from pathlib import Path


def _crds(args: argparse.Namespace) -> int:
    from kova.api import crdgen

    files = crdgen.files()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        # Only our own files: the folder may hold others' (a kustomization, local patches) and a CRD that
        # is no longer generated is for the user to remove, not for us to guess.
        for name, text in files.items():
            (out / name).write_text(text)
        print(f"wrote {len(files)} files to {out}")
    else:
        sys.stdout.write("---\n".join(files.values()))
    return 0


def _run(args: argparse.Namespace) -> int:
    import kopf

    from kova import main as _registrations  # noqa: F401  (importing registers the handlers)
    from kova.adapters import metrics

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()],
                   log_refkey="object" if args.log_format == "json" else None)
    if args.metrics_port:
        metrics.serve(args.metrics_address, args.metrics_port)
    _worker_socket()
    asyncio.run(_operate(args))
    return 0


async def _operate(args: argparse.Namespace) -> None:
    """Kopf in one replica: with --peering, only once this replica holds the Lease (kova.adapters.leader)."""
    import kopf

    from kova.adapters import env, leader, metrics
    from kova.adapters.kube import Kube

    operate = kopf.operator(clusterwide=not args.namespace, namespaces=args.namespace, standalone=True,
                            memo=kopf.Memo(namespaces=args.namespace),  # the caches watch the same (kova.main)
                            liveness_endpoint=args.liveness)
    if not args.peering:
        metrics.LEADER.set(1)
        await operate
        return
    kube = await Kube.connect()
    elector = leader.Elector(kube.api_client, leader.own_namespace(), args.peering, leader.identity(),
                             env.number("KOVA_PEERING_LIFETIME", 15.0, minimum=1))
    async with leader.standing_by(args.liveness):  # a standby is alive, and does nothing else
        await elector.acquire()
    metrics.LEADER.set(1)
    kova = asyncio.create_task(operate)
    keep = asyncio.create_task(elector.keep())
    await asyncio.wait({kova, keep}, return_when=asyncio.FIRST_COMPLETED)
    if keep.done():
        # Another replica may hold the Lease by now: stop writing at once, as controller-runtime does; the
        # kubelet restarts this one as a candidate. A crash at any line converges (README: Architecture).
        logging.getLogger("kova.leader").error("lost the Lease %s: exiting", args.peering)
        os._exit(1)
    keep.cancel()
    await elector.release()
    await kube.close()
    kova.result()


def _worker_socket() -> None:
    """Imports and uploads go to a worker without Kubernetes credentials: the pod's `worker` container when
    KOVA_WORKER_SOCKET names it (the chart), else a child process started here (kova.adapters.worker)."""
    from kova.adapters import worker

    if not os.environ.get("KOVA_WORKER_SOCKET"):
        os.environ["KOVA_WORKER_SOCKET"] = worker.start_local()


def _worker(args: argparse.Namespace) -> int:
    from kova.adapters import worker
    from kova.adapters.runtime import Settings
    from kova.adapters.store import Stores

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    settings = Settings.from_env()
    worker.serve(args.socket, worker.Worker(Stores(settings.stores, settings.link_key), settings.import_filter))
    return 0


def _api(args: argparse.Namespace) -> int:
    from aiohttp import web

    from kova.openstack import app

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    _worker_socket()
    host, _, port = args.listen.rpartition(":")
    web.run_app(app.make(args.public_url or None, args.kubeconfig or None), host=host.strip("[]") or "0.0.0.0",
                port=int(port), access_log=logging.getLogger("kova.api.access") if args.verbose else None,
                print=None)
    return 0


def _image(args: argparse.Namespace) -> int:
    from kova.openstack import client

    try:
        token, namespace = client.credentials(args.namespace or None)
        api = client.ImageApi(args.api or os.environ.get("KOVA_API_URL", ""), token, namespace)
        if args.image_command == "upload":
            image = client.upload(api, args.name, Path(args.file), args.disk_format, args.container_format,
                                  stage=args.stage, resume=args.resume)
            print(f"{image['name']} {image['id']} {image['status']} {image['size']} bytes "
                  f"sha512:{image['os_hash_value']}")
        else:
            out = Path(args.output) if args.output and args.output != "-" else None
            if out is None and sys.stdout.isatty():
                raise client.ClientError("say where to write the image: -o FILE (or -o - to pipe it)")
            done = client.download(api, args.name, sys.stdout.buffer, out)
            if out:
                print(f"wrote {done} bytes to {out}", file=sys.stderr)
    except client.ClientError as e:
        print(f"kova image {args.image_command}: {e}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kova", description="Nova and Glance as a Kubernetes operator.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--namespace", "-n", action="append", default=[],
                     help="watch only this namespace (repeatable); default: the whole cluster")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                     help="liveness endpoint URL (default %(default)s)")
    run.add_argument("--peering", default="", help="Lease name: run several replicas, one leading, the others "
                                                   "standing by (default: none, the only replica)")
    run.add_argument("--metrics-address", default="0.0.0.0", help="Prometheus metrics address")
    run.add_argument("--metrics-port", type=int, default=9090, help="Prometheus metrics port (0: off)")
    run.add_argument("--log-format", choices=["full", "plain", "json"], default="full")
    run.add_argument("--verbose", "-v", action="store_true", help="log more (Kopf's verbose)")
    run.set_defaults(func=_run)
    api = sub.add_parser("api", help="run the OpenStack API (Keystone v3 and Glance v2) over the Image objects")
    api.add_argument("--listen", default="0.0.0.0:8780", help="address:port to listen on (default %(default)s)")
    api.add_argument("--public-url", default="", help="the URL clients reach this API at, for the catalog "
                                                      "(default: from each request's Host)")
    api.add_argument("--kubeconfig", default="", help="kubeconfig for the API server's address and the API's "
                                                      "own account (default: in-cluster or $KUBECONFIG)")
    api.add_argument("--verbose", "-v", action="store_true", help="log every request")
    api.set_defaults(func=_api)
    work = sub.add_parser("worker", help="the import worker: reads and checks tenant bytes, holds no Kubernetes "
                                         "credentials (kova run and kova api start one, or use the pod's)")
    work.add_argument("--socket", required=True, help="Unix socket to serve imports at")
    work.set_defaults(func=_worker)
    img = sub.add_parser("image", help="move image data through kova api (upload, download)")
    img_sub = img.add_subparsers(dest="image_command", required=True)
    for name, what in (("upload", "upload FILE as image NAME (created if missing)"),
                       ("download", "download image NAME")):
        cmd = img_sub.add_parser(name, help=what)
        cmd.add_argument("name", help="the image's id, or its name: by name, only the project's own images "
                                      "count (another project's image is taken by id only)")
        if name == "upload":
            cmd.add_argument("file", help="the disk image file")
            cmd.add_argument("--disk-format", required=True, help="qcow2, raw, iso, vmdk, vhd, vhdx or vdi")
            cmd.add_argument("--container-format", default="bare")
            cmd.add_argument("--stage", action="store_true", help="stage the data, then import it (glance-direct): "
                                                                  "an interrupted stage keeps what arrived")
            cmd.add_argument("--resume", action="store_true", help="continue an interrupted stage of this image "
                                                                   "with the rest of FILE, then import it")
        else:
            cmd.add_argument("-o", "--output", default="", help="file to write (- for standard output)")
        cmd.add_argument("--namespace", "-n", default="", help="project (default: the kubeconfig context's)")
        cmd.add_argument("--api", default="", help="kova api URL (default: $KOVA_API_URL)")
        cmd.set_defaults(func=_image)
    crds = sub.add_parser("crds", help="print the CRDs generated from the models")
    crds.add_argument("--out", metavar="DIR", help="write the files into DIR instead (created if missing): "
                      "one <plural>.<group>.yaml per CRD and protected-images.policy.yaml, "
                      "each overwritten; other files in DIR are left alone")
    crds.set_defaults(func=_crds)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
