"""Facts pyinfra does not ship, each one read-only and exiting 0 so a missing thing never fails a host."""

from __future__ import annotations

import json
import re
import shlex

from pyinfra.api import FactBase


class NvidiaGpuDevices(FactBase[list[str]]):
    """PCI addresses of NVIDIA display/3D controllers (vendor 0x10de, class 0x03xxxx), from sysfs."""

    def command(self) -> str:
        return (
            "for d in /sys/bus/pci/devices/*; do "
            '[ -r "$d/vendor" ] || continue; '
            '[ "$(cat "$d/vendor")" = 0x10de ] || continue; '
            'case "$(cat "$d/class")" in 0x03*) basename "$d";; esac; '
            "done; true"
        )

    def process(self, output: list[str]) -> list[str]:
        return [line.strip() for line in output if line.strip()]


class InitProcess(FactBase[str]):
    """The name of PID 1 (the layers manage services through systemd)."""

    def command(self) -> str:
        return "cat /proc/1/comm 2>/dev/null || true"

    def process(self, output: list[str]) -> str:
        return output[0].strip() if output else ""

    @staticmethod
    def default() -> str:
        return ""


class Identity(FactBase[tuple[str, str]]):
    """(uid, user name) the deploy's commands run as: root directly, or through --sudo."""

    def command(self) -> str:
        return "echo \"$(id -u) $(id -un)\""

    def process(self, output: list[str]) -> tuple[str, str]:
        uid, _, name = (output[0] if output else "").strip().partition(" ")
        return uid, name


class AptHeldPackages(FactBase[list[str]]):
    """Packages marked `apt-mark hold`, so the hold operation can be a no-op."""

    def command(self) -> str:
        return "apt-mark showhold 2>/dev/null || true"

    def process(self, output: list[str]) -> list[str]:
        return sorted(line.strip() for line in output if line.strip())


# Names of the packages that carry the NVIDIA driver, in NVIDIA's CUDA repository (Ubuntu and Debian) and
# Ubuntu's archive: metapackages, the kernel module and its DKMS source, and the user-space libraries.
NVIDIA_DRIVER_PACKAGE = r"^(cuda-drivers|nvidia-driver|nvidia-dkms|nvidia-kernel|nvidia-utils|nvidia-compute-utils|" \
                        r"nvidia-firmware|libnvidia-compute|libnvidia-gl|libcuda1|firmware-nvidia-gsp)"


class NvidiaDriverPackages(FactBase[dict[str, str]]):
    """Installed NVIDIA driver packages: name -> version (the driver's, e.g. 550.163.01-1)."""

    def command(self) -> str:
        return ("dpkg-query -W -f '${db:Status-Abbrev} ${Package} ${Version}\\n' 2>/dev/null | "
                f"awk 'substr($1, 2, 1) == \"i\" && $2 ~ /{NVIDIA_DRIVER_PACKAGE}/ {{print $2, $3}}'")

    def process(self, output: list[str]) -> dict[str, str]:
        return dict(line.split(None, 1) for line in output if len(line.split()) == 2)

    @staticmethod
    def default() -> dict[str, str]:
        return {}


class DockerDaemonConfig(FactBase[dict | None]):
    """/etc/docker/daemon.json parsed (None when absent); raises on invalid JSON so we never build on it."""

    def command(self) -> str:
        return "cat /etc/docker/daemon.json 2>/dev/null || true"

    def process(self, output: list[str]) -> dict | None:
        text = "\n".join(output).strip()
        if not text:
            return None
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ValueError(f"/etc/docker/daemon.json is not valid JSON ({exc}); fix it by hand first") from exc
        if not isinstance(value, dict):
            raise ValueError("/etc/docker/daemon.json is not a JSON object; fix it by hand first")
        return value


class NuctlVersion(FactBase[str | None]):
    """Version label printed by an installed nuctl (None when absent or unreadable)."""

    def command(self, path: str = "/usr/local/bin/nuctl") -> str:
        return f"{path} version 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        match = re.search(r"Label:\s*v?([0-9][0-9A-Za-z.\-]*)", "\n".join(output))
        return match.group(1).rstrip(",") if match else None


class GitTagsAtHead(FactBase[list[str] | None]):
    """Tags that point at HEAD of a checkout (None when the directory is not a git checkout)."""

    def command(self, path: str) -> str:
        return f"if [ -d {path}/.git ]; then git -C {path} tag --points-at HEAD; echo __labforge_git__; fi; true"

    def process(self, output: list[str]) -> list[str] | None:
        lines = [line.strip() for line in output if line.strip()]
        if "__labforge_git__" not in lines:
            return None
        return [line for line in lines if line != "__labforge_git__"]


class EphemeralPortRange(FactBase[tuple[int, int] | None]):
    """The kernel's ephemeral port range (/proc/sys/net/ipv4/ip_local_port_range), where Docker picks the host ports
    it publishes at random (moby libnetwork/portallocator/portallocator_linux.go getDynamicPortRange); None unread."""

    def command(self) -> str:
        return "cat /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null; true"

    def process(self, output: list[str]) -> tuple[int, int] | None:
        fields = " ".join(output).split()
        if len(fields) == 2 and all(field.isdigit() for field in fields):
            return int(fields[0]), int(fields[1])
        return None


