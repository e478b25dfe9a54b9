"""Fixtures for the lab tests: the stand-in mirror and booted Debian 12 hosts, each destroyed when its module (or
the stack story, tests/conftest.py STACK_STORY) ends."""

from __future__ import annotations

import os
import shutil
import time

import pytest

from testlab import labhosts, runner
from testlab.standins import cvat
from tests.conftest import STACK_STORY, cannot_run, module_of

# apart from a person's ./lab hosts, and from other test runs on the same machine
TEST_LAB_DIR = labhosts.LAB_DIR / f"pytest-{os.getpid()}"


STACK_NAME = "citest-stack"
STACK_PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-backups"}
_story_hosts: list[labhosts.LabHost] = []  # stack_host's, destroyed when the story's last test is torn down


@pytest.hookimpl(trylast=True)  # after the module's own fixtures are torn down
def pytest_runtest_teardown(item: pytest.Item, nextitem: pytest.Item | None) -> None:
    in_story = module_of(item) in STACK_STORY
    if in_story and _story_hosts and (nextitem is None or module_of(nextitem) not in STACK_STORY):
        while _story_hosts:
            _story_hosts.pop().destroy()


@pytest.fixture(scope="session")
def mirror():
    try:
        labhosts.require_tools()
    except labhosts.LabError as exc:
        cannot_run(f"the test lab cannot run here: {exc} (./install.sh as root installs the tools)")
    TEST_LAB_DIR.mkdir(parents=True, exist_ok=True)
    served = labhosts.Mirror.start(TEST_LAB_DIR)
    yield served
    served.stop()
    shutil.rmtree(TEST_LAB_DIR, ignore_errors=True)


def _boot(mirror, booted: list[labhosts.LabHost], name: str, address: str, os_release: str | None = None,
          prepare=None) -> labhosts.LabHost:
    lab_host = labhosts.LabHost(name, address, lab_dir=str(TEST_LAB_DIR), ports=mirror.ports)
    booted.append(lab_host)
    lab_host.create(os_release=os_release)
    if prepare is not None:
        prepare(lab_host)
    lab_host.boot()
    return lab_host


@pytest.fixture(scope="module")
def boot_host(mirror):
    """Factory: boot a fresh host (optionally with a replaced /etc/os-release); a module's hosts are destroyed when
    it ends, so a run holds only the hosts of the modules running now.

    Depends on `mirror` so that hosts are torn down first: the mirror's teardown deletes the test lab
    directory, and a container whose root vanished under it does not shut down.
    """
    booted: list[labhosts.LabHost] = []

    def boot(name: str, address: str, os_release: str | None = None, prepare=None) -> labhosts.LabHost:
        """prepare(lab_host), when given, edits the fresh root before it boots."""
        return _boot(mirror, booted, name, address, os_release, prepare)

    yield boot
    for lab_host in booted:
        lab_host.destroy()


def bring_up_stack(boot, mirror, name: str, address: str, releases: tuple[str, ...] = (), **settings) -> labhosts.LabHost:
    """A CPU lab host with CVAT's stand-in stack up at v2.51.0 (`releases`: those releases' images loaded too), booted
    with `boot` (a module's boot_host, or the story's), converged with `settings` and the stack's admin password."""
    lab_host = boot(name, address)
    files = runner.deploy(labhosts.hosts_file([lab_host], mirror, TEST_LAB_DIR / f"{name}-files.yml", group="cpu_servers"))
    assert files.returncode == 0, files.stderr[-3000:]
    started = time.monotonic()
    cvat.load_images(lab_host, labhosts.base_tarball(), releases=releases)
    print(f"stand-in images built in {time.monotonic() - started:.1f}s")
    up = runner.deploy(labhosts.hosts_file([lab_host], mirror, TEST_LAB_DIR / f"{name}.yml", group="cpu_servers",
                                           cvat_start=True, **settings), env=STACK_PASSWORD)
    assert up.returncode == 0, up.stderr[-3000:]
    return lab_host


@pytest.fixture(scope="session")
def stack_host(mirror):
    """The one lab whose life test_lab_database and test_backup follow, in that order (STACK_STORY): its database
    filled and restarted, then backed up, lost and restored. One host for the two saves a boot, a converge and an
    image build. Destroyed when the story's last test ends."""
    booted = _story_hosts
    try:
        yield bring_up_stack(lambda name, address: _boot(mirror, booted, name, address), mirror, STACK_NAME, "127.0.0.18")
    finally:
        while booted:  # when the story did not end (a run stopped early)
            booted.pop().destroy()
