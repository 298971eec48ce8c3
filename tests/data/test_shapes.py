"""The shapes generator: deterministic per (seed, index), well-formed, masks on the key object."""

from __future__ import annotations

import pytest
import torch
from torch.nn import functional as F

from ltx.data.shapes import KEY_RADIUS, SHAPE_CLASSES, ShapesDataset, render_shapes


@pytest.fixture(scope="module")
def batch() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return render_shapes(range(200), seed=7)


def test_sample_depends_only_on_seed_and_index(batch):
    images, masks, labels = batch
    picked = torch.tensor([150, 3, 77, 3, 0])  # another batch: other order, other size, a repeat
    images2, masks2, labels2 = render_shapes(picked, seed=7)
    assert torch.equal(images2, images[picked])
    assert torch.equal(masks2, masks[picked])
    assert torch.equal(labels2, labels[picked])
    single, single_mask, _ = render_shapes([77], seed=7)
    assert torch.equal(single[0], images[77]) and torch.equal(single_mask[0], masks[77])


def test_other_seed_gives_other_images(batch):
    other, _, _ = render_shapes(range(10), seed=8)
    assert not torch.equal(other, batch[0][:10])


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


def test_dataset_items_match_the_renderer():
    dataset = ShapesDataset(20, seed=1, offset=100, image_size=32, num_classes=4, distractors=(0, 1))
    assert len(dataset) == 20 and dataset.class_names == SHAPE_CLASSES[:4]
    assert dataset.num_classes == 4 and dataset.image_size == 32
    images, masks, labels = render_shapes(
        range(100, 120), seed=1, image_size=32, num_classes=4, distractors=(0, 1)
    )
    assert torch.equal(dataset.labels, labels)
    item = dataset[5]
    assert set(item) == {"image", "label", "mask", "index"}
    assert item["image"].dtype == torch.float32 and item["image"].shape == (3, 32, 32)
    assert (item["image"] - images[5]).abs().max() <= 0.5 / 255 + 1e-6  # stored as uint8
    assert torch.equal(item["mask"], masks[5])
    assert item["label"].dtype == torch.int64 and item["label"] == labels[5]
    assert item["index"].dtype == torch.int64 and item["index"] == 105
