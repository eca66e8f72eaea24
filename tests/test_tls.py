"""TLS: the real daemon on --listen ssl:PORT:privateKey=KEY:certKey=CERT, with a certificate made by the test."""

from __future__ import annotations

import datetime
import os
import socket
import ssl
import subprocess
import sys

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from daemon import ROOT, Conn, Daemon, free_port


def make_certificate(directory, alt_names: tuple[str, ...] | None = ("localhost", "127.0.0.1")) -> tuple[str, str]:
    """
    A self-signed certificate with CN=localhost and ``alt_names`` (DNS names and IP addresses) as its
    subjectAltName (None: no subjectAltName at all); returns (key path, cert path).
    """
    import ipaddress

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)

    def general_name(text: str) -> x509.GeneralName:
        try:
            return x509.IPAddress(ipaddress.ip_address(text))
        except ValueError:
            return x509.DNSName(text)

    builder = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
    )
    if alt_names is not None:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([general_name(text) for text in alt_names]), critical=False)
    cert = builder.sign(key, hashes.SHA256())
    key_path, cert_path = os.path.join(directory, "key.pem"), os.path.join(directory, "cert.pem")
    with open(key_path, "wb") as handle:
        handle.write(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                       serialization.NoEncryption()))
    os.chmod(key_path, 0o600)
    with open(cert_path, "wb") as handle:
        handle.write(cert.public_bytes(serialization.Encoding.PEM))
    return key_path, cert_path


class TlsConn(Conn):
    """A Conn over TLS that verifies the server against ``cafile``."""

    def __init__(self, port: int, cafile: str, timeout: float = 10.0) -> None:
        context = ssl.create_default_context(cafile=cafile)
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self.sock = context.wrap_socket(raw, server_hostname="localhost")
        self.timeout = timeout
        self.buffer = b""


def test_tls_round_trip(tmp_path):
    """Plain and TLS listeners side by side; TLS users register, chat with a plain user, and certificates verify."""
    key, cert = make_certificate(str(tmp_path))
    tls_port = free_port()
    d = Daemon(str(tmp_path / "data"), "--listen", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    d.start()
    try:
        deadline_conn = None
        for _ in range(100):
            try:
                deadline_conn = TlsConn(tls_port, cert)
                break
            except (ConnectionRefusedError, ssl.SSLError):
                import time

                time.sleep(0.05)
        assert deadline_conn is not None
        secure = deadline_conn
        secure.register("sam")
        secure.send("public")
        secure.expect(r"Entered room public")
        plain = Conn(d.port)
        plain.register("pat")
        plain.send("public")
        plain.expect(r"Entered room public")
        secure.send("over tls")
        plain.expect(r"sam: over tls\r\n")
        plain.send("over tcp")
        secure.expect(r"pat: over tcp\r\n")
        # A client that does not trust the certificate is refused by its own verification.
        other = ssl.create_default_context()
        raw = socket.create_connection(("127.0.0.1", tls_port), timeout=5)
        try:
            other.wrap_socket(raw, server_hostname="localhost")
            raise AssertionError("an untrusted certificate was accepted")
        except ssl.SSLCertVerificationError:
            pass
        finally:
            raw.close()
        # The bundled client: --tls with --cafile, scripted from a pipe.
        client = subprocess.run(
            [sys.executable, "-m", "clients.cli", "--tls", "--cafile", cert, "--host", "localhost",
             "--port", str(tls_port)],
            input="login sam\nsecret1\nquit\n", capture_output=True, text=True, timeout=30, cwd=ROOT,
            env=dict(os.environ, PYTHONPATH=ROOT),
        )
        assert "Logged in as sam." in client.stdout, client.stdout + client.stderr
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()


def test_non_reading_tls_client_is_cut_off(tmp_path):
    """The outbound limit applies under TLS too: it measures the TCP buffer beneath the TLS layer."""
    import time

    key, cert = make_certificate(str(tmp_path))
    tls_port = free_port()
    d = Daemon(str(tmp_path / "data"), "--max-outbound", "1048576", "--flood-rate", "0",
               "--listen", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}")
    d.start()
    try:
        stuck = None
        for _ in range(100):
            try:
                stuck = TlsConn(tls_port, cert)
                break
            except (ConnectionRefusedError, ssl.SSLError):
                time.sleep(0.05)
        assert stuck is not None
        stuck.register("stuck")
        stuck.send("public")
        stuck.expect(r"Entered room public")
        talker = Conn(d.port)
        talker.register("talker")
        talker.send("public")
        talker.expect(r"Entered room public")
        line = "y" * 1500
        deadline = time.monotonic() + 30
        while "send queue exceeded" not in d.log() and time.monotonic() < deadline:
            talker.send(b"".join(f"{line}\r\n".encode() for _ in range(100)))
            talker.drain(0.01)
        assert "send queue exceeded" in d.log()
    finally:
        d.stop()
