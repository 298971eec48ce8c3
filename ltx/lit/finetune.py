"""Stage 2: per-instance finetuning. Each image gets its own copy of the pretrained explainer,
finetuned for a few steps on that image alone; its mask is the explanation.

Instances are finetuned *together*: the B copies' parameters are stacked along a leading
dimension and run through `torch.func.vmap(functional_call(...))`, so one batched forward and
backward serves all B instances. Because the loss is the *sum* of per-instance losses and
Adam(W) acts elementwise, every instance gets exactly the updates it would get alone.
"""

from __future__ import annotations

from typing import Any

import lightning as L
import torch
from torch.func import functional_call, vmap

from ltx.losses import LTXLoss
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer, Masks

SELECT_BY = ("last", "loss", "pos", "neg")
SCOPES = ("all", "head")


class FinetuneModule(L.LightningModule):
    """Finetunes the explainer per instance; `predict_step` returns each instance's selected map.

    `steps=0` gives the pretrained explainer's map alone (pLTX). `select_by` says which of the
    steps+1 maps is the explanation: the last, the lowest-loss one, or the one with the best POS
    (lowest) / NEG (highest) AUC on that image (the official code's rule, `pos`), stopping an
    instance early once its POS AUC drops below `stop_below`.
    """

    def __init__(self, explained: ExplainedModel, explainer: Explainer, masking: Masking, loss: LTXLoss, *,
                 class_mode: str = "predicted", steps: int = 25, lr: float = 2e-3, weight_decay: float = 0.01,
                 select_by: str = "last", stop_below: float | None = None, scope: str = "all") -> None:
        super().__init__()
        if steps < 0:
            raise ValueError(f"finetune steps must be >= 0, got {steps}")
        if lr <= 0:
            raise ValueError(f"finetune lr must be > 0, got {lr}")
        if select_by not in SELECT_BY:
            raise ValueError(f"unknown select_by {select_by!r}: choose one of {SELECT_BY}")
        if scope not in SCOPES:
            raise ValueError(f"unknown finetune scope {scope!r}: choose one of {SCOPES}")
        self.explained = explained
        self.explainer = explainer.train()
        self.masking = masking
        self.loss = loss
        self.class_mode = class_mode
        self.steps = steps
        self.lr = lr
        self.weight_decay = weight_decay
        self.select_by = select_by
        self.stop_below = stop_below
        self.scope = scope

    def _is_tuned(self, name: str, param: torch.nn.Parameter) -> bool:
        if not param.requires_grad:
            return False
        return self.scope == "all" or not name.startswith("backbone.")

    def _score(self, images: torch.Tensor, masks: Masks, classes: torch.Tensor,
               terms: dict[str, torch.Tensor]) -> torch.Tensor:
        """Per-instance selection score, lower is better."""
        if self.select_by == "loss":
            return terms["loss"].detach()
        from ltx.metrics import per_image_auc

        auc = per_image_auc(self.explained, images, masks.mask[:, 0].detach(), classes, kind=self.select_by)
        return auc if self.select_by == "pos" else -auc

    @torch.enable_grad()  # also under `trainer.predict`, which runs without grad
    def finetune(self, images: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Finetune B copies on B images; returns `maps` (B, H, W), the selected `step` and its `loss`."""
        batch = images.shape[0]
        named = dict(self.explainer.named_parameters())
        tuned = {n: p.detach().unsqueeze(0).repeat(batch, *[1] * p.dim()).requires_grad_(True)
                 for n, p in named.items() if self._is_tuned(n, p)}
        shared = {n: p.detach() for n, p in named.items() if n not in tuned}
        shared.update(self.explainer.named_buffers())
        optimizer = torch.optim.AdamW(tuned.values(), lr=self.lr, weight_decay=self.weight_decay) if tuned else None

        def one(params: dict[str, torch.Tensor], image: torch.Tensor) -> Masks:
            return functional_call(self.explainer, {**params, **shared}, (image[None],))

        batched = vmap(one, in_dims=(0, 0))
        best_maps = torch.zeros(batch, *images.shape[-2:], device=images.device)
        best_score = torch.full((batch,), float("inf"), device=images.device)
        best_step = torch.zeros(batch, dtype=torch.long, device=images.device)
        best_loss = torch.zeros(batch, device=images.device)
        done = torch.zeros(batch, dtype=torch.bool, device=images.device)
        for step in range(self.steps + 1):
            out = batched(tuned, images)
            masks = Masks(out.mask[:, 0], out.coarse[:, 0])
            terms = self.loss(self.explained, self.masking, images, masks, classes)
            if self.select_by == "last":
                better = torch.ones(batch, dtype=torch.bool, device=images.device)
            else:
                score = self._score(images, masks, classes, terms)
                better = (score < best_score) & ~done
                best_score = torch.where(better, score, best_score)
            best_maps[better] = masks.mask[better, 0].detach()
            best_step[better] = step
            best_loss[better] = terms["loss"].detach()[better]
            if self.stop_below is not None and self.select_by == "pos":
                done |= best_score < self.stop_below
                if bool(done.all()):
                    break
            if step < self.steps and optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
                terms["loss"].sum().backward()
                optimizer.step()
        return {"maps": best_maps, "step": best_step, "loss": best_loss}

    def predict_step(self, batch: dict[str, torch.Tensor], batch_idx: int = 0) -> dict[str, Any]:
        images = batch["image"]
        classes = self.explained.classes_to_explain(images, batch["label"], self.class_mode)
        result = self.finetune(images, classes)
        return {"index": batch["index"], "classes": classes, "labels": batch["label"], **result}
