"""Training the embedded black boxes: the removal augmentation and what the cache key covers."""

from __future__ import annotations

import pytest
import torch

from ltx.data.shapes import ShapesDataset
from ltx.lit.classifier import ClassifierModule, random_removal
from ltx.stages.blackbox import data_fingerprint
from tests.helpers import tiny_explained


def test_removal_blacks_out_at_most_max_fraction_of_the_chosen_images_and_nothing_else():
    torch.manual_seed(0)
    images = torch.rand(400, 3, 16, 16) * 0.9 + 0.1  # no pixel is black before
    out = random_removal(images, probability=0.5, max_fraction=0.6)
    black = (out == 0).all(1).flatten(1)
    assert ((out == images) | (out == 0)).all()  # a pixel is kept or blacked in every channel
    assert ((out == 0).any(1) == (out == 0).all(1)).all()
    fractions = black.float().mean(1)
    assert fractions.max() <= 0.6 and 0.35 < (fractions > 0).float().mean() < 0.65
    assert fractions[fractions > 0].mean() > 0.15  # U(0, 0.6): mean 0.3
    assert torch.equal(random_removal(images, probability=0.0, max_fraction=0.9), images)
    torch.manual_seed(1)
    first = random_removal(images, probability=1.0, max_fraction=0.9)
    torch.manual_seed(1)
    assert torch.equal(first, random_removal(images, probability=1.0, max_fraction=0.9))  # seeded


@pytest.mark.parametrize("removal", [{"probability": 1.5, "max_fraction": 0.5}, {"probability": 0.5},
                                     {"probability": 0.5, "max_fraction": 0.0},
                                     {"probability": 0.5, "max_fraction": 0.5, "start_epoch": -1}])
def test_bad_removal_settings_are_refused(removal):
    with pytest.raises(ValueError, match="train.removal="):
        ClassifierModule(tiny_explained("ltx_shapes_resnet"), removal=removal)


def test_removal_starts_at_its_epoch():
    module = ClassifierModule(tiny_explained("ltx_shapes_resnet"),
                              removal={"probability": 1.0, "max_fraction": 0.9, "start_epoch": 1})
    images = torch.rand(8, 3, 64, 64) * 0.9 + 0.1
    seen = []
    module.log = lambda *args, **kwargs: None  # no trainer here
    module.explained.model.forward = lambda x: seen.append(x) or torch.zeros(len(x), 8, requires_grad=True)
    for epoch in (0, 1):
        with pytest.MonkeyPatch.context() as patch:
            patch.setattr(ClassifierModule, "current_epoch", property(lambda self: epoch))
            module.training_step({"image": images, "label": torch.zeros(8, dtype=torch.long)}, 0)
    clean = module.explained.normalize(images)
    assert torch.equal(seen[0], clean) and not torch.equal(seen[1], clean)


def test_the_data_fingerprint_sees_more_than_the_first_image():
    data = ShapesDataset(40, seed=0, image_size=16)
    before = data_fingerprint(data)
    assert data_fingerprint(ShapesDataset(40, seed=0, image_size=16)) == before
    data.images[25, 0, 3, 3] ^= 1  # one pixel of an image that is not the first
    assert data_fingerprint(data) != before
    data.images[25, 0, 3, 3] ^= 1
    data.labels[39] = (data.labels[39] + 1) % 8
    assert data_fingerprint(data) != before
