"""Every setting name must be one the deploy knows: a misspelt one (`cvat_hots`, `reboot_after_drivers`,
`ssh_usr`) would otherwise be ignored silently and the default used instead.

Known names: the variables of group_data/*.py (all.py and the group files), pyinfra's SSH connector data
(``pyinfra.connectors.ssh.connector_data_meta``: ssh_user, ssh_port, ssh_key, ...), and the one key
labforge's hosts file adds itself (``ssh_hostname``, also an SSH connector key).
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable
from functools import cache
from pathlib import Path

from pyinfra.connectors.ssh import connector_data_meta

from labforge import groupdata

CONNECTION_KEYS = tuple(connector_data_meta)


@cache
def known(group_data_dir: Path = groupdata.GROUP_DATA) -> frozenset[str]:
    names = set(CONNECTION_KEYS)
    for path in group_data_dir.glob("*.py"):
        names |= set(groupdata.load(None if path.stem == "all" else path.stem, group_data_dir))
    return frozenset(names)


def suggestion(name: str, choices: Iterable[str]) -> str:
    match = difflib.get_close_matches(name, sorted(choices), n=1, cutoff=0.6)
    return f"; did you mean '{match[0]}'?" if match else ""


def unknown(names: Iterable[str], group_data_dir: Path = groupdata.GROUP_DATA) -> list[str]:
    """One message per unknown setting name, with a did-you-mean when one is close."""
    valid = known(group_data_dir)
    return [f"unknown setting '{name}'{suggestion(name, valid) or '; see group_data/all.py for the settings'}"
            for name in sorted(set(names) - valid)]
