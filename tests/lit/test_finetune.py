import pytest
import torch

from ltx.lit.finetune import FinetuneModule
from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline
from ltx.models.explainer import build_explainer


def _module(explained, **kwargs) -> FinetuneModule:
    torch.manual_seed(0)
    return FinetuneModule(explained, build_explainer(explained), ConstantBaseline(), LTXLoss(mask_weight=5.0),
                          **kwargs)


def test_finetuning_lowers_each_instances_loss(explained):
    images, classes = torch.rand(3, 3, 64, 64), torch.tensor([0, 3, 5])
    pretrained = _module(explained, steps=0).finetune(images, classes)
    tuned = _module(explained, steps=5, lr=1e-3, select_by="last").finetune(images, classes)
    assert (tuned["loss"] < pretrained["loss"]).all()
    assert (tuned["step"] == 5).all() and (pretrained["step"] == 0).all()
    assert tuned["maps"].shape == (3, 64, 64)


def test_instance_batched_equals_one_by_one(explained):
    """Each instance gets exactly the updates it would get alone (sum of losses, elementwise AdamW)."""
    images, classes = torch.rand(3, 3, 64, 64), torch.tensor([1, 2, 7])
    module = _module(explained, steps=3, lr=1e-3, select_by="loss")
    together = module.finetune(images, classes)
    alone = [module.finetune(images[i:i + 1], classes[i:i + 1]) for i in range(3)]
    assert torch.allclose(together["maps"], torch.cat([a["maps"] for a in alone]), atol=1e-5)
    assert torch.equal(together["step"], torch.cat([a["step"] for a in alone]))


def test_finetuning_leaves_the_pretrained_explainer_untouched(explained):
    module = _module(explained, steps=2)
    before = {k: v.clone() for k, v in module.explainer.state_dict().items()}
    module.finetune(torch.rand(2, 3, 64, 64), torch.tensor([0, 1]))
    assert all(torch.equal(before[k], v) for k, v in module.explainer.state_dict().items())


def test_loss_selection_never_picks_a_worse_step_than_the_pretrained_map(explained):
    images, classes = torch.rand(2, 3, 64, 64), torch.tensor([4, 6])
    pretrained = _module(explained, steps=0).finetune(images, classes)
    selected = _module(explained, steps=4, lr=5e-2, select_by="loss").finetune(images, classes)
    assert (selected["loss"] <= pretrained["loss"] + 1e-6).all()


def test_head_scope_tunes_only_the_head():
    from tests.helpers import tiny_explained

    explained = tiny_explained("ltx_shapes_vit")
    module = _module(explained, scope="head")
    tuned = [n for n, p in module.explainer.named_parameters() if module._is_tuned(n, p)]
    assert tuned and all(n.startswith("head.") for n in tuned)


@pytest.mark.parametrize("kwargs, match", [(dict(steps=-1), "steps"), (dict(lr=0.0), "lr"),
                                           (dict(select_by="best"), "last, loss|'last'"),
                                           (dict(scope="lora"), "scope")])
def test_bad_settings_fail_early(kwargs, match):
    from tests.helpers import tiny_explained

    with pytest.raises(ValueError, match=match):
        _module(tiny_explained("ltx_shapes_resnet"), **kwargs)


def test_finetuning_works_where_grad_is_off():
    """`trainer.predict` runs predict_step under no_grad: finetuning must still train."""
    from tests.helpers import tiny_explained

    module = _module(tiny_explained("ltx_shapes_resnet"), steps=2)
    with torch.no_grad():
        out = module.finetune(torch.rand(1, 3, 64, 64), torch.tensor([3]))
    assert out["step"].item() == 2
