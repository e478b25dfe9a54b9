"""Interrupted converges: pyinfra killed, or dockerd stopped, in the middle of a run on a real lab host.

An admin's SSH session drops, someone presses Ctrl-C twice, a host's Docker restarts under an upgrade: each
time the next converge must complete and the one after must report changed=0, with nothing lost from the
share. Each point is reached by watching the host itself (its processes, its files) while the deploy runs,
so the fault lands where it is named, not after a guessed delay.
"""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
from collections.abc import Callable

import pytest

from labforge.compose import PROJECT
from testlab import labhosts, runner
from testlab.standins import cvat
from tests.lab.conftest import TEST_LAB_DIR

PASSWORD = {"LABFORGE_CVAT_ADMIN_PASSWORD": "x7!Qm2#pLw9$Tz-lab"}
SHARE_FILE = "mnt/share/keep-me.txt"
ADMIN_ENV = "root/.labforge-cvat-admin.env"


@pytest.fixture(scope="module")
def host(boot_host):
    return boot_host("citest-faults", "127.0.0.15")


def files_yml(host, mirror):
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "faults-files.yml")


def start_yml(host, mirror):
    return labhosts.hosts_file([host], mirror, TEST_LAB_DIR / "faults-start.yml", cvat_start=True)


def process(host, pattern: str) -> Callable[[], str | None]:
    """A trigger: the command line of the first process in the host matching ``pattern``."""
    regex = re.compile(pattern)

    def seen() -> str | None:
        return next((cmd for _, cmd in host.processes() if regex.search(cmd)), None)
    return seen


def unpacking(host, package: str) -> Callable[[], str | None]:
    """A trigger: dpkg runs and has begun unpacking ``package`` (it writes the package's file list as it does)."""
    dpkg = process(host, r"^/usr/bin/dpkg ")
    listed = host.root / f"var/lib/dpkg/info/{package}.list"
    return lambda: dpkg() if listed.exists() else None


def recover(hosts_file, label: str, env: dict | None = None) -> runner.DeployRun:
    """The converge after the fault completes; the one after that changes nothing."""
    first = runner.deploy(hosts_file, env=env)
    assert first.returncode == 0, f"{label}: the next converge failed:\n{first.stderr[-3000:]}"
    second = runner.deploy(hosts_file, env=env)
    assert second.returncode == 0 and (second.totals.changed, second.totals.errors) == (0, 0), (label, second.totals.changed_ops)
    print(f"{label}: next converge changed={first.totals.changed} ({first.seconds:.1f}s), the one after changed=0 "
          f"({second.totals.operations} ops)")
    return first


def running(host) -> dict[str, bool]:
    out = host.ssh(f"docker ps -a --filter label=com.docker.compose.project={PROJECT} --format '{{{{.Names}}}} {{{{.State}}}}'")
    return {line.split()[0]: line.split()[1] == "running" for line in out.stdout.splitlines()}


def test_killed_while_dpkg_unpacks_the_docker_engine(host, mirror):
    seen, run = runner.deploy_interrupted(files_yml(host, mirror), unpacking(host, "docker-ce"), runner.kill)
    assert seen, f"the run ended before dpkg unpacked docker-ce:\n{run.stderr[-2000:]}"
    print(f"killed pyinfra after {run.seconds:.1f}s while running: {seen}")
    left = [cmd.split()[0] for _, cmd in host.processes() if cmd.startswith(("apt-get ", "/usr/bin/dpkg "))]
    print(f"still running on the host after the kill: {left or 'nothing'}")
    recover(files_yml(host, mirror), "after the kill in dpkg")
    assert host.ssh("dpkg --audit").stdout == ""
    assert host.ssh("docker version --format '{{.Server.Version}}'").stdout.strip()


