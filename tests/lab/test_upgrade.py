"""Moving forward, on real parts: a lab converged at CVAT v2.51.0 holds real rows in Debian's PostgreSQL and real
files in its volumes, and one converge with cvat_version v2.73.0 upgrades it (testlab/standins/cvat.py carries both
tags' compose files as read at them; the stand-in cvat/server:v2.73.0 migrates the real database in its `init`).

The order is the story of one lab: an upgrade that fails on its data and rolls back, the data fixed, an upgrade
killed half-way (pyinfra and the host's upgrade unit both killed, as a power cut would), converged again, and then
the upgraded lab: its data, its functions, a second converge with nothing to do, and a downgrade refused.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labforge import upgrades
from labforge.backups import DATA_PROGRAM
from labforge.data_program import read_upgrade_journal
from testlab import labhosts, runner
from tests.lab.conftest import TEST_LAB_DIR, bring_up_stack
from tests.lab.test_backup import BACKUP_DIR, PASSWORD, complete_backups, started_at, volume_files

HOST_NAME = "citest-upgrade"
NAME = f"{HOST_NAME}.lab"
OLD, NEW = "v2.51.0", "v2.73.0"
FUNCTIONS = {"openvino-omz-public-yolo-v3-tf", "openvino-dextr"}
TAKEN: dict[str, str] = {}  # what earlier tests of this module took (the lab's story runs in order)


def hosts(host, mirror, version: str, **extra) -> Path:
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "upgrade.yml", group="cpu_servers", cvat_start=True,
                               cvat_version=version, backup_keep=10, **extra)


def converge(host, mirror, version: str, ok: bool = True, **extra) -> runner.DeployRun:
    result = runner.deploy(hosts(host, mirror, version, **extra), env=PASSWORD)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def host(boot_host, mirror):
    """This module's own lab: CVAT's stand-in stack up at v2.51.0 with v2.73.0's images loaded, converged with this
    module's settings (no other module's story: it runs on its own, beside the others)."""
    return bring_up_stack(boot_host, mirror, HOST_NAME, "127.0.0.19", releases=(NEW,), cvat_version=OLD, backup_keep=10)


def api(host, method: str, path: str, body: dict | None = None) -> dict | list:
    data = f"-d '{json.dumps(body)}' -H 'Content-Type: application/json'" if body is not None else ""
    proc = host.ssh(f"curl -fsS -X {method} {data} -H 'Host: {NAME}' http://127.0.0.1:8080{path}", check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def journal_phase(path) -> str | None:
    """The phase labforge-data's upgrade journal names (written whole and renamed: never half-read)."""
    try:
        return (read_upgrade_journal(path.read_text()) or {}).get("phase")
    except FileNotFoundError:
        return None


def sql(host, statement: str) -> str:
    return host.ssh(f"docker exec cvat_db psql -U root -d cvat -X -A -t -c \"{statement}\"").stdout.strip()


def state(host) -> dict:
    """What the lab is at: release, data, schema."""
    return {"tag": host.ssh("git -C /opt/cvat describe --tags --exact-match HEAD").stdout.strip(),
            "about": api(host, "GET", "/api/server/about")["version"],
            "rows": api(host, "GET", "/api/labforge-standin/annotations"),
            "files": volume_files(host),
            "migrations": sql(host, "SELECT name FROM django_migrations ORDER BY id").split(),
            "journal": (host.root / upgrades.STATE.lstrip("/")).exists()}


@pytest.fixture(scope="module")
def data(host):
    """3,000 shapes in PostgreSQL, a 1 MiB media file, the secret key; and a task whose mode v2.73.0's migration
    does not allow (as data an older CVAT wrote can break a newer one's migration)."""
    for _ in range(60):
        if host.ssh(f"curl -fsS -o /dev/null -H 'Host: {NAME}' http://127.0.0.1:8080/api/labforge-standin/annotations",
                    check=False).returncode == 0:
            break
        time.sleep(2)
    api(host, "POST", "/api/labforge-standin/annotations", {"count": 3000})
    api(host, "POST", "/api/labforge-standin/media", {"name": "7/raw/frame_000001.jpg", "bytes": 2**20})
    sql(host, "INSERT INTO engine_task (name, mode) VALUES ('imported long ago', 'legacy')")
    return state(host)


