"""The product never leans on the test lab: no production module imports testlab/ or tests/, so a checkout without
them (or a wheel of labforge) still runs the deploy, the doctor and the checkers."""

from __future__ import annotations

import ast
from pathlib import Path

from labforge.paths import REPO

TEST_PACKAGES = ("testlab", "tests")


def production_modules() -> list[Path]:
    found = [REPO / "deploy.py", REPO / "inventory.py", *(REPO / "labforge").rglob("*.py"), *(REPO / "tasks").rglob("*.py"),
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
    assert len(modules) >= 40 and REPO / "labforge" / "doctor.py" in modules
    offenders = {str(p.relative_to(REPO)): test_imports(p) for p in modules if test_imports(p)}
    assert offenders == {}


def test_the_check_sees_an_import_of_the_lab(tmp_path):
    planted = tmp_path / "planted.py"
    planted.write_text("def f():\n    from testlab.standins import cvat\n    import tests.lab.conftest\n")
    assert test_imports(planted) == ["testlab.standins", "tests.lab.conftest"]
