"""Nova's remote consoles as kova.openstack.compute.consoles decides them: the tickets in console URLs (what
opens a console, what does not, what a URL reveals), Nova's 400s for a request body, the URLs and documents,
and what the proxy says when kube-apiserver refuses."""

from __future__ import annotations

import base64
import json
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.fernet import Fernet

from kova.adapters.env import BadSetting
from kova.adapters.kubeapi import Apiserver
from kova.openstack.compute import consoles
from kova.openstack.compute.console_proxy import ConsoleProxy
from kova.openstack.compute.consoles import ConsoleError, Ticket

NOW = 1_800_000_000.0
K8S_TOKEN = "eyJhbGciOiJSUzI1NiJ9.secret-service-account-token.signature"


def ticket(**changes: Any) -> Ticket:
    fields: dict[str, Any] = {"namespace": "proj", "vmi": "web-1", "server_uid": "6f1c-uid", "kind": "serial",
                              "token": K8S_TOKEN, "expires": NOW + 600}
    return Ticket(**{**fields, **changes})


def refused(status: int, key: bytes, text: str, now: float = NOW, **kw: Any) -> str:
    with pytest.raises(ConsoleError) as e:
        consoles.redeem(key, text, now, **kw)
    assert e.value.status == status
    return e.value.message


# ------------------------------------------------------------------------------------------------- tickets
def test_a_ticket_round_trips_and_hides_the_kubernetes_token() -> None:
    key = consoles.new_key()
    t = ticket()
    text = consoles.issue(key, t)
    assert consoles.redeem(key, text, NOW, project="proj", kind="serial", server_uid="6f1c-uid") == t
    assert consoles.redeem(key, text, NOW + 599.9) == t  # any number of connections until it expires
    # Nothing of the token shows, in the text or any decoding of it that lacks the key; nor in a repr.
    padded = text + "=" * (-len(text) % 4)
    assert "secret" not in text and b"secret" not in base64.urlsafe_b64decode(padded)
    assert K8S_TOKEN not in repr(t)
    # A URL-safe text without padding: it goes into a query string as it is.
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


def test_an_expired_ticket_is_refused() -> None:
    key = consoles.new_key()
    text = consoles.issue(key, ticket(expires=NOW + 600))
    message = refused(401, key, text, now=NOW + 600)
    assert "expired at 2027-01-15T08:10:00Z" in message and "Ask for a new console URL" in message
    refused(401, key, consoles.issue(key, ticket(expires=NOW)))  # a TTL of 0: never good


def test_a_forged_or_altered_ticket_is_refused() -> None:
    key = consoles.new_key()
    text = consoles.issue(key, ticket())
    flipped = text[:40] + ("A" if text[40] != "A" else "B") + text[41:]
    for bad in (flipped, text[:-3], "not-a-ticket", "%%%", text + "AAAA"):
        assert "not valid" in refused(401, key, bad)
    # Sealed with another key: another kova api, or this one before a restart.
    assert "not valid" in refused(401, consoles.new_key(), text)
    # Made by someone who knows the format but not the key.
    forged = Fernet(Fernet.generate_key()).encrypt(json.dumps(
        {"ns": "proj", "vmi": "web-1", "uid": "u", "kind": "serial", "tok": "mine", "exp": NOW + 60}).encode())
    assert "not valid" in refused(401, key, forged.decode())
    # Sealed with the right key but not a ticket (a bug, not an attack): refused all the same.
    odd = Fernet(key).encrypt(b'{"ns": "proj"}').decode()
    assert "not valid" in refused(401, key, odd)
    assert "required" in refused(401, key, "")


def test_a_ticket_opens_only_its_own_project_kind_and_server() -> None:
    key = consoles.new_key()
    text = consoles.issue(key, ticket())
    assert "another project, not other" in refused(403, key, text, project="other")
    assert "opens a serial console, not a vnc console" in refused(403, key, text, kind="vnc")
    assert "another server, not 0000" in refused(403, key, text, server_uid="0000")


