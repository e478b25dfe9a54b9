"""labforge backup: `pyinfra inventory.py backup.py` takes a consistent backup of every CVAT host (docs/backups-and-upgrades.md)."""

from tasks.backups import backup_now
from tasks.preflight import preflight

preflight()  # the same refusals as the deploy: unknown settings, not root, apt locked, ...
backup_now()
