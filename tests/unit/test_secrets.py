"""The admin password policy: from the environment or a file outside the repo, never weak, never missing."""

import pytest

from labforge import secrets
from labforge.secrets import WeakSecret, admin_password


def test_from_environment():
    assert admin_password("admin", None, {secrets.ENV_VAR: "x7!Qm2#pLw9$Tz"}) == "x7!Qm2#pLw9$Tz"


def test_from_file_outside_repo(tmp_path):
    secret = tmp_path / "cvat-admin"
    secret.write_text("correct-horse-battery\n")
    assert admin_password("admin", str(secret), {}) == "correct-horse-battery"


def test_environment_wins_over_file(tmp_path):
    secret = tmp_path / "cvat-admin"
    secret.write_text("correct-horse-battery\n")
    assert admin_password("admin", str(secret), {secrets.ENV_VAR: "x7!Qm2#pLw9$Tz"}) == "x7!Qm2#pLw9$Tz"


def test_file_inside_repo_refused():
    with pytest.raises(WeakSecret, match="inside the repository"):
        admin_password("admin", str(secrets.REPO / "README.md"), {})


def test_unreadable_file(tmp_path):
    with pytest.raises(WeakSecret, match="cannot read cvat_admin_password_file"):
        admin_password("admin", str(tmp_path / "missing"), {})


def test_missing_refused_with_instructions():
    with pytest.raises(WeakSecret, match="export LABFORGE_CVAT_ADMIN_PASSWORD"):
        admin_password("admin", None, {})


@pytest.mark.parametrize(("password", "problem"), [
    ("short", "shorter than 12"),
    ("changeme1111", "well-known default"),
    ("Password!!!!", "well-known default"),
    ("aaaaaaaabbbbbbbb", "fewer than 5 distinct"),
    ("the-admin-is-here", "contains the admin user name"),
])
def test_weak_passwords_refused(password, problem):
    with pytest.raises(WeakSecret, match=problem):
        admin_password("admin", None, {secrets.ENV_VAR: password})
