"""testinfra suite for provisioned hosts: `pytest tests/host --hosts=ssh://user@server [--role=gpu|cpu]`."""

from __future__ import annotations

import json

import pytest

from labforge import compat
from labforge import pins as labforge_pins
from labforge.compat import api, docker_dpkg_versions, upstream_version
from labforge.facts import NvidiaDriverPackages
from labforge.platform import SUPPORTED_MACHINES

# --- base ------------------------------------------------------------------------------------


@pytest.mark.parametrize("package", ["git", "curl", "ca-certificates", "gnupg", "gcc"])
def test_base_package_installed(host, package):
    assert host.package(package).is_installed


def test_keyring_dir(host):
    keyrings = host.file("/etc/apt/keyrings")
    assert keyrings.is_directory and keyrings.mode == 0o755


def test_apt_proxy_matches_setting(host, pins):
    proxy = host.file("/etc/apt/apt.conf.d/01labforge-proxy")
    if pins.get("apt_proxy"):
        assert proxy.contains(pins["apt_proxy"])
    else:
        assert not proxy.exists


# --- docker ----------------------------------------------------------------------------------


def docker_pins(host, pins) -> dict[str, str]:
    """The exact dpkg versions the deploy asked for on this distro (Docker's ~<distro>.<release>~<codename> suffix)."""
    info = host.system_info
    return docker_dpkg_versions(pins["docker_package_versions"], info.distribution, info.release, info.codename)


def test_docker_packages_pinned_and_held(host, pins):
    held = host.check_output("apt-mark showhold").split()
    installed_engine = host.package("docker-ce").version
    newer = upstream_version(installed_engine) > upstream_version(docker_pins(host, pins)["docker-ce"])
    for package, version in docker_pins(host, pins).items():
        assert host.package(package).is_installed, package
        if not newer:  # a Docker newer than the pin is kept (not downgraded), and held where it is
            assert host.package(package).version == version, package
        assert package in held, package
    for package in pins["docker_conflicting_packages"]:
        assert not host.package(package).is_installed, package


def test_docker_daemon_admits_the_stacks_oldest_client(host, pins):
    """CVAT's Nuclio dashboard speaks the API in cvat_stack_compat; the daemon must accept it (Docker 29 alone does not)."""
    needed = pins["cvat_stack_compat"][pins["cvat_version"]]["docker_api"]
    minimum = host.check_output("docker version --format '{{.Server.MinAPIVersion}}'").strip()
    assert api(minimum) <= api(needed), f"daemon minimum API {minimum} refuses the stack's {needed}"


def test_docker_source_is_signed_deb822(host, pins):
    source = host.file("/etc/apt/sources.list.d/docker.sources")
    assert source.contains("^Signed-By: /etc/apt/keyrings/docker.asc$")
    assert source.contains(f"^URIs: {pins['docker_repo_url']}/")
    assert host.file("/etc/apt/keyrings/docker.asc").sha256sum == pins["docker_gpg_sha256"]
    assert not host.file("/etc/apt/sources.list.d/docker.list").exists


def test_docker_running_and_enabled(host):
    docker = host.service("docker")
    assert docker.is_running and docker.is_enabled
    assert host.run("docker info").rc == 0


# --- nvidia driver + container toolkit (GPU hosts) --------------------------------------------


def test_driver_is_of_the_branch_and_held(host, pins, gpu_host):
    branch = str(pins["nvidia_driver_branch"])
    assert host.package(f"cuda-drivers-{branch}").is_installed
    fact = NvidiaDriverPackages()
    installed = fact.process(host.check_output(fact.command()).splitlines())
    assert installed, "no NVIDIA driver package installed"
    assert {name: v for name, v in installed.items() if not v.startswith(branch + ".")} == {}
    held = host.check_output("apt-mark showhold").split()
    assert sorted(set(installed) - set(held)) == []
    assert host.file("/etc/apt/preferences.d/labforge-nvidia-driver-branch").contains(f"^Pin: version {branch}\\.\\*$")


