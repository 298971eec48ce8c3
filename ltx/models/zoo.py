"""Where explained models come from: timm by name, weights from the hub, a local file, or local training.

Also registers the small black boxes of the embedded data sets as timm models, so they are
created like any other (`timm.create_model("ltx_textures_vit")`).
"""

from __future__ import annotations

import difflib
import hashlib
import json
import logging
import math
import pickle
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from safetensors import SafetensorError, safe_open
from timm.data import (
    IMAGENET_DEFAULT_MEAN,
    IMAGENET_DEFAULT_STD,
    IMAGENET_INCEPTION_MEAN,
    IMAGENET_INCEPTION_STD,
)
from timm.models import build_model_with_cfg, generate_default_cfgs, register_model
from timm.models.resnet import BasicBlock, ResNet
from timm.layers import PatchEmbed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from ltx.data.shapes import SHAPE_CLASSES
from ltx.data.textures import TEXTURE_CLASSES
from ltx.models.explained import ExplainedModel
from ltx.store import save_tensors

log = logging.getLogger(__name__)

WEIGHT_SOURCES = ("hub", "train", "random")


class WeightsUnavailable(FileNotFoundError):
    """Pretrained weights that neither the local cache nor the hub can provide (e.g. offline)."""


def _first_line(err: BaseException) -> str:
    """An exception's message cut to one short line, to quote inside our own."""
    lines = str(err).strip().splitlines()
    return lines[0][:200] if lines else type(err).__name__


# Data configs of the embedded data sets' black boxes (read back by timm.data.resolve_model_data_config).
default_cfgs = generate_default_cfgs({
    f"ltx_{data}_{arch}": dict(num_classes=len(classes), input_size=(3, 64, 64), mean=(0.5, 0.5, 0.5),
                               std=(0.5, 0.5, 0.5), interpolation="bilinear", crop_pct=1.0, label_names=classes)
    for data, classes in (("shapes", SHAPE_CLASSES), ("textures", TEXTURE_CLASSES)) for arch in ("vit", "resnet")
})


