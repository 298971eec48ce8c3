"""Training the embedded default's black boxes: a plain classifier LightningModule."""

from __future__ import annotations

import lightning as L
import torch
from torch.nn import functional as F
from torchmetrics.classification import MulticlassAccuracy

from ltx.models.explained import ExplainedModel


def random_removal(images: torch.Tensor, probability: float, max_fraction: float) -> torch.Tensor:
    """Images of which a random `probability` share has a fraction U(0, max_fraction) of its pixels
    blacked out, as removal tests do: half of them scattered pixels, half blobs (a thresholded
    bilinear upsampling of a coarse random grid). Trained on this, a black box reads black pixels
    as missing evidence, not as an unknown input (PROTOCOLS.md, "Validity")."""
    batch, _, height, width = images.shape
    device = images.device
    grid = int(torch.randint(2, 5, ()).item()) ** 2  # blobs of a side / 4, / 9 or / 16
    blobs = F.interpolate(torch.rand(batch, 1, grid, grid, device=device), size=(height, width),
                          mode="bilinear", align_corners=False)
    scattered = torch.rand(batch, 1, height, width, device=device)
    noise = torch.where(torch.rand(batch, 1, 1, 1, device=device) < 0.5, blobs, scattered).flatten(1)
    ranks = noise.argsort(1).argsort(1)
    count = (torch.rand(batch, 1, device=device) * max_fraction * height * width).floor()
    removed = (ranks < count) & (torch.rand(batch, 1, device=device) < probability)
    return images.masked_fill(removed.view(batch, 1, height, width), 0.0)


class ClassifierModule(L.LightningModule):
    """Trains `network` in [0, 1] input space with the normalisation the explained wrapper will use.

    `removal` ({probability, max_fraction, start_epoch}, or None): the removal augmentation
    (`random_removal`), from epoch `start_epoch` (default 0) on. The textures ViT stayed at chance
    (loss ln 8) when removal started with training; after one clean epoch it learns
    (experiments/README.md).
    """

    #: what the training does besides its arguments (part of the black-box cache key)
    RECIPE = {"optimizer": "AdamW", "schedule": "OneCycle pct_start=0.15", "label_smoothing": 0.1,
              "removal": "random_removal v1"}

    def __init__(self, explained: ExplainedModel, *, lr: float = 2e-3, weight_decay: float = 0.05,
                 removal: dict[str, float] | None = None) -> None:
        super().__init__()
        self.explained = explained
        self.explained.model.requires_grad_(True)
        self.lr = lr
        self.weight_decay = weight_decay
        if removal is not None:
            removal = {"start_epoch": 0, **removal}
            if set(removal) != {"probability", "max_fraction", "start_epoch"} or not (
                    0 <= removal["probability"] <= 1 and 0 < removal["max_fraction"] <= 1
                    and isinstance(removal["start_epoch"], int) and removal["start_epoch"] >= 0):
                raise ValueError(f"train.removal={removal}: give probability in [0, 1], max_fraction in (0, 1] "
                                 f"and start_epoch >= 0 (optional), or null for no removal augmentation.")
            self.removal_start = removal.pop("start_epoch")
        self.removal = removal
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
        images = batch["image"]
        if self.removal is not None and self.current_epoch >= self.removal_start:
            images = random_removal(images, **self.removal)
        loss = F.cross_entropy(self(images), batch["label"], label_smoothing=self.RECIPE["label_smoothing"])
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
