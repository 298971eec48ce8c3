"""LTX as a method: `LTX(model, explainer, ...)(images, classes)` finetunes a copy of the pretrained
explainer on each image (`ltx.finetune`) and returns its mask, as IG returns its attributions.

The run builds it with the explainer it pretrained for the class mode (`conf/method/ltx.yaml`);
without one, `create_method("ltx", model)` starts from an explainer built on the model and not
pretrained (the no-pretraining ablation): pretrain one (`ltx.stages.pretrain`) or load a run's
(`explainers/<backbone>/<mode>.safetensors`) for the paper's method.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from ltx.finetune import Finetuner, FinetuneSettings
from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline, Masking
from ltx.methods.base import Method, register_method
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer, build_explainer


@register_method("ltx")
class LTX(Method):
    """Per-instance finetuning of a pretrained explainer (`FinetuneSettings`: steps, lr, selection,
    scope, instance batch, precision, compile). `steps=0` is pLTX, the pretrained explainer's map.

    `explain` returns the maps with, per instance, the selected `step`, its `loss` and `failed` (a
    non-finite loss stopped it: map and loss NaN), which evaluation counts."""

    reuse_across_class_modes = False  # one explainer per class mode
    uses_explainer = True
    contrastive = True  # a pair (c, c′): the loss's prediction term is CE over the two (ltx.losses)

    def __init__(self, model: ExplainedModel, explainer: Explainer | None = None, masking: Masking | None = None,
                 loss: LTXLoss | None = None, **settings: Any) -> None:
        super().__init__(model)
        self.engine = Finetuner(model, build_explainer(model) if explainer is None else explainer,
                                ConstantBaseline() if masking is None else masking,
                                LTXLoss() if loss is None else loss, FinetuneSettings(**settings))

    @property
    def settings(self) -> FinetuneSettings:
        return self.engine.settings

    def networks(self) -> list[nn.Module]:
        return [self.engine]

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.engine.finetune(images, classes)