ONBUILD = "quay.io/nuclio/handler-builder-python-onbuild:1.16.3-amd64"


@pytest.mark.parametrize("image, needs", [
    ("cvat/server:v2.73.0", f"{NEW} needs the image cvat/server:v2.73.0"),
    # DEXTR is rebuilt at v2.73.0 with nuctl 1.16.3, from v2.51.0's tree: read by the host's function-inputs from the
    # checkout's git objects; before, the upgrade went on and the functions layer's rebuild failed after it
    (ONBUILD, f"serverless/openvino/dextr is rebuilt at {NEW} from the image {ONBUILD}"),
])
def test_an_image_the_new_release_lacks_is_a_refusal_before_anything_stops(host, mirror, data, image, needs):
    """An air-gapped lab, or a registry outage: an image v2.73.0 or its functions' rebuild needs is not here and cannot
    be pulled (the lab host has no route out). Seen failing before for cvat/server: the backup ran, the stack went
    down, `docker compose up -d` failed on the pull and the upgrade rolled back (a full stop and a restore for a
    missing image)."""
    saved = "labforge-saved/" + image.replace("/", "-").replace(":", "-") + ":saved"
    host.ssh(f"docker tag {image} {saved} && docker rmi {image}")
    try:
        before, backups_before = started_at(host), complete_backups(host)
        refused = converge(host, mirror, NEW, ok=False)
        line = next((x for x in refused.stderr.splitlines() if "labforge-upgrade: " in x), "")
        print(f"\nrefused: {line.strip()}")
        assert f"upgrade {OLD} -> {NEW} not started: {needs}, which is not here and cannot be pulled" in line \
            and "nothing was stopped or changed" in line, refused.stderr[-3000:]
        assert started_at(host) == before and complete_backups(host) == backups_before
        assert state(host) == data
    finally:
        host.ssh(f"docker tag {saved} {image} && docker rmi {saved}")


def test_a_failing_migration_rolls_back_to_the_old_release_with_its_data_byte_for_byte(host, mirror, data):
    failed = converge(host, mirror, NEW, ok=False)
    assert failed.returncode != 0
    (line,) = [x for x in failed.stderr.splitlines() if "labforge-upgrade: " in x][-1:]
    print(f"\nfailed upgrade: {failed.seconds:.1f}s\n{line.strip()}")
    assert f"upgrade {OLD} -> {NEW} failed: cvat_server exited while starting" in line, line
    assert f"rolled back: CVAT is at {OLD} again with the data of backup cvat-" in line and "-before-upgrade" in line, line
    after = state(host)
    assert after == data, {k: (data[k], after[k]) for k in data if data[k] != after[k]}
    assert after["migrations"] == ["0001_labforge_standin_initial"]
    assert "Label: 1.13.23" in host.ssh("nuctl version").stdout  # the run had installed 1.16.3: the old one is back
    backup = line.split("data of backup ")[1].split()[0]
    assert backup in complete_backups(host)
    TAKEN["before the failed upgrade"] = backup


