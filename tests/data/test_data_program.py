"""labforge-data's state machine without a host (tests/data: real restic, so slower than tests/unit): real restic on
a real repository in a temporary directory, real directories for Docker's volumes and real renames; only docker, git
and the API probe are answered by a small world (World) that records whether CVAT runs. A kill (-9) is a `Killed`
raised at a point: no `except Exception` clean-up runs, the lock is dropped as the kernel drops it, and the next run
must find the lab whole.
"""

from __future__ import annotations

import datetime
import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from labforge import data_program as dp

pytestmark = pytest.mark.skipif(shutil.which("restic") is None, reason="restic is not installed (./install.sh as root)")
VOLUMES = ["cvat_db", "cvat_data", "cvat_keys"]


class World:
    """What docker and git would answer on a host: volumes as directories, whether the stack runs."""

    def __init__(self, root: Path):
        self.root = root
        self.running = True
        self.tag = "v2.51.0"
        self.api_ok = True
        self.fail: set[str] = set()  # labels of commands that fail
        self.free_at_start: list[int] = []  # free bytes on the volumes' disk each time the stack was started
        self.incomplete: set[str] = set()  # "online" / "stopped": that restic backup pass meets a file that went away
        for key in VOLUMES:
            (self.mount(key)).mkdir(parents=True)

    def mount(self, key: str) -> Path:
        return self.root / "docker" / "volumes" / f"cvat_{key}" / "_data"

    def write(self, label: str) -> None:
        """CVAT's data at one moment: every volume says the same label (so a mixed restore shows)."""
        for key in VOLUMES:
            mount = self.mount(key)
            for old in mount.iterdir():
                old.unlink()
            (mount / "content").write_text(f"{key}:{label}")
            (mount / f"media-{label}").write_bytes(os.urandom(2048))

    def labels(self) -> set[str]:
        return {(self.mount(key) / "content").read_text().split(":", 1)[1] for key in VOLUMES}


class WorldRunner(dp.Runner):
    def __init__(self, world: World, kill_at: int | None = None, clock: list[datetime.datetime] | None = None):
        self.world = world
        self.kill_at = kill_at
        self.points: list[str] = []  # the phases (journal writes and the program's own points): where kills happen
        self.commands: list[str] = []
        self.world_hooks: dict = {}  # point label (or "online": the online pass starts) -> what the world does then
        self.clock = clock if clock is not None else [datetime.datetime(2026, 12, 6, 12, 0, tzinfo=datetime.timezone.utc)]

    def point(self, label: str) -> None:
        self.points.append(label)
        self.world_hooks.pop(label, lambda: None)()
        if self.kill_at is not None and len(self.points) == self.kill_at:
            raise dp.Killed(label)

    def now(self) -> datetime.datetime:
        self.clock[0] += datetime.timedelta(seconds=1)
        return self.clock[0]

    def sleep(self, seconds: float) -> None:
        pass

    def run(self, argv, env=None, cwd=None, timeout=None, stdin=None):
        label = " ".join(argv[:2]) if argv[0] != "docker" or argv[1] != "compose" else f"compose {argv[-1]}"
        self.commands.append(label)
        if label in self.world.fail:
            return dp.Result(1, "", f"{label}: failed (planted)")
        if argv[0] == "git":
            return dp.Result(0, self.world.tag + "\n", "")
        if argv[:3] == ["docker", "volume", "inspect"]:
            return dp.Result(0, str(self.world.mount(argv[-1].removeprefix("cvat_"))) + "\n", "")
        if label == "compose stop":
            self.world.running = False
            return dp.Result(0, "", "")
        if label == "compose start":
            stat = os.statvfs(self.world.root)
            self.world.free_at_start.append(stat.f_bavail * stat.f_frsize)
            self.world.running = True
            return dp.Result(0, "", "")
        if argv[0] == "wait-api":
            ok = self.world.running and self.world.api_ok
            return dp.Result(0 if ok else 1, "", "" if ok else "CVAT API did not answer")
        if argv[:2] == ["restic", "backup"] and "kind=online" in " ".join(argv):
            self.world_hooks.pop("online", lambda: None)()
        result = super().run(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin)
        backup_pass = None if argv[:2] != ["restic", "backup"] or "--dry-run" in argv else \
            "online" if "kind=online" in " ".join(argv) else "stopped"
        if backup_pass == "stopped":
            self.world_hooks.pop("stopped pass done", lambda: None)()
        if backup_pass in self.world.incomplete and result.code == 0:
            # what restic does when a file it listed is gone when it reads it (a task CVAT deletes meanwhile): the
            # snapshot is made all the same, and it says so with exit 3 (restic-backup(1), EXIT STATUS)
            return dp.Result(3, result.out, "error: open /volume/media/gone: no such file or directory\n"
                             "Warning: at least one source file could not be read\n")
        if argv[:2] == ["restic", "backup"] and "--dry-run" not in argv and "kind=online" not in " ".join(argv):
            # restic killed after it wrote its packs and indexes but before its snapshot: the files stay, no snapshot
            self.points.append("restic:half-written")
            if self.kill_at is not None and len(self.points) == self.kill_at:
                snapshots = Path(env["RESTIC_REPOSITORY"]) / "snapshots"
                max(snapshots.iterdir(), key=lambda path: path.stat().st_mtime_ns).unlink()
                raise dp.Killed("restic:half-written")
        return result


@pytest.fixture(scope="module")
def template(tmp_path_factory) -> Path:
    """An initialised repository and its password, made once and copied for each test (restic init is slow)."""
    root = tmp_path_factory.mktemp("template")
    (root / "password").write_text("correct horse battery staple\n")
    env = {**os.environ, "RESTIC_REPOSITORY": str(root / "repo"), "RESTIC_PASSWORD_FILE": str(root / "password")}
    subprocess.run(["restic", "init"], env=env, check=True, capture_output=True)
    return root


@pytest.fixture
def lab(tmp_path, template):
    shutil.copytree(template / "repo", tmp_path / "repo")
    shutil.copy(template / "password", tmp_path / "password")
    world = World(tmp_path)
    world.write("a")
    config = {"project": "cvat", "compose": ["-f", "docker-compose.yml"], "cvat_dir": str(tmp_path), "volumes": VOLUMES,
              "online_volumes": VOLUMES, "repository": str(tmp_path / "repo"), "password_file": str(tmp_path / "password"),
              "cache_dir": str(tmp_path / "cache"), "keep": 2, "reserve_bytes": 0, "wait_api": "wait-api",
              "upgrade": {"state": str(tmp_path / "upgrade.state")}}
    return tmp_path, world, config


def keeper(lab, kill_at: int | None = None, clock=None, **config) -> dp.Keeper:
    tmp, world, base = lab
    return dp.Keeper({**base, **config}, WorldRunner(world, kill_at, clock), journal_path=str(tmp / "journal.json"),
                     last_path=str(tmp / "last.json"), lock=dp.Lock(str(tmp / "lock")))


def names(k: dp.Keeper) -> list[str]:
    return sorted(s.name for s in k.snapshots() if s.kind != "online")


def staging_leftovers(tmp: Path) -> list[str]:
    found = [p.name for p in (tmp / "docker").iterdir() if p.name.startswith(dp.STAGING)]
    found += [str(p) for p in (tmp / "docker" / "volumes").glob("*/*.labforge-old")]
    return found


# --- pure decisions ---------------------------------------------------------------------------------------------------

def snap(name: str, kind: str = "manual", cvat: str = "v2.51.0") -> dp.Snapshot:
    return dp.Snapshot(id=name, name=name, kind=kind, cvat=cvat, time=name)


def test_retention_with_keep_1_never_removes_the_backup_being_restored():
    """The bug of the shell scripts: the restore's safety backup ran retention, which removed the target."""
    oldest, newer = snap("cvat-1"), snap("cvat-2")
    safety = snap("cvat-3-before-restore", "before-restore")
    doomed = dp.to_forget([oldest, newer, safety], keep=1, protected={"cvat-1"})
    assert "cvat-1" not in {s.name for s in doomed}
    assert {s.name for s in doomed} == set()  # newer: the newest regular one; safety: the newest safety one


def test_retention_at_every_boundary():
    regular = [snap(f"cvat-{i}") for i in range(1, 6)]
    for keep in range(1, 7):
        doomed = {s.name for s in dp.to_forget(regular, keep, set())}
        assert doomed == {f"cvat-{i}" for i in range(1, max(1, 6 - keep))}, keep
    with pytest.raises(dp.Failed):
        dp.to_forget(regular, 0, set())


