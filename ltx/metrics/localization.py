"""Localization metrics for data with ground-truth object masks (e.g. the shapes data).

Same form as the perturbation metrics: `update(images, saliency, labels, gt_masks)` (images
and labels are accepted and ignored; `model` is accepted and ignored by the constructors),
`compute()` the mean over scored images, in [0, 1], higher is better.

Maps (B, h, w) or (B, 1, h, w) of any dtype are resized bilinearly to the masks' size.
Images whose mask cannot score a map are skipped (counted in neither sum): an empty mask
for every metric, and also a full mask for `gt_auroc` (no negatives).
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torchmetrics import Metric

from ltx.models.explainer import upsample_to_image


class LocalizationMetric(Metric):
    """Mean of a per-image score of the map against the binary GT mask."""

    name: ClassVar[str]
    description: ClassVar[str]
    higher_is_better = True
    is_differentiable = False
    full_state_update = False

    def __init__(self, model: nn.Module | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.add_state("total", default=torch.tensor(0.0, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("count", default=torch.tensor(0, dtype=torch.long), dist_reduce_fx="sum")

    def scores(self, maps: Tensor, masks: Tensor) -> Tensor:
        """Per-image scores (B,) for float64 maps and bool masks, both (B, H, W)."""
        raise NotImplementedError

    def scorable(self, masks: Tensor) -> Tensor:
        """Which images (B,) have a mask this metric can score."""
        return masks.flatten(1).any(1)

    def update(self, images: Tensor | None, saliency: Tensor, labels: Tensor | None = None,
               gt_masks: Tensor | None = None) -> None:
        if gt_masks is None:
            raise ValueError(f"{self.name} needs ground-truth masks: pass gt_masks (the data has none?)")
        masks = gt_masks[:, 0] if gt_masks.dim() == 4 else gt_masks
        if masks.dim() != 3 or masks.shape[0] != saliency.shape[0]:
            raise ValueError(f"gt_masks must be (B, H, W) or (B, 1, H, W) matching saliency's batch, got "
                             f"{tuple(gt_masks.shape)} for saliency {tuple(saliency.shape)}")
        masks = masks.to(saliency.device) > 0
        maps = upsample_to_image(saliency, tuple(masks.shape[-2:]), dtype=torch.float64).double()
        keep = self.scorable(masks)
        values = self.scores(maps[keep], masks[keep])
        self.total = self.total + values.sum().to(self.total.device)
        self.count = self.count + int(keep.sum())

    def compute(self) -> Tensor:
        return self.total / self.count


class PointingGame(LocalizationMetric):
    """Hit if the map's maximum lies in the mask, or within `tolerance` pixels (Euclidean) of it.

    Ties for the maximum go to the lowest flat index, so a constant map points at the
    top-left pixel.
    """

    name = "pointing_game"
    description = "fraction of maps whose maximum falls inside the object mask"

    def __init__(self, model: nn.Module | None = None, *, tolerance: float = 0.0, **kwargs: Any) -> None:
        super().__init__(model, **kwargs)
        if tolerance < 0:
            raise ValueError(f"tolerance must be >= 0, got {tolerance}")
        self.tolerance = tolerance

    def scores(self, maps: Tensor, masks: Tensor) -> Tensor:
        flat = maps.flatten(1)
        index = torch.arange(flat.shape[1], device=flat.device).expand_as(flat)
        peak = torch.where(flat == flat.max(1, keepdim=True).values, index, flat.shape[1]).min(1).values
        width = maps.shape[-1]
        rows = torch.arange(maps.shape[-2], device=maps.device)[None, :, None]
        cols = torch.arange(width, device=maps.device)[None, None, :]
        distance2 = (rows - (peak // width)[:, None, None]) ** 2 + (cols - (peak % width)[:, None, None]) ** 2
        return (masks & (distance2 <= self.tolerance**2)).flatten(1).any(1).double()


class EnergyPointingGame(LocalizationMetric):
    """Share of the map's energy inside the mask (Score-CAM's energy-based pointing game).

    The map is min-normalised first (m − min m, per image) so that any scale or offset gives
    the same value; a constant map spreads its energy evenly (score = the mask's area share).
    """

    name = "energy_pointing_game"
    description = "share of the (min-normalised) map's energy inside the object mask"

    def scores(self, maps: Tensor, masks: Tensor) -> Tensor:
        energy = (maps - maps.amin((1, 2), keepdim=True)).flatten(1)
        total = energy.sum(1, keepdim=True)
        energy = torch.where(total > 0, energy, torch.ones_like(energy))
        return (energy * masks.flatten(1)).sum(1) / energy.sum(1)


class MaskAUROC(LocalizationMetric):
    """Per-image ROC AUC of map values as scores for the mask's pixels, averaged over images.

    Mann–Whitney U with average ranks for ties: AUC = (R⁺ − n⁺(n⁺+1)/2) / (n⁺ n⁻), R⁺ the rank
    sum of mask pixels. Perfect map → 1, reversed → 0, constant → 0.5.
    """

    name = "gt_auroc"
    description = "per-image ROC AUC of the map against the object mask"

    def scorable(self, masks: Tensor) -> Tensor:
        flat = masks.flatten(1)
        return flat.any(1) & ~flat.all(1)

    def scores(self, maps: Tensor, masks: Tensor) -> Tensor:
        values, order = maps.flatten(1).sort(1)
        # Tied values share the mean of their 1-based positions [first, last] in sorted order.
        first = torch.searchsorted(values, values, side="left")
        last = torch.searchsorted(values, values, side="right") - 1
        ranks = (first + last).double() / 2 + 1
        positive = masks.flatten(1).gather(1, order)
        n_pos = positive.sum(1).double()
        n_neg = positive.shape[1] - n_pos
        rank_sum = (ranks * positive).sum(1)
        return (rank_sum - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg)
