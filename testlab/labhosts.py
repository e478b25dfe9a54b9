"""The local test lab: real Debian 12 hosts booted with systemd-nspawn (systemd as PID 1), reached by SSH, each
able to run a real Docker Engine.

Recipe (docs/testing.md): debootstrap a bookworm root once and cache it as a tarball; per host, unpack it,
authorise the lab's SSH key, make sshd listen on 127.0.0.N:2222, and boot it with `systemd-nspawn -b` in its
own network namespace (--private-network) with writable API file systems and all capabilities, so that
dockerd runs containers there and its bridge networks exist only inside the host.

Traffic stays on loopback: socat bridges the machine's 127.0.0.N:2222 to sshd in the host's namespace, and
the host's 127.0.0.1:<port> to the machine's 127.0.0.1:<port> (through systemd-nspawn's own namespace) for
the stand-in mirror, the git daemon and the lab's apt proxy (testlab/aptproxy.py, set as the hosts'
apt_proxy), through which apt reaches Debian's archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import yaml

from labforge import groupdata
from labforge.paths import REPO
from testlab.standins import cache_lock, under_cache_lock
from testlab.standins import cvat as cvat_standins
from testlab.standins import mirror as mirror_standins

LAB_DIR = Path(os.environ.get("LABFORGE_LAB_DIR", "/var/tmp/labforge-lab"))
CACHE_DIR = Path(os.environ.get("LABFORGE_CACHE_DIR", "/var/cache/labforge"))
DEBIAN_MIRROR = os.environ.get("LABFORGE_DEBIAN_MIRROR", "http://deb.debian.org/debian")
ROOTFS_PACKAGES = Path(__file__).with_name("rootfs-packages")  # CI's cache key hashes this file: what the cache holds
INCLUDE = next(line.strip() for line in ROOTFS_PACKAGES.read_text().splitlines() if line.strip() and not line.startswith("#"))
SSH_PORT = 2222
SSH_OPTS = ["-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
            "-o", "ConnectTimeout=5", "-o", "BatchMode=yes"]


class LabError(RuntimeError):
    """The lab could not be built or booted; the message says which step and where its log is."""


def _run(cmd: list[str], **kw) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, check=True, capture_output=True, text=True, **kw)


def require_tools() -> None:
    missing = [t for t in ("debootstrap", "systemd-nspawn", "ssh", "ssh-keygen", "gpg", "dpkg-deb", "socat", "nsenter", "curl")
               if not shutil.which(t)]
    if missing:
        raise LabError(f"missing tools {missing}: run ./install.sh as root (debootstrap systemd-container openssh-client "
                       "gnupg dpkg-dev socat curl)")
    if os.geteuid() != 0:
        raise LabError("the test lab needs root (debootstrap and systemd-nspawn)")


def base_tarball() -> Path:
    """The cached bookworm root (debootstrap once, ~1 min, ~450 MB unpacked; renamed into place when whole)."""
    tarball = CACHE_DIR / f"bookworm-minbase-{hashlib.sha256(INCLUDE.encode()).hexdigest()[:12]}.tar"
    if not tarball.exists():
        with cache_lock():
            if not tarball.exists():
                _debootstrap(tarball)
    return tarball


def _debootstrap(tarball: Path) -> None:
    CACHE_DIR.mkdir(parents=True, exist_ok=True)
    work = CACHE_DIR / "debootstrap-work"
    shutil.rmtree(work, ignore_errors=True)
    log = CACHE_DIR / "debootstrap.log"
    with log.open("w") as out:
        proc = subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", "bookworm", str(work),
                               DEBIAN_MIRROR], stdout=out, stderr=subprocess.STDOUT)
    if proc.returncode:
        raise LabError(f"debootstrap failed (exit {proc.returncode}); see {log}")
    (work / "etc/machine-id").write_text("")  # each booted host generates its own
    tmp = tarball.with_suffix(".partial")
    _run(["tar", "--numeric-owner", "--xattrs", "-C", str(work), "-cf", str(tmp), "."])
    tmp.rename(tarball)
    shutil.rmtree(work)


def ssh_key() -> Path:
    """The lab's key (made once; ssh-keygen writes the .pub last, so a .pub means both are whole)."""
    key = LAB_DIR / "id_ed25519"
    if not key.with_suffix(".pub").exists():
        with cache_lock():
            if not key.with_suffix(".pub").exists():
                LAB_DIR.mkdir(parents=True, exist_ok=True)
                key.unlink(missing_ok=True)
                _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "labforge-lab", "-f", str(key)])
    return key


