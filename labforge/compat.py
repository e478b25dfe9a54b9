"""The pinned stack's compatibility, checked while planning, so raising one pin alone fails before anything changes.

Chain: CVAT tag -> the Nuclio dashboard its serverless compose file runs -> the Docker Engine API version
that dashboard's client speaks -> the Docker Engines whose daemon accepts it.

- CVAT v2.51.0 (commit dfd505e7) runs ``quay.io/nuclio/dashboard:1.13.0-amd64``
  (components/serverless/docker-compose.serverless.yml); nuctl must share its minor version.
- That dashboard speaks Docker API 1.42: on Docker 29 it fails with "client version 1.42 is too old.
  Minimum supported API version is 1.44" (cvat-ai/cvat#10013, #10033), so CVAT lists no function.
- Docker Engine 28.x accepts API 1.24 and newer by default ("API version: 1.49 (minimum version 1.24)"
  for 28.1.1 in docker/docs#22653); 29.0 raised the default minimum to 1.44 (moby/moby#51186;
  "API version: 1.52 (minimum version 1.44)" for 29.0.4 in docker/docs#23773).
- From 29.0 the daemon's minimum can be lowered again in daemon.json, ``"min-api-version"``
  (moby/moby#51371, merged 2025-10-31 before 29.0.0; Docker's "Docker Engine v29" blog post lists
  it with the ``DOCKER_MIN_API_VERSION`` environment variable). Older daemons reject unknown
  daemon.json keys, so it is written for 29 and newer only.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

FIRST_MAJOR_WITH_MIN_API_SETTING = 29


class Incompatible(ValueError):
    """A pin the rest of the stack does not work with; the message is one actionable line."""


def api(version: str) -> tuple[int, int]:
    major, minor = str(version).split(".")[:2]
    return int(major), int(minor)


def upstream_version(dpkg_version: str) -> tuple[int, ...]:
    """'5:28.5.2-1~ubuntu.24.04~noble' -> (28, 5, 2): epoch and Debian revision dropped."""
    text = dpkg_version.split(":", 1)[-1].split("-", 1)[0]
    return tuple(int(part) for part in re.findall(r"\d+", text)[:3])


def docker_dpkg_versions(versions: dict[str, str], distro: str, release: str, codename: str) -> dict[str, str]:
    """package -> exact dpkg version in Docker's repo, which appends ~<distro>.<release>~<codename>
    (5:28.5.2-1~ubuntu.24.04~noble, 1.7.29-1~debian.12~bookworm)."""
    return {name: f"{base}~{distro}.{release}~{codename}" for name, base in versions.items()}


def minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


@dataclass(frozen=True)
class Stack:
    cvat: str
    dashboard: str
    docker_api: str  # the oldest Docker API a client of the stack speaks
    nuctl: str = ""  # the nuctl release deployed with it: the row's, or nuctl_version when an admin sets one
    manage_py: str = "/home/django/manage.py"  # CVAT's manage.py inside cvat_server at this tag
    upgrade_steps: tuple[str, ...] = ()  # the upgrade guide's steps for moving to this row (labforge/upgrades.py)


def row(data: Any, version: str) -> dict:
    table = data.get("cvat_stack_compat") or {}
    found = table.get(version)
    if not found:
        raise Incompatible(f"CVAT {version} is not in cvat_stack_compat (group_data/all.py; listed: {', '.join(table)}): "
                           "add the Nuclio dashboard its components/serverless/docker-compose.serverless.yml runs, its nuctl "
                           "and the oldest Docker API that dashboard speaks, or set cvat_version to a listed release")
    return found


def stack(data: Any, version: str | None = None) -> Stack:
    """The compatibility row of a CVAT tag (the pinned one by default); nuctl follows the row unless nuctl_version
    is set, which must then share the dashboard's minor version."""
    version = version or data.get("cvat_version")
    found = row(data, version)
    dashboard = str(found["nuclio_dashboard"])
    nuctl = data.get("nuctl_version") if version == data.get("cvat_version") else None
    nuctl = str(nuctl or found.get("nuctl") or "")
    if not nuctl:
        raise Incompatible(f"cvat_stack_compat[{version!r}] names no nuctl: add the nuctl release of its Nuclio dashboard "
                           f"{dashboard} (\"nuctl\": \"{dashboard}\"), or set nuctl_version")
    if minor(nuctl) != minor(dashboard):
        raise Incompatible(f"nuctl {nuctl} does not match CVAT {version}'s Nuclio dashboard {dashboard} "
                           f"(cvat_stack_compat); set nuctl_version to a {minor(dashboard)}.x release, or unset it to "
                           "get the table's")
    return Stack(version, dashboard, str(found["docker_api"]), nuctl, str(found.get("manage_py") or Stack.manage_py),
                 tuple(found.get("upgrade_steps") or ()))


def manage_py(data: Any, version: str) -> str:
    """CVAT's manage.py inside cvat_server at this release (its row; /opt/cvat from v2.72.0 on), or the path every
    release has (/home/django/manage.py, a link from v2.72.0 on) for one outside the table (refused elsewhere)."""
    try:
        return stack(data, version).manage_py
    except Incompatible:
        return Stack.manage_py


def nuctl_version(data: Any) -> str:
    """The nuctl the pinned CVAT tag gets (cvat_stack_compat's row, or nuctl_version when set)."""
    return stack(data).nuctl


def release_at_head(tags: list[str] | None, table: Any = ()) -> str | None:
    """The release a checkout is at, from the tags at its HEAD: one of ``table`` (cvat_stack_compat) first, else the
    first v-tag, else the first tag; None without a checkout."""
    tags = tags or []
    return next((t for t in tags if t in table), None) or next((t for t in tags if t.startswith("v")), None) or \
        next(iter(tags), None)


def release(tag: str) -> tuple[int, ...]:
    """'v2.73.0' -> (2, 73, 0), for telling an upgrade from a downgrade."""
    return tuple(int(part) for part in re.findall(r"\d+", tag)[:3])


def default_min_api(data: Any, engine: tuple[int, ...]) -> str:
    """The oldest API a Docker Engine of this version accepts out of the box (docker_default_min_api)."""
    table = data.get("docker_default_min_api") or {}
    value = table.get(str(engine[0]))
    if value is None:
        raise Incompatible(f"Docker Engine {'.'.join(map(str, engine))} is not in docker_default_min_api (group_data/all.py): "
                           "add the oldest API version its daemon accepts by default (docker version: 'minimum version')")
    return str(value)


def min_api_setting(data: Any, engine: tuple[int, ...], needed: Stack) -> str | None:
    """The daemon.json "min-api-version" this engine needs so that the stack's oldest client gets in, or None.

    Raises Incompatible when the engine refuses that client and cannot be told otherwise.
    """
    if api(default_min_api(data, engine)) <= api(needed.docker_api):
        return None
    if engine[0] < FIRST_MAJOR_WITH_MIN_API_SETTING:
        raise Incompatible(f"Docker Engine {'.'.join(map(str, engine))} refuses API {needed.docker_api}, which CVAT {needed.cvat}'s "
                           f"Nuclio dashboard {needed.dashboard} speaks, and has no min-api-version setting; pin another Docker")
    return needed.docker_api


def check(data: Any, pinned_engine: tuple[int, ...]) -> Stack:
    """Everything that can be checked from the pins alone (while planning, before any host is touched)."""
    needed = stack(data)
    min_api_setting(data, pinned_engine, needed)
    return needed
