"""An HTTPS server on 127.0.0.1 for tests that send real TLS traffic, and certificates for it.

``serve_https`` responds to ``GET /healthz`` with ``ok``. Given a client CA
it requires a client certificate signed by that CA, and given a common name
it returns 403 for any other client certificate subject CN, the way
kube-apiserver maps a certificate's CN to a user name. Failed handshakes are recorded on the
server, so a test can tell a rejected handshake from a refused connection.
"""

from __future__ import annotations

import ipaddress
import socket
import ssl
import threading
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Iterator
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

HANDSHAKE_TIMEOUT = 5.0
"""Seconds a client may take to finish the TLS handshake and send its request."""


class _HealthzHandler(BaseHTTPRequestHandler):
    server: "HTTPSServer"

    def do_GET(self) -> None:
        # kubectl appends ?timeout=... when --request-timeout is set.
        path = urlsplit(self.path).path
        if path != "/healthz":
            self._reply(404, f"not found: {path}")
            return

        expected = self.server.required_common_name
        if expected is not None:
            common_name = _peer_common_name(self.connection)
            if common_name != expected:
                self._reply(403, f"forbidden: user {common_name!r} is not {expected!r}")
                return

        self.server.served.append(path)
        self._reply(200, "ok")

    def _reply(self, status: int, body: str) -> None:
        data = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", "text/plain; charset=utf-8")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: object) -> None:  # noqa: A002 - the base class names it so
        pass


def _peer_common_name(connection: ssl.SSLSocket) -> str | None:
    certificate = connection.getpeercert()
    if not certificate:
        return None
    for relative_name in certificate.get("subject", ()):
        for attribute, value in relative_name:
            if attribute == "commonName":
                return value
    return None


class HTTPSServer(ThreadingHTTPServer):
    """A threaded HTTPS server on 127.0.0.1 with a port chosen by the kernel."""

    daemon_threads = True

    def __init__(self, context: ssl.SSLContext, required_common_name: str | None) -> None:
        super().__init__(("127.0.0.1", 0), _HealthzHandler)
        self.context = context
        self.required_common_name = required_common_name
        self.handshake_errors: list[OSError] = []
        self.served: list[str] = []

    @property
    def port(self) -> int:
        return self.server_address[1]

    def get_request(self) -> tuple[socket.socket, tuple[str, int]]:
        connection, address = super().get_request()
        connection.settimeout(HANDSHAKE_TIMEOUT)
        # The handshake runs in the request thread, so a slow or failing
        # client cannot block the accept loop.
        wrapped = self.context.wrap_socket(connection, server_side=True, do_handshake_on_connect=False)
        return wrapped, address

    def finish_request(self, request, client_address) -> None:
        try:
            request.do_handshake()
        except OSError as error:  # ssl.SSLError is an OSError
            self.handshake_errors.append(error)
            return
        super().finish_request(request, client_address)

    def handle_error(self, request, client_address) -> None:
        # Several tests make clients hang up mid-request, so the resulting errors are not printed.
        pass


@contextmanager
def serve_https(cert_file: Path, key_file: Path, *, client_ca_file: Path | None = None,
                required_common_name: str | None = None) -> Iterator[HTTPSServer]:
    """Run an HTTPS server with ``cert_file`` and ``key_file`` until the block ends.

    With ``client_ca_file`` the handshake fails unless the client presents a
    certificate signed by that CA.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert_file, key_file)
    if client_ca_file is not None:
        context.verify_mode = ssl.CERT_REQUIRED
        context.load_verify_locations(cafile=client_ca_file)

    server = HTTPSServer(context, required_common_name)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=HANDSHAKE_TIMEOUT)


def issue_test_certificate(ca_cert_file: Path, ca_key_file: Path, *, common_name: str,
                           ip_addresses: tuple[str, ...] = ()) -> tuple[bytes, bytes]:
    """Sign a client and server certificate for a new P-256 key; return (cert PEM, key PEM).

    It is valid from an hour ago for one day, by the real clock, because the
    tools that check it (kubectl, curl) use the real clock.
    """
    ca_certificate = x509.load_pem_x509_certificate(ca_cert_file.read_bytes())
    ca_key = serialization.load_pem_private_key(ca_key_file.read_bytes(), password=None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(timezone.utc)

    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_certificate.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(hours=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
            critical=False,
        )
    )
    if ip_addresses:
        names = [x509.IPAddress(ipaddress.ip_address(address)) for address in ip_addresses]
        builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)

    certificate = builder.sign(ca_key, hashes.SHA256())
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return certificate.public_bytes(serialization.Encoding.PEM), key_pem


def write_test_certificate(folder: Path, name: str, ca_cert_file: Path, ca_key_file: Path, *,
                           common_name: str, ip_addresses: tuple[str, ...] = ()) -> tuple[Path, Path]:
    """Issue a certificate with ``issue_test_certificate`` and write ``<name>.pem`` and ``<name>-key.pem``."""
    cert_pem, key_pem = issue_test_certificate(ca_cert_file, ca_key_file, common_name=common_name,
                                               ip_addresses=ip_addresses)
    folder.mkdir(parents=True, exist_ok=True)
    cert_file, key_file = folder / f"{name}.pem", folder / f"{name}-key.pem"
    cert_file.write_bytes(cert_pem)
    key_file.touch(mode=0o600)
    key_file.write_bytes(key_pem)
    return cert_file, key_file