@under_cache_lock
def _ensure_nspawn_runtime_dir() -> None:
    """nspawn keeps per-machine state in /run/systemd/nspawn; give it a tmpfs where /run lacks one."""
    path = Path("/run/systemd/nspawn")
    if subprocess.run(["mountpoint", "-q", str(path)]).returncode != 0 and not any(path.glob("*")):
        path.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "tmpfs", "tmpfs", str(path)], check=False)


# Lab only (not part of any package): before dockerd starts, make the cgroup v1 controller hierarchies that
# systemd-nspawn mounts read-only writable, so that runc can create the containers' cgroups. systemd's own
# hierarchy is left alone (over-mounting it stops systemd from creating any unit's cgroup).
DOCKER_DROPIN = "etc/systemd/system/docker.service.d/labforge-lab-cgroups.conf"
DOCKER_DROPIN_TEXT = ("# labforge test lab: writable cgroup controllers for runc inside systemd-nspawn\n[Service]\n"
                      "ExecStartPre=/bin/sh -c 'for c in memory pids cpu cpuacct cpuset devices freezer blkio; do "
                      "mountpoint -q /sys/fs/cgroup/$c && mount -o remount,rw,bind /sys/fs/cgroup/$c; done; true'\n")
NSPAWN_ENV = {"SYSTEMD_SECCOMP": "0", "SYSTEMD_NSPAWN_API_VFS_WRITABLE": "1"}


def _leader(nspawn_pid: int, timeout: float = 20) -> int:
    """The container's PID 1 (systemd): the child of systemd-nspawn in a PID namespace of its own. While it sets up,
    nspawn has another child, in nspawn's own PID namespace, that forks the container's init and exits (the init is
    then nspawn's child). Taking the first child, as this did, sometimes took that one: the SSH bridge then entered a
    process that was gone, and the host booted with no SSH (CI: "doctor-ok: no SSH on 127.0.0.41:2222 after 90s")."""
    own = os.readlink(f"/proc/{nspawn_pid}/ns/pid")
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            children = Path(f"/proc/{nspawn_pid}/task/{nspawn_pid}/children").read_text().split()
        except OSError:
            children = []
        for child in children:
            with contextlib.suppress(OSError):
                if os.readlink(f"/proc/{child}/ns/pid") != own:
                    return int(child)
        time.sleep(0.2)
    raise LabError(f"systemd-nspawn {nspawn_pid} started no container")


def _bridge(argv: list[str]) -> int:
    return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True).pid


