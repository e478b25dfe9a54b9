"""Where the Nuclio layer puts nuctl on a host, and the copies it keeps of each release it installed, so that an
upgrade's rollback can put the old release's nuctl back (templates/labforge-cvat-upgrade.sh.j2)."""

NUCTL = "/usr/local/bin/nuctl"
STAGED = "/usr/local/bin/.nuctl-first-use"
KEPT_DIR = "/usr/local/lib/labforge"


def kept(version: str) -> str:
    return f"{KEPT_DIR}/nuctl-{version}"