# ------------------------------------------------------------------------------------------------- request
@pytest.mark.parametrize(("body", "kind"), [
    ({"remote_console": {"protocol": "serial", "type": "serial"}}, "serial"),
    ({"remote_console": {"protocol": "vnc", "type": "novnc"}}, "vnc"),
])
def test_the_consoles_kova_serves(body: dict[str, Any], kind: str) -> None:
    request = consoles.parse_request(body)
    assert (request.protocol, request.type, request.kind) == (
        body["remote_console"]["protocol"], body["remote_console"]["type"], kind)


@pytest.mark.parametrize(("body", "message"), [
    # The JSON schema, in nova.api.validation's words.
    ([], "[] is not of type 'object'"),
    ({}, "'remote_console' is a required property"),
    ({"remote_console": "vnc"}, "Invalid input for field/attribute remote_console. Value: vnc. 'vnc' is not of "
                                "type 'object'"),
    ({"remote_console": {"protocol": "vnc"}},
     "Invalid input for field/attribute remote_console. Value: {'protocol': 'vnc'}. 'type' is a required property"),
    ({"remote_console": {"protocol": "telnet", "type": "novnc"}},
     "Invalid input for field/attribute protocol. Value: telnet. 'telnet' is not one of ['vnc', 'spice', 'serial', "
     "'rdp']"),
    ({"remote_console": {"protocol": "vnc", "type": 5}},
     "Invalid input for field/attribute type. Value: 5. 5 is not of type 'string'"),
    ({"remote_console": {"protocol": "vnc", "type": "novnc", "port": 1}},
     "Invalid input for field/attribute remote_console. Value: {'protocol': 'vnc', 'type': 'novnc', 'port': 1}. "
     "Additional properties are not allowed ('port' was unexpected)"),
    ({"remote_console": {"protocol": "vnc", "type": "novnc"}, "a": 1, "b": 2},
     "Additional properties are not allowed ('a', 'b' were unexpected)"),
    # mks came with 2.8.
    ({"remote_console": {"protocol": "mks", "type": "webmks"}},
     "Invalid input for field/attribute protocol. Value: mks. 'mks' is not one of ['vnc', 'spice', 'serial', 'rdp']"),
    # Then nova-compute's answers for what this cloud does not serve.
    ({"remote_console": {"protocol": "rdp", "type": "rdp-html5"}}, "Unavailable console type rdp."),
    ({"remote_console": {"protocol": "spice", "type": "spice-html5"}}, "Unavailable console type spice-html5."),
    ({"remote_console": {"protocol": "vnc", "type": "xvpvnc"}}, "Invalid console type xvpvnc"),
    ({"remote_console": {"protocol": "vnc", "type": "serial"}}, "Invalid console type serial"),
    ({"remote_console": {"protocol": "serial", "type": "novnc"}}, "Invalid console type novnc"),
])
def test_nova_refuses_a_console_it_cannot_give(body: Any, message: str) -> None:
    with pytest.raises(ConsoleError) as e:
        consoles.parse_request(body)
    assert (e.value.status, e.value.message) == (400, message)


def test_later_microversions_name_more_protocols_but_this_cloud_serves_none_of_them() -> None:
    with pytest.raises(ConsoleError, match=r"^Unavailable console type webmks\.$"):
        consoles.parse_request({"remote_console": {"protocol": "mks", "type": "webmks"}}, (2, 8))
    with pytest.raises(ConsoleError, match="'spice-direct' is not one of"):
        consoles.parse_request({"remote_console": {"protocol": "spice", "type": "spice-direct"}}, (2, 98))
    with pytest.raises(ConsoleError, match=r"^Unavailable console type spice-direct\.$"):
        consoles.parse_request({"remote_console": {"protocol": "spice", "type": "spice-direct"}}, (2, 99))


