"""CVAT layer: pinned checkout, read-only lab share, what the stack publishes, TLS, stack up, admin account.

CVAT's own files are never edited: the share, the published ports and TLS live in docker-compose.custom.override.yml
and CVAT_HOST in /etc/labforge/cvat.env, both passed to `docker compose` explicitly. What it uses lives in labforge/:
the address and TLS (cvat_site.py), the release and its move (cvat_release.py), the admin (cvat_admin.py).
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import files, server

from labforge import backups, compat, compose, exposure, report, secrets, split, upgrades
from labforge.compose import DIGEST_FILE, ENV_FILE, PROJECT, WAIT_API, compose_args
from labforge.cvat_admin import ADMIN_ENV, admin_password, create_admin
from labforge.cvat_release import checkout, manage_py, release_move, switch_release
from labforge.cvat_site import cvat_host, read, tls_files, tls_material, tls_mode
from labforge.data_host import install_program, recover
from labforge.facts import ComposeServiceStates, CvatSuperusers, DockerVolumeDevice, GitTagsAtHead
from labforge.paths import REPO
from labforge.report import Refused


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
