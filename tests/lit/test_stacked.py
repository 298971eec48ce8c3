"""Per-instance layers as batched kernels (`ltx.finetune.stacked`): each stacked layer is its
layer run once per instance, and the engine falls back to vmap where a layer is not covered."""

import pytest
import torch
from torch import nn
from torch.func import functional_call

from ltx.finetune.stacked import STACKED, stack
from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline
from ltx.methods.ltx import LTX
from ltx.models.explainer import build_explainer

LAYERS = [
    (nn.Linear(6, 5), (4, 7, 6)),
    (nn.Linear(6, 5, bias=False), (4, 6)),
    (nn.Conv2d(3, 5, 3, stride=2, padding=1), (4, 3, 9, 9)),
    (nn.Conv2d(4, 6, 3, padding=1, groups=2, bias=False), (4, 4, 8, 8)),
    (nn.Conv2d(4, 6, 3, padding=1, padding_mode="reflect"), (4, 4, 8, 8)),
    (nn.Conv2d(3, 5, 1, stride=2), (4, 3, 9, 9)),
    (nn.LayerNorm(6), (4, 7, 6)),
    (nn.BatchNorm2d(3).eval(), (4, 3, 5, 5)),
]


@pytest.mark.parametrize("layer, shape", LAYERS, ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else "")
def test_a_stacked_layer_is_its_layer_run_once_per_instance(layer, shape):
    torch.manual_seed(0)
    layer = layer.double()
    if isinstance(layer, nn.BatchNorm2d):
        layer.running_mean.uniform_(-1, 1)
        layer.running_var.uniform_(0.5, 2)
    params = {n: p.detach() for n, p in layer.named_parameters()}
    per_instance = {n: p + 0.1 * torch.randn(shape[0], *p.shape, dtype=p.dtype) for n, p in params.items()}
    x = torch.randn(*shape, dtype=torch.float64)
    stacked = stack(layer, set(params))
    assert type(stacked) is STACKED[type(layer)]
    out = functional_call(stacked, per_instance, (x,))
    one_by_one = torch.cat([functional_call(layer, {n: p[i] for n, p in per_instance.items()}, (x[i:i + 1],))
                            for i in range(shape[0])])
    torch.testing.assert_close(out, one_by_one, rtol=0, atol=1e-12)
    # the shared (unstacked) weights still run the plain layer
    torch.testing.assert_close(stacked(x), layer(x), rtol=0, atol=0)


def test_stacking_shares_the_models_tensors_and_leaves_it_unchanged(explained):
    explainer = build_explainer(explained).train()
    tuned = {n for n, p in explainer.named_parameters() if p.requires_grad}
    copy = stack(explainer, tuned)
    assert copy is not None and copy is not explainer
    ours = dict(explainer.named_parameters())
    assert all(p.data_ptr() == ours[n].data_ptr() for n, p in copy.named_parameters())
    assert not any(type(m) in STACKED.values() for m in explainer.modules())


class _Scaled(nn.Module):
    """A layer the stacking does not know, with a weight that is not a batch broadcast."""

    def __init__(self) -> None:
        super().__init__()
        self.gamma = nn.Parameter(torch.ones(4))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.gamma


def test_an_unknown_layer_or_batch_statistics_fall_back_to_vmap():
    unknown = nn.Sequential(nn.Linear(4, 4), _Scaled())
    assert stack(unknown, {"0.weight", "1.gamma"}) is None
    assert stack(unknown, {"0.weight"}) is not None  # the unknown layer is frozen: fine
    training_norm = nn.Sequential(nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3).train())
    assert stack(training_norm, {"1.weight"}) is None
    assert stack(training_norm, {"0.weight"}) is None  # frozen, but its statistics would mix instances
    assert stack(training_norm.eval(), {"0.weight", "1.weight"}) is not None


@pytest.mark.parametrize("name", ["ltx_shapes_vit", "ltx_shapes_resnet"])
def test_stacked_layers_and_vmap_finetune_alike(name):
    """The default path (stacked layers) and vmap's, on both families, scope all, in float64."""
    from tests.helpers import tiny_explained

    explained = tiny_explained(name).double()
    torch.manual_seed(0)
    explainer = build_explainer(explained).double()
    images = torch.rand(3, 3, 64, 64, dtype=torch.float64)
    classes = explained.predict(images)
    outs = []
    for stacked in (True, False):
        module = LTX(explained, explainer, ConstantBaseline(), LTXLoss(mask_weight=1.0), steps=3, lr=1e-2)
        module.engine.stacked_layers = stacked
        outs.append(module.explanations(images, classes))
        assert (module.engine.plan.stacked is not None) == stacked
    torch.testing.assert_close(outs[0]["maps"], outs[1]["maps"], rtol=0, atol=1e-10)
    torch.testing.assert_close(outs[0]["loss"], outs[1]["loss"], rtol=0, atol=1e-10)
