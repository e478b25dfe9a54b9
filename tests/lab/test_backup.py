"""Keep the data, on real parts: cvat_db runs Debian's PostgreSQL 15 in the lab, the stand-in cvat_server writes
real rows into it and real files into cvat_data and cvat_keys (testlab/standins/cvat_image), and backup.py /
restore.py run against them. Claims are checked row for row (an md5 of the ordered rows) and byte for byte (sha256
of every file in the volumes).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from labforge.backups import LAST_RESULT
from testlab import labhosts, runner
from tests.lab.conftest import STACK_NAME, STACK_PASSWORD, TEST_LAB_DIR

PASSWORD = STACK_PASSWORD
NAME = f"{STACK_NAME}.lab"
BACKUP_DIR = "/var/backups/labforge"


def hosts(host, mirror, name: str = "backup.yml", **extra) -> Path:
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / name, group="cpu_servers", cvat_start=True, backup_keep=3, **extra)


def run(host, mirror, script: str, ok: bool = True, **extra) -> runner.DeployRun:
    result = runner.deploy(hosts(host, mirror, **extra), env=PASSWORD, script=script)
    if ok:
        assert result.returncode == 0, result.stderr[-3000:]
    return result


@pytest.fixture(scope="module")
def host(stack_host, mirror):
    """The lab's host (tests/lab/conftest.py stack_host), after test_lab_database, converged with this module's settings."""
    lab_host = stack_host
    converged = run(lab_host, mirror, "deploy.py")
    print(f"converge with the stack: {converged.totals.operations} ops, changed={converged.totals.changed}")
    return lab_host


def api(host, method: str, path: str, body: dict | None = None) -> dict:
    data = f"-d '{json.dumps(body)}' -H 'Content-Type: application/json'" if body is not None else ""
    proc = host.ssh(f"curl -fsS -X {method} {data} -H 'Host: {NAME}' http://127.0.0.1:8080{path}", check=False)
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout) if proc.stdout.strip() else {}


def wait_for_api(host, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if host.ssh(f"curl -fsS -o /dev/null -H 'Host: {NAME}' http://127.0.0.1:8080/api/labforge-standin/annotations",
                    check=False).returncode == 0:
            return
        time.sleep(2)
    raise AssertionError("CVAT's stand-in did not answer")


def volume_files(host) -> dict[str, str]:
    """sha256 of every file in cvat_data and cvat_keys (path -> digest)."""
    found = {}
    for volume in ("cvat_cvat_data", "cvat_cvat_keys"):
        mountpoint = host.ssh(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout.strip()
        for line in host.ssh(f"cd {mountpoint} && find . -type f -print0 | xargs -0 -r sha256sum").stdout.splitlines():
            digest, path = line.split(None, 1)
            found[f"{volume}/{path.lstrip('*')}"] = digest
    return found


def rows(host) -> dict:
    return api(host, "GET", "/api/labforge-standin/annotations")


def complete_backups(host) -> list[str]:
    return sorted(p.parent.name for p in (host.root / BACKUP_DIR.lstrip("/")).glob("cvat-*/manifest.json"))


def started_at(host) -> dict[str, str]:
    names = host.ssh("docker ps -a --format '{{.Names}}'").stdout.split()
    return {c["Name"]: c["State"]["StartedAt"] for c in json.loads(host.ssh(f"docker inspect {' '.join(names)}").stdout)}


@pytest.fixture(scope="module")
def data(host):
    """Real annotations and media: 2,000 rows in PostgreSQL and a 2 MiB media file."""
    wait_for_api(host)
    api(host, "POST", "/api/labforge-standin/annotations", {"count": 2000})
    api(host, "POST", "/api/labforge-standin/media", {"name": "frame_000001.jpg", "bytes": 2 * 2**20})
    return rows(host), volume_files(host)


@pytest.fixture(scope="module")
def first_backup(host, mirror, data):
    taken = run(host, mirror, "backup.py", backup_fetch_dir=str(TEST_LAB_DIR / "fetched"))
    (line,) = taken.summary_lines()
    print(f"\nbackup.py: {taken.seconds:.1f}s; {line}")
    (name,) = complete_backups(host)
    return name, taken


def test_backup_then_lose_everything_then_restore_gives_it_back_row_for_row_and_byte_for_byte(host, mirror, data, first_backup):
    name, taken = first_backup
    before_rows, before_files = data
    (line,) = taken.summary_lines()
    assert f"backup {name} in {BACKUP_DIR}: " in line and "CVAT was down" in line, line
    manifest = json.loads((host.root / BACKUP_DIR.lstrip("/") / name / "manifest.json").read_text())
    assert manifest["cvat_tag"] == "v2.51.0" and manifest["compose_project"] == "cvat"
    assert set(manifest["archives"]) == {"cvat_db", "cvat_data", "cvat_keys", "cvat_events_db"}
    print("manifest:", json.dumps({k: (v["bytes"], v["sha256"][:12]) for k, v in manifest["archives"].items()}))
    # the loss: rows deleted, media and the secret key gone
    host.ssh("docker exec cvat_db psql -U root -d cvat -c 'DELETE FROM engine_labeledshape'")
    for volume in ("cvat_cvat_data", "cvat_cvat_keys"):
        mountpoint = host.ssh(f"docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}").stdout.strip()
        host.ssh(f"find {mountpoint} -mindepth 1 -delete")
    assert rows(host)["rows"] == 0
    restored = run(host, mirror, "restore.py")
    (line,) = restored.summary_lines()
    print(f"restore.py: {restored.seconds:.1f}s; {line}")
    assert f"restored backup {name}" in line and "CVAT was down" in line, line
    wait_for_api(host)
    assert rows(host) == before_rows
    assert volume_files(host) == before_files


def test_the_fetched_copy_matches_the_manifest(host, first_backup):
    name, taken = first_backup
    (line,) = taken.summary_lines()
    copy = TEST_LAB_DIR / "fetched" / host.name / name
    assert f"backup {name} copied to {copy} and checked against its manifest" in line, line
    manifest = json.loads((copy / "manifest.json").read_text())
    for entry in manifest["archives"].values():
        assert (copy / entry["file"]).stat().st_size == entry["bytes"]


def test_a_tampered_archive_is_refused_and_nothing_stops(host, mirror, first_backup):
    name, _ = first_backup
    archive = host.root / BACKUP_DIR.lstrip("/") / name / "cvat_data.tar"
    original = archive.read_bytes()
    before = started_at(host)
    try:
        archive.write_bytes(original[:-1] + bytes([original[-1] ^ 1]))
        refused = run(host, mirror, "restore.py", ok=False, restore_backup=name)
        assert refused.returncode != 0
        assert f"backup {name} does not match its manifest: cvat_data.tar" in refused.stderr, refused.stderr[-2000:]
        assert started_at(host) == before  # nothing was stopped
    finally:
        archive.write_bytes(original)


def test_a_backup_of_another_cvat_release_is_refused(host, mirror, first_backup):
    name, _ = first_backup
    root = host.root / BACKUP_DIR.lstrip("/")
    other = "cvat-29991231T235959Z"  # the newest, so a plain restore.py takes it
    host.ssh(f"cp -a {BACKUP_DIR}/{name} {BACKUP_DIR}/{other} && "
             f"sed -i 's/\"cvat_tag\": \"v2.51.0\"/\"cvat_tag\": \"v2.52.0\"/' {BACKUP_DIR}/{other}/manifest.json")
    try:
        before = started_at(host)
        refused = run(host, mirror, "restore.py", ok=False)
        assert f"backup {other} was taken at CVAT v2.52.0, the checkout is at v2.51.0" in refused.stderr, refused.stderr[-2000:]
        assert started_at(host) == before
    finally:
        host.ssh(f"rm -rf {BACKUP_DIR}/{other}")
    assert not (root / other).exists()


def test_a_killed_backup_is_not_listed_and_the_next_one_succeeds(host, mirror, first_backup):
    partial = host.root / BACKUP_DIR.lstrip("/")

    def archiving():
        found = [p for p in partial.glob(".partial-*") if any(p.glob("*.tar"))]
        return found[0].name if found else None

    def power_cut(proc):
        # the script dies with no chance to clean up ([/]: the pattern does not match this shell's own command line)
        host.ssh("pkill -9 -f '[/]usr/local/lib/labforge/backup'", check=False)
        runner.kill(proc)

    before = complete_backups(host)
    seen, _ = runner.deploy_interrupted(hosts(host, mirror), archiving, power_cut, env=PASSWORD, script="backup.py")
    assert seen, "the backup was never seen archiving"
    killed = seen.removeprefix(".partial-")
    assert killed not in complete_backups(host)
    refused = run(host, mirror, "restore.py", ok=False, restore_backup=killed)
    assert f"backup {killed} in {BACKUP_DIR} is incomplete" in refused.stderr, refused.stderr[-2000:]
    run(host, mirror, "deploy.py")  # the stack, stopped by the killed backup, is started by the next converge
    again = run(host, mirror, "backup.py")
    assert not list(partial.glob(".partial-*")), "a killed backup's leftovers must go"
    assert len(set(complete_backups(host)) - set(before)) == 1, again.stderr[-2000:]


def test_a_full_disk_fails_with_one_line_cvat_back_up_and_older_backups_untouched(host, mirror, first_backup):
    small = "/var/backups/small"
    # room for one backup, then for the database's archive again and 60 MiB: the next backup, with 120 MiB more media,
    # runs out of space archiving cvat_data (the lab's database holds what earlier stories wrote: its size is measured)
    sizes = {volume: int(host.ssh(f"du -sb $(docker volume inspect -f '{{{{.Mountpoint}}}}' {volume}) | cut -f1").stdout)
             for volume in ("cvat_cvat_db", "cvat_cvat_data")}
    mib = (2 * sizes["cvat_cvat_db"] + sizes["cvat_cvat_data"]) // 2**20 + 60
    host.ssh(f"mkdir -p {small} && mount -t tmpfs -o size={mib}m,mode=700 tmpfs {small}")
    try:
        good = run(host, mirror, "backup.py", backup_dir=small)
        # the tmpfs is mounted in the host's own mount namespace: look from inside
        listed = lambda: host.ssh(f"cd {small} && ls -1d cvat-*/manifest.json .partial-* 2>/dev/null || true").stdout.split()  # noqa: E731
        (kept,) = [p.split("/")[0] for p in listed()]
        sums_before = host.ssh(f"cd {small}/{kept} && sha256sum *").stdout
        api(host, "POST", "/api/labforge-standin/media", {"name": "big.bin", "bytes": 120 * 2**20})
        full = run(host, mirror, "backup.py", ok=False, backup_dir=small)
        print(f"\nfirst backup into the small disk: {good.seconds:.1f}s; the second: exit {full.returncode}")
        errors = sorted({line.split("labforge-backup: ", 1)[1] for line in full.stderr.splitlines() if "labforge-backup: " in line})
        print(f"the failing backup said: {errors}")
        assert len(errors) == 1 and "archiving cvat_cvat_data" in errors[0] and f"no space left on the disk of {small}" in errors[0], \
            full.stderr[-3000:]
        assert "CVAT was started again and older backups are untouched" in errors[0]
        wait_for_api(host)
        states = json.loads("[" + ",".join(host.ssh("docker inspect -f '{{json .State.Running}}' $(docker ps -aq)").stdout.split()) + "]")
        assert all(states)
        assert host.ssh(f"cd {small}/{kept} && sha256sum *").stdout == sums_before
        assert listed() == [f"{kept}/manifest.json"]  # no partial left, the good one kept
        last = json.loads((host.root / LAST_RESULT.lstrip("/")).read_text())
        assert last["result"] == "failed"
    finally:
        host.ssh(f"umount {small}; rm -f {'/home/django/data/big.bin'}", check=False)
        mountpoint = host.ssh("docker volume inspect -f '{{.Mountpoint}}' cvat_cvat_data").stdout.strip()
        host.ssh(f"find {mountpoint} -name big.bin -delete", check=False)


def test_the_timer_fires_and_leaves_a_good_backup(host, mirror, first_backup):
    converged = run(host, mirror, "deploy.py", backup_schedule="*-*-* 03:00:00")
    assert "labforge-backup.timer" in host.ssh("systemctl list-timers --all --no-legend").stdout
    before = complete_backups(host)
    host.ssh("systemctl start labforge-backup.service", timeout=300)
    after = complete_backups(host)
    assert len(set(after) - set(before)) == 1, (before, after)
    last = json.loads((host.root / LAST_RESULT.lstrip("/")).read_text())
    assert last["result"] == "ok" and last["name"] in after
    again = run(host, mirror, "deploy.py", backup_schedule="*-*-* 03:00:00")
    assert again.totals.changed == 0, again.totals.changed_ops
    print(f"converge with the timer: changed={converged.totals.changed}; again: changed=0; timer backup {last['name']}")


def test_retention_keeps_exactly_backup_keep(host, mirror, first_backup):
    for _ in range(4):
        run(host, mirror, "backup.py")
        time.sleep(1.1)  # names are per second
    assert len(complete_backups(host)) == 3
