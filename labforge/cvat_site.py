"""Where CVAT answers, and the TLS that goes with it, for the CVAT layer (tasks/cvat.py): the address users type,
the certificate material decided while planning (refused there, before any change), and the files and renewal
program that put it on the host. The decisions are labforge/tls.py's; this module reads the host and emits the
operations (docs/security.md, "TLS")."""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.facts.files import File, FileContents
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from labforge import report, secrets, tls
from labforge.compose import TLS_DIR
from labforge.facts import PrimaryIpv4
from labforge.paths import REPO, in_repo
from labforge.report import Refused
from labforge.templates import render

LAB_CA_CERT = "/etc/labforge/lab-ca.crt"
TLS_RENEW_SCRIPT = "/usr/local/lib/labforge/tls-renew"
TLS_RENEW_UNIT = "labforge-tls-renew"


def cvat_host() -> str:
    """The name or address users type to reach CVAT: cvat_host, else the host's default-route IPv4 address."""
    address = host.data.get("cvat_host") or host.get_fact(PrimaryIpv4)
    if not address:
        raise Refused("no default-route IPv4 address found; set cvat_host to the name or address "
                      "users type to reach CVAT")
    return address


def read(path: str) -> str | None:
    """A host file's text (None when it is missing), as pyinfra's FileContents reads it."""
    lines = host.get_fact(FileContents, path=path)
    return None if lines is None else "\n".join(lines) + "\n"


def tls_mode() -> str:
    mode = host.data.get("cvat_tls")
    if mode not in tls.MODES:
        raise Refused(f"cvat_tls must be one of {', '.join(tls.MODES)}, not {mode!r}")
    return mode


def tls_material(mode: str, address: str) -> dict | None:
    """What TLS puts on the host, decided while planning (None when TLS is off). `own`: the admin's certificate and
    key, checked against cvat_host. `lab-ca`: the lab CA's certificate, the host's issuer when it must be made anew
    (missing, foreign, not constrained to cvat_host, near expiry), and why CVAT's certificate must be issued now by
    the host's renewal program (None: it is good)."""
    if mode == "off":
        return None
    data = host.data
    try:
        if mode == "own":
            cert_pem, key_pem = tls.own_files(data.get("cvat_tls_cert_file"), data.get("cvat_tls_key_file"), address, REPO)
            return {"cert": cert_pem, "key": key_pem}
        renew_days = int(data.get("cvat_tls_renew_days"))
        directory = in_repo(data.get("cvat_tls_lab_ca_dir") or "lab-ca")
        problem = tls.renew_days_problem(renew_days) or tls.ca_dir_problem(directory, REPO)
        if problem is None:
            ca = tls.lab_ca(directory, names=data.get("cvat_tls_lab_ca_names") or [address])
            problem = tls.ca_problem(ca, address, directory)
    except tls.TlsProblem as exc:
        raise Refused(str(exc)) from exc
    if problem:
        raise Refused(problem)
    if tls.constraints(ca.cert) is None:
        report.notice(f"the lab CA in {directory} has no name constraints and can sign for any site in its users' "
                      "browsers: move it away to make a constrained one (docs/security.md); users then import it again")
    current_issuer = read(f"{TLS_DIR}/issuer.crt")
    issuer = None
    expiring = tls.ca_expiry_notice(ca)
    if expiring:
        report.notice(expiring)
    why_issuer = tls.issuer_reason(current_issuer, ca, address)
    if why_issuer is None and not host.get_fact(File, path=f"{TLS_DIR}/issuer.pem"):
        why_issuer = "the host's issuer key is missing"
    if why_issuer is not None:
        issuer = tls.issue_issuer(ca, address)
        report.notice(f"TLS issuer for {address} made by the lab CA ({why_issuer})")
    leaf = "the host's issuer is new" if issuer else tls.renewal_reason(read(f"{TLS_DIR}/cert.pem"), current_issuer, address,
                                                                       renew_days)
    if leaf is None and not host.get_fact(File, path=f"{TLS_DIR}/key.pem"):
        leaf = "its key is missing"
    if leaf is not None:
        report.notice(f"TLS certificate for {address} issued by the host's issuer ({leaf})")
    return {"ca": ca.cert_pem, "issuer": issuer, "leaf": leaf, "renew_days": renew_days}


