"""The backup repository's password, kept on the control machine as well (backup_password_file), so that losing the
host does not lose its backups: restic encrypts every file of a repository with a master key that only its
passwords open (restic's doc/design.rst, "Keys, Encryption and MAC"), so a repository off the host, or a
backup_fetch_dir copy, is unreadable without it. Made on the host on first use, it used to leave only by hand.

One decision (plan), from the control machine's file and the sha256 of the host's password: restic reads a password
file through internal/textfile (which drops a byte order mark) with surrounding whitespace trimmed
(cmd/restic/global.go resolvePassword, strings.TrimSpace: lines 295-317 at v0.12.1, 294-316 at v0.16.4), so both
sides are compared that way. The file is refused, like the credentials file, inside the git repository, readable by
others, empty or of more than one line, and when two hosts of the inventory would share it (each repository has its
own password: `{host}` in the setting gives each host its file).
"""

from __future__ import annotations

import hashlib
import os
import secrets
import stat
from dataclasses import dataclass
from pathlib import Path

from labforge.paths import inside

SETTING = "backup_password_file"


class PasswordProblem(ValueError):
    """The password file must not be used; one actionable line."""


@dataclass(frozen=True)
class Plan:
    action: str  # "keep" (the same on both sides), "push" (the file's to the host), "fetch" (the host's to the file),
    # "make" (a new one, to the file and then the host)
    text: str = ""  # the password to write ("push", "make"), with one newline


def digest(password: str) -> str:
    return hashlib.sha256(password.strip().encode()).hexdigest()


def path_of(setting: str, host_name: str) -> Path:
    """The file for one host: `{host}` in the setting is the host's inventory name (one password per repository)."""
    return Path(setting.replace("{host}", host_name)).expanduser().absolute()


def read(path: Path) -> str | None:
    """The control machine's password, None when the file does not exist yet (it will be fetched or made)."""
    if inside(path):
        raise PasswordProblem(f"{SETTING} {path} is inside the repository; keep secrets outside git")
    try:
        info = path.stat()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise PasswordProblem(f"cannot read {SETTING} {path}: {exc.strerror}") from None
    if info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise PasswordProblem(f"{SETTING} {path} can be read by others (mode {stat.S_IMODE(info.st_mode):04o}): "
                              f"chmod 600 {path}")
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PasswordProblem(f"cannot read {SETTING} {path}: {getattr(exc, 'strerror', None) or exc}") from None
    password = text.removeprefix("\ufeff").strip()
    if not password or "\n" in password:
        raise PasswordProblem(f"{SETTING} {path} must hold the password on one line, and holds "
                              f"{'nothing' if not password else f'{len(password.splitlines())} lines'}")
    return password


UNREADABLE = "unreadable"  # the fact's answer for a password file that is there but cannot be read


def plan(local: str | None, host_digest: str | None, path: Path, host_name: str) -> Plan:
    """What the converge does with the password, from the control machine's (None: no file yet) and the sha256 of the
    host's (trimmed; None: the host has none yet; UNREADABLE)."""
    if host_digest == UNREADABLE:
        raise PasswordProblem(f"the backup repository's password on {host_name} cannot be read (not a file, or not "
                              f"readable by root): fix it on the host before setting {SETTING}")
    if local is None:
        return Plan("fetch") if host_digest else Plan("make", secrets.token_hex(32) + "\n")
    if host_digest is None:
        return Plan("push", local + "\n")
    if digest(local) == host_digest:
        return Plan("keep")
    raise PasswordProblem(f"{SETTING} {path} is not the password {host_name} has for its backup repository: if the "
                          f"host's opens the repository, move {path} away and converge to fetch it; if the file's does "
                          "(a host rebuilt since made a new one), remove /etc/labforge/backup/restic-password on the "
                          "host and converge to put the file's there")


def shared(paths: dict[str, Path]) -> str | None:
    """One line when two hosts' settings name the same file (``paths``: host name -> its file), else None."""
    seen: dict[Path, str] = {}
    for name, path in sorted(paths.items()):
        if path in seen:
            return (f"{SETTING} {path} is the file of both {seen[path]} and {name}, but each repository has its own "
                    "password: put {host} in the setting (e.g. ~/lab-secrets/{host}.restic)")
        seen[path] = name
    return None


def write_private(path: Path, text: str) -> None:
    """`text` into `path`, 0600 in a 0700 directory from the moment each exists, whole or not at all, and never over
    a file already there (another host of the run, or the admin, wrote it first: converge again)."""
    for directory in reversed([path.parent, *path.parent.parents]):  # Path.mkdir(parents=True) makes parents 0777 & ~umask
        if not directory.exists():
            directory.mkdir(mode=0o700, exist_ok=True)  # exist_ok: another host of the run made it meanwhile
    partial = path.with_name(f".{path.name}.partial-{os.getpid()}")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        try:
            os.link(partial, path)
        except FileExistsError:
            raise PasswordProblem(f"{SETTING} {path} appeared while this run wrote it: converge again") from None
    finally:
        partial.unlink(missing_ok=True)
