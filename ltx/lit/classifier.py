"""Training the embedded default's black boxes: a plain classifier LightningModule."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from ltx.models.explained import ExplainedModel


class ClassifierModule(L.LightningModule):
    """Trains `network` in [0, 1] input space with the normalisation the explained wrapper will use."""

    def __init__(self, explained: ExplainedModel, *, lr: float = 2e-3, weight_decay: float = 0.05) -> None:
        super().__init__()
        self.explained = explained
        self.explained.model.requires_grad_(True)
        self.lr = lr
        self.weight_decay = weight_decay
        num_classes = explained.num_classes
        self.val_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")
        self.test_acc = MulticlassAccuracy(num_classes=num_classes, average="micro")

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.explained.model(self.explained.normalize(images))

    def train(self, mode: bool = True) -> ClassifierModule:
        # ExplainedModel pins eval mode; this module is the one place the black box is trained.
        super().train(mode)
        self.explained.model.train(mode)
        return self

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        loss = F.cross_entropy(self(batch["image"]), batch["label"], label_smoothing=0.1)
        self.log("blackbox/train_loss", loss, prog_bar=True)
        return loss

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.val_acc(self(batch["image"]), batch["label"])
        self.log("blackbox/val_acc", self.val_acc, prog_bar=True)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self.test_acc(self(batch["image"]), batch["label"])
        self.log("blackbox/test_acc", self.test_acc)

    def configure_optimizers(self):
        opt = torch.optim.AdamW(self.explained.model.parameters(), lr=self.lr, weight_decay=self.weight_decay)
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=self.lr, pct_start=0.15,
                                                    total_steps=int(self.trainer.estimated_stepping_batches))
        return [opt], [{"scheduler": sched, "interval": "step"}]
