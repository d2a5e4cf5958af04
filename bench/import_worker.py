"""Child process of import_bench: one import, then its timing and peak RSS as JSON on stdout."""

from __future__ import annotations

import json
import resource
import sys
import time
from urllib.parse import urlsplit

from kova.adapters.http import Fetcher
from kova.adapters.store import ObjectStore, StoreConfig
from kova.image.filter import ImportFilter
from kova.image.importer import import_url


def vm_kib(field: str) -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> None:
    url, uid = sys.argv[1], sys.argv[2]
    store = ObjectStore(StoreConfig.from_env())
    rss_before = vm_kib("VmRSS")
    start = time.perf_counter()
    # The bench's source is on loopback, which the import filter refuses unless it is allowed.
    fetcher = Fetcher(ImportFilter.parse(allowed=urlsplit(url).netloc))
    blob = import_url(store, uid, url, "raw", None, fetcher=fetcher)
    seconds = time.perf_counter() - start
    usage = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"seconds": seconds, "rss_before": rss_before, "rss_peak": vm_kib("VmHWM"),
                      "cpu": usage.ru_utime + usage.ru_stime,
                      "size": blob.size}))


if __name__ == "__main__":
    main()