@dataclass
class LabHost:
    name: str
    address: str
    pid: int | None = None
    lab_dir: str = str(LAB_DIR)
    ports: list[int] = field(default_factory=list)  # the machine's loopback ports the host reaches (mirror, git, apt proxy)
    bridges: list[int] = field(default_factory=list)

    @property
    def root(self) -> Path:
        return Path(self.lab_dir) / "hosts" / self.name / "root"

    @property
    def log(self) -> Path:
        return Path(self.lab_dir) / "hosts" / self.name / "console.log"

    def create(self, os_release: str | None = None) -> None:
        """Unpack a fresh root; os_release replaces /etc/os-release (to fake an unsupported distro)."""
        shutil.rmtree(self.root.parent, ignore_errors=True)
        self.root.mkdir(parents=True)
        _run(["tar", "--numeric-owner", "--xattrs", "-C", str(self.root), "-xf", str(base_tarball())])
        ssh_dir = self.root / "root/.ssh"
        ssh_dir.mkdir(mode=0o700, exist_ok=True)
        (ssh_dir / "authorized_keys").write_text(Path(f"{ssh_key()}.pub").read_text())
        (ssh_dir / "authorized_keys").chmod(0o600)
        conf = self.root / "etc/ssh/sshd_config.d/labforge-lab.conf"
        conf.write_text(f"Port {SSH_PORT}\nListenAddress {self.address}\nPermitRootLogin prohibit-password\n"
                        "PasswordAuthentication no\n")
        (self.root / "etc/hostname").write_text(self.name + "\n")
        dropin = self.root / DOCKER_DROPIN
        dropin.parent.mkdir(parents=True, exist_ok=True)
        dropin.write_text(DOCKER_DROPIN_TEXT)
        if os_release is not None:
            target = self.root / "etc/os-release"
            if target.is_symlink():
                target.unlink()
            target.write_text(os_release)

    def boot(self, timeout: float = 180) -> None:
        """Boot and wait for sshd (a few seconds, a few more on a busy machine; the timeout only keeps a host that
        never comes up from hanging the run)."""
        _ensure_nspawn_runtime_dir()
        reap_orphaned_containers()
        if _listening(self.address, SSH_PORT):
            raise LabError(f"{self.name}: {self.address}:{SSH_PORT} is already in use by another process; "
                           "stop it (or ./lab down) first")
        with self.log.open("w") as out:
            proc = subprocess.Popen(["systemd-nspawn", "-D", str(self.root), "--register=no", "--keep-unit",
                                     "-M", self.name, "--private-network", "--capability=all", "-b"],
                                    stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                    start_new_session=True, env={**os.environ, **NSPAWN_ENV})
        self.pid = proc.pid
        leader = _leader(proc.pid)
        into = ["nsenter", "-t", str(leader), "-n"]
        self.bridges = [_bridge(["socat", f"TCP-LISTEN:{SSH_PORT},bind={self.address},reuseaddr,fork",
                                 f"EXEC:{' '.join(into)} socat STDIO TCP\\:{self.address}\\:{SSH_PORT}"])]
        for port in self.ports:
            self.forward(port)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise LabError(f"{self.name}: systemd-nspawn exited with {proc.returncode}; see {self.log}")
            with contextlib.suppress(subprocess.TimeoutExpired):  # sshd accepted, but too busy to answer yet
                if self.ssh("true", check=False, timeout=30).returncode == 0:
                    return
            time.sleep(1)
        raise LabError(f"{self.name}: no SSH on {self.address}:{SSH_PORT} after {timeout:.0f}s; {self.log} ends:\n"
                       + "\n".join(self.log.read_text(errors="replace").splitlines()[-30:]))

    def forward(self, port: int) -> None:
        """The host's 127.0.0.1:port reaches the machine's 127.0.0.1:port (a server a test started, e.g. testlab/s3.py)."""
        into = ["nsenter", "-t", str(_leader(self.pid)), "-n"]
        self.bridges.append(_bridge([*into, "socat", f"TCP-LISTEN:{port},bind=127.0.0.1,reuseaddr,fork",
                                     # systemd-nspawn itself stays in the machine's namespace while the host runs
                                     f"EXEC:nsenter --net=/proc/{self.pid}/ns/net socat STDIO TCP\\:127.0.0.1\\:{port}"]))

    def ssh(self, command: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess:
        return subprocess.run(["ssh", *SSH_OPTS, "-i", str(ssh_key()), "-p", str(SSH_PORT), f"root@{self.address}",
                               command], capture_output=True, text=True, check=check, timeout=timeout)

    def stop(self, timeout: float = 30) -> None:
        for pid in self.bridges:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGKILL)
        self.bridges = []
        if self.pid and _alive(self.pid):
            os.kill(self.pid, signal.SIGTERM)  # nspawn asks the container's systemd to power off
            deadline = time.monotonic() + timeout
            while time.monotonic() < deadline and _alive(self.pid):
                time.sleep(0.5)
            if _alive(self.pid):
                os.killpg(self.pid, signal.SIGKILL)
        self.pid = None
        # whatever happened to nspawn (gone early, or killed above), nothing may keep running in this root
        kill_processes_under(self.root)

    def processes(self) -> list[tuple[int, str]]:
        """(pid, command line) of every process running in this host itself (not in its Docker containers)."""
        try:
            target = os.stat(self.root)
        except OSError:
            return []
        found = []
        for pid, _, st in _process_roots():
            if st and (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
                with contextlib.suppress(OSError):
                    found.append((pid, Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode().strip()))
        return found

    def destroy(self) -> None:
        self.stop()
        shutil.rmtree(self.root.parent, ignore_errors=True)


def _listening(address: str, port: int) -> bool:
    try:
        socket.create_connection((address, port), timeout=0.5).close()
        return True
    except OSError:
        return False


def _process_roots() -> list[tuple[int, str, os.stat_result | None]]:
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            found.append((int(proc.name), os.readlink(proc / "root"), os.stat(proc / "root")))
        except OSError:
            continue
    return found


def kill_processes_under(root: Path) -> None:
    """SIGKILL every process whose root directory is this lab host's root (the container's init first)."""
    try:
        target = os.stat(root)
    except OSError:
        return
    for pid, _, st in sorted(_process_roots()):
        if st and (st.st_dev, st.st_ino) == (target.st_dev, target.st_ino):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)


