"""The inference host of a split lab (labforge/split.py): the Nuclio dashboard that labforge runs there itself, from
a compose file of its own, since there is no CVAT checkout on the host, and where the functions' sources come from.

The dashboard is the service of CVAT's components/serverless/docker-compose.serverless.yml at the pinned tag (dfd505e7:
image quay.io/nuclio/dashboard:1.13.0-amd64, the Docker socket mounted, NUCLIO_CHECK_FUNCTION_CONTAINERS_HEALTHINESS,
NUCLIO_DASHBOARD_DEFAULT_FUNCTION_MOUNT_MODE, json-file logs of 3 x 100m) with the version of the pinned row of
cvat_stack_compat. It differs in two ways:
- its network is one of ours (NETWORK), which the functions join. With CVAT_NUCLIO_INVOKE_METHOD=dashboard, Nuclio's
  dashboard calls a function at the first of its status' invocation URLs, the internal one <container IP>:8080
  (nuclio 1.13.x at 59fa1656: pkg/platform/abstract/invoker.go 60-78, pkg/platform/local/platform.go 1397-1440), so
  the dashboard and its functions must share a Docker network;
- it publishes 8070 for the CVAT host: the exposure layer lets only the CVAT host's address in (labforge/exposure.py).
"""

from __future__ import annotations

import shlex

from labforge.templates import render

DIR = "/opt/labforge/nuclio"
COMPOSE_FILE = f"{DIR}/docker-compose.yml"
PROJECT = "labforge-nuclio"
NETWORK = "labforge_nuclio"
CONTAINER = "nuclio"
DIGEST_FILE = "/etc/labforge/nuclio-compose.digest"
# CVAT's git objects, for the functions' sources only: a bare repository (no checkout, no CVAT files on the host)
# from which each function's tree is `git archive`d (labforge/nuclio_functions.py extract_command).
SOURCES = "/opt/labforge/cvat-sources.git"
# What CVAT's deploy_cpu.sh/deploy_gpu.sh pass that only Enterprise functions read (serverless/deploy_cpu.sh 29-30 at
# dfd505e7; no community function and no CVAT code reads them: docs/split-lab.md). On an inference host
# cvat_redis_ondisk is on another machine, so they are left out there.
CVAT_ONLY_ENV = ("CVAT_FUNCTIONS_REDIS_HOST", "CVAT_FUNCTIONS_REDIS_PORT", "CVAT_FUNCTIONS_REDIS_PASSWORD")


def dashboard_image(version: str, arch: str = "amd64") -> str:
    """The image CVAT's serverless file names for this dashboard release (quay.io/nuclio/dashboard:<v>-<arch>)."""
    return f"quay.io/nuclio/dashboard:{version}-{arch}"


def render_compose(image: str, port: int) -> str:
    return render("nuclio-dashboard.compose.yml.j2", image=image, port=port, network=NETWORK, container=CONTAINER,
                  project=PROJECT)


def function_env(env: dict[str, str]) -> dict[str, str]:
    return {key: value for key, value in env.items() if key not in CVAT_ONLY_ENV}


def sources_command(url: str) -> str:
    """A bare repository of CVAT's (no work tree) whose origin is cvat_repo_url; made under a temporary name."""
    tmp = f"{SOURCES}.partial"
    return (f"rm -rf {tmp} && git init --quiet --bare {tmp} && git -C {tmp} remote add origin {shlex.quote(url)} && "
            f"mv {tmp} {SOURCES}")
