"""Any saliency method as a LightningModule, so every method runs through the same `trainer.predict`
(devices, DDP sharding of instances, progress bars) as LTX's FinetuneModule.

A method's map depends only on the image and the class it explains, so maps already saved for
the other class mode are reused wherever that mode explained the same class (for an accurate
model, almost every image: the predicted class is the label)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from ltx.methods.base import Method
from ltx.store import SavedMaps


class ExplainModule(L.LightningModule):
    def __init__(self, method: Method, *, class_mode: str = "predicted",
                 reuse: SavedMaps | None = None) -> None:
        super().__init__()
        self.method = method
        self.explained = method.model
        self.class_mode = class_mode
        self.reuse = reuse
        self.reused = 0  # instances whose map came from `reuse`

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> dict[str, Any]:
        images = batch["image"]
        classes = self.explained.classes_to_explain(images, batch["label"], self.class_mode)
        maps, todo = None, torch.ones(len(classes), dtype=torch.bool, device=classes.device)
        if self.reuse is not None:
            found, saved_classes, saved = self.reuse.get(batch["index"].cpu())
            todo = ~(found & (saved_classes == classes.cpu())).to(classes.device)
            maps = None if saved is None else saved.to(images.device)
            self.reused += int((~todo).sum())
        if todo.any():
            with torch.enable_grad():  # gradient-based methods (Grad-CAM, IG, GAE) need it under predict
                extras = {key: batch[key][todo] for key in self.method.needs if key in batch}
                computed = self.method(images[todo], classes[todo], **extras).detach()
            if maps is None:
                maps = computed
            else:
                maps = maps.to(computed.dtype)
                maps[todo] = computed
        return {"index": batch["index"], "classes": classes, "labels": batch["label"], "maps": maps}
