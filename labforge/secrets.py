"""The CVAT admin password: from the control machine's environment or a file outside the repo, never weak."""

from __future__ import annotations

import os
from pathlib import Path

ENV_VAR = "LABFORGE_CVAT_ADMIN_PASSWORD"
MIN_LENGTH = 12
MIN_SCORE = 3  # zxcvbn's scale: 0 too guessable ... 4 very unguessable; 3 is "safely unguessable"
REPO = Path(__file__).resolve().parents[1]


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