def test_killed_half_way_then_converged_again_ends_upgraded_never_half(host, mirror, data):
    sql(host, "UPDATE engine_task SET mode = 'annotation' WHERE mode = 'legacy'")  # the admin fixes the data
    before = state(host)
    journal = host.root / upgrades.STATE.lstrip("/")

    def past_the_stop() -> str | None:
        phase = journal_phase(journal)
        return phase if phase in ("switched", "up") else None

    def power_cut(proc) -> None:
        runner.kill(proc)
        host.ssh(f"systemctl kill --signal=KILL {upgrades.UNIT}.service", check=False)

    seen, killed = runner.deploy_interrupted(hosts(host, mirror, NEW), when=past_the_stop, then=power_cut, env=PASSWORD)
    assert seen, f"the run ended before the upgrade got past `down` (rc={killed.returncode}): {killed.stderr[-2000:]}"
    print(f"\nkilled at {seen} after {killed.seconds:.1f}s")
    again = converge(host, mirror, NEW)
    print(f"converged again: {again.seconds:.1f}s; " + "; ".join(again.summary_lines()))
    after = state(host)
    assert after["tag"] == NEW and after["about"] == NEW.lstrip("v") and not after["journal"]
    assert after["migrations"] == ["0001_labforge_standin_initial", "0002_labforge_standin_v2_73"]
    assert (after["rows"], after["files"]) == (before["rows"], before["files"])
    assert any(f"CVAT {OLD} -> {NEW}: backup cvat-" in line for line in again.summary_lines()), again.summary_lines()


def test_a_reboot_while_the_upgrade_waits_then_work_then_a_converge_keeps_the_work(host, mirror, data):
    """The host reboots while the upgrade waits for a long migration; `restart: always` brings v2.73.0 back, its
    migration finishes, people work in it; then a converge. Seen failing before: the converge found the journal and
    restored the pre-upgrade backup over their work, with no backup of it. Now: a backup of what v2.73.0 holds, and
    v2.73.0 is kept (it came up whole)."""
    if state(host)["tag"] == NEW:  # the killed run before ended upgraded: go back to the old release first
        converge(host, mirror, OLD, restore_backup=TAKEN["before the failed upgrade"])
        sql(host, "UPDATE engine_task SET mode = 'annotation' WHERE mode = 'legacy'")
    hold = "docker run --rm -v cvat_cvat_data:/d --entrypoint /bin/sh cvat/server:v2.51.0 -c '{}'"
    host.ssh(hold.format("touch /d/.labforge-standin-hold-migrations"))
    journal = host.root / upgrades.STATE.lstrip("/")

    def waiting() -> str | None:
        return "up" if journal_phase(journal) == "up" else None

    timer: list[tuple[str, str]] = []

    def reboot(proc) -> None:
        # the timer's backup fires during the migration (its service's command, in a unit of its own): it must wait
        # for the upgrade's data lock, not stop cvat_server mid-migration (CVAT's upgrade guide: never interrupt one)
        host.ssh(f"systemd-run --unit=labforge-timer-during-migration --no-block --collect {DATA_PROGRAM} --wait 14400 "
                 "backup --kind scheduled")
        time.sleep(5)  # the upgrade waits for the migration
        timer.append((host.ssh("systemctl is-active labforge-timer-during-migration", check=False).stdout.strip(),
                      host.ssh("docker inspect -f '{{.State.Status}}' cvat_server", check=False).stdout.strip()))
        runner.kill(proc)
        host.stop()
        host.boot()

    seen, _ = runner.deploy_interrupted(hosts(host, mirror, NEW), when=waiting, then=reboot, env=PASSWORD)
    assert seen == "up", "the upgrade never waited for its migration"
    assert timer == [("active", "running")], f"the timer's backup during the migration: (its unit, cvat_server) = {timer}"
    host.ssh(hold.format("rm -f /d/.labforge-standin-hold-migrations"))
    deadline = time.monotonic() + 180
    while host.ssh(f"curl -fsS -o /dev/null -H 'Host: {NAME}' http://127.0.0.1:8080/api/labforge-standin/annotations",
                   check=False).returncode != 0:
        assert time.monotonic() < deadline, "v2.73.0 did not come back after the reboot"
        time.sleep(2)
    assert api(host, "GET", "/api/server/about")["version"] == NEW.lstrip("v")
    api(host, "POST", "/api/labforge-standin/annotations", {"count": 11})  # people's work at v2.73.0
    worked = api(host, "GET", "/api/labforge-standin/annotations")
    again = converge(host, mirror, NEW)
    print("\nafter the reboot and the work, the converge: " + "; ".join(again.summary_lines()))
    after = state(host)
    assert after["tag"] == NEW and not after["journal"] and after["rows"] == worked
    assert any("came up whole, so it was kept with the work done in it" in line for line in again.summary_lines()), \
        again.summary_lines()
    assert any(item.endswith("-before-rollback") for item in complete_backups(host))


