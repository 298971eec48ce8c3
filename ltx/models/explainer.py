"""Explainers e: networks that map an image to a mask m in [0, 1] at image size.

ViT explainer (paper): the explained ViT's encoder, CLS/prefix tokens dropped, a per-patch head
Linear(D, D) → Tanh → Linear(D, 1) → sigmoid, bilinear upsampling of the patch grid to the image.
CNN explainer (paper): the explained CNN's trunk → Conv1×1 → sigmoid →
bilinear upsampling; a learned upsampling decoder is an option (the paper's open question 3).
The explainer's trunk (`Explainer.trunk`: a copy of the explained model without its classifier) is
read through timm's uniform `forward_features`, so any timm ViT or CNN works. Both keep the trunk's
BatchNorm layers (a CNN's, a ViT's conv stem) in eval mode by default. (The trunk was called
`backbone` before; explainer files with `backbone.*` keys still load, see `Explainer`.)
`upsample_to_image` brings any method's coarse maps to image size, as the explainers do.
"""

from __future__ import annotations

import copy
from typing import ClassVar, NamedTuple

import torch
from torch import nn
from torch.nn import functional as F

from ltx.models.explained import ExplainedModel

INITS = ("explained", "scratch")
DECODERS = ("bilinear", "learned")


class Masks(NamedTuple):
    """`mask` (B, 1, H, W) at image size; `coarse` (B, 1, h, w) before upsampling (the paper's mask loss)."""

    mask: torch.Tensor
    coarse: torch.Tensor


def _reinitialise(network: nn.Module) -> None:
    """Fresh random weights for a copied network ('scratch' init), using the model's own initialiser."""
    if hasattr(network, "init_weights"):
        network.init_weights()
        return
    for module in network.modules():
        if hasattr(module, "reset_parameters"):
            module.reset_parameters()


