"""The product never leans on the test lab: no production module imports testlab/ or tests/, so a checkout without
them (or a wheel of labforge) still runs the deploy, the doctor and the checkers."""

from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

from labforge.paths import REPO

TEST_PACKAGES = ("testlab", "tests")


def production_modules() -> list[Path]:
    found = [*(REPO / name for name in ("deploy.py", "backup.py", "restore.py", "inventory.py")),
             *(REPO / "labforge").rglob("*.py"), *(REPO / "tasks").rglob("*.py"),
             *(REPO / "files").rglob("*.py")]
    return sorted(p for p in found if "__pycache__" not in p.parts)


def test_imports(path: Path) -> list[str]:
    """The test packages a module imports (import x / from x import y, at any depth of the file)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else \
            [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found += [n for n in names if n.split(".")[0] in TEST_PACKAGES]
    return found


test_imports.__test__ = False  # a helper, not a test


def test_no_production_module_imports_the_test_lab():
    modules = production_modules()
    assert len(modules) >= 40 and REPO / "labforge" / "tools" / "doctor" / "checks.py" in modules
    offenders = {str(p.relative_to(REPO)): test_imports(p) for p in modules if test_imports(p)}
    assert offenders == {}


def test_the_check_sees_an_import_of_the_lab(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from testlab.standins import cvat\n    import tests.lab.conftest\n")
    assert test_imports(planted) == ["testlab.standins", "tests.lab.conftest"]


def test_the_doctor_runs_in_a_checkout_without_the_tests_and_the_lab(tmp_path):
    """`./lab doctor` and `python -m labforge.tools.doctor` check real servers: a clone without tests/ and testlab/
    (and with no lab tools on PATH) still runs them to the doctor's own one-line answer."""
    clone = tmp_path / "labforge"
    shutil.copytree(REPO, clone, ignore=shutil.ignore_patterns(".git", ".venv", "tests", "testlab", "__pycache__", "*.pyc"))
    (clone / ".venv").symlink_to(Path(sys.prefix))  # ./lab runs on the clone's .venv: this one
    hosts = tmp_path / "hosts.yml"
    hosts.write_text("gpu_servers: []\ncpu_servers:\n  - {host: 127.0.0.1, name: nowhere, ssh_port: 1, ssh_user: root}\n")
    env = {"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path), "LAB_HOSTS": str(hosts)}
    for argv in ([sys.executable, "-m", "labforge.tools.doctor", "--connect-timeout", "1"],
                 [sys.executable, str(clone / "lab"), "doctor", "--connect-timeout", "1"]):
        proc = subprocess.run(argv, cwd=clone, env={**env, **({"PYTHONPATH": str(clone)} if "-m" in argv else {})},
                              capture_output=True, text=True, timeout=60)
        assert "Traceback" not in proc.stderr and "ModuleNotFoundError" not in proc.stderr, proc.stderr
        assert proc.stdout.startswith("nowhere FAIL") or "nowhere" in proc.stdout, (argv, proc.stdout, proc.stderr)
        assert proc.stderr.strip().splitlines()[-1] == "doctor: 1 hosts, 1 failed, 0 with warnings", proc.stderr
    assert not os.path.exists(clone / "tests") and not os.path.exists(clone / "testlab")


def list_conditions(path: Path) -> list[int]:
    """Lines where an operation's `_if=` is a list: pyinfra 3.10 runs it only when *every* callable is true
    (pyinfra/api/operation.py 329-331, `not all(_if() for _if in _ifs)`), so `_if=[a.did_change, b.did_change]`
    reads as "either changed" and means "both changed"."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Call):
            found += [node.lineno for kw in node.keywords if kw.arg == "_if" and isinstance(kw.value, (ast.List, ast.Tuple))]
    return found


def test_no_operation_is_conditioned_on_a_list():
    """Seen failing before: the backup timer's daemon-reload had `_if=[service.did_change, timer.did_change]`, so a new
    backup_schedule was written to the timer file and never loaded (CI: the timer kept its old calendar)."""
    found = {str(p.relative_to(REPO)): lines for p in production_modules() if (lines := list_conditions(p))}
    assert not found, f"use pyinfra.operations.util.any_changed / all_changed instead of a list: {found}"


def task_imports(path: Path) -> list[str]:
    """The tasks modules a module imports (import tasks.x / from tasks.x import y / from tasks import x)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [a.name for a in node.names if a.name.split(".")[0] == "tasks"]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and (node.module or "").split(".")[0] == "tasks":
            found.append(node.module or "")
        elif isinstance(node, ast.ImportFrom) and node.level > 0:
            found.append("." * node.level + (node.module or ""))
    return found


task_imports.__test__ = False  # a helper, not a test


def test_no_layer_imports_another_so_each_stays_a_layer():
    """tasks/ holds one @deploy per layer; what layers share lives in labforge/ (e.g. labforge/data_host.py, which
    the CVAT layer, the restore and preflight use), so no layer's import runs another's code or order."""
    layers = sorted(p for p in (REPO / "tasks").glob("*.py") if p.name != "__init__.py")
    assert len(layers) >= 10
    offenders = {p.name: task_imports(p) for p in layers if task_imports(p)}
    assert offenders == {}


def test_the_layer_check_sees_each_form_of_import(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("from tasks.backups import x\nimport tasks.cvat\nfrom . import nuclio\nfrom labforge import y\n")
    assert task_imports(planted) == ["tasks.backups", "tasks.cvat", "."]


CALLBACK_LINES = 8  # a python.call callback that says what an operation did; anything longer is library code


def helpers(path: Path) -> list[str]:
    """The top-level functions of a tasks module that are not a layer: not decorated with @deploy(...), and not a
    short private callback (`_name`, at most CALLBACK_LINES lines)."""
    found = []
    for node in ast.parse(path.read_text(), str(path)).body:
        if not isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        layer = any(isinstance(d, ast.Call) and getattr(d.func, "id", None) == "deploy" for d in node.decorator_list)
        callback = node.name.startswith("_") and node.end_lineno - node.lineno + 1 <= CALLBACK_LINES
        if not (layer or callback):
            found.append(node.name)
    return found


helpers.__test__ = False  # a helper, not a test


def test_tasks_hold_layers_only_and_their_helpers_live_in_labforge():
    """Seen failing before: tasks/cvat.py held 13 helpers (the address and TLS, the release move, the admin) and ten
    more sat in backups, cuda, exposure, functions, nuclio, nvidia and preflight; they live in labforge/ now
    (cvat_site.py, cvat_release.py, cvat_admin.py, nvidia_driver.py, ...), where other layers and tests can use them
    without importing a layer."""
    layers = sorted(p for p in (REPO / "tasks").glob("*.py") if p.name != "__init__.py")
    offenders = {p.name: names for p in layers if (names := helpers(p))}
    assert offenders == {}


def test_the_helper_check_sees_a_helper_and_a_long_callback(tmp_path):
    planted = tmp_path / "planted.py"
    body = "\n".join(f"    x{i} = {i}" for i in range(CALLBACK_LINES))
    planted.write_text("from pyinfra.api import deploy\n\n@deploy('L')\ndef layer():\n    pass\n\n"
                       "def _say(op):\n    pass\n\ndef helper():\n    pass\n\n"
                       f"def _long(op):\n{body}\n")
    assert helpers(planted) == ["helper", "_long"]
