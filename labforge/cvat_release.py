"""Which CVAT release a host is at and moves to: the release this run settles on when cvat_version is unset
(settle_release, run by the preflight layer before any layer reads it), and for the CVAT layer (tasks/cvat.py) the
pinned checkout, the move decided while planning (labforge/upgrades.py plan, refused there), and the switch run by
`labforge-data upgrade` in its own unit under the data lock (docs/backups-and-upgrades.md)."""

from __future__ import annotations

from pyinfra import host, state
from pyinfra.facts.files import Directory, FileContents
from pyinfra.operations import python, server

from labforge import backups, compat, releases, report, split, upgrades
from labforge.data_program import read_upgrade_journal
from labforge.facts import BackupList, GitTagsAtHead
from labforge.report import Refused


def checkout(cvat_dir: str, version: str, tags: list[str] | None, checks: str) -> None:
    """Move to the pinned tag (HEAD is not there: `tags` are HEAD's, None without a checkout); run `checks`
    on the tag's files before HEAD moves. A fresh clone that fails them is removed again and an existing
    checkout stays where it was, so a mismatched CVAT release never ends up half-installed.
    """
    url = host.data.get("cvat_repo_url")
    switch = f"git -C {cvat_dir} checkout --quiet --detach {version}"
    if tags is None:
        if host.get_fact(Directory, path=cvat_dir):
            raise Refused(f"{cvat_dir} exists but is not a git checkout; move it away or set "
                              "cvat_dir")
        command = (f"git clone --quiet --depth 1 --branch {version} --no-checkout {url} {cvat_dir} && "
                   f"{{ {checks} || {{ rm -rf {cvat_dir}; exit 1; }}; }} && {switch}")
    else:
        command = f"git -C {cvat_dir} fetch --quiet --depth 1 origin tag {version} && {{ {checks}; }} && {switch}"
    server.shell(name=f"CVAT {version} checkout (dashboard/nuctl and services checked first)", commands=[command])


def manage_py(version: str) -> str:
    return compat.manage_py(host.data, version)


def journal() -> dict | None:
    """The journal an unfinished upgrade left, or None."""
    lines = host.get_fact(FileContents, path=upgrades.STATE)
    return None if lines is None else read_upgrade_journal("\n".join(lines))


def release_move(cvat_dir: str, version: str, tags: list[str] | None) -> upgrades.Move:
    """From which release to which this converge moves the host; an unfinished upgrade counts as at its old release
    until the new one was verified (the script rolls it back first)."""
    current = compat.release_at_head(tags, host.data.get("cvat_stack_compat") or {})
    if not host.data.get("cvat_start"):  # CVAT's files only: labforge runs no stack here, so the checkout just moves
        return upgrades.Move(current, version)
    unfinished = journal()
    if unfinished:
        current = unfinished.get("to") if unfinished.get("phase") == "verified" else unfinished.get("from")
        report.notice(f"an upgrade {unfinished.get('from')} -> {unfinished.get('to')} did not finish (phase "
                      f"{unfinished.get('phase')}): this run finishes or rolls it back first")
    needs_backups = host.data.get("restore_backup") and current and compat.release(version) < compat.release(current)
    complete = host.get_fact(BackupList, program=backups.DATA_PROGRAM) if needs_backups else {}
    try:
        return upgrades.plan(host.data, current, complete, interrupted=bool(unfinished))
    except (upgrades.UpgradeRefused, compat.Incompatible) as exc:
        raise Refused(str(exc)) from exc


def switch_release(move: upgrades.Move) -> None:
    """Run `labforge-data upgrade` in its own systemd unit and wait for it; one that a killed run left is waited for
    first. The script's last line says what happened; on failure it is the run's error."""
    args = " ".join([move.wanted, compat.nuctl_version(host.data), *([move.restore] if move.restore else [])])
    what = (f"CVAT {move.current} -> {move.wanted}" if move.is_switch else f"CVAT: finish the unfinished upgrade to {move.wanted}")
    # labforge-data holds the data lock for the script: no backup or restore runs meanwhile, the timer's included
    done = server.shell(name=f"{what} (backup first, rollback on failure)", commands=[backups.in_unit(
        upgrades.UNIT, f"{backups.DATA_PROGRAM} --wait {backups.CONVERGE_LOCK_WAIT} upgrade {args}", upgrades.LOG)])
    python.call(name="Say what the upgrade did", function=_say_upgraded, op=done)


def _say_upgraded(op) -> None:
    line = next((line for line in reversed(op.stdout_lines) if line.startswith(("upgraded=", "at="))), "")
    if line.startswith("upgraded="):
        report.notice(upgrades.summary(line))


def settle_release() -> None:
    """cvat_version for this run: the setting, else the release of the CVAT checkout (on a split lab's inference host:
    its CVAT host's), else the newest row; stored in the host's data so that every layer reads the same. A host on an
    older release than the table's newest gets one notice naming the security fixes it lacks."""
    data = host.data
    table = data.get("cvat_stack_compat") or {}
    setting = data.get("cvat_version")
    holder = host
    if not setting and split.role(data) == "inference" and data.get("inference_for"):
        holder = state.inventory.get_host(data.get("inference_for"))  # its CVAT host's checkout decides
    try:
        release = setting or releases.resolve(None, holder.get_fact(GitTagsAtHead, path=holder.data.get("cvat_dir")),
                                               table, f"{holder.name}:{holder.data.get('cvat_dir')}")
        notice = releases.lag_notice(release, table, data.get("cvat_security_fixes"), chosen=bool(setting)) \
            if release in table else None  # a release outside the table is refused by compat.check, next
    except releases.ReleaseUnknown as exc:
        raise Refused(str(exc)) from exc
    data.cvat_version = release
    if notice:
        report.notice(notice)
