"""What a fresh host meets today, tested on this machine with the real tools: the compatibility table, apt's
locks (real POSIX locks read from /proc/locks), the pin-on-first-use lock file, and verified downloads
(real curl, sha256sum and mv against a server on 127.0.0.1)."""

from __future__ import annotations

import fcntl
import hashlib
import http.server
import json
import multiprocessing
import shutil
import subprocess
import threading
import time
from pathlib import Path

import pytest

from labforge import apt, compat, downloads, pins
from labforge.groupdata import load
from tests.conftest import cannot_run

DATA = load("gpu_servers")


# --- the compatibility table -----------------------------------------------------------------------------


def with_(**changes):
    return {**DATA, **changes}


def test_the_pinned_stack_is_compatible():
    stack = compat.check(DATA, compat.upstream_version(DATA["docker_package_versions"]["docker-ce"]))
    assert (stack.cvat, stack.dashboard, stack.docker_api) == ("v2.51.0", "1.13.0", "1.42")


def test_a_cvat_release_outside_the_table_is_refused():
    with pytest.raises(compat.Incompatible, match=r"CVAT v2\.52\.0 is not in cvat_stack_compat"):
        compat.stack(with_(cvat_version="v2.52.0"))


def test_nuctl_must_match_the_dashboard_of_the_table():
    with pytest.raises(compat.Incompatible, match=r"nuctl 1\.15\.9 does not match CVAT v2\.51\.0's Nuclio dashboard 1\.13\.0"):
        compat.stack(with_(nuctl_version="1.15.9"))


def test_docker_29_needs_the_min_api_setting_and_28_does_not():
    stack = compat.stack(DATA)
    assert compat.min_api_setting(DATA, (28, 5, 2), stack) is None
    assert compat.min_api_setting(DATA, (29, 1, 3), stack) == "1.42"


def test_an_unknown_docker_major_is_refused():
    with pytest.raises(compat.Incompatible, match=r"Docker Engine 30\.0\.1 is not in docker_default_min_api"):
        compat.check(DATA, (30, 0, 1))


def test_an_old_engine_that_refuses_the_stack_cannot_be_configured():
    data = with_(docker_default_min_api={"28": "1.44"})
    with pytest.raises(compat.Incompatible, match="has no min-api-version setting"):
        compat.min_api_setting(data, (28, 5, 2), compat.stack(data))


@pytest.mark.parametrize(("dpkg", "upstream"), [("5:28.5.2-1~ubuntu.24.04~noble", (28, 5, 2)),
                                                 ("1.7.29-1~debian.12~bookworm", (1, 7, 29)),
                                                 ("5:29.1.3-1", (29, 1, 3))])
def test_upstream_version(dpkg, upstream):
    assert compat.upstream_version(dpkg) == upstream


def test_docker_versions_per_distro_are_exact_dpkg_strings():
    versions = DATA["docker_package_versions"]
    assert compat.docker_dpkg_versions(versions, "ubuntu", "24.04", "noble")["docker-ce"] == "5:28.5.2-1~ubuntu.24.04~noble"
    assert compat.docker_dpkg_versions(versions, "ubuntu", "22.04", "jammy")["containerd.io"] == "1.7.29-1~ubuntu.22.04~jammy"
    assert compat.docker_dpkg_versions(versions, "debian", "12", "bookworm")["docker-compose-plugin"] == \
        "2.40.3-1~debian.12~bookworm"
    assert set(versions) == {"docker-ce", "docker-ce-cli", "containerd.io", "docker-buildx-plugin", "docker-compose-plugin"}


# --- apt's locks -----------------------------------------------------------------------------------------


def hold(path: Path, seconds: float, ready: multiprocessing.Event) -> None:
    with open(path, "w") as handle:
        fcntl.lockf(handle, fcntl.LOCK_EX)  # a POSIX lock, as dpkg and apt take
        ready.set()
        time.sleep(seconds)


@pytest.fixture
def locks(tmp_path):
    files = tuple(str(tmp_path / name) for name in ("lock-frontend", "lock", "lists-lock"))
    for f in files:
        Path(f).touch()
    return files


def holder(path: str, seconds: float) -> multiprocessing.Process:
    ready = multiprocessing.Event()
    proc = multiprocessing.Process(target=hold, args=(Path(path), seconds, ready), name="locker")
    proc.start()
    assert ready.wait(10)
    return proc


def sh(command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)


def test_holders_names_the_process_that_holds_a_lock(locks):
    assert sh(apt.holders_command(locks)).stdout == ""
    proc = holder(locks[1], 5)
    try:
        out = sh(apt.holders_command(locks)).stdout.split()
        assert out[:2] == [locks[1], str(proc.pid)]
        assert out[2] == Path(f"/proc/{proc.pid}/comm").read_text().strip()
    finally:
        proc.terminate()