def reap_orphaned_containers() -> None:
    """Kill lab containers left by a crashed run: a `systemd` adopted by PID 1 whose root was deleted.

    Killing a PID namespace's init ends every process in it; nothing else on the machine matches.
    """
    for pid, link, _ in _process_roots():
        if not link.endswith("(deleted)"):
            continue
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            continue
        if comm == "systemd" and stat[1] == "1":  # field 4 of /proc/PID/stat: the parent pid
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
    time.sleep(0.5)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # reap it if it is our child
        return os.waitpid(pid, os.WNOHANG) == (0, 0)
    except ChildProcessError:
        return Path(f"/proc/{pid}").exists() and "Z" not in Path(f"/proc/{pid}/stat").read_text().split()[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Mirror:
    """The stand-in mirror (testlab/standins/mirror.py) served by Python's http.server on 127.0.0.1, CVAT's stand-in repo
    served by git's daemon, and the lab's apt proxy (testlab/aptproxy.py) to Debian's archive and the mirror."""

    port: int
    data: dict
    pid: int | None = None
    git_pid: int | None = None
    lab_dir: str = str(LAB_DIR)
    git_port: int = 0
    proxy_port: int = 0
    proxy_pid: int | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def ports(self) -> list[int]:
        """What lab hosts reach on the machine's loopback (bridged into their network namespace)."""
        return [self.port, self.git_port, self.proxy_port]

    @classmethod
    def start(cls, lab_dir: Path = LAB_DIR) -> Mirror:
        port = free_port()
        root = lab_dir / "mirror"
        data = mirror_standins.build_mirror(root, f"http://127.0.0.1:{port}")
        log = (lab_dir / "mirror.log").open("w")
        proc = subprocess.Popen([sys.executable, "-m", "http.server", "--bind", "127.0.0.1", "--directory",
                                 str(root), str(port)], stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, start_new_session=True)
        # CVAT's repo: git's own daemon on loopback (dumb HTTP cannot serve the shallow clones the deploy makes)
        git_port = free_port()
        cvat_standins.build_cvat_repo(lab_dir / "git" / "cvat.git")
        git_proc = subprocess.Popen(["git", "daemon", "--reuseaddr", "--export-all", f"--base-path={lab_dir / 'git'}",
                                     "--listen=127.0.0.1", f"--port={git_port}", str(lab_dir / "git")],
                                    stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        data["cvat_repo_url"] = f"git://127.0.0.1:{git_port}/cvat.git"
        proxy_port = free_port()
        debian_host = DEBIAN_MIRROR.split("://", 1)[-1].split("/", 1)[0]
        proxy = subprocess.Popen([sys.executable, "-m", "testlab.aptproxy", str(proxy_port), str(CACHE_DIR / "apt-proxy"),
                                  f"{debian_host},127.0.0.1"], cwd=REPO, stdout=log,
                                 stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        data["apt_proxy"] = f"http://127.0.0.1:{proxy_port}"
        mirror = cls(port, data, proc.pid, git_proc.pid, str(lab_dir), git_port, proxy_port, proxy.pid)
        for listen_port in (port, git_port, proxy_port):
            for _ in range(50):
                try:
                    socket.create_connection(("127.0.0.1", listen_port), timeout=0.2).close()
                    break
                except OSError:
                    time.sleep(0.1)
            else:
                mirror.stop()
                raise LabError(f"stand-in mirror did not listen on 127.0.0.1:{listen_port}; see {lab_dir / 'mirror.log'}")
        return mirror

    def stop(self) -> None:
        for pid in (self.pid, self.git_pid, self.proxy_pid):
            if pid and _alive(pid):
                os.kill(pid, signal.SIGTERM)
        self.pid = self.git_pid = self.proxy_pid = None
        gnupg = Path(self.lab_dir) / "mirror-gnupg"  # mirror.build_mirror's signing key: stop its gpg-agent
        if gnupg.is_dir():
            subprocess.run(["gpgconf", "--homedir", str(gnupg), "--kill", "gpg-agent"], capture_output=True)


LAB_RELEASE = "v2.51.0"


def lab_pins() -> dict:
    """The production pins as every lab host has them (hosts_file gives each cvat_version LAB_RELEASE): what the lab's
    tests compute source hashes and nuctl releases from."""
    return {**groupdata.load(), "cvat_version": LAB_RELEASE}


def hosts_file(hosts: list[LabHost], mirror: Mirror, path: Path, group: str = "gpu_servers", ssh_user: str = "root",
               placed: dict[str, tuple[str, dict]] | None = None, **extra_vars) -> Path:
    """Write a LAB_HOSTS file: the lab hosts (GPU layers forced on) pointed at the stand-in mirror. `placed`: a host's
    group and data beyond cvat_host, by name (a split lab's roles: split_lab_placement)."""
    doc = {
        "vars": {
            **mirror.data,
            "gpu_require_pci_device": False,  # no NVIDIA card in a container: force the GPU layers on
            "cvat_start": False,  # CVAT's files only, unless a test brings the stack up (it loads the stand-in images first)
            "ssh_known_hosts_file": str(path.parent / "known_hosts"),
            "ssh_strict_host_key_checking": "off",
            # nuctl is pinned on first use (labforge/pins.py): the lab's own lock file, never the repository's
            "download_lock_file": str(path.parent / "labforge.lock"),
            # the product's daily timer would stop a lab host's CVAT for a backup whenever a test run crosses midnight;
            # tests/lab/test_backup.py sets a schedule and lets it fire
            "backup_schedule": None,
            # the release every lab host builds stand-in images of (v2.73.0's only where a test asks for them); the
            # product's default (None: the checkout's release, else the newest row) is tested with cvat_version=None
            "cvat_version": LAB_RELEASE,
            **extra_vars,
        },
        "gpu_servers": [],
        "cpu_servers": [],
    }
    # a host in its own network namespace has no default route, so CVAT's name is given (users would type it)
    for h in hosts:
        where, data = (placed or {}).get(h.name, (group, {}))
        doc[where].append({"host": h.address, "name": h.name, "ssh_user": ssh_user, "ssh_port": SSH_PORT,
                           "ssh_key": str(ssh_key()), "data": {"cvat_host": f"{h.name}.lab", **data}})
    path.write_text("# labforge test lab hosts (generated)\n" + yaml.safe_dump(doc, sort_keys=False))
    (path.parent / "known_hosts").touch()
    return path


def split_lab_placement(cvat: LabHost, inference: LabHost, addresses: dict[str, str],
                        inference_group: str = "gpu_servers") -> dict[str, tuple[str, dict]]:
    """A split lab (docs/settings.md, "A split lab"): CVAT on `cvat` (a CPU server), its Nuclio dashboard and
    functions on `inference`, each reaching the other at its address on the lab network (testlab/lan.LabNetwork)."""
    return {cvat.name: ("cpu_servers", {"inference_host": inference.name, "lab_address": addresses[cvat.name]}),
            inference.name: (inference_group, {"lab_role": "inference", "lab_address": addresses[inference.name]})}


STATE_FILE = LAB_DIR / "state.json"


def ssh_config(hosts: list[LabHost], path: Path) -> Path:
    """An ssh_config naming each lab host, for testinfra (`--ssh-config`) and for people (`ssh -F`)."""
    path.write_text("".join(
        f"Host {h.name}\n  HostName {h.address}\n  Port {SSH_PORT}\n  User root\n  IdentityFile {ssh_key()}\n"
        "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n" for h in hosts))
    return path


def save_state(hosts: list[LabHost], mirror: Mirror | None) -> None:
    STATE_FILE.write_text(json.dumps({"hosts": [asdict(h) for h in hosts],
                                      "mirror": asdict(mirror) if mirror else None}, indent=1))


def load_state() -> tuple[list[LabHost], Mirror | None]:
    if not STATE_FILE.exists():
        return [], None
    doc = json.loads(STATE_FILE.read_text())
    mirror = Mirror(**doc["mirror"]) if doc.get("mirror") else None
    return [LabHost(**h) for h in doc["hosts"]], mirror
