"""group_data/*.py read the way pyinfra layers them: all.py, then the host's group file (plain values only).

Used outside pyinfra runs: the doctor, the testinfra suite and the test lab's stand-ins.
"""

from __future__ import annotations

import runpy
from pathlib import Path
from typing import Any

from labforge.paths import GROUP_DATA


def load(group: str | None = None, group_data_dir: Path = GROUP_DATA) -> dict[str, Any]:
    values: dict[str, Any] = {}
    for name in ("all", group) if group else ("all",):
        path = group_data_dir / f"{name}.py"
        if path.exists():
            values.update({k: v for k, v in runpy.run_path(str(path)).items()
                           if not k.startswith("_") and not callable(v) and type(v).__name__ != "module"})
    return values
