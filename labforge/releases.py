"""Which CVAT release a host runs when its admin has not said (cvat_version unset), and what a release lacks.

A new lab starts on the newest row of cvat_stack_compat; a lab that runs CVAT already stays on the release its
checkout is at, since moving it is an upgrade (a backup, CVAT down while its migrations run) that only its admin
decides, by setting cvat_version. Whatever the release, the run summary names the security fixes CVAT shipped after
it (cvat_security_fixes, read from CHANGELOG.md at v2.73.0, commit 7972cb4f2) and says how to upgrade.

Decided from settings and one fact (the tags at the checkout's HEAD, labforge.facts.GitTagsAtHead), so that every
branch is tested without a host; the preflight layer (labforge/cvat_release.py settle_release) reads the fact and
stores the answer in the host's data before any layer reads cvat_version.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from labforge import compat

UPGRADE_DOC = "docs/backups-and-upgrades.md"
FIXES_DOC = "what each fixes: docs/compatibility.md"


class ReleaseUnknown(ValueError):
    """cvat_version is unset and the host's checkout is not at a release labforge can name; one actionable line."""


@dataclass(frozen=True)
class Fix:
    """A security fix CVAT shipped: the release that has it, its advisory (GHSA) or pull request, and what it fixed."""
    release: str
    ref: str
    what: str


def newest(table: Mapping[str, object]) -> str:
    """The newest release of cvat_stack_compat: where a new lab starts."""
    if not table:
        raise ReleaseUnknown("cvat_stack_compat is empty: list at least one CVAT release in group_data/all.py")
    return max(table, key=compat.release)


def resolve(setting: str | None, tags: list[str] | None, table: Mapping[str, object], cvat_dir: str) -> str:
    """The release a host runs: the setting when an admin gave one; else the release at its checkout's HEAD (``tags``:
    the tags there, None with no checkout); else, for a host without CVAT, the newest row. A checkout at no release of
    the table is refused rather than guessed (moving it would be an upgrade or a downgrade nobody asked for)."""
    if setting:
        return setting
    if tags is None:
        return newest(table)
    listed = sorted((tag for tag in tags if tag in table), key=compat.release)
    if listed:
        return listed[-1]
    at = ", ".join(tags) if tags else "a commit with no release tag"
    raise ReleaseUnknown(f"cvat_version is unset and the CVAT checkout {cvat_dir} is at {at}, not a release of "
                         f"cvat_stack_compat ({', '.join(sorted(table, key=compat.release))}); set cvat_version to the "
                         "release this lab runs")


def fixes(entries: Iterable) -> list[Fix]:
    """cvat_security_fixes as Fix rows; a malformed entry is refused (each is [release, advisory, what])."""
    rows = []
    for entry in entries or ():
        if len(entry) != 3 or not all(isinstance(part, str) and part for part in entry):
            raise ReleaseUnknown(f"cvat_security_fixes entry {entry!r} is not [release, advisory or pull request, what]")
        rows.append(Fix(*entry))
    return rows


def missing(release: str, entries: Iterable) -> list[Fix]:
    """The fixes of releases newer than ``release``, oldest first."""
    mine = compat.release(release)
    return sorted((fix for fix in fixes(entries) if compat.release(fix.release) > mine),
                  key=lambda fix: compat.release(fix.release))


def lag_notice(release: str, table: Mapping[str, object], entries: Iterable, chosen: bool) -> str | None:
    """One line for the run summary of a host on an older release than the table's newest: what it lacks and how to
    upgrade. ``chosen``: the admin set cvat_version (else the host stayed where its checkout is)."""
    target = newest(table)
    if compat.release(release) >= compat.release(target):
        return None
    lacking = [fix for fix in missing(release, entries) if compat.release(fix.release) <= compat.release(target)]
    why = "set in cvat_version" if chosen else "its checkout's release; cvat_version is unset"
    by_release: dict[str, list[str]] = {}
    for fix in lacking:
        by_release.setdefault(fix.release, []).append(fix.ref)
    listed = "; ".join(f"{tag}: {', '.join(refs)}" for tag, refs in by_release.items())
    lacks = f"lacks {len(lacking)} security fixes CVAT shipped up to {target} ({listed}; {FIXES_DOC})" if lacking \
        else f"is older than {target}"
    return (f"CVAT {release} ({why}) {lacks}; to upgrade, set cvat_version: {target} and converge (a backup is taken "
            f"first and restored if the upgrade fails: {UPGRADE_DOC})")
