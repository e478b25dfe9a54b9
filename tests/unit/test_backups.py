"""labforge/backups.py: which backup a restore takes and when it refuses, and the check of a fetched copy."""

from __future__ import annotations

import datetime
import hashlib
import json

import pytest

from labforge import backups
from labforge.backups import BackupProblem


def manifest(name: str, tag: str = "v2.51.0", sums: dict | None = None) -> dict:
    sums = sums or {key: "0" * 64 for key in backups.VOLUMES}
    return {"name": name, "cvat_tag": tag, "archives": {k: {"file": f"{k}.tar", "bytes": 1, "sha256": sums[k]} for k in backups.VOLUMES}}


OLD, NEW = "cvat-20261130T020000Z", "cvat-20261201T020000Z"


def test_names_sort_by_time():
    early = backups.new_name(datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    late = backups.new_name(datetime.datetime(2026, 11, 2, 3, 4, 5, tzinfo=datetime.timezone.utc))
    assert early == "cvat-20260102T030405Z" and sorted([late, early]) == [early, late]
    assert backups.NAME.fullmatch(early)


def test_the_newest_complete_backup_is_restored_unless_one_is_named():
    found = {OLD: manifest(OLD), NEW: manifest(NEW)}
    assert backups.choose(found, [], None, "v2.51.0", "/b")[0] == NEW
    assert backups.choose(found, [], OLD, "v2.51.0", "/b")[0] == OLD


@pytest.mark.parametrize(("found", "partial", "wanted", "tag", "message"), [
    ({}, [], None, "v2.51.0", "no complete backup in /b"),
    ({OLD: manifest(OLD)}, [f".partial-{NEW}"], NEW, "v2.51.0", f"backup {NEW} in /b is incomplete"),
    ({OLD: manifest(OLD)}, [], NEW, "v2.51.0", f"no complete backup {NEW} in /b \\(complete backups there: {OLD}\\)"),
    ({OLD: manifest(OLD, tag="v2.52.0")}, [], None, "v2.51.0", "was taken at CVAT v2.52.0, the checkout is at v2.51.0"),
    ({OLD: manifest(OLD)}, [], None, None, "not at a release tag"),
])
def test_a_restore_is_refused_with_one_line(found, partial, wanted, tag, message):
    with pytest.raises(BackupProblem, match=message):
        backups.choose(found, partial, wanted, tag, "/b")


def test_mismatches_name_every_archive_that_differs():
    sums = {f"{k}.tar": "0" * 64 for k in backups.VOLUMES}
    assert backups.mismatches(manifest(OLD), sums) == []
    sums["cvat_db.tar"] = "1" * 64
    del sums["cvat_keys.tar"]
    bad = backups.mismatches(manifest(OLD), sums)
    assert len(bad) == 2 and bad[0].startswith("cvat_db.tar (sha256 111") and bad[1].startswith("cvat_keys.tar (sha256 missing")


def test_a_fetched_copy_is_checked_byte_for_byte(tmp_path):
    sums = {}
    for key in backups.VOLUMES:
        data = f"{key} archive".encode()
        (tmp_path / f"{key}.tar").write_bytes(data)
        sums[key] = hashlib.sha256(data).hexdigest()
    (tmp_path / "manifest.json").write_text(json.dumps(manifest(OLD, sums=sums)))
    assert backups.verify_copy(tmp_path)["name"] == OLD
    (tmp_path / "cvat_data.tar").write_bytes(b"cvat_data archivE")
    with pytest.raises(BackupProblem, match=r"does not match its manifest: cvat_data\.tar"):
        backups.verify_copy(tmp_path)


def test_result_lines_are_read_from_the_scripts_output():
    lines = ["noise", "backup=cvat-20261201T020000Z bytes=123 down=4.2 dir=/var/backups/labforge"]
    assert backups.parse_result(lines, backups.RESULT) == ("cvat-20261201T020000Z", "123", "4.2", "/var/backups/labforge")
    with pytest.raises(BackupProblem):
        backups.parse_result(["nothing"], backups.RESULT)
    assert backups.human(123) == "123 B" and backups.human(5 * 2**20) == "5.0 MiB"