def test_dpkg_killed_with_pyinfra_as_a_power_cut_would(host, mirror):
    """dpkg itself dies mid-unpack: its journal stays dirty and apt refuses everything until it is replayed."""
    host.ssh("apt-mark unhold docker-ce >/dev/null && apt-get purge -y -q docker-ce >/dev/null 2>&1")
    journal = host.root / "var/lib/dpkg/updates"

    def journaling_docker() -> str | None:
        """dpkg has written docker-ce's new state to its journal and not yet folded it into its status file."""
        for entry in journal.glob("[0-9]*"):
            with contextlib.suppress(OSError):
                if "Package: docker-ce\n" in entry.read_text():
                    return f"{entry.name}: {entry.read_text().splitlines()[1]}"
        return None

    def power_cut(pyinfra: subprocess.Popen) -> None:
        for pid, cmd in host.processes():
            if cmd.startswith(("/usr/bin/dpkg ", "apt-get ", "/usr/bin/apt-get ")):
                os.kill(pid, signal.SIGKILL)
        runner.kill(pyinfra)

    seen, run = runner.deploy_interrupted(files_yml(host, mirror), journaling_docker, power_cut)
    assert seen, f"the run ended before dpkg journaled docker-ce:\n{run.stderr[-2000:]}"
    print(f"killed dpkg, apt-get and pyinfra after {run.seconds:.1f}s, dpkg's journal holding {seen}")
    refused = host.ssh("apt-get install -y -q docker-ce", check=False)
    print(f"after the power cut, apt says: {refused.stderr.strip()}")
    assert "dpkg was interrupted" in refused.stderr  # apt's dirty-journal refusal: what the next converge must repair
    recover(files_yml(host, mirror), "after dpkg was killed")
    assert host.ssh("dpkg --audit").stdout == ""
    assert host.ssh("docker version --format '{{.Server.Version}}'").stdout.strip()


@pytest.fixture(scope="module")
def stack(host, mirror):
    """The engine is there (previous test); the stand-in images are loaded and a file waits in the share."""
    runner.deploy(files_yml(host, mirror))
    cvat.load_images(host, labhosts.base_tarball())
    (host.root / SHARE_FILE).write_text("lab data\n")


def share_intact(host) -> None:
    assert (host.root / SHARE_FILE).read_text() == "lab data\n"
    assert host.ssh("docker exec cvat_server cat /home/django/share/keep-me.txt").stdout == "lab data\n"


def test_killed_after_the_admin_credentials_were_written(host, mirror, stack):
    """The password file exists only for the admin's creation: killed right then, the next run must remove it."""
    admin_env = host.root / ADMIN_ENV
    seen, run = runner.deploy_interrupted(start_yml(host, mirror), lambda: "credentials file" if admin_env.exists() else None,
                                          runner.kill, env=PASSWORD)
    assert seen, run.stderr[-2000:]
    recover(start_yml(host, mirror), "after the kill at the admin's creation", env=PASSWORD)
    assert not admin_env.exists()
    users = host.ssh("docker exec cvat_server cat /home/django/data/labforge-standin-users.json").stdout
    assert users.count('"username": "admin"') == 1
    share_intact(host)


def test_killed_while_compose_starts_the_stack(host, mirror, stack):
    host.ssh(f"docker stop $(docker ps -q --filter label=com.docker.compose.project={PROJECT})")
    seen, run = runner.deploy_interrupted(start_yml(host, mirror), process(host, r"docker-compose compose .* up -d"),
                                          runner.kill, env=PASSWORD)
    assert seen, run.stderr[-2000:]
    recover(start_yml(host, mirror), "after the kill during compose up", env=PASSWORD)
    assert all(running(host).values()), running(host)
    share_intact(host)


def test_dockerd_stopped_while_compose_starts_the_stack(host, mirror, stack):
    host.ssh(f"docker stop $(docker ps -q --filter label=com.docker.compose.project={PROJECT})")

    def stop_dockerd(_: subprocess.Popen) -> None:
        host.ssh("systemctl stop docker.socket docker.service")

    seen, run = runner.deploy_interrupted(start_yml(host, mirror), process(host, r"docker-compose compose .* up -d"),
                                          stop_dockerd, env=PASSWORD)
    assert seen, run.stderr[-2000:]
    assert run.returncode != 0, "the run went on as if dockerd had not stopped"
    print(f"dockerd stopped during compose up: the run failed as it should ({run.summary_lines()})")
    after = recover(start_yml(host, mirror), "after dockerd stopped during compose up", env=PASSWORD)
    assert any(op.startswith("Docker | ") for op in after.totals.changed_ops), after.totals.changed_ops  # started again
    assert all(running(host).values()), running(host)
    share_intact(host)


def test_killed_while_a_function_deploys(host, mirror, stack):
    host.ssh("docker rm -f nuclio-nuclio-openvino-dextr")
    seen, run = runner.deploy_interrupted(start_yml(host, mirror), process(host, r"nuctl deploy .*dextr"), runner.kill,
                                          env=PASSWORD)
    assert seen, run.stderr[-2000:]
    recover(start_yml(host, mirror), "after the kill during nuctl deploy", env=PASSWORD)
    state = host.ssh("docker inspect -f '{{.State.Running}}' nuclio-nuclio-openvino-dextr").stdout.strip()
    assert state == "true"
    share_intact(host)