def test_nouveau_blacklisted(host, gpu_host):
    assert host.file("/etc/modprobe.d/blacklist-nouveau.conf").contains("^blacklist nouveau$")


def test_container_toolkit_pinned(host, pins, gpu_host):
    for package in ("nvidia-container-toolkit", "nvidia-container-toolkit-base", "libnvidia-container-tools",
                    "libnvidia-container1"):
        assert host.package(package).version == pins["nvidia_container_toolkit_version"], package
    source = host.file("/etc/apt/sources.list.d/nvidia-container-toolkit.sources")
    assert source.contains("^Signed-By: /etc/apt/keyrings/nvidia-container-toolkit.asc$")


def test_docker_has_nvidia_runtime(host, gpu_host):
    config = json.loads(host.file("/etc/docker/daemon.json").content_string)
    assert "nvidia" in config["runtimes"]


def test_no_driver_on_cpu_host(host, gpu_role):
    if gpu_role:
        pytest.skip("GPU host")
    fact = NvidiaDriverPackages()
    assert fact.process(host.check_output(fact.command()).splitlines()) == {}


# --- cuda (GPU hosts) ------------------------------------------------------------------------


def test_cuda_toolkit_only(host, pins, gpu_host):
    version = pins["cuda_version"]
    assert host.package("cuda-keyring").is_installed
    assert host.package(f"cuda-toolkit-{version.replace('.', '-')}").is_installed
    # the metapackages would pull a driver newer than the 550 branch
    assert not host.package("cuda").is_installed
    assert not host.package("cuda-drivers").is_installed


def test_cuda_on_login_path(host, pins, gpu_host):
    version = pins["cuda_version"]
    profile = host.file("/etc/profile.d/cuda.sh")
    assert profile.contains(f"/usr/local/cuda-{version}/bin")
    assert profile.contains(f"/usr/local/cuda-{version}/lib64")
    assert f"release {version}" in host.check_output("bash -lc 'nvcc --version'")
    assert f"/usr/local/cuda-{version}/lib64" in host.check_output("bash -lc 'echo $LD_LIBRARY_PATH'")


# --- nuclio ----------------------------------------------------------------------------------


def test_nuctl_is_the_pinned_file(host, pins, lab_role):
    """nuctl_sha256 when set, else the sha256 the lock file recorded on first use; none on a split lab's CVAT host."""
    if lab_role == "cvat":
        assert not host.file("/usr/local/bin/nuctl").exists, "nuctl on a split lab's CVAT host (its inference host deploys)"
        return
    arch = SUPPORTED_MACHINES[host.system_info.arch][0]
    nuctl = host.file("/usr/local/bin/nuctl")
    assert nuctl.mode == 0o755
    expected = (pins.get("nuctl_sha256") or {}).get(arch) or labforge_pins.pinned(
        labforge_pins.lock_path(pins.get("download_lock_file")), "nuctl", compat.nuctl_version(pins), arch)
    assert expected, "no sha256 for nuctl: neither nuctl_sha256 nor the lock file has one"
    assert nuctl.sha256sum == expected
    assert f"Label: {compat.nuctl_version(pins)}" in host.check_output("nuctl version")


# --- real GPU only (skipped without a loaded driver) ------------------------------------------


def test_loaded_driver_is_of_the_branch(host, pins, real_gpu):
    versions = host.check_output("nvidia-smi --query-gpu=driver_version --format=csv,noheader").split()
    assert versions and all(v.startswith(f"{pins['nvidia_driver_branch']}.") for v in versions), versions


def test_gpu_visible_in_docker(host, pins, real_gpu):
    image = pins.get("gpu_smoke_image", "nvidia/cuda:12.4.1-base-ubuntu22.04")
    assert "NVIDIA-SMI" in host.check_output(f"docker run --rm --gpus all {image} nvidia-smi")
