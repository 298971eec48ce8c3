"""Sufficiency and necessity under continuous perturbation: instead of removing pixels in steps,
the image is blended towards the baseline, each pixel in proportion to its relevance (issue 18,
after the 2026 paper on quantifiable explanations without ground truth, whose text we do not have:
what follows is our definition, not a transcription).

For an image x ∈ [0, 1]^{3×H×W}, its ground-truth label y and a map s (any shape, dtype, scale):

1. m = s upsampled to H × W (bilinear, float64: as every metric reads maps), then min-max
   normalised per image: m̂ = (m − min m) / (max m − min m) ∈ [0, 1]. A constant map (no pixel
   more relevant than another) is m̂ = 0.5 everywhere.
2. Baseline b = 0: black in [0, 1] pixel space, the paper suite's removal value (`PaperCurve`;
   PROTOCOLS.md, "Evaluation: POS / NEG"), so these curves end where the paper's would.
3. Intensities t_i = i / (T − 1), i = 0, …, T − 1 (T = `points`, 11 by default).
4. necessity:   x_t = x − t · m̂ · (x − b)         (the map's evidence removed, most relevant most);
   sufficiency: x_t = x − t · (1 − m̂) · (x − b)   (everything but the evidence removed).
5. a(t) = softmax(f(x_t))_y, the probability of the ground-truth label, not divided by
   a(0) = p_y(x) (as INS / DEL: every suite scores the label, whichever class the map explains).
6. AUC = 100 · trapezoid(a, t) = 100 · Σ_i (t_{i+1} − t_i) · (a_i + a_{i+1}) / 2, in [0, 100].
   sufficiency: higher is better (keeping the evidence keeps the class); necessity: lower is
   better (removing it loses the class), as DEL and POS.

So both curves start at p_y(x); at t = 1, necessity shows (1 − m̂)·x and sufficiency m̂·x, and
a binary map blends its pixels fully. A constant map gives both metrics the same curve (the image
dimmed uniformly to half): an uninformative map is as sufficient as it is necessary. Unlike the
rank-based metrics, the map's values matter, not only its order: only positive affine rescalings
(a·s + c, a > 0) leave the results unchanged.

Cost: T forwards per image and metric (t = 0, the clean image, included as the paper suite
includes r = 0); the two never share a run (other weights), so the suite costs 2·T per image.
Memory per chunk: the chunk's inputs plus its weights t·m̂, (chunk_size, H·W) float64.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from ltx.metrics.perturbation import PaperCurve, PerturbationCurve, evenly_spaced, job_rows
from ltx.models.explainer import upsample_to_image


def normalised_relevance(saliency: Tensor, size: tuple[int, int]) -> Tensor:
    """m̂ (B, H·W) float64 in [0, 1]: each map upsampled to `size`, then min-max scaled per image
    (its minimum 0 and maximum 1 exactly); a constant map is 0.5 everywhere."""
    flat = upsample_to_image(saliency, size, dtype=torch.float64).flatten(1).to(torch.float64)
    low, high = flat.aminmax(dim=1, keepdim=True)
    span = high - low
    scaled = (flat - low) / torch.where(span > 0, span, 1.0)
    return torch.where(span > 0, scaled, 0.5)


class BlendCurve(PerturbationCurve):
    """The image blended towards black in proportion to the normalised map (`descending`:
    necessity) or its complement (sufficiency), at T evenly spaced intensities t ∈ [0, 1]; label
    probability, AUC = 100 · trapezoid(curve, t). The exact definition is the module's.

    On the perturbation engine: a map's `pixel_positions` are its per-pixel weights (m̂ or 1 − m̂),
    a step's level is t, its mask the weight t·m̂ and its input lerp(x, b, t·m̂)."""

    auc_scale = 100.0
    score = "prob"
    #: the paper suite's baseline, black, so that the curves are comparable with its curves
    endpoints = PaperCurve.endpoints

    def __init__(self, model: nn.Module, *, points: int = 11, chunk_size: int = 256, **kwargs: Any) -> None:
        if points < 2:
            raise ValueError(f"points must be >= 2 (t = 0 and t = 1 at least), got {points}")
        super().__init__(model, chunk_size=chunk_size, num_points=points, **kwargs)
        self.points = points

    def schedule(self, height: int, width: int) -> Tensor:
        return evenly_spaced(self.points)

    def schedule_x(self, num_points: int) -> Tensor:
        return evenly_spaced(num_points)

    def pixel_positions(self, saliency: Tensor, size: tuple[int, int]) -> Tensor:
        """How much of a pixel's difference to the baseline t = 1 removes: m̂ (necessity) or
        1 − m̂ (sufficiency), (B, H·W) float64."""
        relevance = normalised_relevance(saliency, size)
        return relevance if self.descending else 1 - relevance

    def step_masks(self, positions: Tensor, levels: Tensor) -> Tensor:
        """The blend weights t·m̂ (or t·(1 − m̂)) of n jobs, (n, H·W) float64."""
        return positions * levels

    def perturbed_inputs(self, start: Tensor, finish: Tensor, image: Tensor, perturbed: Tensor) -> Tensor:
        """x − w·(x − b) = lerp(x, b, w) with w the jobs' weights (n, 1, H, W) in the images'
        dtype: exactly x where w = 0 and exactly b where w = 1 (torch.lerp's two-sided form)."""
        return torch.lerp(start[image], job_rows(finish, image), perturbed.to(start.dtype))


class Sufficiency(BlendCurve):
    """Sufficiency: label probability as all but the map's evidence fades to black; higher is better."""

    name = "sufficiency"
    description = ("label probability, image blended to black in proportion to 1 − normalised map, "
                   "t ∈ [0, 1] (AUC ×100, higher is better)")
    higher_is_better = True
    descending = False


class Necessity(BlendCurve):
    """Necessity: label probability as the map's evidence fades to black; lower is better."""

    name = "necessity"
    description = ("label probability, image blended to black in proportion to the normalised map, "
                   "t ∈ [0, 1] (AUC ×100, lower is better)")
    higher_is_better = False
    descending = True


CONTINUOUS_METRICS: dict[str, type[BlendCurve]] = {cls.name: cls for cls in (Sufficiency, Necessity)}
