"""Which hosts the deploy accepts, and what it derives from them (repo names, architectures)."""

import pytest

from labforge.platform import UnsupportedHost, detect


@pytest.mark.parametrize(
    ("distro", "version", "machine", "codename", "deb_arch", "cuda_dir"),
    [
        ("ubuntu", "22.04", "x86_64", "jammy", "amd64", "ubuntu2204/x86_64"),
        ("ubuntu", "24.04", "aarch64", "noble", "arm64", "ubuntu2404/sbsa"),
        ("debian", "12", "x86_64", "bookworm", "amd64", "debian12/x86_64"),
    ],
)
def test_supported(distro, version, machine, codename, deb_arch, cuda_dir):
    p = detect({"ID": distro, "VERSION_ID": version}, machine, "h1")
    assert (p.codename, p.deb_arch, f"{p.cuda_distro}/{p.cuda_arch}") == (codename, deb_arch, cuda_dir)


@pytest.mark.parametrize(
    ("meta", "shown"),
    [
        ({"ID": "ubuntu", "VERSION_ID": "20.04", "PRETTY_NAME": "Ubuntu 20.04.6 LTS"}, "Ubuntu 20.04.6 LTS"),
        ({"ID": "debian", "VERSION_ID": "11"}, "debian 11"),
        ({"ID": "rocky", "VERSION_ID": "9.3", "PRETTY_NAME": "Rocky Linux 9.3"}, "Rocky Linux 9.3"),
        ({}, "unknown"),
    ],
)
def test_unsupported_distro_is_one_clear_line(meta, shown):
    with pytest.raises(UnsupportedHost) as err:
        detect(meta, "x86_64", "h1")
    message = str(err.value)
    assert message.startswith(f"h1: unsupported distro '{shown}'")
    assert "Ubuntu 22.04" in message and "Nothing was changed." in message and "\n" not in message


def test_unsupported_architecture():
    with pytest.raises(UnsupportedHost, match="h1: unsupported architecture 'ppc64le'"):
        detect({"ID": "ubuntu", "VERSION_ID": "24.04"}, "ppc64le", "h1")
