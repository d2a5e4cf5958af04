"""The import worker: the process that reads tenant bytes (web-download, uploads, snapshots) and parses them
(Glance's format inspection), apart from the processes that hold Kubernetes credentials.

`kova run` and `kova api` each start one (`kova worker`) with an environment stripped of every Kubernetes
credential, or, in the chart, use the `worker` container of their pod, which has no ServiceAccount token
mounted (the pod's token goes to the main container only) and a memory and CPU limit of its own. A bug in a
parser fed hostile bytes then reaches the object store's bucket, not the cluster.

They talk over a Unix socket in frames of one type byte, a 4-byte length and a payload:
  client → worker  H (JSON: what to import), D (upload bytes), E (end of upload), S (JSON: stop, with reason)
  worker → client  P (JSON: progress), R (JSON: the outcome)
The connection is the import: closing it cancels the import, and the worker aborts its multipart upload.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import queue
import select
import signal
import socket
import socketserver
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict
from typing import Any

from kova.adapters.http import ExportFetcher, Fetcher
from kova.adapters.store import Stores
from kova.image import importer
from kova.image.blob import Blob
from kova.image.filter import ImportFilter
from kova.image.importer import Cancelled, ImportFailed, ImportProgress, SourceUnavailable

log = logging.getLogger("kova.worker")
HEADER = struct.Struct(">cI")
TICK = 0.25  # seconds between progress frames, and between checks that the import is still wanted
# Environment a worker never gets: the credentials and the addresses of the Kubernetes API.
SECRET_ENV = ("KUBECONFIG", "KUBERNETES_SERVICE_HOST", "KUBERNETES_SERVICE_PORT", "KOVA_TOKEN")


class WorkerLost(Exception):
    """The worker went away mid-import (restarted, killed): a passing failure, tried again."""


def send(sock: socket.socket, kind: bytes, payload: bytes) -> None:
    if len(payload) < 65536:  # one write for the small frames
        sock.sendall(HEADER.pack(kind, len(payload)) + payload)
    else:
        sock.sendall(HEADER.pack(kind, len(payload)))
        sock.sendall(payload)


def _exact(sock: socket.socket, n: int) -> bytes:
    out = bytearray()
    while len(out) < n:
        got = sock.recv(min(n - len(out), 1 << 20))
        if not got:
            raise EOFError("connection closed")
        out += got
    return bytes(out)


def receive(sock: socket.socket) -> tuple[bytes, bytes]:
    kind, length = HEADER.unpack(_exact(sock, HEADER.size))
    return kind, _exact(sock, length)


def clean_env(environ: dict[str, str]) -> dict[str, str]:
    """The worker's environment: the parent's without Kubernetes credentials (the store's stay: it writes)."""
    return {k: v for k, v in environ.items() if k not in SECRET_ENV and not k.startswith("KUBERNETES_")}


# ----- the client side: what the operator and kova api call (on a thread) -----

class Local:
    """The importer in this process: benchmarks and unit tests; the same calls as Remote."""

    def __init__(self, stores: Stores) -> None:
        self.stores = stores

    def import_url(self, uid: str, url: str, disk_format: str, checksum: str | None, *,
                   fetcher: Fetcher | ExportFetcher, size_cap: int, progress: ImportProgress,
                   cancelled: Callable[[], bool]) -> Blob:
        return importer.import_url(self.stores.get(), uid, url, disk_format, checksum, fetcher=fetcher,
                                   size_cap=size_cap, progress=progress, cancelled=cancelled)

    def import_chunks(self, uid: str, chunks: Iterator[bytes], disk_format: str, *, source: str,
                      size: int | None, size_cap: int, staged: bool = False, resume_from: int = 0,
                      store: str | None = None) -> Blob:
        return importer.import_chunks(self.stores.get(store), uid, chunks, disk_format, source=source, size=size,
                                      size_cap=size_cap, staged=staged, resume_from=resume_from)


class Remote:
    """Imports through a worker at a Unix socket; the same calls and failures as the in-process importer."""

    def __init__(self, path: str) -> None:
        self.path = path

    def _connect(self) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.connect(self.path)
        except OSError as e:
            sock.close()
            raise WorkerLost(f"the import worker at {self.path} does not answer: {e}") from e
        return sock

    def import_url(self, uid: str, url: str, disk_format: str, checksum: str | None, *,
                   fetcher: Fetcher | ExportFetcher, size_cap: int, progress: ImportProgress,
                   cancelled: Callable[[], bool]) -> Blob:
        source: dict[str, Any] = {"kind": "web"} if isinstance(fetcher, Fetcher) else \
            {"kind": "export", "ca": fetcher.ca_pem, "token": fetcher.token,
             "address": list(fetcher.address) if fetcher.address else None}
        with self._connect() as sock:
            lock = threading.Lock()
            send(sock, b"H", json.dumps({"op": "url", "uid": uid, "url": url, "disk_format": disk_format,
                                         "checksum": checksum, "size_cap": size_cap, "source": source}).encode())

            def stop() -> None:  # progress.stop() from the event loop: the worker hangs up on the source
                failure = progress.stopped
                if failure is None:
                    return
                with lock, contextlib.suppress(OSError):
                    send(sock, b"S", json.dumps({"reason": failure.reason, "message": str(failure)}).encode())
            progress.hang_up = stop
            return _outcome(sock, progress, cancelled)

    def import_chunks(self, uid: str, chunks: Iterator[bytes], disk_format: str, *, source: str,
                      size: int | None, size_cap: int, staged: bool = False, resume_from: int = 0,
                      store: str | None = None) -> Blob:
        with self._connect() as sock:
            send(sock, b"H", json.dumps({"op": "chunks", "uid": uid, "disk_format": disk_format, "source": source,
                                         "size": size, "size_cap": size_cap, "staged": staged,
                                         "resume_from": resume_from, "store": store}).encode())
            # An exception from `chunks` (the caller's client stalled or went away) leaves this block and closes
            # the socket: the worker aborts; Interrupted (a stage's) asks it first to keep what is whole. One
            # from sending means the worker refused midway (the size cap, the format): its answer says why.
            try:
                for chunk in chunks:
                    if not _sent(sock, b"D", chunk):
                        break
                else:
                    _sent(sock, b"E", b"")
            except importer.Interrupted as e:
                if _sent(sock, b"I", str(e).encode()):
                    _outcome(sock, ImportProgress(), lambda: False)  # raises Interrupted with what was kept
                raise
            return _outcome(sock, ImportProgress(), lambda: False)


def _sent(sock: socket.socket, kind: bytes, payload: bytes) -> bool:
    try:
        send(sock, kind, payload)
    except (BrokenPipeError, ConnectionResetError):
        return False
    return True


def _outcome(sock: socket.socket, progress: ImportProgress, cancelled: Callable[[], bool]) -> Blob:
    while True:
        if cancelled():
            raise Cancelled("import stopped")
        ready, _, _ = select.select([sock], [], [], TICK)
        if not ready:
            continue
        try:
            kind, payload = receive(sock)
        except (EOFError, OSError) as e:
            raise WorkerLost(f"the import worker went away: {e}") from e
        message = json.loads(payload)
        if kind == b"P":
            progress.done, progress.total, progress.store_waits = message["done"], message["total"], message["waits"]
            continue
        if "blob" in message:
            return Blob(**message["blob"])
        if "failed" in message:
            raise ImportFailed(*message["failed"])
        if "unavailable" in message:
            raise SourceUnavailable(message["unavailable"])
        if "cancelled" in message:
            raise Cancelled(message["cancelled"])
        if "interrupted" in message:
            raise importer.Interrupted(*message["interrupted"])
        raise RuntimeError(message["error"])  # the store failed: a passing failure for the caller


# ----- the worker side -----

class _Interruption:
    """In the worker's data queue: the caller's client went away (a stage's "I" frame)."""

    def __init__(self, payload: bytes) -> None:
        self.message = payload.decode(errors="replace")


class Worker:
    """What a worker process serves: imports into the store, through the import filter it was given."""

    def __init__(self, stores: Stores, import_filter: ImportFilter) -> None:
        self.stores, self.import_filter = stores, import_filter

    def handle(self, sock: socket.socket) -> None:
        _, payload = receive(sock)
        header = json.loads(payload)
        progress = ImportProgress()
        done = threading.Event()
        gone = threading.Event()
        lock = threading.Lock()
        data: queue.Queue[bytes | _Interruption | None] = queue.Queue(maxsize=8)  # upload bytes in flight: bounded

        def read() -> None:  # the client's frames: stop, upload bytes; EOF means the import is not wanted
            try:
                while True:
                    kind, payload = receive(sock)
                    if kind == b"S":
                        stop = json.loads(payload)
                        progress.stop(ImportFailed(stop["reason"], stop["message"]))
                    elif kind in (b"D", b"E", b"I"):
                        item = payload if kind == b"D" else None if kind == b"E" else _Interruption(payload)
                        while not done.is_set():
                            try:
                                data.put(item, timeout=TICK)
                                break
                            except queue.Full:
                                continue
            except (EOFError, OSError):
                gone.set()
                if not done.is_set():
                    progress.stop(ImportFailed("Cancelled", "the caller went away"))

        def tick() -> None:
            while not done.wait(TICK):
                with lock, contextlib.suppress(OSError):
                    send(sock, b"P", json.dumps({"done": progress.done, "total": progress.total,
                                                 "waits": progress.store_waits}).encode())

        def chunks() -> Iterator[bytes]:
            while True:
                try:
                    item = data.get(timeout=TICK)
                except queue.Empty:
                    if gone.is_set():
                        raise Cancelled("the caller went away") from None
                    continue
                if item is None:
                    return
                if isinstance(item, _Interruption):
                    raise importer.Interrupted(item.message)
                yield item

        threads = [threading.Thread(target=read, daemon=True), threading.Thread(target=tick, daemon=True)]
        for t in threads:
            t.start()
        try:
            if header["op"] == "url":
                source = header["source"]
                fetcher: Fetcher | ExportFetcher = Fetcher(self.import_filter) if source["kind"] == "web" else \
                    ExportFetcher(ca_pem=source["ca"], token=source["token"],
                                  address=(source["address"][0], int(source["address"][1])) if source.get("address")
                                  else None)
                blob = importer.import_url(self.stores.get(), header["uid"], header["url"], header["disk_format"],
                                           header["checksum"], fetcher=fetcher, size_cap=header["size_cap"],
                                           progress=progress, cancelled=gone.is_set)
            else:
                blob = importer.import_chunks(self.stores.get(header.get("store")), header["uid"], chunks(),
                                              header["disk_format"],
                                              source=header["source"], size=header["size"],
                                              size_cap=header["size_cap"], progress=progress,
                                              staged=bool(header.get("staged")),
                                              resume_from=int(header.get("resume_from") or 0))
            outcome: dict[str, Any] = {"blob": asdict(blob)}
        except ImportFailed as e:
            outcome = {"failed": [e.reason, str(e)]}
        except SourceUnavailable as e:
            outcome = {"unavailable": str(e)}
        except Cancelled as e:
            outcome = {"cancelled": str(e)}
        except importer.Interrupted as e:
            outcome = {"interrupted": [str(e), e.kept]}
        except Exception as e:  # the store: passing, the caller tries again
            log.warning("import of %s failed: %r", header.get("uid"), e)
            outcome = {"error": f"object store: {e}"}
        finally:
            done.set()
        with lock, contextlib.suppress(OSError):
            send(sock, b"R", json.dumps(outcome).encode())
            # Read what the caller still sends until it hangs up: closing with unread bytes would reset the
            # connection and could lose the answer above.
            sock.shutdown(socket.SHUT_WR)
        threads[0].join(timeout=30)


def serve(path: str, worker: Worker) -> None:
    """Serve imports at the Unix socket `path` (only this user may connect) until the process ends."""
    class Handler(socketserver.BaseRequestHandler):
        def handle(self) -> None:
            try:
                worker.handle(self.request)
            except (EOFError, OSError) as e:
                log.info("a caller went away: %s", e)

    with contextlib.suppress(FileNotFoundError):
        os.unlink(path)
    old = os.umask(0o177)
    try:
        server = socketserver.ThreadingUnixStreamServer(path, Handler)
    finally:
        os.umask(old)
    server.daemon_threads = True
    log.info("import worker ready at %s (pid %d)", path, os.getpid())
    server.serve_forever()


def _die_with_parent() -> None:
    import ctypes

    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG: no worker outlives its parent


def start_local() -> str:
    """Start a `kova worker` child without Kubernetes credentials, restarted if it dies; its socket's path."""
    path = os.path.join(tempfile.mkdtemp(prefix="kova-worker-"), "worker.sock")  # a folder only we can enter

    def spawn() -> subprocess.Popen[bytes]:
        proc = subprocess.Popen([sys.executable, "-m", "kova.cli", "worker", "--socket", path],
                                env=clean_env(dict(os.environ)), preexec_fn=_die_with_parent)
        deadline = time.monotonic() + 60
        while not os.path.exists(path) and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        return proc

    def supervise(proc: subprocess.Popen[bytes]) -> None:
        while True:
            code = proc.wait()
            log.error("the import worker exited (%s); starting another", code)
            time.sleep(1)
            proc = spawn()

    first = spawn()
    if not os.path.exists(path):
        raise RuntimeError(f"the import worker did not start (exit code {first.poll()})")
    threading.Thread(target=supervise, args=(first,), daemon=True, name="worker-supervisor").start()
    return path

