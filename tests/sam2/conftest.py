"""Fixtures for the SAM 2 function tests: a real tiny SAM 2.1 checkpoint, the function loaded
through its production path (env vars -> init_context -> ModelHandler), and nuclio-sdk events.

Everything model-related is session-scoped: building and loading the model costs seconds, and
each new image costs one image-encoder run (~3 s on a 2-core CPU), so tests share both.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING

import pytest

from tests.conftest import in_ci

if TYPE_CHECKING:
    import numpy as np

try:  # the SAM 2 stack, in its CPU form (./install.sh installs it)
    import nuclio_sdk  # noqa: F401
    import numpy  # noqa: F401
    import sam2  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:
    MISSING = f"tests/sam2 need the SAM 2 stack ({exc}); run ./install.sh"
    if in_ci():
        raise ImportError(f"CI=true but {MISSING}") from exc
else:
    MISSING = None
    from testlab.sam2.torchvision_cpu import allow_import

    allow_import()


class _NeedsSam2(pytest.File):
    """Stands for a test module that cannot be imported here: one skipped item saying why."""

    def collect(self):
        yield _Skipped.from_parent(self, name="needs the SAM 2 stack")


class _Skipped(pytest.Item):
    def runtest(self):
        pytest.skip(MISSING)

    def reportinfo(self):
        return self.path, 0, self.name


def pytest_pycollect_makemodule(module_path, parent):
    if MISSING:
        return _NeedsSam2.from_parent(parent, path=module_path)
    return None


if not MISSING:
    from testlab.sam2.random_checkpoint import TINY_CFG, TINY_NAME, write_random_checkpoint
    from testlab.sam2.support import Client, load_function_main, make_context, synthetic_image


@pytest.fixture(scope="session")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny SAM 2.1 architecture with seeded random weights, saved as {"model": state_dict}."""
    return write_random_checkpoint(tmp_path_factory.mktemp("sam2-models") / TINY_NAME, TINY_CFG, seed=0)


@pytest.fixture(scope="session")
def function_env(checkpoint: Path) -> Iterator[dict[str, str]]:
    """MODEL/MODEL_CFG/MODEL_DIR pointing at the test checkpoint, as the YAML's spec.env would."""
    env = {
        "MODEL": checkpoint.name,
        "MODEL_DIR": str(checkpoint.parent),
        "MODEL_CFG": TINY_CFG,
        "SAM2_CACHE_SIZE": "8",
        "CVAT_INTERACTOR_ANSWER": "bounds",  # v2.51.0's, which Client.mask reads (placement per release: test_sam2_placement)
    }
    with pytest.MonkeyPatch.context() as mp:
        for key, value in env.items():
            mp.setenv(key, value)
        for key in ("MAX_IMAGE_PIXELS", "SAM2_DEVICE"):
            mp.delenv(key, raising=False)
        yield env


@pytest.fixture(scope="session")
def function_main() -> ModuleType:
    return load_function_main()


@pytest.fixture(scope="session")
def client(function_env: dict[str, str], function_main: ModuleType) -> Client:
    """The function after init_context, shared by the session (one model in memory)."""
    context = make_context()
    function_main.init_context(context)
    return Client(function_main, context)


@pytest.fixture(scope="session")
def small_image() -> np.ndarray:
    """64 x 48 frame whose embedding the session keeps cached (cheap 200s for the fuzz test)."""
    return synthetic_image(64, 48, seed=1)


@pytest.fixture(scope="session")
def frame_a() -> np.ndarray:
    return synthetic_image(320, 240, seed=2)


@pytest.fixture(scope="session")
def frame_b() -> np.ndarray:
    return synthetic_image(200, 150, seed=3)


def pytest_terminal_summary(terminalreporter):
    """The negative controls' margins measured by this run (tests/sam2/equivalence.py)."""
    if MISSING:
        return
    from equivalence import MARGINS

    if MARGINS:
        terminalreporter.section("SAM 2 equivalence: negative controls")
        for m in MARGINS:
            terminalreporter.line(f"{m.control} | {m.comparison} | control: {m.control_difference} | ours: {m.our_difference}"
                                  f" | tolerance: {m.tolerance}")
