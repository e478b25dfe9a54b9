"""testinfra checks of the backups: the scripts in place, the backup directory root-only, the timer when
backup_schedule is set (and gone when it is not), and the last backup not failed."""

from __future__ import annotations

import json

import pytest

from labforge.backups import BACKUP_SCRIPT, LAST_RESULT, RESTORE_SCRIPT, TIMER


@pytest.fixture(scope="module")
def stack_host(pins, cvat_here):
    if not pins.get("cvat_start"):
        pytest.skip("cvat_start is off: no backups on this host")


def test_backup_and_restore_scripts_are_root_only(host, stack_host):
    for path in (BACKUP_SCRIPT, RESTORE_SCRIPT):
        script = host.file(path)
        assert script.exists and script.user == "root" and script.mode == 0o700, path


def test_backup_dir_is_root_only_when_there(host, pins, stack_host):
    directory = host.file(pins["backup_dir"])
    if not directory.exists:
        pytest.skip(f"no backup taken yet ({pins['backup_dir']} does not exist)")
    assert directory.user == "root" and directory.mode == 0o700


def test_the_timer_follows_backup_schedule(host, pins, stack_host):
    timer = host.service(TIMER)
    if pins.get("backup_schedule"):
        assert timer.is_enabled and timer.is_running
    else:
        assert not host.file(f"/etc/systemd/system/{TIMER}").exists


def test_the_last_backup_did_not_fail(host, stack_host):
    last = host.file(LAST_RESULT)
    if not last.exists:
        pytest.skip("no backup has run on this host yet")
    result = json.loads(last.content_string)
    assert result["result"] == "ok", f"the last backup ({result.get('name')}, {result.get('at')}) failed: journalctl -u labforge-backup"
