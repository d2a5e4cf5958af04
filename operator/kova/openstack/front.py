"""What every service of `kova api` shares: the clients, the public base URL, and the caller (the token of
each request and the project it names, checked once per AUTH_TTL with a SelfSubjectAccessReview)."""

from __future__ import annotations

import hashlib
import ipaddress
import json
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from multidict import MultiMapping

from kova.adapters.env import IPNetwork
from kova.adapters.informer import object_key
from kova.adapters.kubeapi import ApiError, Apiserver, Caller
from kova.adapters.runtime import Runtime
from kova.api.errors import StatusError

AUTH_TTL = 30.0  # seconds a token's access to a project is remembered (one SelfSubjectAccessReview)
TRUSTED_PROXIES = "KOVA_API_TRUSTED_PROXIES"  # the peers whose forwarding headers base_url believes
# Keystone's `admin` role: the verb `admin` on images in every namespace, which only a ClusterRoleBinding to
# kova-admin (or cluster-admin) gives; a RoleBinding in one namespace never does.
ADMIN_VERB = "admin"

# What a forwarded host may be: a DNS name or IPv4 address, or a bracketed IPv6 address, and a port. No
# user, path, query or space: the value goes into the catalog's URLs as their authority.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_HOST = re.compile(rf"(?:(?P<name>{_LABEL}(?:\.{_LABEL})*)|\[(?P<v6>[0-9A-Fa-f:.]+)\])"
                   r"(?::(?P<port>[0-9]{1,5}))?")
_X_FORWARDED = ("X-Forwarded-For", "X-Forwarded-Proto", "X-Forwarded-Host", "X-Forwarded-Port")


def base_url(public_url: str | None, peer: str | None, scheme: str, host: str, headers: MultiMapping[str],
             forwarded: Sequence[Mapping[str, str]], trusted: Sequence[IPNetwork]) -> str:
    """The URL clients reach this API at, for the catalog, links and Locations: `public_url` when given;
    else the scheme and host a trusted proxy says the client used; else the request's own.

    - Forwarding headers count only when the TCP `peer` is in a `trusted` network (as gunicorn's
      forwarded_allow_ips and uvicorn's trusted hosts): from anyone else they are whatever the client
      wrote, and a catalog naming the client's host sends the next request's token there.
    - Only the nearest proxy is believed, so of a comma-separated X-Forwarded-Proto or -Host (several
      header lines read as one list) the last value: the one that proxy appended or set. Werkzeug's
      ProxyFix with x_proto=1, x_host=1 does the same (values[-1]), as uvicorn does for the scheme.
      Earlier values come from farther hops, or the client, that nobody vouches for.
    - The standard Forwarded header (RFC 7239, `forwarded` as aiohttp parses it, one mapping per element)
      counts only when the request has no X-Forwarded-* header at all, and then its last element's proto
      and host. Proxies that speak X-Forwarded-* (ingress-nginx, Traefik, Envoy, cloud load balancers)
      always send one of them and pass a client's Forwarded through untouched, so it must not win there
      (waitress, for the same reason, refuses to trust both kinds at once).
    - A value that is not `http`/`https`, or not a bare host[:port], is ignored: that part of the URL is
      then the request's own, never a guess.
    """
    if public_url:
        return public_url.rstrip("/")
    if trusted and _is_trusted(peer, trusted):
        proto: str | None
        if any(headers.getall(name, ()) for name in _X_FORWARDED):
            proto, fhost = _last(headers, "X-Forwarded-Proto"), _last(headers, "X-Forwarded-Host")
        elif forwarded:
            proto, fhost = forwarded[-1].get("proto"), forwarded[-1].get("host")
        else:
            proto = fhost = None
        if proto is not None and proto.strip().lower() in ("http", "https"):
            scheme = proto.strip().lower()
        if fhost is not None and _valid_host(fhost.strip()):
            host = fhost.strip()
    return f"{scheme}://{host}".rstrip("/")


