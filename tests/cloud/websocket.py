"""RFC 6455 for the simulator's virt-api: the server's half of the opening handshake, as gorilla/websocket
(virt-api's library) checks it, and the framing, on the blocking files of an http.server handler.

Enough for a console and no more: no extensions (permessage-deflate is never offered back), messages up to
MAX_MESSAGE bytes, fragmented messages reassembled, pings answered, a client's unmasked frame or broken
framing closed with 1002 and invalid UTF-8 in a text message with 1007, as the RFC says.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import BinaryIO

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"  # RFC 6455 §1.3
CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
NORMAL, GOING_AWAY, PROTOCOL_ERROR, INVALID_DATA, TOO_BIG = 1000, 1001, 1002, 1007, 1009
MAX_MESSAGE = 1 << 20


def tokens(headers: Mapping[str, str], name: str) -> list[str]:
    return [t.strip().lower() for t in (headers.get(name) or "").split(",") if t.strip()]


def handshake_error(method: str, headers: Mapping[str, str]) -> str | None:
    """Why this request is not a websocket opening handshake, in gorilla's words (it answers 400), or None."""
    prefix = "websocket: the client is not using the websocket protocol: "
    if "upgrade" not in tokens(headers, "Connection"):
        return prefix + "'upgrade' token not found in 'Connection' header"
    if "websocket" not in tokens(headers, "Upgrade"):
        return prefix + "'websocket' token not found in 'Upgrade' header"
    if method != "GET":
        return prefix + "request method is not GET"
    if "13" not in tokens(headers, "Sec-Websocket-Version"):
        return "websocket: unsupported version: 13 not found in 'Sec-Websocket-Version' header"
    try:
        key = base64.b64decode(headers.get("Sec-WebSocket-Key") or "", validate=True)
    except binascii.Error:
        key = b""
    if len(key) != 16:
        return "websocket: not a websocket handshake: 'Sec-WebSocket-Key' header must be Base64 encoded value of " \
               "16-byte length"
    return None


