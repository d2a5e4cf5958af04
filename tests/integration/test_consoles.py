"""Nova's remote consoles on the local cloud: a console URL from ConsoleProxy.issue_console opens the VMI's
serial console or VNC display through the proxy, kube-apiserver (RBAC, with the tenant's own token) and the
simulator's virt-api behind its APIService; an expired, foreign or misused URL is refused, and so is a token
that kube-apiserver does not let at the console. Everything listens on 127.0.0.1."""

from __future__ import annotations

import asyncio
import base64
import os
import ssl
import struct
import uuid
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp
import pytest
from aiohttp import web

from kova.adapters.kubeapi import Apiserver, Cluster
from kova.openstack.compute import consoles
from kova.openstack.compute.console_proxy import ConsoleProxy, add_routes
from tests.cloud.bench import LocalCloud
from tests.conftest import Kubectl, tenant_token, wait_for
from tests.httpsource import Source
from tests.integration.test_simulator import call, multus_vm, simulator_log, vm_with_disk

pytestmark = pytest.mark.integration
SERIAL = {"remote_console": {"protocol": "serial", "type": "serial"}}
VNC = {"remote_console": {"protocol": "vnc", "type": "novnc"}}
TIMEOUT = 20  # seconds for any one message: a bound, not a pause


@dataclass(frozen=True)
class Guest:
    namespace: str
    vm: str
    uid: str
    token: str  # a ServiceAccount with `edit` in the namespace: a member of the project


def may_open_console(cloud: LocalCloud, namespace: str, token: str) -> bool:
    review = {"apiVersion": "authorization.k8s.io/v1", "kind": "SelfSubjectAccessReview", "spec": {
        "resourceAttributes": {"verb": "get", "group": "subresources.kubevirt.io",
                               "resource": "virtualmachineinstances", "subresource": "console",
                               "namespace": namespace}}}
    status, body = call(cloud, "POST", "/apis/authorization.k8s.io/v1/selfsubjectaccessreviews", review, token)
    return status == 201 and bool(body["status"].get("allowed"))


@pytest.fixture(scope="module")
def guest(cloud: LocalCloud, source: Source) -> Iterator[Guest]:
    """A running VM in a namespace of its own, and a project member's token."""
    namespace = f"t-consoles-{uuid.uuid4().hex[:5]}"
    cloud.kubectl("create", "namespace", namespace)
    try:
        kubectl = Kubectl(cloud, namespace)
        vm_with_disk(kubectl, source, "web-1")
        token = tenant_token(cloud, namespace)
        # The roles the simulator installs as virt-operator does, aggregated into `edit` by the controller.
        wait_for(lambda: may_open_console(cloud, namespace, token), 30, "edit to grant virtualmachineinstances/console")
        yield Guest(namespace, "web-1", (kubectl.get("vm", "web-1") or {})["metadata"]["uid"], token)
    finally:
        cloud.kubectl("delete", "namespace", namespace, "--wait=false", check=False)


@asynccontextmanager
async def serving(cloud: LocalCloud, ttl: float = 600.0) -> AsyncIterator[tuple[str, ConsoleProxy]]:
    """A kova api of consoles only, on loopback, against the local cloud's kube-apiserver; its base URL."""
    apiserver = Apiserver(Cluster(cloud.api_url, ssl.create_default_context(
        cafile=str(cloud.workdir / "pki" / "ca.crt"))))
    proxy = ConsoleProxy(apiserver, consoles.new_key(), ttl)
    app = web.Application()
    add_routes(app.router, proxy)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}", proxy
    finally:
        await runner.cleanup()
        await apiserver.close()


def issue(proxy: ConsoleProxy, base: str, guest: Guest, body: dict[str, Any], token: str | None = None,
          vmi: str | None = None) -> str:
    doc = proxy.issue_console(base, token or guest.token, guest.namespace, vmi or guest.vm, guest.uid, body)
    assert doc["remote_console"]["protocol"] == body["remote_console"]["protocol"]
    return str(doc["remote_console"]["url"])


async def refusal(session: aiohttp.ClientSession, url: str) -> tuple[int, dict[str, Any]]:
    """The answer to a websocket handshake that is refused, read whole (ws_connect drops its body)."""
    headers = {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Version": "13",
               "Sec-WebSocket-Key": base64.b64encode(os.urandom(16)).decode()}
    async with session.get(url.replace("ws://", "http://", 1), headers=headers) as resp:
        assert resp.status != 101
        return resp.status, await resp.json()


def websockify(page_url: str) -> str:
    """The websocket a VNC console's page names, as noVNC makes it: ws://<host>/<path>."""
    parts = urlsplit(page_url)
    return f"ws://{parts.netloc}/{parse_qs(parts.query)['path'][0]}"


async def receive(ws: aiohttp.ClientWebSocketResponse) -> bytes:
    message = await ws.receive(timeout=TIMEOUT)
    assert message.type == aiohttp.WSMsgType.BINARY, message
    return bytes(message.data)


def test_serial_console_shows_the_login_prompt_and_echoes(cloud: LocalCloud, guest: Guest) -> None:
    async def run() -> None:
        async with serving(cloud) as (base, proxy), aiohttp.ClientSession() as session:
            url = issue(proxy, base, guest, SERIAL)
            assert url.startswith(f"ws://127.0.0.1:{base.rsplit(':', 1)[1]}/projects/{guest.namespace}/compute/"
                                  f"console/serial?token=")
            assert guest.token not in url
            async with session.ws_connect(url) as ws:
                assert await receive(ws) == f"\r\n{guest.vm} login: ".encode()
                await ws.send_str("root\r")  # a browser terminal's text goes to the serial port as bytes
                assert await receive(ws) == b"root\r"
                await ws.send_bytes(b"\x03\xff")
                assert await receive(ws) == b"\x03\xff"
            # The client left: the proxy closed its websocket to virt-api too.
            closed = f"console of {guest.namespace}/{guest.vm} closed (peer's code 1000)"
            # (In a thread: the proxy runs on this event loop.)
            await asyncio.to_thread(wait_for, lambda: closed in simulator_log(cloud), 10,
                                    "virt-api's end of the console to close")
            # The URL stays good for another connection until it expires, as Nova's.
            async with session.ws_connect(url) as ws:
                assert await receive(ws) == f"\r\n{guest.vm} login: ".encode()
    asyncio.run(run())


def test_vnc_console_is_novncs_page_and_an_rfb_websocket(cloud: LocalCloud, guest: Guest) -> None:
    async def run() -> None:
        async with serving(cloud) as (base, proxy), aiohttp.ClientSession() as session:
            url = issue(proxy, base, guest, VNC)
            assert url.startswith(f"{base}/projects/{guest.namespace}/compute/console/vnc_lite.html?path=projects"
                                  f"%2F{guest.namespace}%2Fcompute%2Fconsole%2Fwebsockify%3Ftoken%3D")
            async with session.get(url) as resp:
                assert resp.status == 200 and resp.content_type == "text/html"
                assert resp.headers["Cache-Control"] == "no-store"
                page = await resp.text()
            assert f'data-path="{parse_qs(urlsplit(url).query)["path"][0]}"' in page
            assert "does not ship noVNC" in page
            async with session.ws_connect(websockify(url), protocols=("binary",)) as ws:
                assert ws.protocol == "binary"
                assert await receive(ws) == b"RFB 003.008\n"
                await ws.send_bytes(b"RFB 003.008\n")
                assert await receive(ws) == b"\x01\x01"  # one security type: None
                await ws.send_bytes(b"\x01")
                assert await receive(ws) == b"\x00\x00\x00\x00"  # security result: OK
                await ws.send_bytes(b"\x01")  # ClientInit, shared
                init = await receive(ws)
                width, height = struct.unpack(">HH", init[:4])
                (length,) = struct.unpack(">I", init[20:24])
                assert (width, height) == (720, 400)
                assert init[24:24 + length].decode() == f"QEMU ({guest.namespace}_{guest.vm})"
    asyncio.run(run())


def test_expired_foreign_and_misused_console_urls_are_refused(cloud: LocalCloud, guest: Guest) -> None:
    # A VMI that does not run: its VM names a network that does not exist, so it stays Pending.
    kubectl = Kubectl(cloud, guest.namespace)
    kubectl.apply(multus_vm("pending", "ghost"))
    wait_for(lambda: kubectl.status("vmi", "pending").get("phase") == "Pending", 15, "a Pending VMI")
    other = f"{guest.namespace}-b"
    cloud.kubectl("create", "namespace", other)
    try:
        stranger = tenant_token(cloud, other)  # a member of another project
        wait_for(lambda: may_open_console(cloud, other, stranger), 30, "the stranger's own rights")

        async def run() -> None:
            async with aiohttp.ClientSession() as session:
                async with serving(cloud, ttl=0) as (base, proxy):
                    status, body = await refusal(session, issue(proxy, base, guest, SERIAL))
                    assert status == 401 and body["code"] == 401 and "expired" in body["message"]
                    async with session.get(issue(proxy, base, guest, VNC)) as resp:  # the page too
                        assert resp.status == 401 and "expired" in (await resp.json())["message"]
                async with serving(cloud) as (base, proxy):
                    url = issue(proxy, base, guest, SERIAL)
                    # The project in the URL is not the ticket's.
                    status, body = await refusal(session, url.replace(f"/projects/{guest.namespace}/",
                                                                      f"/projects/{other}/"))
                    assert status == 403 and "another project" in body["message"]
                    # A serial console's ticket does not open the VNC display.
                    status, body = await refusal(session, url.replace("/serial?", "/websockify?"))
                    assert status == 403 and "opens a serial console, not a vnc console" in body["message"]
                    # Sealed by another kova api (or this one before a restart).
                    async with serving(cloud) as (_, elsewhere):
                        foreign = issue(elsewhere, base, guest, SERIAL)
                    status, body = await refusal(session, foreign)
                    assert status == 401 and "not valid" in body["message"]
                    status, body = await refusal(session, url.split("?")[0] + "?token=" + "A" * 120)
                    assert status == 401 and "not valid" in body["message"]
                    # Another project's member: kube-apiserver's RBAC says no, and the proxy says so.
                    status, body = await refusal(session, issue(proxy, base, guest, SERIAL, token=stranger))
                    assert (status, body["code"]) == (403, 403)
                    assert body["message"].startswith("kube-apiserver refused the console: ")
                    assert f'User "system:serviceaccount:{other}:os-edit" cannot get resource ' \
                           f'"virtualmachineinstances/console" in API group "subresources.kubevirt.io" in the ' \
                           f'namespace "{guest.namespace}"' in body["message"]
                    # A token kube-apiserver does not take at all.
                    status, body = await refusal(session, websockify(issue(proxy, base, guest, VNC, token="bad")))
                    assert status == 401 and "did not accept the Kubernetes token" in body["message"]
                    # A server whose VMI is gone: virt-api's 404, through kube-apiserver.
                    status, body = await refusal(session, issue(proxy, base, guest, SERIAL, vmi="ghost"))
                    assert status == 404 and 'virtualmachineinstance.kubevirt.io "ghost" not found' in body["message"]
                    # Nor one that does not run (virt-api's 400, which the proxy calls a conflict, as Nova would).
                    status, body = await refusal(session, websockify(issue(proxy, base, guest, VNC, vmi="pending")))
                    assert (status, body["message"]) == (409, "The server's console is not available: VMI is not "
                                                              "running")
                    # A plain GET is no console.
                    async with session.get(url.replace("ws://", "http://", 1)) as resp:
                        assert resp.status == 400 and "websocket" in (await resp.json())["message"]
        asyncio.run(run())
    finally:
        cloud.kubectl("delete", "namespace", other, "--wait=false", check=False)
