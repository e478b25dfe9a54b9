"""Nuclio layer: the nuctl CLI, verified against its pin before it reaches /usr/local/bin.

The pin is nuctl_sha256 when set, else the lock file's entry (labforge/pins.py). With neither, nuctl is
pinned on first use: the download must report its version in `nuctl version`, its sha256 is recorded
in the lock file on the control machine, and only then is it moved into place. The version is the row of
cvat_version in cvat_stack_compat (or nuctl_version). A copy of each nuctl installed is kept in
/usr/local/lib/labforge, so a CVAT upgrade that rolls back puts the old release's nuctl back too.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.files import Sha256File
from pyinfra.operations import python, server

from labforge import compat, downloads, pins, platform, split
from labforge.nuctl import NUCTL, STAGED, kept, pin_and_install, version_check
from labforge.report import Refused


@deploy("Nuclio")
def nuclio() -> None:
    data = host.data
    if split.role(data) == "cvat":  # a split lab's CVAT host: nuctl, the dashboard and the functions are on its inference host
        return
    p = platform.current()
    version = compat.nuctl_version(data)  # the row of cvat_version, unless nuctl_version is set
    src = data.get("nuctl_url").format(version=version, arch=p.deb_arch)
    lock = pins.lock_path(data.get("download_lock_file"))
    explicit = (data.get("nuctl_sha256") or {}).get(p.deb_arch)
    try:
        sha = explicit or pins.pinned(lock, "nuctl", version, p.deb_arch)
    except pins.PinMismatch as exc:
        raise Refused(str(exc)) from exc
    if sha:
        fetched = downloads.verified(name=f"nuctl {version} (sha256 from {'nuctl_sha256' if explicit else lock.name})",
                                     src=src, dest=NUCTL, sha256=sha, mode="0755")
        server.shell(name=f"nuctl reports version {version}", _if=fetched.did_change,
                     commands=[version_check(version).format(file=NUCTL)])
        copy = kept(version)
        if host.get_fact(Sha256File, path=copy) != sha:
            server.shell(name=f"nuctl {version} kept as {copy} (for an upgrade's rollback)",
                         commands=[f"install -D -m 0755 {NUCTL} {copy}"])
        return
    fetched = server.shell(name=f"nuctl {version}: first download, checked with `nuctl version` (pin on first use)",
                           commands=[downloads.first_use_command(src, STAGED, version_check(version))])
    python.call(name=f"nuctl {version}: record its sha256 in {lock.name}, then install it", function=pin_and_install,
                fetched=fetched, lock=lock, version=version, arch=p.deb_arch)
