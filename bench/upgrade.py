#!/usr/bin/env python3
"""Benchmark: upgrading a lab host from CVAT v2.51.0 to v2.73.0 in one converge, and a failed upgrade rolled back,
with N annotation rows in the real PostgreSQL and M MiB of media: converge wall time, CVAT's downtime, backup size.

Boots one test-lab host (systemd-nspawn, testlab/), converges it at v2.51.0 with the stack (stand-in images of both
releases, Debian's PostgreSQL 15 in cvat_db), writes the data through the stand-in server, then: a converge at
v2.73.0 that fails on a task whose mode v2.73.0's stand-in migration refuses (and rolls back), the data fixed, and
the converge that upgrades. Needs root and the lab's tools (docs/testing.md).
Usage: .venv/bin/python -m bench.upgrade [--rows 100000] [--media-mib 256]
"""

from __future__ import annotations

import argparse
import re
import sys

from bench.backup import PASSWORD
from bench.backup import api as backup_api
from bench.deploy_noop import machine
from testlab import labhosts, runner
from testlab.standins import cvat

BENCH_DIR = labhosts.LAB_DIR / "bench-upgrade"
NAME = "bench-upgrade.lab"  # the lab host's cvat_host (testlab/labhosts.py hosts_file)
OLD, NEW = "v2.51.0", "v2.73.0"


def api(host, method: str, path: str, body: dict | None = None) -> dict:
    return backup_api(host, method, path, body, name=NAME)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=100_000)
    parser.add_argument("--media-mib", type=int, default=256)
    args = parser.parse_args()
    labhosts.require_tools()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    mirror = labhosts.Mirror.start(BENCH_DIR)
    host = labhosts.LabHost("bench-upgrade", "127.0.0.43", lab_dir=str(BENCH_DIR), ports=mirror.ports)

    def hosts(version: str):
        return labhosts.hosts_file([host], mirror, BENCH_DIR / f"{version}.yml", group="cpu_servers", cvat_start=True,
                                   cvat_version=version)

    try:
        host.create()
        host.boot()
        first = runner.deploy(labhosts.hosts_file([host], mirror, BENCH_DIR / "files.yml", group="cpu_servers"))
        assert first.returncode == 0, first.stderr[-2000:]
        cvat.load_images(host, labhosts.base_tarball(), releases=(NEW,))
        at_old = runner.deploy(hosts(OLD), env=PASSWORD, timeout=3600)
        assert at_old.returncode == 0, at_old.stderr[-2000:]
        host.ssh(f"until curl -fsS -o /dev/null -H 'Host: {NAME}' http://127.0.0.1:8080/api/labforge-standin/annotations; "
                 "do sleep 2; done", timeout=300)
        api(host, "POST", "/api/labforge-standin/annotations", {"count": args.rows})
        api(host, "POST", "/api/labforge-standin/media", {"name": "video_000.bin", "bytes": args.media_mib * 2**20})
        before = api(host, "GET", "/api/labforge-standin/annotations")
        host.ssh("docker exec cvat_db psql -U root -d cvat -c \"INSERT INTO engine_task (name, mode) VALUES ('old', 'legacy')\"")
        failed = runner.deploy(hosts(NEW), env=PASSWORD, timeout=3600)
        line = next((x for x in reversed(failed.stderr.splitlines()) if "labforge-upgrade: " in x), "")
        rolled_back = api(host, "GET", "/api/labforge-standin/annotations")
        host.ssh("docker exec cvat_db psql -U root -d cvat -c \"UPDATE engine_task SET mode = 'annotation' WHERE mode = 'legacy'\"")
        upgraded = runner.deploy(hosts(NEW), env=PASSWORD, timeout=3600)
        assert upgraded.returncode == 0, upgraded.stderr[-2000:]
        after = api(host, "GET", "/api/labforge-standin/annotations")
        about = api(host, "GET", "/api/server/about")["version"]
        summary = next((x for x in upgraded.summary_lines() if f"{OLD} -> {NEW}" in x), "")
    finally:
        host.destroy()
        mirror.stop()
    down = re.search(r"CVAT was down (\d+) s", summary)
    print(f"machine: {machine()}")
    print(f"data: {before['rows']} annotation rows in PostgreSQL 15 (Debian's), {args.media_mib} MiB of media")
    same = "equal" if rolled_back["checksum"] == before["checksum"] else "DIFFERENT"
    print(f"failed upgrade (a migration refuses a task): rc={failed.returncode}, {failed.seconds:.1f} s wall; "
          f"rows after the rollback {rolled_back['rows']} (checksum {same})")
    print(f"  {line.strip()}")
    print(f"upgrade {OLD} -> {NEW}: {upgraded.seconds:.1f} s wall for the whole converge (functions redeployed), "
          f"CVAT down {down.group(1) if down else '?'} s; /api/server/about {about}")
    print(f"  {summary.strip()}")
    print(f"rows after the upgrade: {after['rows']} (checksum {'equal' if after['checksum'] == before['checksum'] else 'DIFFERENT'})")
    return 0 if failed.returncode and after["checksum"] == before["checksum"] == rolled_back["checksum"] else 1


if __name__ == "__main__":
    sys.exit(main())
