"""Nova's remote consoles (`POST /servers/{id}/remote-consoles`, microversion 2.6 and later) as tickets that
`kova api` itself redeems: pure functions, no HTTP and no Kubernetes (kova.openstack.compute.console_proxy
carries them out).

A console URL carries a ticket sealed with a key only `kova api` holds (Fernet: AES-128-CBC and HMAC-SHA256):
the namespace, the VMI, the server's uid, the console's kind, the caller's own Kubernetes token and an expiry.
The proxy that redeems it opens KubeVirt's console subresource through kube-apiserver with that token, so
Kubernetes RBAC decides (`get` on `virtualmachineinstances/console` or `/vnc` in `subresources.kubevirt.io`),
as it does for every other read and write of the facade; the URL does not reveal the token. As Nova's console
tokens (`[consoleauth] token_ttl`, 600 s), a ticket is good for connecting until it expires, as often as
wanted; a connection made before then stays open.
"""

from __future__ import annotations

import binascii
import datetime as dt
import html
import json
from dataclasses import dataclass, field
from typing import Any, Literal
from urllib.parse import parse_qs, urlencode, urlsplit

from cryptography.fernet import Fernet, InvalidToken

from kova.api.errors import StatusError
from kova.api.resources import SUBRESOURCES

Kind = Literal["serial", "vnc"]
DEFAULT_TTL = 600.0  # seconds: Nova's [consoleauth] token_ttl
TTL_SETTING = "KOVA_CONSOLE_TTL"  # read where kova api starts, not here
# What kova api accepts from a console client: websockify's (noVNC's) and KubeVirt's (virtctl's) names for
# a stream of binary frames.
CLIENT_SUBPROTOCOLS = ("binary", "plain.kubevirt.io")
UPSTREAM_SUBPROTOCOLS = ("plain.kubevirt.io",)  # what virt-api speaks

# The request body's JSON schema as Nova has it (nova/api/openstack/compute/schemas/remote_consoles.py):
# the enums grow with the microversion.
_PROTOCOLS = {(2, 6): ("vnc", "spice", "serial", "rdp"), (2, 8): ("mks",)}
_TYPES = {(2, 6): ("novnc", "xvpvnc", "spice-html5", "serial", "rdp-html5"), (2, 8): ("webmks",),
          (2, 99): ("spice-direct",)}
# What Kova serves: protocol → its one type, and the console that carries it.
SERVED: dict[str, tuple[str, Kind]] = {"vnc": ("novnc", "vnc"), "serial": ("serial", "serial")}


class ConsoleError(StatusError):
    """Nova's or the console proxy's answer instead of a console: 400 for a request Nova refuses, 401 and 403
    for a ticket that does not open this console, 404/409/502 for what kube-apiserver said of it."""


@dataclass(frozen=True)
class Ticket:
    namespace: str
    vmi: str
    server_uid: str
    kind: Kind
    token: str = field(repr=False)  # the caller's Kubernetes token: never in a log line
    expires: float  # Unix time

    @property
    def subresource(self) -> str:
        """KubeVirt's websocket for this console, a path on kube-apiserver (served by virt-api)."""
        return (f"{SUBRESOURCES}/namespaces/{self.namespace}/virtualmachineinstances/{self.vmi}/"
                f"{'console' if self.kind == 'serial' else 'vnc'}")


@dataclass(frozen=True)
class Request:
    protocol: str
    type: str
    kind: Kind


def new_key() -> bytes:
    """A sealing key, made when kova api starts: tickets of an earlier process no longer open anything."""
    return Fernet.generate_key()


def issue(key: bytes, ticket: Ticket) -> str:
    """The ticket sealed (encrypted and authenticated) as URL-safe text. Fernet's base64 padding is dropped,
    so the text needs no escaping in a query string."""
    data = json.dumps({"ns": ticket.namespace, "vmi": ticket.vmi, "uid": ticket.server_uid, "kind": ticket.kind,
                       "tok": ticket.token, "exp": ticket.expires}, separators=(",", ":")).encode()
    return Fernet(key).encrypt(data).decode().rstrip("=")


