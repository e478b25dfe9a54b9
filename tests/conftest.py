"""Options and rules shared by the test suites (pytest only reads pytest_addoption from top-level conftests)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

# One lab's life on one host (tests/lab/conftest.py stack_host): these modules run in this order, on one worker,
# each from where the one before left it.
STACK_STORY = ("tests/lab/test_lab_database.py", "tests/lab/test_backup.py")
# The longest lab modules after the story, longest first (CI's --durations); the rest of the lab follows them.
LONGEST_FIRST = ("tests/lab/test_upgrade.py", "tests/lab/test_exposure.py", "tests/lab/test_faults.py",
                 "tests/lab/test_cvat.py", "tests/lab/test_split_lab.py")


def pytest_addoption(parser):
    parser.addoption(
        "--role",
        choices=["auto", "gpu", "cpu"],
        default="auto",
        help="tests/host: which layers to expect (auto: GPU layers when the host has an NVIDIA PCI device)",
    )


def in_ci() -> bool:
    return os.environ.get("CI") == "true"


def cannot_run(reason: str):
    """A test that cannot run on this machine skips, saying why in one line, unless this is CI (CI=true), where
    every prerequisite was installed by ./install.sh and a missing one must fail rather than pass by skipping."""
    if in_ci():
        pytest.fail(f"CI=true but {reason}", pytrace=False)
    pytest.skip(reason)


def module_of(item: pytest.Item) -> str:
    """The item's module, relative to the repository."""
    return Path(str(item.fspath)).resolve().relative_to(ROOT).as_posix()


@pytest.hookimpl(tryfirst=True)  # before xdist's worker reads the groups (a plugin registered after this conftest)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Work units for pytest-xdist (pyproject's `--dist loadgroup`): a module is one unit, so its module fixtures (a
    lab host, a model) are made once; the stack story is one, its modules in order. Lab units go first, the story and
    LONGEST_FIRST first of all, so the longest units start first and the short ones fill in at the end. Lab items
    get the `lab` mark."""

    def rank(item: pytest.Item) -> tuple[int, int]:
        module = module_of(item)
        if module in STACK_STORY:
            return 0, STACK_STORY.index(module)
        if module in LONGEST_FIRST:
            return 1, LONGEST_FIRST.index(module)
        return (2 if module.startswith("tests/lab/") else 3), 0

    items.sort(key=rank)  # stable: every module's own order is kept
    for item in items:
        module = module_of(item)
        if module.startswith("tests/lab/"):
            item.add_marker(pytest.mark.lab)
        item.add_marker(pytest.mark.xdist_group("stack-story" if module in STACK_STORY else module))
