"""One interface for every explanation method: `method(images, classes) -> maps`.

Like Captum's `attribute(inputs, target)`: `images` are (B, 3, H, W) in [0, 1], `classes` a (B,)
tensor of the class to explain per image, and the result a (B, H, W) saliency map at image size
(any scale: the metrics only rank it). Methods are registered by name so the CLI and the configs
can find them; a method that needs a model's internals declares the families it supports and
refuses others with a clear error. A method that needs more of the batch than the images (the
ground-truth masks, for the oracle) names those keys in `needs` and receives them as keyword
arguments of `explain`.
"""

from __future__ import annotations

import difflib
from abc import ABC, abstractmethod
from collections.abc import Callable
from typing import ClassVar, TypeVar

import torch
from torch import nn

from ltx.models.explained import ExplainedModel

METHODS: dict[str, type[Method]] = {}

M = TypeVar("M", bound="type[Method]")


def register_method(name: str) -> Callable[[M], M]:
    """Class decorator: make a method available by `name` (configs, CLI)."""

    def wrap(cls: M) -> M:
        if name in METHODS:
            raise ValueError(f"method {name!r} is registered twice ({METHODS[name]} and {cls})")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


class MethodNotApplicable(ValueError):
    """The method needs internals (attention, conv layers) this explained model does not have."""


class Method(ABC):
    """A saliency method bound to one explained model."""

    name: ClassVar[str] = "method"
    #: model families ('vit', 'cnn') the method supports; None = any model (black-box methods)
    families: ClassVar[tuple[str, ...] | None] = None
    #: batch entries besides images and classes that `explain` takes as keyword arguments (e.g. "mask")
    needs: ClassVar[tuple[str, ...]] = ()

    def __init__(self, model: ExplainedModel) -> None:
        self.check_applicable(model)
        self.model = model

    @classmethod
    def applies_to(cls, model: ExplainedModel) -> bool:
        return cls.families is None or model.family in cls.families

    @classmethod
    def check_applicable(cls, model: ExplainedModel) -> None:
        if not cls.applies_to(model):
            raise MethodNotApplicable(
                f"method {cls.name!r} needs a {' or '.join(cls.families or ())} model, but "
                f"{model.name!r} is a {model.family}: choose another method for it."
            )

    @abstractmethod
    def explain(self, images: torch.Tensor, classes: torch.Tensor, **batch: torch.Tensor) -> torch.Tensor:
        """Saliency maps (B, H, W) for `classes` on `images` (B, 3, H, W) in [0, 1]; `batch` holds
        the entries named in `needs`."""

    def __call__(self, images: torch.Tensor, classes: torch.Tensor, **batch: torch.Tensor) -> torch.Tensor:
        missing = [key for key in self.needs if batch.get(key) is None]
        if missing:
            raise ValueError(f"method {self.name!r} needs the batch entries {missing} (the data has none?): "
                             f"choose data with them or another method.")
        maps = self.explain(images, classes, **{key: batch[key] for key in self.needs})
        expected = (images.shape[0], *images.shape[-2:])
        if tuple(maps.shape) != expected:
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(maps.shape)}, expected {expected}")
        return maps


def create_method(name: str, model: ExplainedModel, **kwargs) -> Method:
    """Build a registered method by name; unknown names list the valid ones."""
    if name not in METHODS:
        close = difflib.get_close_matches(name, METHODS, n=3)
        hint = f" Did you mean {', '.join(close)}?" if close else ""
        raise ValueError(f"unknown method {name!r}.{hint} Valid methods: {', '.join(sorted(METHODS))}.")
    return METHODS[name](model, **kwargs)


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
        maps = nn.functional.interpolate(maps, size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps
