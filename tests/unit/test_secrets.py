"""The admin password policy: from the environment or a file outside the repo, never weak, never missing."""

import re

import pytest

from labforge import secrets
from labforge.paths import REPO
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
        admin_password("admin", str(REPO / "README.md"), {})


def test_unreadable_file(tmp_path):
    with pytest.raises(WeakSecret, match="cannot read cvat_admin_password_file"):
        admin_password("admin", str(tmp_path / "missing"), {})


def test_missing_refused_with_instructions():
    with pytest.raises(WeakSecret, match="export LABFORGE_CVAT_ADMIN_PASSWORD"):
        admin_password("admin", None, {})


@pytest.mark.parametrize(("password", "problem"), [
    ("short", "shorter than 12"),
    ("password1234", "too easy to guess (This is a very common password; zxcvbn score 1 of 4, 3 needed)"),
    ("changeme1111", "similar to a commonly used password"),
    ("Password!!!!", "similar to a commonly used password"),
    ("qwertyuiop12", "too easy to guess"),
    ("aaaaaaaabbbbbbbb", "Repeats like"),
    ("the-admin-is-here", "contains the admin user name"),
])
def test_weak_passwords_refused(password, problem):
    with pytest.raises(WeakSecret, match=re.escape(problem)):
        admin_password("admin", None, {secrets.ENV_VAR: password})


@pytest.mark.parametrize("password", ["x7!Qm2#pLw9$Tz", "correct-horse-battery", "Tr0ub4dor&3xyz"])
def test_strong_passwords_pass(password):
    assert secrets.policy_problem(password, "admin") is None