def redeem(key: bytes, text: str, now: float, *, project: str | None = None, kind: Kind | None = None,
           server_uid: str | None = None) -> Ticket:
    """The ticket in `text`, if it opens a console now: 401 when it is missing, forged, altered or sealed by
    another key (another kova api, or this one before a restart), or expired; 403 when it was issued for
    another project, another kind of console or another server than the one asking."""
    if not text:
        raise ConsoleError(401, "A console token is required (?token=...): ask for a console URL with "
                                "POST /servers/{server_id}/remote-consoles.")
    try:
        fields = json.loads(Fernet(key).decrypt(text.strip() + "=" * (-len(text.strip()) % 4)))
        ticket = Ticket(namespace=str(fields["ns"]), vmi=str(fields["vmi"]), server_uid=str(fields["uid"]),
                        kind=_kind(fields["kind"]), token=str(fields["tok"]), expires=float(fields["exp"]))
    except (InvalidToken, binascii.Error, ValueError, TypeError, KeyError):
        raise ConsoleError(401, "The console token is not valid: it was not issued by this kova api (or was "
                                "issued before it restarted), or it was altered. Ask for a new console URL.") from None
    if now >= ticket.expires:
        raise ConsoleError(401, f"The console token expired at {_time(ticket.expires)}: a console URL is good for "
                                f"connecting for a limited time only. Ask for a new console URL.")
    if project is not None and project != ticket.namespace:
        raise ConsoleError(403, f"The console token was issued for a server of another project, not {project}.")
    if kind is not None and kind != ticket.kind:
        raise ConsoleError(403, f"The console token opens a {ticket.kind} console, not a {kind} console.")
    if server_uid is not None and server_uid != ticket.server_uid:
        raise ConsoleError(403, f"The console token was issued for another server, not {server_uid}.")
    return ticket


def _kind(value: Any) -> Kind:
    if value == "serial":
        return "serial"
    if value == "vnc":
        return "vnc"
    raise ValueError(value)


