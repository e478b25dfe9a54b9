"""labforge/upgrades.py: which release move a converge makes, what it refuses, and the settings of the move
labforge-data makes on the host (its state machine: tests/data/test_upgrade_program.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from labforge import compat, data_program, upgrades
from labforge.groupdata import load

OLD, NEW = "v2.51.0", "v2.73.0"
DATA = {**load("cpu_servers"), "cvat_version": OLD}  # a lab on the old row (the deploy settles an unset one first)


def with_(**changes):
    return {**DATA, **changes}


def test_the_table_has_the_default_and_the_current_release_with_their_nuctl():
    old, new = compat.stack(DATA, OLD), compat.stack(with_(cvat_version=NEW))
    assert (old.dashboard, old.nuctl, old.docker_api, old.manage_py) == ("1.13.0", "1.13.23", "1.42", "/home/django/manage.py")
    assert (new.dashboard, new.nuctl, new.docker_api, new.manage_py) == ("1.16.3", "1.16.3", "1.44", "/opt/cvat/manage.py")
    assert load("cpu_servers")["cvat_version"] is None and DATA["nuctl_version"] is None  # labforge/releases.py


def test_nuctl_follows_cvat_version_unless_it_is_set():
    assert compat.nuctl_version(with_(cvat_version=NEW)) == "1.16.3"
    assert compat.nuctl_version(with_(cvat_version=NEW, nuctl_version="1.16.7")) == "1.16.7"
    with pytest.raises(compat.Incompatible, match=r"nuctl 1\.13\.23 does not match CVAT v2\.73\.0's Nuclio dashboard 1\.16\.3"):
        compat.nuctl_version(with_(cvat_version=NEW, nuctl_version="1.13.23"))


def test_a_release_outside_the_table_is_refused_naming_the_listed_ones():
    with pytest.raises(compat.Incompatible, match=r"CVAT v2\.60\.0 is not in cvat_stack_compat .*listed: v2\.51\.0, v2\.73\.0"):
        compat.stack(with_(cvat_version="v2.60.0"))


def test_an_upgrade_a_fresh_install_and_no_move():
    up = upgrades.plan(with_(cvat_version=NEW), OLD, {})
    assert (up.is_switch, up.is_downgrade, up.restore) == (True, False, None)
    assert not upgrades.plan(DATA, None, {}).is_switch  # no checkout yet: the clone, not an upgrade
    assert not upgrades.plan(DATA, OLD, {}).is_switch
    assert upgrades.plan(DATA, OLD, {}, interrupted=True).unfinished


def test_an_upgrade_ignores_restore_backup():
    assert upgrades.plan(with_(cvat_version=NEW, restore_backup="cvat-x"), OLD, {}).restore is None


def test_a_host_at_a_release_outside_the_table_is_refused():
    with pytest.raises(upgrades.UpgradeRefused, match=r"this host runs CVAT v2\.40\.0, which is not in cvat_stack_compat"):
        upgrades.plan(with_(cvat_version=NEW), "v2.40.0", {})


@pytest.mark.parametrize(("restore", "backups", "message"), [
    (None, {}, r"cvat_version v2\.51\.0 is older than the v2\.73\.0 this host's data is at; a downgrade needs a backup "
               r"taken at v2\.51\.0: --data restore_backup=NAME"),
    ("cvat-a", {}, r"restore_backup=cvat-a is not a backup in the repository"),
    ("cvat-a", {"cvat-a": {"cvat_tag": NEW}}, r"backup cvat-a was taken at CVAT v2\.73\.0, not v2\.51\.0"),
])
def test_a_downgrade_is_refused_without_a_backup_of_the_older_release(restore, backups, message):
    with pytest.raises(upgrades.UpgradeRefused, match=message):
        upgrades.plan(with_(restore_backup=restore), NEW, backups)


def test_a_downgrade_with_a_backup_of_the_older_release_restores_it():
    move = upgrades.plan(with_(restore_backup="cvat-a"), NEW, {"cvat-a": {"cvat_tag": OLD}})
    assert (move.is_switch, move.is_downgrade, move.restore) == (True, True, "cvat-a")


def test_the_guides_v2_72_step_belongs_to_the_v2_73_row():
    assert upgrades.row_steps(DATA, OLD) == []
    assert upgrades.row_steps(DATA, NEW) == [data_program.SOURCE_IN_OPT]


def test_an_unknown_step_in_the_table_is_refused():
    table = {**DATA["cvat_stack_compat"], NEW: {**DATA["cvat_stack_compat"][NEW], "upgrade_steps": ["reticulate"]}}
    with pytest.raises(upgrades.UpgradeRefused, match="names the upgrade step 'reticulate'"):
        upgrades.row_steps(with_(cvat_stack_compat=table), NEW)


def test_the_summary_names_the_versions_the_backup_and_the_downtime():
    line = "upgraded=v2.73.0 from=v2.51.0 backup=cvat-20261201T130000Z-before-v2.73.0 restored=none down=41"
    assert upgrades.summary(line) == ("CVAT v2.51.0 -> v2.73.0: backup cvat-20261201T130000Z-before-v2.73.0 taken first; "
                                      "CVAT was down 41 s")
    down = "upgraded=v2.51.0 from=v2.73.0 backup=cvat-b restored=cvat-a down=30"
    assert upgrades.summary(down) == "CVAT v2.73.0 -> v2.51.0: backup cvat-b taken first, backup cvat-a restored; CVAT was down 30 s"


def test_the_programs_settings_name_every_row_in_release_order():
    settings = upgrades.program_settings(with_(cvat_upgrade_timeout=600))
    assert settings["rows"] == [OLD, NEW] and settings["timeout"] == 600
    assert settings["manage_py"] == {OLD: "/home/django/manage.py", NEW: "/opt/cvat/manage.py"}
    assert settings["nuctl"] == {OLD: "1.13.23", NEW: "1.16.3"} and settings["steps"] == {OLD: [], NEW: [data_program.SOURCE_IN_OPT]}
    assert settings["state"] == upgrades.STATE


def test_the_upgrade_checks_the_build_inputs_of_each_function_the_converge_redeploys_at_each_row():
    """At v2.73.0 YOLOv3 and DEXTR are built from v2.51.0's tree (cvat_function_sources), with the Dockerfiles their
    deploy builds first; ours are read where the functions layer puts them; a GPU host reads GPU variants."""
    data = with_(cvat_start=True, nuclio_functions=["serverless/openvino/dextr", "files/nuclio/sam2"])
    settings = upgrades.program_settings(data, on_gpu=True, arch="arm64")
    dextr = {"path": "serverless/openvino/dextr", "tag": OLD, "gpu": True,
             "built": ["cvat.openvino.base", "cvat.openvino.dextr.base"],
             "dockerfiles": ["serverless/openvino/base", "serverless/openvino/dextr/nuclio"]}
    ours = {"path": "files/nuclio/sam2", "dir": "/opt/labforge/functions/sam2", "gpu": True}
    assert settings["functions"] == {OLD: [ours, dextr], NEW: [ours, dextr]}
    # the order of nuclio_functions does not change the host's settings (a converge after a reordering changes nothing)
    reordered = with_(cvat_start=True, nuclio_functions=["files/nuclio/sam2", "serverless/openvino/dextr"])
    assert upgrades.program_settings(reordered, on_gpu=True, arch="arm64") == settings
    sam = upgrades.rebuilt_functions(with_(cvat_start=True, nuclio_functions=["serverless/pytorch/facebookresearch/sam"]),
                                     NEW, False)
    assert sam[0]["tag"] == NEW and sam[0]["dockerfiles"] == ["serverless/pytorch/facebookresearch/sam/nuclio"]
    assert settings["onbuild"] == {tag: [f"quay.io/nuclio/handler-builder-python-onbuild:{nuctl}-arm64",
                                         "quay.io/nuclio/uhttpc:0.0.1-arm64"] for tag, nuctl in ((OLD, "1.13.23"), (NEW, "1.16.3"))}
    assert settings["check_build_downloads"] is True
    assert upgrades.program_settings(with_(cvat_upgrade_check_build_downloads=False))["check_build_downloads"] is False
    # a split lab's CVAT host deploys no function (its inference host does), nor does a host that starts nothing
    assert upgrades.rebuilt_functions({**data, "inference_host": "gpu1"}, NEW, False) == []
    assert upgrades.rebuilt_functions({**data, "cvat_start": False}, NEW, False) == []


def test_the_program_never_removes_volumes():
    """CVAT's data lives in named volumes: `down -v`, `--volumes` or `volume rm` anywhere in the host's data program
    would be one typo from losing it."""
    text = Path(data_program.__file__).read_text()
    assert '"-v"' not in text and "--volumes" not in text and "volume rm" not in text and '"rm", "-v"' not in text


def test_a_row_without_nuctl_is_refused_with_what_to_add():
    table = {**DATA["cvat_stack_compat"], "v2.60.0": {"nuclio_dashboard": "1.15.9", "docker_api": "1.44"}}
    with pytest.raises(compat.Incompatible, match=r"cvat_stack_compat\['v2\.60\.0'\] names no nuctl"):
        compat.stack(with_(cvat_stack_compat=table, cvat_version="v2.60.0"))


def test_the_summary_says_an_interrupted_upgrade_was_kept_and_names_both_backups():
    line = "upgraded=v2.73.0 from=v2.51.0 backup=cvat-1-before-upgrade restored=none down=0 kept=cvat-2-before-rollback"
    said = upgrades.summary(line)
    assert "came up whole, so it was kept with the work done in it" in said
    assert "cvat-2-before-rollback" in said and "cvat-1-before-upgrade" in said
