"""TLS for CVAT on a LAN: the certificate traefik serves, from the admin's own files or from a lab CA.

A lab rarely has a public name, so Let's Encrypt (CVAT's docker-compose.https.yml) cannot issue for it. `lab-ca`
keeps a small CA on the control machine (its key never leaves it); users import the CA's certificate once, into
browsers and trust stores, so the CA is name-constrained (RFC 5280 4.2.1.10: it can sign for the lab's names and
addresses only, cvat_tls_lab_ca_names) and lives 3 years, not 10.

Certificates expire while nobody converges, so each host holds an issuer of its own: an intermediate CA signed by
the lab CA and constrained to exactly that host's cvat_host (its key root-only on the host; stolen, it signs for
that one name). A timer on the host (labforge-tls-renew) issues CVAT's 90-day certificate from it with openssl
before it expires and restarts traefik; the converge renews the issuer (397 days) long before it runs out.
Everything here is pure (files on the control machine and PEM text), so the deploy decides while planning what
must be issued, and a second run changes nothing.
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
from cryptography.x509.oid import NameOID

from labforge.paths import committable
from labforge.templates import render

MODES = ("off", "own", "lab-ca")
CERT_DAYS = 90  # CVAT's certificate, issued on the host by labforge-tls-renew
ISSUER_DAYS = 397  # the host's issuer
ISSUER_RENEW_DAYS = 60  # the converge issues a new issuer when the old one has fewer days left
CA_DAYS = 1095
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


def renew_script(name: str, renew_days: int, tls_dir: str, script: str) -> str:
    """The host's renewal program (templates/labforge-tls-renew.sh.j2) for CVAT's certificate for `name`."""
    san = f"IP:{name}" if is_address(name) else f"DNS:{name}"
    return render("labforge-tls-renew.sh.j2", script=script, tls_dir=tls_dir, cert_name=name, san=san, days=CERT_DAYS,
                  renew_days=renew_days)


def is_address(name: str) -> bool:
    try:
        ipaddress.ip_address(name)
    except ValueError:
        return False
    return True


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


def permitted(names: list[str]) -> list[x509.GeneralName]:
    """Name-constraint subtrees: a DNS name (itself and every name under it) or an IP address or network."""
    found: list[x509.GeneralName] = []
    for name in names:
        try:
            found.append(x509.IPAddress(ipaddress.ip_network(str(name), strict=False)))
        except ValueError:
            label = str(name).strip().lstrip("*.").rstrip(".").lower()
            if not label or any(c in label for c in " /\\:@"):
                raise TlsProblem(f"cvat_tls_lab_ca_names: {name!r} is neither a DNS name nor an IP address or network") from None
            found.append(x509.DNSName(label))
    return found


NOTHING = "invalid"  # RFC 2606: a DNS name that is never real, permitted where no DNS name may be signed for


def name_constraints(names: list[str], exact: bool = False) -> x509.NameConstraints:
    """Name constraints that bind both name types (RFC 5280 4.2.1.10 applies each type's subtrees to that type alone,
    so a CA constrained to IP addresses only could sign any DNS name): the DNS names given (each with the names under
    it; with `exact`, the names under it excluded) or none (NOTHING), and the IP addresses or networks given or none
    (every address excluded)."""
    subtrees = permitted(names)
    dns = [sub for sub in subtrees if isinstance(sub, x509.DNSName)]
    ips = [sub for sub in subtrees if isinstance(sub, x509.IPAddress)]
    excluded: list[x509.GeneralName] = [] if ips else [x509.IPAddress(ipaddress.ip_network("0.0.0.0/0")),
                                                       x509.IPAddress(ipaddress.ip_network("::/0"))]
    if exact:
        excluded += [x509.DNSName(f".{sub.value}") for sub in dns]
    return x509.NameConstraints(permitted_subtrees=(dns or [x509.DNSName(NOTHING)]) + ips,
                                excluded_subtrees=excluded or None)


def constraints(cert: x509.Certificate) -> x509.NameConstraints | None:
    try:
        return cert.extensions.get_extension_for_class(x509.NameConstraints).value
    except x509.ExtensionNotFound:
        return None


def _dns_match(name: str, base: str) -> bool:
    """RFC 5280's dNSName constraint match, as OpenSSL does it: "a.b" matches itself and the names under it, ".a.b"
    only the names under it."""
    if base.startswith("."):
        return name.endswith(base)
    return name == base or name.endswith("." + base)


def allows(cert: x509.Certificate, name: str) -> bool:
    """Whether a CA's name constraints (if any) let it sign for `name`: no excluded subtree of its type matches, and
    a permitted one does where the CA has permitted subtrees of that type."""
    limits = constraints(cert)
    if limits is None:
        return True
    entry = _name_entry(name)
    kind = type(entry)
    excluded = [sub for sub in limits.excluded_subtrees or [] if isinstance(sub, kind)]
    allowed = [sub for sub in limits.permitted_subtrees or [] if isinstance(sub, kind)]
    if isinstance(entry, x509.IPAddress):
        hit = lambda sub: entry.value in sub.value  # noqa: E731
    else:
        wanted = name.lower().rstrip(".")
        hit = lambda sub: _dns_match(wanted, sub.value.lower())  # noqa: E731
    return not any(hit(sub) for sub in excluded) and (not allowed or any(hit(sub) for sub in allowed))


def ca_problem(ca: LabCa, name: str, directory: Path) -> str | None:
    """One line when the lab CA cannot sign for `name` (its name constraints leave it out)."""
    if allows(ca.cert, name):
        return None
    subtrees = ", ".join(str(sub.value) for sub in constraints(ca.cert).permitted_subtrees or [] if sub.value != NOTHING)
    return (f"the lab CA in {directory} may sign only for {subtrees}, not {name}: move {directory} away and list every "
            "cvat_host of the lab in cvat_tls_lab_ca_names to make a new one (users then import its ca.crt again)")


def ca_expiry_notice(ca: LabCa, now: datetime.datetime | None = None) -> str | None:
    """A notice while the lab CA has fewer than ISSUER_RENEW_DAYS left: no issuer can outlive it."""
    left = _days_left(ca.cert, now or _now())
    if left >= datetime.timedelta(days=ISSUER_RENEW_DAYS):
        return None
    return (f"the lab CA expires on {ca.cert.not_valid_after_utc:%Y-%m-%d} ({left.days} days): certificates cannot "
            "outlive it; move its directory away and converge to make a new one (users then import its ca.crt again)")


def renew_days_problem(renew_days: int) -> str | None:
    if not 0 < renew_days < CERT_DAYS:
        return (f"cvat_tls_renew_days is {renew_days}: it must be between 1 and {CERT_DAYS - 1}, below the certificate's "
                f"life of {CERT_DAYS} days, or every check would renew it")
    return None


CA_USAGE = x509.KeyUsage(digital_signature=False, content_commitment=False, key_encipherment=False, data_encipherment=False,
                         key_agreement=False, key_cert_sign=True, crl_sign=True, encipher_only=False, decipher_only=False)


def lab_ca(directory: Path, now: datetime.datetime | None = None, names: list[str] | None = None) -> LabCa:
    """The lab CA kept in `directory` (mode 0700; ca.key 0600), made on first use, name-constrained to `names`
    (an existing CA is used as it is: ca_problem() says when it cannot sign for a host)."""
    now = now or _now()
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if key_path.exists() and cert_path.exists():
        if key_path.stat().st_mode & 0o077:
            raise TlsProblem(f"{key_path} is readable by other users: chmod 600 it (it signs every lab certificate)")
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        if cert.not_valid_after_utc <= now:
            raise TlsProblem(f"the lab CA in {directory} expired on {cert.not_valid_after_utc:%Y-%m-%d}: move {directory} away "
                             "to make a new one (users then import its ca.crt again)")
        return LabCa(cert, key)
    if not names:
        raise TlsProblem("a new lab CA needs the names it may sign for (cvat_tls_lab_ca_names, or the host's cvat_host)")
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
            .add_extension(x509.BasicConstraints(ca=True, path_length=1), critical=True)
            .add_extension(CA_USAGE, critical=True)
            .add_extension(name_constraints(names), critical=True)
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


def _verified(cert: x509.Certificate, issuer: x509.Certificate) -> bool:
    if cert.issuer != issuer.subject:
        return False
    try:
        cert.verify_directly_issued_by(issuer)
    except (ValueError, TypeError, InvalidSignature):
        return False
    return True


def _days_left(cert: x509.Certificate, now: datetime.datetime) -> datetime.timedelta:
    return cert.not_valid_after_utc - now


def issuer_reason(issuer_pem: str | None, ca: LabCa, name: str, now: datetime.datetime | None = None) -> str | None:
    """Why the host's issuer must be made anew (None: keep it)."""
    now = now or _now()
    if not issuer_pem:
        return "no issuer on the host yet"
    try:
        issuer = x509.load_pem_x509_certificate(issuer_pem.encode())
    except ValueError:
        return "the host's issuer is not PEM"
    if not _verified(issuer, ca.cert):
        return "the host's issuer is not this lab CA's"
    if constraints(issuer) != name_constraints([name], exact=True):
        return f"the host's issuer is not constrained to {name}"
    left = _days_left(issuer, now)
    if left < datetime.timedelta(days=ISSUER_RENEW_DAYS) and issuer.not_valid_after_utc < ca.cert.not_valid_after_utc:
        return f"the host's issuer has {max(left.days, 0)} days left (renewed below {ISSUER_RENEW_DAYS})"
    return None


