"""backup_repository_env_file: a remote repository's credentials, checked on the control machine and given to restic
on the host only through its environment (tests/data/test_remote_repository.py runs restic with them)."""

from __future__ import annotations

import json

import pytest

from labforge import backup_credentials as bc
from labforge import backups, data_program
from labforge.paths import REPO

BOOKWORM, JAMMY, NOBLE = (0, 14, 0), (0, 12, 1), (0, 16, 4)


def secret_file(tmp_path, text: str, mode: int = 0o600):
    path = tmp_path / "s3.env"
    path.write_text(text)
    path.chmod(mode)
    return path


def test_a_private_file_outside_git_gives_restic_its_backend_variables(tmp_path):
    path = secret_file(tmp_path, "# the lab's bucket\nAWS_ACCESS_KEY_ID=AKIA123\n\nAWS_SECRET_ACCESS_KEY=a/b+c=d==\n")
    found = bc.load(str(path), BOOKWORM)
    assert found == {"AWS_ACCESS_KEY_ID": "AKIA123", "AWS_SECRET_ACCESS_KEY": "a/b+c=d=="}  # the value: all after the first =
    assert bc.host_text(found) == "AWS_ACCESS_KEY_ID=AKIA123\nAWS_SECRET_ACCESS_KEY=a/b+c=d==\n"


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o660])
def test_a_file_others_can_read_is_refused_with_the_fix(tmp_path, mode):
    path = secret_file(tmp_path, "AWS_ACCESS_KEY_ID=x\n", mode)
    with pytest.raises(bc.CredentialsProblem, match=rf"can be read by others \(mode 0{mode:o}\): chmod 600 "):
        bc.load(str(path), BOOKWORM)


def test_a_file_inside_the_repository_is_refused_even_when_private(tmp_path):
    inside = REPO / "tests" / "unit" / "leaked-credentials.env"
    try:
        inside.write_text("AWS_ACCESS_KEY_ID=x\n")
        inside.chmod(0o600)
        with pytest.raises(bc.CredentialsProblem, match="inside the repository; keep secrets outside git"):
            bc.load(str(inside), BOOKWORM)
    finally:
        inside.unlink()


def test_a_missing_file_is_one_line(tmp_path):
    with pytest.raises(bc.CredentialsProblem, match=r"cannot read backup_repository_env_file .*No such file"):
        bc.load(str(tmp_path / "absent.env"), BOOKWORM)


@pytest.mark.parametrize(("text", "why"), [
    ("RESTIC_PASSWORD=hunter2\n", "RESTIC_PASSWORD is not a restic backend's variable"),
    ("RESTIC_REPOSITORY=/tmp/elsewhere\n", "RESTIC_REPOSITORY is not a restic backend's variable"),
    ("LD_PRELOAD=/tmp/x.so\n", "LD_PRELOAD is not a restic backend's variable"),
    ("TMPDIR=/tmp\n", "TMPDIR is not"),
    ("AWS_SHARED_CREDENTIALS_FILE=/root/.aws/credentials\n", "names a file on the host"),
    ("GOOGLE_APPLICATION_CREDENTIALS=/root/key.json\n", "names a file on the host"),
    ('export AWS_ACCESS_KEY_ID="x"\n', "line 1 is not NAME=VALUE"),
    ("AWS_ACCESS_KEY_ID=x\nAWS_ACCESS_KEY_ID=y\n", "line 2: AWS_ACCESS_KEY_ID is set twice"),
    ("AWS_ACCESS_KEY_ID=\n", "has no value"),
    ("# nothing\n\n", "sets nothing"),
    ('AWS_ACCESS_KEY_ID="AKIA123"\n', "value is quoted; values are taken as they are: remove the quotes"),
    ("\ufeffAWS_ACCESS_KEY_ID=x\r\nAWS_ACCESS_KEY_ID=y\r\n", "line 2: AWS_ACCESS_KEY_ID is set twice"),
])
def test_what_restic_must_not_take_from_it_is_refused_naming_the_line(tmp_path, text, why):
    with pytest.raises(bc.CredentialsProblem, match=why):
        bc.load(str(secret_file(tmp_path, text)), BOOKWORM)


