"""labforge/releases.py: the CVAT release a host runs when cvat_version is unset, and what an older release lacks."""

from __future__ import annotations

import pytest

from labforge import compat, releases
from labforge.groupdata import load

DATA = load("gpu_servers")
TABLE = DATA["cvat_stack_compat"]
OLD, NEW = "v2.51.0", "v2.73.0"


def test_a_new_lab_starts_on_the_current_release():
    """The product's default: no cvat_version, no checkout -> v2.73.0 (it was v2.51.0, eleven fixes behind)."""
    assert DATA["cvat_version"] is None
    assert releases.resolve(DATA["cvat_version"], None, TABLE, "/opt/cvat") == NEW == releases.newest(TABLE)


@pytest.mark.parametrize(("tags", "release"), [([OLD], OLD), ([NEW], NEW), (["v2.51.0", "some-local-tag"], OLD),
                                               ([OLD, NEW], NEW)])
def test_a_lab_with_a_checkout_stays_on_its_release(tags, release):
    assert releases.resolve(None, tags, TABLE, "/opt/cvat") == release


def test_the_setting_wins_over_the_checkout():
    """Setting cvat_version is how an admin upgrades (labforge/upgrades.py decides the move)."""
    assert releases.resolve(NEW, [OLD], TABLE, "/opt/cvat") == NEW
    assert releases.resolve("v2.60.0", None, TABLE, "/opt/cvat") == "v2.60.0"  # compat refuses it next, naming the rows


@pytest.mark.parametrize(("tags", "at"), [([], "a commit with no release tag"), (["v2.60.0"], "v2.60.0")])
def test_a_checkout_at_no_release_of_the_table_is_refused_not_guessed(tags, at):
    with pytest.raises(releases.ReleaseUnknown, match=f"the CVAT checkout h:/opt/cvat is at {at}, not a release of "
                                                      r"cvat_stack_compat \(v2\.51\.0, v2\.73\.0\); set cvat_version"):
        releases.resolve(None, tags, TABLE, "h:/opt/cvat")


def test_an_empty_table_is_refused():
    with pytest.raises(releases.ReleaseUnknown, match="cvat_stack_compat is empty"):
        releases.resolve(None, None, {}, "/opt/cvat")


def test_the_fixes_are_those_of_the_changelog_between_the_rows():
    """group_data's list, read from CHANGELOG.md at 7972cb4f2: every entry after the oldest row, up to the newest."""
    fixes = releases.fixes(DATA["cvat_security_fixes"])
    assert len(fixes) == 11 and len({fix.ref for fix in fixes}) == 11
    assert all(compat.release(OLD) < compat.release(fix.release) <= compat.release(NEW) for fix in fixes)
    assert {"GHSA-3g7v-xjh7-xmqx", "GHSA-6f87-4g86-p9gw", "GHSA-m7p7-6w4m-886p"} <= {fix.ref for fix in fixes}
    assert [fix.ref for fix in releases.missing("v2.65.0", DATA["cvat_security_fixes"])] == [
        "GHSA-w6mx-95ff-72cv", "cvat-ai/cvat#10807", "GHSA-chxx-45vm-qhc9", "GHSA-m7p7-6w4m-886p", "GHSA-7xhx-3q27-xvcx"]


@pytest.mark.parametrize("entry", [["v2.53.0", "GHSA-x"], ["v2.53.0", "", "what"], ("v2.53.0", 7, "what")])
def test_a_malformed_fix_is_refused(entry):
    with pytest.raises(releases.ReleaseUnknown, match="is not \\[release, advisory or pull request, what\\]"):
        releases.fixes([entry])


def test_an_older_release_gets_one_notice_with_what_it_lacks_and_how_to_upgrade():
    kept = releases.lag_notice(OLD, TABLE, DATA["cvat_security_fixes"], chosen=False)
    assert kept == (
        "CVAT v2.51.0 (its checkout's release; cvat_version is unset) lacks 11 security fixes CVAT shipped up to v2.73.0 "
        "(v2.53.0: GHSA-3g7v-xjh7-xmqx; v2.55.0: GHSA-3m7p-wx65-c7mp, GHSA-7pvv-w55f-qmw7, cvat-ai/cvat#10183; v2.64.0: "
        "GHSA-m2h7-6xqm-p9v5; v2.65.0: GHSA-6f87-4g86-p9gw; v2.67.0: GHSA-w6mx-95ff-72cv; v2.69.0: cvat-ai/cvat#10807; "
        "v2.70.0: GHSA-chxx-45vm-qhc9; v2.72.0: GHSA-m7p7-6w4m-886p, GHSA-7xhx-3q27-xvcx; what each fixes: "
        "docs/compatibility.md); to upgrade, set cvat_version: v2.73.0 and converge (a backup is taken first and "
        "restored if the upgrade fails: docs/backups-and-upgrades.md)")
    assert "\n" not in kept and kept.count("GHSA-") == 9
    chosen = releases.lag_notice(OLD, TABLE, DATA["cvat_security_fixes"], chosen=True)
    assert chosen.startswith("CVAT v2.51.0 (set in cvat_version) lacks 11 security fixes")
    assert releases.lag_notice(NEW, TABLE, DATA["cvat_security_fixes"], chosen=False) is None


def test_an_older_row_without_listed_fixes_still_says_it_is_older():
    table = {**TABLE, "v2.72.0": TABLE[NEW]}
    assert releases.lag_notice("v2.72.0", {**table, "v2.74.0": TABLE[NEW]}, DATA["cvat_security_fixes"], False) == (
        "CVAT v2.72.0 (its checkout's release; cvat_version is unset) is older than v2.74.0; to upgrade, set cvat_version: "
        "v2.74.0 and converge (a backup is taken first and restored if the upgrade fails: docs/backups-and-upgrades.md)")
