"""labforge-data's upgrade (Mover) without a host: real restic on a real repository, real directories for Docker's
volumes and real renames, as in test_data_program.py; docker and git are answered by a world that knows which
release is checked out, which runs, whether its migration fails, which images are here and which function
containers sit on CVAT's network. A kill (-9) is a `Killed` raised at a point (each journal write and the program's own
points); the next converge is the same command run again.

Each test here failed on the shell upgrade script it replaces, or guards what that script did right.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from labforge import data_program as dp
from tests.data.test_data_program import VOLUMES, World, WorldRunner, template  # noqa: F401  (template: a fixture)

OLD, NEW = "v2.51.0", "v2.73.0"
NUCTL = {OLD: "1.13.23", NEW: "1.16.3"}
MANAGE = {OLD: "/home/django/manage.py", NEW: "/opt/cvat/manage.py"}
NETWORK = "cvat_cvat"


class Releases(World):
    """The world of test_data_program.py, plus releases: `tag` is the checkout (HEAD), `stack` what runs (None: down),
    `schema` what the database was migrated to (in cvat_db, so backups and restores carry it)."""

    def __init__(self, root: Path):
        super().__init__(root)
        self.tags = {OLD, NEW}
        self.stack: str | None = OLD
        self.failing: set[str] = set()  # releases whose migration fails
        self.images = {f"cvat/server:{OLD}", f"cvat/ui:{OLD}"}
        self.registry = True
        # name -> on CVAT's network: Nuclio's function containers, and a container of the admin's joined to it
        self.functions = {"nuclio-sam2": True, "nuclio-yolov3": True, "admins-tool": True}
        self.mounts = ["/home/django/data", "/home/django/keys"]
        self.set_schema(OLD)

    def write(self, label: str) -> None:
        """New data of the same schema (the world's write empties every volume first)."""
        schema = self.schema() if (self.mount("cvat_db") / "schema").exists() else None
        super().write(label)
        if schema is not None:
            self.set_schema(schema)

    def schema(self) -> str:
        path = self.mount("cvat_db") / "schema"
        return path.read_text() if path.exists() else ""

    def set_schema(self, release: str) -> None:
        (self.mount("cvat_db") / "schema").write_text(release)

    def up_ok(self) -> bool:
        return self.stack is not None and self.stack not in self.failing and self.schema() == self.stack


class ReleasesRunner(WorldRunner):
    world: Releases

    def run(self, argv, env=None, cwd=None, timeout=None):
        w = self.world
        compose = argv[:2] == ["docker", "compose"]
        words = argv[argv.index("-f") + 2:] if compose else []  # what follows the compose files
        if argv[0] == "git":
            return self.git(argv)
        if compose and words[:1] == ["down"]:
            self.commands.append("compose down")
            if any(w.functions.values()):  # Docker refuses to remove a network that containers are on
                return dp.Result(1, "", "error while removing network: network cvat_cvat has active endpoints")
            w.stack, w.running = None, False
            return dp.Result(0, "", "")
        if compose and words[:2] == ["up", "-d"]:
            self.commands.append("compose up")
            if f"cvat/server:{w.tag}" not in w.images:
                return dp.Result(1, "", f"Error response from daemon: pull access denied for cvat/server:{w.tag}")
            w.stack, w.running = w.tag, True
            if w.schema() != w.tag and w.tag not in w.failing:  # cvat_server's init migrates, then serves
                w.set_schema(w.tag)
            elif w.tag in w.failing:  # the migration dies half-way through: what it wrote stays in the volume
                w.set_schema(f"half-way to {w.tag}")
            return dp.Result(0, "", "")
        if compose and words[:2] == ["config", "--images"]:
            release = (Path(cwd) / "release").read_text()
            return dp.Result(0, f"cvat/server:{release}\ncvat/ui:{release}\n", "")
        if compose and words[:1] == ["ps"]:
            if w.stack is None:
                return dp.Result(0, "", "")
            state = "running" if w.up_ok() else "restarting"
            return dp.Result(0, "c1 c2\n" if "-q" in words else f"cvat_server={state} cvat_db=running\n", "")
        if compose and words[:1] == ["start"] and w.stack is None:
            return dp.Result(1, "", "service \"cvat_server\" has no container to start")
        if argv[:3] == ["docker", "inspect", "-f"] and argv[-1] == "cvat_server":
            if w.stack is None:
                return dp.Result(1, "", "Error: No such object: cvat_server")
            return dp.Result(0, "0 running\n" if w.stack not in w.failing else "3 restarting\n", "")
        if argv[:3] == ["docker", "logs", "--tail"]:
            return dp.Result(0, "", f"django.db.utils.ProgrammingError: the migration to {w.stack} failed\n")
        if argv[:2] == ["docker", "exec"]:
            if "migrate" in argv:
                return dp.Result(0 if w.up_ok() else 1, "", "" if w.up_ok() else "unapplied migrations")
            if argv[3:5] == ["test", "-f"]:
                return dp.Result(0 if argv[5] == MANAGE[w.stack or OLD] else 1, "", "")
        if argv[:2] == ["docker", "inspect"] and "Mounts" in argv[3]:
            return dp.Result(0, " ".join(w.mounts) + "\n", "")
        if argv[:2] == ["docker", "inspect"] and "Networks" in argv[3]:
            return dp.Result(0, f"|{NETWORK} bridge\n" if w.functions.get(argv[-1]) else "|bridge\n", "")
        if argv[:3] == ["docker", "network", "inspect"]:
            return dp.Result(0, "".join(f"{name} " for name, on in w.functions.items() if on) + "\n", "")
        if argv[:3] == ["docker", "image", "inspect"]:
            return dp.Result(0 if argv[3] in w.images else 1, "", "" if argv[3] in w.images else "No such image")
        if argv[:2] == ["docker", "pull"]:
            if not w.registry:
                return dp.Result(1, "", 'Get "https://quay.io/v2/": dial tcp: lookup quay.io: no such host')
            w.images.add(argv[-1])
            return dp.Result(0, "", "")
        if argv[:3] == ["docker", "ps", "-a"]:  # --filter label=nuclio.io/platform=local
            return dp.Result(0, "".join(f"{name}\n" for name in w.functions if name.startswith("nuclio-")), "")
        if argv[:3] == ["docker", "network", "disconnect"]:
            w.functions[argv[-1]] = False
            return dp.Result(0, "", "")
        if argv[:3] == ["docker", "network", "connect"]:
            w.functions[argv[-1]] = True
            return dp.Result(0, "", "")
        if argv[0] == "wait-api":
            return dp.Result(0 if w.running and w.up_ok() and w.api_ok else 1, "", "")
        return super().run(argv, env=env, cwd=cwd, timeout=timeout)

    def git(self, argv):
        w = self.world
        self.commands.append(" ".join(argv[3:5]))
        if "describe" in argv:
            return dp.Result(0, f"{w.tag}\n", "")
        if "rev-parse" in argv:
            return dp.Result(0 if argv[-1].removeprefix("refs/tags/") in w.tags else 1, "", "")
        if "checkout" in argv:
            if "git checkout" in w.fail:
                return dp.Result(1, "", "error: unable to unlink old 'docker-compose.yml': Permission denied")
            w.tag = argv[-1]
            return dp.Result(0, "", "")
        if "worktree" in argv and "add" in argv:
            preview = Path(argv[-2])
            preview.mkdir(parents=True)
            (preview / "release").write_text(argv[-1])
        return dp.Result(0, "", "")


@pytest.fixture
def lab(tmp_path, template):  # noqa: F811  (template: the fixture imported above)
    shutil.copytree(template / "repo", tmp_path / "repo")
    shutil.copy(template / "password", tmp_path / "password")
    world = Releases(tmp_path)
    world.write("a")
    world.set_schema(OLD)
    kept = tmp_path / "kept"
    kept.mkdir()
    for version in NUCTL.values():
        (kept / f"nuctl-{version}").write_text(f"nuctl {version}\n")
        (kept / f"nuctl-{version}").chmod(0o755)
    (tmp_path / "nuctl").write_text(f"nuctl {NUCTL[OLD]}\n")
    (tmp_path / "docker-compose.labforge.yml").write_text("services: {}\n")
    upgrade = {"state": str(tmp_path / "upgrade.json"), "preview_dir": str(tmp_path / "preview"),
               "override": "docker-compose.labforge.yml", "network": NETWORK, "timeout": 30, "rows": [OLD, NEW],
               "manage_py": MANAGE, "nuctl": NUCTL, "nuctl_path": str(tmp_path / "nuctl"), "kept_nuctl_dir": str(kept),
               "steps": {OLD: [], NEW: [dp.SOURCE_IN_OPT]}, "guard_image_variable": "LABFORGE_NUCLIO_GUARD_IMAGE"}
    config = {"project": "cvat", "compose": ["-f", "docker-compose.yml"], "cvat_dir": str(tmp_path), "volumes": VOLUMES,
              "online_volumes": VOLUMES, "repository": str(tmp_path / "repo"), "password_file": str(tmp_path / "password"),
              "cache_dir": str(tmp_path / "cache"), "keep": 2, "reserve_bytes": 0, "wait_api": "wait-api", "upgrade": upgrade,
              "dry_run": False, "check_read_parts": 0}  # both tested in test_data_program.py: fewer restic runs here
    return tmp_path, world, config


def keeper(lab, kill_at: int | None = None) -> dp.Keeper:
    tmp, world, config = lab
    return dp.Keeper(config, ReleasesRunner(world, kill_at), journal_path=str(tmp / "journal.json"),
                     last_path=str(tmp / "last.json"), lock=dp.Lock(str(tmp / "lock")))


def upgrade(k: dp.Keeper, to: str = NEW, restore: str | None = None, capsys=None) -> int:
    return dp.main(["--wait", "0", "upgrade", to, NUCTL[to], *([restore] if restore else [])], keeper=k)


def kinds(k: dp.Keeper) -> dict[str, str]:
    return {s.name: s.kind for s in k.snapshots() if s.kind != "online"}


def whole(world: Releases, release: str) -> None:
    """CVAT runs `release` on data migrated to it, with every function back on its network."""
    assert (world.tag, world.stack, world.schema(), world.running) == (release, release, release, True)
    assert all(world.functions.values()), world.functions


def test_an_upgrade_backs_up_moves_and_verifies(lab, capsys):
    tmp, world, _ = lab
    k = keeper(lab)
    assert upgrade(k) == 0, k.said
    whole(world, NEW)
    assert world.labels() == {"a"} and not (tmp / "upgrade.json").exists()
    assert (tmp / "nuctl").read_text() == f"nuctl {NUCTL[NEW]}\n"
    assert list(kinds(k).values()) == ["before-upgrade"]
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith(f"upgraded={NEW} from={OLD} backup=cvat-") and "restored=none" in line
    assert "compose down" in k.runner.commands and world.tag == NEW


def test_a_missing_image_that_cannot_be_pulled_is_refused_before_anything_stops(lab):
    tmp, world, _ = lab
    world.registry = False
    k = keeper(lab)
    assert upgrade(k) == 1
    assert f"upgrade {OLD} -> {NEW} not started: {NEW} needs the image cvat/server:{NEW}, which is not here and cannot be " \
           "pulled" in k.said[-1] and "nothing was stopped or changed" in k.said[-1], k.said
    whole(world, OLD)
    assert "compose stop" not in k.runner.commands and "compose down" not in k.runner.commands
    assert not kinds(k) and not (tmp / "preview").exists() and not (tmp / "upgrade.json").exists()


def test_a_failing_migration_rolls_back_to_the_old_release_with_its_data(lab):
    tmp, world, _ = lab
    world.failing.add(NEW)
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    k = keeper(lab)
    assert upgrade(k) == 1
    backup = next(name for name, kind in kinds(k).items() if kind == "before-upgrade")
    assert f"upgrade {OLD} -> {NEW} failed: cvat_server exited while starting (restarts: 3; " \
           f"django.db.utils.ProgrammingError: the migration to {NEW} failed); rolled back: CVAT is at {OLD} again with " \
           f"the data of backup {backup}" == k.said[-1], k.said
    whole(world, OLD)  # the half-migrated database is gone: the backup's came back
    assert world.labels() == {"a"} and (tmp / "nuctl").read_text() == f"nuctl {NUCTL[OLD]}\n"
    assert not (tmp / "upgrade.json").exists() and not (tmp / "journal.json").exists()


def test_a_rollback_that_fails_leaves_the_journal_and_the_next_run_finishes_it(lab):
    tmp, world, _ = lab
    world.failing.add(NEW)
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    k = keeper(lab)
    world.fail.add("git checkout")  # the switch itself fails, then so does the rollback's checkout

    assert upgrade(k) == 1
    assert "and the rollback failed too; the data before the upgrade is backup cvat-" in k.said[-1], k.said
    assert (tmp / "upgrade.json").exists()
    world.fail.clear()
    world.failing.clear()  # say the admin fixed it; the next converge asks for the upgrade again
    again = keeper(lab)
    assert upgrade(again) == 0, again.said
    assert any("rolled back the unfinished upgrade" in line for line in again.said), again.said
    whole(world, NEW)
    assert world.labels() == {"a"}


def test_the_functions_are_taken_off_the_network_for_down_and_put_back(lab):
    """Docker refuses to remove a network that containers are on: the world refuses `down` while any container is on
    it, Nuclio's or not (seen in the lab story: `down` failed with "has active endpoints", then a rollback)."""
    _, world, _ = lab
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    k = keeper(lab)
    assert upgrade(k) == 0, k.said
    whole(world, NEW)


def test_a_mount_left_in_the_old_source_tree_fails_the_guides_v2_72_step_and_rolls_back(lab):
    _, world, _ = lab
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    world.mounts.append("/home/django/cvat/apps/custom")
    k = keeper(lab)
    assert upgrade(k) == 1
    assert "a mount at /home/django/cvat/apps/custom is in the old source tree, which v2.72.0 moved to /opt/cvat" in k.said[-1]
    whole(world, OLD)


def test_a_downgrade_restores_the_backup_of_the_older_release(lab):
    tmp, world, _ = lab
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    k = keeper(lab)
    old_data = k.backup("manual")["name"]
    assert upgrade(k) == 0
    world.write("work at the new release")
    world.set_schema(NEW)
    down = keeper(lab)
    assert upgrade(down, OLD, old_data) == 0, down.said
    whole(world, OLD)
    assert world.labels() == {"a"}
    assert any(kind == "before-upgrade" for kind in kinds(down).values())  # the new release's data, kept
    assert (tmp / "nuctl").read_text() == f"nuctl {NUCTL[OLD]}\n"


def run_killed(lab, kill_at: int, action) -> tuple[dp.Keeper, bool]:
    k = keeper(lab, kill_at)
    try:
        action(k)
    except dp.Killed:
        if k.lock.fd is not None:
            os.close(k.lock.fd)  # the kernel drops a killed process's lock
            k.lock.fd = None
        return k, True
    return k, False


def test_killed_at_every_point_then_run_again_ends_upgraded_never_half(lab):
    """Each kill, then the next converge (the same upgrade asked again): CVAT ends at the new release on migrated data,
    running, with no journal, the old data never mixed in; a kill once the new release started keeps what people wrote
    in it after the reboot (a before-rollback backup holds it too). Seen failing before (the shell script, kill at `up`
    and work written): the next run restored the pre-upgrade backup over that work with no copy of it."""
    tmp, world, _ = lab
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    repo, saved = tmp / "repo", tmp / "saved"
    shutil.copytree(repo, saved)
    seen = []
    point = 1
    while True:
        shutil.rmtree(repo)
        shutil.copytree(saved, repo)
        for leftover in ("upgrade.json", "journal.json"):
            (tmp / leftover).unlink(missing_ok=True)
        world.tag, world.stack, world.running = OLD, OLD, True
        world.write("a")
        world.set_schema(OLD)
        world.functions = dict.fromkeys(world.functions, True)
        k, killed = run_killed(lab, point, lambda k: upgrade(k))
        if not killed:
            assert world.tag == NEW
            break
        at = k.runner.points[-1]
        seen.append(at)
        wrote = world.stack == NEW and world.up_ok()
        if wrote:  # the host rebooted, `restart: always` brought the new release back, people worked in it
            world.write("work")
        after = keeper(lab)
        assert upgrade(after) == 0, (at, after.said)
        whole(world, NEW)
        assert world.labels() == ({"work"} if wrote else {"a"}), (at, world.labels())
        if wrote and at in ("upgrade:up",):
            assert any(kind == "before-rollback" for kind in kinds(after).values()), at
            assert any("which is up with its migrations applied: kept" in line for line in after.said), after.said
        assert not (tmp / "upgrade.json").exists() and not (tmp / "journal.json").exists()
        assert not any(p.name.startswith(dp.STAGING) for p in (tmp / "docker").iterdir()), at
        point += 1
    print(f"an upgrade killed at each of its {len(seen)} points, then run again: at {NEW}, whole, after each ({', '.join(seen)})")
    assert {"upgrade:backing-up", "upgrade:backed-up", "upgrade:down", "upgrade:switched", "upgrade:up",
            "upgrade:verified"} <= set(seen), seen


def test_the_shell_scripts_journal_is_still_finished(lab):
    """A host killed mid-upgrade by labforge's earlier shell script left KEY=VALUE lines: they are read and rolled back."""
    tmp, world, _ = lab
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}"}
    k = keeper(lab)
    backup = k.backup("before-upgrade")["name"]
    world.write("half")  # what the killed shell run left: stack down at the new checkout
    world.tag, world.stack, world.running = NEW, None, False
    world.functions.update({"nuclio-sam2": False, "nuclio-yolov3": False})  # the shell took off Nuclio's only
    (tmp / "upgrade.json").write_text(f'FROM={OLD}\nTO={NEW}\nBACKUP={backup}\nRESTORE=\nFUNCTIONS="nuclio-sam2 '
                                      f'nuclio-yolov3"\nPHASE=switched\nSTARTED=1\n')
    assert dp.upgrade_dependencies(str(tmp / "upgrade.json")) == {backup}
    again = keeper(lab)
    assert upgrade(again) == 0, again.said
    assert any(f"rolled back the unfinished upgrade: CVAT is at {OLD} with the data of backup {backup}" in line
               for line in again.said), again.said
    whole(world, NEW)
    assert world.labels() == {"a"}


def test_the_timer_waits_for_an_upgrade_that_holds_the_lock(lab):
    """A timer backup that fires during a migration: the upgrade holds the data lock for the whole move, so the timer's
    labforge-data waits, then stops with one line naming the holder (it never stops cvat_server mid-migration)."""
    _, world, _ = lab
    mover = keeper(lab)
    mover.lock.acquire("labforge-data upgrade", 0, mover.runner)
    try:
        timer = keeper(lab)
        assert dp.main(["--wait", "0", "backup", "--kind", "scheduled"], keeper=timer) == 1
        assert "compose stop" not in timer.runner.commands and world.running
    finally:
        mover.lock.release()
