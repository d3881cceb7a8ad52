"""RWKVViT: Vision-RWKV image classifiers (VRWKV-T/S/B/L, arXiv 2403.02308) and CPU-sized variants.

Patch embedding, learned position embedding (resized bicubically to any input grid), a stack of RWKV blocks
(Q-Shift, Bi-WKV spatial mix, channel mix), final LayerNorm, pooling and a classification head. Module names follow
the official code without its ``backbone.`` prefix (``patch_embed.projection``, ``layers.{i}.att.spatial_decay``,
...), except the final norm (``norm`` here, ``backbone.ln1`` there) and the head (``head`` here, ``head.fc`` there);
``rwkv_vision.convert.vision_rwkv`` maps official checkpoints.

Variants for ablations, chosen by arguments: ``mixer`` = "bi_wkv" | "causal_wkv" | "attention", ``pool`` = "mean" |
"last", ``stem`` = "patch" | "conv".
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
from torch.utils.checkpoint import checkpoint

from ..convert.vision_rwkv import convert_vision_rwkv, is_vision_rwkv_state_dict, unwrap_checkpoint
from ..hub import HubModel
from ..layers import AttentionBlock, PatchEmbed, RWKVBlock, grid_size, init_linear, resample_pos_embed
from ..registry import register_model

__all__ = ["RWKVViT", "default_cfgs"]

# ---------------------------------------------------------------------------------------------------------------------
# Configuration: preprocessing and weights of each named model (timm's pretrained_cfg). The official evaluation is a
# bicubic resize of the short side to 256, a 224 centre crop, and ImageNet mean/std given on the 0-255 scale as
# (123.675, 116.28, 103.53) / (58.395, 57.12, 57.375); stored here on the 0-1 scale, as timm does.

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
VISION_RWKV_HUB = "OpenGVLab/Vision-RWKV"


def _cfg(**kwargs) -> dict:
    return {
        "hf_hub_id": None,            # Hub repository holding the weights (None: no published weights)
        "hf_hub_filename": None,      # file in that repository
        "checkpoint_format": None,    # "vision_rwkv": an official file, converted on load
        "task": "image-classification",
        "license": None,
        "num_classes": 1000,
        "input_size": (3, 224, 224),
        "interpolation": "bicubic",
        "crop_pct": 224 / 256,
        "crop_mode": "center",
        "mean": IMAGENET_MEAN,
        "std": IMAGENET_STD,
        "label_set": "imagenet-1k",   # the label names are resolved by name by the hub layer
        **kwargs,
    }


def _official_cfg(filename: str, **kwargs) -> dict:
    return _cfg(hf_hub_id=VISION_RWKV_HUB, hf_hub_filename=filename, checkpoint_format="vision_rwkv",
                license="apache-2.0", **kwargs)


default_cfgs: dict[str, dict] = {
    "rwkv_vit_nano": _cfg(input_size=(3, 112, 112), crop_pct=1.0, label_set=None),
    "rwkv_vit_micro": _cfg(input_size=(3, 112, 112), crop_pct=1.0, label_set=None),
    "rwkv_vit_tiny": _official_cfg("vrwkv_t_in1k_224.pth", top1=75.1),
    "rwkv_vit_small": _official_cfg("vrwkv_s_in1k_224.pth", top1=80.1),
    "rwkv_vit_base": _official_cfg("vrwkv_b_in1k_224.pth", top1=82.0),
    # Evaluated at 384 (ImageNet-22K pre-training, 1K fine-tuning); the file's 12x12 position grid is resized to
    # 24x24 by the converter. The crop of the 384 evaluation is not in the reference: resize to 384, no crop assumed.
    "rwkv_vit_large": _official_cfg("vrwkv_l_22kto1k_384.pth", input_size=(3, 384, 384), crop_pct=1.0, top1=86.0),
}

MIXERS = ("bi_wkv", "causal_wkv", "attention")
POOLS = ("mean", "last")
_POS_CACHE_GRIDS = 8  # resized position tables kept per model (one per run-time grid)


# ---------------------------------------------------------------------------------------------------------------------
# Model


class RWKVViT(HubModel, pipeline_tag="image-classification", tags=["image-classification", "vision-rwkv"]):
    """Vision-RWKV classifier: image [B, in_chans, H, W] -> logits [B, num_classes], for any H, W.

    Args:
        img_size: training resolution, int or (H, W); sets the position-embedding grid ceil(H / p) x ceil(W / p).
            Other input sizes work: the position embedding is resized bicubically to the run-time grid.
        patch_size: pixels per token side p.
        in_chans: input image channels.
        num_classes: classes of the head; 0 = no head (``forward`` returns pooled features [B, embed_dim]).
        embed_dim: token channels C.
        depth: number of blocks.
        hidden_rate: channel-mix (or MLP) hidden width in multiples of C.
        post_norm: post-norm residual branches (VRWKV-S/B/L); not available with ``mixer="attention"``.
        init_values: layer-scale initial value (None: no layer scale).
        key_norm: LayerNorm inside the spatial and channel mix (VRWKV-L); RWKV mixers only.
        drop_rate: dropout after adding the position embedding.
        drop_path_rate: stochastic depth, rising linearly from 0 at the first block to this at the last.
        channel_gamma: Q-Shift group fraction (1/4: four shifted groups covering all channels); RWKV mixers only.
        shift_pixel: Q-Shift distance in tokens (0: no shift); RWKV mixers only.
        head_hidden_dim: if set, the head is Linear(C, head_hidden_dim) - Tanh - Linear(head_hidden_dim, classes)
            (VRWKV-L uses 3072); otherwise one Linear.
        mixer: token mixer of every block: "bi_wkv" (Vision-RWKV), "causal_wkv" (RWKV-4 causal WKV over the raster
            order, FaceRWKV style, best with ``pool="last"``) or "attention" (a same-size pre-norm transformer block
            with ``scaled_dot_product_attention``, the baseline for ablations).
        pool: "mean" over tokens, or "last" token (the bottom-right patch; the readout of causal models).
        stem: "patch" (one strided convolution) or "conv" (a small convolutional stem first, the hybrid variant).
        num_heads: attention heads for ``mixer="attention"`` (default max(1, C // 64)).
    """

    def __init__(self, img_size: int | tuple[int, int] = 224, patch_size: int = 16, in_chans: int = 3,
                 num_classes: int = 1000, embed_dim: int = 192, depth: int = 12, hidden_rate: float = 4,
                 post_norm: bool = False, init_values: float | None = None, key_norm: bool = False,
                 drop_rate: float = 0.0, drop_path_rate: float = 0.0, channel_gamma: float = 0.25,
                 shift_pixel: int = 1, head_hidden_dim: int | None = None, mixer: str = "bi_wkv",
                 pool: str = "mean", stem: str = "patch", num_heads: int | None = None):
        super().__init__()
        if mixer not in MIXERS:
            raise ValueError(f"RWKVViT: mixer must be one of {MIXERS}; got {mixer!r}")
        if pool not in POOLS:
            raise ValueError(f"RWKVViT: pool must be one of {POOLS}; got {pool!r}")
        if depth < 1 or embed_dim < 1 or patch_size < 1 or num_classes < 0:
            raise ValueError(f"RWKVViT: need depth >= 1, embed_dim >= 1, patch_size >= 1, num_classes >= 0; got "
                             f"depth={depth}, embed_dim={embed_dim}, patch_size={patch_size}, "
                             f"num_classes={num_classes}")
        if mixer == "attention" and (post_norm or key_norm):
            raise ValueError("RWKVViT: mixer='attention' is a pre-norm transformer block without key_norm; "
                             "pass post_norm=False and key_norm=False")
        if mixer != "attention" and num_heads is not None:
            raise ValueError(f"RWKVViT: num_heads applies to mixer='attention' only; got mixer={mixer!r}")
        img_size = (img_size, img_size) if isinstance(img_size, int) else tuple(img_size)
        self.img_size, self.patch_size, self.in_chans = img_size, patch_size, in_chans
        self.num_classes = num_classes
        self.num_features = self.embed_dim = embed_dim
        self.head_hidden_dim = head_hidden_dim
        self.mixer, self.pool = mixer, pool
        self.grid_size = grid_size(img_size, patch_size)
        self.grad_checkpointing = False

        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, stem)
        self.pos_embed = nn.Parameter(torch.zeros(1, self.grid_size[0] * self.grid_size[1], embed_dim))
        self.pos_drop = nn.Dropout(drop_rate)
        # Explicit CPU: the rates must be plain floats even when the model is built on the meta device.
        dpr = torch.linspace(0, drop_path_rate, depth, device="cpu").tolist()
        if mixer == "attention":
            heads = num_heads if num_heads is not None else max(1, embed_dim // 64)
            blocks = [AttentionBlock(embed_dim, heads, hidden_rate, init_values, dpr[i]) for i in range(depth)]
        else:
            blocks = [RWKVBlock(embed_dim, i, depth, hidden_rate, post_norm, init_values, key_norm, dpr[i],
                                shift_pixel, channel_gamma, causal=mixer == "causal_wkv") for i in range(depth)]
        self.layers = nn.ModuleList(blocks)
        self.norm = nn.LayerNorm(embed_dim)
        self.head = self._make_head(num_classes)

        # Resized position tables for run-time grids other than grid_size, used only without autograd. Plain
        # attributes: not in state_dict, not moved by .to() (entries are rebuilt when pos_embed's device, dtype or
        # values differ from the snapshot they were made from).
        self._pos_cache: dict[tuple[int, int], torch.Tensor] = {}
        self._pos_cache_source: torch.Tensor | None = None
        self.pretrained_cfg = _cfg(input_size=(in_chans, *img_size), num_classes=num_classes, label_set=None)

    # -- timm-style attributes ----------------------------------------------------------------------------------------

    @property
    def default_cfg(self) -> dict:
        """Alias of ``pretrained_cfg`` (timm's older name)."""
        return self.pretrained_cfg

    def _make_head(self, num_classes: int) -> nn.Module:
        if num_classes == 0:
            return nn.Identity()
        C, hidden = self.embed_dim, self.head_hidden_dim
        head = (nn.Sequential(nn.Linear(C, hidden), nn.Tanh(), nn.Linear(hidden, num_classes)) if hidden
                else nn.Linear(C, num_classes))
        for m in head.modules():
            if isinstance(m, nn.Linear):
                init_linear(m)
        return head

    def get_classifier(self) -> nn.Module:
        return self.head

    def reset_classifier(self, num_classes: int) -> None:
        """Replace the head by a freshly initialised one for ``num_classes`` (0: no head), on the model's device."""
        if num_classes < 0:
            raise ValueError(f"reset_classifier: num_classes must be >= 0; got {num_classes}")
        self.num_classes = num_classes
        self.head = self._make_head(num_classes).to(self.norm.weight.device, self.norm.weight.dtype)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations (saves memory)."""
        self.grad_checkpointing = enable

    def checkpoint_filter_fn(self, checkpoint: Mapping) -> dict[str, torch.Tensor]:
        """Turn a loaded checkpoint into this model's state dict: official Vision-RWKV files are converted (strictly,
        see :func:`rwkv_vision.convert.convert_vision_rwkv`); our own state dicts pass through unwrapped."""
        state_dict = unwrap_checkpoint(checkpoint)
        if is_vision_rwkv_state_dict(state_dict):
            return convert_vision_rwkv(state_dict, self)
        return state_dict

    # -- forward ------------------------------------------------------------------------------------------------------

    def _resized_pos_embed(self, hw: tuple[int, int]) -> torch.Tensor:
        """Position embedding [1, h*w, C] for the run-time grid hw: pos_embed itself when hw is the trained grid."""
        pos = self.pos_embed
        if hw == self.grid_size:
            return pos
        if torch.compiler.is_compiling() or (torch.is_grad_enabled() and pos.requires_grad):
            return resample_pos_embed(pos, self.grid_size, hw)
        # Without autograd, reuse the table resized for this grid while pos_embed holds the values it came from.
        # Checked by content: fused optimizers and .data edits change a tensor without bumping its version.
        source = self._pos_cache_source
        if (source is None or source.shape != pos.shape or source.device != pos.device or source.dtype != pos.dtype
                or not torch.equal(source, pos)):
            self._pos_cache, self._pos_cache_source = {}, pos.detach().clone()
        table = self._pos_cache.get(hw)
        if table is None:
            if len(self._pos_cache) >= _POS_CACHE_GRIDS:
                self._pos_cache.clear()
            table = self._pos_cache[hw] = resample_pos_embed(pos.detach(), self.grid_size, hw)
        return table

    def _embed(self, x: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int]]:
        x, hw = self.patch_embed(x)
        return self.pos_drop(x + self._resized_pos_embed(hw)), hw

    def _run_block(self, block: nn.Module, x: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
        if self.grad_checkpointing and torch.is_grad_enabled():
            return checkpoint(block, x, hw, use_reentrant=False)
        return block(x, hw)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, in_chans, H, W] -> normalised tokens [B, h*w, C], raster order, (h, w) = ceil((H, W) / p)."""
        x, hw = self._embed(x)
        for block in self.layers:
            x = self._run_block(block, x, hw)
        return self.norm(x)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        """Tokens [B, N, C] from :meth:`forward_features` -> logits [B, num_classes] (pooled [B, C] if
        ``pre_logits`` or ``num_classes == 0``)."""
        if x.dim() != 3 or x.shape[2] != self.embed_dim:
            raise ValueError(f"forward_head: expected tokens [B, N, {self.embed_dim}]; got shape {tuple(x.shape)}")
        x = x.mean(dim=1) if self.pool == "mean" else x[:, -1]
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Image [B, in_chans, H, W] (any H, W) -> logits [B, num_classes]."""
        return self.forward_head(self.forward_features(x))

    def _take_indices(self, indices: int | Sequence[int] | None) -> list[int]:
        depth = len(self.layers)
        if indices is None:
            return list(range(depth))
        if isinstance(indices, int):
            if not 1 <= indices <= depth:
                raise ValueError(f"forward_intermediates: an int takes the last n blocks, 1 <= n <= {depth}; "
                                 f"got {indices}")
            return list(range(depth - indices, depth))
        taken = []
        for i in indices:
            if not -depth <= i < depth:
                raise ValueError(f"forward_intermediates: block index {i} out of range for depth {depth}")
            taken.append(i % depth)
        if not taken:
            raise ValueError("forward_intermediates: no block index given")
        return sorted(set(taken))

    def forward_intermediates(self, x: torch.Tensor, indices: int | Sequence[int] | None = None, norm: bool = False,
                              intermediates_only: bool = False
                              ) -> list[torch.Tensor] | tuple[torch.Tensor, list[torch.Tensor]]:
        """Feature maps of chosen blocks, for dense-prediction heads.

        Args:
            x: image [B, in_chans, H, W].
            indices: block indices (negative counts from the end), an int n for the last n blocks, or None for all.
            norm: apply the final LayerNorm to each map (the official dense backbone normalises only the last block).
            intermediates_only: return only the maps, and stop after the last requested block.
        Returns:
            maps: list of [B, C, h, w] (block outputs in block order), h, w = ceil(H / p), ceil(W / p); unless
            ``intermediates_only``, the tuple (forward_features output [B, h*w, C], maps).
        """
        take = self._take_indices(indices)
        x, hw = self._embed(x)
        B = x.shape[0]
        stop = take[-1] + 1 if intermediates_only else len(self.layers)
        maps = []
        for i in range(stop):
            x = self._run_block(self.layers[i], x, hw)
            if i in take:
                y = self.norm(x) if norm else x
                maps.append(y.transpose(1, 2).reshape(B, self.embed_dim, *hw))
        return maps if intermediates_only else (self.norm(x), maps)


# ---------------------------------------------------------------------------------------------------------------------
# Registered configurations


def _create_rwkv_vit(variant: str, model_args: dict, overrides: dict) -> RWKVViT:
    model = RWKVViT(**{**model_args, **overrides})
    cfg = {**default_cfgs[variant], "architecture": variant}
    if "img_size" in overrides or "in_chans" in overrides:  # preprocessing follows the size the model was built for
        cfg["input_size"] = (model.in_chans, *model.img_size)
    model.pretrained_cfg = cfg
    return model


@register_model
def rwkv_vit_nano(**kwargs) -> RWKVViT:
    """A CPU-sized RWKVViT for 48-112 px faces: C 96, depth 6, 8 px patches (14x14 tokens at 112); no weights."""
    return _create_rwkv_vit("rwkv_vit_nano", dict(img_size=112, patch_size=8, embed_dim=96, depth=6), kwargs)


@register_model
def rwkv_vit_micro(**kwargs) -> RWKVViT:
    """A CPU-sized RWKVViT for 48-112 px faces: C 128, depth 10, 8 px patches (14x14 tokens at 112); no weights."""
    return _create_rwkv_vit("rwkv_vit_micro", dict(img_size=112, patch_size=8, embed_dim=128, depth=10), kwargs)


@register_model
def rwkv_vit_tiny(**kwargs) -> RWKVViT:
    """VRWKV-T: C 192, depth 12, pre-norm; 6.2M parameters, ImageNet-1K top-1 75.1 at 224."""
    return _create_rwkv_vit("rwkv_vit_tiny", dict(embed_dim=192, depth=12), kwargs)


@register_model
def rwkv_vit_small(**kwargs) -> RWKVViT:
    """VRWKV-S: C 384, depth 12, post-norm, layer scale 1, drop path 0.3; 23.8M parameters, top-1 80.1 at 224."""
    return _create_rwkv_vit("rwkv_vit_small", dict(embed_dim=384, depth=12, post_norm=True, init_values=1.0,
                                                   drop_path_rate=0.3), kwargs)


@register_model
def rwkv_vit_base(**kwargs) -> RWKVViT:
    """VRWKV-B: C 768, depth 12, post-norm, layer scale 1e-5, drop path 0.5; 93.7M parameters, top-1 82.0 at 224."""
    return _create_rwkv_vit("rwkv_vit_base", dict(embed_dim=768, depth=12, post_norm=True, init_values=1e-5,
                                                  drop_path_rate=0.5), kwargs)


@register_model
def rwkv_vit_large(**kwargs) -> RWKVViT:
    """VRWKV-L at 384: C 1024, depth 24, post-norm, layer scale 1e-5, key_norm, drop path 0.1, MLP head (3072);
    about 335M parameters with the 24x24 position grid (334.9M in the paper, counted with the 12x12 grid of 192)."""
    return _create_rwkv_vit("rwkv_vit_large", dict(img_size=384, embed_dim=1024, depth=24, post_norm=True,
                                                   init_values=1e-5, key_norm=True, drop_path_rate=0.1,
                                                   head_hidden_dim=3072), kwargs)
