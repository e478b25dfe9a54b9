"""Pure helpers the layers build on: apt sources, fact parsers, the runtime check, the summary's layer names."""

import subprocess

import pytest

from labforge import aptsource, facts
from labforge.daemon_json import has_nvidia_runtime
from labforge.report import layer_of


def test_deb822_source_has_signed_by_and_no_empty_fields():
    text = aptsource.render(uris="https://download.docker.com/linux/ubuntu", suites="noble", components="stable",
                            architectures="amd64", signed_by="/etc/apt/keyrings/docker.asc")
    assert text.splitlines()[1:] == ["Types: deb", "URIs: https://download.docker.com/linux/ubuntu", "Suites: noble",
                                     "Components: stable", "Architectures: amd64", "Signed-By: /etc/apt/keyrings/docker.asc"]
    flat = aptsource.render(uris="https://nvidia.github.io/libnvidia-container/stable/deb/amd64", suites="/",
                            signed_by="/etc/apt/keyrings/nvidia-container-toolkit.asc")
    assert "Components" not in flat and "Architectures" not in flat and "Suites: /\n" in flat


def test_daemon_config_fact_parses_and_refuses_garbage():
    fact = facts.DockerDaemonConfig()
    assert fact.process([]) is None
    assert fact.process(['{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}'])["runtimes"]
    with pytest.raises(ValueError, match="not valid JSON"):
        fact.process(['{"runtimes": '])
    with pytest.raises(ValueError, match="not a JSON object"):
        fact.process(["[]"])


@pytest.mark.parametrize(
    ("config", "expected"),
    [(None, False), ({}, False), ({"runtimes": {}}, False), ({"runtimes": {"nvidia": {}}}, True),
     ({"data-root": "/srv/docker", "runtimes": {"nvidia": {"args": []}}}, True)],
)
def test_has_nvidia_runtime(config, expected):
    assert has_nvidia_runtime(config) is expected


def test_nuctl_version_fact():
    fact = facts.NuctlVersion()
    assert fact.process(['Client version:', '"Label: 1.13.23, Git commit: abc, OS: linux, Arch: amd64"']) == "1.13.23"
    assert fact.process([]) is None
    assert fact.process(["bash: nuctl: command not found"]) is None


def test_gpu_device_fact_command_runs_and_exits_zero():
    """Run the real sysfs scan here: it must exit 0 and list only PCI addresses (none on a CPU-only CI machine)."""
    fact = facts.NvidiaGpuDevices()
    proc = subprocess.run(["sh", "-c", fact.command()], capture_output=True, text=True)
    assert proc.returncode == 0
    for address in fact.process(proc.stdout.splitlines()):
        assert address.count(":") == 2


def test_apt_held_fact():
    assert facts.AptHeldPackages().process(["nvidia-driver-550-server", "", "cuda-drivers-550"]) == [
        "cuda-drivers-550", "nvidia-driver-550-server"]


def test_summary_groups_ops_by_layer():
    assert layer_of({"NVIDIA driver | Hold x"}) == "NVIDIA driver"
    assert layer_of({"Some op"}) == "(top level)"