def issue_issuer(ca: LabCa, name: str, now: datetime.datetime | None = None) -> tuple[str, str]:
    """The host's issuer: an intermediate CA for exactly `name` (name-constrained, path length 0), valid ISSUER_DAYS
    or as long as the lab CA, whichever ends first. (cert PEM, key PEM)."""
    now = now or _now()
    key = ec.generate_private_key(ec.SECP256R1())
    until = min(now + datetime.timedelta(days=ISSUER_DAYS), ca.cert.not_valid_after_utc)
    subject = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "labforge lab"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"labforge issuer for {name}")])
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(ca.cert.subject).public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(until)
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(CA_USAGE, critical=True)
            .add_extension(name_constraints([name], exact=True), critical=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False)
            .sign(ca.key, hashes.SHA256()))
    return (cert.public_bytes(serialization.Encoding.PEM).decode(),
            key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                              serialization.NoEncryption()).decode())


def renewal_reason(cert_pem: str | None, issuer_pem: str | None, name: str, renew_days: int,
                   now: datetime.datetime | None = None) -> str | None:
    """Why CVAT's certificate (the first of cert.pem) must be issued anew by the host's issuer (None: keep it)."""
    now = now or _now()
    if not cert_pem:
        return "no certificate yet"
    try:
        cert = x509.load_pem_x509_certificate(cert_pem.encode())
        issuer = x509.load_pem_x509_certificate(issuer_pem.encode()) if issuer_pem else None
    except ValueError:
        return "the host's certificate is not PEM"
    if issuer is None or not _verified(cert, issuer):
        return "not issued by the host's issuer"
    if not covers(cert, name):
        return f"not valid for {name}"
    left = _days_left(cert, now)
    if left < datetime.timedelta(days=renew_days):
        return f"{max(left.days, 0)} days left (renewed below {renew_days})"
    return None


def served_problem(cert: x509.Certificate, name: str, renew_days: int, now: datetime.datetime | None = None) -> str | None:
    """What is wrong with the certificate a host serves (the doctor's and tests/host's check from outside)."""
    now = now or _now()
    if not covers(cert, name):
        return f"the certificate served is not valid for {name}"
    left = _days_left(cert, now)
    if left <= datetime.timedelta(0):
        return f"the certificate served expired on {cert.not_valid_after_utc:%Y-%m-%d}"
    if left < datetime.timedelta(days=renew_days):
        return f"the certificate served has {left.days} days left (it is renewed below {renew_days}: is labforge-tls-renew.timer running?)"
    return None


def ca_dir_problem(directory: Path, repo: Path) -> str | None:
    """A lab CA directory inside the repository must be one git ignores: its key signs for the whole lab."""
    if not committable(directory.resolve() / CA_KEY, repo):
        return None
    return (f"cvat_tls_lab_ca_dir {directory} is inside the repository and git does not ignore it: its key would be "
            "committed; list it in .gitignore or keep it outside the repository")


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
