"""A real SAM 2.1 checkpoint whose masks are blobs at the prompt: tests that can see where a mask lands.

Why: with random weights (random_checkpoint.py) SAM 2's masks cover the whole frame, so an answer placed at the
wrong corner, or pasted into the wrong region, still looks right (v2.73.0 once drew our compact answer at the
frame's top-left corner and every test passed). Training is out of reach here (no model hubs, a 2-core CPU), so
this module sets the weights of the real tiny architecture by hand so that, for any image, the mask is the set of
pixels q near the prompt p, in the normalised coordinates ``t = 2 * (x / width) - 1`` in which SAM 2 encodes
prompts:

    logit(q) = GAIN * (sum_k cos(2 pi b_k . (t_p - t_q)) - LEVEL * K)

with K = 7 frequency vectors b_k (``FREQUENCIES``). It is built from the two positional signals SAM 2's image
path already has, joined by the mask decoder's dot product (sam2/modeling/sam/mask_decoder.py ``predict_masks``:
``masks = hyper_in @ upscaled_embedding``):

- the pixel side: the Hiera trunk's ``pos_embed`` (7 x 7, bicubic to the stride-4 grid: hieradet.py
  ``_get_pos_embed``) holds sin/cos of ``2 pi b_k . t`` at its sample centres; the patch embedding, the window
  embedding and every block's residual branches are zero, so stage 0's output is that embedding (hieradet.py
  ``forward``); the FPN's level-0 lateral 1x1 conv (image_encoder.py ``FpnNeck``: levels 0-1 take no top-down
  path) and the decoder's ``conv_s0`` copy it as ``[e, -e, 1]`` into ``feat_s0``; ``dc2`` is zero, so
  ``upscaled_embedding = GELU(feat_s0)`` and GELU(e) - GELU(-e) = e restores it exactly;
- the prompt side: the prompt encoder's Gaussian matrix holds the same b_k (position_encoding.py ``_pe_encoding``),
  every learned token and point-type embedding is zero, the first self-attention has zero query/key projections
  (uniform attention: each token becomes the mean of the values, transformer.py ``TwoWayAttentionBlock`` with
  ``skip_first_layer_pe``) and a value projection that picks ``[f, -f]``; every later residual branch is zero and
  the LayerNorms keep its direction; the hypernetwork MLPs pass it through their ReLUs as pairs and end on
  ``GAIN * [f, -f]`` plus a bias against the constant channel.

So a click gives one blob around it (about 18% of the frame's width and 16% of its height), several clicks or a
box's two corners give blobs around each, and nothing depends on the pixels. Only the interactor's path is set:
the video memory keeps its random weights and the object score head answers "present", so the tracker runs but
follows nothing (tests/sam2/test_sam2_tracker.py uses the random checkpoint).
"""

from __future__ import annotations

import math
from pathlib import Path

from testlab.sam2.random_checkpoint import TINY_CFG

PLACED_NAME = "sam2.1_hiera_tiny_placed.pt"
# cycles per unit of t, seven directions over half a turn; low enough for the 7 x 7 embedding to carry them
FREQUENCIES = tuple((m * math.cos(k * math.pi / 7), m * math.sin(k * math.pi / 7))
                    for k, m in enumerate((0.55, 0.75, 0.6, 0.8, 0.65, 0.7, 0.5)))
LEVEL = 0.9  # a pixel is in the mask where the kernel reaches this share of its peak
GAIN = 8.0


def write_placed_checkpoint(path: str | Path, config: str = TINY_CFG) -> Path:
    """Build ``config`` (a SAM 2.1 Hiera config) with the weights above and save it as {"model": state_dict}."""
    import torch
    import torch.nn.functional as F

    k = len(FREQUENCIES)
    b = torch.tensor(FREQUENCIES, dtype=torch.float32).T  # (2, K)
    model = _build(config)
    with torch.no_grad():
        _pixel_side(model, b, k)
        _prompt_side(model, b, k, torch, F)
        _object_always_present(model.sam_mask_decoder)
    return _save(model, path)


