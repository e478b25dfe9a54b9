"""Moving a lab from one CVAT release to another: what a converge with a new cvat_version must do, decided while
planning, and the settings of the move that labforge-data (labforge/data_program.py, Mover) makes on the host.

CVAT's upgrade guide (site/content/en/docs/administration/community/advanced/upgrade_guide.md at v2.73.0, commit
7972cb4f2): back up, `docker compose down` with every -f file, replace the source tree, `docker compose up -d`, and
wait: "When CVAT starts, it will upgrade its DB in accordance with the latest schema ... do not terminate the
migration". The migrations run in cvat_server's `init` before `run server` (docker-compose.yml `command: init run
server` at dfd505e7, `init run server nginx` at 7972cb4f2; backend_entrypoint.sh `cmd_init`: `manage.py migrate` at
dfd505e7, `django-admin migrate` at 7972cb4f2, under `set -eu`), so the API answers only once they are applied and a
failed one ends the container, which `restart: always` restarts (its RestartCount grows). The script then asks
Django itself: `manage.py migrate --check` exits non-zero while any migration is unapplied (Django's migrate docs).

The guide's release steps between the rows of cvat_stack_compat (v2.51.0 -> v2.73.0): only "Upgrade to v2.72.0 or
later" applies (the v2.47.0 FFmpeg note and the v2.26.0 export cache clean-up are older than v2.51.0). It moves the
source to /opt/cvat and tells deployments that bind-mount into the source tree to move their mounts; the data
directories stay under /home/django. labforge mounts only its share (/home/django/share, a data directory), and
calls manage.py at the row's path.
"""

from __future__ import annotations

from dataclasses import dataclass

from labforge import compat, compose, nuclio_functions, nuctl, split
from labforge.data_program import UPGRADE_STEPS

OLD_SCRIPT = "/usr/local/lib/labforge/cvat-upgrade"  # labforge's earlier shell upgrade script: removed by the converge
STATE = "/var/lib/labforge/cvat-upgrade.state"  # the journal of a run in progress (or killed), JSON: root only
LOG = "/var/lib/labforge/cvat-upgrade.log"
PREVIEW_DIR = "/var/lib/labforge/cvat-upgrade-preview"  # the new release checked out beside, to read its compose files
UNIT = "labforge-cvat-upgrade"  # the transient systemd unit the upgrade runs in, so that a dropped SSH session
# (or a killed pyinfra) does not stop it half-way


class UpgradeRefused(ValueError):
    """A cvat_version change the converge will not make; one actionable line."""


@dataclass(frozen=True)
class Move:
    """What the converge does to the release on the host: from (None: no checkout yet) -> to."""
    current: str | None
    wanted: str
    restore: str | None = None  # the backup a downgrade restores
    unfinished: bool = False  # a journal of an upgrade that did not finish is on the host

    @property
    def is_switch(self) -> bool:
        return self.current is not None and self.current != self.wanted

    @property
    def is_downgrade(self) -> bool:
        return self.is_switch and compat.release(self.wanted) < compat.release(self.current or "")


def plan(data, current: str | None, backups: dict[str, dict], interrupted: bool = False) -> Move:
    """Decide the move while planning. A release outside the table is refused by compat already; an upgrade is
    allowed only to a newer row; a downgrade only with restore_backup naming a complete backup taken at the older
    release (its data), since a newer CVAT's migrations cannot be run backwards."""
    wanted = data.get("cvat_version")
    move = Move(current, wanted, data.get("restore_backup") or None, interrupted)
    if not move.is_switch:
        return Move(current, wanted, None, interrupted)
    if current not in (data.get("cvat_stack_compat") or {}):  # its manage.py and steps must be known too
        raise UpgradeRefused(f"this host runs CVAT {current}, which is not in cvat_stack_compat (listed: "
                             f"{', '.join(data.get('cvat_stack_compat') or {})}); labforge moves a lab only between the "
                             "releases of its table")
    if not move.is_downgrade:
        return Move(current, wanted, None, interrupted)
    if not move.restore:
        raise UpgradeRefused(f"cvat_version {wanted} is older than the {current} this host's data is at; a downgrade "
                             f"needs a backup taken at {wanted}: --data restore_backup=NAME (list them on the host: sudo "
                             "/usr/local/lib/labforge/labforge-data list)")
    manifest = backups.get(move.restore)
    if manifest is None:
        raise UpgradeRefused(f"restore_backup={move.restore} is not a backup in the repository (list them on the host: "
                             "sudo /usr/local/lib/labforge/labforge-data list)")
    if manifest.get("cvat_tag") != wanted:
        raise UpgradeRefused(f"backup {move.restore} was taken at CVAT {manifest.get('cvat_tag')}, not {wanted}; a "
                             f"downgrade to {wanted} restores a backup of {wanted}")
    return move


