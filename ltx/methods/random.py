"""The floor every method must beat: a uniformly random map."""

from __future__ import annotations

import torch

from ltx.methods.base import Method, register_method
from ltx.models.explained import ExplainedModel


@register_method("random")
class RandomMap(Method):
    """Uniform noise, seeded so a run is reproducible."""

    def __init__(self, model: ExplainedModel, seed: int = 0) -> None:
        super().__init__(model)
        self.generator = torch.Generator().manual_seed(seed)

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        maps = torch.rand((images.shape[0], *images.shape[-2:]), generator=self.generator)
        return maps.to(images.device)