def test_retention_keeps_safety_backups_apart_and_the_newest_of_each_release():
    backups = [snap("cvat-1"), snap("cvat-2"), snap("cvat-3-before-upgrade", "before-upgrade"),
               *[snap(f"cvat-{i}", cvat="v2.73.0") for i in range(4, 7)], snap("cvat-7-before-restore", "before-restore", "v2.73.0"),
               snap("cvat-8-online", "online", "v2.73.0")]
    doomed = {s.name for s in dp.to_forget(backups, 1, set())}
    # kept: cvat-6 (the newest), cvat-7 (the newest safety backup), cvat-3 (the newest at v2.51.0: a downgrade needs it)
    assert doomed == {"cvat-1", "cvat-2", "cvat-4", "cvat-5", "cvat-8-online"}
    assert "cvat-4" not in {s.name for s in dp.to_forget(backups, 1, {"cvat-4"})}
    assert {s.name for s in dp.to_forget(backups, 3, set())} == {"cvat-1", "cvat-2", "cvat-8-online"}


def test_upgrade_journal_protects_its_backups(tmp_path):
    state = tmp_path / "state"
    state.write_text('FROM=v2.51.0\nTO=v2.73.0\nBACKUP=cvat-9-before-upgrade\nRESTORE=\nFUNCTIONS="a b"\nPHASE=up\n')
    assert dp.upgrade_dependencies(str(state)) == {"cvat-9-before-upgrade"}
    assert dp.upgrade_dependencies(str(tmp_path / "none")) == set()


def test_choose_refuses_another_release_and_unknown_names():
    backups = [snap("cvat-1"), snap("cvat-2", cvat="v2.73.0")]
    with pytest.raises(dp.Failed, match=r"taken at CVAT v2\.73\.0, the checkout is at v2\.51\.0"):
        dp.choose(backups, None, "v2.51.0")
    assert dp.choose(backups, "cvat-1", "v2.51.0").name == "cvat-1"
    with pytest.raises(dp.Failed, match="no backup cvat-3"):
        dp.choose(backups, "cvat-3", "v2.51.0")


def test_space_and_staleness():
    assert dp.space_problem(10 * 2**30, 2**30, 2**30, "/x", "b") is None
    assert "nothing was stopped" in dp.space_problem(2**30, 2**30, 1, "/x", "b")
    day = 86400.0
    assert dp.staleness(None, None) is None
    assert dp.staleness(None, day) == "no good backup yet, although backups are scheduled"
    assert dp.staleness(1.5 * day, day) is None
    assert "h old" in dp.staleness(3 * day, day)


# --- the lock ---------------------------------------------------------------------------------------------------------

def test_the_lock_names_its_holder_and_a_kill_releases_it(lab):
    first, second = keeper(lab), keeper(lab)
    first.lock.acquire("labforge-data restore", 0, first.runner)
    with pytest.raises(dp.Failed, match=r"backup not started: the data lock is held by labforge-data restore \(pid"):
        second.lock.acquire("backup", 1, second.runner)
    os.close(first.lock.fd)  # the kernel's part of kill -9
    second.lock.acquire("backup", 0, second.runner)
    second.lock.release()


def test_a_second_program_waits_for_the_lock_then_stops_with_one_line(lab, capsys):
    holder = keeper(lab)
    holder.lock.acquire("labforge-data upgrade", 0, holder.runner)
    assert dp.main(["--wait", "0.2", "backup"], keeper=keeper(lab)) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "held by labforge-data upgrade" in err[0]
    holder.lock.release()


# --- backups and restores on a real repository ------------------------------------------------------------------------

def test_restoring_the_oldest_kept_backup_with_keep_1_keeps_it(lab):
    """keep 1, and the backup restored is the only safety backup kept: the restore's own safety backup must not evict
    it. Seen failing with the protection removed (to_forget without `protected`): the target was forgotten, as the
    shell scripts' retention did (`ls | sort | head -n -KEEP` inside the restore's safety backup)."""
    tmp, world, _ = lab
    k = keeper(lab, keep=1)
    k.backup("manual")
    world.write("b")
    undo = k.restore(None)["safety"]  # holds "b"; the only safety backup kept
    assert world.labels() == {"a"}
    world.write("c")
    result = k.restore(undo)  # its safety backup (of "c") is a second safety backup: retention must keep `undo`
    assert world.labels() == {"b"} and world.running
    assert undo in names(k) and result["safety"] in names(k), names(k)
    assert not staging_leftovers(tmp)
    last = json.loads((tmp / "last.json").read_text())
    assert last["result"] == "ok" and last["kind"] == "before-restore"


def test_the_second_backup_of_unchanged_data_adds_nothing(lab):
    k = keeper(lab)
    first = k.backup("manual")
    second = k.backup("manual")
    # the stopped pass reads again only what changed since the online pass (nothing); the second adds only metadata
    assert first["files_read"] == 0 and second["files_read"] == 0, (first, second)
    assert first["added"] > 6 * 2048 and second["added"] < first["added"] / 2, (first, second)


def test_a_failing_backup_starts_cvat_again_and_leaves_the_repository_as_it_was(lab):
    tmp, world, _ = lab
    k = keeper(lab)
    good = k.backup("manual")["name"]
    world.write("b")
    world.fail.add("restic check")
    with pytest.raises(dp.Failed, match="checking the repository"):
        k.backup("manual")
    world.fail.clear()
    assert world.running
    last = json.loads((tmp / "last.json").read_text())
    assert last["result"] == "failed" and last["last_good"]["name"] == good


def run_killed(lab, kill_at: int, action) -> tuple[dp.Keeper, bool]:
    """Run `action` with a kill at the kill_at-th point; True when it was killed (False: it finished first)."""
    k = keeper(lab, kill_at)
    try:
        k.lock.acquire("test", 0, k.runner)
        action(k)
    except dp.Killed:
        os.close(k.lock.fd)  # the kernel drops a killed process's lock
        return k, True
    k.lock.release()
    return k, False


def kill_at_each_point(lab, reset, action, check) -> int:
    """Run `action` killed at its 1st, 2nd, ... point until it finishes; after each kill, the next program run
    (`labforge-data recover`) must leave CVAT running with no journal, and `check(point, killed_keeper, after)` holds.
    Returns how many points there were."""
    tmp, world, _ = lab
    point = 1
    while True:
        reset()
        k, killed = run_killed(lab, point, action)
        if not killed:
            return point - 1
        after = keeper(lab)
        assert dp.main(["--wait", "0", "recover"], keeper=after) == 0, after.said
        assert world.running, f"CVAT stays stopped after a kill at {k.runner.points[-1]}"
        assert not (tmp / "journal.json").exists()
        check(point, k, after)
        point += 1


def test_a_backup_killed_at_every_point_leaves_cvat_running_after_the_next_run(lab):
    tmp, world, _ = lab
    kept = keeper(lab).backup("manual")["name"]
    repo, saved = tmp / "repo", tmp / "saved"
    shutil.copytree(repo, saved)

    def reset():
        shutil.rmtree(repo)
        shutil.copytree(saved, repo)
        world.running = True
        world.write("b")

    def check(point, killed, after):
        assert kept in names(after), point
        env = {**os.environ, "RESTIC_REPOSITORY": str(repo), "RESTIC_PASSWORD_FILE": str(tmp / "password")}
        whole = subprocess.run(["restic", "check"], env=env, capture_output=True, text=True)
        assert whole.returncode == 0, (point, whole.stderr)
        if killed.runner.points[-1] in ("backup:online", "restic:half-written"):
            # what it wrote (its online pass included), no backup refers to: dropped, the repository as before it
            assert sorted(p.name for p in (repo / "data").rglob("*") if p.is_file()) == before, point

    before = sorted(p.name for p in (saved / "data").rglob("*") if p.is_file())
    points = kill_at_each_point(lab, reset, lambda k: k.backup("manual"), check)
    assert points == 5, points  # online, stopping, stopped, restic half-written, taken
    print(f"a backup killed at each of its {points} points: CVAT running and the repository whole after each")


def test_a_restore_killed_at_every_point_is_undone_or_finished_never_mixed(lab):
    """The journalled part of a restore (apply_restore, after its checks and safety backup) killed at each phase."""
    tmp, world, _ = lab
    base = keeper(lab)
    target = base.backup("manual")["name"]
    snap = next(s for s in base.snapshots() if s.name == target)
    mounts = base.mountpoints()
    staging = str(tmp / "docker" / f"{dp.STAGING}-{target}")
    outcomes = {}

    def reset():
        world.running = True
        world.write("b")

    def check(point, killed, _):
        labels = world.labels()
        assert len(labels) == 1, f"a kill at {killed.runner.points[-1]} left volumes of two moments: {labels}"
        assert not staging_leftovers(tmp), (point, staging_leftovers(tmp))
        outcomes[f"{point}:{killed.runner.points[-1]}"] = labels.pop()

    points = kill_at_each_point(lab, reset, lambda k: k.apply_restore(snap, mounts, staging, "cvat-safety", False), check)
    assert world.labels() == {"a"} and target in names(base)
    assert set(outcomes.values()) == {"a", "b"}, outcomes  # undone before the swap, finished after it
    assert points > 8, outcomes
    print(f"a restore killed at each of its {points} points: {outcomes}")


