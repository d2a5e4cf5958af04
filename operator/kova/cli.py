"""`kova`: the operator's command line.

    kova run [--namespace NS ...] [--liveness URL]   run the operator (Kopf) with a liveness endpoint
    kova api [--listen ADDR:PORT] [--public-url URL]  the OpenStack API: Keystone v3 and Glance v2
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
    from kova import crdgen

    files = crdgen.files()
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        for stale in out.glob("*.yaml"):
            if stale.name not in files:
                stale.unlink()
        for name, text in files.items():
            (out / name).write_text(text)
        print(f"wrote {len(files)} files to {out}")
    else:
        sys.stdout.write("---\n".join(files.values()))
    return 0


def _run(args: argparse.Namespace) -> int:
    import kopf

    from kova import main as _registrations  # noqa: F401  (importing registers the handlers)
    from kova import metrics

    kopf.configure(verbose=args.verbose, log_format=kopf.LogFormat[args.log_format.upper()],
                   log_refkey="object" if args.log_format == "json" else None)
    if args.metrics_port:
        metrics.serve(args.metrics_address, args.metrics_port)
    if args.peering:
        os.environ["KOVA_PEERING"] = args.peering  # read by the startup handler (kova.main)
    asyncio.run(kopf.operator(
        clusterwide=not args.namespace, namespaces=args.namespace,
        memo=kopf.Memo(namespaces=args.namespace),  # the caches watch the same namespaces (kova.main)
        liveness_endpoint=args.liveness))
    return 0


def _api(args: argparse.Namespace) -> int:
    from aiohttp import web

    from kova.openstack import app

    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    host, _, port = args.listen.rpartition(":")
    web.run_app(app.make(args.public_url or None, args.kubeconfig or None), host=host.strip("[]") or "0.0.0.0",
                port=int(port), access_log=logging.getLogger("kova.api.access") if args.verbose else None,
                print=None)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kova", description="Nova and Glance as a Kubernetes operator.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the operator")
    run.add_argument("--namespace", "-n", action="append", default=[],
                     help="watch only this namespace (repeatable); default: the whole cluster")
    run.add_argument("--liveness", default="http://0.0.0.0:8080/healthz",
                     help="liveness endpoint URL (default %(default)s)")
    mode = run.add_mutually_exclusive_group()
    mode.add_argument("--standalone", action="store_true", help="the only replica, no peering (the default)")
    mode.add_argument("--peering", default="", help="Kopf peering object name: run several replicas, one active")
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
    crds = sub.add_parser("crds", help="print the CRDs generated from the models")
    crds.add_argument("--out", help="write one file per CRD into this folder instead")
    crds.set_defaults(func=_crds)
    args = parser.parse_args(argv)
    return int(args.func(args))


if __name__ == "__main__":
    sys.exit(main())