class ConvStemPatchEmbed(PatchEmbed):
    """Patch embedding by a small conv stem (stride-2 3×3 convs, then 1×1), not one strided conv.

    Xiao et al. 2021 ("Early convolutions help transformers see better"): ViTs then train from
    scratch on little data. Still one token per patch, so explainers and attention methods see
    an ordinary ViT. BatchNorm, as in Xiao et al.: with GroupNorm the textures ViT stayed at chance
    (loss ln 8) for 3 epochs of 10,000 images where BatchNorm learned (experiments/README.md). The
    explainers keep its statistics fixed (ltx.models.explainer), so a batch of one behaves as in
    training.
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
                                     padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            channels, width = width, width * 2
        layers.append(nn.Conv2d(channels, self.proj.out_channels, 1))
        self.proj = nn.Sequential(*layers)


def _small_vit(name: str, pretrained: bool, **kwargs: Any) -> VisionTransformer:
    """A 4-block ViT for 64 px images with a conv stem, patch 8 (an 8×8 token grid, like ViT-B's
    14×14 at 224 px). With timm's plain patch embedding it reached only ~50 % on the shapes test
    split after 6 epochs (one conv per stage: ~76 % after 8); two convs per stage: 99 % after 8."""
    args = dict(img_size=64, patch_size=8, embed_dim=128, depth=4, num_heads=4, mlp_ratio=2.0,
                embed_layer=ConvStemPatchEmbed)
    return build_model_with_cfg(VisionTransformer, name, pretrained, **{**args, **kwargs})


def _small_resnet(name: str, pretrained: bool, **kwargs: Any) -> ResNet:
    """A narrow ResNet-10 for 64 px images with output stride 8 (an 8×8 map, like ResNet-101's 7×7 at 224)."""
    args = dict(block=BasicBlock, layers=(1, 1, 1, 1), channels=(32, 64, 128, 256), stem_width=32,
                output_stride=8)
    return build_model_with_cfg(ResNet, name, pretrained, **{**args, **kwargs})


# One name per data set, so that each data set's black boxes carry its class names; the same two
# architectures.
@register_model
def ltx_textures_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The small ViT (`_small_vit`) for the textures data (the embedded default)."""
    return _small_vit("ltx_textures_vit", pretrained, **kwargs)


@register_model
def ltx_textures_resnet(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """The small ResNet (`_small_resnet`) for the textures data (the embedded default)."""
    return _small_resnet("ltx_textures_resnet", pretrained, **kwargs)


@register_model
def ltx_shapes_vit(pretrained: bool = False, **kwargs: Any) -> VisionTransformer:
    """The small ViT (`_small_vit`) for the shapes data."""
    return _small_vit("ltx_shapes_vit", pretrained, **kwargs)


@register_model
def ltx_shapes_resnet(pretrained: bool = False, **kwargs: Any) -> ResNet:
    """The small ResNet (`_small_resnet`) for the shapes data."""
    return _small_resnet("ltx_shapes_resnet", pretrained, **kwargs)


@dataclass(frozen=True)
class Settings:
    """How the caller names the settings that choose a model (config keys or CLI options), so that
    an error says what to change where the user changes it."""

    name: str = "backbone.name"
    weights: str = "backbone.weights=/path/to/model.safetensors (or hub, train, random)"
    image_size: str = "backbone.image_size=N"
    model_kwargs: str = "backbone.model_kwargs"


CONFIG = Settings()


def _check_model_name(name: str, settings: Settings = CONFIG) -> None:
    """Fail early on an unknown timm architecture; a pretrained tag (`name.tag`) is timm's business."""
    arch = name.partition(".")[0]
    if not timm.is_model(arch):
        close = difflib.get_close_matches(arch, timm.list_models(), n=5, cutoff=0.5)
        hint = f" Closest timm names: {', '.join(close)}." if close else ""
        family = re.match(r"[A-Za-z]*", arch).group() or arch  # resnet5O -> resnet, vit_bse_16 -> vit
        raise ValueError(f"unknown model {name!r} ({settings.name}).{hint} "
                         f"`timm.list_models('{family}*')` lists the {family} models.")


def read_checkpoint(path: str | Path,
                    settings: Settings = CONFIG) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """A state dict and its metadata (`model`: the architecture, when the file names it) from a
    safetensors or timm/torch `.pth` file, never unpickling arbitrary objects (weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise FileNotFoundError(f"checkpoint not found: looked for {path}. Give an existing .safetensors or "
                                f".pth file: {settings.weights}.")
    try:
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as f:
                return {k: f.get_tensor(k) for k in f.keys()}, dict(f.metadata() or {})
        state = torch.load(path, map_location="cpu", weights_only=True)
    except (SafetensorError, RuntimeError, pickle.UnpicklingError, EOFError, OSError) as err:
        raise ValueError(
            f"cannot read checkpoint {path} ({_first_line(err)}): it must be a safetensors "
            "file or a plain torch state dict (pickled Python objects are never loaded). Re-save the weights "
            "with safetensors or torch.save(model.state_dict(), path)."
        ) from None
    named = isinstance(state, dict) and isinstance(state.get("arch"), str)
    metadata = {"model": state["arch"]} if named else {}
    for key in ("state_dict", "model", "state_dict_ema"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"checkpoint {path} holds no state dict (a mapping of names to tensors): re-save it "
                         "with torch.save(model.state_dict(), path).")
    return state, metadata


#: input normalisation presets (`ltx explain --norm`): timm's ImageNet and Inception statistics, or none
NORMALISATIONS: dict[str, tuple[tuple[float, ...], tuple[float, ...]]] = {
    "imagenet": (IMAGENET_DEFAULT_MEAN, IMAGENET_DEFAULT_STD),
    "inception": (IMAGENET_INCEPTION_MEAN, IMAGENET_INCEPTION_STD),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


@dataclass(frozen=True)
class ModelSpec:
    """What, besides its weights, it takes to rebuild a checkpoint's network and feed it as it was
    trained: the timm architecture, its `timm.create_model` arguments, its input size and the
    normalisation of its [0, 1] inputs. A checkpoint written by this project carries it in its
    safetensors metadata (`metadata`), so it is read back instead of guessed from timm's defaults
    for the architecture (224 px, ImageNet statistics), which a model trained otherwise gets wrong
    silently. None: not known."""

    name: str | None = None
    image_size: int | None = None
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    model_kwargs: dict[str, Any] | None = None

    def metadata(self) -> dict[str, str]:
        """As safetensors metadata (strings only): `model` the architecture, the rest as JSON; mean and
        std to float32's 7 digits, so that statistics read back from a model's buffers say 0.485."""
        stats = {key: [float(f"{v:.7g}") for v in value]
                 for key, value in (("mean", self.mean), ("std", self.std)) if value is not None}
        fields = {"image_size": self.image_size, **stats, "model_kwargs": self.model_kwargs}
        return {**({"model": self.name} if self.name else {}),
                **{key: json.dumps(value) for key, value in fields.items() if value is not None}}

    @classmethod
    def from_metadata(cls, metadata: dict[str, str], source: str | Path = "checkpoint") -> ModelSpec:
        """The spec a checkpoint's metadata holds (`metadata`); keys it lacks stay None."""
        try:
            values = {key: json.loads(metadata[key]) for key in ("image_size", "mean", "std", "model_kwargs")
                      if key in metadata}
        except json.JSONDecodeError as err:
            raise ValueError(f"checkpoint {source} has unreadable metadata ({err}): re-save it, or give the "
                             "settings on the command line.") from None
        return cls(name=metadata.get("model"), image_size=values.get("image_size"),
                   mean=tuple(values["mean"]) if "mean" in values else None,
                   std=tuple(values["std"]) if "std" in values else None,
                   model_kwargs=values.get("model_kwargs"))


def checkpoint_spec(path: str | Path, settings: Settings = CONFIG) -> ModelSpec:
    """What a checkpoint says of its network (`ModelSpec`): safetensors metadata as this project writes
    it (read without loading the tensors), or a timm training checkpoint's `arch`."""
    path = Path(path).expanduser()
    if path.suffix == ".safetensors" and path.is_file():
        try:
            with safe_open(str(path), framework="pt") as f:
                return ModelSpec.from_metadata(dict(f.metadata() or {}), path)
        except SafetensorError:
            pass  # read_checkpoint says what is wrong with the file
    return ModelSpec.from_metadata(read_checkpoint(path, settings)[1], path)


def save_network(path: Path, network: nn.Module, spec: ModelSpec) -> None:
    """Write a network's weights with its spec as metadata, so `ltx explain --model PATH` needs no
    --arch, --image-size or --norm."""
    save_tensors(path, network.state_dict(), metadata=spec.metadata())


def _listed(keys: list[str]) -> str:
    return ", ".join(keys[:3]) + (", ..." if len(keys) > 3 else "")


def state_mismatch(model: nn.Module, state: dict[str, torch.Tensor]) -> str:
    """What keeps `state` from loading into `model`, briefly ('' when it fits)."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    reshaped = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                if k in state and state[k].shape != v.shape]
    parts = [f"{len(keys)} {what} ({_listed(keys)})" for what, keys in
             (("missing keys", missing), ("unexpected keys", unexpected),
              ("tensors of another shape, checkpoint vs model", reshaped)) if keys]
    return "; ".join(parts)


def load_state(model: nn.Module, state: dict[str, torch.Tensor], source: str | Path,
               settings: Settings = CONFIG) -> None:
    """Load `state` strictly; a mismatch is one line naming the first differing keys."""
    mismatch = state_mismatch(model, state)
    if mismatch:
        raise ValueError(f"checkpoint {source} does not match the architecture {type(model).__name__}: "
                         f"{mismatch}. Check {settings.name}, the number of classes and the model arguments "
                         f"({settings.model_kwargs}, e.g. img_size) against the checkpoint.")
    model.load_state_dict(state)


def load_weights(model: nn.Module, path: str | Path, settings: Settings = CONFIG) -> None:
    """Load a safetensors or timm/torch `.pth` state dict without unpickling arbitrary objects."""
    load_state(model, read_checkpoint(path, settings)[0], path, settings)


def _fit_classifier(model: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Give `model` as many classes as the checkpoint's classifier has (num_classes not given)."""
    head = model.get_classifier()
    name = next((n for n, m in model.named_modules() if m is head), None)
    weight = state.get(f"{name}.weight") if name else None
    if weight is not None and weight.shape[0] != model.num_classes:
        model.reset_classifier(weight.shape[0])


def create_network(name: str, *, num_classes: int | None = None, weights: str = "random",
                   settings: Settings = CONFIG, **model_kwargs: Any) -> nn.Module:
    """A timm network by name, with weights from the hub, a local file, or random.

    `num_classes=None`: as many as the checkpoint's classifier has (a file), else timm's default.
    """
    _check_model_name(name, settings)
    kwargs = {**model_kwargs, **({} if num_classes is None else {"num_classes": num_classes})}
    if weights == "hub":
        try:
            return timm.create_model(name, pretrained=True, **kwargs)
        except Exception as err:  # timm raises many kinds (HTTP, offline, missing cfg)
            raise WeightsUnavailable(
                f"could not load pretrained weights for {name!r} from the hub ({type(err).__name__}: "
                f"{_first_line(err)}). Offline? Download them elsewhere and give the file: "
                f"{settings.weights}."
            ) from None
    model = timm.create_model(name, pretrained=False, **kwargs)
    if weights not in ("random", "train"):
        state, _ = read_checkpoint(weights, settings)
        if num_classes is None:
            _fit_classifier(model, state)
        load_state(model, state, weights, settings)
    return model


def cache_key(spec: dict[str, Any], data: dict[str, Any]) -> str:
    """A short stable hash of everything that determines a locally trained black box."""
    blob = json.dumps({"backbone": spec, "data": data}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def _built_size(network: nn.Module) -> tuple[int, int] | None:
    """The input size a ViT is built for (`img_size`: its patch grid), None for a CNN."""
    size = getattr(getattr(network, "patch_embed", None), "img_size", None)
    return None if size is None else (int(size[0]), int(size[1]))


def default_image_size(network: nn.Module) -> int:
    """The input size a network is built for: a ViT's `img_size` (its explainer's patch grid), else the
    size of timm's data config for the architecture (what its pretrained weights were trained at)."""
    built = _built_size(network)
    return built[-1] if built else int(timm.data.resolve_model_data_config(network)["input_size"][-1])


def check_input_size(network: nn.Module, image_size: int, settings: Settings = CONFIG) -> None:
    """Fail now, with the settings to change, if the network is not built for `image_size` px images (a
    ViT built for another img_size: the explainers and attention methods read its patch grid) or
    cannot take them (a CNN whose feature map would vanish), not deep inside pretraining."""
    fix = (f"set {settings.image_size} to the size it was trained at, and build it for that size "
           f"({settings.model_kwargs}, e.g. img_size for a ViT)")
    built = _built_size(network)
    if built is not None and built != (image_size, image_size):
        raise ValueError(f"the model is built for {built[0]}x{built[1]} px images, not "
                         f"{image_size}x{image_size}: {fix}.")
    training = network.training
    try:
        with torch.no_grad():
            device = next(network.parameters()).device
            network.eval()(torch.zeros(1, 3, image_size, image_size, device=device))
    except (RuntimeError, AssertionError, ValueError) as err:
        raise ValueError(f"the model cannot take {image_size}x{image_size} px images ({_first_line(err)}): "
                         f"{fix}.") from None
    finally:
        network.train(training)


def wrap(network: nn.Module, *, name: str, image_size: int, mean: Any = None, std: Any = None) -> ExplainedModel:
    """Freeze a network as an explained model; mean/std default to the model's timm data config."""
    if mean is None or std is None:
        data_cfg = timm.data.resolve_model_data_config(network)
        mean = data_cfg["mean"] if mean is None else mean
        std = data_cfg["std"] if std is None else std
    return ExplainedModel(network, mean=list(mean), std=list(std), image_size=image_size, name=name)