def test_a_restore_that_does_not_come_up_puts_the_data_back_by_itself(lab):
    tmp, world, _ = lab
    k = keeper(lab)
    target = k.backup("manual")["name"]
    world.write("b")
    world.api_ok = False
    with pytest.raises(dp.Failed, match="the data before the restore is back"):
        k.restore(target)
    assert world.labels() == {"b"} and world.running and not staging_leftovers(tmp)
    assert not (tmp / "journal.json").exists()


def test_a_restore_refuses_when_the_disk_cannot_hold_it_before_anything_stops(lab):
    _, world, _ = lab
    k = keeper(lab, reserve_bytes=2**62)
    target = keeper(lab).backup("manual")["name"]
    world.write("b")
    with pytest.raises(dp.Failed, match="not enough free space for restoring"):
        k.restore(target)
    assert "compose stop" not in k.runner.commands and world.labels() == {"b"}


def test_a_backup_refuses_when_the_disk_cannot_hold_it_before_anything_stops(lab):
    _, world, _ = lab
    k = keeper(lab, reserve_bytes=2**62)
    with pytest.raises(dp.Failed, match="not enough free space for backup"):
        k.backup("manual")
    assert "compose stop" not in k.runner.commands and world.running


def test_status_reports_the_age_of_the_last_good_backup(lab):
    k = keeper(lab, schedule_period_seconds=86400)
    assert k.status()["stale"] == "no good backup yet, although backups are scheduled"
    k.backup("scheduled")
    assert k.status()["stale"] is None
    k.runner.clock[0] += datetime.timedelta(days=3)
    assert "h old" in k.status()["stale"]


def test_the_lock_lives_where_no_local_account_can_open_it(tmp_path):
    """flock needs only read access: a lock file others can open is one any local account could hold forever,
    stopping every backup. The lock's directory is made 0700, its file 0600."""
    lock = dp.Lock(str(tmp_path / "run" / "labforge" / "data.lock"))
    lock.acquire("test", 0, dp.Runner())
    assert oct(os.stat(tmp_path / "run" / "labforge").st_mode & 0o777) == "0o700"
    assert oct(os.stat(lock.path).st_mode & 0o777) == "0o600"
    lock.release()
    assert dp.LOCK.startswith("/run/labforge/")


def test_the_converges_compose_up_waits_for_the_same_lock(lab):
    """flock(1), as the converge's `docker compose up -d` runs under it (labforge.backups.under_lock), and the
    program's flock(2) are one lock: a converge never starts the stack under a backup."""
    from labforge import backups

    tmp, _, _ = lab
    holder = keeper(lab)
    holder.lock.acquire("labforge-data backup", 0, holder.runner)
    command = backups.under_lock("echo started", wait=1).replace(dp.LOCK, holder.lock.path)
    command = command.replace("mkdir -p -m 0700 /run/labforge", f"mkdir -p -m 0700 {tmp}")
    waited = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert waited.returncode == 75 and "the data lock is held by labforge-data backup (pid" in waited.stderr, waited
    holder.lock.release()
    ran = subprocess.run(["sh", "-c", command], capture_output=True, text=True)
    assert ran.returncode == 0 and ran.stdout == "started\n", ran


def test_the_program_leaves_its_callers_umask_alone(lab):
    """main() is called in-process by these tests and by nothing else: the umask 077 belongs to the program's own
    process (its __main__), or it leaks into whatever imported it (seen: the lab's stand-in packages built 0700)."""
    before = os.umask(0o022)
    try:
        dp.main(["--wait", "0", "recover"], keeper=keeper(lab))
        assert os.umask(0o022) == 0o022
    finally:
        os.umask(before)