def test_wait_returns_once_the_lock_is_free(locks):
    proc = holder(locks[0], 3)
    start = time.monotonic()
    result = sh(apt.wait_command(30, locks))
    assert result.returncode == 0, result.stderr
    assert 2 <= time.monotonic() - start < 15
    proc.join()


def test_wait_gives_up_with_one_line_naming_the_holder(locks):
    proc = holder(locks[2], 30)
    try:
        result = sh(apt.wait_command(4, locks))
        assert result.returncode == 1
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1
        assert lines[0].startswith(f"labforge: apt is locked: {locks[2]} is held by process {proc.pid} (")
        assert "for more than 4s (apt_lock_timeout)" in lines[0]
    finally:
        proc.terminate()


def test_the_plan_time_fact_waits_then_reports_what_still_holds(locks):
    fact = apt.AptLockHolders()
    proc = holder(locks[0], 30)
    try:
        start = time.monotonic()
        assert fact.process(sh(fact.command(3, locks)).stdout.splitlines())[0].split()[:2] == [locks[0], str(proc.pid)]
        assert time.monotonic() - start >= 3
    finally:
        proc.terminate()
    proc.join()
    assert fact.process(sh(fact.command(3, locks)).stdout.splitlines()) == []


def test_lock_timeout_conf_is_apts_own_setting():
    assert 'DPkg::Lock::Timeout "600";' in apt.lock_timeout_conf(600)


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


# --- verified downloads ------------------------------------------------------------------------------------


@pytest.fixture
def served(tmp_path):
    """A directory served over HTTP on 127.0.0.1 (fetched with curl, as on a host)."""
    if not shutil.which("curl"):
        cannot_run("curl is not installed (./install.sh as root installs it)")
    root = tmp_path / "www"
    root.mkdir()

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), lambda *a: Quiet(*a, directory=str(root)))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


def test_a_matching_download_replaces_dest_atomically(served, tmp_path):
    root, url = served
    (root / "key").write_bytes(b"the real key\n")
    dest = tmp_path / "dest" / "key.asc"
    dest.parent.mkdir()
    dest.write_bytes(b"old key\n")
    sha = hashlib.sha256(b"the real key\n").hexdigest()
    result = sh(downloads.verify_and_install_command(f"{url}/key", str(dest), sha, "0644"))
    assert result.returncode == 0, result.stderr
    assert dest.read_bytes() == b"the real key\n" and oct(dest.stat().st_mode & 0o777) == "0o644"
    assert list(dest.parent.iterdir()) == [dest]  # no temporary file left


def test_a_tampered_download_leaves_dest_byte_identical(served, tmp_path):
    root, url = served
    (root / "key").write_bytes(b"tampered key\n")
    dest = tmp_path / "key.asc"
    dest.write_bytes(b"old key\n")
    sha = hashlib.sha256(b"the real key\n").hexdigest()
    result = sh(downloads.verify_and_install_command(f"{url}/key", str(dest), sha, "0644"))
    assert result.returncode == 1
    assert result.stderr.strip() == (f"labforge: {dest}: sha256 mismatch (expected {sha}, got "
                                     f"{hashlib.sha256(b'tampered key' + bytes([10])).hexdigest()}) from {url}/key; {dest} left unchanged")
    assert dest.read_bytes() == b"old key\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["key.asc", "www"]


def test_a_failed_download_says_so_and_changes_nothing(served, tmp_path):
    _, url = served
    dest = tmp_path / "nuctl"
    result = sh(downloads.verify_and_install_command(f"{url}/missing", str(dest), SHA_A, "0755"))
    assert result.returncode == 1 and "download of" in result.stderr and not dest.exists()
    assert [p.name for p in tmp_path.iterdir()] == ["www"]


def test_first_use_checks_the_file_and_prints_its_hash(served, tmp_path):
    root, url = served
    (root / "tool").write_text("#!/bin/sh\necho 'Label: 1.13.23'\n")
    staged = tmp_path / ".tool-first-use"
    ok = sh(downloads.first_use_command(f"{url}/tool", str(staged), "{file} version | grep -qF 'Label: 1.13.23'"))
    assert ok.returncode == 0, ok.stderr
    assert pins.hash_from_output(ok.stdout.splitlines()) == hashlib.sha256(staged.read_bytes()).hexdigest()
    staged.unlink()
    bad = sh(downloads.first_use_command(f"{url}/tool", str(staged), "{file} version | grep -qF 'Label: 9.9.9'"))
    assert bad.returncode == 1 and "failed its check" in bad.stderr and "nothing was installed" in bad.stderr
    assert not staged.exists() and [p.name for p in tmp_path.iterdir()] == ["www"]
