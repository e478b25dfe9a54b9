"""The hosts file: what it turns into, and the one-line errors for every way it can be wrong."""

from pathlib import Path

import pytest

from labforge.hostsfile import HostsFileError, load

REPO = Path(__file__).resolve().parents[2]


def write(tmp_path, text: str) -> Path:
    path = tmp_path / "hosts.yml"
    path.write_text(text)
    return path


def test_example_file_loads():
    groups = load(REPO / "hosts.example.yml")
    (name, data), = groups["gpu_servers"]
    assert name == "192.168.1.15"
    assert data["ssh_hostname"] == "192.168.1.15" and data["ssh_user"] == "ubuntu"
    assert data["cvat_host"] == "192.168.1.15" and data["reboot_after_driver"] is False
    assert [n for n, _ in groups["cpu_servers"]] == ["192.168.1.20"]


def test_vars_apply_to_all_and_host_data_wins(tmp_path):
    groups = load(write(tmp_path, """
vars: {apt_proxy: "http://cache:3142", cvat_host: shared}
cpu_servers:
  - 10.0.0.5
  - {host: 10.0.0.6, name: annot2, ssh_port: 2200, data: {cvat_host: annot2.lab}}
"""))
    (n1, d1), (n2, d2) = groups["cpu_servers"]
    assert (n1, d1["apt_proxy"], d1["cvat_host"]) == ("10.0.0.5", "http://cache:3142", "shared")
    assert (n2, d2["ssh_hostname"], d2["ssh_port"], d2["cvat_host"]) == ("annot2", "10.0.0.6", 2200, "annot2.lab")
    assert groups["gpu_servers"] == []


@pytest.mark.parametrize(
    ("text", "error"),
    [
        ("gpu_servers:\n  - {hots: 1.2.3.4}\n", "gpu_servers[0]: each host needs at least 'host: <address>'"),
        ("gpu_servers:\n  - {host: a, cvat_host: x}\n", "gpu_servers[0]: 'cvat_host' is a setting: put it under 'data:'"),
        ("gpu_servers:\n  - {host: a, ssh_usr: ubuntu}\n", "gpu_servers[0]: unknown key 'ssh_usr'; did you mean 'ssh_user'?"),
        ("gpu_servers:\n  - {host: a, data: {ssh_usr: ubuntu}}\n",
         "gpu_servers[0]: data: unknown setting 'ssh_usr'; did you mean 'ssh_user'?"),
        ("vars: {cvat_hots: x}\ncpu_servers: [a]\n", "vars: unknown setting 'cvat_hots'; did you mean 'cvat_host'?"),
        ("vars: {reboot_after_drivers: true}\ncpu_servers: [a]\n",
         "vars: unknown setting 'reboot_after_drivers'; did you mean 'reboot_after_driver'?"),
        ("vars: {zzz_qqq: 1}\ncpu_servers: [a]\n", "unknown setting 'zzz_qqq'; see group_data/all.py for the settings"),
        ("gpu_server:\n  - a\n", "unknown top-level keys ['gpu_server']"),
        ("cpu_servers: [a]\ngpu_servers: [a]\n", "host 'a' is listed twice"),
        ("vars: {apt_proxy: x}\n", "no hosts in gpu_servers or cpu_servers"),
        ("cpu_servers: a\n", "'cpu_servers' must be a list of hosts"),
        ("cpu_servers: [a\n", "not valid YAML"),
        ("- a\n", "expected a mapping"),
    ],
)
def test_bad_files_name_the_problem(tmp_path, text, error):
    with pytest.raises(HostsFileError) as err:
        load(write(tmp_path, text))
    assert error in str(err.value) and str(tmp_path) in str(err.value)


def test_missing_file(tmp_path):
    with pytest.raises(HostsFileError, match="cannot read hosts file"):
        load(tmp_path / "nope.yml")


