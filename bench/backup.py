#!/usr/bin/env python3
"""Benchmark: backup.py and restore.py on a lab host whose real PostgreSQL holds N annotation rows and whose
cvat_data volume holds M MiB of media: a first backup, a second one of unchanged data (restic's incremental pass), a
restore; wall time, CVAT's down time, the repository's size on disk.

Boots one test-lab host (systemd-nspawn, testlab/), converges it with the stack (stand-in images, Debian's
PostgreSQL 15 in cvat_db), writes the data through the stand-in server, then runs the real backup.py and
restore.py. Needs root and the lab's tools (docs/testing.md).
Usage: .venv/bin/python -m bench.backup [--rows 100000] [--media-mib 1024]   (the issue's sizes: 1024 and 4096)
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time

from bench.deploy_noop import machine
from labforge.backups import human
from testlab import labhosts, runner
from testlab.standins import cvat

BENCH_DIR = labhosts.LAB_DIR / "bench-backup"
PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-bench"}
NAME = "bench-backup.lab"


def api(host, method: str, path: str, body: dict | None = None, timeout: float = 900, name: str = NAME) -> dict:
    """The stand-in server's endpoints through traefik, under CVAT's name ``name`` (the lab host's cvat_host)."""
    data = f"-d '{json.dumps(body)}' -H 'Content-Type: application/json'" if body is not None else ""
    out = host.ssh(f"curl -fsS --max-time {int(timeout)} -X {method} {data} -H 'Host: {name}' http://127.0.0.1:8080{path}",
                   timeout=timeout + 10).stdout
    return json.loads(out) if out.strip() else {}


def run(host_file, script: str, **kw) -> runner.DeployRun:
    result = runner.deploy(host_file, env=PASSWORD, script=script, timeout=3600, **kw)
    if result.returncode:
        raise SystemExit(f"{script} failed: {result.stderr[-2000:]}")
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--media-mib", type=int, default=1024)
    args = parser.parse_args()
    labhosts.require_tools()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    mirror = labhosts.Mirror.start(BENCH_DIR)
    host = labhosts.LabHost("bench-backup", "127.0.0.40", lab_dir=str(BENCH_DIR), ports=mirror.ports)
    try:
        host.create()
        host.boot()
        files_only = labhosts.hosts_file([host], mirror, BENCH_DIR / "files.yml", group="cpu_servers")
        run(files_only, "deploy.py")
        cvat.load_images(host, labhosts.base_tarball())
        hosts_yml = labhosts.hosts_file([host], mirror, BENCH_DIR / "stack.yml", group="cpu_servers", cvat_start=True)
        run(hosts_yml, "deploy.py")
        host.ssh(f"until curl -fsS -o /dev/null -H 'Host: {NAME}' http://127.0.0.1:8080/api/labforge-standin/annotations; "
                 "do sleep 2; done", timeout=300)
        api(host, "POST", "/api/labforge-standin/annotations", {"count": args.rows})
        for i in range(max(1, args.media_mib // 256)):
            api(host, "POST", "/api/labforge-standin/media", {"name": f"video_{i:03d}.bin",
                                                             "bytes": min(256, args.media_mib - 256 * i) * 2**20})
        before = api(host, "GET", "/api/labforge-standin/annotations")
        last = host.root / "var/lib/labforge/backup-last.json"
        taken = run(hosts_yml, "backup.py")
        first_program = json.loads(last.read_text())["seconds"]
        again = run(hosts_yml, "backup.py")
        second_program = json.loads(last.read_text())["seconds"]
        size = int(host.ssh("du -sb /var/backups/labforge/repository | cut -f1").stdout)
        media = int(host.ssh("du -sb $(docker volume inspect -f '{{.Mountpoint}}' cvat_cvat_data) | cut -f1").stdout)
        host.ssh("docker exec cvat_db psql -U root -d cvat -c 'DELETE FROM engine_labeledshape'")
        started = time.monotonic()
        restored = run(hosts_yml, "restore.py")
        host.ssh(f"until curl -fsS -o /dev/null -H 'Host: {NAME}' http://127.0.0.1:8080/api/labforge-standin/annotations; "
                 "do sleep 2; done", timeout=300)
        restore_wall = time.monotonic() - started
        after = api(host, "GET", "/api/labforge-standin/annotations")
    finally:
        host.destroy()
        mirror.stop()

    def said(run_: runner.DeployRun) -> tuple[float, str, str]:
        match = re.search(r"backup (cvat-\S+) in \S+: (.+) read, (.+) new in the repository; CVAT was down ([0-9.]+) s", run_.stderr)
        return float(match.group(4)), match.group(2), match.group(3)

    first, second = said(taken), said(again)
    restore_down = re.search(r"CVAT was down ([0-9.]+) s", restored.stderr.split("restored backup", 1)[1]).group(1)
    print(f"machine: {machine()}")
    print(f"data: {before['rows']} annotation rows in PostgreSQL 15 (Debian's), {args.media_mib} MiB of media "
          f"(cvat_data {human(media)})")
    print(f"first backup.py: {taken.seconds:.1f} s wall, labforge-data {first_program} s, CVAT down {first[0]} s; {first[1]} read, "
          f"{first[2]} new")
    print(f"second backup.py (nothing changed): {again.seconds:.1f} s wall, labforge-data {second_program} s "
          f"({100 * second_program / first_program:.0f}% of the first), CVAT down {second[0]} s; {second[2]} new")
    print(f"repository on disk: {human(size)}")
    print(f"restore.py: {restored.seconds:.1f} s wall (a safety backup first; {restore_wall:.1f} s until the API answered), "
          f"CVAT down {restore_down} s")
    print(f"rows after the restore: {after['rows']} (checksum {'equal' if after == before else 'DIFFERENT'})")
    return 0 if after == before else 1


if __name__ == "__main__":
    sys.exit(main())
