"""LTX as a method: `LTX(model, explainer, ...)(images, classes)` finetunes a copy of the pretrained
explainer on each image (`ltx.finetune`) and returns its mask, as IG returns its attributions.

The run builds it with the explainer it pretrained for the class mode (`conf/method/ltx.yaml`);
without one, `create_method("ltx", model)` starts from an explainer built on the model and not
pretrained (the no-pretraining ablation): pretrain one (`ltx.stages.pretrain`) or load a run's
(`explainers/<backbone>/<mode>.safetensors`) for the paper's method.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

from ltx.finetune import Finetuner, FinetuneSettings
from ltx.losses import LTXLoss
from ltx.masking import ConstantBaseline, Masking
from ltx.methods.base import Method, register_method
from ltx.models.explained import ExplainedModel
from ltx.models.explainer import Explainer, build_explainer

#: A mask that explains nothing is degenerate: it keeps (almost) none of the image (area, its mean,
#: below MIN_AREA), (almost) all of it (above MAX_AREA), or is (almost) the same everywhere (range,
#: max - min, below MIN_RANGE). An over-weighted mask penalty, too little pretraining, or a model fed
#: other inputs than it was trained on (it then cannot be kept confident) all end there.
MIN_AREA, MAX_AREA, MIN_RANGE = 0.005, 0.995, 1e-3
#: per kind: what it is, and the settings that change it ({mask_weight}, {pretrain}: as the caller names them)
DEGENERATE = {
    "empty": (f"empty, area < {MIN_AREA:.1%}", "lower {mask_weight} or pretrain longer ({pretrain}), and "
              "check that the model predicts these images right (its input size and normalisation)"),
    "full": (f"full, area > {MAX_AREA:.1%}", "raise {mask_weight}"),
    "flat": (f"flat, range < {MIN_RANGE:g}", "pretrain longer ({pretrain})"),
}


def degenerate_masks(masks: torch.Tensor) -> list[str | None]:
    """Per mask of (B, H, W) in [0, 1]: None, or the kind of degenerate mask it is ('empty', 'full',
    'flat'; `DEGENERATE`). The one definition that `ltx explain` and a run's report flag."""
    flat = masks.detach().flatten(1).float()
    area, spread = flat.mean(1), flat.amax(1) - flat.amin(1)
    return ["empty" if a < MIN_AREA else "full" if a > MAX_AREA else "flat" if r < MIN_RANGE else None
            for a, r in zip(area.tolist(), spread.tolist())]


def degeneracy_flag(kind: str, settings: Mapping[str, str]) -> str:
    """The flag of one degenerate mask of `kind` (on `ltx explain`'s figure): what it is, what to change."""
    what, fix = DEGENERATE[kind]
    return f"DEGENERATE mask ({what}): {fix.format(**settings)}"


def degeneracy_warning(kinds: Sequence[str | None], settings: Mapping[str, str],
                       kept_when_hidden: Sequence[bool] | None = None) -> str | None:
    """One line on the degenerate masks among `kinds` (`degenerate_masks`), with the settings to change
    (`settings`: how the caller names the mask weight, the pretraining length and, with
    `kept_when_hidden`, the masking); None if there are none. `kept_when_hidden`: per mask, whether the
    model predicts the explained class even with the whole image hidden (ψ(x, 0)): there an empty mask
    keeps the prediction, and only another masking baseline makes the mask say something."""
    counts = Counter(kind for kind in kinds if kind)
    if not counts:
        return None
    parts = [f"{n} {DEGENERATE[kind][0]} ({DEGENERATE[kind][1].format(**settings)})"
             for kind, n in counts.items()]
    kept = sum(kind == "empty" and k for kind, k in zip(kinds, kept_when_hidden or []))
    if kept:
        parts.append(f"{kept} empty ones explain a class the model predicts even with the whole image "
                     f"masked, which an empty mask keeps: mask with another baseline there "
                     f"({settings['masking']})")
    return f"{sum(counts.values())} of {len(kinds)} masks are degenerate: {'; '.join(parts)}"


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

    def work(self, num_images: int) -> int | None:
        """One unit per instance and finetuning step; pLTX (no step) counts batches."""
        return num_images * self.settings.steps or None

    def explain(self, images: torch.Tensor, classes: torch.Tensor) -> dict[str, torch.Tensor]:
        return self.engine.finetune(images, classes, advance=self.progress)
