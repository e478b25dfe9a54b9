"""labforge-data's upgrade (Mover) without a host: real restic on a real repository, real directories for Docker's
volumes and real renames, as in test_data_program.py; docker and git are answered by a world that knows which
release is checked out, which runs, whether its migration fails, which images are here and which function
containers sit on CVAT's network. A kill (-9) is a `Killed` raised at a point (each journal write and the program's own
points); the next converge is the same command run again.

Each test here failed on the shell upgrade script it replaces, or guards what that script did right.
"""

from __future__ import annotations

import http.server
import os
import shutil
import socket
import sys
import threading
from pathlib import Path

import pytest

from labforge import data_program as dp
from labforge.nuclio_functions import onbuild_images
from labforge.paths import REPO
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
        self.tree: dict[str, str] = {}  # "TAG:PATH" -> the file in the checkout's git objects
        self.unpullable: set[str] = set()  # images the registry does not have (or cannot be reached for)
        self.offline: dict[str, str] = {}  # URL -> why it does not answer from the host
        self.asked: list[str] = []  # the URLs the program asked for

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

    def run(self, argv, env=None, cwd=None, timeout=None, stdin=None):
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
            if not w.registry or argv[-1] in w.unpullable:
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
        return super().run(argv, env=env, cwd=cwd, timeout=timeout, stdin=stdin)

    def unreachable(self, url, timeout=20):
        self.world.asked.append(url)
        return self.world.offline.get(url)

    def git(self, argv):
        w = self.world
        self.commands.append(" ".join(argv[3:5]))
        if argv[3] == "show":
            found = w.tree.get(argv[4])
            return dp.Result(0, found, "") if found is not None else \
                dp.Result(128, "", f"fatal: path '{argv[4]}' does not exist in '{argv[4].split(':')[0]}'")
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
               "steps": {OLD: [], NEW: [dp.SOURCE_IN_OPT]}, "guard_image_variable": "LABFORGE_NUCLIO_GUARD_IMAGE",
               "functions": {}, "onbuild": {tag: onbuild_images(NUCTL[tag], "amd64") for tag in (OLD, NEW)},
               "check_build_downloads": True,
               "inputs_program": [sys.executable, str(REPO / "labforge/function_inputs.py")]}
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


# --- what the functions' rebuild at the new release fetches, checked before anything stops ---------------------------

DEXTR = "serverless/openvino/dextr"
DEXTR_YAML = "metadata: {name: openvino-dextr}\nspec: {runtime: 'python:3.8', build: {baseImage: cvat.openvino.dextr.base}}\n"
OPENVINO_BASE = "FROM openvino/ubuntu20_runtime:2022.3.0\nRUN pip install --no-cache-dir pillow\n"
DEXTR_DOCKERFILE = ("FROM openvino/ubuntu20_dev:2022.3.0 AS build\n"
                    "ADD https://data.vision.ee.ethz.ch/csergi/share/DEXTR/dextr_pascal-sbd.pth ./\nFROM cvat.openvino.base\n")
CHECKPOINT = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt"
ONBUILD_NEW = f"quay.io/nuclio/handler-builder-python-onbuild:{NUCTL[NEW]}-amd64"


@pytest.fixture
def functions(lab):
    """DEXTR built from v2.51.0's tree at both rows (cvat_function_sources), with the Dockerfiles its deploy builds
    first, and our SAM 2 interactor where the functions layer put it; every image here, every URL answering."""
    tmp, world, config = lab
    world.images |= {f"cvat/server:{NEW}", f"cvat/ui:{NEW}", ONBUILD_NEW, "quay.io/nuclio/uhttpc:0.0.1-amd64",
                     "openvino/ubuntu20_runtime:2022.3.0", "openvino/ubuntu20_dev:2022.3.0", "python:3.11-slim"}
    world.tree = {f"{OLD}:{DEXTR}/nuclio/function.yaml": DEXTR_YAML, f"{OLD}:serverless/openvino/base/Dockerfile": OPENVINO_BASE,
                  f"{OLD}:{DEXTR}/nuclio/Dockerfile": DEXTR_DOCKERFILE}
    shutil.copytree(REPO / "files/nuclio/sam2", tmp / "sam2")
    entries = [{"path": DEXTR, "tag": OLD, "gpu": False, "built": ["cvat.openvino.base", "cvat.openvino.dextr.base"],
                "dockerfiles": ["serverless/openvino/base", f"{DEXTR}/nuclio"]},
               {"path": "files/nuclio/sam2", "dir": str(tmp / "sam2"), "gpu": False}]
    config["upgrade"]["functions"] = {OLD: entries, NEW: entries}
    return world


def refused(lab, k: dp.Keeper, *parts: str) -> None:
    """The upgrade was refused in one line holding `parts`, with CVAT untouched and nothing backed up."""
    tmp, world, _ = lab
    assert upgrade(k) == 1
    assert k.said[-1].startswith(f"upgrade {OLD} -> {NEW} not started: ") and \
        k.said[-1].endswith("; nothing was stopped or changed"), k.said
    for part in parts:
        assert part in k.said[-1], k.said
    whole(world, OLD)
    assert "compose stop" not in k.runner.commands and "compose down" not in k.runner.commands
    assert not kinds(k) and not (tmp / "upgrade.json").exists()