class Explainer(nn.Module):
    """Shared part: normalise like the explained model, run the trunk, upsample the coarse mask.

    `backbone` is the explained model in configs and results, so the explainer's copy of its layers
    is the `trunk`; state dicts saved before the rename (`backbone.*` keys, issue 15) load through
    `OLD_PREFIXES`."""

    #: old key prefix → new one, applied when a state dict is loaded
    OLD_PREFIXES: ClassVar[dict[str, str]] = {"backbone.": "trunk."}

    def __init__(self, trunk: nn.Module, mean: torch.Tensor, std: torch.Tensor, *,
                 freeze_norm: bool = True) -> None:
        super().__init__()
        self.trunk = trunk
        self.register_buffer("mean", mean.clone())
        self.register_buffer("std", std.clone())
        self.freeze_norm = freeze_norm
        self.register_load_state_dict_pre_hook(self._rename_old_keys)

    @classmethod
    def _rename_old_keys(cls, module: nn.Module, state_dict: dict, prefix: str, *args) -> None:
        for key in [k for k in state_dict if k.startswith(prefix)]:
            for old, new in cls.OLD_PREFIXES.items():
                if key.startswith(prefix + old):
                    state_dict[prefix + new + key[len(prefix + old):]] = state_dict.pop(key)
                    break

    def train(self, mode: bool = True) -> Explainer:
        """Keep the trunk's BatchNorm statistics fixed (paper): one-image finetuning would wreck them."""
        super().train(mode)
        if self.freeze_norm:
            for module in self.trunk.modules():
                if isinstance(module, nn.modules.batchnorm._BatchNorm):
                    module.eval()
        return self

    def coarse_logits(self, features: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def features(self, images: torch.Tensor) -> torch.Tensor:
        return self.trunk.forward_features((images - self.mean) / self.std)

    def decode(self, features: torch.Tensor, size: tuple[int, int]) -> Masks:
        """Trunk features → masks at `size`; separate so finetuning can reuse frozen features."""
        coarse = torch.sigmoid(self.coarse_logits(features))
        mask = F.interpolate(coarse, size=size, mode="bilinear", align_corners=False)
        return Masks(mask, coarse)

    def forward(self, images: torch.Tensor) -> Masks:
        return self.decode(self.features(images), tuple(images.shape[-2:]))


class ViTExplainer(Explainer):
    """Per-patch head on the ViT's output tokens."""

    def __init__(self, trunk: nn.Module, mean: torch.Tensor, std: torch.Tensor, *,
                 head_hidden: int | None = None, freeze_patch_embed: bool = True, freeze_norm: bool = True) -> None:
        super().__init__(trunk, mean, std, freeze_norm=freeze_norm)
        dim = trunk.num_features
        hidden = head_hidden or dim
        self.head = nn.Sequential(nn.Linear(dim, hidden), nn.Tanh(), nn.Linear(hidden, 1))
        if freeze_patch_embed:
            trunk.patch_embed.requires_grad_(False)
        for block in trunk.blocks:
            # Explicit attention instead of fused SDPA: per-instance finetuning vmaps the explainer,
            # and SDPA has no batching rule (a slow per-sample fallback).
            if hasattr(block.attn, "fused_attn"):
                block.attn.fused_attn = False

    def coarse_logits(self, features: torch.Tensor) -> torch.Tensor:
        tokens = features[:, self.trunk.num_prefix_tokens:]
        h, w = self.trunk.patch_embed.grid_size
        return self.head(tokens).transpose(1, 2).reshape(tokens.shape[0], 1, h, w)


class CNNExplainer(Explainer):
    """Conv1×1 on the trunk's feature map, or a learned upsampling decoder."""

    def __init__(self, trunk: nn.Module, mean: torch.Tensor, std: torch.Tensor, *,
                 decoder: str = "bilinear", decoder_width: int = 64, freeze_norm: bool = True) -> None:
        super().__init__(trunk, mean, std, freeze_norm=freeze_norm)
        channels = trunk.num_features
        if decoder == "bilinear":
            self.decoder: nn.Module = nn.Conv2d(channels, 1, kernel_size=1)
        else:
            # Two ×2 upsampling stages: a coarse map with 4× the resolution of the trunk's output.
            self.decoder = nn.Sequential(
                nn.Conv2d(channels, decoder_width, 3, padding=1), nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(decoder_width, decoder_width // 2, 3, padding=1), nn.ReLU(),
                nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
                nn.Conv2d(decoder_width // 2, 1, 1),
            )
        # Start every mask at 0.5: on un-normalised trunk features a randomly initialised last
        # layer gives huge logits, a saturated sigmoid and no gradient (the explainer never learns).
        last = self.decoder if isinstance(self.decoder, nn.Conv2d) else self.decoder[-1]
        nn.init.zeros_(last.weight)
        nn.init.zeros_(last.bias)

    def coarse_logits(self, features: torch.Tensor) -> torch.Tensor:
        return self.decoder(features)


def build_explainer(explained: ExplainedModel, *, init: str = "explained", head_hidden: int | None = None,
                    freeze_patch_embed: bool = True, decoder: str = "bilinear", decoder_width: int = 64,
                    freeze_norm: bool = True) -> Explainer:
    """The explainer for `explained`'s family, starting from its weights ('explained') or random ('scratch')."""
    if init not in INITS:
        raise ValueError(f"unknown explainer.init {init!r}: choose one of {INITS}")
    if decoder not in DECODERS:
        raise ValueError(f"unknown explainer.decoder {decoder!r}: choose one of {DECODERS}")
    trunk = copy.deepcopy(explained.model).requires_grad_(True)
    if init == "scratch":
        _reinitialise(trunk)
    trunk.reset_classifier(0)
    if explained.family == "vit":
        explainer: Explainer = ViTExplainer(trunk, explained.mean, explained.std, head_hidden=head_hidden,
                                            freeze_patch_embed=freeze_patch_embed, freeze_norm=freeze_norm)
    else:
        explainer = CNNExplainer(trunk, explained.mean, explained.std, decoder=decoder,
                                 decoder_width=decoder_width, freeze_norm=freeze_norm)
    return explainer.train()


def upsample_to_image(maps: torch.Tensor, size: tuple[int, int], *,
                      dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """(B, h, w) or (B, 1, h, w) maps → (B, H, W): coarse maps (patches, CAMs) to image size.

    Bilinear (align_corners=False) in `dtype` where the size differs; maps already at `size` keep
    their values and dtype. The metrics resize in float64, so float32 maps keep their exact
    values and ranking.
    """
    if maps.dim() == 4 and maps.shape[1] == 1:
        maps = maps[:, 0]
    if maps.dim() != 3:
        raise ValueError(f"saliency maps must be (B, H, W) or (B, 1, H, W), got shape {tuple(maps.shape)}")
    if tuple(maps.shape[-2:]) != tuple(size):
        maps = maps[:, None].to(dtype)
        maps = F.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps
