"""labforge/downloads.py: verified downloads (real curl, sha256sum and mv against a server on 127.0.0.1)."""

from __future__ import annotations

import hashlib
import http.server
import shutil
import subprocess
import threading

import pytest

from labforge import downloads, pins
from labforge.groupdata import load
from tests.conftest import cannot_run

DATA = load("gpu_servers")

SHA_A = "a" * 64


def sh(command: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["sh", "-c", command], capture_output=True, text=True, timeout=timeout)




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
