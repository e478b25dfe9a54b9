"""Fixtures for the lab tests: the stand-in mirror and booted Debian 12 hosts, torn down at the end."""

from __future__ import annotations

import os
import shutil

import pytest

from testlab import labhosts
from tests.conftest import cannot_run

# apart from a person's ./lab hosts, and from other test runs on the same machine
TEST_LAB_DIR = labhosts.LAB_DIR / f"pytest-{os.getpid()}"


def pytest_collection_modifyitems(items):
    for item in items:
        if "tests/lab/" in str(item.fspath):
            item.add_marker(pytest.mark.lab)


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


@pytest.fixture(scope="session")
def boot_host(mirror):
    """Factory: boot a fresh host (optionally with a replaced /etc/os-release); all are destroyed at the end.

    Depends on `mirror` so that hosts are torn down first: the mirror's teardown deletes the test lab
    directory, and a container whose root vanished under it does not shut down.
    """
    booted: list[labhosts.LabHost] = []

    def boot(name: str, address: str, os_release: str | None = None, prepare=None) -> labhosts.LabHost:
        """prepare(lab_host), when given, edits the fresh root before it boots."""
        lab_host = labhosts.LabHost(name, address, lab_dir=str(TEST_LAB_DIR), ports=mirror.ports)
        booted.append(lab_host)
        lab_host.create(os_release=os_release)
        if prepare is not None:
            prepare(lab_host)
        lab_host.boot()
        return lab_host

    yield boot
    for lab_host in booted:
        lab_host.destroy()
