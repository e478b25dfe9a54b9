"""Restore (`pyinfra inventory.py restore.py [--data restore_backup=NAME]`): the newest backup, or the one named,
back into CVAT's volumes, by labforge-data on the host (labforge/data_program.py) in its own systemd unit. It refuses
before anything stops (a missing backup, one of another CVAT release, not enough room to unpack it), backs up the
current data first, unpacks beside the volumes while CVAT still runs, and swaps them in by renames; a restore that
does not come up puts the data from before it back by itself. A killed one is finished or undone by the next run.
"""

from __future__ import annotations

import shlex

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.operations import python, server

from labforge import backups, report, split
from labforge.backups import DATA_PROGRAM
from labforge.data_host import install_program
from labforge.report import Refused


@deploy("Restore")
def restore_now() -> None:
    if split.role(host.data) == "inference":
        raise Refused("an inference host holds no CVAT data (only functions, rebuilt by a converge): restore its CVAT host")
    wanted = host.data.get("restore_backup")
    if wanted is not None and not str(wanted).replace("-", "").replace(".", "").replace("_", "").isalnum():
        raise Refused(f"restore_backup must be a backup's name (letters, digits, '.', '_', '-'), not {wanted!r}")
    install_program()
    argument = f" {shlex.quote(str(wanted))}" if wanted else ""
    done = server.shell(name=f"Restore {wanted or 'the newest backup'} (labforge-data restore: safety backup first)",
                        commands=[backups.in_unit(backups.UNIT_RESTORE, f"{DATA_PROGRAM} --wait {backups.CONVERGE_LOCK_WAIT} "
                                                  f"restore{argument}", "/var/lib/labforge/restore.log")])
    python.call(name="Say what was restored", function=_summarise, op=done)


def _summarise(op) -> None:
    name, safety, down = backups.parse_result(op.stdout_lines, backups.RESTORED)
    report.notice(f"restored backup {name} (the data before it is backup {safety}); CVAT was down {down} s")
