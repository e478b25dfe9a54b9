"""CVAT layer: pinned checkout, read-only lab share, what the stack publishes, TLS, stack up, admin account.

CVAT's own files are never edited: the share, the published ports and TLS live in docker-compose.custom.override.yml
and CVAT_HOST in /etc/labforge/cvat.env, both passed to `docker compose` explicitly.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, File, FileContents
from pyinfra.operations import files, python, server, systemd
from pyinfra.operations.util import any_changed

from labforge import backups, compat, compose, exposure, report, secrets, split, tls, upgrades
from labforge.compose import DIGEST_FILE, ENV_FILE, PROJECT, TLS_DIR, WAIT_API, compose_args
from labforge.data_host import install_program, recover
from labforge.data_program import read_upgrade_journal
from labforge.facts import BackupList, ComposeServiceStates, CvatSuperusers, DockerVolumeDevice, GitTagsAtHead, PrimaryIpv4
from labforge.paths import REPO, in_repo
from labforge.report import Refused
from labforge.templates import render

ADMIN_ENV = "/root/.labforge-cvat-admin.env"  # /root is root-only: the file is never readable by others, even before its chmod
LAB_CA_CERT = "/etc/labforge/lab-ca.crt"
TLS_RENEW_SCRIPT = "/usr/local/lib/labforge/tls-renew"
TLS_RENEW_UNIT = "labforge-tls-renew"


def cvat_host() -> str:
    address = host.data.get("cvat_host") or host.get_fact(PrimaryIpv4)
    if not address:
        raise Refused("no default-route IPv4 address found; set cvat_host to the name or address "
                          "users type to reach CVAT")
    return address


def read(path: str) -> str | None:
    lines = host.get_fact(FileContents, path=path)
    return None if lines is None else "\n".join(lines) + "\n"


def checkout(cvat_dir: str, version: str, tags: list[str] | None, checks: str) -> None:
    """Move to the pinned tag (HEAD is not there: `tags` are HEAD's, None without a checkout); run `checks`
    on the tag's files before HEAD moves. A fresh clone that fails them is removed again and an existing
    checkout stays where it was, so a mismatched CVAT release never ends up half-installed.
    """
    url = host.data.get("cvat_repo_url")
    switch = f"git -C {cvat_dir} checkout --quiet --detach {version}"
    if tags is None:
        if host.get_fact(Directory, path=cvat_dir):
            raise Refused(f"{cvat_dir} exists but is not a git checkout; move it away or set "
                              "cvat_dir")
        command = (f"git clone --quiet --depth 1 --branch {version} --no-checkout {url} {cvat_dir} && "
                   f"{{ {checks} || {{ rm -rf {cvat_dir}; exit 1; }}; }} && {switch}")
    else:
        command = f"git -C {cvat_dir} fetch --quiet --depth 1 origin tag {version} && {{ {checks}; }} && {switch}"
    server.shell(name=f"CVAT {version} checkout (dashboard/nuctl and services checked first)", commands=[command])


@deploy("CVAT")
def cvat() -> None:
    data = host.data
    if split.role(data) == "inference":  # a split lab's inference host: Nuclio only (tasks/inference.py)
        return
    serverless = split.local_nuclio(data)  # False on a split lab's CVAT host: its Nuclio is on its inference host
    inference_address = None if serverless else data.get("inference_address")
    cvat_dir, version = data.get("cvat_dir"), data.get("cvat_version")
    share_path, share_group = data.get("share_path"), data.get("share_group")
    address = cvat_host()
    mode = tls_mode()
    material = tls_material(mode, address) if data.get("cvat_start") else None  # refused here, before any change
    password = None  # needed only when the admin must be created; refused while planning if missing or weak
    tags = host.get_fact(GitTagsAtHead, path=cvat_dir)
    move = release_move(cvat_dir, version, tags)  # refused here, before any change, when it makes no sense
    if data.get("cvat_start"):
        running = move.current or version  # the release cvat_server runs now
        superusers = host.get_fact(CvatSuperusers, manage_py=manage_py(running))
        if superusers is None or data.get("cvat_admin_user") not in superusers:
            password = admin_password()

    server.group(name=f"Group {share_group}", group=share_group, system=True)
    files.directory(name=f"Share {share_path} (2775, group {share_group})", path=share_path, user="root",
                    group=share_group, mode="2775")

    wanted = data.get("cvat_share_services")
    nuctl_release = compat.nuctl_version(data)
    upgrade = move.is_switch and bool(data.get("cvat_start"))  # done by labforge-data upgrade, below
    if tags is not None and version in tags and not move.is_switch:  # checked out already: check its files now
        problem = compose.version_mismatch(read(f"{cvat_dir}/{compose.SERVERLESS_COMPOSE}") or "", nuctl_release, version)
        if problem:
            raise Refused(problem)
        services = compose.share_services(wanted, read(f"{cvat_dir}/docker-compose.yml"))
    elif upgrade:  # fetch the new tag and check its files; labforge-data switches HEAD later
        services = compose.share_services(wanted, None)
        server.shell(name=f"CVAT {version}: fetch the tag and check its files (dashboard/nuctl, services) first",
                     commands=[f"git -C {cvat_dir} fetch --quiet --depth 1 origin tag {version} && "
                               f"{{ {compose.tag_checks_command(cvat_dir, version, nuctl_release, services)}; }}"])
    else:  # the tag's files are only on the host once fetched: the checkout op checks them before switching
        services = compose.share_services(wanted, None)
        checkout(cvat_dir, version, tags, compose.tag_checks_command(cvat_dir, version, nuctl_release, services))

    override = compose.render_override(services, share_path, exposure.cvat_ports(mode),
                                       data.get("nuclio_dashboard_publish"), tls=mode != "off",
                                       inference_address=inference_address, release=version)
    env_text = f"# Managed by labforge: passed to docker compose with --env-file\nCVAT_HOST={address}\n"
    files.put(name=compose.OVERRIDE, src=StringIO(override), dest=f"{cvat_dir}/{compose.OVERRIDE}", mode="0644")
    files.directory(name="/etc/labforge", path="/etc/labforge", mode="0755")
    files.put(name=f"{ENV_FILE} (CVAT_HOST={address})", src=StringIO(env_text), dest=ENV_FILE, mode="0644")
    files.template(name="CVAT API wait script", src="templates/wait-cvat-api.sh.j2", dest=WAIT_API, mode="0755",
                   cvat_host=address, timeout=int(data.get("cvat_api_timeout")), tls=mode != "off", create_remote_dir=True)
    if not data.get("cvat_start"):
        return

    secrets.private_upload_dir()
    guard = files.put(name="Nuclio guard (labforge/nuclio_guard.py)", src=str(REPO / "labforge" / "nuclio_guard.py"),
                      dest=compose.GUARD_SCRIPT, mode="0644", create_remote_dir=True)
    certificate = tls_files(material, address)
    install_program()
    recover()
    files.file(name="No shell upgrade script (labforge-data upgrades now)", path=upgrades.OLD_SCRIPT, present=False)
    if move.is_switch or move.unfinished:
        switch_release(move)
    if not serverless:
        report.served_by(f"functions from the Nuclio dashboard of {data.get('inference_host')} at "
                         f"http://{data.get('inference_address')}:{split.DASHBOARD_PORT} (no local Nuclio)")
    report.cvat_at(f"https://{address}" if mode != "off" else f"http://{address}:8080", data.get("cvat_admin_user"))
    digest = compose.inputs_digest(version, override, env_text)
    states = host.get_fact(ComposeServiceStates, project=PROJECT, cvat_dir=cvat_dir, compose_args=compose_args(serverless))
    all_running = bool(states) and all(state == "running" for state in states.values())
    device = host.get_fact(DockerVolumeDevice, volume=compose.SHARE_VOLUME)
    share_moved = device is not None and device != share_path
    if share_moved:
        # The share moved: the services must let go of the old volume before it can be made again (the files of
        # both directories stay where they are: the volume is only a bind of the directory).
        server.shell(name=f"Recreate the share volume ({device} -> {share_path})", commands=[
            f"cd {cvat_dir} && docker compose -p {PROJECT} {compose_args(serverless)} rm --stop --force {' '.join(services)}",
            f"docker volume rm {compose.SHARE_VOLUME}",
        ])
    if (read(DIGEST_FILE) or "").strip() != digest or not all_running or share_moved:
        # under the data lock: a backup or restore holding the stack stopped is waited for, never started under it
        server.shell(name=f"docker compose up -d (CVAT{' + serverless' if serverless else ''})", commands=[
            f"cd {cvat_dir} && {backups.under_lock(f'docker compose -p {PROJECT} {compose_args(serverless)} up -d')}",
            f"echo {digest} > {DIGEST_FILE}",
        ])
    elif certificate is not None:  # traefik reads its certificate when it starts (the file provider watches tls.yml only)
        server.shell(name="Restart traefik for its new certificate", commands=["docker restart traefik"],
                     _if=certificate)
    # the guard reads its program when it starts, and compose recreates it only when its settings change
    server.shell(name="Restart the Nuclio guard for its new program", commands=[f"docker restart {compose.GUARD_SERVICE}"],
                 _if=guard.did_change)
    if password is not None:
        create_admin(data.get("cvat_admin_user"), data.get("cvat_admin_email"), password)
    else:  # a run killed between writing the credentials and using them left them behind: never keep them
        files.file(name="No CVAT admin credentials left behind", path=ADMIN_ENV, present=False)


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


def admin_password() -> str:
    try:
        return secrets.admin_password(host.data.get("cvat_admin_user"), host.data.get("cvat_admin_password_file"))
    except secrets.WeakSecret as exc:
        raise Refused(str(exc)) from exc


def create_admin(user: str, email: str, password: str) -> None:
    """createsuperuser --noinput with the secret in a root-only env file (never on a command line), then removed."""
    env = f"DJANGO_SUPERUSER_USERNAME={user}\nDJANGO_SUPERUSER_EMAIL={email}\nDJANGO_SUPERUSER_PASSWORD={password}\n"
    secrets.put_secret("CVAT admin credentials (root-only, removed after use)", env, ADMIN_ENV)
    manage = "docker exec {opts} cvat_server python3 " + manage_py(host.data.get("cvat_version"))
    exists = (f"{manage.format(opts='')} shell -c 'from django.contrib.auth import get_user_model as m; "
              f"print(m().objects.filter(username=\"{user}\").exists())' | grep -qx True")
    create = f"{manage.format(opts=f'--env-file {ADMIN_ENV}')} createsuperuser --noinput"
    server.shell(name=f"Create CVAT admin '{user}' (once)", commands=[
        WAIT_API,
        f"( {exists} || {create} ); rc=$?; rm -f {ADMIN_ENV}; exit $rc",
    ])


# --- moving between releases (labforge/upgrades.py) ------------------------------------------------------------------


def manage_py(version: str) -> str:
    return compat.manage_py(host.data, version)


def journal() -> dict | None:
    """The journal an unfinished upgrade left, or None."""
    lines = host.get_fact(FileContents, path=upgrades.STATE)
    return None if lines is None else read_upgrade_journal("\n".join(lines))


def release_move(cvat_dir: str, version: str, tags: list[str] | None) -> upgrades.Move:
    """From which release to which this converge moves the host; an unfinished upgrade counts as at its old release
    until the new one was verified (the script rolls it back first)."""
    current = compat.release_at_head(tags, host.data.get("cvat_stack_compat") or {})
    if not host.data.get("cvat_start"):  # CVAT's files only: labforge runs no stack here, so the checkout just moves
        return upgrades.Move(current, version)
    unfinished = journal()
    if unfinished:
        current = unfinished.get("to") if unfinished.get("phase") == "verified" else unfinished.get("from")
        report.notice(f"an upgrade {unfinished.get('from')} -> {unfinished.get('to')} did not finish (phase "
                      f"{unfinished.get('phase')}): this run finishes or rolls it back first")
    needs_backups = host.data.get("restore_backup") and current and compat.release(version) < compat.release(current)
    complete = host.get_fact(BackupList, program=backups.DATA_PROGRAM) if needs_backups else {}
    try:
        return upgrades.plan(host.data, current, complete, interrupted=bool(unfinished))
    except (upgrades.UpgradeRefused, compat.Incompatible) as exc:
        raise Refused(str(exc)) from exc


def switch_release(move: upgrades.Move) -> None:
    """Run `labforge-data upgrade` in its own systemd unit and wait for it; one that a killed run left is waited for
    first. The script's last line says what happened; on failure it is the run's error."""
    args = " ".join([move.wanted, compat.nuctl_version(host.data), *([move.restore] if move.restore else [])])
    what = (f"CVAT {move.current} -> {move.wanted}" if move.is_switch else f"CVAT: finish the unfinished upgrade to {move.wanted}")
    # labforge-data holds the data lock for the script: no backup or restore runs meanwhile, the timer's included
    done = server.shell(name=f"{what} (backup first, rollback on failure)", commands=[backups.in_unit(
        upgrades.UNIT, f"{backups.DATA_PROGRAM} --wait {backups.CONVERGE_LOCK_WAIT} upgrade {args}", upgrades.LOG)])
    python.call(name="Say what the upgrade did", function=_say_upgraded, op=done)


def _say_upgraded(op) -> None:
    line = next((line for line in reversed(op.stdout_lines) if line.startswith(("upgraded=", "at="))), "")
    if line.startswith("upgraded="):
        report.notice(upgrades.summary(line))
