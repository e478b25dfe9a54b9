"""labforge/tls.py: the lab CA (name-constrained), each host's issuer, CVAT's certificate as the host's renewal
program (templates/labforge-tls-renew.sh.j2, run here with the real openssl) issues it, the checks of an admin's
own files, and a real TLS handshake (Python's ssl, OpenSSL underneath): trusted through the lab CA only."""

from __future__ import annotations

import datetime
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest
from cryptography import x509

from labforge import tls

# The renewal program runs openssl, which reads the real clock: NOW is when the module was imported (in a long run,
# many minutes before a test runs), so no test compares openssl's dates with it to the minute.
NOW = datetime.datetime.now(datetime.timezone.utc)
NAMES = ["cvat.lab", "lab.example", "192.168.10.0/24"]


@pytest.fixture
def ca(tmp_path):
    return tls.lab_ca(tmp_path / "lab-ca", now=NOW, names=NAMES)


def host_dir(tmp_path: Path, ca: tls.LabCa, name: str) -> Path:
    """A host's /etc/labforge/tls as the converge leaves it: the lab CA's certificate and the host's issuer."""
    directory = tmp_path / f"tls-{name}"
    directory.mkdir(mode=0o700, exist_ok=True)
    issuer_cert, issuer_key = tls.issue_issuer(ca, name, now=NOW)
    (directory / "ca.crt").write_text(ca.cert_pem)
    (directory / "issuer.crt").write_text(issuer_cert)
    (directory / "issuer.pem").write_text(issuer_key + issuer_cert)
    return directory


def renew(directory: Path, name: str, *args: str, renew_days: int = 30, env: dict | None = None) -> subprocess.CompletedProcess:
    """The host's renewal program, rendered as the converge renders it, pointed at `directory`."""
    script = directory / "tls-renew"
    script.write_text(tls.renew_script(name, renew_days, str(directory), str(script)))
    return subprocess.run(["sh", str(script), *args], capture_output=True, text=True, env={"PATH": "/usr/bin:/bin", **(env or {})})


def issued(tmp_path: Path, ca: tls.LabCa, name: str) -> tuple[Path, str, str]:
    directory = host_dir(tmp_path, ca, name)
    proc = renew(directory, name)
    assert proc.returncode == 0, proc.stderr
    return directory, (directory / "cert.pem").read_text(), (directory / "key.pem").read_text()


def test_the_lab_ca_is_made_once_with_its_key_private_and_constrained(tmp_path, ca):
    directory = tmp_path / "lab-ca"
    assert directory.stat().st_mode & 0o777 == 0o700
    assert (directory / "ca.key").stat().st_mode & 0o777 == 0o600
    again = tls.lab_ca(directory, now=NOW)  # an existing CA needs no names
    assert again.cert == ca.cert
    limits = tls.constraints(ca.cert)
    assert {str(sub.value) for sub in limits.permitted_subtrees} == {"cvat.lab", "lab.example", "192.168.10.0/24"}
    assert ca.cert.not_valid_after_utc - ca.cert.not_valid_before_utc < datetime.timedelta(days=tls.CA_DAYS + 1)
    assert tls.CA_DAYS <= 3 * 366
    (directory / "ca.key").chmod(0o644)
    with pytest.raises(tls.TlsProblem, match="readable by other users"):
        tls.lab_ca(directory)


def test_a_new_lab_ca_needs_its_names(tmp_path):
    with pytest.raises(tls.TlsProblem, match="needs the names"):
        tls.lab_ca(tmp_path / "none")
    with pytest.raises(tls.TlsProblem, match="neither a DNS name"):
        tls.lab_ca(tmp_path / "bad", names=["http://x/"])


@pytest.mark.parametrize(("name", "ok"), [("cvat.lab", True), ("a.lab.example", True), ("192.168.10.5", True),
                                          ("evil.example", False), ("192.168.11.5", False), ("lab.example.evil", False)])
def test_the_lab_ca_signs_only_for_the_labs_names(tmp_path, ca, name, ok):
    assert tls.allows(ca.cert, name) is ok
    problem = tls.ca_problem(ca, name, tmp_path / "lab-ca")
    assert (problem is None) is ok
    if not ok:
        assert problem.startswith(f"the lab CA in {tmp_path / 'lab-ca'} may sign only for ") and "cvat_tls_lab_ca_names" in problem


