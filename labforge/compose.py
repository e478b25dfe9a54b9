"""What we read from and write next to CVAT's compose files: pure functions, unit-tested against layouts."""

from __future__ import annotations

import hashlib
import re

import yaml

from labforge import split
from labforge.templates import render

SERVERLESS_COMPOSE = "components/serverless/docker-compose.serverless.yml"
OVERRIDE = "docker-compose.custom.override.yml"
DASHBOARD_IMAGE = re.compile(r"quay\.io/nuclio/dashboard:v?(\d+)\.(\d+)\.(\d+)")
# What labforge keeps next to CVAT's checkout on the host.
ENV_FILE = "/etc/labforge/cvat.env"
DIGEST_FILE = "/etc/labforge/cvat-compose.digest"
WAIT_API = "/usr/local/lib/labforge/wait-cvat-api"
TLS_DIR = "/etc/labforge/tls"  # cert.pem, key.pem, tls.yml (mode 0700, root): mounted into traefik
PROJECT = "cvat"
NETWORK = f"{PROJECT}_cvat"  # CVAT's network (compose project cvat, network cvat), which the functions join
# The share's named volume (templates/docker-compose.custom.override.yml.j2), as Compose names it: <project>_<key>.
SHARE_VOLUME_KEY = "cvat_share"
SHARE_VOLUME = f"{PROJECT}_{SHARE_VOLUME_KEY}"


# The services that call Nuclio (cvat_server lists and calls functions in cvat/apps/lambda_manager/views.py; the
# RQ queue "annotation", run by cvat_worker_annotation alone, runs auto-annotation jobs: docker-compose.yml at
# dfd505e7 and 7972cb4f2), the two the serverless file gives extra_hosts (host.docker.internal).
NUCLIO_CALLERS = ("cvat_server", "cvat_worker_annotation")
# labforge's Nuclio guard (labforge/nuclio_guard.py): the only way CVAT reaches a dashboard. On an all-in-one host
# the dashboard's only network is GUARDED_NETWORK_KEY, shared with the guard alone, so no other container (a
# function's included) reaches it; the guard answers CVAT on CVAT's network. The dashboard needs no network to its
# functions there: CVAT invokes them directly (INVOKE_METHOD=direct), and the dashboard lists them and checks their
# health through Docker (nuclio 1.13.x at 59fa1656: ValidateFunctionContainersHealthiness, pkg/platform/local/
# platform.go 814-880, asks `docker` for the container's health: pkg/dockerclient/shell.go 508).
GUARD_SERVICE = "nuclio_guard"
GUARD_SCRIPT = "/usr/local/lib/labforge/nuclio_guard.py"
GUARDED_NETWORK_KEY = "nuclio_guarded"
GUARD_IMAGE_VARIABLE = "LABFORGE_NUCLIO_GUARD_IMAGE"  # labforge-data's upgrade rollback sets it to the old release's image


def compose_args(serverless: bool = True) -> str:
    """The --env-file and -f arguments every `docker compose -p cvat` call of ours passes. A CVAT host of a split
    lab leaves the serverless file out (it would start a local Nuclio dashboard): the override then gives CVAT
    its Nuclio settings instead (nuclio_environment)."""
    files_ = ("docker-compose.yml", *((SERVERLESS_COMPOSE,) if serverless else ()), OVERRIDE)
    return f"--env-file {ENV_FILE} " + " ".join(f"-f {f}" for f in files_)


def nuclio_environment(inference_address: str | None = None) -> dict[str, str]:
    """What CVAT's Nuclio callers get: CVAT's Nuclio settings (cvat/settings/base.py 345-357 at dfd505e7, 408-420 at
    7972cb4f2) pointed at the guard, which alone reaches the dashboard. On a split lab's CVAT host (the guard then
    forwards to `inference_address`) invocations go through the dashboard too: `direct` ignores CVAT_NUCLIO_HOST and
    calls http://host.docker.internal:<port> (views.py 141-154 at dfd505e7), which is the CVAT host itself.
    CVAT_SERVERLESS comes from the serverless file on an all-in-one host."""
    guard = {"CVAT_NUCLIO_HOST": GUARD_SERVICE, "CVAT_NUCLIO_PORT": str(split.DASHBOARD_PORT)}
    if inference_address is None:
        return guard
    return {"CVAT_SERVERLESS": "1", "CVAT_NUCLIO_SCHEME": "http", **guard, "CVAT_NUCLIO_INVOKE_METHOD": "dashboard",
            "CVAT_NUCLIO_FUNCTION_NAMESPACE": "nuclio"}


def guard_upstream(inference_address: str | None = None) -> str:
    """Where the guard forwards: the local dashboard on the guarded network, or a split lab's inference host."""
    return f"{inference_address or 'nuclio'}:{split.DASHBOARD_PORT}"


