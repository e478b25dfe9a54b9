"""A lab past one server: which host of a hosts file runs CVAT, which runs its Nuclio dashboard and functions, and
the hosts files that make no sense, refused with one line before any host is touched.

The shape (docs/settings.md, "A split lab"): every host stays an all-in-one lab unless its data says otherwise.
    cpu_servers:
      - {host: 192.168.1.10, name: cvat1, data: {inference_host: gpu1}}   # CVAT, no local Nuclio
    gpu_servers:
      - {host: 192.168.1.20, name: gpu1, data: {lab_role: inference}}    # Nuclio's dashboard + the functions
A CVAT host names the one inference host that serves it; an inference host serves exactly one CVAT host. CVAT talks
to a single Nuclio endpoint (CVAT_NUCLIO_HOST/PORT, cvat/settings/base.py at dfd505e7), so functions spread over
several inference hosts need Nuclio on Kubernetes (docs/kubernetes.md) and are refused here.

The loader adds what each side needs from the other: the CVAT host gets `inference_address` (the inference host's
address, for CVAT_NUCLIO_HOST), the inference host gets `cvat_address` (the one address its dashboard answers). A
host's address is its `lab_address` when set (the network the two hosts share, when SSH comes in another way), else
its SSH address. The inference host runs the dashboard and functions of its CVAT host's release, so it takes that
host's cvat_version.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

from labforge.paths import REPO

ROLES = ("all", "inference")
KUBERNETES = "docs/kubernetes.md"
DASHBOARD_PORT = 8070  # the port the Nuclio dashboard answers on (nginx in its image: cmd/dashboard/docker/default.conf)


class SplitLabError(ValueError):
    """A hosts file whose roles do not make a lab; one actionable line."""


def role(data: dict[str, Any]) -> str:
    value = data.get("lab_role") or "all"
    if value not in ROLES:
        raise SplitLabError(f"lab_role must be one of {', '.join(ROLES)}, not {value!r}")
    return "cvat" if value == "all" and data.get("inference_host") else value


def local_nuclio(data) -> bool:
    """Whether CVAT on this host runs with its own Nuclio dashboard (CVAT's serverless compose file)."""
    return role(data) == "all"


def partner(data) -> str | None:
    """The other host of this host's split lab (the inference host of a CVAT host, and the other way round)."""
    return {"cvat": data.get("inference_host"), "inference": data.get("inference_for")}.get(role(data))


def address(data: dict[str, Any]) -> str:
    return str(data.get("lab_address") or data["ssh_hostname"])


def gpu_only(path: str, repo: Path = REPO) -> bool:
    """A function of this repository with a GPU variant and no CPU one (CVAT's are checked on the host)."""
    directory = repo / path
    return path.startswith("files/") and (directory / "function-gpu.yaml").exists() and not (directory / "function.yaml").exists()


def check(groups: dict[str, list[tuple[str, dict[str, Any]]]], functions_of, repo: Path = REPO) -> None:
    """Refuse a hosts file whose roles make no lab, and add each side's address to the other's data (in place).

    ``functions_of(group, data)`` is the list of functions the host would deploy (its nuclio_functions)."""
    hosts = {name: (group, data) for group, entries in groups.items() for name, data in entries}
    served: dict[str, str] = {}
    for name, (_, data) in hosts.items():
        for derived in ("inference_address", "cvat_address", "inference_for"):
            if data.get(derived):
                raise SplitLabError(f"{name}: {derived} is set by labforge from inference_host; remove it")
        try:
            kind = role(data)
        except SplitLabError as exc:
            raise SplitLabError(f"{name}: {exc}") from exc
        target = data.get("inference_host")
        if kind == "inference" and target:
            raise SplitLabError(f"{name}: an inference host (lab_role: inference) names no inference_host of its own")
        if kind != "cvat":
            continue
        if isinstance(target, (list, tuple)):
            raise SplitLabError(f"{name}: inference_host names {len(target)} hosts; CVAT talks to one Nuclio endpoint, so "
                                f"functions on several inference hosts need Nuclio on Kubernetes ({KUBERNETES})")
        if target not in hosts:
            raise SplitLabError(f"{name}: inference_host {target!r} is not a host of this file")
        if role(hosts[target][1]) != "inference":
            raise SplitLabError(f"{name}: inference_host {target!r} is not an inference host; give it data "
                                "'lab_role: inference'")
        if target in served:
            raise SplitLabError(f"{target} would serve two CVAT hosts ({served[target]} and {name}); an inference host serves "
                                "one, so give each CVAT host its own")
        served[target] = name
    for name, (group, data) in hosts.items():
        if role(data) != "inference":
            continue
        if name not in served:
            raise SplitLabError(f"{name} is an inference host (lab_role: inference) but no CVAT host names it "
                                f"(inference_host: {name})")
        if group != "gpu_servers" and not data.get("gpu"):
            needs = [path for path in functions_of(group, data) if gpu_only(path, repo)]
            if needs:
                raise SplitLabError(f"{name} is a CPU inference host but {needs[0]} runs on a GPU only; move {name} to "
                                    "gpu_servers or take the function off its nuclio_functions")
    for inference, cvat in served.items():
        cvat_data, inference_data = hosts[cvat][1], hosts[inference][1]
        mine, theirs = inference_data.get("cvat_version"), cvat_data.get("cvat_version")
        if mine and theirs and mine != theirs:
            raise SplitLabError(f"{inference} has cvat_version {mine} but its CVAT host {cvat} has {theirs}; an inference "
                                "host runs its CVAT host's release: set cvat_version on the CVAT host only")
        if theirs:
            inference_data["cvat_version"] = theirs
        cvat_data["inference_address"] = address(inference_data)
        try:
            ipaddress.IPv4Address(address(cvat_data))
        except ValueError:
            raise SplitLabError(f"{cvat}: its address {address(cvat_data)!r} is not an IPv4 address, and {inference}'s "
                                "firewall lets one address reach its dashboard: set lab_address on it") from None
        inference_data["cvat_address"] = address(cvat_data)
        inference_data["inference_for"] = cvat
