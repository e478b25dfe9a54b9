"""The newcomer's mistakes, each answered with one line (and a true summary), on a real booted lab host."""

from __future__ import annotations

import os
import subprocess

import pytest
import yaml

from testlab import labhosts, runner
from tests.lab.conftest import TEST_LAB_DIR


@pytest.fixture(scope="module")
def newcomer(boot_host, mirror):
    lab_host = boot_host("newcomer", "127.0.0.30")
    return lab_host, labhosts.hosts_file([lab_host], mirror, TEST_LAB_DIR / "newcomer.yml", "cpu_servers")


def test_a_misspelt_data_setting_is_refused_with_a_did_you_mean(newcomer):
    _, path = newcomer
    run = runner.deploy(path, "--data", "reboot_after_drivers=true", dry=True)
    assert run.returncode != 0
    assert run.summary_lines() == ["[labforge] newcomer: refused: unknown setting 'reboot_after_drivers'; did you mean "
                                   "'reboot_after_driver'? (hosts file or --data); nothing was changed"]


@pytest.mark.parametrize(("where", "typo", "line"), [
    ("vars", {"cvat_hots": "a.lab"}, "vars: unknown setting 'cvat_hots'; did you mean 'cvat_host'?"),
    ("data", {"ssh_usr": "root"}, "cpu_servers[0]: data: unknown setting 'ssh_usr'; did you mean 'ssh_user'?"),
    ("host", {"ssh_usr": "root"}, "cpu_servers[0]: unknown key 'ssh_usr'; did you mean 'ssh_user'?"),
])
def test_a_misspelt_hosts_file_key_stops_the_run_with_one_line(newcomer, where, typo, line):
    _, path = newcomer
    doc = yaml.safe_load(path.read_text())
    target = {"vars": doc["vars"], "data": doc["cpu_servers"][0].setdefault("data", {}), "host": doc["cpu_servers"][0]}[where]
    target.update(typo)
    bad = TEST_LAB_DIR / f"newcomer-{where}.yml"
    bad.write_text(yaml.safe_dump(doc))
    run = runner.deploy(bad, dry=True)
    assert run.returncode != 0 and "Traceback" not in run.stderr
    assert [x for x in run.stderr.splitlines() if x.startswith("labforge: ")] == [f"labforge: {bad}: {line}"]


def test_without_y_and_without_a_terminal_one_line_and_no_traceback(newcomer):
    _, path = newcomer
    proc = subprocess.run([runner.PYINFRA, "inventory.py", "deploy.py"], cwd=runner.REPO, stdin=subprocess.DEVNULL,
                          env={**os.environ, "LAB_HOSTS": str(path)}, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr and "EOFError" not in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == ("labforge: pyinfra would ask for confirmation, but there is no terminal to "
                                                    "answer it: add -y to apply the changes, or --dry to only show them")


def test_an_unreachable_host_gets_its_summary_line(mirror):
    gone = labhosts.LabHost("newcomer-gone", "127.0.0.58")  # never booted: nothing listens on 127.0.0.58:2222
    path = labhosts.hosts_file([gone], mirror, TEST_LAB_DIR / "newcomer-gone.yml", "cpu_servers")
    run = runner.deploy(path, dry=True)
    assert run.returncode != 0
    lines = run.summary_lines()
    assert len(lines) == 1 and lines[0].startswith("[labforge] newcomer-gone: unreachable: ")
    assert "127.0.0.58" in lines[0] and lines[0].endswith("; nothing was changed")

