"""labforge/aptsource.py: deb822 sources with Signed-By and no empty fields."""

from labforge import aptsource


def test_deb822_source_has_signed_by_and_no_empty_fields():
    text = aptsource.render(uris="https://download.docker.com/linux/ubuntu", suites="noble", components="stable",
                            architectures="amd64", signed_by="/etc/apt/keyrings/docker.asc")
    assert text.splitlines()[1:] == ["Types: deb", "URIs: https://download.docker.com/linux/ubuntu", "Suites: noble",
                                     "Components: stable", "Architectures: amd64", "Signed-By: /etc/apt/keyrings/docker.asc"]
    flat = aptsource.render(uris="https://nvidia.github.io/libnvidia-container/stable/deb/amd64", suites="/",
                            signed_by="/etc/apt/keyrings/nvidia-container-toolkit.asc")
    assert "Components" not in flat and "Architectures" not in flat and "Suites: /\n" in flat
