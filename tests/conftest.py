"""Options and rules shared by the test suites (pytest only reads pytest_addoption from top-level conftests)."""

from __future__ import annotations

import os

import pytest


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