# -------------------------------------------------------------------------------------------- documents
def test_a_serial_console_is_a_websocket_url_and_vnc_is_novncs_page() -> None:
    serial = consoles.console_url("https://cloud.example:8443", "serial", "proj", "TOKEN-1")
    assert serial == "wss://cloud.example:8443/projects/proj/compute/console/serial?token=TOKEN-1"
    assert consoles.console_url("http://127.0.0.1:8780", "serial", "p", "t").startswith("ws://127.0.0.1:8780/")
    vnc = consoles.console_url("https://cloud.example", "vnc", "proj", "TOKEN-1")
    assert vnc == ("https://cloud.example/projects/proj/compute/console/vnc_lite.html"
                   "?path=projects%2Fproj%2Fcompute%2Fconsole%2Fwebsockify%3Ftoken%3DTOKEN-1")
    # As noVNC reads it: `path` is the websocket's, relative to the host; the page's checker agrees.
    path = parse_qs(urlsplit(vnc).query)["path"][0]
    assert path == "projects/proj/compute/console/websockify?token=TOKEN-1"
    assert consoles.page_token("proj", path) == "TOKEN-1"
    with pytest.raises(ConsoleError, match="this project's VNC websocket"):
        consoles.page_token("other", path)
    assert consoles.console_document("vnc", "novnc", vnc) == {
        "remote_console": {"protocol": "vnc", "type": "novnc", "url": vnc}}


def test_the_page_names_the_websocket_and_escapes_what_it_shows() -> None:
    text = consoles.page("projects/p/compute/console/websockify?token=T&x=\"<b>", ticket(vmi="a<b>", kind="vnc"))
    assert "<b>" not in text and "&lt;b&gt;" in text and "&quot;" in text
    assert "does not ship noVNC" in text and "subprotocol <code>binary</code>" in text
    assert "until 2027-01-15T08:10:00Z" in text


def test_a_ticket_names_kubevirts_subresource() -> None:
    assert ticket().subresource == \
        "/apis/subresources.kubevirt.io/v1/namespaces/proj/virtualmachineinstances/web-1/console"
    assert ticket(kind="vnc").subresource.endswith("/virtualmachineinstances/web-1/vnc")


@pytest.mark.parametrize(("status", "body", "answer", "says"), [
    (403, b'{"kind":"Status","message":"virtualmachineinstances.subresources.kubevirt.io \\"web-1\\" is forbidden"}',
     403, 'kube-apiserver refused the console: virtualmachineinstances.subresources.kubevirt.io "web-1" is forbidden'),
    (401, b'{"kind":"Status","message":"Unauthorized"}', 401, "did not accept the Kubernetes token"),
    (404, b'{"message":"virtualmachineinstance.kubevirt.io \\"web-1\\" not found"}', 404, "not found"),
    (400, b'{"message":"VMI is not running"}', 409, "The server's console is not available: VMI is not running"),
    # gorilla/websocket's plain line, then virt-api's Status.
    (400, b'Bad Request\n{"message":"websocket: unsupported version"}', 409, "websocket: unsupported version"),
    (503, b"service unavailable", 502, "kube-apiserver answered 503 to the console's websocket: service unavailable"),
])
def test_what_the_proxy_says_when_kube_apiserver_refuses(status: int, body: bytes, answer: int, says: str) -> None:
    error = consoles.upstream_refusal(status, body)
    assert error.status == answer and says in error.message


def test_kova_api_reads_the_ttl_from_kova_console_ttl_and_makes_a_key_of_its_own() -> None:
    apiserver = cast(Apiserver, object())  # not called here
    default, short = ConsoleProxy.from_env(apiserver, {}), ConsoleProxy.from_env(apiserver, {"KOVA_CONSOLE_TTL": "30"})
    assert (default.ttl, short.ttl) == (600.0, 30.0) and default.key != short.key
    with pytest.raises(BadSetting, match="KOVA_CONSOLE_TTL='soon' is not a number"):
        ConsoleProxy.from_env(apiserver, {"KOVA_CONSOLE_TTL": "soon"})
    # The document a compute handler answers with: the URL's ticket expires TTL seconds on.
    doc = short.issue_console("http://127.0.0.1:8780", K8S_TOKEN, "proj", "web-1", "6f1c-uid",
                              {"remote_console": {"protocol": "serial", "type": "serial"}}, now=NOW)
    token = parse_qs(urlsplit(doc["remote_console"]["url"]).query)["token"][0]
    assert consoles.redeem(short.key, token, NOW + 29.9) == ticket(expires=NOW + 30)
    refused(401, short.key, token, now=NOW + 30)
    with pytest.raises(ConsoleError, match=r"^Invalid console type novnc$"):
        short.issue_console("http://h", K8S_TOKEN, "proj", "web-1", "u",
                            {"remote_console": {"protocol": "serial", "type": "novnc"}})