def test_half_a_lab_ca_is_refused(tmp_path, ca):
    (tmp_path / "lab-ca" / "ca.key").unlink()
    with pytest.raises(tls.TlsProblem, match="holds only one of"):
        tls.lab_ca(tmp_path / "lab-ca", names=NAMES)


@pytest.mark.parametrize("days", [0, 90, 400, -1])
def test_renew_days_must_be_below_the_certificates_life(days):
    assert f"must be between 1 and {tls.CERT_DAYS - 1}" in tls.renew_days_problem(days)
    assert tls.renew_days_problem(30) is None


def test_the_hosts_issuer_is_constrained_to_its_name_and_kept_until_renewal(ca):
    issuer_pem, _ = tls.issue_issuer(ca, "cvat.lab", now=NOW)
    issuer = x509.load_pem_x509_certificate(issuer_pem.encode())
    assert tls.allows(issuer, "cvat.lab") and not tls.allows(issuer, "other.lab") and not tls.allows(issuer, "192.168.10.5")
    assert issuer.extensions.get_extension_for_class(x509.BasicConstraints).value.path_length == 0
    assert tls.issuer_reason(issuer_pem, ca, "cvat.lab", now=NOW) is None
    assert tls.issuer_reason(issuer_pem, ca, "cvat.lab", now=NOW + datetime.timedelta(days=tls.ISSUER_DAYS - 30)) == \
        "the host's issuer has 29 days left (renewed below 60)"
    assert tls.issuer_reason(issuer_pem, ca, "other.lab", now=NOW) == "the host's issuer is not constrained to other.lab"
    assert tls.issuer_reason(None, ca, "cvat.lab") == "no issuer on the host yet"


@pytest.mark.parametrize("name", ["cvat.lab", "192.168.10.5"])
def test_the_renewal_program_issues_a_certificate_for_the_name_and_keeps_it_until_due(tmp_path, ca, name):
    directory, cert_pem, _ = issued(tmp_path, ca, name)
    issuer_pem = (directory / "issuer.crt").read_text()
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert tls.covers(cert, name) and not tls.covers(cert, "other.lab")
    assert cert.not_valid_after_utc - cert.not_valid_before_utc == datetime.timedelta(days=tls.CERT_DAYS)
    assert (directory / "key.pem").stat().st_mode & 0o777 == 0o600
    assert tls.renewal_reason(cert_pem, issuer_pem, name, 30, now=NOW) is None
    later = cert.not_valid_after_utc - datetime.timedelta(days=19, hours=12)  # time passing
    assert tls.renewal_reason(cert_pem, issuer_pem, name, 30, now=later) == "19 days left (renewed below 30)"
    assert tls.renewal_reason(cert_pem, issuer_pem, "other.lab", 30, now=NOW) == "not valid for other.lab"
    assert tls.renewal_reason(None, issuer_pem, name, 30) == "no certificate yet"
    again = renew(directory, name)
    assert again.returncode == 0 and "is good for more than 30 days" in again.stdout
    assert (directory / "cert.pem").read_text() == cert_pem  # nothing issued
    due = renew(directory, name, env={"LABFORGE_TLS_RENEW_DAYS": "91"})  # as if a day had passed past the threshold
    assert due.returncode == 0 and "fewer than 91 days left" in due.stdout, due.stdout + due.stderr
    assert (directory / "cert.pem").read_text() != cert_pem


def test_a_stolen_issuer_cannot_sign_for_another_name(tmp_path, ca):
    """Name constraints at work in OpenSSL: the issuer of cvat.lab signs a certificate for other.lab, and verifying it
    against the lab CA fails. The renewal program refuses to install such a certificate."""
    directory = host_dir(tmp_path, ca, "cvat.lab")
    proc = renew(directory, "other.lab", "--force")
    assert proc.returncode != 0 and "does not verify" in proc.stdout, proc.stdout + proc.stderr
    assert not (directory / "cert.pem").exists()


