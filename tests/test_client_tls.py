"""The bundled client over TLS (real daemon): it refuses a certificate that does not name --host, in one line."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from cryptography import x509

from daemon import ROOT, Daemon, free_port
from test_tls import make_certificate


def _tls_daemon(tmp_path, key: str, cert: str) -> tuple[Daemon, int]:
    tls_port = free_port()
    d = Daemon(str(tmp_path / "data"),
               "--listen", f"ssl:{tls_port}:interface=127.0.0.1:privateKey={key}:certKey={cert}").start()
    return d, tls_port


def _chat(cafile: str | None, host: str, port: int, script: str = "login nobody\nsecret1\nquit\n",
          stdout_file: str | None = None) -> subprocess.CompletedProcess:
    """Run the client with ``script`` piped in; its stdout captured, or written to the regular file ``stdout_file``."""
    trust = ["--cafile", cafile] if cafile else []
    command = [sys.executable, "-m", "clients.cli", "--tls", *trust, "--host", host, "--port", str(port)]
    env = dict(os.environ, PYTHONPATH=ROOT)
    if stdout_file is None:
        return subprocess.run(command, input=script, capture_output=True, text=True, timeout=30, cwd=ROOT, env=env)
    with open(stdout_file, "w") as out:
        done = subprocess.run(command, input=script, stdout=out, stderr=subprocess.PIPE, text=True, timeout=30,
                              cwd=ROOT, env=env)
    with open(stdout_file) as out:
        done.stdout = out.read()
    return done


@pytest.mark.parametrize("alt_names, host, why", [
    (None, "localhost", "Certificate does not contain any `subjectAltName`s."),
    (("chat.example.org",), "localhost", "it names other hosts"),
    (("localhost",), "127.0.0.1", "it names other hosts"),
])
def test_client_refuses_a_certificate_for_another_host(tmp_path, alt_names, host, why):
    """No subjectAltName, or one for other names: one line on stderr, exit status 1, nothing sent or shown."""
    key, cert = make_certificate(str(tmp_path), alt_names)
    d, port = _tls_daemon(tmp_path, key, cert)
    try:
        done = _chat(cert, host, port)
    finally:
        d.stop()
    assert done.returncode == 1, (done.stdout, done.stderr)
    assert done.stderr.splitlines() == [f"chat: the server's certificate is not valid for {host}: {why}"], done.stderr
    assert "menu>" not in done.stdout and "chatd" not in done.stdout, done.stdout
    assert d.unhandled_errors() == [], d.log()


def test_client_refuses_an_untrusted_certificate(tmp_path):
    """A certificate not signed by --cafile (nor the system's CAs): one line that says so, exit status 1."""
    key, cert = make_certificate(str(tmp_path))
    other = tmp_path / "other"
    other.mkdir()
    _, unrelated = make_certificate(str(other))
    d, port = _tls_daemon(tmp_path, key, cert)
    try:
        done = _chat(unrelated, "localhost", port)
        # `printf 'list\n' | chat --tls ... >o.txt` (no --cafile, a self-signed server): o.txt stays empty.
        into_file = _chat(None, "localhost", port, "list\n", stdout_file=str(tmp_path / "o.txt"))
    finally:
        d.stop()
    for run in (done, into_file):
        assert run.returncode == 1, (run.stdout, run.stderr)
        assert run.stderr.splitlines() == [
            "chat: the server's certificate is not trusted (certificate verify failed); use --cafile for a self-signed one"]
        assert run.stdout == ""  # not even an empty line


def _recipe(name: str) -> str:
    """The ```sh block of docs/OPERATIONS.md that follows the paragraph mentioning ``name``."""
    text = open(os.path.join(ROOT, "docs", "OPERATIONS.md"), encoding="utf-8").read()
    match = re.search(re.escape(name) + r".*?```sh\n(.*?)```", text, re.S)
    assert match, f"no sh block after {name!r} in docs/OPERATIONS.md"
    return match.group(1)


def test_docs_tls_recipe_makes_a_certificate_the_client_accepts(tmp_path):
    """The OPERATIONS.md self-signed recipe, run as written, gives a certificate with subjectAltName that works."""
    subprocess.run(["sh", "-e", "-c", _recipe("A self-signed certificate for testing")], cwd=tmp_path,
                   check=True, capture_output=True, timeout=60)
    certificate = x509.load_pem_x509_certificate((tmp_path / "cert.pem").read_bytes())
    names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert "localhost" in names.get_values_for_type(x509.DNSName)
    d, port = _tls_daemon(tmp_path, str(tmp_path / "key.pem"), str(tmp_path / "cert.pem"))
    try:
        for host in ("localhost", "127.0.0.1"):
            done = _chat(str(tmp_path / "cert.pem"), host, port, "register tess\nsecret1\nsecret1\nquit\n"
                         if host == "localhost" else "login tess\nsecret1\nquit\n")
            assert done.returncode == 0, (done.stdout, done.stderr)
            assert re.search(r"(Registered and logged|Logged) in as tess\.", done.stdout), done.stdout
    finally:
        d.stop()
    assert d.unhandled_errors() == [], d.log()


def test_operations_lists_the_exact_tls_refusals():
    """docs/OPERATIONS.md names each line the client prints when it refuses a server's TLS, word for word."""
    from service_identity.exceptions import CertificateError

    from clients.cli import HANDSHAKE_FAILED, NOT_VALID_FOR, OTHER_HOSTS, UNTRUSTED

    text = open(os.path.join(ROOT, "docs", "OPERATIONS.md"), encoding="utf-8").read()
    no_alt_names = "Certificate does not contain any `subjectAltName`s."
    assert str(CertificateError(no_alt_names)) == no_alt_names
    for line in (UNTRUSTED, NOT_VALID_FOR.format(host="HOST", detail=OTHER_HOSTS),
                 NOT_VALID_FOR.format(host="HOST", detail=no_alt_names), HANDSHAKE_FAILED.format(reason="REASON")):
        assert f"`chat: {line}`" in text, line
