"""A newcomer's first dry run with no hosts file: whatever the machine has installed, it ends in labforge's one line
saying how to name the hosts, never in pyinfra's "No running Vagrant instances found!". No host is needed: the run
stops while the inventory loads."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from labforge.hostsfile import NO_HOSTS
from tests.conftest import cannot_run

REPO = Path(__file__).resolve().parents[2]
PYINFRA = str(Path(sys.executable).with_name("pyinfra"))
LINE = f"labforge: {NO_HOSTS}"


def first_dry_run(**env: str) -> subprocess.CompletedProcess:
    if (REPO / "hosts.yml").exists():
        pytest.skip("this checkout has a hosts.yml, which the deploy would use")
    clean = {k: v for k, v in os.environ.items() if k not in ("LAB_HOSTS", "VAGRANT_DOTFILE_PATH", "VAGRANT_CWD")}
    return subprocess.run([PYINFRA, "--dry", "inventory.py", "deploy.py"], cwd=REPO, env={**clean, **env}, stdin=subprocess.DEVNULL,
                          capture_output=True, text=True, timeout=180)


def assert_one_labforge_line(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert "No running Vagrant instances" not in proc.stdout + proc.stderr
    assert [x for x in proc.stderr.splitlines() if x.startswith("labforge")] == [LINE]
    assert proc.stderr.strip().splitlines()[-1] == LINE
    assert "hosts.yml" in LINE and "LAB_HOSTS" in LINE and "`vagrant up`" in LINE


def test_no_hosts_file_and_no_vagrant_says_how_to_name_hosts():
    proc = first_dry_run(PATH=str(Path(PYINFRA).parent))  # no vagrant on this PATH (./install.sh puts one in /usr/bin)
    assert_one_labforge_line(proc)


def real_vagrant() -> str:
    vagrant = shutil.which("vagrant")
    if not vagrant:
        cannot_run("vagrant is not installed (./install.sh installs Debian's package when run as root)")
    if any((REPO / ".vagrant").glob("machines/*/*/id")):
        pytest.skip("this checkout has a Vagrant VM (.vagrant/machines/*/*/id), which the deploy may target")
    return vagrant


def test_vagrant_installed_and_no_vm_says_how_to_name_hosts():
    """The machine ./install.sh (as root) leaves: Debian's Vagrant on PATH, for the lint, and no VM."""
    real_vagrant()
    start = time.monotonic()
    proc = first_dry_run()
    assert_one_labforge_line(proc)
    assert "Getting Vagrant config" not in proc.stdout + proc.stderr  # pyinfra's @vagrant connector never ran
    assert time.monotonic() - start < 60


def test_a_vm_vagrant_knows_but_that_is_not_running_is_not_the_target(tmp_path):
    """Vagrant's machine id is there (as after `vagrant up` then `vagrant halt`, or a VM whose provider is gone): the
    real `vagrant status` is asked, reports it not running (or fails), and the run still ends in labforge's line."""
    real_vagrant()
    (tmp_path / "machines/noble/libvirt").mkdir(parents=True)
    (tmp_path / "machines/noble/libvirt/id").write_text("00000000-labforge-test-no-such-domain")
    proc = first_dry_run(VAGRANT_DOTFILE_PATH=str(tmp_path))
    assert_one_labforge_line(proc)


def test_a_running_vm_of_the_vagrantfile_is_the_target(tmp_path):
    """With a VM running, the run goes to @vagrant: pyinfra asks Vagrant (a stand-in here) for the VM's SSH config, in
    the Vagrantfile's directory, and tries to connect (nothing listens on the stand-in's port 1)."""
    (tmp_path / "dot/machines/noble/libvirt").mkdir(parents=True)
    (tmp_path / "dot/machines/noble/libvirt/id").write_text("4c1d")
    log = tmp_path / "calls"
    vagrant = tmp_path / "bin/vagrant"
    vagrant.parent.mkdir()
    vagrant.write_text(f"""#!/bin/sh
echo "$VAGRANT_CWD $*" >> {log}
case "$1" in
  status) printf '1,noble,metadata,provider,libvirt\\n1,noble,state,running\\n1,jammy,state,not_created\\n' ;;
  ssh-config) printf 'Host noble\\n  HostName 127.0.0.1\\n  User vagrant\\n  Port 1\\n\\n' ;;
esac
""")
    vagrant.chmod(0o755)
    proc = first_dry_run(PATH=f"{vagrant.parent}:{Path(PYINFRA).parent}", VAGRANT_DOTFILE_PATH=str(tmp_path / "dot"))
    assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr
    assert not [x for x in proc.stderr.splitlines() if x.startswith("labforge:")]
    assert log.read_text().splitlines() == [f"{REPO} status --machine-readable",  # labforge's check
                                            f"{REPO} status --machine-readable", f"{REPO} ssh-config noble"]  # pyinfra's
    (line,) = [x for x in proc.stderr.splitlines() if x.startswith("[labforge]")]
    assert line.startswith("[labforge] @vagrant/noble: unreachable: "), line
