"""`select_by`: which of the steps+1 maps of per-instance finetuning is the explanation."""

import pytest
import torch

from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline
from ltx.methods.ltx import LTX
from ltx.metrics import per_image_auc
from ltx.models.explainer import build_explainer
from tests.helpers import tiny_explained


def _finetune(select_by: str, steps: int, **kwargs):
    torch.manual_seed(0)
    explained = tiny_explained("ltx_shapes_vit")
    module = LTX(explained, build_explainer(explained), ConstantBaseline(), LTXLoss(mask_weight=5.0),
                 steps=steps, lr=5e-2, select_by=select_by, **kwargs)
    torch.manual_seed(1)
    images = torch.rand(3, 3, 64, 64)
    classes = explained.predict(images)
    return explained, images, classes, module.explanations(images, classes)


@pytest.mark.parametrize("kind", ["pos", "neg"])
def test_metric_selection_is_never_worse_than_the_pretrained_map(kind):
    explained, images, classes, pretrained = _finetune(kind, steps=0)
    _, _, _, selected = _finetune(kind, steps=4)
    before = per_image_auc(explained, images, pretrained["maps"], classes, kind=kind)
    after = per_image_auc(explained, images, selected["maps"], classes, kind=kind)
    assert ((after <= before + 1e-9) if kind == "pos" else (after >= before - 1e-9)).all()


def test_pos_selection_stops_an_instance_once_under_the_threshold():
    *_, result = _finetune("pos", steps=4, stop_below=1000.0)  # every POS AUC is below 1000: stop at once
    assert (result["step"] == 0).all()


def test_a_stopped_instance_is_no_longer_scored(monkeypatch):
    """POS selection runs a perturbation test per step: only on the instances still running."""
    torch.manual_seed(1)
    first = torch.rand(3, 3, 64, 64)[0]  # the images `_finetune` draws
    sizes = []

    def fake_pos(model, images, maps, classes, kind):  # image 0 scores under the threshold at once
        sizes.append(len(images))
        return torch.tensor([0.0 if torch.equal(i, first) else 50.0 for i in images], dtype=torch.float64)

    monkeypatch.setattr("ltx.finetune.loop.per_image_auc", fake_pos)
    *_, result = _finetune("pos", steps=4, stop_below=6.0)
    assert sizes == [3, 2, 2, 2, 2]
    assert result["step"][0] == 0


def test_last_selection_takes_the_final_step():
    *_, result = _finetune("last", steps=3)
    assert (result["step"] == 3).all()
