"""Any method as a LightningModule: every method, LTX included, runs through the same
`trainer.predict` (devices, DDP sharding of instances, progress bars), and every prediction is the
same record: `index`, `classes`, `labels`, `maps` and the method's per-instance extras.

A method whose map depends only on the image and the class it explains
(`Method.reuse_across_class_modes`) gets the maps already saved for the other class mode wherever
that mode explained the same class (for an accurate model, almost every image: the predicted
class is the label)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch import nn

from ltx.methods.base import Method
from ltx.store import SavedMaps


class ExplainModule(L.LightningModule):
    def __init__(self, method: Method, *, class_mode: str = "predicted", contrast: int | None = None,
                 reuse: SavedMaps | None = None) -> None:
        super().__init__()
        if reuse is not None and not method.reuse_across_class_modes:
            raise ValueError(f"method {method.name!r} cannot reuse maps of another class mode")
        self.method = method
        self.explained = method.model
        self.networks = nn.ModuleList(method.networks())  # registered: Lightning moves them to the device
        self.class_mode = class_mode
        self.contrast = contrast
        self.reuse = reuse
        self.reused = 0  # instances whose map came from `reuse`

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> dict[str, Any]:
        images = batch["image"]
        classes = self.explained.classes_to_explain(images, batch["label"], self.class_mode, self.contrast)
        maps, todo = None, torch.ones(len(classes), dtype=torch.bool, device=classes.device)
        if self.reuse is not None:
            found, saved_classes, saved = self.reuse.get(batch["index"].cpu())
            same = torch.zeros_like(found)  # a class per instance, or a pair (contrastive modes): alike only
            if saved_classes.shape == classes.shape:
                same = (saved_classes == classes.cpu()).view(len(classes), -1).all(1)
            todo = ~(found & same).to(classes.device)
            maps = None if saved is None else saved.to(images.device)
            self.reused += int((~todo).sum())
        out: dict[str, torch.Tensor] = {}
        if todo.any():
            with torch.enable_grad():  # gradient-based methods (Grad-CAM, IG, GAE) need it under predict
                context = {key: batch[key][todo] for key in self.method.needs if key in batch}
                out = {k: v.detach() for k, v in self.method.explanations(images[todo], classes[todo], **context).items()}
            if maps is not None:  # reused maps only: a reusing method has no extras
                maps = maps.to(out["maps"].dtype)
                maps[todo] = out["maps"]
                out["maps"] = maps
        else:
            out["maps"] = maps
        return {"index": batch["index"], "classes": classes, "labels": batch["label"], **out}
