"""Stage 2 as a LightningModule: per-instance finetuning (`ltx.finetune`) under `trainer.predict`,
which moves it to the device and, under DDP, shards the instances over the processes.

It is the run's adapter (`ExplainModule`) around the LTX method, built from the explainer's parts
for those who hold them (tests, benchmarks); a run builds the same from `conf/method/ltx.yaml`.
"""

from __future__ import annotations

from typing import Any

from ltx.lit.explain import ExplainModule
from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.methods.ltx import LTX
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer


class FinetuneModule(ExplainModule):
    """Finetunes `explainer` per instance (`ltx.finetune.FinetuneSettings`: `settings`);
    `predict_step` returns each instance's selected map, step, loss and failure flag."""

    def __init__(self, explained: ExplainedModel, explainer: Explainer, masking: Masking, loss: LTXLoss, *,
                 class_mode: str = "predicted", **settings: Any) -> None:
        super().__init__(LTX(explained, explainer, masking, loss, **settings), class_mode=class_mode)
