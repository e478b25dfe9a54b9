"""labforge/backups.py: what labforge-data is told, from the settings; the result lines; the fetched copy's check."""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from labforge import backups
from labforge.paths import REPO

DATA = {"cvat_dir": "/opt/cvat", "backup_dir": "/var/backups/labforge", "backup_repository": None, "backup_keep": 7,
        "backup_reserve_bytes": 2**31, "backup_check_read_parts": 7, "cvat_api_timeout": 600, "backup_fetch_dir": None,
        "restic_versions": {"bookworm": "0.14.0", "jammy": "0.12.1", "noble": "0.16.4"}}


def config(codename: str = "bookworm", **changes) -> dict:
    return backups.program_config({**DATA, **changes}, codename=codename, serverless=True, period=86400.0,
                                  upgrade={"state": "/var/lib/labforge/cvat-upgrade.state"})


def test_the_program_is_told_the_repository_the_volumes_and_the_compose_files():
    made = config()
    assert made["repository"] == "/var/backups/labforge/repository"
    assert made["volumes"] == ["cvat_db", "cvat_data", "cvat_keys", "cvat_events_db"] and made["online_volumes"] == made["volumes"]
    assert made["compose"][:2] == ["--env-file", "/etc/labforge/cvat.env"] and "docker-compose.yml" in made["compose"]
    assert config(backup_repository="sftp:nas:/srv/lab")["repository"] == "sftp:nas:/srv/lab"


def test_restic_features_follow_the_pinned_version():
    """0.14 made repository format 2 (compression) stable; 0.13 brought --dry-run (restic's CHANGELOG)."""
    assert config("bookworm")["init_args"] == ["--repository-version", "2"] and config("bookworm")["dry_run"] is True
    assert config("noble")["init_args"] == ["--repository-version", "2"]
    assert config("jammy")["init_args"] == [] and config("jammy")["dry_run"] is False
    with pytest.raises(backups.BackupProblem, match="restic_versions has no version for trixie"):
        config("trixie")
    assert backups.version_tuple("0.14.0-1+b5") == (0, 14, 0) and backups.version_tuple("0.12.1-2ubuntu0.3") == (0, 12, 1)


@pytest.mark.parametrize(("changes", "message"), [
    ({"backup_dir": "relative"}, "backup_dir must be an absolute path"),
    ({"backup_keep": 0}, "backup_keep must be a whole number of backups, 1 or more"),
    ({"backup_reserve_bytes": -1}, "backup_reserve_bytes must be a whole number of bytes"),
    ({"backup_check_read_parts": "x"}, "backup_check_read_parts must be 0 or a whole number"),
    ({"backup_fetch_dir": "docs/fetched"}, "backup_fetch_dir docs/fetched is inside the repository and git does not ignore it"),
])
def test_bad_settings_are_refused_with_one_line(changes, message):
    assert message in backups.settings_problem({**DATA, **changes})


def test_a_fetch_dir_git_ignores_or_outside_the_repository_is_fine(tmp_path):
    assert backups.settings_problem({**DATA, "backup_fetch_dir": str(tmp_path)}) is None
    assert backups.settings_problem({**DATA, "backup_fetch_dir": ".venv/fetched"}) is None  # .venv is ignored
    assert (REPO / ".git").exists()


def test_the_schedules_period_is_read_from_systemd_analyze():
    """Real output of systemd 252's `systemd-analyze calendar --iterations=N`, with the host in UTC and in another zone."""
    utc = subprocess.run(["systemd-analyze", "calendar", "--iterations=8", "daily"], capture_output=True, text=True,
                         env={**os.environ, "TZ": "UTC"}).stdout
    assert backups.schedule_period(utc) == 86400.0, utc
    lisbon = subprocess.run(["systemd-analyze", "calendar", "--iterations=8", "Mon..Fri 02:00"], capture_output=True, text=True,
                            env={**os.environ, "TZ": "Europe/Lisbon"}).stdout
    assert backups.schedule_period(lisbon) == 3 * 86400.0, lisbon  # the weekend
    assert backups.schedule_period("nonsense") is None


def test_result_lines_are_read_from_the_programs_output():
    lines = ["labforge-data: made the repository", "backup=cvat-20261206T120000000Z bytes=10 added=5 down=1.2 repository=/r"]
    assert backups.parse_result(lines, backups.RESULT) == ("cvat-20261206T120000000Z", "10", "5", "1.2", "/r")
    with pytest.raises(backups.BackupProblem):
        backups.parse_result(["nothing"], backups.RESULT)


def test_a_fetched_copy_is_checked_against_its_names_and_written_private(tmp_path):
    repo = tmp_path / "copy"
    for sub, content in (("data/ab", b"pack"), ("index", b"index"), ("snapshots", b"snap")):
        path = repo / sub / hashlib.sha256(content).hexdigest()
        with os.fdopen(backups.private_file(path), "wb") as stream:
            stream.write(content)
    (repo / "config").write_bytes(b"not content-addressed")
    assert backups.verify_fetched(repo) == 3
    assert stat.S_IMODE((repo / "data").stat().st_mode) == 0o700 and stat.S_IMODE(repo.stat().st_mode) == 0o700
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o600 for p in (repo / "index").iterdir())
    victim = next((repo / "index").iterdir())
    victim.write_bytes(b"tampered")
    with pytest.raises(backups.BackupProblem, match="does not match its content: index/"):
        backups.verify_fetched(repo)


def test_a_unit_runs_the_program_and_prints_its_result_line():
    shell = backups.in_unit("labforge-restore", "/usr/local/lib/labforge/labforge-data restore", "/var/lib/labforge/restore.log")
    assert "systemd-run --unit=labforge-restore --wait" in shell and "exit $code" in shell
    assert Path("/bin/sh").exists()


def test_a_journal_of_a_running_backup_is_said_to_be_running_not_left_by_a_kill(tmp_path):
    """labforge-data keeps its journal for the whole of every backup and restore, so a converge that meets one while
    the timer's backup runs said "did not finish (the host lost power, or it was killed)". The state now comes from
    the data lock too (flock -n, as the program's own flock): held is running, free is left behind."""
    journal, lock = tmp_path / "journal.json", tmp_path / "run" / "data.lock"

    def state() -> str:
        return subprocess.run(["sh", "-c", backups.journal_state_command(str(journal), str(lock))],
                              capture_output=True, text=True, check=True).stdout.strip()

    assert state() == "" and backups.journal_notice(state()) is None
    journal.write_text("{}")
    assert state() == "left"  # no lock file (after a reboot /run is empty)
    lock.parent.mkdir()
    lock.write_text("labforge-data backup (pid 1, since 2026-12-07 02:00:00 UTC)\n")
    assert state() == "left"  # a killed holder's words stay, its flock does not
    holder = subprocess.Popen([sys.executable, "-c", "import fcntl,os,sys,time; fd=os.open(sys.argv[1], os.O_RDWR); "
                               "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(30)", str(lock)],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        running = state()
        assert running == "running labforge-data backup (pid 1, since 2026-12-07 02:00:00 UTC)"
        assert backups.journal_notice(running) == (
            "a backup or restore is running now (labforge-data backup (pid 1, since 2026-12-07 02:00:00 UTC)): "
            f"labforge-data waits up to {backups.CONVERGE_LOCK_WAIT} s for it before it goes on")
    finally:
        holder.kill()
        holder.wait()
    assert backups.journal_notice(state()).startswith("a backup or restore did not finish (the host lost power")
