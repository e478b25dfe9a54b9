"""CVAT layer: pinned checkout, read-only lab share, LAN exposure, stack up, admin account.

CVAT's own files are never edited: the share lives in docker-compose.custom.override.yml and
CVAT_HOST in /etc/labforge/cvat.env, both passed to `docker compose` explicitly.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Directory, FileContents
from pyinfra.operations import files, server

from labforge import compose, report, secrets
from labforge.compose import DIGEST_FILE, ENV_FILE, PROJECT, WAIT_API, compose_args
from labforge.facts import ComposeServiceStates, CvatSuperusers, DockerVolumeDevice, GitTagsAtHead, PrimaryIpv4
from labforge.report import Refused

ADMIN_ENV = "/root/.labforge-cvat-admin.env"


def cvat_host() -> str:
    address = host.data.get("cvat_host") or host.get_fact(PrimaryIpv4)
    if not address:
        raise Refused(f"{host.name}: no default-route IPv4 address found; set cvat_host to the name or address "
                          "users type to reach CVAT. Nothing was changed.")
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
            raise Refused(f"{host.name}: {cvat_dir} exists but is not a git checkout; move it away or set "
                              "cvat_dir. Nothing was changed.")
        command = (f"git clone --quiet --depth 1 --branch {version} --no-checkout {url} {cvat_dir} && "
                   f"{{ {checks} || {{ rm -rf {cvat_dir}; exit 1; }}; }} && {switch}")
    else:
        command = f"git -C {cvat_dir} fetch --quiet --depth 1 origin tag {version} && {{ {checks}; }} && {switch}"
    server.shell(name=f"CVAT {version} checkout (dashboard/nuctl and services checked first)", commands=[command])


@deploy("CVAT")
def cvat() -> None:
    data = host.data
    cvat_dir, version = data.get("cvat_dir"), data.get("cvat_version")
    share_path, share_group = data.get("share_path"), data.get("share_group")
    address = cvat_host()
    password = None  # needed only when the admin must be created; refused while planning if missing or weak
    if data.get("cvat_start"):
        superusers = host.get_fact(CvatSuperusers)
        if superusers is None or data.get("cvat_admin_user") not in superusers:
            password = admin_password()

    server.group(name=f"Group {share_group}", group=share_group, system=True)
    files.directory(name=f"Share {share_path} (2775, group {share_group})", path=share_path, user="root",
                    group=share_group, mode="2775")

    wanted = data.get("cvat_share_services")
    tags = host.get_fact(GitTagsAtHead, path=cvat_dir)
    if tags is not None and version in tags:  # checked out already: check its files while planning
        problem = compose.version_mismatch(read(f"{cvat_dir}/{compose.SERVERLESS_COMPOSE}") or "",
                                           data.get("nuctl_version"), version)
        if problem:
            raise Refused(f"{host.name}: {problem}. Nothing was changed.")
        services = compose.share_services(wanted, read(f"{cvat_dir}/docker-compose.yml"))
    else:  # the tag's files are only on the host once fetched: the checkout op checks them before switching
        services = compose.share_services(wanted, None)
        checkout(cvat_dir, version, tags, compose.tag_checks_command(cvat_dir, version, data.get("nuctl_version"), services))

    override = compose.render_override(services, share_path)
    env_text = f"# Managed by labforge: passed to docker compose with --env-file\nCVAT_HOST={address}\n"
    files.put(name=compose.OVERRIDE, src=StringIO(override), dest=f"{cvat_dir}/{compose.OVERRIDE}", mode="0644")
    files.directory(name="/etc/labforge", path="/etc/labforge", mode="0755")
    files.put(name=f"{ENV_FILE} (CVAT_HOST={address})", src=StringIO(env_text), dest=ENV_FILE, mode="0644")
    files.template(name="CVAT API wait script", src="templates/wait-cvat-api.sh.j2", dest=WAIT_API, mode="0755",
                   cvat_host=address, timeout=int(data.get("cvat_api_timeout")), create_remote_dir=True)
    if not data.get("cvat_start"):
        return

    report.cvat_at(f"http://{address}:8080", data.get("cvat_admin_user"))
    digest = compose.inputs_digest(version, override, env_text)
    states = host.get_fact(ComposeServiceStates, project=PROJECT, cvat_dir=cvat_dir, compose_args=compose_args())
    all_running = bool(states) and all(state == "running" for state in states.values())
    device = host.get_fact(DockerVolumeDevice, volume=compose.SHARE_VOLUME)
    share_moved = device is not None and device != share_path
    if share_moved:
        # The share moved: the services must let go of the old volume before it can be made again (the files of
        # both directories stay where they are: the volume is only a bind of the directory).
        server.shell(name=f"Recreate the share volume ({device} -> {share_path})", commands=[
            f"cd {cvat_dir} && docker compose -p {PROJECT} {compose_args()} rm --stop --force {' '.join(services)}",
            f"docker volume rm {compose.SHARE_VOLUME}",
        ])
    if (read(DIGEST_FILE) or "").strip() != digest or not all_running or share_moved:
        server.shell(name="docker compose up -d (CVAT + serverless)", commands=[
            f"cd {cvat_dir} && docker compose -p {PROJECT} {compose_args()} up -d",
            f"echo {digest} > {DIGEST_FILE}",
        ])
    if password is not None:
        create_admin(data.get("cvat_admin_user"), data.get("cvat_admin_email"), password)
    else:  # a run killed between writing the credentials and using them left them behind: never keep them
        files.file(name="No CVAT admin credentials left behind", path=ADMIN_ENV, present=False)


def admin_password() -> str:
    try:
        return secrets.admin_password(host.data.get("cvat_admin_user"), host.data.get("cvat_admin_password_file"))
    except secrets.WeakSecret as exc:
        raise Refused(f"{host.name}: {exc}. Nothing was changed.") from exc


def create_admin(user: str, email: str, password: str) -> None:
    """createsuperuser --noinput with the secret in a root-only env file (never on a command line), then removed."""
    env = f"DJANGO_SUPERUSER_USERNAME={user}\nDJANGO_SUPERUSER_EMAIL={email}\nDJANGO_SUPERUSER_PASSWORD={password}\n"
    files.put(name="CVAT admin credentials (root-only, removed after use)", src=StringIO(env), dest=ADMIN_ENV, mode="0600")
    manage = "docker exec {opts} cvat_server python3 /home/django/manage.py"
    exists = (f"{manage.format(opts='')} shell -c 'from django.contrib.auth import get_user_model as m; "
              f"print(m().objects.filter(username=\"{user}\").exists())' | grep -qx True")
    create = f"{manage.format(opts=f'--env-file {ADMIN_ENV}')} createsuperuser --noinput"
    server.shell(name=f"Create CVAT admin '{user}' (once)", commands=[
        WAIT_API,
        f"( {exists} || {create} ); rc=$?; rm -f {ADMIN_ENV}; exit $rc",
    ])
