"""Contrastive faithfulness: the paper's POS/NEG/INS/DEL curves for "why c and not c′".

The same pixels are blackened in the same steps as `pos`, `neg`, `ins`, `del` (their `plan` is the
same, so evaluated together the two suites share every forward pass), but each step is scored on
the pair (c, c′) (`ltx.classes`): the hit is "c beats c′", the score the two-class probability
softmax([logit_c, logit_c′])[0]. c is the ground-truth label, as in the paper's suite whatever the
class mode; c′ is f's highest-scoring other class on the clean image (its runner-up where f is
right), or the class `contrast` for every image (where that is the label, the runner-up stands in).

c′ is read from the run's first step, the unperturbed image (the fractions must start at 0), so a
metric costs what its pointwise twin costs: one forward pass per step and image, 10 with the
paper's fractions; POS and DEL share them, as NEG and INS do: 20 per image for the suite.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import Tensor, nn

from ltx.classes import contrast_pairs
from ltx.metrics.perturbation import (
    Deletion,
    Insertion,
    NegativePerturbation,
    PaperCurve,
    PositivePerturbation,
)


class ContrastiveCurve(PaperCurve):
    """A paper curve scored on (label, c′): c′ = `contrast`, or f's best other class on the clean image.

    The benchmark-validity check is shown, not required (`ltx.metrics.validity`): once the evidence
    is gone, c beats c′ about half the time (chance over two classes, not one in C), so random maps
    and the oracle alike keep their curves near 0.5 and the ratio and margin made for top-1 curves
    cannot be met (textures: oracle POS 57.5 against random 74.7, experiments/README.md).
    """

    validity_required = False

    def __init__(self, model: nn.Module, *, contrast: int | None = None,
                 fractions: Sequence[float] | None = None, chunk_size: int = 256, **kwargs: Any) -> None:
        super().__init__(model, fractions=fractions, chunk_size=chunk_size, **kwargs)
        if self.fractions[0] != 0.0:
            raise ValueError(f"{self.name}: fractions must start at 0.0 (the clean image, where c′ is "
                             f"read), got {self.fractions}")
        self.contrast = contrast

    def scored_classes(self, images: Tensor, labels: Tensor, logits: Tensor) -> Tensor:
        return contrast_pairs(logits[:, 0], labels, self.contrast)


class ContrastivePositive(ContrastiveCurve, PositivePerturbation):
    name = "contrastive_pos"
    description = "c-beats-c′ rate, most salient pixels blacked out first (AUC ×100, lower is better)"


class ContrastiveNegative(ContrastiveCurve, NegativePerturbation):
    name = "contrastive_neg"
    description = "c-beats-c′ rate, least salient pixels blacked out first (AUC ×100, higher is better)"


class ContrastiveInsertion(ContrastiveCurve, Insertion):
    name = "contrastive_ins"
    description = ("two-class probability of c vs c′, least salient pixels blacked out first "
                   "(AUC ×100, higher is better)")


class ContrastiveDeletion(ContrastiveCurve, Deletion):
    name = "contrastive_del"
    description = ("two-class probability of c vs c′, most salient pixels blacked out first "
                   "(AUC ×100, lower is better)")


CONTRASTIVE_METRICS: dict[str, type[ContrastiveCurve]] = {
    cls.name: cls
    for cls in (ContrastivePositive, ContrastiveNegative, ContrastiveInsertion, ContrastiveDeletion)
}
