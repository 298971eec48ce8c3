"""The textures generator: deterministic per (seed, index), the class only in the key object's pattern."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ltx.data import TEXTURE_CLASSES, render_textures
from ltx.data.textures import KEY_RADIUS, KEY_WOBBLE


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return render_textures(range(400), seed=7)


def test_ranges_dtypes_and_balance(batch):
    images, masks, labels = batch
    assert images.shape == (400, 3, 64, 64) and images.dtype == torch.float32
    assert masks.shape == (400, 64, 64) and masks.dtype == torch.bool
    assert labels.shape == (400,) and labels.dtype == torch.int64
    assert images.min() >= 0 and images.max() <= 1
    counts = torch.bincount(labels, minlength=len(TEXTURE_CLASSES))
    assert counts.min() >= 25 and counts.max() <= 75  # 50 expected per class


def test_masks_are_one_blob_inside_the_image(batch):
    _, masks, _ = batch
    area = masks.flatten(1).float().mean(1)
    assert area.min() > 0.9 * torch.pi * KEY_RADIUS[0] ** 2  # a blob's area is at least its mean disc's
    assert area.max() < torch.pi * (KEY_RADIUS[1] * (1 + KEY_WOBBLE[1])) ** 2
    assert not (masks[:, [0, -1], :].any() or masks[:, :, [0, -1]].any())


def test_only_the_pattern_depends_on_the_class(batch):
    """Fewer classes relabel many samples: their masks and everything outside the key object stay."""
    images, masks, labels = (part[:200] for part in batch)
    images3, masks3, labels3 = render_textures(range(200), seed=7, num_classes=3)
    changed = labels3 != labels
    assert changed.float().mean() > 0.5 and set(labels3.tolist()) == {0, 1, 2}
    assert torch.equal(masks3, masks)
    covered = F.max_pool2d(masks[:, None].float(), kernel_size=3, stride=1, padding=1)[:, 0] > 0  # + the rim
    differs = (images3 != images).any(1)
    assert not (differs & ~covered).any()
    assert differs[changed].flatten(1).float().mean(1).min() > 0.05  # the pattern inside did change


def test_pattern_is_visible(batch):
    """Inside the object two contrasting colours alternate: far more variance than a plain fill."""
    images, masks, _ = batch
    interior = F.max_pool2d((~masks).float()[:, None], kernel_size=3, stride=1, padding=1)[:, 0] == 0
    luma = torch.tensordot(torch.tensor([0.299, 0.587, 0.114]), images, dims=([0], [1]))
    spread = torch.stack([luma[i][interior[i]].std() for i in range(len(images))])
    assert spread.min() > 0.08  # colours >= 0.4 apart in luminance, each covering a good part
    assert spread.median() > 0.15


@pytest.mark.parametrize("size", [32, 96])
def test_image_sizes(size):
    images, masks, _ = render_textures(range(8), seed=0, image_size=size, distractors=(3, 3))
    assert images.shape == (8, 3, size, size) and masks.shape == (8, size, size)
    assert masks.flatten(1).any(1).all()
    assert not (masks[:, [0, -1], :].any() or masks[:, :, [0, -1]].any())


def test_arguments_are_checked():
    with pytest.raises(ValueError, match="num_classes"):
        render_textures([0], seed=0, num_classes=9)
    with pytest.raises(ValueError, match="num_classes"):
        render_textures([0], seed=0, num_classes=0)
    with pytest.raises(ValueError, match="distractors"):
        render_textures([0], seed=0, distractors=(2, 1))
    with pytest.raises(ValueError, match="image_size"):
        render_textures([0], seed=0, image_size=8)
    with pytest.raises(ValueError, match="non-negative"):
        render_textures([-1], seed=0)
    images, masks, labels = render_textures([], seed=0, image_size=32)
    assert images.shape == (0, 3, 32, 32) and masks.shape == (0, 32, 32) and labels.shape == (0,)
