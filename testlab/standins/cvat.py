"""Stand-ins for CVAT's git repository (laid out as v2.51.0's compose files are) and CVAT's images.

Where data lives, the images run the real thing: cvat_db (postgres:15-alpine) is Debian bookworm's PostgreSQL 15,
initialised and started as the official image does, its cluster in the cvat_db volume; cvat/server talks to it with
Debian's psql, keeps its media and its secret key as real files in the cvat_data and cvat_keys volumes, and writes
and reads rows and files through stand-in endpoints (cvat_image/labforge_standin/). The rest (CVAT's Django,
Redis, kvrocks, OPA, the analytics) stays stand-in: sleepers and small HTTP servers.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
from pathlib import Path

from labforge import groupdata
from labforge.nuclio_functions import onbuild_images
from testlab.standins import STANDIN_MARK, packages

# CVAT's compose files as the stand-in repo reproduces them, at v2.51.0 (commit dfd505e7) and v2.73.0 (commit
# 7972cb4f2; v2.52.0 is v2.51.0's with dashboard 1.15.9, for the refusals): docker-compose.yml and
# components/serverless/docker-compose.serverless.yml with the same services, container names, images, networks and
# volumes, cvat_db's environment (POSTGRES_USER root, POSTGRES_DB cvat, POSTGRES_HOST_AUTH_METHOD trust), the traefik
# labels routing on ${CVAT_HOST:-localhost}, and the serverless file's nuclio service and CVAT_SERVERLESS. What
# differs at v2.73.0, read at the tag: cvat/server and cvat/ui default to v2.73.0, cvat_server's command is
# `init run server nginx`, kvrocks is 2.15.0, OPA 1.12.2, the dashboard 1.16.3 with no host port (#10306), and
# serverless/openvino/dextr and serverless/openvino/omz/public/yolo-v3-tf are gone (deleted at v2.52.0, 826d205f1).
BACKEND_COMMANDS = {  # service -> command; all run cvat/server with CVAT's data, keys and logs volumes
    "cvat_server": "init run server", "cvat_worker_utils": "run worker notifications cleaning",
    "cvat_worker_import": "run worker import", "cvat_worker_export": "run worker export",
    "cvat_worker_annotation": "run worker annotation", "cvat_worker_webhooks": "run worker webhooks",
    "cvat_worker_quality_reports": "run worker quality_reports", "cvat_worker_chunks": "run worker chunks",
    "cvat_worker_consensus": "run worker consensus",
}
OTHER_IMAGES = {"cvat_db": "postgres:15-alpine", "cvat_redis_inmem": "redis:7.2.11-alpine",
                "cvat_redis_ondisk": "apache/kvrocks:2.12.1", "cvat_ui": "cvat/ui:${CVAT_VERSION:-v2.51.0}",
                "traefik": "traefik:v3.6", "cvat_opa": "openpolicyagent/opa:0.63.0",
                "cvat_clickhouse": "clickhouse/clickhouse-server:23.11-alpine", "cvat_vector": "timberio/vector:0.26.0-alpine",
                "cvat_grafana": "grafana/grafana-oss:10.1.2"}
CVAT_SERVICES = [*BACKEND_COMMANDS, *OTHER_IMAGES]
# tag -> (the Nuclio dashboard its serverless file runs, images that differ from v2.51.0's, cvat_server's command,
# whether the dashboard publishes 8070, the CVAT functions its tree still has)
CVAT_TAGS = {
    "v2.51.0": ("1.13.0", {}, "init run server", True, None),
    "v2.52.0": ("1.15.9", {}, "init run server", True, None),
    "v2.73.0": ("1.16.3", {"cvat_redis_ondisk": "apache/kvrocks:2.15.0", "cvat_ui": "cvat/ui:${CVAT_VERSION:-v2.73.0}",
                           "cvat_opa": "openpolicyagent/opa:1.12.2"}, "init run server nginx", False,
                {"serverless/pytorch/facebookresearch/sam"}),
}
# path -> (metadata.name, a GPU variant, metadata.annotations.type): each function.yaml at dfd505e7 (dextr: interactor,
# yolo-v3-tf: detector, SAM: interactor), the type being what CVAT's function list reports as its kind.
CVAT_FUNCTIONS = {"serverless/openvino/omz/public/yolo-v3-tf": ("openvino-omz-public-yolo-v3-tf", False, "detector"),
                  "serverless/openvino/dextr": ("openvino-dextr", False, "interactor"),
                  "serverless/pytorch/facebookresearch/sam": ("pth-facebookresearch-sam-vit-h", True, "interactor")}
# The stand-in image of each image name (the images' role, see cvat_image/labforge_standin/).
IMAGE_ROLES = {"cvat/server:v2.51.0": "server", "cvat/ui:v2.51.0": "ui", "traefik:v3.6": "traefik",
               "postgres:15-alpine": "db", "redis:7.2.11-alpine": "sleeper", "apache/kvrocks:2.12.1": "sleeper",
               "openpolicyagent/opa:0.63.0": "sleeper", "clickhouse/clickhouse-server:23.11-alpine": "sleeper",
               "timberio/vector:0.26.0-alpine": "sleeper", "grafana/grafana-oss:10.1.2": "sleeper",
               "quay.io/nuclio/dashboard:1.13.0-amd64": "dashboard", "labforge-standin/function:latest": "function"}
# Nuclio's onbuild images of each row's nuctl: labforge's deploy pulls them when they are not here
# (labforge.nuclio_functions.ONBUILD_IMAGES), and an upgrade's preflight checks the new nuctl's. The stand-in nuctl builds
# nothing from them, so they are sleepers, present as on a lab whose admin loaded them.
ONBUILD_ROLES = {image: "sleeper" for row in groupdata.load()["cvat_stack_compat"].values()
                 for image in onbuild_images(row["nuctl"], "amd64")}
IMAGE_ROLES.update(ONBUILD_ROLES)
# v2.73.0's images, built only on the lab hosts that upgrade (load_images(..., releases=...)).
RELEASE_IMAGE_ROLES = {"v2.73.0": {"cvat/server:v2.73.0": "server", "cvat/ui:v2.73.0": "ui",
                                   "apache/kvrocks:2.15.0": "sleeper", "openpolicyagent/opa:1.12.2": "sleeper",
                                   "quay.io/nuclio/dashboard:1.16.3-amd64": "dashboard"}}
# Build arguments beyond the role: the release a cvat/server image is (its migrations, /api/server/about) and where
# its manage.py lives (CVAT's Dockerfile: ${HOME}/ at dfd505e7, /opt/cvat with a link in /home/django at 7972cb4f2).
IMAGE_BUILD_ARGS = {"cvat/server:v2.51.0": {"RELEASE": "v2.51.0"},
                    "cvat/server:v2.73.0": {"RELEASE": "v2.73.0", "SOURCE_DIR": "/opt/cvat"}}
BASE_IMAGE = "labforge-standin/base:latest"
# The roles on the base image with Debian's PostgreSQL packages (packages.POSTGRESQL_SETS: the set's image)...
POSTGRESQL_IMAGES = {"client": "labforge-standin/postgresql-client:latest", "server": "labforge-standin/postgresql:latest"}
ROLE_POSTGRESQL = {"server": "client", "db": "server"}
# ... and their stop signal: the official postgres image's STOPSIGNAL SIGINT, PostgreSQL's fast shutdown (SIGTERM
# is its smart shutdown, which waits for every session to end: `docker stop` would kill it after 10 s).
ROLE_STOPSIGNAL = {"db": "SIGINT"}


def cvat_compose(tag: str = "v2.51.0") -> dict:
    _, images, server_command, _, _ = CVAT_TAGS[tag]
    server_image = f"cvat/server:${{CVAT_VERSION:-{'v2.73.0' if tag == 'v2.73.0' else 'v2.51.0'}}}"
    backend_env = {"CVAT_POSTGRES_HOST": "cvat_db", "CVAT_REDIS_INMEM_HOST": "cvat_redis_inmem",
                   "CVAT_REDIS_INMEM_PORT": 6379, "CVAT_REDIS_ONDISK_HOST": "cvat_redis_ondisk",
                   "CVAT_REDIS_ONDISK_PORT": 6666}
    deps = {s: {"condition": "service_started"} for s in ("cvat_redis_inmem", "cvat_redis_ondisk", "cvat_db", "cvat_clickhouse")}
    data_volumes = ["cvat_data:/home/django/data", "cvat_keys:/home/django/keys", "cvat_logs:/home/django/logs"]
    services: dict = {}
    for name, command in BACKEND_COMMANDS.items():
        services[name] = {"container_name": name, "image": server_image, "restart": "always", "depends_on": deps,
                          "environment": backend_env, "command": command, "volumes": data_volumes, "networks": ["cvat"]}
    services["cvat_server"]["command"] = server_command
    services["cvat_server"]["depends_on"] = {**deps, "cvat_opa": {"condition": "service_started"}}
    services["cvat_server"]["labels"] = {
        "traefik.enable": "true", "traefik.http.services.cvat.loadbalancer.server.port": "8080",
        "traefik.http.routers.cvat.rule": "Host(`${CVAT_HOST:-localhost}`) && (PathPrefix(`/api/`) || "
                                          "PathPrefix(`/static/`) || PathPrefix(`/admin`) || PathPrefix(`/django-rq`))",
        "traefik.http.routers.cvat.entrypoints": "web"}
    services["cvat_server"]["networks"] = {"cvat": {"aliases": ["cvat-server"]}}
    for name, image in {**OTHER_IMAGES, **images}.items():
        services[name] = {"container_name": name, "image": image, "restart": "always", "networks": ["cvat"]}
    services["cvat_db"].update(environment={"POSTGRES_USER": "root", "POSTGRES_DB": "cvat", "POSTGRES_HOST_AUTH_METHOD": "trust"},
                               volumes=["cvat_db:/var/lib/postgresql/data"])
    services["cvat_redis_inmem"]["volumes"] = ["cvat_inmem_db:/data"]
    services["cvat_redis_ondisk"].update(init=True, volumes=["cvat_cache_db:/var/lib/kvrocks"])
    services["cvat_ui"].update(depends_on=["cvat_server"], labels={
        "traefik.enable": "true", "traefik.http.services.cvat-ui.loadbalancer.server.port": "8000",
        "traefik.http.routers.cvat-ui.rule": "Host(`${CVAT_HOST:-localhost}`)", "traefik.http.routers.cvat-ui.entrypoints": "web"})
    services["traefik"].update(ports=["8080:8080", "8090:8090"], environment={
        "CVAT_HOST": "${CVAT_HOST:-localhost}", "TRAEFIK_ENTRYPOINTS_web_ADDRESS": ":8080",
        "TRAEFIK_PROVIDERS_DOCKER_EXPOSEDBYDEFAULT": "false", "TRAEFIK_PROVIDERS_DOCKER_NETWORK": "cvat",
        "TRAEFIK_PROVIDERS_FILE_DIRECTORY": "/etc/traefik/rules"},
        volumes=["/var/run/docker.sock:/var/run/docker.sock:ro",
                 "./components/analytics/grafana_conf.yml:/etc/traefik/rules/grafana_conf.yml:ro"])
    services["cvat_opa"]["networks"] = {"cvat": {"aliases": ["opa"]}}
    services["cvat_clickhouse"].update(networks={"cvat": {"aliases": ["clickhouse"]}}, volumes=["cvat_events_db:/var/lib/clickhouse/"])
    services["cvat_vector"].update(user="1000:1000", depends_on=["cvat_clickhouse"], networks={"cvat": {"aliases": ["vector"]}},
                                   volumes=[{"type": "bind", "source": "./components/analytics/vector/vector.toml",
                                             "target": "/etc/vector/vector.toml", "read_only": True},
                                            {"type": "tmpfs", "target": "/vector-data-dir"}])
    services["cvat_grafana"].update(entrypoint=["sh", "-euc", "exec /run.sh"], networks={"cvat": {"aliases": ["grafana"]}},
                                    volumes=["./components/analytics/grafana/dashboards/:/var/lib/grafana/dashboards/:ro"])
    volumes = dict.fromkeys(["cvat_db", "cvat_data", "cvat_keys", "cvat_logs", "cvat_inmem_db", "cvat_events_db", "cvat_cache_db"])
    return {"name": "cvat", "services": services, "volumes": volumes, "networks": {"cvat": None}}


def serverless_compose(dashboard: str, publishes: bool = True) -> dict:
    doc = {"services": {
        "nuclio": {"container_name": "nuclio", "image": f"quay.io/nuclio/dashboard:{dashboard}-amd64", "restart": "always",
                   "networks": ["cvat"], "volumes": ["/var/run/docker.sock:/var/run/docker.sock"],
                   "environment": {"NUCLIO_CHECK_FUNCTION_CONTAINERS_HEALTHINESS": "true",
                                   "NUCLIO_DASHBOARD_DEFAULT_FUNCTION_MOUNT_MODE": "volume"},
                   "ports": ["8070:8070"]},
        "cvat_server": {"environment": {"CVAT_SERVERLESS": 1}, "extra_hosts": ["host.docker.internal:host-gateway"]},
        "cvat_worker_annotation": {"extra_hosts": ["host.docker.internal:host-gateway"]}}}
    if not publishes:  # v2.73.0: "fix(serverless): remove Nuclio dashboard port binding (#10306)"
        del doc["services"]["nuclio"]["ports"]
    return doc


def build_cvat_repo(bare: Path) -> Path:
    """A bare git repo laid out like CVAT's (compose files, analytics configs, serverless functions), tagged like its releases."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git = ["git", "-C", str(work), "-c", "user.name=labforge tests", "-c", "user.email=tests@labforge.invalid"]
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        for path, (name, has_gpu, kind) in CVAT_FUNCTIONS.items():
            fn_dir = work / path / "nuclio"
            fn_dir.mkdir(parents=True)
            spec = {"metadata": {"name": name, "namespace": "cvat",
                                 "annotations": {"name": f"{name} ({STANDIN_MARK})", "type": kind}},
                    "spec": {"handler": "main:handler"}}
            (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec, sort_keys=False))
            if has_gpu:
                gpu = {**spec, "spec": {**spec["spec"], "resources": {"limits": {"nvidia.com/gpu": 1}}}}
                (fn_dir / "function-gpu.yaml").write_text(yaml.safe_dump(gpu, sort_keys=False))
        dockerfile = f"# {STANDIN_MARK}\nFROM labforge-standin/base:latest\nLABEL org.labforge.standin=\"{STANDIN_MARK}\"\n"
        (work / "serverless/openvino/base").mkdir(parents=True)
        (work / "serverless/openvino/base/Dockerfile").write_text(dockerfile)
        (work / "serverless/openvino/dextr/nuclio/Dockerfile").write_text(dockerfile)
        (work / "README.md").write_text(f"CVAT layout {STANDIN_MARK}: not CVAT.\n")
        (work / "components/analytics/vector").mkdir(parents=True)
        (work / "components/analytics/grafana/dashboards").mkdir(parents=True)
        (work / "components/analytics/grafana_conf.yml").write_text(f"# {STANDIN_MARK}\n")
        (work / "components/analytics/vector/vector.toml").write_text(f"# {STANDIN_MARK}\n")
        (work / "components/analytics/grafana/dashboards/all_events.json").write_text("{}\n")
        (work / "components/serverless").mkdir(parents=True)
        for tag, (dashboard, _, _, publishes, kept) in CVAT_TAGS.items():
            (work / "docker-compose.yml").write_text(f"# {STANDIN_MARK}: CVAT {tag}'s compose structure\n"
                                                     + yaml.safe_dump(cvat_compose(tag), sort_keys=False))
            (work / "components/serverless/docker-compose.serverless.yml").write_text(
                yaml.safe_dump(serverless_compose(dashboard, publishes), sort_keys=False))
            for path in CVAT_FUNCTIONS if kept is not None else ():
                if path not in kept:
                    shutil.rmtree(work / path, ignore_errors=True)
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-q", "-m", f"CVAT {tag} ({STANDIN_MARK})"], check=True)
            subprocess.run([*git, "tag", tag], check=True)
        if bare.exists():
            shutil.rmtree(bare)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