def _build(config: str):
    """The architecture of ``config`` with PyTorch's seeded initialisation (what the hand-set weights start from)."""
    import torch

    from sam2.build_sam import build_sam2

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return build_sam2(config, ckpt_path=None, device="cpu")


def _save(model, path: str | Path) -> Path:
    """Saved as Meta ships checkpoints: {"model": state_dict}."""
    import torch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"model": model.state_dict()}, path)
    return path


def _object_always_present(decoder) -> None:
    """"An object is there" on every frame (sam2_base.py ``_forward_sam_heads`` masks out frames whose object score
    is not positive)."""
    head = getattr(decoder, "pred_obj_score_head", None)
    if head is not None:
        last = head.layers[-1] if hasattr(head, "layers") else head
        _zero(last)
        last.bias.fill_(10.0)


def _zero(*modules) -> None:
    for module in modules:
        module.weight.zero_()
        if module.bias is not None:
            module.bias.zero_()


def _pixel_side(model, b, k: int) -> None:
    import torch

    trunk = model.image_encoder.trunk
    _zero(trunk.patch_embed.proj)
    trunk.pos_embed_window.zero_()
    for block in trunk.blocks:
        _zero(block.attn.proj, block.mlp.layers[-1])
    n = trunk.pos_embed.shape[-1]
    centres = (torch.arange(n, dtype=torch.float32) + 0.5) / n * 2 - 1  # t of each sample (align_corners=False)
    ty, tx = torch.meshgrid(centres, centres, indexing="ij")
    phase = 2 * math.pi * (tx[None] * b[0][:, None, None] + ty[None] * b[1][:, None, None])
    embed = torch.zeros_like(trunk.pos_embed)
    embed[0, :k], embed[0, k : 2 * k], embed[0, 2 * k] = torch.sin(phase), torch.cos(phase), 1.0
    trunk.pos_embed.copy_(embed)
    neck = model.image_encoder.neck
    lateral = neck.convs[len(neck.convs) - 1].conv  # level 0 (FpnNeck.forward: convs[n - i])
    _zero(lateral)
    for i in range(2 * k + 1):
        lateral.weight[i, i, 0, 0] = 1.0
    decoder = model.sam_mask_decoder
    _zero(decoder.conv_s0)
    for i in range(2 * k):
        decoder.conv_s0.weight[i, i, 0, 0] = 1.0
        decoder.conv_s0.weight[2 * k + i, i, 0, 0] = -1.0
    decoder.conv_s0.weight[4 * k, 2 * k, 0, 0] = 1.0  # the constant channel
    _zero(decoder.output_upscaling[3])  # dc2: upscaled_embedding = GELU(feat_s0)


def _prompt_side(model, b, k: int, torch, F) -> None:
    prompts = model.sam_prompt_encoder
    gaussian = prompts.pe_layer.positional_encoding_gaussian_matrix
    half = gaussian.shape[1]
    gaussian.zero_()
    gaussian[:, :k] = b
    for embedding in (*prompts.point_embeddings, prompts.not_a_point_embed):
        embedding.weight.zero_()
    decoder = model.sam_mask_decoder
    for token in (decoder.iou_token, decoder.mask_tokens, getattr(decoder, "obj_score_token", None)):
        if token is not None:
            token.weight.zero_()
    for index, layer in enumerate(decoder.transformer.layers):
        attention = layer.self_attn
        if index == 0:  # uniform attention over the tokens; values [sin_k, cos_k, -sin_k, -cos_k]
            _zero(attention.q_proj, attention.k_proj, attention.v_proj)
            for i in range(k):
                for row, column in ((i, i), (k + i, half + i)):
                    attention.v_proj.weight[row, column] = 1.0
                    attention.v_proj.weight[2 * k + row, column] = -1.0
            attention.out_proj.weight.copy_(torch.eye(attention.out_proj.weight.shape[0]))
            attention.out_proj.bias.zero_()
        else:
            _zero(attention.out_proj)
        _zero(layer.cross_attn_token_to_image.out_proj, layer.cross_attn_image_to_token.out_proj, layer.mlp.layers[-1])
    _zero(decoder.transformer.final_attn_token_to_image.out_proj)
    scale = GAIN * math.sqrt(2 * k / (2 * half))  # undo the LayerNorms: [f, -f, 0] over 2 * half dims has std sqrt(2K/256)
    gelu_one = float(F.gelu(torch.tensor(1.0)))
    for mlp in decoder.output_hypernetworks_mlps:
        first, second, last = mlp.layers
        for linear in (first, second):
            linear.weight.copy_(torch.eye(linear.weight.shape[0]))
            linear.bias.zero_()
        _zero(last)
        for i in range(2 * k):
            last.weight[i, i], last.weight[i, 2 * k + i] = scale, -scale
            last.weight[2 * k + i, i], last.weight[2 * k + i, 2 * k + i] = -scale, scale
        last.bias[4 * k] = -GAIN * LEVEL * k / gelu_one


