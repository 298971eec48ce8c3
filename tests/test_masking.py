import pytest
import torch
from hydra.utils import instantiate

from ltx.masking import BlurBaseline, ConstantBaseline, LearnedBaseline, MeanBaseline, NoiseBaseline

IMAGES = torch.rand(2, 3, 16, 16)


@pytest.mark.parametrize("masking", [ConstantBaseline(), MeanBaseline(), BlurBaseline(sigma=2.0, kernel_size=5),
                                     NoiseBaseline(), LearnedBaseline(resolution=4)])
def test_ones_keep_the_image_and_output_is_in_range(masking):
    assert torch.allclose(masking(IMAGES, torch.ones(2, 1, 16, 16)), IMAGES)
    out = masking(IMAGES, torch.rand(2, 1, 16, 16))
    assert out.shape == IMAGES.shape and out.min() >= 0 and out.max() <= 1


def test_constant_zero_is_the_papers_black_masking():
    mask = torch.rand(2, 1, 16, 16)
    assert torch.allclose(ConstantBaseline()(IMAGES, mask), IMAGES * mask)
    coloured = ConstantBaseline(value=[1.0, 0.0, 0.5])(IMAGES, torch.zeros(2, 1, 16, 16))
    assert torch.allclose(coloured[:, 0], torch.ones(2, 16, 16)) and torch.allclose(coloured[:, 2], torch.full((2, 16, 16), 0.5))


def test_mean_baseline_is_each_images_mean_colour():
    out = MeanBaseline()(IMAGES, torch.zeros(2, 1, 16, 16))
    assert torch.allclose(out[:, :, 3, 5], IMAGES.mean(dim=(-2, -1)))


def test_hard_masks_are_binary_forward_and_straight_through_backward():
    mask = torch.tensor([0.2, 0.7]).view(1, 1, 1, 2).expand(1, 1, 2, 2).clone().requires_grad_(True)
    images = torch.ones(1, 3, 2, 2)
    out = ConstantBaseline(hard=True)(images, mask)
    assert torch.equal(out[0, 0], torch.tensor([[0.0, 1.0], [0.0, 1.0]]))
    out.sum().backward()
    assert torch.allclose(mask.grad, torch.full_like(mask, 3.0))  # identity gradient, summed over 3 channels


def test_learned_baseline_gradient_is_reversed():
    masking = LearnedBaseline(resolution=2)
    out = masking(IMAGES, torch.zeros(2, 1, 16, 16))
    out.sum().backward()
    assert (masking.logits.grad < 0).all()  # d(sum)/d(logits) > 0, reversed


def test_bad_options_fail_early():
    with pytest.raises(ValueError, match="threshold"):
        ConstantBaseline(threshold=1.5)
    with pytest.raises(ValueError, match="kernel_size"):
        BlurBaseline(kernel_size=4)


@pytest.mark.parametrize("name", ["constant", "mean", "blur", "noise", "learned"])
def test_every_masking_config_instantiates(name):
    from tests.helpers import compose_config

    masking = instantiate(compose_config([f"masking={name}"]).masking)
    assert masking(IMAGES, torch.ones(2, 1, 16, 16)).shape == IMAGES.shape