def test_a_file_gone_during_the_online_pass_is_no_failure_but_one_gone_while_stopped_is(lab):
    """Seen in the lab (CI of 0ce0551, test_tasks_created_and_deleted_during_a_backup_come_back_each_with_its_media):
    a task deleted while the online pass read the media volume made restic exit 3 and the whole backup fail. The
    online pass is only a warm-up; the stopped pass, which reads every volume again, decides."""
    tmp, world, _ = lab
    world.incomplete.add("online")
    k = keeper(lab)
    result = k.backup("manual")
    assert result["result"] == "ok" and names(k) == [result["name"]] and world.running
    world.incomplete = {"stopped"}
    world.write("b")
    with pytest.raises(dp.Failed, match="at least one source file could not be read; CVAT was started again"):
        k.backup("manual")
    assert world.running and names(k) == [result["name"]]
    assert json.loads((tmp / "last.json").read_text())["result"] == "failed"


# --- a disk shared with Docker that fills up --------------------------------------------------------------------------

needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small file system needs root (CI runs as root)")
MiB = 2**20


@pytest.fixture
def shared_disk(tmp_path, template):
    """One small, real file system (a 256 MiB tmpfs) holding what a host's one disk holds: Docker's volumes, the
    repository, the journal and the last result. restic's cache and temporary packs stay elsewhere, as
    /var/cache and /tmp may."""
    disk = tmp_path / "disk"
    disk.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256m,mode=0700", "tmpfs", str(disk)], check=True)
    try:
        shutil.copytree(template / "repo", disk / "repo")
        shutil.copy(template / "password", tmp_path / "password")
        world = World(disk)
        world.write("a")
        for i in range(6):  # 48 MiB of media nothing compresses: more than one of restic's 16 MiB packs
            (world.mount("cvat_data") / f"video-{i}").write_bytes(os.urandom(8 * MiB))
        config = {"project": "cvat", "compose": ["-f", "docker-compose.yml"], "cvat_dir": str(tmp_path),
                  "volumes": VOLUMES, "online_volumes": VOLUMES, "repository": str(disk / "repo"),
                  "password_file": str(tmp_path / "password"), "cache_dir": str(tmp_path / "cache"), "keep": 2,
                  "reserve_bytes": 0, "wait_api": "wait-api", "upgrade": {"state": str(disk / "upgrade.state")}}
        yield disk, world, config
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def disk_keeper(shared_disk, **config) -> dp.Keeper:
    disk, world, base = shared_disk
    return dp.Keeper({**base, **config}, WorldRunner(world), journal_path=str(disk / "journal.json"),
                     last_path=str(disk / "last.json"), lock=dp.Lock(str(disk.parent / "lock")))


def free_bytes(path: Path) -> int:
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


def fill(disk: Path, leave: int) -> None:
    """What CVAT (or anything else on the disk) writes meanwhile: the disk keeps only `leave` bytes free."""
    with open(disk / "filler", "ab") as out:
        out.write(b"\0" * max(0, free_bytes(disk) - leave))


def written_then_full(disk: Path, world: World) -> None:
    """CVAT wrote 40 MiB of new media during the online pass (the stopped pass must read it), then the disk filled."""
    for i in range(5):
        (world.mount("cvat_data") / f"new-{i}").write_bytes(os.urandom(8 * MiB))
    fill(disk, 20 * MiB)


def repository_bytes(disk: Path) -> int:
    return sum(p.stat().st_size for p in (disk / "repo").rglob("*") if p.is_file() and "locks" not in p.parts)


@needs_root
@pytest.mark.parametrize("when", ["online", "stopped"])
def test_a_disk_that_fills_during_a_backup_is_given_back_and_cvat_runs(shared_disk, when):
    """The estimate said the backup fits, then the shared disk filled while restic wrote: during the online pass
    (CVAT writing), or during the stopped pass (new media CVAT wrote meanwhile, and anything else on the disk). restic
    fails with ENOSPC after some of its packs are written: the program must remove everything that backup wrote
    before going on (never leave the disk full under a running PostgreSQL), start CVAT again where it stopped it, and
    say so in one line. Seen failing before the fix: the online pass's 16 MiB pack stayed ("online"), and the online
    pass's whole snapshot stayed after the stopped pass failed ("stopped")."""
    disk, world, _ = shared_disk
    k = disk_keeper(shared_disk)
    stored = repository_bytes(disk)
    k.runner.world_hooks = {"online": lambda: fill(disk, 20 * MiB)} if when == "online" else \
        {"backup:stopping": lambda: written_then_full(disk, world)}
    with pytest.raises(dp.Failed) as failed:
        k.backup("scheduled")
    assert "no space left on device" in str(failed.value).lower() and "\n" not in str(failed.value), failed.value
    assert world.running
    assert ("compose stop" in k.runner.commands) == (when == "stopped"), k.runner.commands
    assert repository_bytes(disk) == stored, "what the failed backup wrote stays in the repository"
    assert free_bytes(disk) >= 19 * MiB
    assert not (disk / "journal.json").exists()
    last = json.loads((disk / "last.json").read_text())
    assert last["result"] == "failed" and "no space left" in last["why"].lower()
    (disk / "filler").unlink()
    for new in world.mount("cvat_data").glob("new-*"):
        new.unlink()
    assert disk_keeper(shared_disk).backup("manual")["result"] == "ok"


