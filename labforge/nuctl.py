"""Where the Nuclio layer puts nuctl on a host, and the copies it keeps of each release it installed, so that an
upgrade's rollback can put the old release's nuctl back (labforge/data_program.py, Mover.nuctl_in_place); and how a
first-use download is checked, pinned and moved into place (tasks/nuclio.py)."""

from __future__ import annotations

from pathlib import Path

from pyinfra import host

from labforge import pins, report

NUCTL = "/usr/local/bin/nuctl"
STAGED = "/usr/local/bin/.nuctl-first-use"
KEPT_DIR = "/usr/local/lib/labforge"


def kept(version: str) -> str:
    return f"{KEPT_DIR}/nuctl-{version}"


def version_check(version: str) -> str:
    return f"{{file}} version | grep -qF 'Label: {version}'"


def pin_and_install(fetched, lock: Path, version: str, arch: str) -> None:
    """On the control machine, after the first-use download: record its hash (or compare it with another
    host's record from this run), then move it into place; on a mismatch remove it and fail the host."""
    try:
        sha = pins.hash_from_output(fetched.stdout_lines)
        new = pins.record(lock, "nuctl", version, arch, sha)
    except pins.PinMismatch as exc:
        host.run_shell_command(f"rm -f {STAGED}")
        raise pins.PinMismatch(f"labforge: {host.name}: {exc}") from exc
    ok, output = host.run_shell_command(f"mv -f {STAGED} {NUCTL} && install -D -m 0755 {NUCTL} {kept(version)}")
    if not ok:
        raise RuntimeError(f"labforge: {host.name}: could not move nuctl into {NUCTL}: {output.stderr}")
    if new:
        report.notice(f"nuctl {version} ({arch}) pinned on first use: sha256 {sha} recorded in {lock}; commit it with your inventory")
