"""The NVIDIA driver branch as apt sees it, for the NVIDIA driver layer (tasks/nvidia.py, whose docstring says why
a branch is pinned this way): the apt preferences file that holds the branch, and the check that every installed
driver package is of it."""

from __future__ import annotations

from labforge.facts import NvidiaDriverPackages

# The packages that carry the driver (kernel module, its DKMS source, user-space libraries, metapackages),
# as NVIDIA's and Ubuntu's repositories name them; their versions are the driver's (550.163.01-...).
PINNED_PATTERNS = "cuda-drivers* nvidia-driver* nvidia-dkms* nvidia-kernel* nvidia-utils* nvidia-compute-utils* " \
                  "nvidia-firmware* libnvidia-* libcuda1* libnvcuvid* libnvoptix* xserver-xorg-video-nvidia* firmware-nvidia-gsp*"


def branch_pin(branch: str) -> str:
    return (f"# Managed by labforge: NVIDIA driver branch {branch} only, as NVIDIA's nvidia-driver-pinning packages\n"
            f"# pin a branch (a version pin at priority 1000 also moves a newer branch back to this one).\n"
            f"Package: {PINNED_PATTERNS}\nPin: version {branch}.*\nPin-Priority: 1000\n")


def off_branch_command(branch: str) -> str:
    """Shell: fail with one line if an installed driver package is not of the branch."""
    return (f"bad=$({NvidiaDriverPackages().command()} | awk '$2 !~ /^{branch}\\./ {{printf \"%s %s, \", $1, $2}}'); "
            f"[ -z \"$bad\" ] || {{ echo \"labforge: NVIDIA driver packages not on branch {branch}: ${{bad%, }}; "
            f"purge them (apt-get purge) and run again\" >&2; exit 1; }}")
