"""Stage 1: pretrain the explainer on a dataset (paper: 2,000 random images)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from functools import partial

import lightning as L
import torch

from ltx.lit.schedule import warmup_linear_decay
from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer

#: the paper's pretraining optimiser (the run's: `pretrain.module.optimizer`, conf/pretrain/default.yaml)
PAPER_OPTIMIZER = partial(torch.optim.AdamW, lr=2e-3, weight_decay=0.01)


class PretrainModule(L.LightningModule):
    """Trains one explainer for one class mode with the LTX loss; f stays frozen. A contrastive class
    mode explains f's top-1 or the label against `contrast` (None: f's runner-up), `ltx.classes`.

    Validation logs the loss and, when a POS metric is given, the paper's checkpoint criterion
    (lowest POS AUC on the validation subset). `optimizer` makes the optimiser from the trainable
    parameters (the paper's AdamW 2e-3 by default; a run's comes from `pretrain.module.optimizer`);
    its learning rate warms up linearly over `warmup_fraction` of the steps, then decays to 0.
    """

    def __init__(self, explained: ExplainedModel, explainer: Explainer, masking: Masking, loss: LTXLoss, *,
                 class_mode: str = "predicted", contrast: int | None = None,
                 optimizer: Callable[[Iterable[torch.Tensor]], torch.optim.Optimizer] = PAPER_OPTIMIZER,
                 warmup_fraction: float = 0.2, val_pos=None) -> None:
        super().__init__()
        self.save_hyperparameters(ignore=["explained", "explainer", "masking", "loss", "optimizer", "val_pos"],
                                  logger=False)
        self.make_optimizer = optimizer
        self.explained = explained
        self.explainer = explainer
        self.masking = masking
        self.loss = loss
        self.class_mode = class_mode
        self.contrast = contrast
        self.val_pos = val_pos

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        images = batch["image"]
        classes = self.explained.classes_to_explain(images, batch["label"], self.class_mode, self.contrast)
        masks = self.explainer(images)
        terms = self.loss(self.explained, self.masking, images, masks, classes)
        sync = stage == "val"  # under DDP: every rank checkpoints by the mean over all ranks
        for name, value in terms.items():
            self.log(f"{stage}/{name}", value.mean(), prog_bar=name == "loss", batch_size=len(images),
                     sync_dist=sync)
        self.log(f"{stage}/mask_area", masks.mask.mean(), batch_size=len(images), sync_dist=sync)
        if stage == "val" and self.val_pos is not None:
            self.val_pos.update(images, masks.mask[:, 0].detach(), batch["label"])
            self.log("val/pos", self.val_pos, batch_size=len(images))
        return terms["loss"].mean()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self):
        params = [p for p in [*self.explainer.parameters(), *self.masking.parameters()] if p.requires_grad]
        opt = self.make_optimizer(params)
        sched = warmup_linear_decay(opt, self.trainer.estimated_stepping_batches, self.hparams.warmup_fraction)
        return [opt], [{"scheduler": sched, "interval": "step"}]

    def on_save_checkpoint(self, checkpoint: dict) -> None:
        """The frozen explained model is not part of what is learned: keep checkpoints small."""
        state = checkpoint["state_dict"]
        for key in [k for k in state if k.startswith("explained.")]:
            del state[key]

    def on_load_checkpoint(self, checkpoint: dict) -> None:
        checkpoint["state_dict"].update({f"explained.{k}": v for k, v in self.explained.state_dict().items()})
