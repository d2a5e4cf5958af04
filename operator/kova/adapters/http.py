"""HTTP sources of image data: a tenant's URL through the import filter (kova.image.filter), hop by hop,
and KubeVirt's export server for snapshots."""

from __future__ import annotations

import socket
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urljoin, urlsplit

import urllib3

from kova.image.filter import DEFAULT_PORTS, ImportFilter, NotAllowed, Resolver, Target, check

MAX_REDIRECTS = 5
_REDIRECTS = {301, 302, 303, 307, 308}


def system_resolver(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


@dataclass
class Fetcher:
    """Opens a checked GET, following redirects hop by hop. One pool per hop: nothing is reused across
    hosts, and the pool's host is the checked address."""

    rules: ImportFilter = field(default_factory=ImportFilter)
    resolve: Resolver = system_resolver
    timeout: urllib3.Timeout = field(default_factory=lambda: urllib3.Timeout(connect=10, read=60))

    def open(self, url: str) -> Any:
        """The response to GET `url` (not redirected), streaming. Raises NotAllowed, or urllib3/OSError
        errors for failures that may pass."""
        for _ in range(MAX_REDIRECTS + 1):
            target = check(url, self.rules, self.resolve)
            resp = self._get(target)
            location = resp.headers.get("Location")
            if resp.status not in _REDIRECTS or not location:
                return resp
            resp.close()  # not drained: a redirect's body could be endless
            url = urljoin(url, location)
        raise NotAllowed(f"more than {MAX_REDIRECTS} redirects, the last to {url}")

    def _get(self, target: Target) -> Any:
        default = target.port == DEFAULT_PORTS[target.scheme]
        shown = f"[{target.host}]" if ":" in target.host else target.host
        # The bytes as the source stores them: identity asked for, and nothing decoded if it answers otherwise
        # (the hashes and the format check are of what was sent; a gzip bomb stays the small file it is).
        headers = {"Host": shown if default else f"{shown}:{target.port}", "User-Agent": "kova-image-import",
                   "Accept-Encoding": "identity"}
        pool: urllib3.HTTPConnectionPool
        if target.scheme == "https":
            pool = urllib3.HTTPSConnectionPool(str(target.ip), target.port, timeout=self.timeout, maxsize=1,
                                               retries=False, server_hostname=target.host,
                                               assert_hostname=target.host, cert_reqs="CERT_REQUIRED")
        else:
            pool = urllib3.HTTPConnectionPool(str(target.ip), target.port, timeout=self.timeout, maxsize=1,
                                              retries=False)
        return pool.urlopen("GET", target.path, headers=headers, redirect=False, retries=False,
                            preload_content=False, decode_content=False, enforce_content_length=True,
                            assert_same_host=False)


@dataclass
class ExportFetcher:
    """KubeVirt's export server (a snapshot's source). Its URL and CA come from the VirtualMachineExport's
    status, which KubeVirt writes (a tenant cannot), so it is not passed through the tenant-URL filter above:
    it is the cluster's own service, reached with TLS verified against that CA, the token Kova generated in
    the `x-kubevirt-export-token` header, and no redirects."""

    ca_pem: str
    token: str
    timeout: urllib3.Timeout = field(default_factory=lambda: urllib3.Timeout(connect=10, read=60))
    # The exporter pod's address (behind the export's Service): connected to instead of the link's host, whose
    # name the certificate is still verified for.
    address: tuple[str, int] | None = None

    def open(self, url: str) -> Any:
        parts = urlsplit(url)
        if parts.scheme != "https" or not parts.hostname:
            raise NotAllowed(f"an export link must be https, not {url}")
        host, port = self.address or (parts.hostname, parts.port or 443)
        pool = urllib3.HTTPSConnectionPool(host, port, timeout=self.timeout, maxsize=1, retries=False,
                                           cert_reqs="CERT_REQUIRED", ca_cert_data=self.ca_pem,
                                           server_hostname=parts.hostname, assert_hostname=parts.hostname)
        path = parts.path + (f"?{parts.query}" if parts.query else "")
        return pool.urlopen("GET", path, headers={"x-kubevirt-export-token": self.token,
                                                  "User-Agent": "kova-image-snapshot", "Accept-Encoding": "identity"},
                            redirect=False, retries=False, preload_content=False, decode_content=False,
                            enforce_content_length=True)
