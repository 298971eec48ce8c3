"""RISE (Petsiuk et al. 2018): black-box saliency from randomly masked copies of the image.

Captum has no RISE, so it is written here, batched over masks and images. Masking is in [0, 1]
pixel space with black as the masked value, the same convention as LTX's masks and the metrics.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from ltx.classes import class_probability
from ltx.methods.base import Method, register_method
from ltx.models.explained import ExplainedModel


@register_method("rise")
class RISE(Method):
    """Saliency S_c = Σ_i f_c(x ⊙ M_i) · M_i / (N · p), with f_c the softmax probability of class c
    (for a pair (c, c′), the two-class one of c: `ltx.classes.class_probability`).

    Each mask M_i is an s×s grid of Bernoulli(p) cells, bilinearly upsampled to (s+1)·⌈H/s⌉ pixels
    and cropped at a random shift in [0, ⌈H/s⌉) — the paper's smooth, shift-randomised masks.
    The grids and shifts are drawn once from `seed` at construction, so every image is explained
    with the same mask set and a map does not depend on which other images share its batch.
    Costs `num_masks` forward passes per image; `batch_size` bounds the masked images per pass.
    """

    contrastive = True

    def __init__(
        self,
        model: ExplainedModel,
        num_masks: int = 4000,
        grid_size: int = 8,
        keep_prob: float = 0.5,
        batch_size: int = 256,
        seed: int = 0,
    ) -> None:
        super().__init__(model)
        if not 0.0 < keep_prob <= 1.0:
            raise ValueError(f"RISE keep_prob must be in (0, 1], got {keep_prob}")
        self.num_masks = num_masks
        self.keep_prob = keep_prob
        self.batch_size = batch_size
        self.cell_size = math.ceil(model.image_size / grid_size)
        generator = torch.Generator().manual_seed(seed)
        self.grids = (torch.rand(num_masks, 1, grid_size, grid_size, generator=generator) < keep_prob).float()
        self.shifts = torch.randint(0, self.cell_size, (num_masks, 2), generator=generator)

    def masks(self, grids: torch.Tensor, shifts: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        """(n, 1, s, s) binary grids → (n, H, W) smooth masks, each cropped at its own shift."""
        up = (grids.shape[-1] + 1) * self.cell_size
        smooth = nn.functional.interpolate(grids, size=(up, up), mode="bilinear", align_corners=False)[:, 0]
        rows = shifts[:, :1] + torch.arange(size[0], device=shifts.device)  # (n, H)
        cols = shifts[:, 1:] + torch.arange(size[1], device=shifts.device)  # (n, W)
        index = torch.arange(len(grids), device=grids.device)[:, None, None]
        return smooth[index, rows[:, :, None], cols[:, None, :]]

    @torch.no_grad()
    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        size = (images.shape[-2], images.shape[-1])
        saliency = images.new_zeros(images.shape[0], *size)
        masks_per_pass = max(1, self.batch_size // images.shape[0])
        for grids, shifts in zip(
            self.grids.split(masks_per_pass), self.shifts.split(masks_per_pass), strict=True
        ):
            masks = self.masks(grids.to(images.device), shifts.to(images.device), size)  # (n, H, W)
            masked = (images[:, None] * masks[None, :, None]).flatten(0, 1)  # (B·n, 3, H, W)
            per_mask = classes.repeat_interleave(len(masks), dim=0)  # image-major, as `masked`
            class_probs = class_probability(self.model(masked), per_mask).view(images.shape[0], len(masks))
            saliency += torch.einsum("bn,nhw->bhw", class_probs, masks)
        return saliency / (self.num_masks * self.keep_prob)
