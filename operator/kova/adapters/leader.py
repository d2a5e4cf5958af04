"""Leader election on a coordination.k8s.io Lease, as client-go's leaderelection and controller-runtime do it.

A replica that is not the leader runs nothing but this: no watch, no cache, no Kopf, so it cannot write.
The leader renews the Lease every `retry` seconds; if it cannot renew for `renew_deadline` seconds it exits at
once (another replica may already hold the Lease), and the kubelet restarts it as a candidate. On a clean stop
it releases the Lease, so a rolling update hands over without waiting for the Lease to run out.

Expiry is judged on this process's monotonic clock from when it last saw the record change, never by
comparing another machine's `renewTime` with our wall clock (clock skew between nodes would elect two).
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from urllib.parse import urlsplit

from aiohttp import web
from kubernetes.aio import client
from kubernetes.aio.client.exceptions import ApiException

log = logging.getLogger("kova.leader")
SA_NAMESPACE = "/var/run/secrets/kubernetes.io/serviceaccount/namespace"


@dataclass(frozen=True)
class Timing:
    """client-go's ratios (15 s lease, 10 s renew deadline, 2 s retry) scaled to the lease duration."""

    lease: float

    @property
    def renew_deadline(self) -> float:
        return self.lease * 2 / 3

    @property
    def retry(self) -> float:
        return max(0.2, self.lease * 2 / 15)


@dataclass(frozen=True)
class Record:
    holder: str
    duration: int
    renewed: str  # only compared for change: a leader that renews changes it


def may_take(current: Record, me: str, seen_since: float, now: float) -> bool:
    """Whether this candidate may write itself into the Lease: it holds it, nobody does (released), or the
    holder has not renewed for the Lease's duration as measured here since the record last changed."""
    if current.holder in ("", me):
        return True
    return now - seen_since >= current.duration


def identity() -> str:
    # The pod's name says which replica leads (`kubectl get lease`); the suffix tells a restarted one apart.
    return f"{socket.gethostname()}_{uuid.uuid4().hex[:8]}"


def own_namespace() -> str:
    """KOVA_NAMESPACE (the chart sets it from the pod), else the ServiceAccount's, else `default`."""
    if os.environ.get("KOVA_NAMESPACE"):
        return os.environ["KOVA_NAMESPACE"]
    try:
        with open(SA_NAMESPACE) as f:
            return f.read().strip() or "default"
    except OSError:
        return "default"


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


class Elector:
    def __init__(self, api: client.ApiClient, namespace: str, name: str, me: str, lease: float) -> None:
        self.leases = client.CoordinationV1Api(api)
        self.namespace, self.name, self.me = namespace, name, me
        self.timing = Timing(lease)
        self._seen: tuple[Record, float] | None = None

    async def _try(self) -> bool:
        """One round of client-go's tryAcquireOrRenew: True when this replica holds the Lease after it."""
        try:
            lease = await self.leases.read_namespaced_lease(self.name, self.namespace)
        except ApiException as e:
            if e.status != 404:
                log.warning("reading Lease %s/%s: %s", self.namespace, self.name, e.reason)
                return False
            return await self._create()
        spec = lease.spec or client.V1LeaseSpec()
        current = Record(spec.holder_identity or "", spec.lease_duration_seconds or 0, str(spec.renew_time))
        now = time.monotonic()
        if self._seen is None or self._seen[0] != current:
            self._seen = (current, now)
        if not may_take(current, self.me, self._seen[1], now):
            return False
        took = current.holder != self.me
        lease.spec = spec
        lease.spec.holder_identity = self.me
        lease.spec.lease_duration_seconds = max(1, round(self.timing.lease))
        lease.spec.renew_time = _now()
        if took:
            lease.spec.acquire_time = lease.spec.renew_time
            lease.spec.lease_transitions = (lease.spec.lease_transitions or 0) + 1
        # A replace carries the resourceVersion read above: of two candidates, one gets 409.
        return await self._written("writing", self.leases.replace_namespaced_lease(self.name, self.namespace, lease))

    async def _create(self) -> bool:
        now = _now()
        body = client.V1Lease(metadata=client.V1ObjectMeta(name=self.name),
                              spec=client.V1LeaseSpec(holder_identity=self.me, acquire_time=now, renew_time=now,
                                                      lease_duration_seconds=max(1, round(self.timing.lease)),
                                                      lease_transitions=0))
        return await self._written("creating", self.leases.create_namespaced_lease(self.namespace, body))

    async def _written(self, what: str, write: Awaitable[object]) -> bool:
        """Whether the write went through; a 409 is another candidate's win, anything else is logged."""
        try:
            await write
        except ApiException as e:
            if e.status != 409:
                log.warning("%s Lease %s/%s: %s", what, self.namespace, self.name, e.reason)
            return False
        return True

    async def acquire(self) -> None:
        """Return once this replica leads; until then, only read the Lease every `retry` seconds."""
        log.info("standing by: Lease %s/%s, identity %s", self.namespace, self.name, self.me)
        while True:
            if await self._try():
                break
            await asyncio.sleep(self.timing.retry)  # polling is the protocol: a Lease has no wake-up
        log.info("leading: Lease %s/%s, identity %s", self.namespace, self.name, self.me)

    async def keep(self) -> None:
        """Renew until a renewal has failed for `renew_deadline` seconds; then return (the lead is lost)."""
        last = time.monotonic()
        while True:
            await asyncio.sleep(self.timing.retry)
            try:
                renewed = await asyncio.wait_for(self._try(), self.timing.renew_deadline)
            except TimeoutError:
                renewed = False
            if renewed:
                last = time.monotonic()
            elif time.monotonic() - last >= self.timing.renew_deadline:
                return

    async def release(self) -> None:
        """Hand the Lease back on a clean stop (client-go's ReleaseOnCancel): a candidate takes it at once."""
        try:
            lease = await self.leases.read_namespaced_lease(self.name, self.namespace)
            if lease.spec is None or lease.spec.holder_identity != self.me:
                return
            lease.spec.holder_identity = None
            lease.spec.lease_duration_seconds = 1
            lease.spec.renew_time = _now()
            await self.leases.replace_namespaced_lease(self.name, self.namespace, lease)
        except ApiException as e:
            log.warning("releasing Lease %s/%s: %s", self.namespace, self.name, e.reason)


@asynccontextmanager
async def standing_by(liveness: str | None) -> AsyncIterator[None]:
    """Answer the liveness probe while standing by (Kopf serves it once this replica leads)."""
    if not liveness:
        yield
        return
    url = urlsplit(liveness)

    async def alive(_: web.Request) -> web.Response:
        return web.json_response({"standby": True})

    app = web.Application()
    app.router.add_get(url.path or "/", alive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, url.hostname, url.port or 80, reuse_address=True).start()
    try:
        yield
    finally:
        await runner.cleanup()  # frees the port for Kopf's own endpoint
