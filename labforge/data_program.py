#!/usr/bin/python3
"""labforge-data: the one program on a CVAT host that backs up, restores and guards the lab's data.

Installed by the converge as /usr/local/lib/labforge/labforge-data (Python 3 standard library only: every supported
host has python3), it reads the JSON file the converge writes (CONFIG) and keeps its journal in JOURNAL. Every
docker, git and restic call goes through one Runner, which the unit tests replace (tests/unit/test_data_program.py);
files are moved with os.rename on the host itself. docs/backups-and-upgrades.md says what is true and what is not.

Why it is shaped this way:
- one lock (LOCK, flock) for backup, restore, the upgrade and the timer: no two ever interleave, and a kill releases it;
- a journal written before each step that cannot be undone, so any later run (the timer, a converge, a restore)
  first finishes or undoes what a killed one left: nothing half-restored is ever started, nothing stays stopped;
- restic (a deduplicating, compressing, verifying repository) instead of tar: a first pass runs while CVAT serves,
  and the pass with CVAT stopped re-reads only what changed since (restic's parent snapshot), so down time follows
  the changes, not the size of the data;
- retention decided by one pure function (to_forget) that never drops the backup being restored, the newest good
  backup, a backup a journal names, or the newest backup of a CVAT release (a downgrade needs one);
- the upgrade (Mover) in the same program and under the same lock, with its own journal (its path is the config's
  upgrade.state): its backups and rollbacks are this program's backup and restore, called in-process.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import fcntl
import filecmp
import http.client
import json
import os
import re
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field

CONFIG = "/etc/labforge/data.json"
LOCK = "/run/labforge/data.lock"  # in a root-only directory: flock needs only read access, so a file others can open
# is a lock any local account could hold forever
JOURNAL = "/var/lib/labforge/data-journal.json"
LAST = "/var/lib/labforge/backup-last.json"  # world-readable: a name, a time, a size, no data
KINDS = ("manual", "scheduled", "before-restore", "before-upgrade", "before-rollback", "online")
SAFETY = ("before-restore", "before-upgrade", "before-rollback")
TIME = "%Y-%m-%dT%H:%M:%SZ"  # results' and journals' times: UTC, the host's one clock
STAGING = "labforge-restore"  # beside the volumes' directory (same file system: renames are atomic)


class Failed(Exception):
    """What went wrong, in one line the admin can act on."""


class Killed(BaseException):
    """Raised by a test Runner to stand for kill -9: no `except Exception` clean-up runs."""


@dataclass
class Result:
    code: int
    out: str
    err: str

    def last(self) -> str:
        """The line that says why: a full disk wherever it is said (restic names it in the middle, e.g. under "unable
        to create lock in backend"), else the last line."""
        lines = [line for line in (self.err or self.out).strip().splitlines() if line.strip()]
        full = [line for line in lines if NO_SPACE in line.lower()]
        return (full or lines)[-1][:300] if lines else f"exit {self.code}"


class Runner:
    """Runs the host's commands; the unit tests replace it (and use `point` to kill between steps)."""

    def run(self, argv: list[str], env: dict[str, str] | None = None, cwd: str | None = None,
            timeout: float | None = None, stdin: str | None = None) -> Result:
        full = {**os.environ, **(env or {})}
        try:
            proc = subprocess.run(argv, env=full, cwd=cwd, capture_output=True, text=True, timeout=timeout, input=stdin)
        except subprocess.TimeoutExpired:
            return Result(124, "", f"{argv[0]} did not finish within {timeout:.0f}s")
        except FileNotFoundError:
            return Result(127, "", f"{argv[0]}: command not found")
        return Result(proc.returncode, proc.stdout, proc.stderr)

    def point(self, label: str) -> None:
        """A place a kill can happen at (the tests kill here)."""

    def unreachable(self, url: str, timeout: float = 20) -> str | None:
        """None when ``url`` answers from this host (a status below 400, after redirects), else why not, in a few
        words. HEAD first; a server that refuses HEAD alone is asked for its first byte."""
        for method in ("HEAD", "GET"):
            headers = {"User-Agent": "labforge-upgrade-check", **({"Range": "bytes=0-0"} if method == "GET" else {})}
            try:
                with urllib.request.urlopen(urllib.request.Request(url, method=method, headers=headers), timeout=timeout):
                    return None
            except urllib.error.HTTPError as exc:
                if method == "HEAD" and exc.code in (403, 405, 501):
                    continue
                return f"HTTP {exc.code}"
            except http.client.HTTPException as exc:  # something answered, but not HTTP
                return f"not HTTP: {type(exc).__name__} {str(exc).strip()[:60]!r}"
            except (urllib.error.URLError, OSError, ValueError) as exc:
                return str(getattr(exc, "reason", exc))[:120]
        return None

    def now(self) -> datetime.datetime:
        return datetime.datetime.now(datetime.timezone.utc)

    def monotonic(self) -> float:
        return time.monotonic()

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


# --- pure decisions --------------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Snapshot:
    """One backup in the repository: restic's snapshot, with what labforge wrote in its tags."""
    id: str
    name: str
    kind: str
    cvat: str
    time: str  # restic's; order comes from the name (the same clock, in UTC, fixed width)

    @classmethod
    def from_restic(cls, item: dict) -> Snapshot | None:
        tags = dict(tag.split("=", 1) for tag in item.get("tags") or [] if "=" in tag)
        if "name" not in tags:
            return None
        return cls(item["id"], tags["name"], tags.get("kind", "manual"), tags.get("cvat", ""), item.get("time", ""))


def new_name(now: datetime.datetime, kind: str) -> str:
    """cvat-<UTC time to the millisecond>[-<kind>]: one clock (the host's) names backups and dates snapshots, and
    names sort by time."""
    stamp = f"cvat-{now:%Y%m%dT%H%M%S}{now.microsecond // 1000:03d}Z"
    return stamp if kind in ("manual", "scheduled") else f"{stamp}-{kind}"


def to_forget(snapshots: list[Snapshot], keep: int, protected: set[str]) -> list[Snapshot]:
    """The snapshots retention removes: beyond the `keep` newest regular backups, and beyond the `keep` newest safety
    backups (counted apart, named as such), but never one named in `protected` (the backup being restored, those a
    journal depends on), never the newest good backup, never the newest backup of each CVAT release. Leftover
    online passes (only parents of a backup a kill interrupted) always go."""
    if keep < 1:
        raise Failed(f"keep must be 1 or more, not {keep}")
    ordered = sorted((s for s in snapshots if s.kind != "online"), key=lambda s: s.name, reverse=True)
    kept = {s.name for s in protected_snapshots(ordered, protected)}
    kept.update(s.name for s in [s for s in ordered if s.kind not in SAFETY][:keep])
    kept.update(s.name for s in [s for s in ordered if s.kind in SAFETY][:keep])
    return [s for s in snapshots if s.name not in kept]


def protected_snapshots(ordered: list[Snapshot], protected: set[str]) -> list[Snapshot]:
    newest_of_release: dict[str, Snapshot] = {}
    for snap in ordered:
        newest_of_release.setdefault(snap.cvat, snap)
    return [s for s in ordered if s.name in protected or s is ordered[0] or newest_of_release.get(s.cvat) is s]


def choose(snapshots: list[Snapshot], wanted: str | None, tag: str | None) -> Snapshot:
    """The backup a restore takes: `wanted`, else the newest regular or safety one; refused when it is missing or of
    another CVAT release than the checked-out `tag` (CVAT's backup guide: restore into the same version only)."""
    good = [s for s in snapshots if s.kind != "online"]
    if wanted:
        found = [s for s in good if s.name == wanted]
        if not found:
            have = ", ".join(sorted(s.name for s in good)) or "none"
            raise Failed(f"no backup {wanted} in the repository (backups there: {have})")
        snap = found[0]
    else:
        if not good:
            raise Failed("no backup in the repository: take one first with `pyinfra inventory.py backup.py`")
        snap = max(good, key=lambda s: s.name)
    if tag is None:
        raise Failed("CVAT's checkout is not at a release tag: converge first")
    if snap.cvat != tag:
        raise Failed(f"backup {snap.name} was taken at CVAT {snap.cvat}, the checkout is at {tag}: CVAT restores only "
                     "into the same release (set cvat_version to it and converge, or choose another backup)")
    return snap


def space_problem(free: int, needed: int, reserve: int, where: str, what: str) -> str | None:
    """Why there is not room for `what` (None: there is): `reserve` bytes must stay free after it, so that a disk
    shared with Docker never fills up under PostgreSQL."""
    if free - needed >= reserve:
        return None
    return (f"not enough free space for {what} on the disk of {where}: {human(free)} free, {human(needed)} needed "
            f"and {human(reserve)} kept free (backup_reserve_bytes); nothing was stopped")


def staleness(age: float | None, period: float | None) -> str | None:
    """Why the last good backup is too old for its schedule (None: it is not). One missed run is tolerated, with an
    hour for a run that is slow or waits for the lock."""
    if period is None:
        return None
    if age is None:
        return "no good backup yet, although backups are scheduled"
    if age > 2 * period + 3600:
        return f"the last good backup is {age / 3600:.1f} h old, the schedule runs every {period / 3600:.1f} h"
    return None


def human(size: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if abs(size) < 1024 or unit == "GiB":
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} TiB"


# --- the lock and the journal ----------------------------------------------------------------------------------------

class Lock:
    """One flock for every data path. The holder writes who it is into the file, so a loser names it."""

    def __init__(self, path: str = LOCK):
        self.path = path
        self.fd: int | None = None

    def acquire(self, what: str, wait: float, runner: Runner) -> None:
        os.makedirs(os.path.dirname(self.path), mode=0o700, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        deadline = runner.monotonic() + wait
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if runner.monotonic() >= deadline:
                    holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "another labforge-data run"
                    os.close(fd)
                    raise Failed(f"{what} not started: the data lock is held by {holder} (waited {wait:.0f}s)") from None
                runner.sleep(min(2.0, max(0.05, wait / 50)))
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{what} (pid {os.getpid()}, since {runner.now():%Y-%m-%d %H:%M:%S} UTC)\n".encode(), 0)
        self.fd = fd

    def release(self) -> None:
        if self.fd is not None:
            os.ftruncate(self.fd, 0)
            os.close(self.fd)
            self.fd = None


def write_json(path: str, value: dict, mode: int = 0o600) -> None:
    """Whole or not at all: written beside, flushed, renamed. A full disk (or any write error) leaves nothing
    half-written behind and is one line (Failed)."""
    tmp = f"{path}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(fd, "w") as stream:
            json.dump(value, stream, indent=1, sort_keys=True)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise Failed(f"cannot write {path}: {exc.strerror or exc}") from None


def read_json(path: str) -> dict | None:
    try:
        with open(path) as stream:
            return json.load(stream)
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        raise Failed(f"{path} cannot be read ({exc}); move it aside only after reading docs/backups-and-upgrades.md") from exc


# --- the program -----------------------------------------------------------------------------------------------------

@dataclass
class Keeper:
    """The data paths, given the converge's settings (`config`) and where things live (paths, replaced in tests)."""
    config: dict
    runner: Runner = field(default_factory=Runner)
    journal_path: str = JOURNAL
    last_path: str = LAST
    lock: Lock = field(default_factory=Lock)
    said: list[str] = field(default_factory=list)

    # -- small tools --
    def say(self, line: str) -> None:
        self.said.append(line)
        print(f"labforge-data: {line}", file=sys.stderr, flush=True)

    def run(self, argv: list[str], what: str, timeout: float | None = None, env: dict | None = None,
            accept: tuple[int, ...] = (0,)) -> Result:
        result = self.runner.run(argv, env=env, cwd=self.config.get("cvat_dir"), timeout=timeout)
        if result.code not in accept:
            raise Failed(f"{what} failed: {result.last()}")
        return result

    def compose_argv(self, *args: str) -> list[str]:
        """`docker compose` with the converge's project and files (CVAT's upgrade guide: every -f file, always)."""
        return ["docker", "compose", "-p", self.config["project"], *self.config["compose"], *args]

    def compose(self, *args: str, what: str | None = None, env: dict | None = None) -> Result:
        return self.run(self.compose_argv(*args), what or f"docker compose {args[0]}", env=env)

    def restic(self, *args: str, what: str | None = None, accept: tuple[int, ...] = (0,)) -> Result:
        return self.run(["restic", *args], what or f"restic {args[0]}", env=self._restic_env(), accept=accept)

    def journal(self) -> dict | None:
        return read_json(self.journal_path)

    def write_journal(self, value: dict) -> None:
        write_json(self.journal_path, value)
        self.runner.point(f"{value.get('op')}:{value.get('phase')}")

    def clear_journal(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.journal_path)

    def release_tag(self) -> str | None:
        result = self.runner.run(["git", "-C", self.config["cvat_dir"], "describe", "--tags", "--exact-match", "HEAD"])
        return result.out.strip() or None if result.code == 0 else None

    def mountpoints(self) -> dict[str, str]:
        found = {}
        for key in self.config["volumes"]:
            volume = f"{self.config['project']}_{key}"
            result = self.run(["docker", "volume", "inspect", "-f", "{{.Mountpoint}}", volume], f"docker volume inspect {volume}")
            found[key] = result.out.strip()
        return found

    def snapshots(self) -> list[Snapshot]:
        items = json.loads(self.restic("snapshots", "--json", "--tag", "labforge", what="listing the backups").out or "[]")
        return [snap for snap in map(Snapshot.from_restic, items) if snap]

    def wait_api(self) -> None:
        self.run([self.config["wait_api"], str(self.config.get("api_timeout", 600))], "waiting for CVAT's API")

    # -- the repository --
    def ensure_repository(self) -> None:
        """Make the repository (and its password, root only) on first use; clear restic's stale locks a kill left
        (we hold the data lock, so no restic of ours is running). Each restic call costs its key derivation (about
        0.5 s): a repository on this host is looked at directly."""
        password = self.config["password_file"]
        if not os.path.exists(password):
            os.makedirs(os.path.dirname(password), mode=0o700, exist_ok=True)
            write_json_text(password, os.urandom(32).hex() + "\n")
            self.say(f"made the repository's password {password} (root only): copy it somewhere safe, no backup can "
                     "be read without it")
        repository = self.config["repository"]
        local = repository.startswith("/")
        if local:
            exists = os.path.exists(os.path.join(repository, "config"))
        else:
            exists = self.runner.run(["restic", "cat", "config"], env=self._restic_env()).code == 0
        if not exists:
            if local:
                os.makedirs(repository, mode=0o700, exist_ok=True)
            self.restic("init", *self.config.get("init_args", []), what="making the backup repository")
        if not local or os.listdir(os.path.join(repository, "locks")):
            self.restic("unlock", what="clearing restic's stale locks")

    def _restic_env(self) -> dict:
        """restic's environment: the repository, its password file and cache, and a remote repository's credentials
        (`repository_env`: NAME=VALUE lines the converge checked and wrote, root only), never on a command line."""
        credentials = read_env(self.config["repository_env"]) if self.config.get("repository_env") else {}
        return {**credentials, "RESTIC_REPOSITORY": self.config["repository"],
                "RESTIC_PASSWORD_FILE": self.config["password_file"],
                "RESTIC_CACHE_DIR": self.config.get("cache_dir", "/var/cache/labforge/restic")}

    def repository_files(self) -> set[str]:
        """The pack and index files of a repository on this host (empty for others)."""
        root = self.config["repository"]
        found = set()
        if root.startswith("/"):
            for sub in ("data", "index", "snapshots"):
                for base, _, names in os.walk(os.path.join(root, sub)):
                    found.update(os.path.join(base, name) for name in names)
        return found

    def free_bytes(self, path: str) -> int:
        while not os.path.exists(path):
            path = os.path.dirname(path)
        stat = os.statvfs(path)
        return stat.f_bavail * stat.f_frsize

    # -- recovery: what a killed run left --
    def recover(self) -> None:
        """Finish or undo what the journal says a killed run left; called first by every command."""
        entry = self.journal()
        if entry is None:
            return
        op = entry.get("op")
        if op == "backup" and entry.get("phase") == "online":
            self.say(f"a backup ({entry.get('name')}) was killed during its online pass: removing what it wrote")
            self.drop_added(entry, set(entry.get("before_online") or []))
            self.clear_journal()
        elif op == "backup":
            self.say(f"a backup ({entry.get('name')}) was killed while CVAT was stopped: starting CVAT again")
            self.drop_partial(entry)  # first: a full disk is freed before PostgreSQL starts again (never raises)
            self.compose("start")
            self.clear_journal()
        elif op == "restore":
            self.recover_restore(entry)
        else:
            raise Failed(f"{self.journal_path} names an unknown operation {op!r}; read it, then remove it")

    def drop_partial(self, entry: dict) -> None:
        """Remove what a failed or killed backup added to a repository on this host, its online pass included, so
        that a full disk is freed before CVAT starts again; `entry`: its journal (`repository_files`: the files when
        the stopped pass began, `before_online`: before the online pass; a journal of an earlier labforge-data has
        only the first). Nothing is removed once the stopped pass's snapshot exists: the backup was complete."""
        if not self.config["repository"].startswith("/"):
            return
        before_stop = set(entry.get("repository_files") or [])
        before = set(entry["before_online"]) if "before_online" in entry else before_stop
        now = self.repository_files()
        if self.changed_since(entry, before_stop | before, now) or any(self.is_snapshot(p) for p in now - before_stop):
            return
        self.remove(now - before)

    def changed_since(self, entry: dict, before: set[str], now: set[str]) -> bool:
        """Whether the repository is no longer the one the journal describes: another path (`backup_dir` moved
        since), or a file it listed gone (a `restic prune` or `repair` by hand since). Then what the unfinished
        backup wrote cannot be told apart and stays until the next prune; said once."""
        if entry.get("repository", self.config["repository"]) == self.config["repository"] and before <= now:
            return False
        self.say(f"left what the unfinished backup {entry.get('name')} wrote in {self.config['repository']}: the "
                 "repository changed since it began (restic prune removes it)")
        return True

    def is_snapshot(self, path: str) -> bool:
        """A finished snapshot file: <repository>/snapshots/<64 hex> (restic's local backend writes `<id>-tmp-...`
        first and renames it; a name is the sha256 of its content)."""
        directory, name = os.path.split(path)
        return directory == os.path.join(self.config["repository"], "snapshots") and bool(SNAPSHOT_NAME.fullmatch(name))

    def drop_added(self, entry: dict, before: set[str]) -> None:
        """Remove every pack, index and snapshot file added since `before` (a repository on this host). Safe only
        when nothing but this backup wrote to the repository since: under the data lock only it did, and a pack it
        added holds only blobs no older snapshot refers to (restic stores a blob once). So nothing is removed when
        the journal is of another repository (`backup_dir` moved since) or when a file it listed is gone (a `restic
        prune` or `repair` by hand since): then what the backup wrote stays until the next prune, and it is said.
        Never raises: a file that cannot be removed is said, and CVAT is started all the same."""
        if not self.config["repository"].startswith("/"):
            return
        now = self.repository_files()
        if not self.changed_since(entry, before, now):
            self.remove(now - before)

    def remove(self, added: set[str]) -> None:
        """Unlink what the unfinished backup added; never raises (see drop_added)."""
        failed = []
        for path in sorted(added):
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                failed.append(f"{path}: {exc.strerror}")
        if failed:
            self.say(f"could not remove {len(failed)} files the unfinished backup wrote ({failed[0]}); restic prune "
                     "removes them")

    # -- backup --
    def backup(self, kind: str, protect: set[str] | None = None, retention: bool = True) -> dict:
        """Back up every volume; CVAT is stopped only for the pass that re-reads what changed since the online pass.
        Returns the result written to LAST."""
        if kind not in KINDS or kind == "online":
            raise Failed(f"unknown backup kind {kind!r}")
        started = self.runner.monotonic()
        name = new_name(self.runner.now(), kind)
        tag = self.release_tag()
        if tag is None:
            raise Failed(f"{self.config['cvat_dir']} is not at a CVAT release tag: converge first")
        try:
            result = self._backup(name, kind, tag, protect or set(), retention)
        except Failed as exc:
            try:
                self.record({"result": "failed", "name": name, "kind": kind, "why": str(exc)})
            except Failed as unrecorded:  # e.g. a full disk: the failure itself stays the message
                raise Failed(f"{exc} (and {unrecorded})") from None
            raise
        result["seconds"] = round(self.runner.monotonic() - started, 1)
        self.record(result)
        return result

    def _backup(self, name: str, kind: str, tag: str, protect: set[str], retention: bool) -> dict:
        self.ensure_repository()
        mounts = self.mountpoints()
        paths = [mounts[key] for key in self.config["volumes"]]
        online = [mounts[key] for key in self.config.get("online_volumes", []) if key in mounts]
        tags = ["--tag", f"labforge,name={name},kind={kind},cvat={tag}"]
        everything = self.snapshots()
        previous = [s for s in everything if s.kind != "online"]
        online_leftovers = [s for s in everything if s.kind == "online"]
        last = ["--parent", max(previous, key=lambda s: s.name).id] if previous else []
        if self.config.get("dry_run", True):
            estimate = self.restic("backup", "--dry-run", "--json", *last, *paths, what="estimating the backup's size")
            needed = summary_of(estimate.out).get("data_added", 0)
        else:  # restic before 0.13 has no --dry-run: the whole size of the volumes, an upper bound
            needed = sum(tree_size(path) for path in paths)
        if self.config["repository"].startswith("/"):
            problem = space_problem(self.free_bytes(self.config["repository"]), needed,
                                    int(self.config.get("reserve_bytes", 0)), self.config["repository"], f"backup {name}")
            if problem:
                raise Failed(problem)
        parent: list[str] = []
        online_added = 0
        before_online = sorted(self.repository_files())
        if online:  # read while CVAT serves; the stopped pass then reads only what changed since
            # journalled first: a kill during this pass leaves packs that the next run removes (recover)
            online_entry = {"op": "backup", "phase": "online", "name": name, "repository": self.config["repository"],
                            "before_online": before_online}
            self.write_journal(online_entry)
            # A file CVAT deletes or replaces while this pass reads is expected here: restic then still makes its
            # snapshot and exits 3 (restic-backup(1), EXIT STATUS: "some source data could not be read (incomplete
            # snapshot created)", restic 0.13 and later). This pass only warms the repository up; the stopped pass
            # reads the volumes again and is the backup, so there exit 3 stays a failure.
            try:
                first = self.restic("backup", "--json", "--tag", f"labforge,name={name}-online,kind=online,cvat={tag}",
                                    *last, *online, what="the online pass (CVAT running)", accept=(0, RESTIC_INCOMPLETE))
            except Failed as exc:  # e.g. the disk filled: what it wrote goes, CVAT was never stopped
                self.drop_added(online_entry, set(before_online))
                self.clear_journal()
                raise Failed(f"{exc}; CVAT kept running and older backups are untouched") from None
            online_added = summary_of(first.out).get("data_added", 0)
            first_id = summary_of(first.out).get("snapshot_id")
            if first_id:
                parent = ["--parent", first_id]
                online_leftovers.append(Snapshot(first_id, f"{name}-online", "online", tag, ""))
        before = self.repository_files()
        stopping = {"op": "backup", "phase": "stopping", "name": name, "repository": self.config["repository"],
                    "repository_files": sorted(before), "before_online": before_online}
        try:
            self.write_journal(stopping)
        except Failed as exc:  # e.g. the online pass filled the disk: what it wrote goes, nothing was stopped
            self.drop_added(stopping, set(before_online))
            self.clear_journal()
            raise Failed(f"{exc}; CVAT kept running and older backups are untouched") from None
        down_from = self.runner.monotonic()
        try:
            self.compose("stop")
            self.runner.point("backup:stopped")
            what = f"backing up {', '.join(self.config['volumes'])}"
            taken = self.restic("backup", "--json", *tags, *parent, *paths, what=what, accept=(0, RESTIC_INCOMPLETE))
            if taken.code == RESTIC_INCOMPLETE:  # a snapshot missing what could not be read: never kept as a backup
                incomplete = summary_of(taken.out).get("snapshot_id")
                if incomplete:
                    self.restic("forget", incomplete, what=f"forgetting the incomplete snapshot {incomplete}")
                raise Failed(f"{what} failed: {taken.last()}")
        except Failed as exc:
            self.drop_partial(stopping)
            self.compose("start", what="starting CVAT again")
            self.clear_journal()
            raise Failed(f"{exc}; CVAT was started again and older backups are untouched") from None
        self.runner.point("backup:taken")
        self.compose("start", what="starting CVAT again")
        down = round(self.runner.monotonic() - down_from, 1)
        self.clear_journal()
        info = summary_of(taken.out)
        self.restic("check", *self.check_args(), what=f"checking the repository after backup {name}")
        made = Snapshot(info.get("snapshot_id", ""), name, kind, tag, self.runner.now().isoformat())
        forgotten = self.retention(protect | {name}, [*previous, made, *online_leftovers]) if retention else []
        return {"result": "ok", "name": name, "kind": kind, "cvat": tag, "snapshot": info.get("snapshot_id"),
                "bytes": info.get("total_bytes_processed", 0), "added": online_added + info.get("data_added", 0),
                "files_read": info.get("files_new", 0) + info.get("files_changed", 0),  # by the stopped pass
                "down_seconds": down, "forgotten": forgotten, "at": self.runner.now().strftime(TIME)}

    def check_args(self) -> list[str]:
        """restic's check, plus one of `check_read_parts` parts of the data read back each day (all of it over that
        many days)."""
        parts = int(self.config.get("check_read_parts", 0))
        if parts <= 0:
            return []
        day = self.runner.now().toordinal() % parts + 1
        return [f"--read-data-subset={day}/{parts}"]

    def retention(self, protect: set[str], snapshots: list[Snapshot]) -> list[str]:
        """Forget what to_forget says (one restic forget, one prune); `snapshots`: the repository's, as listed at the
        start of this backup plus what it made (one listing less)."""
        entry = self.journal() or {}
        protect = protect | {entry.get(key) for key in ("backup", "restore", "name", "safety") if entry.get(key)}
        protect |= upgrade_dependencies((self.config.get("upgrade") or {}).get("state"))
        doomed = to_forget(snapshots, int(self.config["keep"]), protect)
        if doomed:
            self.restic("forget", *[s.id for s in doomed], what="removing old backups")
            self.restic("prune", what="pruning the repository")
        return [s.name for s in doomed]

    def record(self, result: dict) -> None:
        result.setdefault("at", self.runner.now().strftime(TIME))
        result["schedule_period_seconds"] = self.config.get("schedule_period_seconds")  # the doctor judges the age by it
        previous = read_json_quietly(self.last_path)
        if result["result"] == "ok":
            result["last_good"] = {"name": result["name"], "at": result["at"]}
        elif previous and previous.get("last_good"):
            result["last_good"] = previous["last_good"]
        write_json(self.last_path, result, mode=0o644)

    # -- restore --
    def restore(self, wanted: str | None, unpack: bool = False) -> dict:
        """Put a backup back: checked, staged beside the volumes while CVAT still runs (after a safety backup), then
        swapped in by renames with CVAT stopped. `unpack`: the upgrade's rollback (the stack is down; nothing starts)."""
        self.ensure_repository()
        snap = choose(self.snapshots(), wanted, self.release_tag())
        mounts = self.mountpoints()
        root = staging_root(mounts)
        size = json.loads(self.restic("stats", snap.id, "--mode", "restore-size", "--json", what="sizing the restore").out)
        problem = space_problem(self.free_bytes(root), int(size.get("total_size", 0)), int(self.config.get("reserve_bytes", 0)),
                                root, f"restoring {snap.name}")
        if problem:
            raise Failed(problem)
        safety = None
        if not unpack:
            safety = self.backup("before-restore", protect={snap.name}, retention=True)["name"]
        return self.apply_restore(snap, mounts, os.path.join(root, f"{STAGING}-{snap.name}"), safety, unpack)

    def apply_restore(self, snap: Snapshot, mounts: dict[str, str], staging: str, safety: str | None, unpack: bool) -> dict:
        """The journalled part of a restore, once it is checked and the current data is backed up."""
        entry = {"op": "restore", "phase": "staging", "restore": snap.name, "safety": safety, "staging": staging,
                 "mounts": mounts, "unpack": unpack}
        self.write_journal(entry)
        shutil.rmtree(staging, ignore_errors=True)
        os.makedirs(staging, mode=0o700)
        try:
            self.restic("restore", snap.id, "--target", staging, "--verify", what=f"unpacking {snap.name}")
            missing = [key for key, mount in mounts.items() if not os.path.isdir(staging + mount)]
            if missing:
                raise Failed(f"backup {snap.name} holds no {', '.join(missing)}")
        except Failed as exc:
            shutil.rmtree(staging, ignore_errors=True)
            self.clear_journal()
            raise Failed(f"{exc}; nothing was changed, CVAT kept running") from None
        down_from = self.runner.monotonic()
        if not unpack:
            self.write_journal({**entry, "phase": "stopping"})
            self.compose("stop")
        self.write_journal({**entry, "phase": "swapping"})
        self.finish_restore(entry)
        down = 0.0 if unpack else round(self.runner.monotonic() - down_from, 1)
        return {"restored": snap.name, "safety": safety, "down_seconds": down}

    def finish_restore(self, entry: dict) -> None:
        """Swap the staged volumes in, start CVAT and wait for its API; when it does not come up, the data from before
        goes back. Resumable: run again after a kill, it finishes what was begun."""
        self.swap_in(entry)
        if entry.get("unpack"):
            self.write_journal({**entry, "phase": "cleaning"})
            self.clean(entry)
            return
        self.write_journal({**entry, "phase": "starting"})
        try:
            self.compose("start")
            self.wait_api()
        except Failed as exc:
            self.swap_back(entry, str(exc))
            raise Failed(f"CVAT did not come up after restoring {entry['restore']} ({exc}); the data before the restore "
                         f"is back (also in backup {entry.get('safety')})") from None
        self.write_journal({**entry, "phase": "cleaning"})
        self.clean(entry)

    def swap_in(self, entry: dict) -> None:
        """Per volume: the current directory set aside as <dir>.labforge-old, the staged one renamed in. Each step is
        checked before it is made, so running it again after a kill finishes what was begun."""
        for mount in entry["mounts"].values():
            old, staged = f"{mount}.labforge-old", entry["staging"] + mount
            if os.path.isdir(staged):
                if os.path.isdir(mount) and not os.path.isdir(old):
                    os.rename(mount, old)
                    self.runner.point("restore:set-aside")
                if not os.path.isdir(mount):
                    os.rename(staged, mount)
                    self.runner.point("restore:swapped-one")

    def swap_back(self, entry: dict, why: str) -> None:
        """The restored data did not come up: the data from before it goes back (it was set aside, not removed)."""
        self.write_journal({**entry, "phase": "swapping-back", "why": why})
        self.compose("stop", what="stopping CVAT to put the data back")
        for mount in entry["mounts"].values():
            old = f"{mount}.labforge-old"
            if os.path.isdir(old):
                if os.path.isdir(mount):
                    shutil.rmtree(mount)
                os.rename(old, mount)
        self.compose("start", what="starting CVAT with the data from before the restore")
        shutil.rmtree(entry["staging"], ignore_errors=True)
        self.clear_journal()

    def clean(self, entry: dict) -> None:
        for mount in entry["mounts"].values():
            shutil.rmtree(f"{mount}.labforge-old", ignore_errors=True)
        shutil.rmtree(entry["staging"], ignore_errors=True)
        self.clear_journal()

    def recover_restore(self, entry: dict) -> None:
        phase, name = entry.get("phase"), entry.get("restore")
        if phase in ("staging", "stopping"):
            self.say(f"a restore of {name} was killed before any volume changed: undone")
            shutil.rmtree(entry["staging"], ignore_errors=True)
            if not entry.get("unpack"):
                self.compose("start", what="starting CVAT again")
            self.clear_journal()
        elif phase in ("swapping", "starting"):
            self.say(f"a restore of {name} was killed while swapping the volumes in or starting CVAT: finishing it")
            self.finish_restore(entry)
        elif phase == "swapping-back":
            self.say(f"putting back the data from before the restore of {name} (it did not come up: {entry.get('why')})")
            self.swap_back(entry, entry.get("why", ""))
        elif phase == "cleaning":
            self.clean(entry)
        else:
            raise Failed(f"{self.journal_path}: a restore in an unknown phase {phase!r}")

    # -- status --
    def status(self) -> dict:
        last = read_json_quietly(self.last_path) or {}
        good = last.get("last_good") or {}
        age = None
        if good.get("at"):
            at = datetime.datetime.strptime(good["at"], TIME).replace(tzinfo=datetime.timezone.utc)
            age = (self.runner.now() - at).total_seconds()
        period = self.config.get("schedule_period_seconds")
        journal = self.journal()
        return {"last": last, "last_good_age_seconds": age, "stale": staleness(age, period),
                "journal": {k: journal.get(k) for k in ("op", "phase")} if journal else None}


def upgrade_dependencies(path: str | None) -> set[str]:
    """The backups an unfinished upgrade or downgrade depends on: its way back and a downgrade's data."""
    try:
        entry = load_upgrade_journal(path or "")
    except OSError:
        return set()
    return {entry[key] for key in ("backup", "restore") if entry and entry.get(key)}


def load_upgrade_journal(path: str) -> dict | None:
    """The upgrade's journal at `path`, or None when there is none."""
    try:
        with open(path) as stream:
            return read_upgrade_journal(stream.read())
    except FileNotFoundError:
        return None


def read_upgrade_journal(text: str | None) -> dict | None:
    """The upgrade's journal (JSON). The KEY=VALUE lines of labforge's earlier shell upgrade script are read too: a host
    killed half-way through an upgrade before it got this program must still be finished or rolled back."""
    if not text or not text.strip():
        return None
    try:
        entry = json.loads(text)
    except ValueError:
        values = {key: value.strip('"') for key, value in (line.split("=", 1) for line in text.splitlines() if "=" in line)}
        entry = {key.lower(): values.get(key, "") for key in ("FROM", "TO", "BACKUP", "RESTORE", "PHASE", "STARTED")}
        entry["functions"] = values.get("FUNCTIONS", "").split()
    return entry if isinstance(entry, dict) else None


def staging_root(mounts: dict[str, str]) -> str:
    """Where a restore is unpacked: beside Docker's volumes directory (not in it: Docker's local driver takes every
    directory there for a volume), on the same file system, so that the swap is a rename."""
    first = next(iter(mounts.values()))
    root = os.path.dirname(os.path.dirname(os.path.dirname(first)))  # /var/lib/docker/volumes/<v>/_data -> /var/lib/docker
    for mount in mounts.values():
        if os.stat(os.path.dirname(mount)).st_dev != os.stat(root).st_dev:
            raise Failed(f"{mount} is not on the file system of {root}: a restore could not swap it in by a rename")
    return root


def tree_size(path: str) -> int:
    total = 0
    for base, _, names in os.walk(path):
        for name in names:
            with contextlib.suppress(OSError):
                total += os.lstat(os.path.join(base, name)).st_size
    return total


SNAPSHOT_NAME = re.compile(r"[0-9a-f]{64}")
NO_SPACE = "no space left on device"  # strerror(ENOSPC), as restic and Python say it
RESTIC_INCOMPLETE = 3  # restic backup: a snapshot was made, but some source data could not be read


def summary_of(out: str) -> dict:
    """restic's --json backup output: the last line whose message_type is summary."""
    for line in reversed(out.strip().splitlines()):
        try:
            item = json.loads(line)
        except ValueError:
            continue
        if isinstance(item, dict) and item.get("message_type") == "summary":
            return item
    raise Failed("restic backup ended without its summary")


def write_json_text(path: str, text: str) -> None:
    """A new file (the repository's password), whole or not at all: a full disk must not leave an empty password
    that restic then refuses forever ("an empty password is not a password")."""
    tmp = f"{path}.tmp"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as stream:
            stream.write(text)
            stream.flush()
            os.fsync(stream.fileno())
        os.link(tmp, path)  # fails when path exists: never replaces a password
    except OSError as exc:
        raise Failed(f"cannot write {path}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            os.unlink(tmp)


def read_env(path: str) -> dict[str, str]:
    """NAME=VALUE lines (labforge/backup_credentials.py checked each name on the control machine)."""
    try:
        with open(path) as stream:
            lines = stream.read().splitlines()
    except FileNotFoundError:
        raise Failed(f"{path} is missing: converge first") from None
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def read_json_quietly(path: str) -> dict | None:
    try:
        return read_json(path)
    except Failed:
        return None


# --- the upgrade -----------------------------------------------------------------------------------------------------

# The data directories of CVAT's containers (/home/django/...); v2.72.0 moved the source tree to /opt/cvat, and the
# upgrade guide tells deployments that bind-mount into the old source tree to move those mounts.
DATA_DIRS = ("/home/django/data", "/home/django/keys", "/home/django/logs", "/home/django/share",
             "/home/django/auth_config.yml")
SOURCE_IN_OPT = "v2.72.0: source in /opt/cvat"
UPGRADE_STEPS = (SOURCE_IN_OPT,)  # the upgrade guide's steps this program checks (cvat_stack_compat's upgrade_steps)
UP_STATES = ("0 running", "0 created", "0 restarting")  # cvat_server's `RestartCount State` while it may still come up


@dataclass
class Mover:
    """CVAT from one release to another, as CVAT's upgrade guide says (back up, `docker compose down`, replace the
    source, `docker compose up -d`, wait for the migrations, which must never be interrupted), with a journal
    written before each step: a run that finds it (a kill, a reboot) first finishes what it says. Before the new release
    started, it rolls back to the old release and its backup; once it started, the work done in it is backed up first,
    then it is kept when it comes up whole and rolled back only when it never does; once verified, it is kept.
    Settings: the config's "upgrade" (labforge.upgrades.program_settings)."""
    keeper: Keeper
    entry: dict = field(default_factory=dict)

    @property
    def settings(self) -> dict:
        return self.keeper.config["upgrade"]

    @property
    def runner(self) -> Runner:
        return self.keeper.runner

    def say(self, line: str) -> None:
        self.keeper.said.append(line)
        print(f"labforge-upgrade: {line}", file=sys.stderr, flush=True)

    # -- the journal --
    def journal(self) -> dict | None:
        return load_upgrade_journal(self.settings["state"])

    def write(self, phase: str) -> None:
        self.entry["phase"] = phase
        write_json(self.settings["state"], self.entry)
        self.runner.point(f"upgrade:{phase}")

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.settings["state"])

    # -- the move --
    def move(self, to: str, nuctl: str, restore: str | None) -> str:
        """Move CVAT to `to` (its nuctl `nuctl`; `restore`: the backup of `to`'s data a downgrade restores). Returns the
        result line; raises Failed with one line."""
        found = self.journal()
        if found:
            kept = self.resume(found)
            if kept:
                return kept
        rows = self.settings["rows"]
        cvat_dir = self.keeper.config["cvat_dir"]
        current = self.keeper.release_tag()
        if current == to:
            self.nuctl_in_place(nuctl)
            self.say(f"CVAT is at {to} already")
            return f"at={to}"
        if current not in rows:
            raise Failed(f"{cvat_dir} is at {current or 'no release tag'!r}, not a release of cvat_stack_compat: nothing "
                         "was changed")
        if self.runner.run(["git", "-C", cvat_dir, "rev-parse", "-q", "--verify", f"refs/tags/{to}"]).code != 0:
            raise Failed(f"tag {to} is not fetched: nothing was changed")
        try:
            self.preflight(to, nuctl)
        except Failed as exc:
            raise Failed(f"upgrade {current} -> {to} not started: {exc}; nothing was stopped or changed") from None
        self.entry = {"from": current, "to": to, "backup": "", "restore": restore or "", "functions": [],
                      "started": self.runner.now().strftime(TIME)}
        self.write("backing-up")
        try:
            backup = self.keeper.backup("before-upgrade")["name"]
        except Failed as exc:
            self.clear()
            raise Failed(f"the backup before the upgrade failed, so nothing was upgraded: {exc}") from None
        self.entry.update(backup=backup, functions=self.function_containers())
        self.write("backed-up")
        down_from = self.runner.monotonic()
        try:
            self.down()
            self.write("down")
            self.checkout(to)
            self.write("switched")
            if restore:
                try:
                    self.keeper.restore(restore, unpack=True)
                except Failed as exc:
                    raise Failed(f"restoring {restore} failed: {exc}") from None
            self.up()
            self.write("up")
            self.take_back()
            self.comes_up(to)
            self.steps(current, to)
        except Failed as exc:
            self.give_up(str(exc))
        self.write("verified")
        self.nuctl_in_place(nuctl)
        self.clear()
        self.say(f"CVAT {current} -> {to} done; backup {backup} was taken first")
        down = round(self.runner.monotonic() - down_from)
        return f"upgraded={to} from={current} backup={backup} restored={restore or 'none'} down={down}"

    def resume(self, entry: dict) -> str | None:
        """Finish or undo an unfinished move. Returns a result line when the move ends here (its new release kept)."""
        self.entry = entry
        old, new, backup, phase = entry.get("from"), entry.get("to"), entry.get("backup"), entry.get("phase")
        self.say(f"found the journal of an unfinished upgrade {old} -> {new} (phase {phase})")
        if phase == "backing-up":  # nothing changed but the backup's stop, which labforge-data's own recovery undid
            self.clear()
            with contextlib.suppress(Failed):
                self.keeper.compose("start")
            return None
        if phase == "verified":
            self.clear()
            return None
        if phase == "up":  # the new release started: after a reboot `restart: always` brought it back, and people may
            # have worked in it. Their work is backed up first; it is kept when it comes up whole.
            try:
                safety = self.keeper.backup("before-rollback")["name"]
            except Failed as exc:
                raise Failed(f"the unfinished upgrade {old} -> {new} found CVAT at {new}, and backing up its data first "
                             f"failed ({exc}): nothing was changed; converge again") from None
            self.take_back()
            try:
                self.comes_up(new)
                self.steps(old, new)
            except Failed as exc:
                why = str(exc)
            else:
                self.write("verified")
                self.nuctl_in_place(self.settings["nuctl"].get(new, ""))
                self.clear()
                self.say(f"the unfinished upgrade {old} -> {new} had started {new}, which is up with its migrations "
                         f"applied: kept (work done since is kept; backup {safety} holds it too, backup {backup} the data "
                         "before the upgrade)")
                return f"upgraded={new} from={old} backup={backup} restored=none down=0 kept={safety}"
            if self.roll_back():
                self.say(f"the unfinished upgrade {old} -> {new} never came up at {new} ({why}): rolled back to {old} with "
                         f"the data of backup {backup}; what {new} held is backup {safety}")
                return None
            raise Failed(f"the unfinished upgrade could not be rolled back; its backup is {backup}, and what {new} held "
                         f"is backup {safety}")
        if backup and self.roll_back():
            self.say(f"rolled back the unfinished upgrade: CVAT is at {old} with the data of backup {backup}")
            return None
        raise Failed(f"the unfinished upgrade could not be rolled back; its backup is {backup or 'none'} in "
                     f"{self.keeper.config['repository']}")

    def give_up(self, why: str) -> None:
        old, new, backup = self.entry["from"], self.entry["to"], self.entry["backup"]
        if self.roll_back():
            raise Failed(f"upgrade {old} -> {new} failed: {why}; rolled back: CVAT is at {old} again with the data of "
                         f"backup {backup}")
        raise Failed(f"upgrade {old} -> {new} failed: {why}, and the rollback failed too; the data before the upgrade is "
                     f"backup {backup} in {self.keeper.config['repository']} (docs/backups-and-upgrades.md, 'When a "
                     "rollback happened'); converge again to retry the rollback")

    def roll_back(self) -> bool:
        """The old release with the backup's data. Leaves the journal when it cannot, so the next run tries again."""
        old, backup = self.entry["from"], self.entry["backup"]
        self.write("rolling-back")
        try:
            with contextlib.suppress(Failed):
                self.down()
            self.checkout(old)
            self.keeper.restore(backup, unpack=True)
            # the override names the new release's server image for the Nuclio guard; the old one's is surely here
            self.up({self.settings["guard_image_variable"]: f"cvat/server:{old}"})
            self.take_back()
            self.nuctl_in_place(self.settings["nuctl"].get(old, ""))
            self.comes_up(old)
        except Failed as exc:
            self.say(f"rollback: {exc}")
            return False
        self.clear()
        return True

    # -- checks before anything stops --
    def preflight(self, to: str, nuctl: str) -> None:
        """Everything `to` needs, before anything stops: its images (from its own compose files, checked out beside,
        with labforge's override) present or pulled now, and its nuctl kept by the Nuclio layer. A registry outage or
        an air-gapped lab without them is a one-line refusal with CVAT untouched, not a stop and a rollback."""
        cvat_dir, preview, override = self.keeper.config["cvat_dir"], self.settings["preview_dir"], self.settings["override"]

        def drop() -> None:
            self.runner.run(["git", "-C", cvat_dir, "worktree", "remove", "--force", preview])
            shutil.rmtree(preview, ignore_errors=True)
            self.runner.run(["git", "-C", cvat_dir, "worktree", "prune"])

        drop()
        try:
            self.keeper.run(["git", "-C", cvat_dir, "worktree", "add", "--detach", preview, to], f"checking out {to} beside")
            shutil.copyfile(os.path.join(cvat_dir, override), os.path.join(preview, override))
            images = self.runner.run(self.keeper.compose_argv("config", "--images"), cwd=preview)
            if images.code != 0:
                raise Failed(f"reading {to}'s compose files: {images.last()}")
        finally:
            drop()
        for image in sorted(set(images.out.split())):
            if self.runner.run(["docker", "image", "inspect", image]).code == 0:
                continue
            pulled = self.runner.run(["docker", "pull", "-q", image])
            if pulled.code != 0:
                raise Failed(f"{to} needs the image {image}, which is not here and cannot be pulled ({pulled.last()[:200]})")
        kept = os.path.join(self.settings["kept_nuctl_dir"], f"nuctl-{nuctl}")
        if not os.access(kept, os.X_OK):
            raise Failed(f"{to} needs nuctl {nuctl}, which is not at {kept} (the Nuclio layer installs it: converge with "
                         "the network to its mirror)")
        self.function_inputs(to)

    def function_inputs(self, to: str) -> None:
        """What rebuilding this host's functions at `to` fetches (the converge after the move redeploys every one:
        the nuctl is in each one's source hash): Nuclio's onbuild images for `to`'s nuctl and each function's base images
        present or pulled now, and every URL and package index its build reads answering from here (unless
        upgrade_check_build_downloads is off). A miss is refused like a missing image: CVAT untouched."""
        images: dict[str, str] = {}
        urls: dict[str, str] = {}
        # the deploy pulls Nuclio's onbuild images of `to`'s nuctl before every build (decided by the converge:
        # labforge.nuclio_functions.onbuild_images)
        onbuild = list((self.settings.get("onbuild") or {}).get(to) or [])
        for entry in (self.settings.get("functions") or {}).get(to) or []:
            texts = self.function_texts(entry)
            if texts is None:  # ours, never uploaded here: its first deploy is no upgrade's
                continue
            config, dockerfiles = texts
            request = json.dumps({"config": config, "dockerfiles": dockerfiles, "built": entry.get("built") or []})
            found = self.runner.run(list(self.settings["inputs_program"]), stdin=request)
            if found.code != 0:
                raise Failed(f"reading what {entry['path']} builds from at {to}: {found.last()}")
            try:
                answer = json.loads(found.out)
                needs, fetched = list(answer["images"]), list(answer["urls"])
            except (ValueError, KeyError, TypeError):
                raise Failed(f"reading what {entry['path']} builds from at {to}: not the answer of function-inputs "
                             f"({found.out[:80]!r})") from None
            for image in onbuild + needs:
                images.setdefault(image, entry["path"])
            for url in fetched:
                urls.setdefault(url, entry["path"])
        for image, path in images.items():
            if self.runner.run(["docker", "image", "inspect", image]).code == 0:
                continue
            pulled = self.runner.run(["docker", "pull", "-q", image])
            if pulled.code != 0:
                raise Failed(f"{path} is rebuilt at {to} from the image {image}, which is not here and cannot be pulled "
                             f"({pulled.last()[:200]})")
        if not self.settings.get("check_build_downloads", True):
            return
        for url, path in urls.items():
            why = self.runner.unreachable(url)
            if why:
                raise Failed(f"{path} is rebuilt at {to}, and its build fetches {url}, which does not answer from this "
                             f"host ({why}); make it reachable, or set cvat_upgrade_check_build_downloads: False if "
                             "the build reaches it another way")

    def function_texts(self, entry: dict) -> tuple[str, list[str]] | None:
        """A function's configuration (its GPU variant on a GPU host, where it has one) and the Dockerfiles its deploy
        builds first: CVAT's from the git objects of the tag it is built from, ours from where the converge put it."""
        names = ["function-gpu.yaml", "function.yaml"] if entry.get("gpu") else ["function.yaml"]
        if "dir" in entry:
            for name in names:
                path = os.path.join(entry["dir"], name)
                if os.path.isfile(path):
                    with open(path, encoding="utf-8") as handle:
                        return handle.read(), []
            return None
        git = ["git", "-C", self.keeper.config["cvat_dir"], "show"]
        tag, path = entry["tag"], entry["path"]
        shown = [self.runner.run([*git, f"{tag}:{path}/nuclio/{name}"]) for name in names]
        config = next((result for result in shown if result.code == 0), None)
        if config is None:
            raise Failed(f"reading {path}/nuclio/function.yaml at {tag}: {shown[-1].last()}")
        dockerfiles = [self.runner.run([*git, f"{tag}:{directory}/Dockerfile"]) for directory in entry.get("dockerfiles") or []]
        return config.out, [result.out for result in dockerfiles if result.code == 0]

    # -- the steps --
    def function_containers(self) -> list[str]:
        """The containers on CVAT's network that `docker compose down` does not remove: Nuclio's function containers
        (running or not) and any other container joined to it (an endpoint on the network makes Docker refuse to
        remove it: "network ... has active endpoints"). They are taken off for `down` and put back after."""
        network, project = self.settings["network"], self.keeper.config["project"]
        names = self.keeper.run(["docker", "ps", "-a", "--filter", "label=nuclio.io/platform=local", "--format", "{{.Names}}"],
                                "listing Nuclio's function containers").out.split()
        attached = self.runner.run(["docker", "network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", network])
        names += [name for name in attached.out.split() if name not in names]
        found = []
        for name in names:
            info = self.runner.run(["docker", "inspect", "-f", "{{index .Config.Labels \"com.docker.compose.project\"}}|"
                                    "{{range $k, $v := .NetworkSettings.Networks}}{{$k}} {{end}}", name])
            owner, _, networks = info.out.strip().partition("|")
            if network in networks.split() and owner != project:
                found.append(name)
        return found

    def let_go(self) -> None:
        """Detach the function containers, so that `down` can remove the network (Docker refuses while one is on it)."""
        for name in self.entry.get("functions") or []:
            self.runner.run(["docker", "network", "disconnect", "-f", self.settings["network"], name])

    def take_back(self) -> None:
        for name in self.entry.get("functions") or []:
            self.runner.run(["docker", "network", "connect", self.settings["network"], name])

    def down(self) -> None:
        self.let_go()
        argv = self.keeper.compose_argv("down", "--remove-orphans")
        if self.runner.run(argv, cwd=self.keeper.config["cvat_dir"]).code != 0:
            self.let_go()
            second = self.runner.run(argv, cwd=self.keeper.config["cvat_dir"])
            if second.code != 0:
                network = self.settings["network"]
                on = self.runner.run(["docker", "network", "inspect", "-f", "{{range .Containers}}{{.Name}} {{end}}", network])
                raise Failed(f"docker compose down failed: {second.last()} (on {network}: {on.out.strip() or 'none'}; "
                             f"function containers taken off it: {' '.join(self.entry.get('functions') or []) or 'none'})")

    def up(self, env: dict[str, str] | None = None) -> None:
        self.keeper.compose("up", "-d", what="docker compose up -d", env=env)

    def checkout(self, tag: str) -> None:
        self.keeper.run(["git", "-C", self.keeper.config["cvat_dir"], "-c", "advice.detachedHead=false", "checkout",
                         "--quiet", "--force", "--detach", tag], f"git checkout {tag}")

    def nuctl_in_place(self, version: str) -> None:
        """A release's nuctl in place (the Nuclio layer keeps each one it installed): the old release's after a
        rollback, the new one's after an upgrade."""
        kept, path = os.path.join(self.settings["kept_nuctl_dir"], f"nuctl-{version}"), self.settings["nuctl_path"]
        if not version or not os.access(kept, os.X_OK):
            return
        if os.path.exists(path) and filecmp.cmp(kept, path, shallow=False):
            return
        shutil.copyfile(kept, f"{path}.labforge-new")
        os.chmod(f"{path}.labforge-new", 0o755)
        os.replace(f"{path}.labforge-new", path)

    def comes_up(self, tag: str) -> None:
        """Wait until the API answers through traefik (so the migrations of cvat_server's `init` are done), failing
        early when cvat_server exits meanwhile (a failed migration ends `init`; `restart: always` starts it again);
        then Django itself says no migration is unapplied, and every container of the stack runs."""
        started, timeout = self.runner.monotonic(), int(self.settings["timeout"])
        while True:
            info = self.runner.run(["docker", "inspect", "-f", "{{.RestartCount}} {{.State.Status}}", "cvat_server"])
            state = info.out.strip() if info.code == 0 else "0 missing"
            if state not in UP_STATES:
                logs = self.runner.run(["docker", "logs", "--tail", "100", "cvat_server"])
                lines = [line for line in f"{logs.out}\n{logs.err}".replace("\r", "").splitlines() if line.strip()]
                errors = [line for line in lines if re.search(r"Error|error:|FATAL", line)]
                why = errors[-1][:240] if errors else f"its last line: {lines[-1][:200] if lines else ''}"
                raise Failed(f"cvat_server exited while starting (restarts: {state.split()[0]}; {why})")
            if self.runner.run([self.keeper.config["wait_api"], "0"]).code == 0:
                break
            if self.runner.monotonic() - started >= timeout:
                raise Failed(f"CVAT's API did not answer within {timeout}s")
            self.runner.sleep(2)
        manage = self.settings["manage_py"].get(tag, "/home/django/manage.py")
        check = self.runner.run(["docker", "exec", "cvat_server", "python3", manage, "migrate", "--check"])
        if check.code != 0:
            raise Failed(f"migrations are not all applied (manage.py migrate --check: {check.last()[:200]})")
        states = self.keeper.compose("ps", "-a", "--format", "{{.Name}}={{.State}}").out.split()
        bad = [item for item in states if not item.endswith("=running")]
        if bad:
            raise Failed(f"containers not running: {' '.join(bad)}")

    def steps(self, old: str, new: str) -> None:
        """The upgrade guide's steps of each row passed on the way up (cvat_stack_compat's upgrade_steps), as checks."""
        rows = self.settings["rows"]
        if old not in rows or new not in rows or rows.index(new) <= rows.index(old):
            return
        for row in rows[rows.index(old) + 1:rows.index(new) + 1]:
            for step in self.settings["steps"].get(row) or []:
                if step == SOURCE_IN_OPT:
                    self.source_in_opt(new)
                else:
                    raise Failed(f"unknown upgrade step {step!r} (known: {', '.join(UPGRADE_STEPS)})")

    def source_in_opt(self, tag: str) -> None:
        """v2.72.0 moved the source to /opt/cvat: the row's manage.py is there, and no mount of the stack lies in the
        old source tree (only the data directories stay under /home/django)."""
        manage = self.settings["manage_py"].get(tag, "")
        if self.runner.run(["docker", "exec", "cvat_server", "test", "-f", manage]).code != 0:
            raise Failed(f"cvat_server has no {manage} (v2.72.0 moved the source to /opt/cvat)")
        for container in self.keeper.compose("ps", "-q").out.split():
            mounts = self.runner.run(["docker", "inspect", "-f", "{{range .Mounts}}{{.Destination}} {{end}}", container])
            for destination in mounts.out.split():
                if destination.startswith("/home/django/") and destination not in DATA_DIRS:
                    raise Failed(f"a mount at {destination} is in the old source tree, which v2.72.0 moved to /opt/cvat "
                                 "(upgrade guide)")


# --- the command line ------------------------------------------------------------------------------------------------

def main(argv: list[str] | None = None, keeper: Keeper | None = None) -> int:
    parser = argparse.ArgumentParser(prog="labforge-data", description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=CONFIG)
    parser.add_argument("--wait", type=float, default=60, help="seconds to wait for the data lock")
    sub = parser.add_subparsers(dest="command", required=True)
    take = sub.add_parser("backup")
    take.add_argument("--kind", default="manual", choices=[k for k in KINDS if k != "online"])
    back = sub.add_parser("restore")
    back.add_argument("name", nargs="?")
    back.add_argument("--unpack", action="store_true", help="the upgrade's rollback: the stack is down, nothing starts")
    sub.add_parser("recover")
    sub.add_parser("status")
    sub.add_parser("list", help="the backups, as JSON (no lock: restic's own shared lock)")
    up = sub.add_parser("upgrade", help="move CVAT to the release TO (its nuctl NUCTL; RESTORE: a downgrade's data)")
    up.add_argument("to")
    up.add_argument("nuctl")
    up.add_argument("restore", nargs="?")
    args = parser.parse_args(argv)
    try:
        if keeper is None:
            config = read_json(args.config)
            if config is None:
                raise Failed(f"{args.config} is missing: converge first")
            keeper = Keeper(config)
        if args.command == "status":
            print(json.dumps(keeper.status(), sort_keys=True))
            return 0
        if args.command == "list":
            exists = not keeper.config["repository"].startswith("/") or os.path.exists(
                os.path.join(keeper.config["repository"], "config"))
            found = keeper.snapshots() if exists and os.path.exists(keeper.config["password_file"]) else []
            print(json.dumps([{"name": s.name, "kind": s.kind, "cvat": s.cvat, "id": s.id} for s in found
                              if s.kind != "online"]))
            return 0
        keeper.lock.acquire(f"labforge-data {args.command}", args.wait, keeper.runner)
        try:
            return run_locked(keeper, args)
        finally:
            keeper.lock.release()
    except Failed as exc:
        print(f"labforge-data: {exc}", file=sys.stderr, flush=True)
        return 1
    except OSError as exc:  # e.g. a full disk where the lock, the journal or the password is written
        print(f"labforge-data: {args.command} failed: {exc}", file=sys.stderr, flush=True)
        return 1


def run_locked(keeper: Keeper, args) -> int:
    keeper.recover()
    if args.command == "upgrade":
        mover = Mover(keeper)
        try:
            print(mover.move(args.to, args.nuctl, args.restore), flush=True)
        except Failed as exc:
            mover.say(str(exc))
            return 1
        return 0
    if args.command == "recover":
        print("recovered=yes")
    elif args.command == "backup":
        result = keeper.backup(args.kind)
        print(f"backup={result['name']} bytes={result['bytes']} added={result['added']} down={result['down_seconds']} "
              f"repository={keeper.config['repository']}")
    elif args.command == "restore":
        result = keeper.restore(args.name, unpack=args.unpack)
        print(f"restored={result['restored']} safety={result['safety']} down={result['down_seconds']}")
    return 0


if __name__ == "__main__":
    os.umask(0o077)  # what restic and this program write is root's alone (here, not in main(): tests call main())
    sys.exit(main())
