"""TEST STAND-INS for the upstreams the test lab cannot reach: Docker's and NVIDIA's apt repos, GitHub.

This module is the only place stand-ins exist. It builds, under one directory served on
127.0.0.1, a GPG-signed apt mirror and download files that carry the *real* package names,
versions, repository layouts and URL paths, so the production code path runs unchanged
against it: key download with sha256, deb822 source with Signed-By, apt install of exact
pinned versions, cuda-keyring install, nuctl download with sha256. Only the payloads are
fakes: every binary inside is a small script that says "labforge test stand-in".

The production defaults in group_data/all.py stay the real upstreams; the lab overrides them
through the hosts file (see `mirror_data`).
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import subprocess
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

    def build(self, out_dir: Path) -> Path:
        with tempfile.TemporaryDirectory() as tmp:
            root = Path(tmp)
            root.chmod(0o755)
            for rel, (content, mode) in self.files.items():
                target = root / rel.lstrip("/")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(content if isinstance(content, bytes) else content.encode())
                target.chmod(mode)
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
            out = out_dir / f"{self.name}_{self.version.split(':')[-1]}_{self.arch}.deb"
            subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(root), str(out)],
                           check=True, capture_output=True)
        return out


def _script(body: str) -> tuple[str, int]:
    return textwrap.dedent(body).lstrip(), 0o755


# Docker's engine defaults (labforge/compat.py cites them): the oldest client API a daemon accepts.
DEFAULT_MIN_API = {"28": "1.24", "29": "1.44"}
# Containers cannot run in the lab, so the stand-in CLIs answer the deploy's *questions* (compose ps, the
# superuser list, nuctl get functions) from files a test writes here, to show which guards hold.
STATE_DIR = "/var/lib/labforge-standin"


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
    """Stand-in for the docker CLI <version>: `docker version` (--format with .Server.Version and
    .Server.MinAPIVersion, as the real CLI's Go templates name them), `info`, and state files for
    compose ps / exec (containers cannot run in this lab)."""
    default_min_api = DEFAULT_MIN_API[version.split(".")[0]]
    return _script(f"""
        #!/usr/bin/python3
        # {STANDIN_MARK} for the docker CLI {version}
        import json, os, subprocess, sys
        args = sys.argv[1:]
        state = "{STATE_DIR}"
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
        if args[:1] == ["compose"] and "ps" in args and os.path.exists(state + "/compose-ps.json"):
            sys.stdout.write(open(state + "/compose-ps.json").read()); sys.exit(0)
        if args[:1] == ["exec"] and os.path.exists(state + "/cvat-superusers"):
            sys.stdout.write(open(state + "/cvat-superusers").read()); sys.exit(0)
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
    return textwrap.dedent(f"""\
        #!/bin/sh
        # {STANDIN_MARK} for nuctl {version}
        case "$1 $2" in
            version*) printf 'Client version:\\n"Label: {version}, Git commit: {STANDIN_MARK}, OS: linux, Arch: amd64"\\n' ;;
            "get functions") if [ -f {STATE_DIR}/nuclio-functions.json ]; then cat {STATE_DIR}/nuclio-functions.json;
                             else echo "No functions found"; fi ;;
            *) echo "{STANDIN_MARK}: 'nuctl $*' cannot run in the test lab" >&2; exit 1 ;;
        esac
    """)


# Service names of CVAT v2.51.0's docker-compose.yml: the stand-in repo is generated from these names.
CVAT_SERVICES = ["cvat_db", "cvat_redis_inmem", "cvat_redis_ondisk", "cvat_server", "cvat_worker_utils",
                 "cvat_worker_import", "cvat_worker_export", "cvat_worker_annotation", "cvat_worker_webhooks",
                 "cvat_worker_quality_reports", "cvat_worker_chunks", "cvat_worker_consensus", "cvat_ui", "traefik",
                 "cvat_opa", "cvat_clickhouse", "cvat_vector", "cvat_grafana"]
# (tag, Nuclio dashboard) pairs: the pinned release, and the next one, whose dashboard no longer matches nuctl 1.13.
CVAT_TAGS = [("v2.51.0", "1.13.0"), ("v2.52.0", "1.15.9")]
CVAT_FUNCTIONS = {"serverless/openvino/omz/public/yolo-v3-tf": ("openvino-omz-public-yolo-v3-tf", False),
                  "serverless/openvino/dextr": ("openvino-dextr", False),
                  "serverless/pytorch/facebookresearch/sam": ("pth-facebookresearch-sam-vit-h", True)}


def build_cvat_repo(bare: Path) -> Path:
    """A bare git repo laid out like CVAT's (compose files, serverless functions), tagged like CVAT's releases."""
    import yaml

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        git = ["git", "-C", str(work), "-c", "user.name=labforge tests", "-c", "user.email=tests@labforge.invalid"]
        subprocess.run(["git", "init", "-q", str(work)], check=True)
        for path, (name, has_gpu) in CVAT_FUNCTIONS.items():
            fn_dir = work / path / "nuclio"
            fn_dir.mkdir(parents=True)
            spec = {"metadata": {"name": name, "annotations": {"name": f"{name} ({STANDIN_MARK})"}}}
            (fn_dir / "function.yaml").write_text(yaml.safe_dump(spec))
            if has_gpu:
                (fn_dir / "function-gpu.yaml").write_text(yaml.safe_dump(spec))
        (work / "serverless/openvino/base").mkdir(parents=True)
        (work / "serverless/openvino/base/Dockerfile").write_text(f"# {STANDIN_MARK}\nFROM scratch\n")
        (work / "serverless/openvino/dextr/nuclio/Dockerfile").write_text(f"# {STANDIN_MARK}\nFROM scratch\n")
        (work / "README.md").write_text(f"CVAT layout {STANDIN_MARK}: not CVAT.\n")
        services = {s: {"container_name": s, "image": f"cvat/{s}:{STANDIN_MARK.replace(' ', '-')}"} for s in CVAT_SERVICES}
        (work / "docker-compose.yml").write_text(yaml.safe_dump({"name": "cvat", "services": services}, sort_keys=False))
        (work / "components/serverless").mkdir(parents=True)
        for tag, dashboard in CVAT_TAGS:
            serverless = {"services": {"nuclio": {"container_name": "nuclio",
                                                  "image": f"quay.io/nuclio/dashboard:{dashboard}-amd64"}}}
            (work / "components/serverless/docker-compose.serverless.yml").write_text(yaml.safe_dump(serverless))
            subprocess.run([*git, "add", "-A"], check=True)
            subprocess.run([*git, "commit", "-q", "-m", f"CVAT {tag} ({STANDIN_MARK})"], check=True)
            subprocess.run([*git, "tag", tag], check=True)
        if bare.exists():
            shutil.rmtree(bare)
        subprocess.run(["git", "clone", "-q", "--bare", str(work), str(bare)], check=True)
    return bare


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


def docker_packages(versions: dict[str, str], suffix: str) -> list[StandinPackage]:
    """Docker's five packages at these versions (plus suffix), with the engine and CLI stand-ins of that release."""
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
    for pkg in docker_packages(p["docker_package_versions"], DOCKER_SUFFIX):
        pkg.build(pool)
    _write_index(docker_root, pool, docker_root / f"dists/{CODENAME}/stable/binary-{DEB_ARCH}", signer, CODENAME)
    newer = root / NEWER_DOCKER_DIR
    newer.mkdir(parents=True)
    for pkg in docker_packages(NEWER_DOCKER_VERSIONS, DOCKER_SUFFIX):
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