def fake_vagrant(bin_dir: Path, stdout: str, rc: int = 0) -> Path:
    """A `vagrant` on PATH that logs each call (its directory and arguments) and prints ``stdout``."""
    bin_dir.mkdir(exist_ok=True)
    log = bin_dir / "calls"
    script = bin_dir / "vagrant"
    script.write_text(f"#!/bin/sh\necho \"$PWD $*\" >> {log}\nprintf '%s' '{stdout}'\nexit {rc}\n")  # builtins only: PATH has no cat
    script.chmod(0o755)
    return log


STATUS = "1796118481,{name},metadata,provider,libvirt\n1796118481,{name},state,{state}\n1796118481,{name},state-human-short,x\n"


def test_resolve_prefers_lab_hosts_then_hosts_yml_then_a_running_vagrant_vm(tmp_path, monkeypatch):
    from labforge import hostsfile

    monkeypatch.setattr(hostsfile, "DEFAULT", tmp_path / "hosts.yml")
    monkeypatch.setattr(hostsfile, "REPO", tmp_path)
    monkeypatch.setenv("PATH", str(tmp_path / "bin"))  # no vagrant
    monkeypatch.delenv("VAGRANT_DOTFILE_PATH", raising=False)
    assert hostsfile.resolve("elsewhere.yml") == Path("elsewhere.yml")
    with pytest.raises(HostsFileError) as err:
        hostsfile.resolve("")
    assert str(err.value) == hostsfile.NO_HOSTS
    assert "copy hosts.example.yml to hosts.yml" in str(err.value) and "LAB_HOSTS=" in str(err.value)
    assert "`vagrant up`" in str(err.value)

    # Vagrant installed (./install.sh installs it for the lint), no VM created: not the target, and not even asked
    calls = fake_vagrant(tmp_path / "bin", STATUS.format(name="noble", state="running"))
    with pytest.raises(HostsFileError, match="`vagrant up`"):
        hostsfile.resolve("")
    assert not calls.exists()

    # a VM created (Vagrant wrote its id) but stopped: Vagrant is asked, in the Vagrantfile's directory
    (tmp_path / ".vagrant/machines/noble/libvirt").mkdir(parents=True)
    (tmp_path / ".vagrant/machines/noble/libvirt/id").write_text("1f0c")
    fake_vagrant(tmp_path / "bin", STATUS.format(name="noble", state="shutoff"))
    with pytest.raises(HostsFileError, match="`vagrant up`"):
        hostsfile.resolve("")
    assert calls.read_text() == f"{tmp_path} status --machine-readable\n"

    fake_vagrant(tmp_path / "bin", "", rc=1)  # Vagrant fails (libvirt down, no provider): not running
    with pytest.raises(HostsFileError, match="`vagrant up`"):
        hostsfile.resolve("")

    fake_vagrant(tmp_path / "bin", STATUS.format(name="jammy", state="not_created") + STATUS.format(name="noble", state="running"))
    assert hostsfile.resolve("") is None  # the running VM (@vagrant)
    (tmp_path / "hosts.yml").write_text("cpu_servers: [a]\n")
    assert hostsfile.resolve("") == tmp_path / "hosts.yml"


def test_vagrant_running_reads_vagrants_dotfile_path(tmp_path, monkeypatch):
    from labforge import hostsfile

    monkeypatch.setenv("PATH", str(tmp_path / "bin"))
    calls = fake_vagrant(tmp_path / "bin", STATUS.format(name="noble", state="running"))
    (tmp_path / "state/machines/noble/virtualbox").mkdir(parents=True)
    (tmp_path / "state/machines/noble/virtualbox/id").write_text("9a2e")
    monkeypatch.delenv("VAGRANT_DOTFILE_PATH", raising=False)
    assert hostsfile.vagrant_running(tmp_path) is False and not calls.exists()  # .vagrant: nothing there
    monkeypatch.setenv("VAGRANT_DOTFILE_PATH", "state")  # relative to the Vagrantfile's directory, as Vagrant reads it
    assert hostsfile.vagrant_running(tmp_path) is True
    monkeypatch.setenv("VAGRANT_DOTFILE_PATH", str(tmp_path / "state"))
    assert hostsfile.vagrant_running(tmp_path) is True
