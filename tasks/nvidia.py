"""NVIDIA layers (GPU hosts): the driver of one branch, really that branch, held; nouveau off; the Container Toolkit
wired into Docker.

Why the driver comes from NVIDIA's CUDA repository with an apt pin, not from a package name:
- Ubuntu 22.04/24.04's ``nvidia-driver-550(-server)`` is now a transitional package to a newer branch
  (canonical/snapd#15712; 570 became transitional to 580, canonical/core-base#439): installing and
  holding it installs and holds nothing of branch 550.
- NVIDIA's own ``cuda-drivers-<branch>`` metapackage depends on open-ended versions on Debian
  (``nvidia-driver (>= 580.65.06)`` pulled 590: NVIDIA developer forums, "Debian cuda-drivers-580
  package 580.105.08-1 improperly pulls in v590 components").
- NVIDIA's driver installation guide locks a branch with the distribution's own version locking
  ("Version locking" page) and, from 580 on, ships ``nvidia-driver-pinning-<branch>`` packages holding
  an apt preferences file that pins the branch's versions at priority 1000 (its "Recent updates" page:
  "install the pinning package prior to installing the driver"). No such package is known for 550, so
  labforge writes the same kind of file itself, before the install: ``Pin: version <branch>.*`` at 1000.
After the install, every installed driver package must carry a ``<branch>.`` version (checked on
every run), and exactly those packages are held.
"""

from __future__ import annotations

from io import StringIO

from pyinfra import host
from pyinfra.api import deploy
from pyinfra.facts.server import Which
from pyinfra.operations import apt as pyinfra_apt
from pyinfra.operations import files, server, systemd
from pyinfra.operations.util import any_changed

from labforge import apt, aptsource, gpu, platform, report
from labforge.daemon_json import has_nvidia_runtime
from labforge.facts import AptHeldPackages, DockerDaemonConfig, NvidiaDriverPackages
from labforge.nvidia_driver import branch_pin, off_branch_command
from labforge.report import Refused

NOUVEAU_CONF = "/etc/modprobe.d/blacklist-nouveau.conf"
BRANCH_PIN = "/etc/apt/preferences.d/labforge-nvidia-driver-branch"
TOOLKIT_PACKAGES = ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools", "libnvidia-container1")


@deploy("NVIDIA driver")
def driver() -> None:
    if not gpu.enabled():
        return
    data = host.data
    branch = str(data.get("nvidia_driver_branch"))
    installed = host.get_fact(NvidiaDriverPackages) or {}
    off_branch = {name: version for name, version in installed.items() if not version.startswith(branch + ".")}
    if off_branch:
        listed = ", ".join(f"{name} {version}" for name, version in sorted(off_branch.items()))
        raise Refused(f"NVIDIA driver packages not on branch {branch}: {listed}; purge them "
                          "(apt-get purge) and run again, or set nvidia_driver_branch")
    if branch in [str(b) for b in data.get("nvidia_driver_eol_branches") or []]:
        report.notice(f"NVIDIA driver branch {branch} is end-of-life (no more fixes); move to a supported branch by "
                      "setting nvidia_driver_branch (e.g. 580) and rebooting after the run")
    timeout = apt.lock_timeout()
    blacklist = files.put(
        name="Blacklist nouveau",
        src=StringIO("# Managed by labforge: the NVIDIA driver needs nouveau unloaded.\nblacklist nouveau\noptions nouveau modeset=0\n"),
        dest=NOUVEAU_CONF,
        mode="0644",
    )
    if host.get_fact(Which, command="update-initramfs"):
        server.shell(name="Rebuild initramfs without nouveau", commands=["update-initramfs -u"], _if=blacklist.did_change)
    files.put(name=f"apt pin: NVIDIA driver branch {branch}", src=StringIO(branch_pin(branch)), dest=BRANCH_PIN, mode="0644")
    package = f"cuda-drivers-{branch}"
    apt.refresh("NVIDIA driver", [package])
    install = pyinfra_apt.packages(name=f"NVIDIA driver branch {branch} ({package})", packages=[package], no_recommends=True)
    server.shell(name=f"Every installed NVIDIA driver package is of branch {branch}", commands=[off_branch_command(branch)],
                 _if=install.did_change)
    held = set(host.get_fact(AptHeldPackages) or [])
    hold = (f"{apt.wait_command(timeout)}; apt-mark hold $({NvidiaDriverPackages().command()} | awk '$2 ~ /^{branch}\\./ {{print $1}}')")
    if installed and set(installed) - held:
        server.shell(name=f"Hold the branch {branch} driver packages", commands=[hold])
    else:
        server.shell(name=f"Hold the branch {branch} driver packages", commands=[hold], _if=install.did_change)
    changed = any_changed(install, blacklist)
    if data.get("reboot_after_driver"):
        server.reboot(name="Reboot to load the new NVIDIA driver", _if=changed)
    else:
        # /run is emptied by a reboot, so the marker keeps saying "reboot required" on later runs until one happens.
        files.file(name="Mark reboot required (until the next boot)", path=report.REBOOT_MARKER, _if=changed)
        report.reboot_required_if(install, blacklist)


@deploy("NVIDIA container toolkit")
def container_toolkit() -> None:
    if not gpu.enabled():
        return
    p = platform.current()
    data = host.data
    url = data.get("nvidia_container_toolkit_repo_url")
    version = data.get("nvidia_container_toolkit_version")
    repo = aptsource.signed_repo(
        "nvidia-container-toolkit",
        key_url=f"{url}/gpgkey",
        key_sha256=data.get("nvidia_container_toolkit_gpg_sha256"),
        legacy_list="nvidia-container-toolkit.list",
        uris=f"{url}/stable/deb/{p.deb_arch}",
        suites="/",
    )
    specs = [f"{name}={version}" for name in TOOLKIT_PACKAGES]
    apt.refresh("NVIDIA container toolkit", specs, after=repo)
    pyinfra_apt.packages(
        name=f"NVIDIA container toolkit {version}",
        packages=specs,
        no_recommends=True,
        allow_downgrades=True,
    )
    # nvidia-ctk edits daemon.json in place (keeping other keys); only run it when the runtime is missing.
    if not has_nvidia_runtime(host.get_fact(DockerDaemonConfig)):
        configure = server.shell(
            name="Register the nvidia runtime with Docker (nvidia-ctk)",
            commands=["nvidia-ctk runtime configure --runtime=docker"],
        )
        systemd.service(
            name="Restart Docker for the nvidia runtime",
            service="docker.service",
            restarted=True,
            _if=configure.did_change,
        )