def _is_trusted(peer: str | None, trusted: Sequence[IPNetwork]) -> bool:
    try:
        address = ipaddress.ip_address((peer or "").split("%", 1)[0])  # without an IPv6 zone (fe80::1%eth0)
    except ValueError:
        return False  # a Unix socket, or no peer at all
    candidates: list[ipaddress.IPv4Address | ipaddress.IPv6Address] = [address]
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped:
        candidates.append(address.ipv4_mapped)  # an IPv4 client of a dual-stack socket: ::ffff:10.0.0.1
    return any(a.version == n.version and a in n for a in candidates for n in trusted)


def _last(headers: MultiMapping[str], name: str) -> str | None:
    values = headers.getall(name, ())
    return ",".join(values).rsplit(",", 1)[-1] if values else None


def _valid_host(text: str) -> bool:
    match = _HOST.fullmatch(text)
    if match is None or len(text) > 260:
        return False
    if match["port"] is not None and not 0 < int(match["port"]) < 65536:
        return False
    if match["v6"] is not None:
        try:
            ipaddress.IPv6Address(match["v6"])
        except ValueError:
            return False
    return True


class UidIndex(dict[str, tuple[str, ...]]):
    """uid → (namespace, name) of a watched kind: OpenStack ids are uids, Kubernetes finds objects by name.
    Fed as an Informer listener, and by hand with what this process just created (read-your-writes)."""

    def update_from(self, old: dict[str, Any] | None, new: dict[str, Any] | None) -> None:
        if old is not None:
            self.pop(old["metadata"]["uid"], None)
        if new is not None:
            self[new["metadata"]["uid"]] = object_key(new)


class Front:
    def __init__(self, apiserver: Apiserver, rt: Runtime, public_url: str | None = None,
                 trusted_proxies: Sequence[IPNetwork] = ()) -> None:
        self.apiserver, self.rt, self.public_url = apiserver, rt, public_url
        self.trusted_proxies = tuple(trusted_proxies)
        self._access: dict[tuple[str, str], tuple[float, bool]] = {}  # (token hash, project or "" for admin)

    def base(self, request: web.Request) -> str:
        if self.public_url or not self.trusted_proxies:  # no forwarding header to read (nor to parse)
            return base_url(self.public_url, None, request.scheme, request.host, request.headers, (), ())
        return base_url(None, request.remote, request.scheme, request.host, request.headers, request.forwarded,
                        self.trusted_proxies)

    async def caller(self, request: web.Request) -> tuple[Caller, str]:
        """The caller's token and project; 401 without a token that kube-apiserver takes, 403 when the
        token may not even list Images in the project's namespace."""
        token = request.headers.get("X-Auth-Token") or ""
        if not token:
            raise StatusError(401, "This server could not verify that you are authorized to access the document "
                                   "you requested.")
        project = request.match_info["project"]
        key = (hashlib.sha256(token.encode()).hexdigest(), project)
        now = time.monotonic()
        known = self._access.get(key)
        caller = self.apiserver.caller(token)
        if known is None or known[0] < now:
            try:
                allowed = await caller.can("list", project)
            except ApiError as e:
                raise StatusError(401 if e.status == 401 else 503, e.message) from e
            known = self._access[key] = (now + AUTH_TTL, allowed)
            if len(self._access) > 10_000:
                self._access = {k: v for k, v in self._access.items() if v[0] >= now}
        if not known[1]:
            raise StatusError(403, f"You are not authorized to access project {project} (RBAC: list images there).")
        return caller, project


    async def is_admin(self, caller: Caller) -> bool:
        """Whether the caller holds Keystone's admin role (ADMIN_VERB cluster-wide), remembered for AUTH_TTL."""
        key = (hashlib.sha256(caller.token.encode()).hexdigest(), "")
        now = time.monotonic()
        known = self._access.get(key)
        if known is None or known[0] < now:
            known = self._access[key] = (now + AUTH_TTL, await caller.can(ADMIN_VERB, ""))
        return known[1]


async def read_json(request: web.Request) -> Any:
    try:
        return await request.json(loads=json.loads)
    except ValueError as e:
        raise StatusError(400, f"Malformed JSON in request body: {e}") from e