def test_the_upgraded_lab_runs_the_new_stack_and_its_functions_answer(host):
    images = dict(line.split() for line in host.ssh("docker ps --format '{{.Names}} {{.Image}}'").stdout.splitlines())
    assert images["nuclio"] == "quay.io/nuclio/dashboard:1.16.3-amd64" and images["cvat_server"] == "cvat/server:v2.73.0"
    assert "Label: 1.16.3" in host.ssh("nuctl version").stdout
    assert host.ssh("docker exec cvat_server python3 /opt/cvat/manage.py migrate --check", check=False).returncode == 0
    # CVAT v2.73.0's tree has no dextr and no yolo-v3-tf: they are built from v2.51.0's (cvat_function_sources)
    assert not (host.root / "opt/cvat/serverless/openvino/dextr").exists()
    assert (host.root / "opt/labforge/functions/cvat-v2.51.0/serverless/openvino/dextr/nuclio/function.yaml").exists()
    listed = {f["id"]: f for f in api(host, "GET", "/api/lambda/functions")}
    assert set(listed) >= FUNCTIONS and all(listed[n]["state"] == "ready" for n in FUNCTIONS), listed
    for name in sorted(listed):  # nothing listed that does not answer
        assert api(host, "POST", f"/api/lambda/functions/{name}", {"frame": 0})["function"] == name


def test_the_second_converge_after_the_upgrade_changes_nothing(host, mirror):
    again = converge(host, mirror, NEW)
    assert (again.totals.changed, again.totals.errors) == (0, 0), again.totals.changed_ops
    print(f"\nsecond converge: {again.totals.operations} ops, changed=0, {again.seconds:.1f}s")


def test_a_downgrade_is_refused_with_one_line_and_nothing_changes(host, mirror):
    before = started_at(host)
    refused = converge(host, mirror, OLD, ok=False)
    assert refused.returncode != 0
    assert f"cvat_version {OLD} is older than the {NEW} this host's data is at; a downgrade needs a backup taken " \
           f"at {OLD}: --data restore_backup=NAME" in refused.stderr, refused.stderr[-2000:]
    assert started_at(host) == before
    assert host.ssh("git -C /opt/cvat describe --tags --exact-match HEAD").stdout.strip() == NEW
    assert all(name.startswith("cvat-") for name in complete_backups(host))
    assert (host.root / BACKUP_DIR.lstrip("/")).is_dir()


def test_a_downgrade_naming_a_backup_of_the_older_release_restores_it(host, mirror, data):
    """The backup the failed upgrade took holds v2.51.0's data as it was then (with the task v2.73.0 refused)."""
    name = TAKEN["before the failed upgrade"]
    down = converge(host, mirror, OLD, restore_backup=name)
    print(f"\ndowngrade to {OLD} with backup {name}: {down.seconds:.1f}s; " + "; ".join(down.summary_lines()))
    after = state(host)
    assert after == data, {k: (data[k], after[k]) for k in data if data[k] != after[k]}
    assert any(f"CVAT {NEW} -> {OLD}: backup cvat-" in line for line in down.summary_lines()), down.summary_lines()
    listed = {f["id"]: f for f in api(host, "GET", "/api/lambda/functions")}
    assert set(listed) >= FUNCTIONS and all(listed[n]["state"] == "ready" for n in FUNCTIONS), listed
