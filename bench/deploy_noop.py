#!/usr/bin/env python3
"""Benchmark: how long a no-op re-run takes on converged lab hosts, for 1 host and for 4 in parallel.

Boots 4 test-lab hosts (systemd-nspawn, testlab/), converges them once, then times REPEATS no-op
runs against 1 host and against all 4. Needs root and the lab's tools (docs/testing.md, "The local test lab").
Usage: .venv/bin/python -m bench.deploy_noop [--repeats 5]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
from pathlib import Path

from testlab import labhosts, runner

BENCH_DIR = labhosts.LAB_DIR / "bench"


def machine() -> str:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return f"{cpu}, {os.cpu_count()} cores, {mem_gb:.0f} GiB RAM, Python {platform.python_version()}"


def timed_noops(hosts_yml: Path, repeats: int) -> tuple[list[float], int]:
    walls, ops = [], 0
    for _ in range(repeats):
        run = runner.deploy(hosts_yml)
        result = run.totals
        if run.returncode or result.changed or result.errors:
            raise SystemExit(f"not a no-op run: rc={run.returncode} {result} {run.stderr[-1500:]}")
        walls.append(run.seconds)
        ops = result.operations
    return walls, ops


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    labhosts.require_tools()
    BENCH_DIR.mkdir(parents=True, exist_ok=True)
    mirror = labhosts.Mirror.start(BENCH_DIR)
    hosts = [labhosts.LabHost(f"bench{i + 1}", f"127.0.0.{22 + i}", lab_dir=str(BENCH_DIR)) for i in range(4)]
    try:
        for h in hosts:
            h.create()
            h.boot()
        one = labhosts.hosts_file(hosts[:1], mirror, BENCH_DIR / "one.yml")
        four = labhosts.hosts_file(hosts, mirror, BENCH_DIR / "four.yml")
        first = runner.deploy(four)
        if first.returncode or first.totals.errors:
            raise SystemExit(f"first converge failed: {first.stderr[-2000:]}")
        one_walls, one_ops = timed_noops(one, args.repeats)
        four_walls, four_ops = timed_noops(four, args.repeats)
    finally:
        for h in hosts:
            h.destroy()
        mirror.stop()
    one_med, four_med = statistics.median(one_walls), statistics.median(four_walls)
    print(f"machine: {machine()}")
    print(f"first converge, 4 fresh hosts in parallel: {first.seconds:.1f} s, {first.totals.operations} ops, "
          f"{first.totals.changed} changed")
    print(f"{'no-op re-run':<24}{'ops':>6}{'median s':>10}{'min s':>8}{'max s':>8}  (n={args.repeats}, changed=0, errors=0)")
    for label, ops, walls in (("1 host", one_ops, one_walls), ("4 hosts in parallel", four_ops, four_walls)):
        print(f"{label:<24}{ops:>6}{statistics.median(walls):>10.2f}{min(walls):>8.2f}{max(walls):>8.2f}")
    print(f"4 hosts / 1 host wall ratio: {four_med / one_med:.2f}x (goal <= 1.5x); no-op goal < 15 s: "
          f"{'met' if max(one_med, four_med) < 15 else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
