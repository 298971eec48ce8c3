"""The oracle reference: the ground-truth mask graded by signed distance."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ltx.methods.base import create_method
from ltx.methods.oracle import signed_depth
from ltx.metrics.perturbation import saliency_ranks
from tests.helpers import tiny_explained


def square_mask(size: int = 16, lo: int = 4, hi: int = 11) -> torch.Tensor:
    mask = torch.zeros(size, size, dtype=torch.bool)
    mask[lo:hi, lo:hi] = True
    return mask


def test_depth_is_the_distance_to_the_other_side():
    depth = signed_depth(square_mask().numpy())
    assert depth[7, 7] == 4.0  # the centre of the 7-px square: 4 px to the nearest outside pixel
    assert depth[4, 4] == 1.0 and depth[3, 4] == -1.0  # an edge pixel and its outside neighbour
    assert depth[0, 0] == -np.hypot(4, 4)  # the corner: the distance to the square's corner pixel
    assert (depth[square_mask().numpy()] > 0).all() and (depth[~square_mask().numpy()] < 0).all()


def test_removal_eats_the_object_from_its_core_then_the_nearest_background():
    mask = square_mask()
    method = create_method("gt_mask", tiny_explained("ltx_shapes_vit"))
    images = torch.rand(1, 3, 16, 16)
    maps = method(images, torch.zeros(1, dtype=torch.long), mask=mask[None])
    ranks = saliency_ranks(maps, (16, 16), descending=True).view(16, 16)
    inside = int(mask.sum())
    assert set(ranks[mask].tolist()) == set(range(inside))  # every object pixel before any other
    assert ranks[7, 7] == 0  # the deepest first
    assert ranks[3, 7] < ranks[0, 7]  # outside: nearer to the object first
    ascending = saliency_ranks(maps, (16, 16), descending=False).view(16, 16)
    assert ascending[15, 15] == 0 and (ascending[mask] >= 256 - inside).all()  # NEG: the farthest (corner) first


def test_flat_masks_give_flat_maps_and_a_missing_mask_is_refused():
    empty = np.zeros((8, 8), dtype=bool)
    assert not signed_depth(empty).any() and not signed_depth(~empty).any()
    method = create_method("gt_mask", tiny_explained("ltx_shapes_resnet"))
    with pytest.raises(ValueError, match="needs the batch entries \\['mask'\\]"):
        method(torch.rand(2, 3, 64, 64), torch.zeros(2, dtype=torch.long))
