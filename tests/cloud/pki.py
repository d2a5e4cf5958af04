"""Certificates for the local cloud: CAs, serving and client certificates, all short-lived and in PEM."""

from __future__ import annotations

import datetime as dt
import ipaddress
import logging
import socket
import ssl
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

LOOPBACK = "127.0.0.1"
Issuer = tuple[x509.Name, rsa.RSAPrivateKey]


def pem_cert(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def pem_key(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def issue(subject: x509.Name, key: rsa.RSAPrivateKey, issuer: Issuer | None, *, ca: bool = False,
          server: bool = False, dns: tuple[str, ...] = ()) -> x509.Certificate:
    """A certificate for `key`, self-signed when `issuer` is None. A server certificate names localhost and
    127.0.0.1, and `dns` besides (the in-cluster name a client checks, such as virt-api.kubevirt.svc)."""
    now = dt.datetime.now(dt.UTC)
    issuer_name, issuer_key = issuer or (subject, key)
    builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name)
               .public_key(key.public_key()).serial_number(x509.random_serial_number())
               .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=2))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if server:
        names: list[x509.GeneralName] = [x509.DNSName(n) for n in ("localhost", *dns)]
        names.append(x509.IPAddress(ipaddress.ip_address(LOOPBACK)))
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def name(cn: str, org: str | None = None) -> x509.Name:
    attrs = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attrs.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    return x509.Name(attrs)


def new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def new_ca(cn: str) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = new_key()
    return issue(name(cn), key, None, ca=True), key


def leaf(cn: str, ca: tuple[x509.Certificate, rsa.RSAPrivateKey], *, org: str | None = None,
         server: bool = False, dns: tuple[str, ...] = ()) -> tuple[x509.Certificate, rsa.RSAPrivateKey]:
    key = new_key()
    return issue(name(cn, org), key, (ca[0].subject, ca[1]), server=server, dns=dns), key


class TLSServer(ThreadingHTTPServer):
    """An HTTPS server on 127.0.0.1: the TLS handshake runs in the request's thread, not the accept loop."""

    daemon_threads = True

    def __init__(self, port: int, handler: type[BaseHTTPRequestHandler], context: ssl.SSLContext,
                 host: str = LOOPBACK) -> None:
        super().__init__((host, port), handler)
        self.context = context

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        return self.context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False), addr

    def serve_in_thread(self, name: str) -> threading.Thread:
        thread = threading.Thread(target=self.serve_forever, daemon=True, name=name)
        thread.start()
        return thread


class TLSHandler(BaseHTTPRequestHandler):
    """A request handler for a TLSServer: the handshake, in the request's thread; a failed one is logged to
    `tls_log` (the server's own logger) and ends the connection."""

    protocol_version = "HTTP/1.1"
    tls_log: logging.Logger | None = None

    def handle(self) -> None:
        try:
            self.request.do_handshake()
        except OSError as e:  # ssl.SSLError is one
            if self.tls_log is not None:
                self.tls_log.warning("%s: TLS handshake failed: %s", self.client_address[0], e)
            return
        super().handle()


def server_context(cert: x509.Certificate, key: rsa.RSAPrivateKey, directory: Path, stem: str) -> ssl.SSLContext:
    """A TLS server context for `cert` (written to `directory` as <stem>.crt/.key, which ssl loads from files)."""
    directory.mkdir(parents=True, exist_ok=True)
    (directory / f"{stem}.crt").write_bytes(pem_cert(cert))
    key_file = directory / f"{stem}.key"
    key_file.write_bytes(pem_key(key))
    key_file.chmod(0o600)
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(directory / f"{stem}.crt", key_file)
    ctx.set_alpn_protocols(["http/1.1"])
    return ctx
