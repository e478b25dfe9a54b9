"""labforge/tls.py: the lab CA, its certificates and the checks of an admin's own files, and a real TLS handshake
with a certificate it issued (Python's ssl, OpenSSL underneath): trusted through the lab CA only."""

from __future__ import annotations

import datetime
import socket
import ssl
import threading

import pytest
from cryptography import x509

from labforge import tls

NOW = datetime.datetime(2026, 12, 1, tzinfo=datetime.timezone.utc)


@pytest.fixture
def ca(tmp_path):
    return tls.lab_ca(tmp_path / "lab-ca", now=NOW)


def test_the_lab_ca_is_made_once_with_its_key_private(tmp_path, ca):
    directory = tmp_path / "lab-ca"
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "ca.key").stat().st_mode & 0o777 == 0o600
    again = tls.lab_ca(directory, now=NOW)
    assert again.cert == ca.cert
    (directory / "ca.key").chmod(0o644)
    with pytest.raises(tls.TlsProblem, match="readable by other users"):
        tls.lab_ca(directory)


def test_half_a_lab_ca_is_refused(tmp_path, ca):
    (tmp_path / "lab-ca" / "ca.key").unlink()
    with pytest.raises(tls.TlsProblem, match="holds only one of"):
        tls.lab_ca(tmp_path / "lab-ca")


@pytest.mark.parametrize("name", ["cvat.lab.example", "192.168.10.5"])
def test_issued_certificate_covers_the_name_and_is_kept_until_renewal(ca, name):
    cert_pem, _key_pem = tls.issue(ca, name, now=NOW)
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert tls.covers(cert, name) and not tls.covers(cert, "other.lab")
    assert tls.renewal_reason(cert_pem, ca, name, 30, now=NOW) is None
    assert tls.renewal_reason(cert_pem, ca, name, 30, now=NOW + datetime.timedelta(days=340)) == "25 days left (renewed below 30)"
    assert tls.renewal_reason(cert_pem, ca, "other.lab", 30, now=NOW) == "not valid for other.lab"
    assert tls.renewal_reason(None, ca, name, 30, now=NOW) == "no certificate yet"


def test_a_certificate_of_another_ca_is_replaced(tmp_path, ca):
    other = tls.lab_ca(tmp_path / "other-ca", now=NOW)
    foreign, _ = tls.issue(other, "cvat.lab", now=NOW)
    assert tls.renewal_reason(foreign, ca, "cvat.lab", 30, now=NOW) in ("signed by another CA", "not signed by this lab CA's key")


def test_a_real_handshake_trusts_the_lab_ca_and_nothing_else(tmp_path, ca):
    cert_pem, key_pem = tls.issue(ca, "cvat.lab")
    (tmp_path / "cert.pem").write_text(cert_pem)
    (tmp_path / "key.pem").write_text(key_pem)
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(tmp_path / "cert.pem", tmp_path / "key.pem")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]

    def serve(count):
        for _ in range(count):
            conn, _ = listener.accept()
            try:
                with server.wrap_socket(conn, server_side=True) as tls_conn:
                    tls_conn.recv(1)
            except (ssl.SSLError, OSError):
                pass

    thread = threading.Thread(target=serve, args=(2,), daemon=True)
    thread.start()
    trusting = ssl.create_default_context(cadata=ca.cert_pem)
    with socket.create_connection(("127.0.0.1", port)) as raw, trusting.wrap_socket(raw, server_hostname="cvat.lab") as conn:
        assert conn.version() in ("TLSv1.2", "TLSv1.3")
        conn.send(b"x")
    untrusting = ssl.create_default_context()
    untrusting.load_default_certs()
    with socket.create_connection(("127.0.0.1", port)) as raw, pytest.raises(ssl.SSLCertVerificationError):
        untrusting.wrap_socket(raw, server_hostname="cvat.lab")
    thread.join(5)
    listener.close()


def test_own_files_are_checked(tmp_path, ca):
    cert_pem, key_pem = tls.issue(ca, "cvat.lab", now=NOW)
    _other_cert, other_key = tls.issue(ca, "cvat.lab", now=NOW)
    (tmp_path / "cert.pem").write_text(cert_pem)
    (tmp_path / "key.pem").write_text(key_pem)
    (tmp_path / "other.key").write_text(other_key)
    repo = tmp_path / "repo"
    repo.mkdir()
    assert tls.own_files(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "cvat.lab", repo, now=NOW) == (cert_pem, key_pem)
    with pytest.raises(tls.TlsProblem, match="is not the key of"):
        tls.own_files(str(tmp_path / "cert.pem"), str(tmp_path / "other.key"), "cvat.lab", repo, now=NOW)
    with pytest.raises(tls.TlsProblem, match=r"not valid for annotate\.lab"):
        tls.own_files(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "annotate.lab", repo, now=NOW)
    with pytest.raises(tls.TlsProblem, match="expired on"):
        tls.own_files(str(tmp_path / "cert.pem"), str(tmp_path / "key.pem"), "cvat.lab", repo,
                      now=NOW + datetime.timedelta(days=400))
    (repo / "key.pem").write_text(key_pem)
    with pytest.raises(tls.TlsProblem, match="inside the repository"):
        tls.own_files(str(tmp_path / "cert.pem"), str(repo / "key.pem"), "cvat.lab", repo, now=NOW)
    with pytest.raises(tls.TlsProblem, match="is not set"):
        tls.own_files(None, None, "cvat.lab", repo)
