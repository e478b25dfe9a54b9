"""The CVAT admin password: from the control machine's environment or a file outside the repo, never weak."""

from __future__ import annotations

import os
from io import StringIO
from pathlib import Path

from labforge.paths import inside

ENV_VAR = "LABFORGE_CVAT_ADMIN_PASSWORD"
MIN_LENGTH = 12
MIN_SCORE = 3  # zxcvbn's scale: 0 too guessable ... 4 very unguessable; 3 is "safely unguessable"


class WeakSecret(ValueError):
    """No usable admin password; the message says where to put one."""


def policy_problem(password: str, username: str) -> str | None:
    """Why this password is refused, or None.

    Besides length and the user name, the judge is zxcvbn (PyPI zxcvbn 4.5.0, Dropbox's estimator):
    it matches the password against its frequency lists of common passwords, words and names, and
    against keyboard walks, repeats, sequences and dates, and says why a password is weak.
    """
    from zxcvbn import zxcvbn

    if len(password) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    if username.lower() in password.lower():
        return "contains the admin user name"
    result = zxcvbn(password, user_inputs=[username, "cvat", "labforge"])
    if result["score"] < MIN_SCORE:
        why = (result["feedback"].get("warning") or "it is easy to guess").rstrip(".")
        return f"is too easy to guess ({why}; zxcvbn score {result['score']} of 4, {MIN_SCORE} needed)"
    return None


def admin_password(username: str, password_file: str | None, environ: dict[str, str] | None = None) -> str:
    """Return the password or raise WeakSecret with one actionable line."""
    environ = os.environ if environ is None else environ
    source = f"${ENV_VAR}"
    password = environ.get(ENV_VAR, "")
    if not password and password_file:
        path = Path(password_file).expanduser().resolve()
        if inside(path):
            raise WeakSecret(f"cvat_admin_password_file {path} is inside the repository; keep secrets outside git")
        try:
            password = path.read_text().strip()
        except OSError as exc:
            raise WeakSecret(f"cannot read cvat_admin_password_file {path}: {exc.strerror}") from exc
        source = str(path)
    if not password:
        raise WeakSecret(f"no CVAT admin password: export {ENV_VAR}=... or set cvat_admin_password_file "
                         "(a file outside the repo) before running")
    problem = policy_problem(password, username)
    if problem:
        raise WeakSecret(f"the CVAT admin password from {source} {problem}; choose a stronger one")
    return password


# Where pyinfra stages our secret uploads on the host: a directory only the SSH user can enter. pyinfra 3.10 uploads a
# file under --sudo by SFTP to <TmpDir>/pyinfra-<sha1 of dest> with the SFTP server's default mode (paramiko's putfo
# sends no mode; 0666 & ~umask), then `cp`s it into place as root and chmods it afterwards (pyinfra/connectors/ssh.py
# put_file, lines 593-636; operations/files.py put, lines 1148-1178): in /tmp any local user can read it meanwhile, and
# the name is predictable. files.put honours the `_temp_dir` argument for that staging file (files.py line 1151).
UPLOAD_DIR = "/var/lib/labforge/upload"


def private_upload_dir() -> str:
    """Make UPLOAD_DIR (0700, owned by the SSH user) and return it; before any secret is uploaded."""
    from pyinfra import host
    from pyinfra.operations import files

    from labforge.facts import LoginUser

    files.directory(name="/var/lib/labforge", path="/var/lib/labforge", user="root", group="root", mode="0755")
    files.directory(name=f"{UPLOAD_DIR} (staging for secrets, the SSH user only)", path=UPLOAD_DIR,
                    user=host.get_fact(LoginUser), mode="0700")
    return UPLOAD_DIR


def put_secret(name: str, text: str, dest: str):
    """Upload `text` to `dest` (mode 0600, root) so that no other user can read it at any moment: staged in
    UPLOAD_DIR, and `dest` must lie in a directory only root can enter (cp creates it 0644 before the chmod)."""
    from pyinfra.operations import files

    return files.put(name=name, src=StringIO(text), dest=dest, user="root", group="root", mode="0600", _temp_dir=UPLOAD_DIR)
