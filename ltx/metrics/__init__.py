"""Evaluation metrics as `torchmetrics.Metric`s, built by name and used the same way.

Every metric: `create_metric(name, model, **kwargs)`, then
`update(images, saliency, labels, gt_masks=None)` per batch and `compute()` at the end.
Perturbation metrics (`pos`, `neg`, `ins`, `del`, `ins_rise`, `del_rise`, ROAD's
`road_morf_acc`, `road_lerf_acc`, `road_morf_prob`, `road_lerf_prob`, the contrastive
`contrastive_pos`, `contrastive_neg`, `contrastive_ins`, `contrastive_del`, and the continuous
blends `sufficiency`, `necessity`) need the model and ignore `gt_masks`; localization metrics
(`pointing_game`, `energy_pointing_game`, `gt_auroc`) need `gt_masks` and ignore the model, the
images and the labels. Each class carries `name`,
`higher_is_better` and a one-line `description`. A `PerturbationSuite` updates several metrics
together, with one set of forward passes for the perturbation metrics that perturb alike.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torchmetrics import Metric

from ltx.metrics.contrastive import (
    CONTRASTIVE_METRICS,
    ContrastiveCurve,
    ContrastiveDeletion,
    ContrastiveInsertion,
    ContrastiveNegative,
    ContrastivePositive,
)
from ltx.metrics.continuous import CONTINUOUS_METRICS, BlendCurve, Necessity, Sufficiency
from ltx.metrics.localization import EnergyPointingGame, LocalizationMetric, MaskAUROC, PointingGame
from ltx.metrics.perturbation import (
    PAPER_METRICS,
    Deletion,
    Insertion,
    NegativePerturbation,
    PaperCurve,
    PerturbationCurve,
    PositivePerturbation,
)
from ltx.metrics.rise import RISE_METRICS, DeletionRISE, InsertionRISE, RISECurve
from ltx.metrics.road import (
    ROAD_METRICS,
    ROADCurve,
    ROADLeRFAccuracy,
    ROADLeRFProbability,
    ROADMoRFAccuracy,
    ROADMoRFProbability,
)
from ltx.metrics.suite import PerturbationSuite

#: the removal curves of the paper and of RISE (ROAD's are in ROAD_METRICS, the blends in CONTINUOUS_METRICS)
PERTURBATION_METRICS: dict[str, type[PerturbationCurve]] = {**PAPER_METRICS, **RISE_METRICS}
METRICS: dict[str, type[Metric]] = {
    **PERTURBATION_METRICS,
    **ROAD_METRICS,
    **CONTRASTIVE_METRICS,
    **CONTINUOUS_METRICS,
    **{cls.name: cls for cls in (PointingGame, EnergyPointingGame, MaskAUROC)},
}


def create_metric(name: str, model: nn.Module | None = None, **kwargs: Any) -> Metric:
    """The metric registered as `name`, for explained model `model` (unused by localization)."""
    cls = METRICS.get(name)
    if cls is None:
        raise ValueError(f"unknown metric {name!r}: choose one of {sorted(METRICS)}")
    if issubclass(cls, PerturbationCurve) and model is None:
        raise ValueError(f"metric {name!r} perturbs inputs of a model: pass the explained model")
    return cls(model, **kwargs)


def per_image_auc(model: nn.Module, images: Tensor, saliency: Tensor, labels: Tensor, kind: str = "pos",
                  **kwargs: Any) -> Tensor:
    """Per-image AUCs (B,) of one perturbation metric (`kind`: its name, e.g. "pos"), batched.

    For per-instance selection (LTX finetuning scores each step's map with POS); `kwargs` go
    to the metric's constructor (e.g. `chunk_size`). The result is an ordinary tensor.
    """
    metric = PERTURBATION_METRICS.get(kind)
    if metric is None:
        raise ValueError(f"unknown perturbation metric {kind!r}: choose one of "
                         f"{sorted(PERTURBATION_METRICS)}")
    return metric(model, **kwargs).per_image(images, saliency, labels)


__all__ = [
    "CONTRASTIVE_METRICS",
    "METRICS",
    "BlendCurve",
    "PERTURBATION_METRICS",
    "ContrastiveCurve",
    "ContrastiveDeletion",
    "ContrastiveInsertion",
    "ContrastiveNegative",
    "ContrastivePositive",
    "Deletion",
    "DeletionRISE",
    "EnergyPointingGame",
    "Insertion",
    "InsertionRISE",
    "LocalizationMetric",
    "MaskAUROC",
    "Necessity",
    "NegativePerturbation",
    "PaperCurve",
    "PerturbationCurve",
    "PerturbationSuite",
    "PointingGame",
    "PositivePerturbation",
    "RISECurve",
    "ROADCurve",
    "ROADLeRFAccuracy",
    "ROADLeRFProbability",
    "ROADMoRFAccuracy",
    "ROADMoRFProbability",
    "Sufficiency",
    "create_metric",
    "per_image_auc",
]
