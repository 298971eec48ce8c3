"""L_LTX = w_pred · CE(f(ψ(x, m)), c) + w_mask · penalty(m) [+ w_inv · L_inv + w_smooth · L_smooth].

In a contrastive class mode `c` is a pair (c, c′) and CE is over the two logits
(`ltx.classes.class_cross_entropy`): the masked image must keep c ahead of c′, not c ahead of all.

Losses are returned per instance: pretraining averages them, per-instance finetuning sums them
over instances (so each instance's parameters get exactly its own gradient) and selects by them.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.nn import functional as F

from ltx.classes import class_cross_entropy, class_probability
from ltx.masking import Masking
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Masks

MASK_PENALTIES = ("paper", "l1")


def mask_penalty(coarse: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-instance mask size penalty on the coarse (patch-level) mask in [0, 1].

    'paper' is the official code's BCEWithLogits(m, 0) applied to the already-sigmoided mask,
    i.e. mean softplus(m): monotone and close to L1. 'l1' is mean |m|.
    """
    if kind == "paper":
        return F.softplus(coarse).flatten(1).mean(1)
    if kind == "l1":
        return coarse.abs().flatten(1).mean(1)
    raise ValueError(f"unknown loss.mask_penalty {kind!r}: choose one of {MASK_PENALTIES}")


def total_variation(coarse: torch.Tensor) -> torch.Tensor:
    """Per-instance anisotropic total variation (mean absolute neighbour difference)."""
    dh = (coarse[..., 1:, :] - coarse[..., :-1, :]).abs().flatten(1).mean(1)
    dw = (coarse[..., :, 1:] - coarse[..., :, :-1]).abs().flatten(1).mean(1)
    return dh + dw


class LTXLoss(nn.Module):
    """The LTX objective; all weights come from config (`conf/loss/`)."""

    def __init__(self, pred_weight: float = 1.0, mask_weight: float = 50.0, mask_penalty: str = "paper",
                 inv_weight: float = 0.0, smooth_weight: float = 0.0) -> None:
        super().__init__()
        for name, value in dict(pred_weight=pred_weight, mask_weight=mask_weight, inv_weight=inv_weight,
                                smooth_weight=smooth_weight).items():
            if value < 0:
                raise ValueError(f"loss.{name} must be >= 0, got {value}")
        if mask_penalty not in MASK_PENALTIES:
            raise ValueError(f"unknown loss.mask_penalty {mask_penalty!r}: choose one of {MASK_PENALTIES}")
        self.pred_weight = pred_weight
        self.mask_weight = mask_weight
        self.mask_penalty = mask_penalty
        self.inv_weight = inv_weight
        self.smooth_weight = smooth_weight

    def forward(self, explained: ExplainedModel, masking: Masking, images: torch.Tensor, masks: Masks,
                classes: torch.Tensor) -> dict[str, torch.Tensor]:
        """Per-instance terms (B,) and their weighted sum under 'loss'; `classes` (B,) or pairs (B, 2)."""
        logits = explained(masking(images, masks.mask))
        terms = {
            "pred": class_cross_entropy(logits, classes),
            "mask": mask_penalty(masks.coarse, self.mask_penalty),
        }
        loss = self.pred_weight * terms["pred"] + self.mask_weight * terms["mask"]
        if self.inv_weight > 0:
            # The inverse mask should lose the class (to c′): −log(1 − p_c), bounded unlike −CE.
            p_c = class_probability(explained(masking(images, 1 - masks.mask)), classes)
            terms["inv"] = -torch.log1p(-p_c.clamp(max=1 - 1e-6))
            loss = loss + self.inv_weight * terms["inv"]
        if self.smooth_weight > 0:
            terms["smooth"] = total_variation(masks.coarse)
            loss = loss + self.smooth_weight * terms["smooth"]
        terms["loss"] = loss
        return terms