def rogue(tmp_path: Path, signer_key, signer: x509.Certificate, name: str) -> Path:
    """A server certificate for `name` signed by a CA's key directly: what a stolen key could make."""
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "rogue")]))
            .issuer_name(signer.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(NOW - datetime.timedelta(minutes=5)).not_valid_after(NOW + datetime.timedelta(days=2))
            .add_extension(x509.SubjectAlternativeName([tls._name_entry(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(signer_key, hashes.SHA256()))
    path = tmp_path / f"rogue-{name}.pem"
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


def openssl_verifies(ca_pem: str, leaf: Path, untrusted: Path | None = None) -> bool:
    anchor = leaf.with_suffix(".ca")
    anchor.write_text(ca_pem)
    args = ["openssl", "verify", "-CAfile", str(anchor), *(["-untrusted", str(untrusted)] if untrusted else []),
            "-purpose", "sslserver", str(leaf)]
    return subprocess.run(args, capture_output=True).returncode == 0


@pytest.mark.parametrize(("names", "good", "bad"), [
    (["192.168.1.15"], ["192.168.1.15"], ["www.google.com", "192.168.1.16", "2001:db8::1"]),  # the default: an address
    (["cvat.lab"], ["cvat.lab", "a.cvat.lab"], ["8.8.8.8", "www.google.com", "cvat.lab.evil"]),
    (["lab.example", "192.168.10.0/24"], ["x.lab.example", "192.168.10.5"], ["www.google.com", "10.0.0.1"]),
])
def test_a_stolen_lab_ca_key_signs_for_the_labs_names_of_both_types_only(tmp_path, names, good, bad):
    """RFC 5280 applies each name type's subtrees to that type only: the CA binds both, so OpenSSL refuses a
    certificate it signed for any name outside the lab's, whatever its type."""
    ca = tls.lab_ca(tmp_path / "ca", now=NOW, names=names)
    for name in good:
        assert tls.allows(ca.cert, name) and openssl_verifies(ca.cert_pem, rogue(tmp_path, ca.key, ca.cert, name)), name
    for name in bad:
        assert not tls.allows(ca.cert, name), name
        assert not openssl_verifies(ca.cert_pem, rogue(tmp_path, ca.key, ca.cert, name)), name


@pytest.mark.parametrize(("host", "others"), [("cvat.lab", ["evil.cvat.lab", "192.168.10.5", "www.google.com"]),
                                               ("192.168.10.5", ["192.168.10.6", "cvat.lab", "www.google.com"])])
def test_a_stolen_issuer_key_signs_for_its_hosts_name_only(tmp_path, ca, host, others):
    from cryptography.hazmat.primitives import serialization
    issuer_pem, key_pem = tls.issue_issuer(ca, host, now=NOW)
    issuer = x509.load_pem_x509_certificate(issuer_pem.encode())
    key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    (tmp_path / "issuer.crt").write_text(issuer_pem)
    assert openssl_verifies(ca.cert_pem, rogue(tmp_path, key, issuer, host), tmp_path / "issuer.crt")
    for name in others:
        assert not tls.allows(issuer, name), name
        assert not openssl_verifies(ca.cert_pem, rogue(tmp_path, key, issuer, name), tmp_path / "issuer.crt"), name


def test_no_certificate_outlives_the_hosts_issuer(tmp_path):
    """Near the lab CA's end the issuer ends with it, and CVAT's certificate with the issuer: never a broken chain."""
    short = tls.lab_ca(tmp_path / "short", now=NOW - datetime.timedelta(days=tls.CA_DAYS - 20), names=["cvat.lab"])
    assert "the lab CA expires on" in tls.ca_expiry_notice(short)
    directory, cert_pem, _ = issued(tmp_path, short, "cvat.lab")
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    issuer = x509.load_pem_x509_certificate((directory / "issuer.crt").read_text().encode())
    assert issuer.not_valid_after_utc == short.cert.not_valid_after_utc
    assert cert.not_valid_after_utc <= issuer.not_valid_after_utc
    assert tls.issuer_reason((directory / "issuer.crt").read_text(), short, "cvat.lab") is None  # nothing better to make


def test_an_expired_lab_ca_is_refused_with_one_line(tmp_path, ca):
    with pytest.raises(tls.TlsProblem, match=r"expired on .*: move .* away to make a new one"):
        tls.lab_ca(tmp_path / "lab-ca", now=NOW + datetime.timedelta(days=tls.CA_DAYS + 1))


@pytest.mark.parametrize("name", ["2001:db8::1"])
def test_an_ipv6_name_is_kept_once_issued(tmp_path, name):
    """openssl prints 2001:DB8:0:0:0:0:0:1; the renewal compares addresses with -checkip, not text."""
    ca = tls.lab_ca(tmp_path / "v6", now=NOW, names=["2001:db8::/64"])
    directory, cert_pem, _ = issued(tmp_path, ca, name)
    again = renew(directory, name)
    assert "is good for more than 30 days" in again.stdout, again.stdout + again.stderr
    assert (directory / "cert.pem").read_text() == cert_pem


def test_a_certificate_of_another_issuer_is_replaced(tmp_path, ca):
    other = tls.lab_ca(tmp_path / "other-ca", now=NOW, names=NAMES)
    _, foreign, _ = issued(tmp_path / "o", other, "cvat.lab") if (tmp_path / "o").mkdir() is None else None
    issuer_pem, _ = tls.issue_issuer(ca, "cvat.lab", now=NOW)
    assert tls.renewal_reason(foreign, issuer_pem, "cvat.lab", 30, now=NOW) == "not issued by the host's issuer"
    directory = host_dir(tmp_path, ca, "cvat.lab")
    (directory / "cert.pem").write_text(foreign)
    (directory / "key.pem").write_text("x")
    proc = renew(directory, "cvat.lab")
    assert "not issued by this host's issuer" in proc.stdout, proc.stdout + proc.stderr


def test_the_served_certificate_is_judged_by_name_and_time(tmp_path, ca):
    _, cert_pem, _ = issued(tmp_path, ca, "cvat.lab")
    cert = x509.load_pem_x509_certificate(cert_pem.encode())
    assert tls.served_problem(cert, "cvat.lab", 30, now=NOW) is None
    assert tls.served_problem(cert, "other.lab", 30, now=NOW) == "the certificate served is not valid for other.lab"
    end = cert.not_valid_after_utc
    assert "has 9 days left" in tls.served_problem(cert, "cvat.lab", 30, now=end - datetime.timedelta(days=9, hours=12))
    assert "expired on" in tls.served_problem(cert, "cvat.lab", 30, now=end + datetime.timedelta(days=1))


def test_a_ca_directory_inside_the_repository_must_be_ignored_by_git(tmp_path):
    repo = tmp_path / "repo"
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    (repo / ".gitignore").write_text("/lab-ca/\n")
    assert tls.ca_dir_problem(repo / "lab-ca", repo) is None
    assert tls.ca_dir_problem(tmp_path / "elsewhere", repo) is None
    problem = tls.ca_dir_problem(repo / "certs" / "ca", repo)
    assert problem.startswith(f"cvat_tls_lab_ca_dir {repo / 'certs' / 'ca'} is inside the repository and git does not ignore it")


def test_a_real_handshake_trusts_the_lab_ca_and_nothing_else(tmp_path, ca):
    directory, _, _ = issued(tmp_path, ca, "cvat.lab")  # cert.pem: the certificate, then the host's issuer
    server = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server.load_cert_chain(directory / "cert.pem", directory / "key.pem")
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
    _, cert_pem, key_pem = issued(tmp_path / "a", ca, "cvat.lab") if (tmp_path / "a").mkdir() is None else None
    _, _, other_key = issued(tmp_path / "b", ca, "cvat.lab") if (tmp_path / "b").mkdir() is None else None
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
                      now=NOW + datetime.timedelta(days=100))
    (repo / "key.pem").write_text(key_pem)
    with pytest.raises(tls.TlsProblem, match="inside the repository"):
        tls.own_files(str(tmp_path / "cert.pem"), str(repo / "key.pem"), "cvat.lab", repo, now=NOW)
    with pytest.raises(tls.TlsProblem, match="is not set"):
        tls.own_files(None, None, "cvat.lab", repo)
