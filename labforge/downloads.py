"""Downloads that are verified before they reach their final path.

pyinfra 3.10's ``files.download(sha256sum=...)`` downloads onto ``dest`` and checks afterwards: a
file that fails the check stays at ``dest`` (a tampered apt key stayed trusted by its ``Signed-By``
source in the test lab). Here every download goes to a temporary file beside ``dest`` (the same file
system, so the final ``mv`` is atomic), is checked, and only then replaces ``dest``. On a mismatch
``dest`` is left exactly as it was and the run fails with one line naming it.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import operation
from pyinfra.facts.files import Sha256File

MARK = "LABFORGE_SHA256"  # the line a first-use download prints its hash on (pins.record reads it)


def fetch_to_temp(src: str, dest: str) -> str:
    """Shell: download src into a fresh temporary file next to dest, named in $labforge_tmp (removed on exit)."""
    d, s = shlex.quote(dest), shlex.quote(src)
    return (f"labforge_tmp=$(mktemp {d}.labforge-XXXXXX) && trap 'rm -f \"$labforge_tmp\"' EXIT && "
            f"{{ curl -fsSL --retry 3 --connect-timeout 20 -o \"$labforge_tmp\" {s} || "
            f"{{ echo \"labforge: {dest}: download of {src} failed; {dest} left unchanged\" >&2; exit 1; }}; }}")


def verify_and_install_command(src: str, dest: str, sha256: str, mode: str) -> str:
    d = shlex.quote(dest)
    return (
        f"{fetch_to_temp(src, dest)} && "
        "labforge_got=$(sha256sum \"$labforge_tmp\" | cut -d' ' -f1) && "
        f"if [ \"$labforge_got\" != {shlex.quote(sha256)} ]; then "
        f"echo \"labforge: {dest}: sha256 mismatch (expected {sha256}, got $labforge_got) from {src}; "
        f"{dest} left unchanged\" >&2; exit 1; fi && "
        f"chmod {mode} \"$labforge_tmp\" && mv -f \"$labforge_tmp\" {d}"
    )


@operation()
def verified(src: str, dest: str, sha256: str, mode: str = "0644"):
    """``dest`` holds the file with this sha256, downloaded from ``src`` only when it does not already."""
    if host.get_fact(Sha256File, path=dest) == sha256:
        host.noop(f"{dest} has sha256 {sha256[:12]}…")
        return
    yield verify_and_install_command(src, dest, sha256, mode)


def first_use_command(src: str, staged: str, check: str) -> str:
    """Shell for pin-on-first-use: download to ``staged``, run ``check`` on it (``{file}`` stands for the
    staged path), print its sha256 after MARK. Nothing is moved into place here: the control machine
    compares the hash with the lock file first (pins.record)."""
    s = shlex.quote(staged)
    return (
        f"{fetch_to_temp(src, staged)} && chmod 0755 \"$labforge_tmp\" && "
        f"{{ {check.format(file=chr(34) + '$labforge_tmp' + chr(34))} || "
        f"{{ echo \"labforge: {src} failed its check ({check.format(file='<file>')}); nothing was installed\" >&2; exit 1; }}; }} && "
        f"echo \"{MARK} $(sha256sum \"$labforge_tmp\" | cut -d' ' -f1)\" && mv -f \"$labforge_tmp\" {s}"
    )
