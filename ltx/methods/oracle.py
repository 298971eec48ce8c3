"""The reference a benchmark with ground truth is checked against: the ground-truth mask as a map.

A binary mask ranks all its pixels equal, so a removal test would take them in flat-index order
(top rows first). The oracle grades it instead, by the Euclidean distance transform: inside the
object the depth (distance to the nearest pixel outside), outside minus the distance to the
object. Removing the most relevant pixels first then eats the object from its core outwards and
then the background nearest to it; removing the least relevant first starts at the pixels
farthest from the object. It is a reference, never a competitor (`ltx.report` does not rank it).
"""

from __future__ import annotations

import numpy as np
import torch
from scipy.ndimage import distance_transform_edt

from ltx.methods.base import Method, register_method


def signed_depth(mask: np.ndarray) -> np.ndarray:
    """(H, W) float64: distance to the background inside `mask`, minus the distance to the mask
    outside it (0 everywhere for an empty or a full mask: nothing to grade)."""
    if mask.all() or not mask.any():
        return np.zeros(mask.shape)
    return np.where(mask, distance_transform_edt(mask), -distance_transform_edt(~mask))


@register_method("gt_mask")
class GroundTruthMask(Method):
    """The key object's ground-truth mask, graded by signed distance (see the module). The reference
    of every class mode, contrastive ones included: the key object holds the evidence for c against
    any other class (on the generated data, distractors never carry a class pattern)."""

    needs = ("mask",)
    contrastive = True
    model_independent = True

    def explain(self, images: torch.Tensor, classes: torch.Tensor, *, mask: torch.Tensor) -> torch.Tensor:
        masks = (mask[:, 0] if mask.dim() == 4 else mask).detach().cpu().numpy() > 0
        maps = np.stack([signed_depth(m) for m in masks])
        return torch.from_numpy(maps).float().to(images.device)