def _time(t: float) -> str:
    return dt.datetime.fromtimestamp(t, dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# ------------------------------------------------------------------------------------------------- request
def _enum(table: dict[tuple[int, int], tuple[str, ...]], microversion: tuple[int, int]) -> list[str]:
    return [v for since, values in sorted(table.items()) if microversion >= since for v in values]


def _invalid(path: str, value: Any, message: str) -> ConsoleError:
    # nova.api.validation's wording of a jsonschema error, which names the innermost field.
    return ConsoleError(400, f"Invalid input for field/attribute {path}. Value: {value}. {message}")


def _unexpected(extras: list[str]) -> str:
    return (f"Additional properties are not allowed ({', '.join(repr(e) for e in extras)} "
            f"{'was' if len(extras) == 1 else 'were'} unexpected)")


def parse_request(body: Any, microversion: tuple[int, int] = (2, 6)) -> Request:
    """The console a `POST /servers/{id}/remote-consoles` body asks for, or Nova's 400: first its JSON
    schema's error (the first jsonschema finds, in Nova's words), then, as nova-compute answers,
    "Unavailable console type rdp." (rdp was removed), "Unavailable console type spice-html5." for a protocol
    this cloud does not enable (spice, mks) and "Invalid console type xvpvnc" for a type its protocol does
    not serve (Nova has no xvpvnc any more; Kova's serial console is type serial only)."""
    if not isinstance(body, dict):
        raise ConsoleError(400, f"{body!r} is not of type 'object'")
    protocols, types = _enum(_PROTOCOLS, microversion), _enum(_TYPES, microversion)
    if "remote_console" in body:
        rc = body["remote_console"]
        if not isinstance(rc, dict):
            raise _invalid("remote_console", rc, f"{rc!r} is not of type 'object'")
        for name, allowed in (("protocol", protocols), ("type", types)):
            if name in rc:
                value = rc[name]
                if not isinstance(value, str):
                    raise _invalid(name, value, f"{value!r} is not of type 'string'")
                if value not in allowed:
                    raise _invalid(name, value, f"{value!r} is not one of {allowed!r}")
        for name in ("protocol", "type"):
            if name not in rc:
                raise _invalid("remote_console", rc, f"{name!r} is a required property")
        extras = [k for k in rc if k not in ("protocol", "type")]
        if extras:
            raise _invalid("remote_console", rc, _unexpected(extras))
    else:
        raise ConsoleError(400, "'remote_console' is a required property")
    extras = [k for k in body if k != "remote_console"]
    if extras:
        raise ConsoleError(400, _unexpected(extras))
    protocol, type_ = rc["protocol"], rc["type"]
    if protocol == "rdp":
        raise ConsoleError(400, f"Unavailable console type {protocol}.")
    served = SERVED.get(protocol)
    if served is None:
        raise ConsoleError(400, f"Unavailable console type {type_}.")
    if type_ != served[0]:
        raise ConsoleError(400, f"Invalid console type {type_}")
    return Request(protocol, type_, served[1])


# ---------------------------------------------------------------------------------------------- documents
def console_path(project: str, name: str) -> str:
    """Where kova api serves a project's consoles: `serial`, `websockify` (VNC) and `vnc_lite.html`."""
    return f"/projects/{project}/compute/console/{name}"


def websocket_base(base: str) -> str:
    """The public base URL with the websocket scheme of its own (ws for http, wss for https)."""
    if base.startswith("https://"):
        return "wss://" + base[len("https://"):]
    if base.startswith("http://"):
        return "ws://" + base[len("http://"):]
    return base


def websockify_path(project: str, token: str) -> str:
    """The VNC websocket as noVNC's `path` parameter names it: relative to the host (noVNC puts a `/` before
    it), with the token in its query."""
    return console_path(project, "websockify")[1:] + "?" + urlencode({"token": token})


def console_url(base: str, kind: Kind, project: str, token: str) -> str:
    """serial: the websocket itself (`ws(s)://.../serial?token=`); vnc: noVNC's page with the websocket in
    its `path` parameter, as Nova's novncproxy_base_url (`.../vnc_lite.html?path=...%3Ftoken%3D...`)."""
    if kind == "serial":
        return websocket_base(base) + console_path(project, "serial") + "?" + urlencode({"token": token})
    return base + console_path(project, "vnc_lite.html") + "?" + urlencode({"path": websockify_path(project, token)})


def console_document(protocol: str, type_: str, url: str) -> dict[str, Any]:
    return {"remote_console": {"protocol": protocol, "type": type_, "url": url}}


def page_token(project: str, path: str) -> str:
    """The token in vnc_lite.html's `path` parameter, which must name this project's VNC websocket."""
    parts = urlsplit(path.lstrip("/"))
    if parts.path != console_path(project, "websockify")[1:]:
        raise ConsoleError(400, f"The path parameter must name this project's VNC websocket, "
                                f"{console_path(project, 'websockify')[1:]}?token=...")
    return (parse_qs(parts.query).get("token") or [""])[0]


def page(path: str, ticket: Ticket) -> str:
    """vnc_lite.html: Kova ships no noVNC, so the page says which websocket a noVNC (or any RFB over
    websocket) client connects to; its script spells the absolute URL out from the page's own."""
    quoted = html.escape(path)
    return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><meta name="referrer" content="no-referrer">
<title>Console of {html.escape(ticket.vmi)}</title></head>
<body>
<h1>VNC console of {html.escape(ticket.vmi)}</h1>
<p>Kova does not ship noVNC's JavaScript. Connect a noVNC client, or any client of RFB over a websocket
(subprotocol <code>binary</code>), to this websocket:</p>
<p><code id="websocket" data-path="{quoted}">/{quoted}</code></p>
<p>The token in it is good for connecting until {_time(ticket.expires)}.</p>
<script>
const el = document.getElementById("websocket");
const url = new URL("/" + el.dataset.path, window.location.href);
url.protocol = url.protocol === "https:" ? "wss:" : "ws:";
el.textContent = url.href;
</script>
</body>
</html>
"""


def upstream_refusal(status: int, body: bytes) -> ConsoleError:
    """What the proxy answers when kube-apiserver (or virt-api behind it) refused the console's websocket:
    its own status where it means the same to the client (401 the token, 403 RBAC, 404 no such VMI), 409 for
    a VMI that is not running, 502 for anything else; with its message."""
    message = _status_message(body) or f"HTTP {status}"
    if status == 401:
        return ConsoleError(401, f"kube-apiserver did not accept the Kubernetes token this console URL was issued "
                                 f"with ({message}). Ask for a new console URL.")
    if status == 403:
        return ConsoleError(403, f"kube-apiserver refused the console: {message}")
    if status == 404:
        return ConsoleError(404, f"The server has no virtual machine instance to connect to: {message}")
    if status in (400, 409):
        return ConsoleError(409, f"The server's console is not available: {message}")
    return ConsoleError(502, f"kube-apiserver answered {status} to the console's websocket: {message}")


def _status_message(body: bytes) -> str:
    """The message of a metav1.Status, also when it follows gorilla/websocket's plain "Bad Request" line."""
    text = body.decode("utf-8", "replace").strip()
    for candidate in (text, text.partition("\n")[2]):
        try:
            status = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(status, dict) and isinstance(status.get("message"), str):
            return str(status["message"])
    return text[:500]
