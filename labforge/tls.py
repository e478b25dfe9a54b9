"""TLS for CVAT on a LAN: the certificate traefik serves, from the admin's own files or from a lab CA.

A lab rarely has a public name, so Let's Encrypt (CVAT's docker-compose.https.yml) cannot issue for it. `lab-ca`
keeps a small CA on the control machine (its key never leaves it) and signs a certificate for cvat_host; users
import the CA's certificate once. Everything here is pure (files on the control machine and PEM text), so the
deploy decides while planning whether a certificate must be issued, and a second run changes nothing.
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

MODES = ("off", "own", "lab-ca")
CERT_DAYS = 365
CA_DAYS = 3650
CA_CERT, CA_KEY = "ca.crt", "ca.key"


class TlsProblem(ValueError):
    """A TLS setting that cannot work; the message is one actionable line."""


@dataclass(frozen=True)
class LabCa:
    cert: x509.Certificate
    key: ec.EllipticCurvePrivateKey

    @property
    def cert_pem(self) -> str:
        return self.cert.public_bytes(serialization.Encoding.PEM).decode()


def _now() -> datetime.datetime:
    return datetime.datetime.now(datetime.timezone.utc)


def _name_entry(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _write_private(path: Path, data: bytes) -> None:
    """Create a file readable by its owner only, from the first byte (no window with a wider mode)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(data)


def lab_ca(directory: Path, now: datetime.datetime | None = None) -> LabCa:
    """The lab CA kept in `directory` (mode 0700; ca.key 0600), made on first use."""
    now = now or _now()
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if key_path.exists() and cert_path.exists():
        if key_path.stat().st_mode & 0o077:
            raise TlsProblem(f"{key_path} is readable by other users: chmod 600 it (it signs every lab certificate)")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        return LabCa(x509.load_pem_x509_certificate(cert_path.read_bytes()), key)
    if key_path.exists() or cert_path.exists():
        raise TlsProblem(f"{directory} holds only one of {CA_CERT} and {CA_KEY}: restore the other, or move the directory "
                         "away to make a new lab CA (users then import the new ca.crt)")
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    directory.chmod(0o700)
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labforge lab"),
                      x509.NameAttribute(NameOID.COMMON_NAME, f"labforge lab CA {now:%Y-%m-%d}")])
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CA_DAYS))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False,
                                         data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                                         encipher_only=False, decipher_only=False), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .sign(key, hashes.SHA256()))
    _write_private(key_path, key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                               serialization.NoEncryption()))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    cert_path.chmod(0o644)
    return LabCa(cert, key)


def covers(cert: x509.Certificate, name: str) -> bool:
    """Whether the certificate's subjectAltName holds `name` (a DNS name, or an IP address)."""
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return False
    entry = _name_entry(name)
    if isinstance(entry, x509.IPAddress):
        return entry.value in san.get_values_for_type(x509.IPAddress)
    wanted = name.lower().rstrip(".")
    for dns in san.get_values_for_type(x509.DNSName):
        dns = dns.lower().rstrip(".")
        if dns == wanted or (dns.startswith("*.") and "." in wanted and wanted.split(".", 1)[1] == dns[2:]):
            return True
    return False


def renewal_reason(cert_pem: str | None, ca: LabCa, name: str, renew_days: int, now: datetime.datetime | None = None) -> str | None:
    """Why the host's certificate must be issued anew (None: keep it)."""
    now = now or _now()
    if not cert_pem:
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
    except ValueError:
        return "the host's certificate is not PEM"
    if cert.issuer != ca.cert.subject:
        return "signed by another CA"
    try:
        cert.verify_directly_issued_by(ca.cert)
    except (ValueError, TypeError, InvalidSignature):
        return "not signed by this lab CA's key"
    if not covers(cert, name):
        return f"not valid for {name}"
    left = cert.not_valid_after_utc - now
    if left < datetime.timedelta(days=renew_days):
        return f"{max(left.days, 0)} days left (renewed below {renew_days})"
    return None


def issue(ca: LabCa, name: str, now: datetime.datetime | None = None) -> tuple[str, str]:
    """A new key and a certificate for `name` signed by the lab CA: (cert PEM with the CA appended, key PEM)."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    cert = (x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(ca.cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=CERT_DAYS))
            .add_extension(x509.SubjectAlternativeName([_name_entry(name)]), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    cert_pem = cert.public_bytes(serialization.Encoding.PEM).decode()
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption()).decode()
    return cert_pem + ca.cert_pem, key_pem


def own_files(cert_file: str | None, key_file: str | None, name: str, repo: Path,
              now: datetime.datetime | None = None) -> tuple[str, str]:
    """The admin's own certificate and key (PEM files on the control machine), checked: outside the repository,
    the key matches the certificate, which covers `name` and has not expired."""
    now = now or _now()
    if not cert_file or not key_file:
        raise TlsProblem("cvat_tls is 'own' but cvat_tls_cert_file or cvat_tls_key_file is not set")
    paths = []
    for setting, value in (("cvat_tls_cert_file", cert_file), ("cvat_tls_key_file", key_file)):
        path = Path(value).expanduser().resolve()
        if setting == "cvat_tls_key_file" and (path == repo or repo in path.parents):
            raise TlsProblem(f"{setting} {path} is inside the repository; keep private keys outside git")
        if not path.is_file():
            raise TlsProblem(f"{setting} {path} does not exist")
        paths.append(path)
    cert_pem, key_pem = paths[0].read_text(), paths[1].read_text()
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        key = serialization.load_pem_private_key(key_pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise TlsProblem(f"cvat_tls_cert_file/cvat_tls_key_file: not an unencrypted PEM certificate and key ({exc})") from exc
    public = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(serialization.Encoding.PEM, public) != \
            cert.public_key().public_bytes(serialization.Encoding.PEM, public):
        raise TlsProblem(f"cvat_tls_key_file {paths[1]} is not the key of cvat_tls_cert_file {paths[0]}")
    if not covers(cert, name):
        raise TlsProblem(f"cvat_tls_cert_file {paths[0]} is not valid for {name} (its subjectAltName lacks it)")
    if cert.not_valid_after_utc <= now:
        raise TlsProblem(f"cvat_tls_cert_file {paths[0]} expired on {cert.not_valid_after_utc:%Y-%m-%d}")
    return cert_pem, key_pem
