"""ExplainModule: a plain method under `trainer.predict`, reusing maps saved for the other class mode."""

from __future__ import annotations

import torch

from ltx.lit.explain import ExplainModule
from ltx.methods.base import create_method
from ltx.store import MapKey, MapStore, SavedMaps
from tests.helpers import tiny_explained


class CountingSaliency:
    """The saliency method, counting the images it explains."""

    needs = ()

    def __init__(self, model) -> None:
        self.inner, self.model, self.seen = create_method("saliency", model), model, 0

    def __call__(self, images: torch.Tensor, classes: torch.Tensor) -> torch.Tensor:
        self.seen += len(images)
        return self.inner(images, classes)


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
