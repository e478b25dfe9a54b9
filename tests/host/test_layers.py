"""testinfra suite for provisioned hosts: `pytest tests/host --hosts=ssh://user@server [--role=gpu|cpu]`."""

from __future__ import annotations

import json

import pytest

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


def test_docker_packages_from_docker_repo(host, pins):
    for package in pins["docker_packages"]:
        assert host.package(package).is_installed, package
    for package in pins["docker_conflicting_packages"]:
        assert not host.package(package).is_installed, package


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


def test_driver_installed_and_held(host, pins, distro, gpu_host):
    package = pins.get("nvidia_driver_package") or pins["nvidia_driver_packages"][distro]
    assert host.package(package).is_installed
    assert package in host.check_output("apt-mark showhold").split()


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


def test_no_driver_on_cpu_host(host, pins, gpu_role, distro):
    if gpu_role:
        pytest.skip("GPU host")
    package = pins.get("nvidia_driver_package") or pins["nvidia_driver_packages"][distro]
    assert not host.package(package).is_installed


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


def test_nuctl_pinned(host, pins):
    arch = SUPPORTED_MACHINES[host.system_info.arch][0]
    nuctl = host.file("/usr/local/bin/nuctl")
    assert nuctl.mode == 0o755
    assert nuctl.sha256sum == pins["nuctl_sha256"][arch]
    assert f"Label: {pins['nuctl_version']}" in host.check_output("nuctl version")


# --- real GPU only (skipped without a loaded driver) ------------------------------------------


def test_nvidia_smi(host, real_gpu):
    assert "Driver Version: 550." in host.check_output("nvidia-smi")


def test_gpu_visible_in_docker(host, pins, real_gpu):
    image = pins.get("gpu_smoke_image", "nvidia/cuda:12.4.1-base-ubuntu22.04")
    assert "NVIDIA-SMI" in host.check_output(f"docker run --rm --gpus all {image} nvidia-smi")