def test_a_variable_the_hosts_restic_does_not_read_is_refused_for_that_release_only(tmp_path):
    """RESTIC_REST_USERNAME is in restic's manual at v0.16.4 (noble), not at v0.14.0 (bookworm); AZURE_ACCOUNT_SAS
    is read from v0.14.0, not at v0.12.1 (jammy). Ignored silently, the server would refuse us for no clear reason."""
    rest = secret_file(tmp_path, "RESTIC_REST_USERNAME=lab\nRESTIC_REST_PASSWORD=pw\n")
    assert bc.load(str(rest), NOBLE)["RESTIC_REST_USERNAME"] == "lab"
    with pytest.raises(bc.CredentialsProblem, match=r"read from restic 0\.16\.4 on; this host's restic is 0\.14\.0"):
        bc.load(str(rest), BOOKWORM)
    sas = secret_file(tmp_path, "AZURE_ACCOUNT_SAS=sv=2026\n")
    assert bc.load(str(sas), BOOKWORM) == {"AZURE_ACCOUNT_SAS": "sv=2026"}
    with pytest.raises(bc.CredentialsProblem, match=r"0\.14\.0 on; this host's restic is 0\.12\.1"):
        bc.load(str(sas), JAMMY)
    token = secret_file(tmp_path, "AWS_SESSION_TOKEN=t\n")  # read through minio-go's EnvAWS at 0.12.1 already
    assert bc.load(str(token), JAMMY) == {"AWS_SESSION_TOKEN": "t"}


def settings(**extra) -> dict:
    from labforge import groupdata
    return {**groupdata.load(), **extra}


def test_credentials_for_a_repository_on_the_host_are_refused():
    problem = backups.settings_problem(settings(backup_repository_env_file="/secure/s3.env"))
    assert problem and "backup_repository_env_file is for a repository elsewhere" in problem
    assert backups.settings_problem(settings(backup_repository="s3:https://s3.example.org/lab",
                                             backup_repository_env_file="/secure/s3.env")) is None


def config(**extra) -> dict:
    return backups.program_config(settings(**extra), codename="bookworm", serverless=True, period=None, upgrade={})


def test_the_program_is_told_where_the_hosts_copy_is_and_nothing_of_its_content():
    remote = config(backup_repository="s3:https://s3.example.org/lab", backup_repository_env_file="/secure/s3.env")
    assert remote["repository_env"] == bc.HOST_FILE
    assert "AKIA" not in json.dumps(remote)
    assert "repository_env" not in config()


def test_the_program_gives_restic_the_credentials_in_its_environment_only(tmp_path):
    env_file = tmp_path / "repository.env"
    env_file.write_text(bc.host_text({"AWS_ACCESS_KEY_ID": "AKIA123", "AWS_SECRET_ACCESS_KEY": "s=cret"}))
    calls = []

    class Recorder(data_program.Runner):
        def run(self, argv, env=None, cwd=None, timeout=None):
            calls.append((argv, env))
            return data_program.Result(0, "[]", "")

    keeper = data_program.Keeper({"repository": "s3:https://s3.example.org/lab", "password_file": "/p",
                                  "repository_env": str(env_file)}, Recorder(), journal_path=str(tmp_path / "j"),
                                 last_path=str(tmp_path / "l"), lock=data_program.Lock(str(tmp_path / "lock")))
    keeper.snapshots()
    argv, env = calls[0]
    assert env["AWS_ACCESS_KEY_ID"] == "AKIA123" and env["AWS_SECRET_ACCESS_KEY"] == "s=cret"
    assert env["RESTIC_REPOSITORY"] == "s3:https://s3.example.org/lab" and env["RESTIC_PASSWORD_FILE"] == "/p"
    assert not any("AKIA123" in a or "s=cret" in a for a in argv)
    env_file.unlink()
    with pytest.raises(data_program.Failed, match=f"{env_file} is missing: converge first"):
        keeper.snapshots()
