"""Read `pyinfra -y --json` output and judge a run: the idempotency check shared by the lab tests and CI.

A converge is idempotent when its second run has zero changed (`success`) operations and zero
errors. Usage: `pyinfra -y --json inventory.py deploy.py > run.json; python -m labforge.tools.totals run.json --no-change`
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class RunTotals:
    changed: int
    unchanged: int
    errors: int
    failed_hosts: list[str]
    changed_ops: list[str]

    @property
    def operations(self) -> int:
        return self.changed + self.unchanged + self.errors


def document(text: str) -> dict:
    """pyinfra's one-line JSON document ({"plan": ..., "results": ...}), the last one in text."""
    start = text.rfind('\n{"plan"')
    start = start + 1 if start >= 0 else text.find('{"plan"')
    if start < 0:
        raise ValueError("no pyinfra --json document found in the output")
    return json.loads(text[start:].strip().splitlines()[0])


def parse(text: str) -> RunTotals:
    """Totals from pyinfra's JSON document."""
    results = document(text).get("results")
    if results is None:
        raise ValueError("the JSON document has no results (was this a --dry run?)")
    totals = results["totals"]
    changed_ops = [f"{op['name']} on {', '.join(op['success'])}" for op in results["operations"] if op["success"]]
    return RunTotals(totals["success"], totals["no_change"], totals["error"], list(results["failed_hosts"]), changed_ops)


def problems(totals: RunTotals, expect_no_change: bool) -> list[str]:
    found = []
    if totals.errors or totals.failed_hosts:
        found.append(f"{totals.errors} operation errors; failed hosts: {', '.join(totals.failed_hosts) or 'none'}")
    if expect_no_change and totals.changed:
        found.append(f"{totals.changed} operations changed on a run that should change nothing: "
                     + "; ".join(totals.changed_ops))
    return found


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("json_file", type=Path, help="stdout of `pyinfra -y --json ...` ('-' for stdin)")
    parser.add_argument("--no-change", action="store_true", help="fail if any operation changed (idempotency)")
    args = parser.parse_args(argv)
    text = sys.stdin.read() if str(args.json_file) == "-" else args.json_file.read_text()
    try:
        totals = parse(text)
    except (ValueError, KeyError, json.JSONDecodeError) as exc:
        print(f"labforge.tools.totals: cannot read pyinfra results: {exc}", file=sys.stderr)
        return 2
    print(f"operations={totals.operations} changed={totals.changed} no_change={totals.unchanged} errors={totals.errors}")
    found = problems(totals, args.no_change)
    for line in found:
        print(f"FAIL: {line}", file=sys.stderr)
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
