"""Credentials for a backup repository that is not on the host (S3, B2, Azure, Swift, a REST server): read on the
control machine from a file outside git that only its owner can read, checked name by name, and handed to restic
on the host through its environment only (never a command line, never the settings, never world-readable).

restic takes a backend's credentials from environment variables; which ones it reads is listed in its manual,
doc/040_backup.rst, "Environment Variables", at each release we pin (restic_versions: 0.12.1 jammy, 0.14.0 bookworm,
0.16.4 noble). Only the backends' names are accepted: the names that choose the repository, its password, the cache
or temporary files (RESTIC_REPOSITORY*, RESTIC_PASSWORD*, RESTIC_CACHE_DIR, TMPDIR, ...) stay labforge's, and a
name that points at another file on the host (AWS_SHARED_CREDENTIALS_FILE, AWS_PROFILE, GOOGLE_APPLICATION_CREDENTIALS,
RESTIC_CACERT, RESTIC_TLS_CLIENT_CERT) is refused: labforge would not have put that file there.
"""

from __future__ import annotations

import re
import stat
from pathlib import Path

from labforge.paths import inside

HOST_FILE = "/etc/labforge/backup/repository.env"  # 0600 root, in the 0700 directory beside the password

_KEYSTONE = ("OS_AUTH_URL", "OS_REGION_NAME", "OS_USERNAME", "OS_USER_ID", "OS_PASSWORD", "OS_TENANT_ID",
             "OS_TENANT_NAME", "OS_USER_DOMAIN_NAME", "OS_USER_DOMAIN_ID", "OS_PROJECT_NAME", "OS_PROJECT_DOMAIN_NAME",
             "OS_PROJECT_DOMAIN_ID", "OS_TRUST_ID", "OS_APPLICATION_CREDENTIAL_ID", "OS_APPLICATION_CREDENTIAL_NAME",
             "OS_APPLICATION_CREDENTIAL_SECRET", "OS_STORAGE_URL", "OS_AUTH_TOKEN")
# The backends' variables and the first pinned restic that reads each (its manual, doc/040_backup.rst at v0.12.1,
# v0.14.0, v0.16.4; AZURE_ACCOUNT_SAS is read from cmd/restic/global.go at v0.14.0 on, absent at v0.12.1): a name the
# host's restic does not read would be ignored, and the repository refuse us for no clear reason. AWS_SESSION_TOKEN is
# listed from 0.14.0 but read before: the s3 backend asks minio-go's EnvAWS first (internal/backend/s3/s3.go 53-54 at
# v0.12.1), which reads it.
BACKEND_VARIABLES: dict[str, tuple[int, ...]] = {
    **{name: (0, 12, 1) for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                                     "AWS_DEFAULT_REGION", "ST_AUTH", "ST_USER", "ST_KEY", *_KEYSTONE, "B2_ACCOUNT_ID",
                                     "B2_ACCOUNT_KEY", "AZURE_ACCOUNT_NAME", "AZURE_ACCOUNT_KEY", "GOOGLE_PROJECT_ID",
                                     "RCLONE_BWLIMIT")},
    "AZURE_ACCOUNT_SAS": (0, 14, 0),
    "AZURE_ENDPOINT_SUFFIX": (0, 16, 4), "RESTIC_REST_USERNAME": (0, 16, 4), "RESTIC_REST_PASSWORD": (0, 16, 4),
}
NAMES_A_FILE = ("AWS_SHARED_CREDENTIALS_FILE", "AWS_PROFILE", "GOOGLE_APPLICATION_CREDENTIALS", "RESTIC_CACERT",
                "RESTIC_TLS_CLIENT_CERT")
_LINE = re.compile(r"^([A-Z][A-Z0-9_]*)=(.*)$")


class CredentialsProblem(ValueError):
    """The credentials file must not be used; one actionable line."""


def parse(text: str, source: str, restic: tuple[int, ...]) -> dict[str, str]:
    """NAME=VALUE lines (blank lines and # comments skipped; no quotes, no `export`: the value is everything after
    the first =) into restic's environment for a backend, or CredentialsProblem naming the line. Lines end at \n
    (a \r before it and a leading byte-order mark are dropped), so line numbers are an editor's."""
    found: dict[str, str] = {}
    for number, raw in enumerate(text.removeprefix("\ufeff").replace("\r\n", "\n").split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        match = _LINE.match(line)
        if not match:
            raise CredentialsProblem(f"{source} line {number} is not NAME=VALUE (no quotes, no export)")
        name, value = match.groups()
        if name in NAMES_A_FILE:
            raise CredentialsProblem(f"{source} line {number}: {name} names a file on the host that labforge does not "
                                     "put there; give the credentials themselves (e.g. AWS_ACCESS_KEY_ID and "
                                     "AWS_SECRET_ACCESS_KEY)")
        if name not in BACKEND_VARIABLES:
            raise CredentialsProblem(f"{source} line {number}: {name} is not a restic backend's variable (restic's "
                                     "manual, 'Environment Variables'); the repository, its password and restic's "
                                     "files are labforge's settings")
        if BACKEND_VARIABLES[name] > restic:
            need = ".".join(map(str, BACKEND_VARIABLES[name]))
            raise CredentialsProblem(f"{source} line {number}: {name} is read from restic {need} on; this host's "
                                     f"restic is {'.'.join(map(str, restic))}")
        if name in found:
            raise CredentialsProblem(f"{source} line {number}: {name} is set twice")
        if not value or "\0" in value:
            raise CredentialsProblem(f"{source} line {number}: {name} has no value")
        if len(value) > 1 and value[0] == value[-1] and value[0] in "'\"":
            raise CredentialsProblem(f"{source} line {number}: {name}'s value is quoted; values are taken as they are: "
                                     "remove the quotes")
        found[name] = value
    if not found:
        raise CredentialsProblem(f"{source} sets nothing: remove backup_repository_env_file, or put NAME=VALUE lines in it")
    return found


def load(setting: str, restic: tuple[int, ...]) -> dict[str, str]:
    """The control machine's credentials file, refused unless it is outside the repository and only its owner can
    read it (as ssh refuses a private key others can read)."""
    path = Path(setting).expanduser().resolve()
    if inside(path):
        raise CredentialsProblem(f"backup_repository_env_file {path} is inside the repository; keep secrets outside git")
    try:
        info = path.stat()
        text = path.read_text()
    except OSError as exc:
        raise CredentialsProblem(f"cannot read backup_repository_env_file {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CredentialsProblem(f"backup_repository_env_file {path} can be read by others (mode "
                                 f"{stat.S_IMODE(info.st_mode):04o}): chmod 600 {path}")
    return parse(text, f"backup_repository_env_file {path}", restic)


def host_text(credentials: dict[str, str]) -> str:
    """The host's copy: what labforge-data reads (data_program.read_env)."""
    return "".join(f"{name}={value}\n" for name, value in sorted(credentials.items()))
