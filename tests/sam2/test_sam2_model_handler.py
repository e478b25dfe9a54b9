"""ModelHandler on its own: loading through MODEL/MODEL_CFG/MODEL_DIR, the LRU, thread safety."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import torch
from model_handler import ModelHandler, image_key
from sam2_runtime import checkpoint_path, config_name, pick_device

from testlab.sam2.random_checkpoint import TINY_CFG
from testlab.sam2.support import synthetic_image

pytestmark = pytest.mark.filterwarnings("ignore::FutureWarning")


def test_weights_come_from_the_checkpoint_file(client, checkpoint):
    saved = torch.load(checkpoint, map_location="cpu", weights_only=True)
    assert set(saved) == {"model"}, "checkpoint must have Meta's layout: {'model': state_dict}"
    loaded = client.model.predictor.model.state_dict()
    assert set(loaded) == set(saved["model"])
    for name, tensor in saved["model"].items():
        assert torch.equal(loaded[name].cpu(), tensor), name


def test_device_is_cuda_when_available_else_cpu(client):
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert client.model.device.type == expected
    assert client.model.use_bf16 is False or expected == "cuda"


def test_pick_device_refuses_cuda_without_a_gpu():
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert pick_device("auto").type == "cpu"
    assert pick_device("cpu").type == "cpu"
    with pytest.raises(RuntimeError, match="no CUDA"):
        pick_device("cuda")


@pytest.mark.parametrize(
    ("given", "resolved"),
    [
        ("configs/sam2.1/sam2.1_hiera_l.yaml", "configs/sam2.1/sam2.1_hiera_l.yaml"),
        ("sam2.1_hiera_l.yaml", "configs/sam2.1/sam2.1_hiera_l.yaml"),
        ("sam2.1_hiera_t.yaml", "configs/sam2.1/sam2.1_hiera_t.yaml"),
        ("sam2.1_hiera_b+.yaml", "configs/sam2.1/sam2.1_hiera_b+.yaml"),
        ("configs/sam2/sam2_hiera_s.yaml", "configs/sam2/sam2_hiera_s.yaml"),
        # The seed's SAM 2.0 style: a bare name that sam2 also ships at its package root.
        ("sam2_hiera_l.yaml", "sam2_hiera_l.yaml"),
    ],
)
def test_model_cfg_names(given, resolved):
    assert config_name(given) == resolved


def test_unknown_model_cfg_lists_the_choices():
    with pytest.raises(ValueError, match=r"sam2\.1_hiera_x\.yaml.*configs/sam2\.1/sam2\.1_hiera_l\.yaml"):
        config_name("sam2.1_hiera_x.yaml")


def test_model_is_a_name_in_model_dir_or_an_absolute_path(checkpoint, tmp_path):
    assert checkpoint_path(checkpoint.name, checkpoint.parent) == checkpoint
    assert checkpoint_path(str(checkpoint), tmp_path) == checkpoint
    with pytest.raises(FileNotFoundError, match=r"MODEL='missing\.pt'"):
        checkpoint_path("missing.pt", tmp_path)


def test_a_missing_checkpoint_stops_the_worker_at_start(tmp_path):
    with pytest.raises(FileNotFoundError, match="checkpoint not found"):
        ModelHandler.from_env({"MODEL": "sam2.1_hiera_large.pt", "MODEL_DIR": str(tmp_path), "MODEL_CFG": TINY_CFG})


@pytest.mark.parametrize("raw", ["eight", "-1"])
def test_a_bad_cache_size_stops_the_worker_at_start(checkpoint, raw):
    with pytest.raises(ValueError, match="SAM2_CACHE_SIZE"):
        ModelHandler.from_env({"MODEL": str(checkpoint), "MODEL_CFG": TINY_CFG, "SAM2_CACHE_SIZE": raw})


def test_image_key_depends_on_pixels_and_shape():
    img = synthetic_image(32, 24, seed=9)
    assert image_key(img) == image_key(img.copy())
    changed = img.copy()
    changed[0, 0, 0] ^= 1
    assert image_key(changed) != image_key(img)
    # Same bytes, another shape: a different frame.
    assert image_key(img.reshape(24 * 2, 16, 3)) != image_key(img)


def test_lru_keeps_size_frames_and_evicts_the_least_recent(checkpoint):
    handler = ModelHandler.from_env({"MODEL": str(checkpoint), "MODEL_CFG": TINY_CFG, "SAM2_CACHE_SIZE": "1"})
    a, b = synthetic_image(64, 48, seed=10), synthetic_image(48, 64, seed=11)
    first = handler.handle(a, [(10, 10)], [])
    handler.handle(a, [(12, 10)], [])  # hit
    assert handler.stats["encoder_runs"] == 1 and handler.stats["cache_hits"] == 1
    assert handler.handle(b, [(10, 10)], []).shape == (64, 48)  # evicts a
    assert handler.stats["cache_evictions"] == 1 and handler.stats["cached_images"] == 1
    again = handler.handle(a, [(10, 10)], [])  # a was evicted: the encoder runs again, same answer
    assert handler.stats["encoder_runs"] == 3
    np.testing.assert_array_equal(first, again)


def test_concurrent_requests_on_two_frames_get_their_own_masks(client, frame_a, frame_b):
    """The predictor has one image slot; the lock must keep restore + decode of one request together."""
    model = client.model
    prompts = {"a": (frame_a, [(160, 120)]), "b": (frame_b, [(100, 75)])}
    expected = {name: model.handle(img, pos, []) for name, (img, pos) in prompts.items()}
    assert expected["a"].shape != expected["b"].shape
    runs = model.stats["encoder_runs"]

    jobs = ["a", "b"] * 8
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda name: (name, model.handle(prompts[name][0], prompts[name][1], [])), jobs))
    for name, mask in results:
        np.testing.assert_array_equal(mask, expected[name], err_msg=name)
    assert model.stats["encoder_runs"] == runs, "both frames were cached; no encoder run expected"


def test_handle_rejects_what_main_should_have_caught(client):
    with pytest.raises(ValueError, match="no prompt"):
        client.model.handle(synthetic_image(16, 16, seed=1), [], [])
    with pytest.raises(ValueError, match="H x W x 3 uint8"):
        client.model.handle(np.zeros((16, 16), dtype=np.uint8), [(1, 1)], [])


def test_the_checkpoint_helper_is_deterministic(tmp_path: Path):
    from testlab.sam2.random_checkpoint import write_random_checkpoint

    one = torch.load(write_random_checkpoint(tmp_path / "one.pt", seed=3), weights_only=True)["model"]
    two = torch.load(write_random_checkpoint(tmp_path / "two.pt", seed=3), weights_only=True)["model"]
    assert all(torch.equal(one[k], two[k]) for k in one)
