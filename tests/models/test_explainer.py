import pytest
import torch

from ltx.models.explainer import CNNExplainer, ViTExplainer, build_explainer
from tests.helpers import tiny_explained


def test_masks_are_image_sized_and_in_range(explained):
    explainer = build_explainer(explained)
    masks = explainer(torch.rand(2, 3, 64, 64))
    assert masks.mask.shape == (2, 1, 64, 64) and masks.coarse.shape == (2, 1, 8, 8)
    assert masks.mask.min() >= 0 and masks.mask.max() <= 1
    expected = ViTExplainer if explained.family == "vit" else CNNExplainer
    assert isinstance(explainer, expected)


def test_explainer_starts_from_the_explained_weights_or_scratch(explained):
    original = dict(explained.model.named_parameters())
    copied = dict(build_explainer(explained).trunk.named_parameters())
    fresh = dict(build_explainer(explained, init="scratch").trunk.named_parameters())
    name = next(n for n in copied if n.endswith("weight") and copied[n].dim() > 1)
    assert torch.equal(copied[name], original[name])
    assert not torch.equal(fresh[name], original[name])
    # the explainer is a copy: training it never touches f
    assert copied[name].data_ptr() != original[name].data_ptr()
    assert not any(p.requires_grad for p in explained.parameters())


@pytest.mark.parametrize("name", ["ltx_textures_vit", "ltx_textures_resnet"])
def test_vit_patch_embedding_frozen_and_batchnorm_in_eval(name):
    explainer = build_explainer(tiny_explained(name)).train()
    if name.endswith("vit"):
        assert not any(p.requires_grad for p in explainer.trunk.patch_embed.parameters())
        assert all(p.requires_grad for p in explainer.trunk.blocks.parameters())
    norms = [m for m in explainer.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert norms and not any(m.training for m in norms)  # the ViT's conv stem too
    assert explainer.head.training if name.endswith("vit") else explainer.decoder.training
    loose = build_explainer(tiny_explained(name), freeze_norm=False).train()
    assert all(m.training for m in loose.trunk.modules() if isinstance(m, torch.nn.BatchNorm2d))


def test_learned_decoder_gives_a_finer_coarse_mask():
    explainer = build_explainer(tiny_explained("ltx_shapes_resnet"), decoder="learned")
    masks = explainer(torch.rand(1, 3, 64, 64))
    assert masks.coarse.shape == (1, 1, 32, 32) and masks.mask.shape == (1, 1, 64, 64)


def test_unknown_options_name_the_choices():
    with pytest.raises(ValueError, match="explained.*scratch"):
        build_explainer(tiny_explained("ltx_shapes_vit"), init="imagenet")
    with pytest.raises(ValueError, match="bilinear.*learned"):
        build_explainer(tiny_explained("ltx_shapes_resnet"), decoder="deconv")


def test_cnn_masks_start_at_one_half_so_gradients_flow():
    """A random last layer on un-normalised trunk features saturates the sigmoid: no learning."""
    explainer = build_explainer(tiny_explained("ltx_shapes_resnet"))
    images = torch.rand(2, 3, 64, 64) * 4
    masks = explainer(images)
    assert torch.allclose(masks.coarse, torch.full_like(masks.coarse, 0.5))
    masks.mask.sum().backward()
    assert explainer.decoder.weight.grad.abs().sum() > 0


@pytest.mark.parametrize("name", ["ltx_shapes_vit", "ltx_shapes_resnet"])
def test_explainer_files_from_before_the_trunk_rename_still_load(name):
    """Explainers saved with `backbone.*` keys (before issue 15) load into `trunk`, also nested (a run's
    explainer file holds `explainer.*` and `masking.*`)."""
    source, target = build_explainer(tiny_explained(name)), build_explainer(tiny_explained(name), init="scratch")
    old = {k.replace("trunk.", "backbone.", 1): v for k, v in source.state_dict().items()}
    assert any(k.startswith("backbone.") for k in old) and not any(k.startswith("trunk.") for k in old)
    holder = torch.nn.ModuleDict({"explainer": target})
    holder.load_state_dict({f"explainer.{k}": v for k, v in old.items()})
    assert all(torch.equal(v, target.state_dict()[k]) for k, v in source.state_dict().items())
