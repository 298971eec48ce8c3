"""Any saliency method as a LightningModule, so every method runs through the same `trainer.predict`
(devices, DDP sharding of instances, progress bars) as LTX's FinetuneModule."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ltx.methods.base import Method


class ExplainModule(L.LightningModule):
    def __init__(self, method: Method, *, class_mode: str = "predicted") -> None:
        super().__init__()
        self.method = method
        self.explained = method.model
        self.class_mode = class_mode

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> dict[str, Any]:
        images = batch["image"]
        classes = self.explained.classes_to_explain(images, batch["label"], self.class_mode)
        with torch.enable_grad():  # gradient-based methods (Grad-CAM, IG, GAE) need it under predict
            maps = self.method(images, classes)
        return {"index": batch["index"], "classes": classes, "labels": batch["label"], "maps": maps.detach()}
