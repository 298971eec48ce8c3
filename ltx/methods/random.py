"""The floor every method must beat: a uniformly random map."""

from __future__ import annotations

import zlib

import torch

from ltx.methods.base import Method, register_method
from ltx.models.explained import ExplainedModel


@register_method("random")
class RandomMap(Method):
    """Uniform noise, seeded per image from `seed` and the image's pixels: the same image gets the
    same map in any batch, order, process or resumed run. The floor of every class mode, contrastive
    ones included: it ignores the class by design."""

    contrastive = True
    model_independent = True

    def __init__(self, model: ExplainedModel, seed: int = 0) -> None:
        super().__init__(model)
        self.seed = seed

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        maps = []
        for image in images.detach().cpu():
            key = zlib.crc32(image.contiguous().numpy().tobytes(), self.seed)
            maps.append(torch.rand(image.shape[-2:], generator=torch.Generator().manual_seed(key)))
        return torch.stack(maps).to(images.device)