def test_with_every_build_input_here_the_upgrade_checks_each_once_and_goes_on(lab, functions):
    k = keeper(lab)
    assert upgrade(k) == 0, k.said
    whole(functions, NEW)
    assert functions.asked == ["https://pypi.org/simple/pillow/",
                               "https://data.vision.ee.ethz.ch/csergi/share/DEXTR/dextr_pascal-sbd.pth",
                               "https://download.pytorch.org/whl/cpu/torch/", "https://download.pytorch.org/whl/cpu/torchvision/",
                               "https://pypi.org/simple/setuptools/", "https://pypi.org/simple/wheel/",
                               "https://pypi.org/simple/sam2/", CHECKPOINT]


def test_nuclios_onbuild_image_for_the_new_nuctl_missing_and_unpullable_is_refused_before_anything_stops(lab, functions):
    """The registry outage of the issue, met by the functions instead of CVAT's images: before, the upgrade went on,
    and every function's rebuild then failed with CVAT at the new release (nuctl pulls this image at every build)."""
    functions.images.discard(ONBUILD_NEW)
    functions.unpullable.add(ONBUILD_NEW)
    refused(lab, keeper(lab), f"{DEXTR} is rebuilt at {NEW} from the image {ONBUILD_NEW}, which is not here and cannot "
                              "be pulled (Get \"https://quay.io/v2/\"")


def test_a_base_image_of_a_dockerfile_the_deploy_builds_first_that_cannot_be_pulled_is_refused(lab, functions):
    functions.images.discard("openvino/ubuntu20_dev:2022.3.0")
    functions.unpullable.add("openvino/ubuntu20_dev:2022.3.0")
    refused(lab, keeper(lab), f"{DEXTR} is rebuilt at {NEW} from the image openvino/ubuntu20_dev:2022.3.0")


def test_a_missing_image_that_can_be_pulled_is_pulled_before_anything_stops(lab, functions):
    functions.images.discard("python:3.11-slim")
    k = keeper(lab)
    assert upgrade(k) == 0, k.said
    assert "python:3.11-slim" in functions.images


@pytest.mark.parametrize("url, owner", [(CHECKPOINT, "files/nuclio/sam2"), ("https://pypi.org/simple/pillow/", DEXTR)])
def test_a_download_of_the_build_that_does_not_answer_is_refused_with_the_setting_that_skips_it(lab, functions, url, owner):
    functions.offline[url] = "[Errno -3] Temporary failure in name resolution"
    refused(lab, keeper(lab), f"{owner} is rebuilt at {NEW}, and its build fetches {url}, which does not answer from this "
                              "host ([Errno -3] Temporary failure in name resolution)",
            "set cvat_upgrade_check_build_downloads: False")


def test_with_the_download_check_off_only_images_are_checked(lab, functions):
    _, _, config = lab
    config["upgrade"]["check_build_downloads"] = False
    functions.offline[CHECKPOINT] = "HTTP 404"
    k = keeper(lab)
    assert upgrade(k) == 0, k.said
    assert functions.asked == []


def test_a_function_yaml_the_tag_lacks_is_refused_and_ours_never_uploaded_is_skipped(lab, functions):
    tmp, _, _ = lab
    shutil.rmtree(tmp / "sam2")  # never deployed on this host: its first deploy is nobody's upgrade
    del functions.tree[f"{OLD}:{DEXTR}/nuclio/function.yaml"]
    refused(lab, keeper(lab), f"reading {DEXTR}/nuclio/function.yaml at {OLD}: fatal: path")
    functions.tree[f"{OLD}:{DEXTR}/nuclio/function.yaml"] = "metadata: [not, a, mapping]\n"
    refused(lab, keeper(lab), f"reading what {DEXTR} builds from at {NEW}: labforge: not a Nuclio function configuration")


class Answers(http.server.BaseHTTPRequestHandler):
    """A web server on 127.0.0.1 with the answers the check meets: a file, one that refuses HEAD, a redirect, a 404."""

    def do_HEAD(self):
        codes = {"/file": 200, "/no-head": 405, "/moved": 302, "/gone": 404}
        self.send_response(codes.get(self.path, 404))
        if self.path == "/moved":
            self.send_header("Location", "/file")
        self.end_headers()

    def do_GET(self):
        ranged = self.headers.get("Range") == "bytes=0-0"
        self.send_response(200 if self.path == "/file" else 206 if self.path == "/no-head" and ranged else 404)
        self.end_headers()

    def log_message(self, *args):
        pass


def test_the_hosts_url_check_answers_what_a_build_would_meet():
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Answers)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refused_port = closed.getsockname()[1]
    base = f"http://127.0.0.1:{server.server_address[1]}"
    runner = dp.Runner()
    try:
        assert [runner.unreachable(f"{base}{path}", timeout=5) for path in ("/file", "/no-head", "/moved", "/gone")] == \
            [None, None, None, "HTTP 404"]
        assert "Connection refused" in runner.unreachable(f"http://127.0.0.1:{refused_port}/x", timeout=5)
        # a port that is no web server (an SSH daemon's banner): one reason, not a traceback
        with socket.socket() as ssh:
            ssh.bind(("127.0.0.1", 0))
            ssh.listen(1)

            def banner() -> None:
                connection, _ = ssh.accept()
                connection.sendall(b"SSH-2.0-OpenSSH_9.6\r\n")
                connection.close()

            threading.Thread(target=banner, daemon=True).start()
            assert runner.unreachable(f"http://127.0.0.1:{ssh.getsockname()[1]}/x", timeout=5) == \
                "not HTTP: BadStatusLine 'SSH-2.0-OpenSSH_9.6'"
    finally:
        server.shutdown()
