"""labforge restore: `pyinfra inventory.py restore.py [--data restore_backup=NAME]` puts a backup back (docs/backups-and-upgrades.md)."""

from tasks.preflight import preflight
from tasks.restore import restore_now

preflight()
restore_now()
