import math

import pytest
import torch
from torch.nn import functional as F

from ltx.losses import LTXLoss, mask_penalty, total_variation
from ltx.masking import ConstantBaseline
from ltx.models.explainer import Masks
from tests.helpers import tiny_explained


def test_mask_penalties_by_hand():
    zeros, ones = torch.zeros(2, 1, 4, 4), torch.ones(2, 1, 4, 4)
    assert torch.allclose(mask_penalty(zeros, "paper"), torch.full((2,), math.log(2)))
    assert torch.allclose(mask_penalty(ones, "paper"), torch.full((2,), math.log1p(math.e)))
    assert torch.allclose(mask_penalty(ones * 0.25, "l1"), torch.full((2,), 0.25))
    with pytest.raises(ValueError, match="paper"):
        mask_penalty(zeros, "l2")


def test_total_variation_by_hand():
    stripes = torch.tensor([[0.0, 1.0], [0.0, 1.0]]).view(1, 1, 2, 2)
    assert torch.allclose(total_variation(stripes), torch.tensor([1.0]))  # horizontal jumps only
    assert torch.allclose(total_variation(torch.ones(1, 1, 3, 3)), torch.tensor([0.0]))


def _inputs():
    explained = tiny_explained("ltx_shapes_resnet")
    images = torch.rand(3, 3, 64, 64)
    coarse = torch.rand(3, 1, 8, 8)
    masks = Masks(F.interpolate(coarse, size=64, mode="bilinear"), coarse)
    return explained, images, masks, torch.tensor([0, 1, 2])


def test_loss_terms_and_weights():
    explained, images, masks, classes = _inputs()
    terms = LTXLoss(pred_weight=2.0, mask_weight=3.0)(explained, ConstantBaseline(), images, masks, classes)
    expected_pred = F.cross_entropy(explained(images * masks.mask), classes, reduction="none")
    assert torch.allclose(terms["pred"], expected_pred, atol=1e-6)
    assert torch.allclose(terms["loss"], 2 * terms["pred"] + 3 * terms["mask"])
    assert terms["loss"].shape == (3,) and "inv" not in terms and "smooth" not in terms


def test_optional_terms_enter_with_their_weights():
    explained, images, masks, classes = _inputs()
    loss = LTXLoss(mask_weight=0.0, inv_weight=0.5, smooth_weight=4.0)
    terms = loss(explained, ConstantBaseline(), images, masks, classes)
    p = explained(images * (1 - masks.mask)).softmax(-1).gather(1, classes[:, None])[:, 0]
    assert torch.allclose(terms["inv"], -torch.log(1 - p), atol=1e-5)
    assert torch.allclose(terms["smooth"], total_variation(masks.coarse))
    assert torch.allclose(terms["loss"], terms["pred"] + 0.5 * terms["inv"] + 4.0 * terms["smooth"])


def test_negative_weights_are_refused():
    with pytest.raises(ValueError, match="loss.mask_weight"):
        LTXLoss(mask_weight=-1.0)
