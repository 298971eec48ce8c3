"""The shapes generator: deterministic per (seed, index), well-formed, masks on the key object."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ltx.data.shapes import KEY_RADIUS, SHAPE_CLASSES, render_shapes


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return render_shapes(range(200), seed=7)


def test_ranges_and_dtypes(batch):
    images, masks, labels = batch
    assert images.shape == (200, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (200, 64, 64) and masks.dtype == torch.bool
    assert labels.shape == (200,) and labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    assert set(labels.tolist()) == set(range(len(SHAPE_CLASSES)))


def test_masks_are_the_key_object(batch):
    images, masks, _ = batch
    area = masks.flatten(1).float().mean(1)
    # the smallest shape (triangle, circumradius r) at the smallest r, the largest (square) at the largest r
    assert area.min() > 0.4 * KEY_RADIUS[0] ** 2
    assert area.max() < 4.2 * KEY_RADIUS[1] ** 2
    # the key object is one flat colour: mask pixels 2+ px away from any non-mask pixel all match
    outside = (~masks).float().unsqueeze(1)
    interior = F.max_pool2d(outside, kernel_size=5, stride=1, padding=2).squeeze(1) == 0
    for image, inside in zip(images, interior, strict=True):
        colours = image[:, inside]
        assert colours.shape[1] > 0
        assert (colours - colours[:, :1]).abs().max() < 1e-5


@pytest.mark.parametrize("size", [32, 96, 224])
def test_image_sizes(size):
    images, masks, _ = render_shapes(range(4), seed=0, image_size=size)
    assert images.shape == (4, 3, size, size) and masks.shape == (4, size, size)
    assert masks.flatten(1).any(1).all()
    # the key object lies fully inside the image: its mask never touches the border
    border = masks[:, [0, -1], :].any() or masks[:, :, [0, -1]].any()
    assert not border


def test_fewer_classes():
    _, _, labels = render_shapes(range(40), seed=0, image_size=16, num_classes=3)
    assert set(labels.tolist()) == {0, 1, 2}


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="num_classes"):
        render_shapes([0], seed=0, num_classes=9)
    with pytest.raises(ValueError, match="distractors"):
        render_shapes([0], seed=0, distractors=(2, 1))