def tls_files(material: dict | None, address: str):
    """The files TLS needs in TLS_DIR (root only), or none at all when TLS is off; with lab-ca the host's issuer,
    its renewal program and timer (removed otherwise). A callable telling whether traefik must be restarted for an
    admin's new certificate (for _if), or None (lab-ca: the renewal program restarts traefik itself)."""
    lab = material is not None and "ca" in material
    renewal(material if lab else None, address)
    if material is None:
        files.directory(name=f"No TLS files ({TLS_DIR})", path=TLS_DIR, present=False)
        files.file(name=f"No lab CA certificate ({LAB_CA_CERT})", path=LAB_CA_CERT, present=False)
        return None
    files.directory(name=f"{TLS_DIR} (root only)", path=TLS_DIR, user="root", group="root", mode="0700")
    files.put(name="traefik's tls.yml (the default certificate)", src=StringIO(render("tls.yml.j2")),
              dest=f"{TLS_DIR}/tls.yml", mode="0644")
    if not lab:
        for name in ("issuer.crt", "issuer.pem", "ca.crt"):
            files.file(name=f"No lab CA file {name} (cvat_tls is own)", path=f"{TLS_DIR}/{name}", present=False)
        files.file(name=f"No lab CA certificate ({LAB_CA_CERT})", path=LAB_CA_CERT, present=False)
        key = secrets.put_secret(f"TLS key for {address}", material["key"], f"{TLS_DIR}/key.pem")
        cert = files.put(name=f"TLS certificate for {address}", src=StringIO(material["cert"]), dest=f"{TLS_DIR}/cert.pem",
                         mode="0644")
        return any_changed(key, cert)
    # what users import; the CA's key stays on the control machine
    files.put(name="Lab CA certificate for users to import", src=StringIO(material["ca"]), dest=LAB_CA_CERT, mode="0644")
    files.put(name="Lab CA certificate (the renewal's trust anchor)", src=StringIO(material["ca"]), dest=f"{TLS_DIR}/ca.crt",
              mode="0644")
    if material["issuer"] is not None:  # key and certificate in one file, written whole: never a mismatched pair
        issuer_cert, issuer_key = material["issuer"]
        secrets.put_secret(f"TLS issuer for {address} (key and certificate, constrained to it)", issuer_key + issuer_cert,
                           f"{TLS_DIR}/issuer.pem")
        files.put(name=f"TLS issuer's certificate for {address} (what the converge reads)", src=StringIO(issuer_cert),
                  dest=f"{TLS_DIR}/issuer.crt", mode="0644")
    if material["leaf"] is not None:
        server.shell(name=f"Issue CVAT's TLS certificate for {address} ({material['leaf']})",
                     commands=[f"{TLS_RENEW_SCRIPT} --force"])
    return None


def renewal(material: dict | None, address: str) -> None:
    """labforge-tls-renew (its program, service and daily timer) with lab-ca; nothing of it otherwise."""
    units = {f"{TLS_RENEW_UNIT}.{kind}": f"/etc/systemd/system/{TLS_RENEW_UNIT}.{kind}" for kind in ("service", "timer")}
    if material is None:
        if host.get_fact(File, path=units[f"{TLS_RENEW_UNIT}.timer"]):
            server.shell(name=f"Stop {TLS_RENEW_UNIT}.timer (no lab CA)", commands=[f"systemctl disable --now {TLS_RENEW_UNIT}.timer"])
        removed = [files.file(name=f"No {path}", path=path, present=False) for path in (*units.values(), TLS_RENEW_SCRIPT)]
        systemd.daemon_reload(name="systemd daemon-reload (TLS renewal removed)", _if=any_changed(*removed))
        return
    script = files.put(name=f"TLS renewal program ({address}, {tls.CERT_DAYS} days, renewed below {material['renew_days']})",
                       src=StringIO(tls.renew_script(address, material["renew_days"], TLS_DIR, TLS_RENEW_SCRIPT)),
                       dest=TLS_RENEW_SCRIPT, user="root", group="root", mode="0700", create_remote_dir=True)
    changed = [files.put(name=unit, src=StringIO(render(f"labforge-tls-renew.{unit.rsplit('.', 1)[1]}.j2", script=TLS_RENEW_SCRIPT)),
                         dest=path, mode="0644") for unit, path in units.items()]
    systemd.daemon_reload(name="systemd daemon-reload (TLS renewal)", _if=any_changed(script, *changed))
    systemd.service(name=f"{TLS_RENEW_UNIT}.timer enabled", service=f"{TLS_RENEW_UNIT}.timer", running=True, enabled=True)