class PrimaryIpv4(FactBase[str | None]):
    """IPv4 address of the interface holding the default route (what LAN users reach the host on)."""

    def command(self) -> str:
        return (
            "dev=$(ip -4 route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == \"dev\") {print $(i+1); exit}}'); "
            "[ -n \"$dev\" ] && ip -4 -o addr show dev \"$dev\" scope global | awk '{split($4, a, \"/\"); print a[1]; exit}'; true"
        )

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None


def _json_documents(text: str) -> list:
    """A JSON array, one object, or one object per line (docker compose ps changed formats across versions)."""
    text = text.strip()
    if not text:
        return []
    try:
        value = json.loads(text)
        return value if isinstance(value, list) else [value]
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip().startswith("{")]


class ComposeServiceStates(FactBase[dict[str, str] | None]):
    """service -> state for a compose project's containers (None when docker/compose cannot answer)."""

    def command(self, project: str, cvat_dir: str, compose_args: str) -> str:
        return (f"cd {cvat_dir} 2>/dev/null && docker compose -p {project} {compose_args} ps --all --format json "
                "2>/dev/null || echo __labforge_unavailable__")

    def process(self, output: list[str]) -> dict[str, str] | None:
        if any("__labforge_unavailable__" in line for line in output):
            return None
        return {str(c.get("Service")): str(c.get("State", "")).lower() for c in _json_documents("\n".join(output))}


class DockerVolumeDevice(FactBase[str | None]):
    """The `device` option a named volume was created with (None when the volume does not exist).

    Docker never changes a named volume's options after it was created, and Compose reuses an existing
    volume as it is (seen with Docker Compose 2.40.3 on a real engine in the test lab): a bind volume keeps
    pointing at its old directory until it is removed and created again.
    """

    def command(self, volume: str) -> str:
        return f"docker volume inspect {volume} --format '{{{{index .Options \"device\"}}}}' 2>/dev/null || true"

    def process(self, output: list[str]) -> str | None:
        text = "\n".join(output).strip()
        return text or None


class CvatSuperusers(FactBase[list[str] | None]):
    """Superuser names in the running CVAT (None when cvat_server cannot be asked)."""

    def command(self, manage_py: str = "/home/django/manage.py") -> str:  # the release's (cvat_stack_compat)
        script = ("from django.contrib.auth import get_user_model as m; "
                  "print(chr(10).join(m().objects.filter(is_superuser=True).values_list(\"username\", flat=True)))")
        return (f"docker exec cvat_server python3 {manage_py} shell -c '{script}' 2>/dev/null "
                "&& echo __labforge_ok__ || true")

    def process(self, output: list[str]) -> list[str] | None:
        lines = [line.strip() for line in output if line.strip()]
        if "__labforge_ok__" not in lines:
            return None
        return [line for line in lines if line != "__labforge_ok__"]


class NuclioFunctions(FactBase[list[dict]]):
    """Deployed Nuclio functions as {name, state, labels}; [] when none or nuctl cannot answer.

    pyinfra returns a fact's default() when its command prints nothing (no nuctl yet): [] as well.
    """

    @staticmethod
    def default() -> list[dict]:
        return []

    def command(self) -> str:
        return "nuctl get functions --platform local -o json 2>/dev/null || true"

    def process(self, output: list[str]) -> list[dict]:
        text = "\n".join(output).strip()
        if not text.startswith(("{", "[")):
            return []  # "No functions found", or an error text
        try:
            docs = _json_documents(text)
        except json.JSONDecodeError:
            return []
        return [{"name": d.get("metadata", {}).get("name"), "state": d.get("status", {}).get("state"),
                 "labels": d.get("metadata", {}).get("labels") or {}} for d in docs if isinstance(d, dict)]


class LoginUser(FactBase[str]):
    """The user the SSH connection logged in as, also under --sudo (sudo sets SUDO_USER)."""

    def command(self) -> str:
        return 'echo "${SUDO_USER:-$(id -un)}"'

    def process(self, output: list[str]) -> str:
        return output[0].strip()


class BackupList(FactBase[dict[str, dict]]):
    """The backups in the repository, from `labforge-data list`: {name: {"cvat_tag": release, "kind": kind}} ({} while
    labforge-data is not installed or the repository is empty)."""

    def command(self, program: str) -> str:
        return f"test -x {program} && {program} list 2>/dev/null || echo '[]'"

    def process(self, output: list[str]) -> dict[str, dict]:
        from labforge.backups import listing

        return listing(output)

    @staticmethod
    def default() -> dict[str, dict]:
        return {}


class TrimmedSha256(FactBase[str | None]):
    """sha256 of a file's content with surrounding whitespace trimmed (as restic reads a password file), None when
    there is no file, `unreadable` when there is one that cannot be read: compares a secret without reading it off
    the host."""

    def command(self, path: str) -> str:
        program = ("import hashlib,sys; b=open(sys.argv[1],'rb').read(); b=b[3:] if b.startswith(b'\\xef\\xbb\\xbf') else b; "
                   "print(hashlib.sha256(b.strip()).hexdigest())")
        quoted = shlex.quote(path)
        return (f"if [ -e {quoted} ]; then python3 -c {shlex.quote(program)} {quoted} 2>/dev/null || echo unreadable; "
                "fi; true")

    def process(self, output: list[str]) -> str | None:
        return output[0].strip() if output and output[0].strip() else None

    @staticmethod
    def default() -> None:
        return None
