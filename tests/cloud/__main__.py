"""`python -m tests.cloud up [--dir DIR]`: start the local cloud, print its environment, run until stopped."""

from __future__ import annotations

import argparse
import signal
import sys
import tempfile
import threading
from pathlib import Path

from tests.cloud.bench import LocalCloud


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.cloud")
    parser.add_argument("command", choices=["up"])
    parser.add_argument("--dir", type=Path, default=None, help="work folder (default: a new temporary one)")
    parser.add_argument("--no-simulator", action="store_true")
    args = parser.parse_args()
    workdir = args.dir or Path(tempfile.mkdtemp(prefix="kova-cloud-"))
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    with LocalCloud(workdir.resolve(), with_simulator=not args.no_simulator) as cloud:
        for key, value in cloud.env().items():
            print(f"export {key}={value}")
        print(f"# logs in {cloud.logs}; environment also in {workdir / 'env'}; Ctrl-C stops", flush=True)
        (workdir / "ready").touch()
        stop.wait()
    (workdir / "ready").unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