def compose_services(text: str) -> list[str]:
    """Service names defined by a compose file."""
    doc = yaml.safe_load(text) or {}
    return list((doc.get("services") or {}).keys())


def share_services(wanted: list[str], compose_text: str | None) -> list[str]:
    """The wanted services that the pinned compose file defines (all wanted ones when it is not there yet)."""
    if compose_text is None:
        return list(wanted)
    present = set(compose_services(compose_text))
    return [s for s in wanted if s in present]


def render_override(services: list[str], share_path: str, cvat_ports: list[int], dashboard_publish: str | None = None,
                    tls: bool = False, inference_address: str | None = None, release: str = "v2.51.0") -> str:
    """The override: the share in `services`, what traefik and the Nuclio dashboard publish (CVAT's files publish
    traefik's 8080 and 8090 and the dashboard's 8070 on every interface: replaced with `!override`/`!reset`,
    Compose's merge tags, in Compose 2.40.3's compose-go v2.9.1 loader/reset.go), with TLS traefik's entrypoints and
    certificate as CVAT's docker-compose.https.yml and custom_certificates.md set them (dfd505e7), and the Nuclio
    guard between CVAT and the dashboard (run from CVAT's server image of `release`). With `inference_address` (a
    split lab's CVAT host) there is no local dashboard and the guard forwards there."""
    if not services:
        raise ValueError("no CVAT service to mount the share into")
    entries = list(services) + [s for s in NUCLIO_CALLERS if s not in services]
    if tls and "cvat_server" not in entries:  # its router labels
        entries.append("cvat_server")
    return render(OVERRIDE + ".j2", services=services, entries=entries, share_path=share_path, volume=SHARE_VOLUME_KEY,
                  cvat_ports=cvat_ports, dashboard_publish=dashboard_publish, tls=tls, tls_dir=TLS_DIR,
                  nuclio_env=nuclio_environment(inference_address), nuclio_callers=NUCLIO_CALLERS,
                  local_dashboard=inference_address is None, guard=GUARD_SERVICE, guard_script=GUARD_SCRIPT,
                  guard_image=f"${{{GUARD_IMAGE_VARIABLE}:-cvat/server:{release}}}",
                  guard_upstream=guard_upstream(inference_address), guarded_network=GUARDED_NETWORK_KEY,
                  split=inference_address is not None)


def dashboard_version(serverless_text: str) -> str | None:
    match = DASHBOARD_IMAGE.search(serverless_text)
    return ".".join(match.groups()) if match else None


def minor(version: str) -> str:
    return ".".join(version.lstrip("v").split(".")[:2])


def version_mismatch(serverless_text: str, nuctl_version: str, cvat_version: str) -> str | None:
    """None when CVAT's Nuclio dashboard and nuctl share a minor version, else the one-line reason."""
    dashboard = dashboard_version(serverless_text)
    if dashboard is None:
        return f"CVAT {cvat_version}: no quay.io/nuclio/dashboard image found in {SERVERLESS_COMPOSE}"
    if minor(dashboard) != minor(nuctl_version):
        return (f"CVAT {cvat_version} runs Nuclio dashboard {dashboard} but nuctl is {nuctl_version}; nuctl must "
                f"match the dashboard's minor version: set cvat_version and nuctl_version to a matching pair")
    return None


def tag_checks_command(cvat_dir: str, tag: str, nuctl_version: str, services: list[str]) -> str:
    """Shell checks of a fetched tag's files (via `git show`, before HEAD moves there).

    The same rules as version_mismatch()/share_services(), for the run that fetches the tag:
    the dashboard's minor version must equal nuctl's, and every share service must exist.
    """
    show = f"git -C {cvat_dir} show {tag}:"
    want = minor(nuctl_version)
    dashboard = (f"v=$({show}{SERVERLESS_COMPOSE} | grep -o 'quay.io/nuclio/dashboard:v\\?[0-9]*\\.[0-9]*' | head -n1 "
                 f"| sed 's/.*://; s/^v//'); [ \"$v\" = \"{want}\" ] || {{ echo \"labforge: CVAT {tag} runs Nuclio "
                 f"dashboard $v.x but nuctl is {nuctl_version}; set cvat_version and nuctl_version to a matching pair\" >&2; "
                 "false; }")
    present = " && ".join(f"{show}docker-compose.yml | grep -q '^  {s}:'" for s in services)
    service_check = (f"{{ {present} || {{ echo \"labforge: CVAT {tag} docker-compose.yml lacks one of {', '.join(services)}; "
                     "adjust cvat_share_services\" >&2; false; }; }")
    return f"{dashboard} && {service_check}"


def inputs_digest(*parts: str) -> str:
    """Digest of everything `docker compose up` depends on, stored after a successful up."""
    return hashlib.sha256("\0".join(parts).encode()).hexdigest()