@needs_root
def test_a_disk_already_full_is_refused_with_one_line_and_nothing_stops(shared_disk, capsys):
    """A disk at 100% before the backup starts: refused before anything stops, with one line, although the program
    can write nothing there (not even its last result). Seen failing before the fix: a traceback (OSError from
    writing backup-last.json), not one line."""
    disk, world, _ = shared_disk
    fill(disk, 0)
    k = disk_keeper(shared_disk)
    assert dp.main(["--wait", "0", "backup"], keeper=k) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("labforge-data: ") and "no space left" in err[0].lower(), err
    assert "compose stop" not in k.runner.commands and world.running
    assert not list(disk.glob("*.tmp")), "a half-written file was left on the full disk"


@needs_root
def test_killed_after_the_disk_filled_while_cvat_was_stopped_the_next_run_frees_it_before_starting_cvat(shared_disk):
    """kill -9 right after the stopped pass failed on a full disk: the next run (the timer, backup.py, a converge)
    must remove what the killed backup wrote before it starts CVAT, or PostgreSQL comes back on a full disk. Seen
    failing before the fix: recover started the stack first (4.0 MiB free then), and freed the disk after."""
    disk, world, _ = shared_disk
    k = disk_keeper(shared_disk)

    def killed() -> None:
        raise dp.Killed("after the stopped pass")

    k.runner.world_hooks = {"backup:stopping": lambda: written_then_full(disk, world), "stopped pass done": killed}
    k.lock.acquire("test", 0, k.runner)
    with pytest.raises(dp.Killed):
        k.backup("scheduled")
    os.close(k.lock.fd)
    assert not world.running and (disk / "journal.json").exists()
    assert dp.main(["--wait", "0", "recover"], keeper=disk_keeper(shared_disk)) == 0
    assert world.running and world.free_at_start[-1] >= 19 * MiB, f"{world.free_at_start[-1] / MiB:.1f} MiB free"
    assert not (disk / "journal.json").exists()


# --- what a cleanup must never remove, and must always finish --------------------------------------------------------

def killed_online_pass(lab, at: str = "backup:stopping") -> set[str]:
    """A backup killed at `at`: "backup:stopping" (right after its online pass wrote its packs) or "backup:online"
    (as its online pass begins); returns the repository's files before it."""
    tmp, world, _ = lab
    keeper(lab).backup("manual")
    world.write("b")
    before = {str(p) for sub in ("data", "index", "snapshots") for p in (tmp / "repo" / sub).rglob("*") if p.is_file()}
    k = keeper(lab)
    k.runner.world_hooks = {at: lambda: (_ for _ in ()).throw(dp.Killed(at))}
    k.lock.acquire("test", 0, k.runner)
    with pytest.raises(dp.Killed):
        k.backup("manual")
    os.close(k.lock.fd)
    return before


def repo_files(tmp: Path) -> set[str]:
    return {str(p) for sub in ("data", "index", "snapshots") for p in (tmp / "repo" / sub).rglob("*") if p.is_file()}


