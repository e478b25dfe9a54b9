"""labforge/facts.py: the fact parsers, and the GPU scan run for real on this machine."""

import subprocess

import pytest

from labforge import facts


def test_daemon_config_fact_parses_and_refuses_garbage():
    fact = facts.DockerDaemonConfig()
    assert fact.process([]) is None
    assert fact.process(['{"runtimes": {"nvidia": {"path": "nvidia-container-runtime"}}}'])["runtimes"]
    with pytest.raises(ValueError, match="not valid JSON"):
        fact.process(['{"runtimes": '])
    with pytest.raises(ValueError, match="not a JSON object"):
        fact.process(["[]"])


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


def test_the_password_digest_fact_reads_as_restic_does_and_tells_unreadable_from_absent(tmp_path):
    """Run for real with sh and python3: a byte order mark and surrounding whitespace dropped (restic's textfile.Read
    and resolvePassword); a path that is there but is no readable file is `unreadable`, never None (None would have
    the file's password copied over it)."""
    import hashlib

    password = tmp_path / "pw"
    password.write_bytes(b"\xef\xbb\xbf  s3cret \n")

    def answer(path) -> str | None:
        fact = facts.TrimmedSha256()
        out = subprocess.run(["sh", "-c", fact.command(str(path))], capture_output=True, text=True, check=True).stdout
        return fact.process(out.splitlines())

    assert answer(password) == hashlib.sha256(b"s3cret").hexdigest()
    assert answer(tmp_path) == "unreadable" and answer(tmp_path / "absent") is None
