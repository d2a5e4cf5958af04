"""A loopback HTTP server that serves image bytes the way tests need: plain, slow, or lying."""

from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Route:
    data: bytes
    claimed_length: int | None = None  # a Content-Length other than len(data): the connection is cut short
    seconds_per_mib: float = 0.0  # throttle, to catch an import in the middle
    unavailable_first: int = 0  # answer 503 to this many requests first (a passing failure)
    endless: bool = False  # chunked transfer that repeats `data` until the client hangs up
    repeat: bool = False  # with claimed_length: send `data` again and again (a huge or a trickling source)
    pause: float = 0.0  # with repeat: seconds between two sends of `data`
    hung_up: bool = False  # the client closed the connection before the body ended
    sent: int = 0  # bytes written to clients
    hits: int = 0


class Source:
    def __init__(self) -> None:
        self.routes: dict[str, Route] = {}
        source = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                route = source.routes.get(self.path)
                if route is None:
                    self.send_error(404, "no such image")
                    return
                route.hits += 1
                if route.hits <= route.unavailable_first:
                    self.send_error(503, "try again later")
                    return
                self.send_response(200)
                self.send_header("Content-Type", "application/octet-stream")
                if route.endless:
                    self.send_header("Transfer-Encoding", "chunked")
                    self.end_headers()
                    try:
                        while True:
                            self.wfile.write(b"%x\r\n%s\r\n" % (len(route.data), route.data))
                            route.sent += len(route.data)
                    except (BrokenPipeError, ConnectionResetError):
                        self.close_connection = True
                        return
                self.send_header("Content-Length", str(route.claimed_length or len(route.data)))
                if route.claimed_length:
                    self.send_header("Connection", "close")
                self.end_headers()
                if route.repeat:
                    try:
                        while True:
                            self.wfile.write(route.data)
                            self.wfile.flush()
                            route.sent += len(route.data)
                            if route.pause:
                                time.sleep(route.pause)
                    except OSError:
                        route.hung_up = self.close_connection = True
                        return
                step = 256 * 1024
                try:
                    for i in range(0, len(route.data), step):
                        self.wfile.write(route.data[i:i + step])
                        route.sent += len(route.data[i:i + step])
                        if route.seconds_per_mib:
                            time.sleep(route.seconds_per_mib / 4)
                except (BrokenPipeError, ConnectionResetError):
                    return
                if route.claimed_length:
                    self.close_connection = True

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def netloc(self) -> str:
        return f"127.0.0.1:{self.server.server_address[1]}"

    @property
    def base(self) -> str:
        return f"http://{self.netloc}"

    def add(self, path: str, data: bytes, **kw: float | int | bool | None) -> str:
        self.routes[path] = Route(data, **kw)  # type: ignore[arg-type]
        return self.base + path

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Listener:
    """An HTTP server on a loopback address that counts the TCP connections it accepts."""

    def __init__(self, address: str = "127.0.0.1", redirect_to: str | None = None, body: bytes = b"disk",
                 headers: dict[str, str] | None = None) -> None:
        self.connections = 0
        self.hosts: list[str] = []
        self.accept_encodings: list[str | None] = []
        listener = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:
                listener.hosts.append(self.headers.get("Host", ""))
                listener.accept_encodings.append(self.headers.get("Accept-Encoding"))
                if redirect_to:
                    self.send_response(302)
                    self.send_header("Location", redirect_to)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Length", str(len(body)))
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        class Server(ThreadingHTTPServer):
            def get_request(self) -> tuple[socket.socket, object]:
                listener.connections += 1
                return super().get_request()

        self.server = Server((address, 0), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def port(self) -> int:
        return int(self.server.server_address[1])

    def url(self, path: str = "/disk") -> str:
        return f"http://{self.server.server_address[0]}:{self.port}{path}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
