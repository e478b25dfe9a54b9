"""CVAT's admin account, for the CVAT layer (tasks/cvat.py): its password read and checked on the control machine
(labforge/secrets.py), and created once through `manage.py createsuperuser` with the secret in a root-only file,
never on a command line (docs/security.md)."""

from __future__ import annotations

from pyinfra import host
from pyinfra.operations import server

from labforge import compat, secrets
from labforge.compose import WAIT_API
from labforge.report import Refused

ADMIN_ENV = "/root/.labforge-cvat-admin.env"  # /root is root-only: the file is never readable by others, even before its chmod


def admin_password() -> str:
    try:
        return secrets.admin_password(host.data.get("cvat_admin_user"), host.data.get("cvat_admin_password_file"))
    except secrets.WeakSecret as exc:
        raise Refused(str(exc)) from exc


def create_admin(user: str, email: str, password: str) -> None:
    """createsuperuser --noinput with the secret in a root-only env file (never on a command line), then removed."""
    env = f"DJANGO_SUPERUSER_USERNAME={user}\nDJANGO_SUPERUSER_EMAIL={email}\nDJANGO_SUPERUSER_PASSWORD={password}\n"
    secrets.put_secret("CVAT admin credentials (root-only, removed after use)", env, ADMIN_ENV)
    manage = "docker exec {opts} cvat_server python3 " + compat.manage_py(host.data, host.data.get("cvat_version"))
    exists = (f"{manage.format(opts='')} shell -c 'from django.contrib.auth import get_user_model as m; "
              f"print(m().objects.filter(username=\"{user}\").exists())' | grep -qx True")
    create = f"{manage.format(opts=f'--env-file {ADMIN_ENV}')} createsuperuser --noinput"
    server.shell(name=f"Create CVAT admin '{user}' (once)", commands=[
        WAIT_API,
        f"( {exists} || {create} ); rc=$?; rm -f {ADMIN_ENV}; exit $rc",
    ])