def test_a_journal_of_another_repository_or_a_pruned_one_removes_nothing(lab):
    """The journal lists the files from before the killed backup; anything else is what it wrote, unless the
    repository changed since: moved (backup_dir changed, then a converge) or pruned by hand. Then removing "what is
    not listed" would remove good backups. Seen failing before the fix: a journal of another path removed every pack,
    index and snapshot of the repository (a journal of the online pass); one of the stopped pass kept them only
    because its check took the moved repository's snapshots for the backup's own, and said nothing."""
    tmp, world, _ = lab
    for at in ("backup:online", "backup:stopping"):
        killed_online_pass(lab, at)
        journal = json.loads((tmp / "journal.json").read_text())
        assert journal["phase"] == at.split(":")[1]
        elsewhere = {key: [p.replace(str(tmp), "/var/backups/elsewhere") for p in journal[key]]
                     for key in ("before_online", "repository_files") if key in journal}
        moved = {**journal, **elsewhere, "repository": "/var/backups/elsewhere/repo"}
        (tmp / "journal.json").write_text(json.dumps(moved))
        everything = repo_files(tmp)
        after = keeper(lab)
        assert dp.main(["--wait", "0", "recover"], keeper=after) == 0
        assert repo_files(tmp) == everything and world.running, at
        assert any("the repository changed since it began" in line for line in after.said), after.said
    # pruned by hand since: one file the journal lists is gone
    before = killed_online_pass(lab)
    gone = sorted(before)[0]
    os.unlink(gone)
    everything = repo_files(tmp)
    assert dp.main(["--wait", "0", "recover"], keeper=keeper(lab)) == 0
    assert repo_files(tmp) == everything and world.running


def test_a_half_written_snapshot_does_not_pass_for_a_finished_backup(lab):
    """A kill while restic writes its snapshot leaves snapshots/<id>-tmp-... (its local backend renames it when done):
    what the backup wrote must still go. Seen failing before the fix: any path with /snapshots/ counted as done."""
    tmp, world, _ = lab
    before = killed_online_pass(lab)
    (tmp / "repo" / "snapshots" / ("ab" * 32 + "-tmp-4242")).write_bytes(b"half")
    assert dp.main(["--wait", "0", "recover"], keeper=keeper(lab)) == 0
    assert repo_files(tmp) == before and world.running


def test_a_file_that_cannot_be_removed_never_keeps_cvat_stopped(lab, monkeypatch):
    tmp, world, _ = lab
    killed_online_pass(lab)
    world.running = False  # as if killed while stopped: the journal says stopping
    real_unlink = os.unlink

    def unlink(path, *args, **kwargs):
        if "/repo/data/" in str(path):
            raise PermissionError(13, "Permission denied")
        return real_unlink(path, *args, **kwargs)

    monkeypatch.setattr(dp.os, "unlink", unlink)
    after = keeper(lab)
    assert dp.main(["--wait", "0", "recover"], keeper=after) == 0
    assert world.running and not (tmp / "journal.json").exists()
    assert any("could not remove" in line and "Permission denied" in line for line in after.said), after.said


def test_a_journal_that_cannot_be_written_after_the_online_pass_leaves_nothing_behind(lab, monkeypatch):
    """The online pass filled the disk, so the journal's next phase cannot be written: nothing was stopped, and what
    the online pass wrote must go now, not at the next run a day later. Seen failing before the fix: its packs and
    snapshot stayed, and the journal still said "online"."""
    tmp, world, _ = lab
    keeper(lab).backup("manual")
    world.write("b")
    before = repo_files(tmp)
    real = dp.write_json

    def write_json(path, value, mode=0o600):
        if value.get("phase") == "stopping":
            raise dp.Failed(f"cannot write {path}: No space left on device")
        return real(path, value, mode)

    monkeypatch.setattr(dp, "write_json", write_json)
    k = keeper(lab)
    with pytest.raises(dp.Failed, match="No space left on device; CVAT kept running"):
        k.backup("manual")
    assert repo_files(tmp) == before and world.running and "compose stop" not in k.runner.commands
    assert not (tmp / "journal.json").exists()


@needs_root
def test_the_first_backup_on_a_full_disk_leaves_no_empty_password(shared_disk, capsys):
    """The repository's password is made on first use; on a full disk it must not be left empty (restic would then
    refuse every later run: "an empty password is not a password"). Seen failing before the fix: a 0-byte password
    file and a traceback."""
    disk, _, _ = shared_disk
    password = disk / "backup" / "restic-password"
    fill(disk, 0)
    k = disk_keeper(shared_disk, password_file=str(password), repository=str(disk / "new-repo"))
    assert dp.main(["--wait", "0", "backup"], keeper=k) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "no space left" in err[0].lower(), err
    assert not password.exists() and not list(password.parent.glob("*"))
    (disk / "filler").unlink()
    assert disk_keeper(shared_disk, password_file=str(password), repository=str(disk / "new-repo")).backup("manual")["result"] == "ok"
    assert len(password.read_text().strip()) == 64
