"""ExplainModule: any method under `trainer.predict`, reusing maps saved for the other class mode."""

from __future__ import annotations

import torch

from ltx.lit.explain import ExplainModule
from ltx.methods.gradients import Saliency
from ltx.store import MapKey, MapStore, SavedMaps
from tests.helpers import tiny_explained


class CountingSaliency(Saliency):
    """The saliency method, counting the images it explains."""

    seen = 0

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        self.seen += len(images)
        return super().explain(images, classes)


def test_maps_of_the_same_class_are_reused_and_the_others_computed(tmp_path) -> None:
    model = tiny_explained("ltx_shapes_resnet")
    torch.manual_seed(1)
    images = torch.rand(4, 3, 64, 64)
    predicted = model.predict(images)
    # the label is the prediction for images 0, 1 (reusable) but not 2; image 3 has no saved map
    labels = torch.cat([predicted[:2], (predicted[2:] + 1) % 8])
    batch = {"image": images, "label": labels, "index": torch.tensor([10, 11, 12, 13])}
    store = MapStore(tmp_path)
    other = MapKey("m", "saliency", "predicted")
    first = ExplainModule(CountingSaliency(model), class_mode="predicted").predict_step(batch)
    store.write(other, {**first, "index": batch["index"][:3], "maps": first["maps"][:3],
                        "classes": first["classes"][:3], "labels": labels[:3]})

    method = CountingSaliency(model)
    module = ExplainModule(method, class_mode="target", reuse=SavedMaps(store, other))
    out = module.predict_step(batch)
    assert module.reused == 2 and method.seen == 2
    fresh = ExplainModule(CountingSaliency(model), class_mode="target").predict_step(batch)
    assert torch.allclose(out["maps"], fresh["maps"], atol=1e-6)
    assert torch.equal(out["classes"], labels)


def test_ltx_runs_through_the_same_adapter_with_its_extras(tmp_path) -> None:
    """LTX is a method like any other: called directly it gives maps, under the adapter the record
    carries its per-instance extras, and it refuses maps saved for another class mode."""
    import pytest

    from ltx.lit.finetune import FinetuneModule
    from ltx.losses import LTXLoss
    from ltx.masking import ConstantBaseline
    from ltx.methods.base import create_method
    from ltx.models.explainer import build_explainer

    model = tiny_explained("ltx_shapes_resnet")
    torch.manual_seed(0)
    images = torch.rand(2, 3, 64, 64)
    batch = {"image": images, "label": torch.tensor([1, 2]), "index": torch.tensor([0, 1])}
    explainer = build_explainer(model)
    ltx = create_method("ltx", model, explainer=explainer, masking=ConstantBaseline(), loss=LTXLoss(), steps=2)
    maps = ltx(images, model.predict(images))
    assert maps.shape == (2, 64, 64)
    record = ExplainModule(ltx, class_mode="predicted").predict_step(batch)
    assert set(record) == {"index", "classes", "labels", "maps", "step", "loss", "failed"}
    assert torch.equal(record["maps"], maps) and record["step"].tolist() == [2, 2]
    lit = FinetuneModule(model, explainer, ConstantBaseline(), LTXLoss(), class_mode="predicted", steps=2)
    assert torch.equal(lit.predict_step(batch)["maps"], maps)
    with pytest.raises(ValueError, match="cannot reuse"):
        ExplainModule(ltx, reuse=SavedMaps(MapStore(tmp_path), MapKey("m", "ltx", "target")))