FOLLOWING_NAME = "sam2.1_hiera_tiny_red.pt"
RED_LEVEL = 0.5  # share of full red (before SAM 2's normalisation) above which a pixel is in the mask
# SAM 2's input normalisation of the red channel (sam2/utils/transforms.py SAM2Transforms: ImageNet mean and std)
RED_MEAN, RED_STD = 0.485, 0.229


def write_following_checkpoint(path: str | Path, config: str = TINY_CFG) -> Path:
    """Build ``config`` so that every mask, on every frame and whatever the prompt, is the set of pixels whose red
    channel is above RED_LEVEL: a tracker with it follows a red object from frame to frame (the video memory keeps its
    random weights and cannot change that), so an end-to-end check can tell a tracked box from a stale one.

    The patch embedding's first channel reads the red value of the patch's centre pixel (hieradet.py ``PatchEmbed``,
    a 7 x 7 convolution of stride 4 and padding 3: kernel tap (3, 3)); it reaches ``feat_s0`` through zeroed blocks,
    the level-0 lateral conv and ``conv_s0`` as ``[r, -r, 1]`` (as in write_placed_checkpoint, the constant from the
    trunk's ``pos_embed``); the hypernetworks ignore the tokens and answer their bias, ``GAIN * [1, -1, -threshold]``.
    Saved as {"model": state_dict}.
    """
    import torch
    import torch.nn.functional as F

    model = _build(config)
    with torch.no_grad():
        trunk = model.image_encoder.trunk
        _zero(trunk.patch_embed.proj)
        trunk.patch_embed.proj.weight[0, 0, 3, 3] = 1.0
        trunk.pos_embed_window.zero_()
        trunk.pos_embed.zero_()
        trunk.pos_embed[0, 1] = 1.0
        for block in trunk.blocks:
            _zero(block.attn.proj, block.mlp.layers[-1])
        neck = model.image_encoder.neck
        lateral = neck.convs[len(neck.convs) - 1].conv
        _zero(lateral)
        lateral.weight[0, 0, 0, 0] = lateral.weight[1, 1, 0, 0] = 1.0
        decoder = model.sam_mask_decoder
        _zero(decoder.conv_s0, decoder.output_upscaling[3])
        decoder.conv_s0.weight[0, 0, 0, 0], decoder.conv_s0.weight[1, 0, 0, 0] = 1.0, -1.0
        decoder.conv_s0.weight[2, 1, 0, 0] = 1.0
        threshold = (RED_LEVEL - RED_MEAN) / RED_STD
        for mlp in decoder.output_hypernetworks_mlps:
            last = mlp.layers[-1]
            _zero(last)
            last.bias[0], last.bias[1] = GAIN, -GAIN  # GELU(r) - GELU(-r) = r
            last.bias[2] = -GAIN * threshold / float(F.gelu(torch.tensor(1.0)))
        _object_always_present(decoder)
    return _save(model, path)
