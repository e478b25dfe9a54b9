"""Fixtures for the SAM 2 function tests: a real tiny SAM 2.1 checkpoint, the function loaded
through its production path (env vars -> init_context -> ModelHandler), and nuclio-sdk events.

Everything model-related is session-scoped: building and loading the model costs seconds, and
each new image costs one image-encoder run (~3 s on a 2-core CPU), so tests share both.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import numpy as np
import pytest

HERE = str(Path(__file__).resolve().parent)
if HERE not in sys.path:
    sys.path.insert(0, HERE)

try:
    import sam2  # noqa: F401
    import torch  # noqa: F401
except ImportError as exc:  # fail loudly: a CI without these must not pass by skipping
    raise ImportError(
        "tests/sam2 need torch and sam2: .venv/bin/pip install torch==2.13.0 torchvision==0.28.0 && "
        "SAM2_BUILD_CUDA=0 .venv/bin/pip install --no-build-isolation sam2==1.1.0 (requirements-sam2.txt)"
    ) from exc

from torchvision_cpu import allow_import  # noqa: E402

allow_import()

from random_checkpoint import TINY_CFG, TINY_NAME, write_random_checkpoint  # noqa: E402
from sam2_support import Client, load_function_main, make_context, synthetic_image  # noqa: E402


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
