"""testinfra checks of the backups: labforge-data and restic in place, root only; the repository and its password
root only; the timer when backup_schedule is set (the default) and gone when it is not; the last good backup not
older than its schedule allows."""

from __future__ import annotations

import datetime
import json

import pytest

from labforge.backups import DATA_CONFIG, DATA_PROGRAM, LAST_RESULT, PASSWORD_FILE, TIMER
from labforge.data_program import staleness


@pytest.fixture(scope="module")
def stack_host(pins, cvat_here):
    if not pins.get("cvat_start"):
        pytest.skip("cvat_start is off: no backups on this host")


def test_the_program_its_settings_and_restic_are_in_place_root_only(host, stack_host):
    for path in (DATA_PROGRAM, DATA_CONFIG):
        found = host.file(path)
        assert found.exists and found.user == "root" and found.mode in (0o700, 0o600), path
    assert host.package("restic").is_installed


def test_the_backup_dir_and_the_password_are_root_only_when_there(host, pins, stack_host):
    for path in (pins["backup_dir"], PASSWORD_FILE.rsplit("/", 1)[0]):
        found = host.file(path)
        if found.exists:
            assert found.user == "root" and found.mode == 0o700, path
    password = host.file(PASSWORD_FILE)
    if password.exists:
        assert password.user == "root" and password.mode == 0o600


def test_the_timer_follows_backup_schedule(host, pins, stack_host):
    timer = host.service(TIMER)
    if pins.get("backup_schedule"):
        assert timer.is_enabled and timer.is_running
    else:
        assert not host.file(f"/etc/systemd/system/{TIMER}").exists


def test_the_last_good_backup_is_not_older_than_its_schedule_allows(host, stack_host):
    last = host.file(LAST_RESULT)
    if not last.exists:
        pytest.skip("no backup has run on this host yet")
    result = json.loads(last.content_string)
    assert result["result"] == "ok", f"the last backup ({result.get('name')}, {result.get('at')}) failed: {result.get('why')}"
    at = datetime.datetime.strptime(result["last_good"]["at"], "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=datetime.timezone.utc)
    age = (datetime.datetime.now(datetime.timezone.utc) - at).total_seconds()
    assert staleness(age, result.get("schedule_period_seconds")) is None
