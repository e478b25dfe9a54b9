"""labforge/pins.py: the lock file of downloads pinned on first use."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from labforge import pins
from labforge.groupdata import load

DATA = load("gpu_servers")

# --- the lock file of pins on first use ------------------------------------------------------------------


SHA_A, SHA_B = "a" * 64, "b" * 64


def test_first_use_is_recorded_once_and_then_must_match(tmp_path):
    lock = tmp_path / "labforge.lock"
    assert pins.pinned(lock, "nuctl", "1.13.23", "amd64") is None
    assert pins.record(lock, "nuctl", "1.13.23", "amd64", SHA_A) is True
    assert pins.record(lock, "nuctl", "1.13.23", "amd64", SHA_A) is False
    assert pins.pinned(lock, "nuctl", "1.13.23", "amd64") == SHA_A
    with pytest.raises(pins.PinMismatch, match=r"downloaded with sha256 b+, but labforge.lock pins a+"):
        pins.record(lock, "nuctl", "1.13.23", "amd64", SHA_B)
    assert pins.record(lock, "nuctl", "1.13.23", "arm64", SHA_B) is True
    assert json.loads(lock.read_text()) == {"nuctl": {"1.13.23": {"amd64": SHA_A, "arm64": SHA_B}}}


def test_a_broken_lock_file_is_refused_not_overwritten(tmp_path):
    lock = tmp_path / "labforge.lock"
    lock.write_text('{"nuctl": {"1.13.23": {"amd64": "not-a-hash"}}}')
    with pytest.raises(pins.PinMismatch, match="is not a sha256"):
        pins.pinned(lock, "nuctl", "1.13.23", "amd64")
    lock.write_text("{broken")
    with pytest.raises(pins.PinMismatch, match="cannot be read"):
        pins.record(lock, "nuctl", "1.13.23", "amd64", SHA_A)
    assert lock.read_text() == "{broken"


def test_lock_path_is_relative_to_the_repository():
    assert pins.lock_path(None) == pins.REPO / "labforge.lock"
    assert pins.lock_path("inventory/labforge.lock") == pins.REPO / "inventory/labforge.lock"
    assert pins.lock_path("/etc/x.lock") == Path("/etc/x.lock")


