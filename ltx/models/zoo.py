"""Where explained models come from: timm by name, weights from the hub, a local file, or local training.

Also registers the two small black boxes of the embedded default as timm models, so they are
created like any other (`timm.create_model("ltx_shapes_vit")`).
"""

from __future__ import annotations

import difflib
import math
import hashlib
import json
import logging
from pathlib import Path
from typing import Any

import timm
import torch
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ltx.models.explained import ExplainedModel

log = logging.getLogger(__name__)

WEIGHT_SOURCES = ("hub", "train", "random")

# Data configs of the embedded default's black boxes (read back by timm.data.resolve_model_data_config).
default_cfgs = generate_default_cfgs({
    name: dict(num_classes=8, input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5), std=(0.5, 0.5, 0.5),
               interpolation="bilinear", crop_pct=1.0)
    for name in ("ltx_shapes_vit", "ltx_shapes_resnet")
})


class ConvStemPatchEmbed(PatchEmbed):
    """Patch embedding by a small conv stem (stride-2 3×3 convs, then 1×1), not one strided conv.

    Xiao et al. 2021 ("Early convolutions help transformers see better"): ViTs then train from
    scratch on little data. Still one token per patch, so explainers and attention methods see
    an ordinary ViT. GroupNorm, not BatchNorm: per-image statistics behave the same in a batch of
    one (per-instance finetuning) as in training.
    """

    def __init__(self, *args: Any, convs_per_stage: int = 2, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        stages = int(math.log2(self.patch_size[0]))
        if 2 ** stages != self.patch_size[0] or self.patch_size[0] != self.patch_size[1]:
            raise ValueError(f"a conv stem needs a square power-of-two patch size, got {self.patch_size}")
        layers: list[nn.Module] = []
        width, channels = self.proj.out_channels // 2 ** (stages - 1), self.proj.in_channels
        for _ in range(stages):
            for conv in range(convs_per_stage):
                layers += [nn.Conv2d(channels if conv == 0 else width, width, 3, stride=2 if conv == 0 else 1,
                                     padding=1, bias=False), nn.GroupNorm(8, width), nn.ReLU(inplace=True)]
            channels, width = width, width * 2
        layers.append(nn.Conv2d(channels, self.proj.out_channels, 1))
        self.proj = nn.Sequential(*layers)


@register_model
def ltx_shapes_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """A 4-block ViT for 64 px images with a conv stem, patch 8 (an 8×8 token grid, like ViT-B's
    14×14 at 224 px). With timm's plain patch embedding it reached only ~50 % on the shapes test
    split after 6 epochs (one conv per stage: ~76 % after 8); two convs per stage: 99 % after 8."""
    args = dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0,
                embed_layer=ConvStemPatchEmbed)
    return build_model_with_cfg(VisionTransformer, "ltx_shapes_vit", pretrained, **{**args, **kwargs})


@register_model
def ltx_shapes_resnet(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """A narrow ResNet-10 for 64 px images with output stride 8 (an 8×8 map, like ResNet-101's 7×7 at 224)."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32,
                output_stride=8)
    return build_model_with_cfg(ResNet, "ltx_shapes_resnet", pretrained, **{**args, **kwargs})


def _check_model_name(name: str) -> None:
    """Fail early on an unknown timm architecture; a pretrained tag (`name.tag`) is timm's business."""
    arch = name.partition(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        hint = f" Closest timm names: {', '.join(close)}." if close else ""
        family = arch.split("_")[0]
        raise ValueError(f"unknown model {name!r} (backbone.name).{hint} "
                         f"`timm.list_models('{family}*')` lists the {family} models.")


def load_weights(model: nn.Module, path: str | Path) -> None:
    """Load a safetensors or timm/torch `.pth` state dict without unpickling arbitrary objects."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(
            f"checkpoint not found: looked for {path}. Set backbone.weights to a .safetensors or .pth file, "
            f"or to one of {WEIGHT_SOURCES}."
        )
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(path, map_location="cpu", weights_only=True)
        for key in ("state_dict", "model", "state_dict_ema"):
            if isinstance(state, dict) and key in state and isinstance(state[key], dict):
                state = state[key]
                break
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        first = str(err).splitlines()[:3]
        raise ValueError(
            f"checkpoint {path} does not match the architecture {type(model).__name__}: {' '.join(first)} "
            "Check backbone.name and num_classes against the checkpoint."
        ) from None


def create_network(name: str, *, num_classes: int, weights: str = "random", **model_kwargs: Any) -> nn.Module:
    """A timm network by name, with weights from the hub, a local file, or random."""
    _check_model_name(name)
    if weights == "hub":
        try:
            return timm.create_model(name, pretrained=True, num_classes=num_classes, **model_kwargs)
        except Exception as err:  # timm raises many kinds (HTTP, offline, missing cfg)
            raise RuntimeError(
                f"could not load pretrained weights for {name!r} from the hub ({type(err).__name__}: {err}). "
                "Offline? Download them elsewhere and set backbone.weights=/path/to/model.safetensors "
                "(or a timm .pth file)."
            ) from None
    model = timm.create_model(name, pretrained=False, num_classes=num_classes, **model_kwargs)
    if weights not in ("random", "train"):
        load_weights(model, weights)
    return model


def cache_key(spec: dict[str, Any], data: dict[str, Any]) -> str:
    """A short stable hash of everything that determines a locally trained black box."""
    blob = json.dumps({"backbone": spec, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def wrap(network: nn.Module, *, name: str, image_size: int, mean: Any = None, std: Any = None) -> ExplainedModel:
    """Freeze a network as an explained model; mean/std default to the model's timm data config."""
    if mean is None or std is None:
        data_cfg = timm.data.resolve_model_data_config(network)
        mean = data_cfg["mean"] if mean is None else mean
        std = data_cfg["std"] if std is None else std
    return ExplainedModel(network, mean=list(mean), std=list(std), image_size=image_size, name=name)
