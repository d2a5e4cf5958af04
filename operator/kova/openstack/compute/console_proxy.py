"""The remote consoles' other half: kova api serves the URLs that kova.openstack.compute.consoles issues, and
proxies each to KubeVirt's console subresource through kube-apiserver with the caller's own token (sealed in
the ticket), frame by frame, until either side closes.

    GET /projects/{project}/compute/console/serial?token=         a websocket: the serial console
    GET /projects/{project}/compute/console/websockify?token=     a websocket: VNC (RFB), for noVNC
    GET /projects/{project}/compute/console/vnc_lite.html?path=   a page naming that websocket

Refusals are JSON, `{"message": ..., "code": ...}`, with the status of consoles.redeem or
consoles.upstream_refusal; they come before the websocket upgrade, so a client sees them as HTTP answers.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import logging
import time
from collections.abc import Mapping
from typing import Any

import aiohttp
from aiohttp import web

from kova.adapters import env
from kova.adapters.kubeapi import Apiserver
from kova.openstack.compute import consoles
from kova.openstack.compute.consoles import ConsoleError, Kind, Ticket

log = logging.getLogger("kova.api")

# The body of a refused websocket handshake, for the task that asked: aiohttp's ws_connect raises without
# reading it, and kube-apiserver's (or virt-api's) Status in it is what says why.
_refusal: contextvars.ContextVar[list[bytes]] = contextvars.ContextVar("console_refusal")


class _Handshake(aiohttp.ClientResponse):
    async def start(self, connection: Any) -> aiohttp.ClientResponse:
        await super().start(connection)
        if self.status != 101:
            sink = _refusal.get(None)
            if sink is not None:
                sink.append(await self.read())
        return self


def _error(status: int, message: str) -> web.Response:
    return web.json_response({"message": message, "code": status}, status=status,
                             headers={"Cache-Control": "no-store"})


class ConsoleProxy:
    def __init__(self, apiserver: Apiserver, key: bytes, ttl: float) -> None:
        self.apiserver, self.key, self.ttl = apiserver, key, ttl

    @classmethod
    def from_env(cls, apiserver: Apiserver, environ: Mapping[str, str] | None = None) -> ConsoleProxy:
        """The proxy kova api starts with: a new sealing key, and KOVA_CONSOLE_TTL (seconds a console URL is
        good for connecting; Nova's token_ttl, 600 by default)."""
        return cls(apiserver, consoles.new_key(), env.number(consoles.TTL_SETTING, consoles.DEFAULT_TTL, env=environ))

    # ------------------------------------------------------------------------------------------- issuing
    def issue_console(self, base: str, token: str, namespace: str, vmi: str, server_uid: str, body: Any,
                      microversion: tuple[int, int] = (2, 6), now: float | None = None) -> dict[str, Any]:
        """Nova's answer to `POST /servers/{server_id}/remote-consoles`: the console the body asks for, for the
        VMI behind the server, as a URL under `base` (the public URL clients reach kova api at) holding a
        ticket with the caller's Kubernetes `token`. Raises ConsoleError(400) with Nova's message for a body
        Nova refuses. The caller has found the server and checked that it may have a console (ACTIVE)."""
        request = consoles.parse_request(body, microversion)
        now = time.time() if now is None else now
        ticket = Ticket(namespace=namespace, vmi=vmi, server_uid=server_uid, kind=request.kind, token=token,
                        expires=now + self.ttl)
        url = consoles.console_url(base, request.kind, namespace, consoles.issue(self.key, ticket))
        return consoles.console_document(request.protocol, request.type, url)

    # ------------------------------------------------------------------------------------------- serving
    async def serial(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "serial")

    async def websockify(self, request: web.Request) -> web.StreamResponse:
        return await self._proxy(request, "vnc")

    async def page(self, request: web.Request) -> web.StreamResponse:
        project = request.match_info["project"]
        path = request.query.get("path", "")
        try:
            ticket = self._redeem(request, consoles.page_token(project, path), "vnc")
        except ConsoleError as e:
            return _error(e.status, e.message)
        # The page's URL holds the token: no cache keeps it, no Referer carries it elsewhere.
        return web.Response(text=consoles.page(path.lstrip("/"), ticket), content_type="text/html",
                            headers={"Cache-Control": "no-store", "Referrer-Policy": "no-referrer"})

    def _redeem(self, request: web.Request, token: str, kind: Kind) -> Ticket:
        return consoles.redeem(self.key, token, time.time(), project=request.match_info["project"], kind=kind)

    async def _proxy(self, request: web.Request, kind: Kind) -> web.StreamResponse:
        try:
            ticket = self._redeem(request, request.query.get("token", ""), kind)
        except ConsoleError as e:
            return _error(e.status, e.message)
        # Pings every 30 s: a client that vanished without a close frame frees its upstream connection.
        client = web.WebSocketResponse(protocols=consoles.CLIENT_SUBPROTOCOLS, max_msg_size=1 << 20, heartbeat=30.0)
        if not client.can_prepare(request).ok:
            return _error(400, f"This is a websocket: connect to it with a websocket client ({kind} console).")
        cluster = self.apiserver.cluster
        # A session per console: its connection lives as long as the console, and no request timeout of the
        # shared pool may cut it.
        async with aiohttp.ClientSession(response_class=_Handshake, timeout=aiohttp.ClientTimeout(
                total=None, sock_connect=30)) as session:
            sink: list[bytes] = []
            reset = _refusal.set(sink)
            try:
                upstream = await session.ws_connect(
                    cluster.server + ticket.subresource, protocols=consoles.UPSTREAM_SUBPROTOCOLS, ssl=cluster.ssl,
                    headers={"Authorization": f"Bearer {ticket.token}"}, max_msg_size=1 << 20, autoping=True)
            except aiohttp.WSServerHandshakeError as e:
                refusal = consoles.upstream_refusal(e.status, sink[0] if sink else b"")
                log.info("console %s of %s/%s refused: %s", kind, ticket.namespace, ticket.vmi, refusal.message)
                return _error(refusal.status, refusal.message)
            except (aiohttp.ClientError, OSError) as e:
                return _error(502, f"kube-apiserver could not be reached for the console: {e}")
            finally:
                _refusal.reset(reset)
            async with upstream:
                await client.prepare(request)
                log.info("console %s of %s/%s open", kind, ticket.namespace, ticket.vmi)
                await _pipe(client, upstream)
                log.info("console %s of %s/%s closed (client %s, kube-apiserver %s)", kind, ticket.namespace,
                         ticket.vmi, client.close_code, upstream.close_code)
        return client


async def _pipe(client: web.WebSocketResponse, upstream: aiohttp.ClientWebSocketResponse) -> None:
    """Frames both ways until either side closes; then the other is closed too."""
    async def up() -> None:
        async for message in client:
            # KubeVirt's streams read binary messages only (a text one is dropped): the serial port and the
            # display take bytes, so a client's text (a browser terminal's, say) goes up as its UTF-8 bytes.
            if message.type == aiohttp.WSMsgType.BINARY:
                await upstream.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await upstream.send_bytes(message.data.encode())

    async def down() -> None:
        async for message in upstream:
            if message.type == aiohttp.WSMsgType.BINARY:
                await client.send_bytes(message.data)
            elif message.type == aiohttp.WSMsgType.TEXT:
                await client.send_str(message.data)

    tasks = [asyncio.create_task(up()), asyncio.create_task(down())]
    try:
        await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in tasks:
            task.cancel()
        with contextlib.suppress(asyncio.CancelledError, ConnectionError, aiohttp.ClientError):
            await asyncio.gather(*tasks, return_exceptions=True)
        await upstream.close()
        await client.close(code=_sendable(upstream.close_code))


def _sendable(code: int | None) -> int:
    """virt-api's close code for the client, unless it is one that never goes in a close frame (1005, 1006,
    1015: no code, a dropped connection, a TLS failure; RFC 6455 §7.4.1)."""
    if code is None or code in (1004, 1005, 1006, 1015) or not 1000 <= code < 5000:
        return aiohttp.WSCloseCode.OK
    return code


def add_routes(router: web.UrlDispatcher, proxy: ConsoleProxy) -> None:
    prefix = "/projects/{project}/compute/console"
    router.add_get(f"{prefix}/serial", proxy.serial)
    router.add_get(f"{prefix}/websockify", proxy.websockify)
    router.add_get(f"{prefix}/vnc_lite.html", proxy.page)