def accept(key: str) -> str:
    """Sec-WebSocket-Accept for the client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1(key.strip().encode() + GUID).digest()).decode()


def subprotocol(headers: Mapping[str, str], supported: Iterable[str]) -> str | None:
    """gorilla's choice: the first of the server's subprotocols that the client offers."""
    offered = [t.strip() for t in (headers.get("Sec-WebSocket-Protocol") or "").split(",")]
    return next((p for p in supported if p in offered), None)


def encode(opcode: int, payload: bytes = b"", mask: bytes | None = None, fin: bool = True) -> bytes:
    """One frame; a client masks (4 bytes of `mask`), a server does not."""
    head = bytes([(0x80 if fin else 0) | opcode])
    size = len(payload)
    bit = 0x80 if mask is not None else 0
    if size < 126:
        head += bytes([bit | size])
    elif size < 1 << 16:
        head += bytes([bit | 126]) + struct.pack(">H", size)
    else:
        head += bytes([bit | 127]) + struct.pack(">Q", size)
    if mask is None:
        return head + payload
    return head + mask + unmask(payload, mask)


def unmask(payload: bytes, mask: bytes) -> bytes:
    repeated = (mask * (len(payload) // 4 + 1))[:len(payload)]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(repeated, "big")).to_bytes(len(payload), "big")


def close_payload(code: int, reason: str = "") -> bytes:
    return struct.pack(">H", code) + reason.encode()[:123]


@dataclass(frozen=True)
class Frame:
    fin: bool
    opcode: int
    payload: bytes


class ProtocolError(Exception):
    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code


def read_exactly(rfile: BinaryIO, size: int) -> bytes:
    data = rfile.read(size) if size else b""
    if len(data) != size:
        raise EOFError
    return data


def read_frame(rfile: BinaryIO, masked: bool = True) -> Frame:
    """The next frame from the peer (a client's frames are masked: RFC 6455 §5.1); EOFError when it hung up."""
    first, second = read_exactly(rfile, 2)
    if first & 0x70:
        raise ProtocolError(PROTOCOL_ERROR, "reserved bits set without an extension")
    opcode, size = first & 0x0F, second & 0x7F
    if bool(second & 0x80) != masked:
        raise ProtocolError(PROTOCOL_ERROR, "a client's frames must be masked" if masked else "masked frame")
    if opcode >= CLOSE and (size > 125 or not first & 0x80):
        raise ProtocolError(PROTOCOL_ERROR, "a control frame must be whole and at most 125 bytes")
    if size == 126:
        size = struct.unpack(">H", read_exactly(rfile, 2))[0]
    elif size == 127:
        size = struct.unpack(">Q", read_exactly(rfile, 8))[0]
    if size > MAX_MESSAGE:
        raise ProtocolError(TOO_BIG, "frame too big")
    mask = read_exactly(rfile, 4) if masked else None
    payload = read_exactly(rfile, size)
    return Frame(bool(first & 0x80), opcode, unmask(payload, mask) if mask else payload)


class Connection:
    """The server's end of an open websocket: whole messages in, frames out, the closing handshake."""

    def __init__(self, rfile: BinaryIO, wfile: BinaryIO) -> None:
        self.rfile, self.wfile = rfile, wfile
        self.closed = False
        self.close_code: int | None = None

    def send(self, data: bytes, opcode: int = BINARY) -> None:
        self.wfile.write(encode(opcode, data))
        self.wfile.flush()

    def close(self, code: int = NORMAL, reason: str = "", answering: bool = False) -> None:
        """Send a close frame; when this end starts the closing handshake, wait for the peer's close frame
        (or its hang-up) before the caller drops the TCP connection, as RFC 6455 §7.1.1 asks of a server."""
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(OSError, EOFError, ProtocolError):  # the peer may be gone, or be done anyway
            self.send(close_payload(code, reason), CLOSE)
            while not answering and code != PROTOCOL_ERROR:
                frame = read_frame(self.rfile)
                if frame.opcode == CLOSE:
                    self.close_code = struct.unpack(">H", frame.payload[:2])[0] if len(frame.payload) >= 2 else None
                    break

    def receive(self) -> tuple[int, bytes] | None:
        """The next data message (TEXT or BINARY, and its bytes), answering pings on the way; None once the
        connection is closed (by the peer's close frame, which is answered, its hang-up or a protocol error)."""
        opcode, parts, size = None, [], 0
        while not self.closed:
            try:
                frame = read_frame(self.rfile)
            except EOFError:
                self.closed = True
                return None
            except ProtocolError as e:
                self.close(e.code, str(e))
                return None
            if frame.opcode == PING:
                self.send(frame.payload, PONG)
            elif frame.opcode == PONG:
                continue
            elif frame.opcode == CLOSE:
                self.close_code = struct.unpack(">H", frame.payload[:2])[0] if len(frame.payload) >= 2 else None
                self.close(self.close_code or NORMAL, answering=True)  # the closing handshake: echo the code
                return None
            elif frame.opcode in (TEXT, BINARY, CONTINUATION):
                if (frame.opcode == CONTINUATION) != (opcode is not None):
                    self.close(PROTOCOL_ERROR, "unexpected continuation" if opcode is None else "expected continuation")
                    return None
                opcode = frame.opcode if opcode is None else opcode
                parts.append(frame.payload)
                size += len(frame.payload)
                if size > MAX_MESSAGE:
                    self.close(TOO_BIG, "message too big")
                    return None
                if frame.fin:
                    data = b"".join(parts)
                    if opcode == TEXT:
                        try:
                            data.decode()
                        except UnicodeDecodeError:
                            self.close(INVALID_DATA, "text message is not UTF-8")
                            return None
                    return opcode, data
            else:
                self.close(PROTOCOL_ERROR, f"unknown opcode {frame.opcode}")
                return None
        return None
