"""The repository's password on the control machine (labforge/backup_password.py): which way it goes, and the file's
refusals. The converge's part (a fetched password, 0600 in a 0700 directory; a wrong one refused) is in the lab:
tests/lab/test_backup.py."""

from __future__ import annotations

import hashlib
import os
import stat

import pytest

from labforge import backup_password as bp
from labforge.paths import REPO

HOST_TEXT = "ab" * 32 + "\n"  # what labforge-data writes on first use: 64 hex digits and a newline


def host_digest(text: str) -> str:
    """The fact's answer: sha256 of the host's file, trimmed as restic trims it."""
    return hashlib.sha256(text.encode().strip()).hexdigest()


def private(path, text: str, mode: int = 0o600):
    path.write_text(text)
    path.chmod(mode)
    return path


def test_each_side_missing_or_equal_decides_the_way_the_password_goes(tmp_path):
    path = tmp_path / "pw"
    assert bp.plan(None, host_digest(HOST_TEXT), path, "gpu1") == bp.Plan("fetch")
    made = bp.plan(None, None, path, "gpu1")
    assert made.action == "make" and len(made.text.strip()) == 64 and made.text.endswith("\n")
    assert bp.plan(None, None, path, "gpu1").text != made.text  # never a fixed password
    assert bp.plan("s3cret", None, path, "gpu1") == bp.Plan("push", "s3cret\n")
    assert bp.plan(HOST_TEXT.strip(), host_digest(HOST_TEXT), path, "gpu1") == bp.Plan("keep")


def test_a_file_that_is_not_the_hosts_password_is_refused_with_both_ways_out(tmp_path):
    """Either side can be the one that opens the repository (a host rebuilt since made a new one): the line says how to
    take each, and labforge picks neither."""
    with pytest.raises(bp.PasswordProblem, match=r"is not the password gpu1 has for its backup repository: if the host's "
                                                 r"opens the repository, move .* away and converge to fetch it; if the "
                                                 r"file's does .* remove /etc/labforge/backup/restic-password on the host"):
        bp.plan("other", host_digest(HOST_TEXT), tmp_path / "pw", "gpu1")


def test_a_password_the_host_cannot_read_is_refused_not_taken_for_none(tmp_path):
    """Taken for "no password", the file's would have been copied over whatever the host holds."""
    with pytest.raises(bp.PasswordProblem, match="password on gpu1 cannot be read"):
        bp.plan("s3cret", bp.UNREADABLE, tmp_path / "pw", "gpu1")


def test_one_file_for_two_hosts_is_refused_with_the_placeholder_that_separates_them(tmp_path):
    same = tmp_path / "pw"
    assert bp.shared({"gpu1": same, "gpu2": tmp_path / "other"}) is None
    assert bp.shared({"gpu2": same, "gpu1": same}) == (
        f"backup_password_file {same} is the file of both gpu1 and gpu2, but each repository has its own password: put "
        "{host} in the setting (e.g. ~/lab-secrets/{host}.restic)")


def test_whitespace_around_the_password_and_a_byte_order_mark_are_dropped_as_restic_does(tmp_path):
    assert bp.digest("  " + HOST_TEXT.strip() + " \r\n") == host_digest(HOST_TEXT)
    assert bp.read(private(tmp_path / "pw", "\ufeff" + HOST_TEXT)) == HOST_TEXT.strip()


@pytest.mark.parametrize("text, mode, message", [
    (HOST_TEXT, 0o644, "can be read by others (mode 0644): chmod 600 "),
    (HOST_TEXT, 0o640, "can be read by others (mode 0640)"),
    ("\n \n", 0o600, "must hold the password on one line, and holds nothing"),
    ("one\ntwo\n", 0o600, "must hold the password on one line, and holds 2 lines"),
])
def test_the_control_machines_file_is_refused_when_unsafe_or_unclear(tmp_path, text, mode, message):
    with pytest.raises(bp.PasswordProblem, match=message.replace("(", r"\(").replace(")", r"\)")):
        bp.read(private(tmp_path / "pw", text, mode))


def test_a_file_inside_the_repository_is_refused_even_when_missing():
    with pytest.raises(bp.PasswordProblem, match="is inside the repository; keep secrets outside git"):
        bp.read(REPO / "secrets" / "restic-password")


def test_a_missing_file_is_no_password_yet_and_one_host_per_file_with_host(tmp_path):
    assert bp.read(tmp_path / "absent") is None
    assert bp.read(private(tmp_path / "pw", " " + HOST_TEXT)) == HOST_TEXT.strip()
    assert bp.path_of(f"{tmp_path}/{{host}}.restic", "gpu1") == tmp_path / "gpu1.restic"


def test_written_0600_in_a_0700_directory_whole_and_never_over_a_file_already_there(tmp_path):
    path = tmp_path / "new" / "dir" / "pw"
    bp.write_private(path, HOST_TEXT)
    assert path.read_text() == HOST_TEXT and stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700 and stat.S_IMODE(path.parent.parent.stat().st_mode) == 0o700
    with pytest.raises(bp.PasswordProblem, match="appeared while this run wrote it: converge again"):
        bp.write_private(path, "other\n")
    assert path.read_text() == HOST_TEXT and os.listdir(path.parent) == ["pw"]
