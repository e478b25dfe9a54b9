"""Restore (`pyinfra inventory.py restore.py [--data restore_backup=NAME]`): the newest good backup, or the one
named, back into CVAT's volumes. Everything that can refuse does so while planning, before anything stops: an
incomplete backup, one whose archives do not match its manifest, one of another CVAT release. The host's restore
script backs up the current data first, so nothing is removed without a good backup taken in the same run.
"""

from __future__ import annotations

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import python, server

from labforge import backups, compat, report, split
from labforge.backups import RESTORE_SCRIPT, BackupProblem
from labforge.facts import BackupChecksums, Backups, GitTagsAtHead
from labforge.report import Refused
from tasks.backups import install_scripts, settings


@deploy("Restore")
def restore_now() -> None:
    if split.role(host.data) == "inference":
        raise Refused("an inference host holds no CVAT data (only functions, rebuilt by a converge): restore its CVAT host")
    directory, _ = settings()
    complete, partial = host.get_fact(Backups, directory=directory)
    tag = compat.release_at_head(host.get_fact(GitTagsAtHead, path=host.data.get("cvat_dir")))
    try:
        name, manifest = backups.choose(complete, partial, host.data.get("restore_backup"), tag, directory)
        bad = backups.mismatches(manifest, host.get_fact(BackupChecksums, directory=directory, backup=name))
        if bad:
            raise BackupProblem(f"backup {name} does not match its manifest: {', '.join(bad)}; it is not restored")
    except BackupProblem as exc:
        raise Refused(str(exc)) from exc
    install_scripts()
    done = server.shell(name=f"Restore backup {name} (CVAT {manifest['cvat_tag']}, taken {manifest.get('created')})",
                        commands=[f"{RESTORE_SCRIPT} {name}"])
    python.call(name="Say what was restored", function=_summarise, op=done)


def _summarise(op) -> None:
    name, safety, down = backups.parse_result(op.stdout_lines, backups.RESTORED)
    report.notice(f"restored backup {name} (the data before it is backup {safety}); CVAT was down {down} s")
