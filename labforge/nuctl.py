"""Where the Nuclio layer puts nuctl on a host, and the copies it keeps of each release it installed, so that an
upgrade's rollback can put the old release's nuctl back (labforge/data_program.py, Mover.nuctl_in_place)."""

NUCTL = "/usr/local/bin/nuctl"
STAGED = "/usr/local/bin/.nuctl-first-use"
KEPT_DIR = "/usr/local/lib/labforge"


def kept(version: str) -> str:
    return f"{KEPT_DIR}/nuctl-{version}"
