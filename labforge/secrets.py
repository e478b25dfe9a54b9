"""The CVAT admin password: from the control machine's environment or a file outside the repo, never weak."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LABFORGE_CVAT_ADMIN_PASSWORD"
MIN_LENGTH = 12
WEAK = {"admin", "administrator", "password", "changeme", "cvat", "secret", "letmein", "qwerty", "123456"}
REPO = Path(__file__).resolve().parents[1]


class WeakSecret(ValueError):
    """No usable admin password; the message says where to put one."""


def policy_problem(password: str, username: str) -> str | None:
    if len(password) < MIN_LENGTH:
        return f"is shorter than {MIN_LENGTH} characters"
    lowered = password.lower()
    if lowered in WEAK or any(lowered.startswith(w) and len(set(lowered[len(w):])) <= 2 for w in WEAK):
        return "is a well-known default"
    if len(set(password)) < 5:
        return "uses fewer than 5 distinct characters"
    if username.lower() in lowered:
        return "contains the admin user name"
    return None


def admin_password(username: str, password_file: str | None, environ: dict[str, str] | None = None) -> str:
    """Return the password or raise WeakSecret with one actionable line."""
    environ = os.environ if environ is None else environ
    source = f"${ENV_VAR}"
    password = environ.get(ENV_VAR, "")
    if not password and password_file:
        path = Path(password_file).expanduser().resolve()
        if path == REPO or REPO in path.parents:
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
