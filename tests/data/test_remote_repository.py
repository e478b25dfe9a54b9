"""A backup repository off the host, with credentials: real restic (its s3 backend) against a real S3 implementation
that checks every request's signature (moto's server with IAM authentication on: moto/settings.py
INITIAL_NO_AUTH_ACTION_COUNT, after the few unauthenticated calls that make the lab's user and key). The credentials
reach restic only through labforge-data's environment for it (backup_repository_env_file, checked on the control
machine by labforge/backup_credentials.py and put on the host root-only as /etc/labforge/backup/repository.env).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from labforge import backup_credentials as bc
from labforge import data_program as dp
from testlab.s3 import s3_server
from tests.data.test_data_program import VOLUMES, World, WorldRunner

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (./install.sh as root)")


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    """(endpoint, access key id, secret) of a real S3 implementation that checks signatures (testlab/s3.py)."""
    pytest.importorskip("boto3")
    with s3_server(tmp_path_factory.mktemp("moto") / "moto.log") as server:
        yield server.endpoint, server.key_id, server.secret


class Recording(WorldRunner):
    """The world's runner, also keeping every argv restic got (a secret must never be on a command line)."""

    def __init__(self, world):
        super().__init__(world)
        self.argvs: list[list[str]] = []

    def run(self, argv, env=None, cwd=None, timeout=None, stdin=None):
        self.argvs.append(list(argv))
        return super().run(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin)


def keeper(tmp_path: Path, world: World, endpoint: str, credentials: dict[str, str] | None) -> dp.Keeper:
    (tmp_path / "password").write_text("correct horse battery staple\n")
    config = {"project": "cvat", "compose": ["-f", "docker-compose.yml"], "cvat_dir": str(tmp_path), "volumes": VOLUMES,
              "online_volumes": VOLUMES, "repository": f"s3:{endpoint}/labforge/{tmp_path.name}",
              "password_file": str(tmp_path / "password"), "cache_dir": str(tmp_path / "cache"), "keep": 2,
              "reserve_bytes": 0, "wait_api": "wait-api", "upgrade": {"state": str(tmp_path / "upgrade.state")}}
    if credentials is not None:
        env_file = tmp_path / "repository.env"
        env_file.write_text(bc.host_text(credentials))
        env_file.chmod(0o600)
        config["repository_env"] = str(env_file)
    return dp.Keeper(config, Recording(world), journal_path=str(tmp_path / "journal.json"),
                     last_path=str(tmp_path / "last.json"), lock=dp.Lock(str(tmp_path / "lock")))


def test_backup_and_restore_through_a_repository_that_needs_credentials(tmp_path, s3):
    endpoint, key_id, secret = s3
    world = World(tmp_path)
    world.write("a")
    k = keeper(tmp_path, world, endpoint, {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret,
                                          "AWS_DEFAULT_REGION": "us-east-1"})
    taken = k.backup("manual")
    assert taken["result"] == "ok" and world.running
    world.write("b")
    assert k.restore(taken["name"])["restored"] == taken["name"]
    assert world.labels() == {"a"} and world.running
    assert [s.name for s in k.snapshots() if s.kind == "manual"] == [taken["name"]]
    assert not any(key_id in arg or secret in arg for argv in k.runner.argvs for arg in argv)


@pytest.mark.parametrize("wrong", ["secret", "key id"])
def test_with_wrong_credentials_nothing_stops_and_one_line_says_why(tmp_path, s3, wrong):
    """The repository refuses us: the backup stops before CVAT is stopped, with the backend's own words. (No case
    without credentials: restic's S3 client then asks the EC2 metadata address, which tests never contact.)"""
    endpoint, key_id, secret = s3
    world = World(tmp_path)
    world.write("a")
    given = {"AWS_ACCESS_KEY_ID": key_id, "AWS_SECRET_ACCESS_KEY": secret[::-1]} if wrong == "secret" else \
        {"AWS_ACCESS_KEY_ID": key_id[::-1], "AWS_SECRET_ACCESS_KEY": secret}
    k = keeper(tmp_path, world, endpoint, given)
    with pytest.raises(dp.Failed) as failed:
        k.backup("manual")
    assert "\n" not in str(failed.value) and "making the backup repository failed" in str(failed.value), failed.value
    assert "compose stop" not in k.runner.commands and world.running
    print(failed.value)