# a split lab's inference host
INFERENCE_IMAGES = ("quay.io/nuclio/dashboard:1.13.0-amd64", "labforge-standin/function:latest", *ONBUILD_ROLES)


def load_images(lab_host, base_tarball: Path, releases: tuple[str, ...] = (), only: tuple[str, ...] = ()) -> None:
    """Build the stand-in images inside the lab host's own Docker Engine, tagged with CVAT v2.51.0's image names:
    the host's Debian root imported as labforge-standin/base, that with Debian's PostgreSQL client or server
    packages (cvat_image/Dockerfile.postgresql, the .debs of packages.debian_postgresql), then cvat_image/Dockerfile
    once per role on its base. Docker's build cache keeps every step whose inputs did not change. `only`: these
    images alone (INFERENCE_IMAGES for a split lab's inference host)."""
    work = lab_host.root / "var/tmp/labforge-standin"
    shutil.rmtree(work, ignore_errors=True)
    here = Path(__file__).parent / "cvat_image"
    shutil.copytree(here, work / "context")
    import yaml  # traefik's stand-in reads the file provider's YAML: the same PyYAML as the control machine (CPython 3.11)

    shutil.copytree(Path(yaml.__file__).parent, work / "context/pylib/yaml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(Path(__file__).with_name("cvat_api.py"), work / "context/pylib/cvat_api.py")  # the server's CVAT API wing
    for name, debs in packages.debian_postgresql(base_tarball).items():
        (work / name).mkdir()
        shutil.copyfile(here / "Dockerfile.postgresql", work / name / "Dockerfile")
        for deb in debs:
            shutil.copyfile(deb, work / name / deb.name)
    shutil.copyfile(base_tarball, work / "base.tar")
    remote = "/var/tmp/labforge-standin"
    roles = dict(IMAGE_ROLES)
    for release in releases:
        roles.update(RELEASE_IMAGE_ROLES[release])
    roles = {image: role for image, role in roles.items() if not only or image in only}
    steps = [f"docker build -q -t {image} {remote}/{name} >/dev/null" for name, image in POSTGRESQL_IMAGES.items()
             if any(role in ROLE_POSTGRESQL and ROLE_POSTGRESQL[role] == name for role in roles.values())]
    for image, role in roles.items():
        base = POSTGRESQL_IMAGES[ROLE_POSTGRESQL[role]] if role in ROLE_POSTGRESQL else BASE_IMAGE
        extra = "".join(f" --build-arg {k}={v}" for k, v in IMAGE_BUILD_ARGS.get(image, {}).items())
        steps.append(f"docker build -q --build-arg BASE={base} --build-arg ROLE={role} --build-arg "
                     f"STOPSIGNAL={ROLE_STOPSIGNAL.get(role, 'SIGTERM')}{extra} -t {image} {remote}/context >/dev/null")
    lab_host.ssh(timeout=900, command=f"docker image inspect {BASE_IMAGE} >/dev/null 2>&1 || "
                 f"docker import {remote}/base.tar {BASE_IMAGE} >/dev/null && {' && '.join(steps)} && "
                 f"rm -rf {remote}/base.tar {remote}/client {remote}/server")