def row_steps(data, tag: str) -> list[str]:
    """The upgrade guide's steps for moving up to the row ``tag`` (its upgrade_steps), each one labforge-data checks
    once the new stack answers (a failing one rolls the upgrade back)."""
    row = (data.get("cvat_stack_compat") or {}).get(tag) or {}
    steps = list(row.get("upgrade_steps") or ())
    for name in steps:
        if name not in UPGRADE_STEPS:
            raise UpgradeRefused(f"cvat_stack_compat[{tag!r}] names the upgrade step {name!r}, which labforge does not "
                                 f"know (known: {', '.join(UPGRADE_STEPS)})")
    return steps


def rebuilt_functions(data, tag: str, on_gpu: bool) -> list[dict]:
    """The functions the converge redeploys on this host once CVAT is at ``tag``, as labforge-data's upgrade reads
    them to check their build inputs first: CVAT's by the tag of the tree they are built from (cvat_function_sources)
    with the Dockerfiles the deploy builds before nuctl, ours from where the functions layer puts them. A split lab's
    CVAT host deploys none (its inference host does)."""
    if not data.get("cvat_start") or split.role(data) != "all":
        return []
    found = []
    for path in sorted(data.get("nuclio_functions") or []):  # sorted: data.json does not change with the list's order
        fn = nuclio_functions.source(path, data.get("cvat_dir"), tag, on_gpu, source_tags=data.get("cvat_function_sources") or {})
        if fn.is_local:
            found.append({"path": path, "dir": fn.yaml_dir, "gpu": on_gpu})
        else:
            built = nuclio_functions.built_images(path)
            found.append({"path": path, "tag": fn.source_tag, "gpu": on_gpu, "built": list(built),
                          "dockerfiles": list(built.values())})
    return found


def program_settings(data, on_gpu: bool = False, arch: str = "amd64") -> dict:
    """What labforge-data's upgrade reads (the config's "upgrade"): the same for every move, since every row's
    manage.py, nuctl, steps and functions are in it, so that it changes only when labforge, the table or the
    functions do. ``on_gpu``: the functions run on the GPU here; ``arch``: the host's Debian architecture."""
    table = data.get("cvat_stack_compat") or {}
    rows = sorted(table, key=compat.release)
    return {"functions": {tag: rebuilt_functions(data, tag, on_gpu) for tag in rows},
            "onbuild": {tag: nuclio_functions.onbuild_images(table[tag].get("nuctl", ""), arch) for tag in rows},
            "inputs_program": ["/usr/bin/python3", nuclio_functions.INPUTS_PROGRAM],
            "check_build_downloads": bool(data.get("cvat_upgrade_check_build_downloads", True)),
            "state": STATE, "preview_dir": PREVIEW_DIR, "override": compose.OVERRIDE, "network": compose.NETWORK,
            "timeout": int(data.get("cvat_upgrade_timeout")), "rows": rows,
            "manage_py": {tag: compat.manage_py(data, tag) for tag in rows},
            "nuctl": {tag: table[tag].get("nuctl", "") for tag in rows}, "nuctl_path": nuctl.NUCTL,
            "kept_nuctl_dir": nuctl.KEPT_DIR, "steps": {tag: row_steps(data, tag) for tag in rows},
            "guard_image_variable": compose.GUARD_IMAGE_VARIABLE}


def summary(line: str) -> str:
    """The upgrade's result line (labforge-data upgrade), as the run summary says it."""
    fields = dict(part.split("=", 1) for part in line.split() if "=" in part)
    if "upgraded" in fields and "kept" in fields:
        return (f"CVAT {fields.get('from')} -> {fields.get('upgraded')}: the interrupted upgrade's new release had started and "
                f"came up whole, so it was kept with the work done in it (backup {fields['kept']} holds that work too; backup "
                f"{fields.get('backup')} the data before the upgrade)")
    if "upgraded" in fields:
        restored = fields.get("restored", "none")
        also = "" if restored == "none" else f", backup {restored} restored"
        return (f"CVAT {fields.get('from')} -> {fields.get('upgraded')}: backup {fields.get('backup')} taken first{also}; "
                f"CVAT was down {fields.get('down')} s")
    return line
