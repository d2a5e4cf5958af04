"""Prometheus metrics of the operator, served by `kova run --metrics-address/--metrics-port`."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager

import kopf
from prometheus_client import Counter, Gauge, Histogram, start_http_server

RECONCILES = Counter("kova_reconciles_total", "Handler runs, per kind.", ["kind"])
ERRORS = Counter("kova_reconcile_errors_total", "Handler runs that raised, per kind and error class.",
                 ["kind", "error"])
DURATION = Histogram("kova_reconcile_duration_seconds", "Handler run time, per kind.", ["kind"],
                     buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
IMPORTS_IN_FLIGHT = Gauge("kova_imports_in_flight", "Image imports running now.")
IMPORTED_BYTES = Counter("kova_imported_bytes_total", "Bytes of images imported into the store.")
LEADER = Gauge("kova_leader", "1 in the replica that holds the Lease (or runs alone), 0 in a standby.")
IMPORTS = Counter("kova_imports_total", "Finished imports, by result (active, killed).", ["result"])
CACHE_LOOKUPS = Counter("kova_image_cache_lookups_total", "Root disks cloned from the image cache: hit (its entry "
                        "was ready) or miss (the image was imported into the cache first).", ["result"])
CACHE_EVICTIONS = Counter("kova_image_cache_evictions_total", "Image cache entries deleted, by why (unused: "
                          "least recently used over the bounds; image: its Image is gone).", ["why"])


@contextmanager
def reconciling(kind: str) -> Iterator[None]:
    """Count and time one handler run; errors are counted by class (temporary: waits and retries)."""
    RECONCILES.labels(kind).inc()
    start = time.perf_counter()
    try:
        yield
    except kopf.TemporaryError:
        ERRORS.labels(kind, "temporary").inc()
        raise
    except kopf.PermanentError:
        ERRORS.labels(kind, "permanent").inc()
        raise
    except Exception:
        ERRORS.labels(kind, "unexpected").inc()
        raise
    finally:
        DURATION.labels(kind).observe(time.perf_counter() - start)


def serve(address: str, port: int) -> None:
    start_http_server(port, addr=address)
